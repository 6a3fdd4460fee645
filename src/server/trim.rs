//! Memory back to the OS after a burst. glibc's malloc keeps what a burst freed (arenas of
//! tokenizer state, request bodies, answers) for reuse, so RSS stays at the burst's peak; once no
//! request has been admitted for a moment, `malloc_trim(0)` hands the free pages back.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static DIRTY: AtomicBool = AtomicBool::new(false);
/// Milliseconds since `EPOCH` of the last finished request.
static LAST_DONE_MS: AtomicU64 = AtomicU64::new(0);
static START: Once = Once::new();

/// Quiet time after the last request before trimming: answers are written by then.
const QUIET: Duration = Duration::from_millis(300);

fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

pub fn request_started() {
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    START.call_once(|| {
        let spawned = std::thread::Builder::new().name("embedrank-trim".into()).spawn(run);
        if let Err(e) = spawned {
            tracing::warn!("cannot start the memory trimmer: {e}");
        }
    });
}

pub fn request_done() {
    LAST_DONE_MS.store(now_ms(), Ordering::SeqCst);
    DIRTY.store(true, Ordering::SeqCst);
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
}

fn run() {
    loop {
        std::thread::sleep(QUIET);
        let quiet = now_ms().saturating_sub(LAST_DONE_MS.load(Ordering::SeqCst)) >= QUIET.as_millis() as u64;
        if quiet && IN_FLIGHT.load(Ordering::SeqCst) == 0 && DIRTY.swap(false, Ordering::SeqCst) {
            trim();
        }
    }
}

/// Return free heap pages to the OS (glibc only; other allocators do their own).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let t0 = Instant::now();
        // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released, elapsed_ms = t0.elapsed().as_millis() as u64, "malloc_trim");
    }
}
