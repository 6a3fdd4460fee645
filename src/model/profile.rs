//! Opt-in stage timer: with `EMBEDRANK_PROFILE=1` the engine and the model synchronize the device at
//! each stage boundary and add the wall time since the last boundary to that stage's total; the totals
//! are printed to stderr when the engine is dropped. The synchronizations cost throughput, so the
//! totals show where the time goes, not how fast a normal run is. Off: one cached env lookup per call.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;

use crate::Result;

/// Per stage: name, total time, times entered. In first-seen order, which follows the pipeline.
static TOTALS: Mutex<Vec<(&'static str, Duration, u64)>> = Mutex::new(Vec::new());

pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("EMBEDRANK_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// A running stage clock on one device; `None` when profiling is off.
pub struct Stages {
    device: Device,
    t: Instant,
}

/// Start timing on `device` (after finishing the work already queued there).
pub fn start(device: &Device) -> Result<Option<Stages>> {
    if !enabled() {
        return Ok(None);
    }
    device.synchronize()?;
    Ok(Some(Stages { device: device.clone(), t: Instant::now() }))
}

/// End the current stage: wait for the device, then charge the time since the last mark to `name`.
pub fn mark(stages: &mut Option<Stages>, name: &'static str) -> Result<()> {
    let Some(s) = stages else { return Ok(()) };
    s.device.synchronize()?;
    let now = Instant::now();
    add(name, now - s.t);
    s.t = now;
    Ok(())
}

/// Charge `d` to stage `name` (for stages timed by the caller).
pub fn add(name: &'static str, d: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    match totals.iter_mut().find(|(n, _, _)| *n == name) {
        Some(e) => {
            e.1 += d;
            e.2 += 1;
        }
        None => totals.push((name, d, 1)),
    }
}

/// The totals so far as a table (empty when nothing was timed), and reset them.
pub fn take_report() -> String {
    let mut totals = TOTALS.lock().unwrap_or_else(|p| p.into_inner());
    let sum: Duration = totals.iter().map(|e| e.1).sum();
    if totals.is_empty() || sum.is_zero() {
        return String::new();
    }
    let mut out =
        format!("profile (EMBEDRANK_PROFILE, device synchronized per stage): {:.3} s total\n", sum.as_secs_f64());
    for (name, d, n) in totals.iter() {
        let share = 100.0 * d.as_secs_f64() / sum.as_secs_f64();
        out += &format!("  {name:<24} {:>9.3} s {share:>5.1} %  {n:>7} x\n", d.as_secs_f64());
    }
    totals.clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_accumulate_in_first_seen_order() {
        add("profile-test-b", Duration::from_millis(30));
        add("profile-test-a", Duration::from_millis(10));
        add("profile-test-b", Duration::from_millis(30));
        let r = take_report();
        let b = r.find("profile-test-b").expect("stage b listed");
        let a = r.find("profile-test-a").expect("stage a listed");
        assert!(b < a, "first-seen order: {r}");
        assert!(r.lines().any(|l| l.contains("profile-test-b") && l.contains("0.060 s") && l.contains("2 x")), "{r}");
        assert!(take_report().is_empty(), "the report resets the totals");
    }
}
