//! The edge's durable outbox: every audit and metrics entry is written to a local SQLite file
//! before it is sent to the locator, and leaves the file only once the locator has acknowledged
//! that it committed it.
//!
//! # Flow
//!
//! Sessions call [`Outbox::push`], which never waits: it encodes the entry, assigns the next
//! sequence number and appends it to an in-memory queue (metrics entries up to
//! [`QUEUE_CAPACITY`] queued, audit entries up to [`AUDIT_QUEUE_CAPACITY`]).
//! One writer task ([`OutboxWriter::run`]) takes everything queued, inserts it in one transaction
//! (a group commit, at most [`MAX_BATCH`] entries) and publishes the highest committed sequence
//! number on [`Outbox::written`]. The link reads committed entries with [`Outbox::read_after`],
//! sends them in order and, when the locator answers `OutboxAck { up_to }`, calls
//! [`Outbox::ack`], which deletes them.
//!
//! # Guarantees
//!
//! - **Durable once written.** The file is in WAL mode with `synchronous = FULL` (see
//!   `store::connect_options` for why not `NORMAL`): an entry whose sequence number
//!   [`Outbox::written`] has reached survives a kill -9 and a power cut of the edge. Entries still
//!   in the queue (pushed, not yet committed: a few milliseconds' worth) are lost by a kill -9; a
//!   graceful shutdown commits them.
//! - **In order, never reused.** Sequence numbers start at 1, follow push order and are never
//!   reused by the same file, not even after every entry was acknowledged and the edge restarted.
//!   A new file (a wiped data directory) gets a new [`Outbox::outbox_id`], so the locator can tell
//!   its sequence numbers from the old file's.
//! - **Gone only when acknowledged.** Rows are deleted only by [`Outbox::ack`]; an unacknowledged
//!   entry is read again after a reconnect or a restart (the locator stores each sequence number
//!   once).
//!
//! # When the outbox is full
//!
//! `max_entries` bounds the unacknowledged entries, committed or queued (the depth).
//!
//! - A metrics entry is refused once the depth reaches 90% of `max_entries`: the last tenth is
//!   kept for audit entries, so metrics piling up while the locator is unreachable cannot crowd
//!   out the record of what happened.
//! - An audit entry is refused only once the depth reaches `max_entries`.
//! - An entry is also refused when the queue in front of the writer is full (the disk has
//!   stalled): [`QUEUE_CAPACITY`] entries for metrics, [`AUDIT_QUEUE_CAPACITY`] for audit
//!   entries, which thereby ride out bursts; or after the writer has stopped.
//!
//! Every refused entry is counted ([`OutboxStatus::dropped_audit`],
//! [`OutboxStatus::dropped_metrics`]). Each refused audit entry is also logged at error level with
//! its event, session, participant and user; at most one such line a second is written, and the
//! next line says how many were refused without a line of their own. The first refused metrics
//! entry of an overflow is logged at warn level.
//!
//! When the depth is back below 90% of `max_entries` (after an acknowledgement), the writer records
//! one [`AuditEvent::OutboxOverflow`] audit entry, detail "dropped N audit and M metrics entries
//! while the outbox was full", covering every entry refused since the previous such record; it
//! bypasses the bound. The writer checks whenever it wakes (a push or an acknowledgement), records
//! at most one every [`OVERFLOW_RECORD_INTERVAL`] while the edge runs, and records any refusals
//! still unrecorded at shutdown whatever the depth. So audit
//! entries are never dropped silently: each one is in the log and in an `outbox_overflow` entry.
//!
//! # Unreadable rows
//!
//! A row that no longer decodes (disk corruption, or a file written by an incompatible build) is
//! logged at error level with its sequence number and skipped by [`Outbox::read_after`]; it is
//! deleted when an acknowledgement covers it. Returning an error instead would stop the link at
//! that row forever, and no later entry would ever reach the locator.

mod store;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use duet_proto::codec;
use duet_proto::link::{OutboxStatus, SequencedEntry};
use duet_proto::outbox::{AuditEntry, AuditEvent, OutboxEntry};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use store::Row;

/// Entries waiting for the writer. At 100,000 entries a second this is about 160 ms of traffic,
/// many group commits' worth (one commit takes a few milliseconds), so it fills only when the
/// disk stalls; pushes are then refused like when the outbox is full.
pub const QUEUE_CAPACITY: usize = 16_384;

/// Audit entries may fill the queue this far: a burst (an edge shutting down, a network blip
/// that drops thousands of clients at once) pushes tens of thousands of participant-left and
/// session-ended entries within milliseconds, faster than one commit, and an audit entry is
/// refused only when there is truly no room. About 40 MB of queued entries at most.
pub const AUDIT_QUEUE_CAPACITY: usize = 262_144;

/// Most entries committed in one transaction. One fsync is already shared by thousands of entries
/// at this size, and a larger transaction would hold the write lock longer, delaying an
/// acknowledgement.
pub const MAX_BATCH: usize = 4_096;

/// The shortest time between two `outbox_overflow` audit entries while the edge runs. Under a
/// sustained overload the outbox dips below its bound after every acknowledgement; one record a
/// second keeps the count exact without filling the outbox with records of its own overflow.
pub const OVERFLOW_RECORD_INTERVAL: Duration = Duration::from_secs(1);

/// At most one log line per refused audit entry in this interval; the others are counted and the
/// next line gives their number.
const AUDIT_DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The first wait after a failed commit; it doubles after each failure up to
/// [`WRITE_RETRY_MAX`]. The queue keeps accepting entries meanwhile, up to its capacity.
const WRITE_RETRY_MIN: Duration = Duration::from_millis(50);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Failed attempts at one batch during shutdown before the writer gives up on what it still holds
/// (counted as dropped and logged), so a broken disk cannot hold the edge's shutdown forever.
const SHUTDOWN_WRITE_ATTEMPTS: u32 = 3;

