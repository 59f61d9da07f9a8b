//! Load figures for heartbeats: process CPU and event-loop lag.
//!
//! Lag is measured by a timer that asks to wake every 100 ms and records how late it woke; the
//! worst value since the last heartbeat is reported, because one long stall is what hurts
//! interactive traffic. CPU is this process's user+system time from `/proc/self/stat` (Linux; 0
//! elsewhere) over wall time, divided by the cores the process may use
//! (`available_parallelism`, which follows CPU affinity and cgroup quotas), so 1.0 means every
//! core it may use is busy and the locator can compare edges of different sizes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::EdgeState;

const LAG_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Kernel clock ticks per second for `/proc` times; 100 on every mainstream Linux build.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

#[derive(Default)]
pub struct LoadSampler {
    /// Worst lag in ms since the last `read`.
    max_lag_ms: AtomicU32,
    /// CPU ticks and instant at the last `read`.
    last_cpu: Mutex<Option<(u64, Instant)>>,
}

impl LoadSampler {
    fn record_lag(&self, lag: Duration) {
        let ms = u32::try_from(lag.as_millis()).unwrap_or(u32::MAX);
        self.max_lag_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// CPU share (0.0-1.0 of the usable cores) since the previous call, and the worst lag since
    /// then (which resets).
    pub fn read(&self) -> (f32, u32) {
        let lag = self.max_lag_ms.swap(0, Ordering::Relaxed);
        let cpu = match (cpu_ticks(), self.last_cpu.lock()) {
            (Some(ticks), Ok(mut last)) => {
                let now = Instant::now();
                let cores = match *last {
                    Some((t0, i0)) if now > i0 => {
                        let secs = now.duration_since(i0).as_secs_f64();
                        let cores = usable_cores() as f64;
                        (ticks.saturating_sub(t0) as f64 / CLOCK_TICKS_PER_SEC / secs / cores) as f32
                    }
                    _ => 0.0,
                };
                *last = Some((ticks, now));
                cores
            }
            _ => 0.0,
        };
        (cpu, lag)
    }
}

/// The cores this process can keep busy: the CPUs it may use, but no more than its runtime's
/// worker threads (`worker_threads = 1` on a 4-CPU host is fully loaded at one core).
fn usable_cores() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => cpus.min(runtime.metrics().num_workers().max(1)),
        Err(_) => cpus,
    }
}

fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Measures event-loop lag until shutdown.
pub async fn run(state: Arc<EdgeState>) {
    loop {
        let start = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(LAG_PROBE_INTERVAL) => {}
            _ = state.shutdown.cancelled() => return,
        }
        state.load.record_lag(start.elapsed().saturating_sub(LAG_PROBE_INTERVAL));
    }
}

#[cfg(test)]
mod tests {
    /// A runtime of one thread keeps one core busy at most, whatever the CPUs.
    #[test]
    fn usable_cores_are_at_most_the_runtime_threads() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        let one = crate::runtime::build(1).unwrap();
        assert_eq!(one.block_on(async { super::usable_cores() }), 1);
        let two = crate::runtime::build(2).unwrap();
        assert_eq!(two.block_on(async { super::usable_cores() }), cpus.min(2));
        assert_eq!(super::usable_cores(), cpus, "outside a runtime: the CPUs");
    }
}
