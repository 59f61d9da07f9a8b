//! The tokio runtime `duet-edge` and `duet-locator` run on, sized by their `worker_threads`
//! option.
//!
//! With one worker the binaries run a current-thread scheduler: a relayed message wakes the
//! receiver's writer task, and on a multi-thread scheduler of one worker every such wake still
//! goes through the work-stealing machinery (run queues, the LIFO slot, parking and unparking
//! around the I/O driver) for nothing to steal. On the echo floor that is about a fifth of the
//! edge's CPU per message ([benchmarks](../../docs/benchmarks.md#echo-floor-s1)). Nothing in the
//! binaries blocks a worker (SQLite runs on its own threads, nothing calls `block_in_place`), so
//! the one thread serves everything the multi-thread scheduler's one worker did.

use std::num::NonZeroUsize;

use crate::config::ConfigError;

/// The most worker threads `worker_threads` accepts.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The worker threads for a configured `worker_threads`: itself, or for 0 one per CPU this
/// process may run on (its CPU affinity and cgroup CPU quota, as
/// [`std::thread::available_parallelism`] reads them: a container limited to one CPU gets one).
pub fn worker_threads(configured: usize) -> Result<usize, ConfigError> {
    if configured > MAX_WORKER_THREADS {
        return Err(ConfigError::Invalid {
            option: "worker_threads",
            reason: format!("{configured} is more than {MAX_WORKER_THREADS}; 0 means one per available CPU"),
        });
    }
    if configured > 0 {
        return Ok(configured);
    }
    Ok(std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// How [`build`] runs `workers` threads, for logs and `--check-config`.
pub fn describe(workers: usize) -> String {
    if workers == 1 {
        "1 (current-thread scheduler)".to_owned()
    } else {
        format!("{workers} (multi-thread scheduler)")
    }
}

/// A runtime of `workers` threads (at least one): current-thread for one, multi-thread above.
pub fn build(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_the_available_cpus_and_too_many_is_refused() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(worker_threads(0).unwrap(), cpus);
        assert_eq!(worker_threads(3).unwrap(), 3);
        let err = worker_threads(MAX_WORKER_THREADS + 1).unwrap_err().to_string();
        assert!(err.contains("worker_threads") && err.contains("1025"), "{err}");
    }

    /// Both flavours run tasks spawned onto them, timers included.
    #[test]
    fn one_worker_is_a_current_thread_runtime_and_more_are_not() {
        for (workers, flavor) in
            [(1, tokio::runtime::RuntimeFlavor::CurrentThread), (2, tokio::runtime::RuntimeFlavor::MultiThread)]
        {
            let runtime = build(workers).unwrap();
            let seen = runtime.block_on(async {
                let task = tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::ZERO).await;
                    tokio::runtime::Handle::current().runtime_flavor()
                });
                task.await.unwrap()
            });
            assert_eq!(seen, flavor, "{workers} workers");
        }
    }
}