/// The depth from which metrics entries are refused: `max_entries` less its last tenth (rounded
/// down), which is kept for audit entries.
fn metrics_limit(max_entries: u64) -> u64 {
    max_entries - max_entries / 10
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox max_entries must be at least 1")]
    InvalidMaxEntries,
    #[error("cannot open outbox {}: {source}", path.display())]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("outbox {} has format {found}, newer than this build's {supported}: it was written by a newer duet", path.display())]
    NewerFormat { path: PathBuf, found: i64, supported: i64 },
    #[error("outbox {}: {source}", path.display())]
    Database { path: PathBuf, source: sqlx::Error },
    #[error("outbox {}: its writer has stopped, so entries are no longer committed", path.display())]
    WriterStopped { path: PathBuf },
}

/// The edge's outbox. Cloning is cheap; every clone is the same outbox.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The group-commit task's half of an [`Outbox`]; run it with [`OutboxWriter::run`].
pub struct OutboxWriter {
    shared: Arc<Shared>,
    /// The writer's own connection; `None` after an error, until the next attempt reconnects.
    conn: Option<SqliteConnection>,
    options: SqliteConnectOptions,
    /// Publishes the highest committed sequence number; dropping it tells flushes the writer is
    /// gone.
    written: watch::Sender<u64>,
    /// When the last `outbox_overflow` entry was recorded.
    last_overflow_record: Option<Instant>,
}

struct Shared {
    path: PathBuf,
    outbox_id: u64,
    max_entries: u64,
    /// The depth from which metrics entries are refused.
    metrics_limit: u64,
    /// Connections for readers and acknowledgements (the writer has its own).
    pool: SqlitePool,
    pipeline: Mutex<Pipeline>,
    /// Wakes the writer: an entry was queued, or an acknowledgement made room.
    wake: Notify,
    /// The highest durably committed sequence number; the writer holds the sender.
    written: watch::Receiver<u64>,
    /// The highest acknowledged sequence number (as persisted).
    acked: AtomicU64,
    /// Unacknowledged entries, committed or queued. Grows only under the pipeline lock, so the
    /// bound check and the append are one step.
    depth: AtomicU64,
    dropped_audit: AtomicU64,
    dropped_metrics: AtomicU64,
    /// Refusals not yet recorded in an `outbox_overflow` entry.
    unrecorded_audit: AtomicU64,
    unrecorded_metrics: AtomicU64,
    audit_drop_log: Mutex<DropLog>,
}

/// Everything between `push` and a commit, under one lock held for a few instructions at a time.
struct Pipeline {
    queue: VecDeque<Row>,
    /// The sequence number the next pushed entry gets.
    next_seq: u64,
    /// `at_ms` of the first entry of the batch the writer is committing (`None` when idle).
    in_flight_at_ms: Option<i64>,
    /// `at_ms` of the committed, unacknowledged entry with the lowest sequence number.
    stored_oldest_at_ms: Option<i64>,
    /// The writer has taken its last batch: pushes are refused.
    closed: bool,
}

/// Rate limit of the error lines for refused audit entries.
#[derive(Default)]
struct DropLog {
    last_line: Option<Instant>,
    /// Refused audit entries since the last line that had no line of their own.
    unlogged: u64,
}

/// Why an entry was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Full,
    QueueFull,
    WriterStopped,
    Unencodable,
}

