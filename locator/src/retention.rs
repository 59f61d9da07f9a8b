//! Retention: deletes audit and metrics entries once they are older than their configured
//! retention (`audit_retention`, default 365 days; `metrics_retention`, default 90 days; zero
//! keeps a table forever).
//!
//! Every [`PRUNE_INTERVAL`] the task deletes, per table, the entries whose `at` (when they
//! happened) is older than the retention, in statements of at most [`PRUNE_BATCH`] rows, and
//! yields between statements. It never holds the database for long: on SQLite, where the pool
//! has one connection, a placement waiting for it gets it after at most one short batch. Every
//! replica runs the task; two replicas pruning at once only delete the same rows sooner (a
//! batch that fails, e.g. on a lock timeout, is logged and retried at the next round).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{EntryTable, Store, StoreError};
use crate::LocatorState;

/// A minute between rounds: entries expire over days, so a minute late is nothing, and a round
/// that finds nothing old costs one indexed query per table.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Rows per delete statement: about a millisecond or two of work on each database, so
/// placements queued behind a batch hardly notice it.
pub const PRUNE_BATCH: u32 = 1_000;

/// How long each table keeps its entries (zero: forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub audit: Duration,
    pub metrics: Duration,
}

/// Deletes old entries in batches: the store, or a fake in tests.
pub trait Pruner {
    /// Deletes up to `batch` rows of `table` older than `older_than_ms`; answers how many.
    fn prune(
        &self,
        table: EntryTable,
        older_than_ms: i64,
        batch: u32,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl Pruner for Store {
    async fn prune(&self, table: EntryTable, older_than_ms: i64, batch: u32) -> Result<u64, StoreError> {
        self.prune_entries(table, older_than_ms, batch).await
    }
}

/// The locator's retention task: runs until shutdown.
pub async fn run(state: Arc<LocatorState>) {
    let policy = Policy { audit: state.config.audit_retention, metrics: state.config.metrics_retention };
    run_with(&state.store, policy, crate::tokens::now_ms, &state.shutdown).await;
}

/// Prunes at once, then every [`PRUNE_INTERVAL`], until `shutdown`; `now_ms` is the clock.
pub async fn run_with<P: Pruner>(pruner: &P, policy: Policy, now_ms: impl Fn() -> i64, shutdown: &CancellationToken) {
    if policy.audit.is_zero() && policy.metrics.is_zero() {
        tracing::info!("retention is off: audit and metrics entries are kept forever");
        return;
    }
    let mut ticks = tokio::time::interval(PRUNE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        prune_once(pruner, policy, now_ms(), shutdown).await;
    }
}

/// One round: for each table with a retention, deletes batch after batch until one comes back
/// short (or shutdown). Answers the rows deleted from (audit, metrics).
pub async fn prune_once<P: Pruner>(
    pruner: &P,
    policy: Policy,
    now_ms: i64,
    shutdown: &CancellationToken,
) -> (u64, u64) {
    let mut deleted = [0u64; 2];
    for (i, (table, keep)) in
        [(EntryTable::Audit, policy.audit), (EntryTable::Metrics, policy.metrics)].into_iter().enumerate()
    {
        if keep.is_zero() {
            continue;
        }
        let cutoff = now_ms.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
        while !shutdown.is_cancelled() {
            match pruner.prune(table, cutoff, PRUNE_BATCH).await {
                Ok(n) => {
                    deleted[i] += n;
                    if n < u64::from(PRUNE_BATCH) {
                        break;
                    }
                    // Let whatever waits for the database (placements) go before the next batch.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!(table = table.table_name(), error = %e, "could not delete old entries; retrying next round");
                    break;
                }
            }
        }
        if deleted[i] > 0 {
            tracing::info!(
                table = table.table_name(),
                deleted = deleted[i],
                older_than_ms = cutoff,
                "old entries deleted"
            );
        }
    }
    (deleted[0], deleted[1])
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    const BASE_MS: i64 = 1_700_000_000_000;
    const HOUR_MS: i64 = 3_600_000;

    /// Records every call with its cutoff; answers scripted counts (then 0).
    #[derive(Default)]
    struct FakePruner {
        calls: Mutex<Vec<(EntryTable, i64)>>,
        answers: Mutex<VecDeque<u64>>,
    }

    impl Pruner for FakePruner {
        async fn prune(&self, table: EntryTable, older_than_ms: i64, batch: u32) -> Result<u64, StoreError> {
            assert_eq!(batch, PRUNE_BATCH);
            self.calls.lock().unwrap().push((table, older_than_ms));
            Ok(self.answers.lock().unwrap().pop_front().unwrap_or(0))
        }
    }

    impl FakePruner {
        fn calls(&self) -> Vec<(EntryTable, i64)> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prunes_at_start_then_every_minute_in_batches() {
        let pruner = FakePruner::default();
        // First round: two full batches and a short one.
        pruner.answers.lock().unwrap().extend([1_000, 1_000, 7]);
        let policy = Policy { audit: Duration::from_secs(3600), metrics: Duration::ZERO };
        let start = tokio::time::Instant::now();
        let clock = move || BASE_MS + start.elapsed().as_millis() as i64;
        let shutdown = CancellationToken::new();
        let script = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let cutoff = BASE_MS - HOUR_MS;
            assert_eq!(pruner.calls(), vec![(EntryTable::Audit, cutoff); 3], "batches until a short one; metrics kept");
            tokio::time::sleep(Duration::from_secs(58)).await;
            assert_eq!(pruner.calls().len(), 3, "nothing before the minute is up");
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(pruner.calls()[3..], [(EntryTable::Audit, BASE_MS + 60_000 - HOUR_MS)]);
            shutdown.cancel();
        };
        tokio::join!(run_with(&pruner, policy, clock, &shutdown), script);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_keeps_everything() {
        let pruner = FakePruner::default();
        let shutdown = CancellationToken::new();
        let policy = Policy { audit: Duration::ZERO, metrics: Duration::ZERO };
        // Returns at once: nothing to schedule.
        run_with(&pruner, policy, || BASE_MS, &shutdown).await;
        assert!(pruner.calls().is_empty());
    }

    #[tokio::test]
    async fn a_round_stops_at_shutdown_and_reports_counts() {
        let pruner = FakePruner::default();
        pruner.answers.lock().unwrap().extend([1_000, 5, 1_000, 1_000, 20]);
        let policy = Policy { audit: Duration::from_secs(3600), metrics: Duration::from_secs(7200) };
        let shutdown = CancellationToken::new();
        assert_eq!(prune_once(&pruner, policy, BASE_MS, &shutdown).await, (1_005, 2_020));
        assert_eq!(pruner.calls()[2], (EntryTable::Metrics, BASE_MS - 2 * HOUR_MS));
        shutdown.cancel();
        pruner.answers.lock().unwrap().extend([1_000; 3]);
        assert_eq!(prune_once(&pruner, policy, BASE_MS, &shutdown).await, (0, 0), "no batch after shutdown");
    }
}
