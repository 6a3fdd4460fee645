//! Process memory from /proc/self/status (Linux): resident set size now and its peak (VmHWM).
//! Other systems return None; callers print "n/a" rather than a guess.

/// Peak resident set size of this process in bytes (VmHWM), since start or the last [`reset_peak_rss`].
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

/// Current resident set size of this process in bytes (VmRSS).
pub fn current_rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// Reset the peak RSS to the current RSS (Linux ≥ 4.0: write `5` to /proc/self/clear_refs), so the
/// next [`peak_rss_bytes`] measures one piece of work. Returns false where that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time (user + system, all threads) this process has used, in seconds: with wall time, how
/// much of the machine a piece of work got (`bench` and corpus jobs on a shared machine).
pub fn process_cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

fn status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&text, key)
}

fn parse_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut parts = line[key.len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let text = "Name:\tx\nVmHWM:\t  12345 kB\nVmRSS:\t   100 kB\n";
        assert_eq!(parse_kib(text, "VmHWM:"), Some(12345));
        assert_eq!(parse_kib(text, "VmRSS:"), Some(100));
        assert_eq!(parse_kib(text, "VmSwap:"), None);
        assert_eq!(parse_kib("VmHWM:\t12 MB\n", "VmHWM:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_process() {
        // One snapshot: other tests in this process allocate between two separate reads.
        let text = std::fs::read_to_string("/proc/self/status").expect("status on Linux");
        let peak = parse_kib(&text, "VmHWM:").expect("VmHWM on Linux");
        let now = parse_kib(&text, "VmRSS:").expect("VmRSS on Linux");
        assert!(now > 0 && peak >= now, "peak {peak} kB, now {now} kB");
        assert!(peak_rss_bytes().is_some() && current_rss_bytes().is_some());
        let c = process_cpu_seconds().expect("process CPU time on Linux");
        assert!(c > 0.0 && process_cpu_seconds().unwrap() >= c);
    }
}