impl Refusal {
    const fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "outbox full",
            Refusal::QueueFull => "write queue full",
            Refusal::WriterStopped => "writer stopped",
            Refusal::Unencodable => "entry cannot be encoded",
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks is consistent after every statement, so a panic elsewhere
    // does not make it unusable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Outbox {
    /// Opens or creates the outbox file at `path` (its directory must exist) and returns the
    /// outbox and its writer, which must be run for entries to be committed.
    ///
    /// The file is SQLite in WAL mode with `synchronous = FULL`. In WAL mode `NORMAL` syncs the
    /// log only at checkpoints, so a power cut may lose the last commits although they were
    /// reported committed; `FULL` syncs the log on every commit, so whatever [`Outbox::written`]
    /// reports and every [`Outbox::ack`] that returned is on disk. It costs one fsync per group
    /// commit, not per entry.
    pub async fn open(path: &Path, max_entries: u64) -> Result<(Outbox, OutboxWriter), OutboxError> {
        if max_entries == 0 {
            return Err(OutboxError::InvalidMaxEntries);
        }
        let opened = store::open(path).await.map_err(|e| match e {
            store::OpenError::Sql(source) => OutboxError::Open { path: path.to_owned(), source },
            store::OpenError::Format { found } => {
                OutboxError::NewerFormat { path: path.to_owned(), found, supported: store::FORMAT }
            }
        })?;
        if !opened.journal_mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                path = %path.display(),
                journal_mode = %opened.journal_mode,
                "outbox file system cannot use write-ahead logging; commits stay durable but reads wait for writes"
            );
        }
        if opened.depth >= max_entries {
            tracing::warn!(
                path = %path.display(),
                depth = opened.depth,
                max_entries,
                "outbox opened full; entries are refused until the locator acknowledges some"
            );
        }
        tracing::info!(
            path = %path.display(),
            outbox.id = opened.outbox_id,
            depth = opened.depth,
            acked = opened.acked,
            written = opened.written,
            "outbox open"
        );
        let (written_tx, written_rx) = watch::channel(opened.written);
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            outbox_id: opened.outbox_id,
            max_entries,
            metrics_limit: metrics_limit(max_entries),
            pool: opened.pool,
            pipeline: Mutex::new(Pipeline {
                queue: VecDeque::new(),
                next_seq: opened.written + 1,
                in_flight_at_ms: None,
                stored_oldest_at_ms: opened.oldest_at_ms,
                closed: false,
            }),
            wake: Notify::new(),
            written: written_rx,
            acked: AtomicU64::new(opened.acked),
            depth: AtomicU64::new(opened.depth),
            dropped_audit: AtomicU64::new(0),
            dropped_metrics: AtomicU64::new(0),
            unrecorded_audit: AtomicU64::new(0),
            unrecorded_metrics: AtomicU64::new(0),
            audit_drop_log: Mutex::new(DropLog::default()),
        });
        let writer = OutboxWriter {
            shared: shared.clone(),
            conn: Some(opened.writer),
            options: opened.options,
            written: written_tx,
            last_overflow_record: None,
        };
        Ok((Outbox { shared }, writer))
    }

    /// A random nonzero number chosen when the file was created (kept in the file), so the
    /// locator can tell a new outbox from an old one under the same edge id.
    pub fn outbox_id(&self) -> u64 {
        self.shared.outbox_id
    }

    /// Queues an entry for the writer. Never waits. Sequence numbers follow push order. A refused
    /// entry (see the module documentation) is counted and, if it is an audit entry, logged.
    pub fn push(&self, entry: OutboxEntry) {
        let shared = &*self.shared;
        let bytes = match codec::encode_entry(&entry) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(error = %e, "outbox entry cannot be encoded");
                shared.refuse(&entry, Refusal::Unencodable);
                return;
            }
        };
        let (limit, queue_capacity) = match entry {
            OutboxEntry::Audit(_) => (shared.max_entries, AUDIT_QUEUE_CAPACITY),
            OutboxEntry::Metrics(_) => (shared.metrics_limit, QUEUE_CAPACITY),
        };
        let refusal = {
            let mut pipeline = lock(&shared.pipeline);
            if pipeline.closed {
                Some(Refusal::WriterStopped)
            } else if pipeline.queue.len() >= queue_capacity {
                Some(Refusal::QueueFull)
            } else if shared.depth.load(Ordering::Acquire) >= limit {
                Some(Refusal::Full)
            } else {
                shared.enqueue(&mut pipeline, entry.at_ms(), bytes);
                None
            }
        };
        match refusal {
            None => shared.wake.notify_one(),
            Some(refusal) => shared.refuse(&entry, refusal),
        }
    }

    /// The highest sequence number durably committed; it changes after each group commit.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.shared.written.clone()
    }

    /// Committed entries with `seq > after`, in order: at most `max_entries` (at least 1), and
    /// at most `max_bytes` of encoded entries unless the first one alone is larger (it is then
    /// returned alone). Empty when there is nothing after `after`. Rows that cannot be decoded
    /// are logged and skipped (see the module documentation).
    pub async fn read_after(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<SequencedEntry>, OutboxError> {
        let max_entries = max_entries.max(1);
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut cursor = after;
        loop {
            let want = max_entries - entries.len();
            let rows = store::read_after(&self.shared.pool, cursor, want).await.map_err(|e| self.shared.db_error(e))?;
            let at_end = rows.len() < want;
            for (seq, body) in rows {
                if !entries.is_empty() && bytes + body.len() > max_bytes {
                    return Ok(entries);
                }
                cursor = seq;
                match codec::decode_entry(&body) {
                    Ok(entry) => {
                        bytes += body.len();
                        entries.push(SequencedEntry { seq, entry });
                    }
                    Err(e) => tracing::error!(
                        path = %self.shared.path.display(),
                        seq,
                        error = %e,
                        "outbox entry cannot be decoded; skipping it"
                    ),
                }
            }
            // Only skipped rows make a full read come up short: read on past them.
            if at_end || entries.len() >= max_entries {
                return Ok(entries);
            }
        }
    }

    /// The locator committed every entry up to `up_to`: deletes them, durably. Idempotent; an
    /// `up_to` at or below the acknowledged point changes nothing. An `up_to` beyond what this
    /// outbox has written (a locator confusing outboxes) is logged and cut down to it.
    pub async fn ack(&self, up_to: u64) -> Result<(), OutboxError> {
        let shared = &*self.shared;
        let written = *shared.written.borrow();
        let up_to = if up_to > written {
            tracing::warn!(
                outbox.id = shared.outbox_id,
                up_to,
                written,
                "locator acknowledged entries this outbox has not written; acknowledging only what it has"
            );
            written
        } else {
            up_to
        };
        if up_to <= shared.acked.load(Ordering::Acquire) {
            return Ok(());
        }
        // The lowest remaining row is read and set while the acknowledgement holds the write
        // lock: the writer sets it only when it is unset, after its own commit, so neither can
        // overwrite the other with a stale value.
        let deleted = store::ack(&shared.pool, up_to, |oldest| lock(&shared.pipeline).stored_oldest_at_ms = oldest)
            .await
            .map_err(|e| shared.db_error(e))?;
        if let Some(deleted) = deleted {
            shared.acked.fetch_max(up_to, Ordering::AcqRel);
            shared.depth.fetch_sub(deleted, Ordering::AcqRel);
            // The writer records an overflow once there is room again.
            shared.wake.notify_one();
        }
        Ok(())
    }

    /// The highest acknowledged sequence number (0 if none ever), kept in the file across
    /// restarts.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Acquire)
    }

    /// Depth (unacknowledged entries, committed or queued), the age of the oldest of them, the
    /// last sequence number assigned and the entries refused since the edge started. Cheap: no
    /// SQL, one short lock.
    pub fn status(&self) -> OutboxStatus {
        let shared = &*self.shared;
        let (last_seq, oldest_at_ms) = {
            let pipeline = lock(&shared.pipeline);
            let oldest = pipeline
                .stored_oldest_at_ms
                .or(pipeline.in_flight_at_ms)
                .or_else(|| pipeline.queue.front().map(|row| row.at_ms));
            (pipeline.next_seq - 1, oldest)
        };
        let depth = shared.depth.load(Ordering::Acquire);
        let oldest_age_ms = match oldest_at_ms {
            Some(at_ms) if depth > 0 => u64::try_from(crate::now_ms().saturating_sub(at_ms)).unwrap_or(0),
            _ => 0,
        };
        OutboxStatus {
            depth,
            oldest_age_ms,
            last_seq,
            dropped_audit: shared.dropped_audit.load(Ordering::Relaxed),
            dropped_metrics: shared.dropped_metrics.load(Ordering::Relaxed),
        }
    }

    /// Waits until every entry pushed before this call is committed. Fails if the writer stops
    /// first; waits as long as the writer retries a failing disk (callers bound it with a
    /// timeout).
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let target = lock(&self.shared.pipeline).next_seq - 1;
        let mut written = self.shared.written.clone();
        let result = written.wait_for(|&w| w >= target).await.map(|_| ());
        result.map_err(|_| OutboxError::WriterStopped { path: self.shared.path.clone() })
    }
}

