//! The outbox's SQLite file: the only code in the outbox that speaks SQL.
//!
//! Two tables:
//! - `entries (seq INTEGER PRIMARY KEY, at_ms, entry)`: one row per unacknowledged entry, `entry`
//!   holding [`duet_proto::codec::encode_entry`]'s bytes. Rows are inserted in sequence order and
//!   deleted only by an acknowledgement, so the rows are always `acked + 1 ..= last written`.
//! - `meta (key, value)`: `format` (this file's layout, [`FORMAT`]), `outbox_id` (chosen at
//!   creation) and `acked` (the highest sequence number the locator acknowledged).
//!
//! The highest sequence number ever written is therefore `max(acked, max(seq))`, even when every
//! row has been acknowledged and deleted: that is how sequence numbers survive a restart without
//! being reused, with no extra write per transaction.
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`, so it takes the write lock up front and
//! waits in SQLite's busy handler (up to [`BUSY_TIMEOUT`]) instead of failing when the writer
//! task and an acknowledgement meet.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

/// The layout written by this build. A file with a higher number came from a newer duet and is
/// refused rather than misread.
pub(super) const FORMAT: i64 = 1;

/// How long a statement waits for another connection's write lock. Write transactions last a
/// few milliseconds (one group commit or one acknowledgement), so reaching this means the disk
/// has stalled.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rows per `INSERT` statement: a few hundred rows amortise the per-statement cost of the driver
/// (each statement is a round trip to SQLite's worker thread) while staying far below SQLite's
/// limit of 32,766 bound parameters (3 per row).
const ROWS_PER_INSERT: usize = 256;

/// Connections for readers (`read_after`) and acknowledgements, besides the writer's own. WAL
/// lets them read while the writer commits.
const POOL_CONNECTIONS: u32 = 2;

/// One row of `entries`.
#[derive(Debug)]
pub(super) struct Row {
    pub seq: u64,
    pub at_ms: i64,
    /// The entry in the outbox codec.
    pub entry: Vec<u8>,
}

/// What [`open`] found in the file.
pub(super) struct Opened {
    /// The writer task's own connection.
    pub writer: SqliteConnection,
    /// Readers and acknowledgements.
    pub pool: SqlitePool,
    /// Used to reconnect the writer after an error.
    pub options: SqliteConnectOptions,
    pub outbox_id: u64,
    pub acked: u64,
    /// The highest sequence number written (and durable).
    pub written: u64,
    /// Rows not yet acknowledged.
    pub depth: u64,
    /// `at_ms` of the unacknowledged row with the lowest sequence number.
    pub oldest_at_ms: Option<i64>,
    /// The journal mode SQLite reports (`wal`, unless the file system cannot do WAL).
    pub journal_mode: String,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("format {found} is newer than this build's {FORMAT}")]
    Format { found: i64 },
}

/// Connection settings for every connection to the outbox file.
///
/// `synchronous = FULL`: in WAL mode SQLite's `NORMAL` does not sync the WAL on commit, only at
/// checkpoints, so the last transactions reported committed can vanish in a power cut (the
/// database stays consistent, the entries are just gone). `FULL` syncs the WAL on every commit,
/// so an entry is on disk once [`super::Outbox::written`] covers it and a deletion is on disk once
/// [`super::Outbox::ack`] returns. The cost is one fsync per group commit, not per entry.
fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false)
}

/// Opens or creates the outbox file and reads where it stands.
pub(super) async fn open(path: &Path) -> Result<Opened, OpenError> {
    let options = connect_options(path);
    let mut writer = SqliteConnection::connect_with(&options).await?;
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut writer).await?;

    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY NOT NULL, at_ms INTEGER NOT NULL, entry BLOB NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    // 1 ..= i64::MAX: nonzero, and stored as a plain positive SQLite integer.
    let new_id: i64 = rand::random_range(1..=i64::MAX);
    sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?), ('outbox_id', ?), ('acked', 0)")
        .bind(FORMAT)
        .bind(new_id)
        .execute(&mut *tx)
        .await?;
    let format: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'format'").fetch_one(&mut *tx).await?;
    if format > FORMAT {
        return Err(OpenError::Format { found: format });
    }
    let outbox_id: i64 =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'outbox_id'").fetch_one(&mut *tx).await?;
    let acked: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'acked'").fetch_one(&mut *tx).await?;
    let (max_seq, depth): (Option<i64>, i64) =
        sqlx::query_as("SELECT MAX(seq), COUNT(*) FROM entries").fetch_one(&mut *tx).await?;
    let oldest_at_ms: Option<i64> =
        sqlx::query_scalar("SELECT at_ms FROM entries ORDER BY seq LIMIT 1").fetch_optional(&mut *tx).await?;
    tx.commit().await?;

    let pool = SqlitePoolOptions::new().max_connections(POOL_CONNECTIONS).connect_with(options.clone()).await?;
    Ok(Opened {
        writer,
        pool,
        options,
        outbox_id: from_sql(outbox_id),
        acked: from_sql(acked),
        written: from_sql(acked.max(max_seq.unwrap_or(0))),
        depth: from_sql(depth),
        oldest_at_ms,
        journal_mode,
    })
}

/// Connects the writer again after an error.
pub(super) async fn reconnect(options: &SqliteConnectOptions) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnection::connect_with(options).await
}

/// Inserts `rows` in one transaction; they are durable when this returns `Ok`.
pub(super) async fn insert(conn: &mut SqliteConnection, rows: &[Row]) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::with_capacity(48 + chunk.len() * 10);
        // A retry of a commit that did succeed (its answer was lost) finds its rows there.
        sql.push_str("INSERT OR IGNORE INTO entries (seq, at_ms, entry) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
        }
        // Full chunks always have the same text and are worth caching; the last one's size varies.
        let mut query = sqlx::query(&sql).persistent(chunk.len() == ROWS_PER_INSERT);
        for row in chunk {
            query = query.bind(to_sql(row.seq)).bind(row.at_ms).bind(&row.entry[..]);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Up to `limit` rows with `seq > after`, in order.
pub(super) async fn read_after(
    pool: &SqlitePool,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, sqlx::Error> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, entry FROM entries WHERE seq > ? ORDER BY seq LIMIT ?")
        .bind(to_sql(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(seq, entry)| (from_sql(seq), entry)).collect())
}

/// Deletes the rows up to `up_to` and records `up_to` as acknowledged, in one transaction.
/// Returns the number of rows deleted, or `None` when `up_to` is not above the recorded point
/// (nothing to do).
///
/// `on_oldest` receives the `at_ms` of the lowest remaining row while the transaction still holds
/// the write lock, so no commit of the writer can slip between that query and its use.
pub(super) async fn ack(
    pool: &SqlitePool,
    up_to: u64,
    on_oldest: impl FnOnce(Option<i64>),
) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let acked: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'acked'").fetch_one(&mut *tx).await?;
    if up_to <= from_sql(acked) {
        return Ok(None);
    }
    let deleted =
        sqlx::query("DELETE FROM entries WHERE seq <= ?").bind(to_sql(up_to)).execute(&mut *tx).await?.rows_affected();
    sqlx::query("UPDATE meta SET value = ? WHERE key = 'acked'").bind(to_sql(up_to)).execute(&mut *tx).await?;
    let oldest: Option<i64> =
        sqlx::query_scalar("SELECT at_ms FROM entries ORDER BY seq LIMIT 1").fetch_optional(&mut *tx).await?;
    on_oldest(oldest);
    tx.commit().await?;
    Ok(Some(deleted))
}

/// Sequence numbers and counts are `u64` in Rust and `INTEGER` (i64) in SQLite; neither comes
/// anywhere near 2^63.
fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
