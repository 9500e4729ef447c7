//! Timing shared by the kernel examples (`#[path = "support/timing.rs"] mod timing;`): this
//! machine is shared, so a run is timed in this thread's CPU time where Linux reports it.

use std::time::Instant;

/// This thread's CPU time in seconds, if readable (the machine may be shared).
pub fn cpu_time() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// Best (lowest) seconds of `reps` runs of `f`, CPU time where available.
#[allow(dead_code)] // not every example takes the best of several runs
pub fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let (w0, c0) = (Instant::now(), cpu_time());
        f();
        let wall = w0.elapsed().as_secs_f64();
        let t = match (c0, cpu_time()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        best = best.min(t);
    }
    best
}