impl Shared {
    /// Appends an entry with the next sequence number. The caller holds the pipeline lock and has
    /// checked the bound (or bypasses it).
    fn enqueue(&self, pipeline: &mut Pipeline, at_ms: i64, entry: Vec<u8>) {
        let seq = pipeline.next_seq;
        pipeline.next_seq += 1;
        pipeline.queue.push_back(Row { seq, at_ms, entry });
        self.depth.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a refused entry and logs it (see the module documentation for the policy).
    fn refuse(&self, entry: &OutboxEntry, refusal: Refusal) {
        match entry {
            OutboxEntry::Audit(audit) => {
                self.dropped_audit.fetch_add(1, Ordering::Relaxed);
                self.unrecorded_audit.fetch_add(1, Ordering::AcqRel);
                self.log_audit_drop(audit, refusal);
            }
            OutboxEntry::Metrics(metrics) => {
                self.dropped_metrics.fetch_add(1, Ordering::Relaxed);
                if self.unrecorded_metrics.fetch_add(1, Ordering::AcqRel) == 0 {
                    tracing::warn!(
                        kind = metrics.kind(),
                        reason = refusal.as_str(),
                        depth = self.depth.load(Ordering::Relaxed),
                        max_entries = self.max_entries,
                        "outbox refused a metrics entry; further ones are counted until it has room"
                    );
                }
            }
        }
    }

    fn log_audit_drop(&self, audit: &AuditEntry, refusal: Refusal) {
        let unlogged = {
            let mut log = lock(&self.audit_drop_log);
            let now = Instant::now();
            if log.last_line.is_some_and(|last| now.duration_since(last) < AUDIT_DROP_LOG_INTERVAL) {
                log.unlogged += 1;
                return;
            }
            log.last_line = Some(now);
            std::mem::take(&mut log.unlogged)
        };
        tracing::error!(
            event = audit.event.as_str(),
            session.id = audit.session_id.as_deref().unwrap_or("-"),
            participant = ?audit.participant_id,
            user.id = audit.user_id.as_deref().unwrap_or("-"),
            at_ms = audit.at_ms,
            detail = %audit.detail,
            reason = refusal.as_str(),
            also_dropped_unlogged = unlogged,
            "outbox dropped an audit entry"
        );
    }

    /// Queues one `outbox_overflow` audit entry for the refusals not yet recorded, bypassing the
    /// bound, the queue capacity and the closed flag (only the writer calls this, before it takes
    /// its batches). Returns whether there was anything to record.
    fn record_overflow(&self) -> bool {
        let audit = self.unrecorded_audit.swap(0, Ordering::AcqRel);
        let metrics = self.unrecorded_metrics.swap(0, Ordering::AcqRel);
        if audit == 0 && metrics == 0 {
            return false;
        }
        let unlogged = std::mem::take(&mut lock(&self.audit_drop_log).unlogged);
        let detail = format!("dropped {audit} audit and {metrics} metrics entries while the outbox was full");
        if audit > 0 {
            tracing::error!(dropped_audit = audit, dropped_metrics = metrics, unlogged_audit = unlogged, "{detail}");
        } else {
            tracing::warn!(dropped_audit = audit, dropped_metrics = metrics, "{detail}");
        }
        let entry = OutboxEntry::Audit(AuditEntry {
            at_ms: crate::now_ms(),
            event: AuditEvent::OutboxOverflow,
            session_id: None,
            participant_id: None,
            user_id: None,
            detail,
        });
        match codec::encode_entry(&entry) {
            Ok(bytes) => self.enqueue(&mut lock(&self.pipeline), entry.at_ms(), bytes),
            Err(e) => tracing::error!(error = %e, "outbox overflow entry cannot be encoded"),
        }
        true
    }

    /// Takes the next batch for the writer, or `None` when the queue is empty. With `close`, the
    /// batch that empties the queue also closes it to pushes.
    fn take_batch(&self, close: bool) -> Option<Vec<Row>> {
        let mut pipeline = lock(&self.pipeline);
        let n = pipeline.queue.len().min(MAX_BATCH);
        let batch: Vec<Row> = pipeline.queue.drain(..n).collect();
        if close && pipeline.queue.is_empty() {
            pipeline.closed = true;
        }
        pipeline.in_flight_at_ms = batch.first().map(|row| row.at_ms);
        (!batch.is_empty()).then_some(batch)
    }

    /// After a commit: the batch is the oldest stored entry if nothing older is.
    fn committed(&self, first_at_ms: i64) {
        let mut pipeline = lock(&self.pipeline);
        pipeline.stored_oldest_at_ms.get_or_insert(first_at_ms);
        pipeline.in_flight_at_ms = None;
    }

    /// The writer gave up (shutdown with a failing disk): `batch` and everything still queued
    /// will never be committed. Each is counted and logged as refused.
    fn abandon(&self, batch: Vec<Row>) {
        let rest: Vec<Row> = {
            let mut pipeline = lock(&self.pipeline);
            pipeline.closed = true;
            pipeline.in_flight_at_ms = None;
            pipeline.queue.drain(..).collect()
        };
        let lost = batch.len() + rest.len();
        tracing::error!(path = %self.path.display(), entries = lost, "outbox writer gave up; these entries are lost");
        self.depth.fetch_sub(lost as u64, Ordering::AcqRel);
        for row in batch.iter().chain(&rest) {
            if let Ok(entry) = codec::decode_entry(&row.entry) {
                self.refuse(&entry, Refusal::WriterStopped);
            }
        }
    }

    fn db_error(&self, source: sqlx::Error) -> OutboxError {
        OutboxError::Database { path: self.path.clone(), source }
    }
}

impl OutboxWriter {
    /// The group-commit loop: takes everything queued (up to [`MAX_BATCH`] entries per
    /// transaction), commits it and publishes [`Outbox::written`]; records overflows. A failed
    /// commit is retried with backoff, keeping its entries. When `shutdown` is cancelled, commits
    /// what is queued, closes the outbox to pushes and returns; entries pushed after that are
    /// refused, so cancel it after the last producer (the sessions) has finished.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {}
                () = self.shared.wake.notified() => {}
            }
            let stopping = shutdown.is_cancelled();
            self.maybe_record_overflow(stopping);
            if !self.write_queued(stopping, &shutdown).await || stopping {
                break;
            }
        }
        if let Some(conn) = self.conn.take() {
            if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "outbox writer connection did not close cleanly");
            }
        }
        tracing::debug!(written = *self.written.borrow(), "outbox writer stopped");
    }

    fn maybe_record_overflow(&mut self, stopping: bool) {
        let shared = &*self.shared;
        let due = stopping
            || (shared.depth.load(Ordering::Acquire) < shared.metrics_limit
                && self.last_overflow_record.is_none_or(|at| at.elapsed() >= OVERFLOW_RECORD_INTERVAL));
        if due && shared.record_overflow() {
            self.last_overflow_record = Some(Instant::now());
        }
    }

    /// Commits batches until the queue is empty (closing it if `closing`), or until shutdown
    /// starts. Returns false if the writer gave up.
    async fn write_queued(&mut self, closing: bool, shutdown: &CancellationToken) -> bool {
        while let Some(batch) = self.shared.take_batch(closing) {
            if let Err(batch) = self.commit(batch, shutdown).await {
                self.shared.abandon(batch);
                return false;
            }
            if !closing && shutdown.is_cancelled() {
                break;
            }
        }
        true
    }

    /// Commits one batch, retrying failures; gives the batch back if it gives up (only during
    /// shutdown).
    async fn commit(&mut self, batch: Vec<Row>, shutdown: &CancellationToken) -> Result<(), Vec<Row>> {
        let mut delay = WRITE_RETRY_MIN;
        let mut failures = 0;
        loop {
            match self.try_commit(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    self.conn = None;
                    failures += 1;
                    if shutdown.is_cancelled() && failures >= SHUTDOWN_WRITE_ATTEMPTS {
                        tracing::error!(path = %self.shared.path.display(), error = %e, failures, "outbox commit failed during shutdown");
                        return Err(batch);
                    }
                    tracing::error!(
                        path = %self.shared.path.display(),
                        error = %e,
                        entries = batch.len(),
                        retry_in = ?delay,
                        "outbox commit failed"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(WRITE_RETRY_MAX);
                }
            }
        }
        if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
            self.shared.committed(first.at_ms);
            self.written.send_replace(last.seq);
        }
        Ok(())
    }

    async fn try_commit(&mut self, batch: &[Row]) -> Result<(), sqlx::Error> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(store::reconnect(&self.options).await?),
        };
        store::insert(conn, batch).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use duet_proto::outbox::{MetricsEntry, UsageMetrics};
    use tokio::task::JoinHandle;

    use super::*;

    fn audit(n: u32) -> OutboxEntry {
        audit_at(n, crate::now_ms())
    }

    fn audit_at(n: u32, at_ms: i64) -> OutboxEntry {
        OutboxEntry::Audit(AuditEntry {
            at_ms,
            event: AuditEvent::ParticipantJoined,
            session_id: Some(format!("session-{n}")),
            participant_id: Some(n),
            user_id: Some("user-a".into()),
            detail: String::new(),
        })
    }

    fn metrics(n: u64) -> OutboxEntry {
        OutboxEntry::Metrics(MetricsEntry::Usage(UsageMetrics {
            at_ms: crate::now_ms(),
            interval_ms: 10_000,
            connections: 2,
            sessions: 1,
            messages_relayed: n,
            bytes_relayed: n * 100,
        }))
    }

    /// An outbox with its writer running.
    struct Running {
        outbox: Outbox,
        shutdown: CancellationToken,
        writer: JoinHandle<()>,
    }

    impl Running {
        async fn open(path: &Path, max_entries: u64) -> Running {
            let (outbox, writer) = Outbox::open(path, max_entries).await.unwrap();
            let shutdown = CancellationToken::new();
            let writer = tokio::spawn(writer.run(shutdown.clone()));
            Running { outbox, shutdown, writer }
        }

        /// Graceful shutdown.
        async fn stop(self) {
            self.shutdown.cancel();
            self.writer.await.unwrap();
        }

        /// Like kill -9: the writer stops wherever it is, nothing is drained.
        async fn crash(self) {
            self.writer.abort();
            let _ = self.writer.await;
            self.outbox.shared.pool.close().await;
        }
    }

    fn seqs(entries: &[SequencedEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    async fn wait_written(outbox: &Outbox, seq: u64) {
        outbox.written().wait_for(|&w| w >= seq).await.unwrap();
    }

    #[tokio::test]
    async fn outbox_entries_go_out_in_order_and_leave_when_acked() {
        let dir = tempfile::tempdir().unwrap();
        let r = Running::open(&dir.path().join("outbox.db"), 1000).await;
        let pushed: Vec<OutboxEntry> = (0..10).map(|n| if n % 2 == 0 { audit(n) } else { metrics(n.into()) }).collect();
        for entry in &pushed {
            r.outbox.push(entry.clone());
        }
        r.outbox.flush().await.unwrap();
        assert_eq!(*r.outbox.written().borrow(), 10);

        let read = r.outbox.read_after(0, 100, usize::MAX).await.unwrap();
        assert_eq!(seqs(&read), (1..=10).collect::<Vec<_>>());
        assert_eq!(read.iter().map(|e| e.entry.clone()).collect::<Vec<_>>(), pushed);
        assert_eq!(seqs(&r.outbox.read_after(4, 3, usize::MAX).await.unwrap()), vec![5, 6, 7]);

        r.outbox.ack(4).await.unwrap();
        assert_eq!(r.outbox.acked(), 4);
        assert_eq!(r.outbox.status().depth, 6);
        assert_eq!(seqs(&r.outbox.read_after(0, 100, usize::MAX).await.unwrap()), (5..=10).collect::<Vec<_>>());

        // Idempotent, and an older acknowledgement changes nothing.
        r.outbox.ack(4).await.unwrap();
        r.outbox.ack(2).await.unwrap();
        assert_eq!(r.outbox.acked(), 4);
        assert_eq!(r.outbox.status().depth, 6);

        // Beyond what was written: cut down to it.
        r.outbox.ack(1_000).await.unwrap();
        assert_eq!(r.outbox.acked(), 10);
        assert_eq!(r.outbox.status().depth, 0);
        assert!(r.outbox.read_after(0, 100, usize::MAX).await.unwrap().is_empty());
        r.stop().await;
    }

    #[tokio::test]
    async fn outbox_file_is_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let r = Running::open(&dir.path().join("outbox.db"), 10).await;
        let mut conn = r.outbox.shared.pool.acquire().await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await.unwrap();
        assert_eq!((journal.as_str(), synchronous), ("wal", 2), "2 is FULL");
        drop(conn);
        assert!(matches!(Outbox::open(&dir.path().join("other.db"), 0).await, Err(OutboxError::InvalidMaxEntries)));
        r.stop().await;
    }

    #[tokio::test]
    async fn outbox_read_after_respects_max_bytes_but_returns_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let r = Running::open(&dir.path().join("outbox.db"), 1000).await;
        for n in 0..10 {
            r.outbox.push(audit(n));
        }
        r.outbox.flush().await.unwrap();
        let size = codec::encode_entry(&audit(0)).unwrap().len();
        assert_eq!(seqs(&r.outbox.read_after(0, 100, size * 3).await.unwrap()), vec![1, 2, 3]);
        assert_eq!(seqs(&r.outbox.read_after(0, 100, size * 3 - 1).await.unwrap()), vec![1, 2]);
        assert_eq!(seqs(&r.outbox.read_after(2, 100, 1).await.unwrap()), vec![3]);
        assert_eq!(seqs(&r.outbox.read_after(2, 0, usize::MAX).await.unwrap()), vec![3]);
        r.stop().await;
    }

    #[tokio::test]
    async fn outbox_sequence_numbers_are_never_reused_after_a_full_ack_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let r = Running::open(&path, 1000).await;
        let id = r.outbox.outbox_id();
        assert_ne!(id, 0);
        for n in 0..5 {
            r.outbox.push(audit(n));
        }
        r.outbox.flush().await.unwrap();
        r.outbox.ack(5).await.unwrap();
        r.stop().await;

        let r = Running::open(&path, 1000).await;
        assert_eq!(r.outbox.outbox_id(), id);
        assert_eq!(r.outbox.acked(), 5);
        assert_eq!(*r.outbox.written().borrow(), 5);
        assert_eq!(r.outbox.status(), OutboxStatus { last_seq: 5, ..OutboxStatus::default() });
        r.outbox.push(audit(5));
        r.outbox.flush().await.unwrap();
        assert_eq!(seqs(&r.outbox.read_after(0, 100, usize::MAX).await.unwrap()), vec![6]);
        r.stop().await;

        // A new file is a new outbox.
        let other = Running::open(&dir.path().join("other.db"), 1000).await;
        assert_ne!(other.outbox.outbox_id(), id);
        other.stop().await;
    }

    #[tokio::test]
    async fn outbox_committed_entries_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let r = Running::open(&path, 1000).await;
        for n in 0..20 {
            r.outbox.push(audit(n));
        }
        r.outbox.flush().await.unwrap();
        r.outbox.ack(3).await.unwrap();
        r.crash().await;

        let r = Running::open(&path, 1000).await;
        assert_eq!(r.outbox.acked(), 3);
        let status = r.outbox.status();
        assert_eq!((status.depth, status.last_seq), (17, 20));
        let read = r.outbox.read_after(r.outbox.acked(), 100, usize::MAX).await.unwrap();
        assert_eq!(seqs(&read), (4..=20).collect::<Vec<_>>());
        let OutboxEntry::Audit(first) = &read[0].entry else { panic!("not an audit entry") };
        assert_eq!(first.session_id.as_deref(), Some("session-3"));
        r.stop().await;
    }

    #[tokio::test]
    async fn outbox_graceful_shutdown_commits_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let (outbox, writer) = Outbox::open(&path, 100_000).await.unwrap();
        for n in 0..10_000 {
            outbox.push(audit(n));
        }
        // The writer has not even started: everything is queued.
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        writer.run(shutdown).await;
        outbox.flush().await.unwrap();

        // Closed: later pushes are refused and counted (they get no sequence number).
        outbox.push(audit(10_000));
        outbox.push(metrics(0));
        let status = outbox.status();
        assert_eq!((status.dropped_audit, status.dropped_metrics, status.last_seq), (1, 1, 10_000));
        drop(outbox);

        let r = Running::open(&path, 100_000).await;
        assert_eq!(r.outbox.status().depth, 10_000);
        let read = r.outbox.read_after(9_990, 100, usize::MAX).await.unwrap();
        assert_eq!(seqs(&read), (9_991..=10_000).collect::<Vec<_>>());
        r.stop().await;
    }

    #[tokio::test]
    async fn outbox_flush_fails_when_the_writer_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, writer) = Outbox::open(&dir.path().join("outbox.db"), 10).await.unwrap();
        outbox.flush().await.unwrap();
        outbox.push(audit(0));
        drop(writer);
        assert!(matches!(outbox.flush().await, Err(OutboxError::WriterStopped { .. })));
    }

    #[tokio::test]
    async fn outbox_bound_refuses_metrics_first_then_audit_and_records_the_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let r = Running::open(&dir.path().join("outbox.db"), 10).await;
        // Metrics fill 90%: 9 of 12 are accepted.
        for n in 0..12 {
            r.outbox.push(metrics(n));
        }
        // Audit entries take the last tenth, then are refused too.
        r.outbox.push(audit(1));
        r.outbox.push(audit(2));
        r.outbox.push(audit(3));
        let status = r.outbox.status();
        assert_eq!((status.depth, status.last_seq, status.dropped_metrics, status.dropped_audit), (10, 10, 3, 2));
        r.outbox.flush().await.unwrap();
        let read = r.outbox.read_after(0, 100, usize::MAX).await.unwrap();
        assert_eq!(seqs(&read), (1..=10).collect::<Vec<_>>());
        let OutboxEntry::Audit(last) = &read[9].entry else { panic!("not an audit entry") };
        assert_eq!(last.session_id.as_deref(), Some("session-1"));

        // Still full: an acknowledgement that leaves the depth at 90% records nothing yet.
        r.outbox.ack(1).await.unwrap();
        r.outbox.push(metrics(99));
        r.outbox.flush().await.unwrap();
        assert_eq!(r.outbox.status().last_seq, 10);
        assert_eq!(r.outbox.status().dropped_metrics, 4);

        // Room again: one overflow entry for everything refused, past the bound if need be.
        r.outbox.ack(5).await.unwrap();
        wait_written(&r.outbox, 11).await;
        let read = r.outbox.read_after(10, 100, usize::MAX).await.unwrap();
        assert_eq!(read.len(), 1);
        let OutboxEntry::Audit(overflow) = &read[0].entry else { panic!("not an audit entry: {:?}", read[0]) };
        assert_eq!(overflow.event, AuditEvent::OutboxOverflow);
        assert_eq!(overflow.detail, "dropped 2 audit and 4 metrics entries while the outbox was full");
        let status = r.outbox.status();
        assert_eq!((status.depth, status.last_seq, status.dropped_metrics, status.dropped_audit), (6, 11, 4, 2));

        // Nothing more to record: no second overflow entry.
        r.outbox.ack(11).await.unwrap();
        r.outbox.push(metrics(100));
        r.outbox.flush().await.unwrap();
        assert_eq!(seqs(&r.outbox.read_after(11, 100, usize::MAX).await.unwrap()), vec![12]);
        r.stop().await;
    }

    #[tokio::test]
    async fn outbox_refusals_not_yet_recorded_are_recorded_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let r = Running::open(&path, 2).await;
        for n in 0..3 {
            r.outbox.push(audit(n));
        }
        r.outbox.flush().await.unwrap();
        r.stop().await;

        let r = Running::open(&path, 2).await;
        let read = r.outbox.read_after(0, 100, usize::MAX).await.unwrap();
        assert_eq!(seqs(&read), vec![1, 2, 3]);
        let OutboxEntry::Audit(overflow) = &read[2].entry else { panic!("not an audit entry") };
        assert_eq!(overflow.event, AuditEvent::OutboxOverflow);
        assert_eq!(overflow.detail, "dropped 1 audit and 0 metrics entries while the outbox was full");
        r.stop().await;
    }

    #[tokio::test]
    async fn outbox_full_queue_refuses_entries() {
        let dir = tempfile::tempdir().unwrap();
        // The writer never runs, so nothing leaves the queue.
        let (outbox, _writer) = Outbox::open(&dir.path().join("outbox.db"), 1_000_000).await.unwrap();
        for n in 0..=QUEUE_CAPACITY {
            outbox.push(metrics(n as u64));
        }
        let status = outbox.status();
        assert_eq!((status.depth, status.dropped_metrics), (QUEUE_CAPACITY as u64, 1));
        // Audit entries have the larger queue of their own.
        for n in 0..AUDIT_QUEUE_CAPACITY - QUEUE_CAPACITY {
            outbox.push(audit(n as u32));
        }
        assert_eq!(outbox.status().dropped_audit, 0);
        outbox.push(audit(0));
        let status = outbox.status();
        assert_eq!((status.depth, status.dropped_audit), (AUDIT_QUEUE_CAPACITY as u64, 1));
    }

    #[tokio::test]
    async fn outbox_status_reports_depth_and_the_oldest_entrys_age() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, writer) = Outbox::open(&dir.path().join("outbox.db"), 100).await.unwrap();
        assert_eq!(outbox.status(), OutboxStatus::default());
        let now = crate::now_ms();
        outbox.push(audit_at(1, now - 50_000));
        outbox.push(audit_at(2, now - 20_000));
        outbox.push(audit_at(3, now - 10_000));

        // Queued only.
        let status = outbox.status();
        assert_eq!((status.depth, status.last_seq), (3, 3));
        assert!((50_000..60_000).contains(&status.oldest_age_ms), "{status:?}");

        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(writer.run(shutdown.clone()));
        outbox.flush().await.unwrap();
        assert!((50_000..60_000).contains(&outbox.status().oldest_age_ms));

        outbox.ack(1).await.unwrap();
        let status = outbox.status();
        assert_eq!(status.depth, 2);
        assert!((20_000..30_000).contains(&status.oldest_age_ms), "{status:?}");

        outbox.ack(3).await.unwrap();
        assert_eq!(outbox.status(), OutboxStatus { last_seq: 3, ..OutboxStatus::default() });

        outbox.push(audit_at(4, now - 5_000));
        outbox.flush().await.unwrap();
        assert!((5_000..15_000).contains(&outbox.status().oldest_age_ms));
        shutdown.cancel();
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn outbox_undecodable_rows_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let r = Running::open(&dir.path().join("outbox.db"), 1000).await;
        for n in 0..6 {
            r.outbox.push(audit(n));
        }
        r.outbox.flush().await.unwrap();
        sqlx::query("UPDATE entries SET entry = x'ffffffffff' WHERE seq IN (2, 3, 4)")
            .execute(&r.outbox.shared.pool)
            .await
            .unwrap();
        assert_eq!(seqs(&r.outbox.read_after(0, 100, usize::MAX).await.unwrap()), vec![1, 5, 6]);
        // A read made only of bad rows reads on past them.
        assert_eq!(seqs(&r.outbox.read_after(1, 2, usize::MAX).await.unwrap()), vec![5, 6]);
        r.outbox.ack(6).await.unwrap();
        assert_eq!(r.outbox.status().depth, 0);
        r.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outbox_reads_and_acks_while_entries_are_pushed() {
        const N: u64 = 20_000;
        let dir = tempfile::tempdir().unwrap();
        // Far above N: this test is about concurrency, not the bound.
        let r = Running::open(&dir.path().join("outbox.db"), 10 * N).await;
        let pusher = {
            let outbox = r.outbox.clone();
            tokio::spawn(async move {
                for n in 0..N {
                    outbox.push(metrics(n));
                    if n % 500 == 499 {
                        // Stay well below the queue's capacity.
                        wait_written(&outbox, n + 1 - 2_000.min(n + 1)).await;
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let mut next = 1;
        let mut written = r.outbox.written();
        while next <= N {
            let read = r.outbox.read_after(next - 1, 2_000, usize::MAX).await.unwrap();
            if read.is_empty() {
                written.changed().await.unwrap();
                continue;
            }
            for e in &read {
                assert_eq!(e.seq, next);
                let OutboxEntry::Metrics(MetricsEntry::Usage(u)) = &e.entry else { panic!("unexpected entry") };
                assert_eq!(u.messages_relayed, next - 1);
                next += 1;
            }
            r.outbox.ack(next - 1).await.unwrap();
        }
        pusher.await.unwrap();
        let status = r.outbox.status();
        assert_eq!((status.depth, status.last_seq, status.dropped_metrics), (0, N, 0));
        r.stop().await;
    }

    /// Push-and-commit rate: `cargo test --release -p duet-edge outbox_push_commit_rate -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn outbox_push_commit_rate() {
        const N: u64 = 200_000;
        let dir = tempfile::tempdir().unwrap();
        let r = Running::open(&dir.path().join("outbox.db"), 1_000_000).await;
        let start = Instant::now();
        for n in 0..N {
            r.outbox.push(audit(n as u32));
            if n % 1_000 == 999 {
                // Producers this fast would overrun the queue; keep at most ~8,000 in it.
                let target = (n + 1).saturating_sub(8_000);
                wait_written(&r.outbox, target).await;
            }
        }
        r.outbox.flush().await.unwrap();
        let elapsed = start.elapsed();
        let status = r.outbox.status();
        assert_eq!(status.dropped_audit, 0);
        println!(
            "pushed and committed {N} audit entries ({} bytes each) in {elapsed:?}: {:.0} entries/s",
            codec::encode_entry(&audit(0)).unwrap().len(),
            N as f64 / elapsed.as_secs_f64()
        );

        let start = Instant::now();
        let read = r.outbox.read_after(100_000, 2_000, usize::MAX).await.unwrap();
        assert_eq!(read.len(), 2_000);
        println!("read 2,000 entries in {:?}", start.elapsed());
        let start = Instant::now();
        r.outbox.ack(N / 2).await.unwrap();
        println!("acknowledged {} entries in {:?}", N / 2, start.elapsed());
        r.stop().await;
    }
}
