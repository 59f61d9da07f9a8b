//! The locator's storage: the only code that talks to the database.
//!
//! One [`Store`] serves SQLite, PostgreSQL and MySQL/MariaDB through sqlx's `Any` driver with
//! runtime queries (nothing needs a database at build time). SQL is written once with `?`
//! placeholders and rewritten to `$n` for PostgreSQL; the few statements that differ per dialect
//! (upserts) are chosen by [`Dialect`]. Migrations live in `migrations/<dialect>/`, are embedded
//! in the binary and run at start-up.
//!
//! Everything another locator replica must know lives here, never only in memory. Times are Unix
//! milliseconds in `BIGINT` columns, so every dialect stores and compares them the same way.
//! `sqlx`'s `Any` driver has no unsigned integers: identifiers that use all 64 bits (outbox ids,
//! sequence numbers) are stored as their bit pattern, counts saturate at `i64::MAX`.
//!
//! Audit and metrics entries relayed from edges' outboxes are stored once per (edge, outbox id,
//! sequence number), whatever arrives again ([`Store::store_outbox`]); they are read oldest first
//! with keyset pagination ([`Store::audit_entries`]) and pruned in short batches
//! ([`Store::prune_entries`], driven by [`crate::retention`]).

mod admin;
mod records;

use std::borrow::Cow;

use duet_proto::link::SequencedEntry;
use duet_proto::outbox::{AuditEntry, MetricsEntry, OutboxEntry};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

pub use admin::*;
pub use records::*;

static MIGRATE_SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
static MIGRATE_POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
static MIGRATE_MYSQL: Migrator = sqlx::migrate!("../migrations/mysql");

/// SQLite copies its write-ahead log into the database (a checkpoint) in the commit that
/// crosses this many log pages (4 KiB each), and that commit waits for the copy. Its default,
/// 1,000 pages, stalled every placement waiting on that commit for 12-15 ms at 3,800 placements
/// a second (p99 12.4 ms in the placement benchmark); 200 pages makes each stall five times
/// shorter for the same total work (p99 5.9 ms). A checkpoint on a connection of its own was
/// worse (p99 51 ms): the writer then meets the checkpointer's locks in SQLite's busy handler.
pub const SQLITE_WAL_AUTOCHECKPOINT_PAGES: u32 = 200;

/// Which SQL dialect a store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::Mysql),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url (expected sqlite:, postgres: or mysql:): {0}")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}

/// Connections of a [`Store`]'s pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

impl PoolStats {
    pub fn in_use(&self) -> u32 {
        self.open.saturating_sub(self.idle)
    }
}

/// The locator's database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl Store {
    /// Connects (creating a SQLite file if needed) without migrating.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url).ok_or_else(|| StoreError::UnsupportedUrl(redact_url(url)))?;
        let url: Cow<str> = match dialect {
            // MariaDB is reached with the mysql driver.
            Dialect::Mysql if url.starts_with("mariadb:") => Cow::Owned(format!("mysql:{}", &url[8..])),
            _ => Cow::Borrowed(url),
        };
        let mut options = AnyPoolOptions::new();
        if dialect == Dialect::Sqlite {
            // SQLite has one writer. One pooled connection queues statements fairly in the pool
            // instead of in SQLite's busy handler, which sleeps in steps of up to 100 ms while
            // another connection writes; placements never read, so readers lose nothing.
            options = options.max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; NORMAL sync is durable in WAL mode
                    // except for the last transactions before a power cut: sessions and
                    // heartbeats the edges report again. Outbox commits, which edges do not
                    // resend once acknowledged, switch to FULL (`Store::store_outbox`).
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                    sqlx::query(&format!("PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}"))
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(&url).await?;
        Ok(Store { pool, dialect })
    }

    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &MIGRATE_SQLITE,
            Dialect::Postgres => &MIGRATE_POSTGRES,
            Dialect::Mysql => &MIGRATE_MYSQL,
        };
        // A newer locator may already have applied migrations this one does not know (during a
        // rolling upgrade both run over one schema). Migrations only add tables and nullable
        // columns (docs/deployment.md), so this version keeps working on the newer schema: it
        // must not refuse to start. (`migrate!` builds a static `Migrator`; the flag is set on
        // a copy.)
        let mut tolerant = Migrator { migrations: migrator.migrations.clone(), ..Migrator::DEFAULT };
        tolerant.set_ignore_missing(true);
        tolerant.run(&self.pool).await?;
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Runs one statement with no parameters (administration: creating test databases).
    pub async fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records that an edge is stopping (it sent `Draining` on the link of `epoch`); a newer
    /// registration has already cleared the flag and is not touched.
    pub async fn mark_edge_stopping(&self, edge_id: &str, epoch: u64, now_ms: i64) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE edges SET stopping_since = ? WHERE id = ? AND link_epoch = ?");
        sqlx::query(&sql).bind(now_ms).bind(edge_id).bind(epoch as i64).execute(&self.pool).await?;
        Ok(())
    }

    /// The connection pool's size now, for `/metrics`.
    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Rewrites `?` placeholders to `$1, $2, ...` for PostgreSQL. Statements here never contain a
    /// literal `?`.
    fn sql<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        if self.dialect != Dialect::Postgres {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }

    // ---- signing keys ----

    pub async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at, retired_at) VALUES (?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(&key.kid)
            .bind(&key.private_key)
            .bind(&key.public_key)
            .bind(key.created_at)
            .bind(key.retired_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keys not yet retired, newest first: the first one signs, all of them verify.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, private_key, public_key, created_at, retired_at FROM signing_keys \
             WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SigningKeyRecord {
                    kid: r.try_get("kid")?,
                    private_key: r.try_get("private_key")?,
                    public_key: r.try_get("public_key")?,
                    created_at: r.try_get("created_at")?,
                    retired_at: r.try_get("retired_at")?,
                })
            })
            .collect()
    }

    /// Stops a key from verifying (and signing). Idempotent.
    pub async fn retire_signing_key(&self, kid: &str, now_ms: i64) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE signing_keys SET retired_at = ? WHERE kid = ? AND retired_at IS NULL");
        let done = sqlx::query(&sql).bind(now_ms).bind(kid).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- edges ----

    /// Records an edge that (re)registered over its link: health `up`, fresh heartbeat, its
    /// outbox id, and a new link epoch (one more than the last; 1 for a new edge), which it
    /// returns. The admin state of a known edge is kept.
    pub async fn upsert_edge(&self, edge: &EdgeRegistration, now_ms: i64) -> Result<u64, StoreError> {
        const COLUMNS: &str = "INSERT INTO edges (id, region, public_url, build, max_connections, max_sessions, \
             health, cpu, loop_lag_ms, connections, sessions, registered_at, last_heartbeat_at, health_changed_at, \
             outbox_id, link_epoch) VALUES (?, ?, ?, ?, ?, ?, 'up', ?, ?, ?, ?, ?, ?, ?, ?, 1) ";
        let sql = match self.dialect {
            Dialect::Sqlite | Dialect::Postgres => format!(
                "{COLUMNS} ON CONFLICT (id) DO UPDATE SET region = excluded.region, public_url = excluded.public_url, \
                 build = excluded.build, max_connections = excluded.max_connections, \
                 max_sessions = excluded.max_sessions, health = 'up', cpu = excluded.cpu, \
                 loop_lag_ms = excluded.loop_lag_ms, connections = excluded.connections, \
                 sessions = excluded.sessions, registered_at = excluded.registered_at, \
                 last_heartbeat_at = excluded.last_heartbeat_at, health_changed_at = excluded.health_changed_at, \
                 outbox_id = excluded.outbox_id, link_epoch = edges.link_epoch + 1, stopping_since = NULL \
                 RETURNING link_epoch"
            ),
            Dialect::Mysql => format!(
                "{COLUMNS} ON DUPLICATE KEY UPDATE region = VALUES(region), public_url = VALUES(public_url), \
                 build = VALUES(build), max_connections = VALUES(max_connections), \
                 max_sessions = VALUES(max_sessions), health = 'up', cpu = VALUES(cpu), \
                 loop_lag_ms = VALUES(loop_lag_ms), connections = VALUES(connections), \
                 sessions = VALUES(sessions), registered_at = VALUES(registered_at), \
                 last_heartbeat_at = VALUES(last_heartbeat_at), health_changed_at = VALUES(health_changed_at), \
                 outbox_id = VALUES(outbox_id), link_epoch = link_epoch + 1, stopping_since = NULL"
            ),
        };
        let sql = self.sql(&sql);
        let q = sqlx::query(&sql)
            .bind(&edge.id)
            .bind(&edge.region)
            .bind(&edge.public_url)
            .bind(&edge.build)
            .bind(i64::from(edge.max_connections))
            .bind(i64::from(edge.max_sessions))
            .bind(f64::from(edge.load.cpu))
            .bind(i64::from(edge.load.loop_lag_ms))
            .bind(i64::from(edge.load.connections))
            .bind(i64::from(edge.load.sessions))
            .bind(now_ms)
            .bind(now_ms)
            .bind(now_ms)
            .bind(edge.outbox_id as i64);
        let epoch: i64 = if self.dialect == Dialect::Mysql {
            // No RETURNING on MySQL: the upsert locks the row until the transaction ends, so the
            // epoch read next is the one it wrote.
            let mut tx = self.pool.begin().await?;
            q.execute(&mut *tx).await?;
            let epoch = sqlx::query("SELECT link_epoch FROM edges WHERE id = ?")
                .bind(&edge.id)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            tx.commit().await?;
            epoch
        } else {
            q.fetch_one(&self.pool).await?.try_get(0)?
        };
        Ok(epoch as u64)
    }

    /// Stores a heartbeat's load and outbox status. Returns false if the edge is unknown.
    pub async fn record_heartbeat(
        &self,
        edge_id: &str,
        load: &Load,
        outbox: &OutboxStatus,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE edges SET cpu = ?, loop_lag_ms = ?, connections = ?, sessions = ?, last_heartbeat_at = ?, \
             outbox_depth = ?, outbox_oldest_age_ms = ?, outbox_last_seq = ?, outbox_dropped_audit = ?, \
             outbox_dropped_metrics = ? WHERE id = ?",
        );
        let done = sqlx::query(&sql)
            .bind(f64::from(load.cpu))
            .bind(i64::from(load.loop_lag_ms))
            .bind(i64::from(load.connections))
            .bind(i64::from(load.sessions))
            .bind(now_ms)
            .bind(count_to_sql(outbox.depth))
            .bind(count_to_sql(outbox.oldest_age_ms))
            .bind(outbox.last_seq as i64)
            .bind(count_to_sql(outbox.dropped_audit))
            .bind(count_to_sql(outbox.dropped_metrics))
            .bind(edge_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_edge_health(&self, edge_id: &str, health: Health, now_ms: i64) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE edges SET health = ?, health_changed_at = ? WHERE id = ? AND health <> ?");
        let done = sqlx::query(&sql)
            .bind(health.as_str())
            .bind(now_ms)
            .bind(edge_id)
            .bind(health.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Changes an edge's health only if it is still what the caller judged: its health is one of
    /// `from`, its link epoch is `epoch` (no registration since), and, when `heard_before` is
    /// given, its last heartbeat is no later than that (none arrived since). Failure detection
    /// and link ends race with registrations and heartbeats, on one replica or several; this
    /// makes the older judgement lose.
    pub async fn change_edge_health(
        &self,
        edge_id: &str,
        from: &[Health],
        to: Health,
        epoch: u64,
        heard_before: Option<i64>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        if from.is_empty() {
            return Ok(false);
        }
        let states = vec!["?"; from.len()].join(", ");
        let heard = if heard_before.is_some() { " AND last_heartbeat_at <= ?" } else { "" };
        let sql = format!(
            "UPDATE edges SET health = ?, health_changed_at = ? WHERE id = ? AND link_epoch = ? AND health IN ({states}){heard}"
        );
        let sql = self.sql(&sql);
        let mut q = sqlx::query(&sql).bind(to.as_str()).bind(now_ms).bind(edge_id).bind(epoch as i64);
        for h in from {
            q = q.bind(h.as_str());
        }
        if let Some(t) = heard_before {
            q = q.bind(t);
        }
        Ok(q.execute(&self.pool).await?.rows_affected() > 0)
    }

    pub async fn edges(&self) -> Result<Vec<EdgeRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {EDGE_COLUMNS} FROM edges ORDER BY id")).fetch_all(&self.pool).await?;
        rows.iter().map(edge_from_row).collect()
    }

    pub async fn edge(&self, id: &str) -> Result<Option<EdgeRecord>, StoreError> {
        let sql = format!("SELECT {EDGE_COLUMNS} FROM edges WHERE id = ?");
        let sql = self.sql(&sql);
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(edge_from_row).transpose()
    }

    // ---- sessions ----

    /// Creates a session and its host (participant 1) in one transaction.
    pub async fn create_session(&self, s: &NewSession, host: &NewParticipant) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = self.sql(
            "INSERT INTO sessions (id, edge_id, team, region_hint, created_at, require_approval, max_participants, \
             participant_count) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
        );
        sqlx::query(&sql)
            .bind(&s.id)
            .bind(&s.edge_id)
            .bind(&s.team)
            .bind(&s.region_hint)
            .bind(s.created_at)
            .bind(i64::from(s.require_approval))
            .bind(s.max_participants.map(i64::from))
            .execute(&mut *tx)
            .await?;
        self.insert_participant(&mut tx, &s.id, 1, host).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_participant(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        session_id: &str,
        participant_id: u32,
        p: &NewParticipant,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO participants (session_id, participant_id, role, user_id, display_name, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(session_id)
            .bind(i64::from(participant_id))
            .bind(p.role.as_str())
            .bind(&p.user_id)
            .bind(&p.display_name)
            .bind(p.created_at)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Adds a participant to a live session and returns its id (2, 3, ...), or `None` if the
    /// session does not exist or has ended. Concurrent joins get distinct ids: the counter update
    /// locks the session row until the transaction ends.
    pub async fn add_participant(&self, session_id: &str, p: &NewParticipant) -> Result<Option<u32>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql =
            self.sql("UPDATE sessions SET participant_count = participant_count + 1 WHERE id = ? AND ended_at IS NULL");
        let done = sqlx::query(&sql).bind(session_id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let sql = self.sql("SELECT participant_count FROM sessions WHERE id = ?");
        let count: i64 = sqlx::query(&sql).bind(session_id).fetch_one(&mut *tx).await?.try_get(0)?;
        let id = u32::try_from(count).map_err(|_| StoreError::Corrupt(format!("participant count {count}")))?;
        self.insert_participant(&mut tx, session_id, id, p).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?");
        let sql = self.sql(&sql);
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    pub async fn participants(&self, session_id: &str) -> Result<Vec<ParticipantRecord>, StoreError> {
        let sql = self.sql(
            "SELECT participant_id, role, user_id, display_name, created_at FROM participants \
             WHERE session_id = ? ORDER BY participant_id",
        );
        let rows = sqlx::query(&sql).bind(session_id).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("participant_id")?;
                let role: String = r.try_get("role")?;
                Ok(ParticipantRecord {
                    participant_id: u32::try_from(id)
                        .map_err(|_| StoreError::Corrupt(format!("participant id {id}")))?,
                    role: duet_proto::session::Role::parse(&role)
                        .ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?,
                    user_id: r.try_get("user_id")?,
                    display_name: r.try_get("display_name")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Sessions on an edge that have not ended.
    pub async fn live_sessions_on(&self, edge_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE edge_id = ? AND ended_at IS NULL ORDER BY id");
        let sql = self.sql(&sql);
        let rows = sqlx::query(&sql).bind(edge_id).fetch_all(&self.pool).await?;
        rows.iter().map(session_from_row).collect()
    }

    /// The edge serving `team`'s presence, and since when (Unix ms).
    pub async fn presence_edge(&self, team: &str) -> Result<Option<(String, i64)>, StoreError> {
        let sql = self.sql("SELECT edge_id, assigned_at FROM team_presence WHERE team = ?");
        let row = sqlx::query(&sql).bind(team).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some((r.try_get("edge_id")?, r.try_get("assigned_at")?)),
            None => None,
        })
    }

    /// Assigns `team`'s presence to `edge_id` if it is still assigned to `previous` (`None`: to
    /// nobody), and answers the edge assigned after the attempt: when two locator replicas race,
    /// both answer the winner's edge.
    pub async fn assign_presence(
        &self,
        team: &str,
        edge_id: &str,
        previous: Option<&str>,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        match previous {
            None => {
                let sql = match self.dialect {
                    Dialect::Sqlite | Dialect::Postgres => {
                        "INSERT INTO team_presence (team, edge_id, assigned_at) VALUES (?, ?, ?) \
                         ON CONFLICT (team) DO NOTHING"
                    }
                    Dialect::Mysql => {
                        "INSERT INTO team_presence (team, edge_id, assigned_at) VALUES (?, ?, ?) \
                         ON DUPLICATE KEY UPDATE team = team"
                    }
                };
                let sql = self.sql(sql);
                sqlx::query(&sql).bind(team).bind(edge_id).bind(now_ms).execute(&self.pool).await?;
            }
            Some(previous) => {
                let sql =
                    self.sql("UPDATE team_presence SET edge_id = ?, assigned_at = ? WHERE team = ? AND edge_id = ?");
                sqlx::query(&sql).bind(edge_id).bind(now_ms).bind(team).bind(previous).execute(&self.pool).await?;
            }
        }
        let (assigned, _) = self
            .presence_edge(team)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("presence of team {team} vanished while assigned")))?;
        Ok(assigned)
    }

    /// Every live session (started, not ended) of every team with a presence edge, as (presence
    /// edge, team, session id), each team's newest first.
    pub async fn presence_sessions(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let sql = "SELECT p.edge_id, p.team, s.id FROM team_presence p JOIN sessions s ON s.team = p.team \
                   WHERE s.started_at IS NOT NULL AND s.ended_at IS NULL \
                   ORDER BY p.edge_id, p.team, s.created_at DESC, s.id";
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("edge_id")?, r.try_get("team")?, r.try_get("id")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Marks a session as running (first participant connected). Idempotent.
    pub async fn mark_session_started(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE sessions SET started_at = ? WHERE id = ? AND started_at IS NULL");
        let done = sqlx::query(&sql).bind(now_ms).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a session as ended. Idempotent: the first reason is kept.
    pub async fn mark_session_ended(&self, id: &str, reason: &str, now_ms: i64) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL");
        let done = sqlx::query(&sql).bind(now_ms).bind(reason).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Like [`Store::mark_session_started`], applied only if the session is on `edge_id` and
    /// that edge's link epoch is still `epoch`: a message from a link that a newer registration
    /// replaced changes nothing. False when not applied (stale epoch, another edge, or already
    /// started).
    pub async fn mark_session_started_fenced(
        &self,
        id: &str,
        edge_id: &str,
        epoch: u64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE sessions SET started_at = ? WHERE id = ? AND edge_id = ? AND started_at IS NULL AND {EPOCH_FENCE}"
        );
        let sql = self.sql(&sql);
        let done = sqlx::query(&sql)
            .bind(now_ms)
            .bind(id)
            .bind(edge_id)
            .bind(edge_id)
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Like [`Store::mark_session_ended`], fenced like [`Store::mark_session_started_fenced`].
    pub async fn mark_session_ended_fenced(
        &self,
        id: &str,
        edge_id: &str,
        epoch: u64,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ? AND edge_id = ? AND ended_at IS NULL AND {EPOCH_FENCE}"
        );
        let sql = self.sql(&sql);
        let done = sqlx::query(&sql)
            .bind(now_ms)
            .bind(reason)
            .bind(id)
            .bind(edge_id)
            .bind(edge_id)
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Brings back a session the locator ended because its edge was declared unavailable
    /// ([`END_REASON_EDGE_UNAVAILABLE`]) and that the edge, linked again with `epoch`, still runs:
    /// clears `ended_at` and `end_reason`, and sets `started_at` to `now_ms` if it was never set.
    /// Applied only if the session is on `edge_id`, ended for that reason, and the edge's link
    /// epoch is still `epoch`; false otherwise.
    pub async fn restore_session(&self, id: &str, edge_id: &str, epoch: u64, now_ms: i64) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE sessions SET ended_at = NULL, end_reason = NULL, started_at = COALESCE(started_at, ?) \
             WHERE id = ? AND edge_id = ? AND end_reason = ? AND {EPOCH_FENCE}"
        );
        let sql = self.sql(&sql);
        let done = sqlx::query(&sql)
            .bind(now_ms)
            .bind(id)
            .bind(edge_id)
            .bind(END_REASON_EDGE_UNAVAILABLE)
            .bind(edge_id)
            .bind(epoch as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets an edge's admin state, with the drain deadline (Unix ms) for [`AdminState::Draining`]
    /// and none otherwise. Returns false if the edge is unknown.
    pub async fn set_admin_state(
        &self,
        edge_id: &str,
        state: AdminState,
        drain_deadline: Option<i64>,
    ) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE edges SET admin_state = ?, drain_deadline = ?, drained_at = NULL WHERE id = ?");
        let done =
            sqlx::query(&sql).bind(state.as_str()).bind(drain_deadline).bind(edge_id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0 || self.edge(edge_id).await?.is_some())
    }

    /// Moves an edge to another region (`None`: back to the region it reports). Returns false if
    /// the edge is unknown.
    pub async fn set_region_override(&self, edge_id: &str, region: Option<&str>) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE edges SET region_override = ? WHERE id = ?");
        let done = sqlx::query(&sql).bind(region).bind(edge_id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0 || self.edge(edge_id).await?.is_some())
    }

    // ---- regions ----

    /// Every region rule, oldest first.
    pub async fn region_rules(&self) -> Result<Vec<RegionRuleRecord>, StoreError> {
        let rows = sqlx::query("SELECT id, kind, matcher, region, created_at FROM region_rules ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    /// Adds a rule. `Err(existing)` when a rule with the same kind and matcher exists (the
    /// unique key decides, so two replicas cannot both add it).
    pub async fn insert_region_rule(
        &self,
        kind: &str,
        matcher: &str,
        region: &str,
        now_ms: i64,
    ) -> Result<Result<RegionRuleRecord, RegionRuleRecord>, StoreError> {
        let sql = self.sql("INSERT INTO region_rules (kind, matcher, region, created_at) VALUES (?, ?, ?, ?)");
        let inserted = sqlx::query(&sql).bind(kind).bind(matcher).bind(region).bind(now_ms).execute(&self.pool).await;
        let sql =
            self.sql("SELECT id, kind, matcher, region, created_at FROM region_rules WHERE kind = ? AND matcher = ?");
        let existing = sqlx::query(&sql).bind(kind).bind(matcher).fetch_optional(&self.pool).await?;
        match (inserted, existing) {
            (Ok(_), Some(row)) => Ok(Ok(rule_from_row(&row)?)),
            (Err(_), Some(row)) => Ok(Err(rule_from_row(&row)?)),
            (Err(e), None) => Err(e.into()),
            (Ok(_), None) => Err(StoreError::Corrupt(format!("rule {kind} {matcher} vanished after insert"))),
        }
    }

    /// Removes a rule; false if there was none with that id.
    pub async fn delete_region_rule(&self, id: i64) -> Result<bool, StoreError> {
        let sql = self.sql("DELETE FROM region_rules WHERE id = ?");
        Ok(sqlx::query(&sql).bind(id).execute(&self.pool).await?.rows_affected() > 0)
    }

    pub async fn region_fallbacks(&self) -> Result<Vec<RegionFallback>, StoreError> {
        let rows =
            sqlx::query("SELECT region, fallback FROM region_fallbacks ORDER BY region").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let list: String = r.try_get("fallback")?;
                Ok(RegionFallback {
                    region: r.try_get("region")?,
                    fallback: list.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                })
            })
            .collect()
    }

    /// Sets the fallback order of a region; an empty list removes it.
    pub async fn set_region_fallback(&self, region: &str, fallback: &[String], now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = self.sql("DELETE FROM region_fallbacks WHERE region = ?");
        sqlx::query(&sql).bind(region).execute(&mut *tx).await?;
        if !fallback.is_empty() {
            let sql = self.sql("INSERT INTO region_fallbacks (region, fallback, updated_at) VALUES (?, ?, ?)");
            sqlx::query(&sql).bind(region).bind(fallback.join(",")).bind(now_ms).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- placements ----

    /// Commits a batch of placements atomically: each session, its host and its explanation.
    /// All or nothing. On PostgreSQL a batch that fits one statement is one statement (the three
    /// inserts as data-modifying CTEs), so it costs one round trip instead of five; elsewhere,
    /// three multi-row inserts in a transaction.
    pub async fn record_placements(&self, batch: &[PlacementRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let sessions = |n| multi_row_insert(SESSIONS_INSERT, "(?, ?, ?, ?, ?, ?, ?, 1)", n);
        let participants = |n| multi_row_insert(PARTICIPANTS_INSERT, "(?, 1, ?, ?, ?, ?)", n);
        let placements = |n| multi_row_insert(PLACEMENTS_INSERT, "(?, ?, ?, ?, ?, ?, ?)", n);
        if self.dialect == Dialect::Postgres && batch.len() <= PLACEMENT_ROWS_PER_STATEMENT {
            let n = batch.len();
            let sql = format!("WITH s AS ({}), p AS ({}) {}", sessions(n), participants(n), placements(n));
            let sql = self.sql(&sql).into_owned();
            let q = bind_placements(bind_participants(bind_sessions(sqlx::query(&sql), batch), batch), batch);
            q.execute(&self.pool).await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in batch.chunks(PLACEMENT_ROWS_PER_STATEMENT) {
            let sql = self.sql(&sessions(chunk.len())).into_owned();
            bind_sessions(sqlx::query(&sql), chunk).execute(&mut *tx).await?;
            let sql = self.sql(&participants(chunk.len())).into_owned();
            bind_participants(sqlx::query(&sql), chunk).execute(&mut *tx).await?;
            let sql = self.sql(&placements(chunk.len())).into_owned();
            bind_placements(sqlx::query(&sql), chunk).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stored explanation of a session's placement.
    pub async fn placement(&self, session_id: &str) -> Result<Option<PlacementRow>, StoreError> {
        let sql = self.sql(
            "SELECT session_id, client_ip, wanted_region, served_region, edge_id, explanation, created_at \
             FROM placements WHERE session_id = ?",
        );
        let row = sqlx::query(&sql).bind(session_id).fetch_optional(&self.pool).await?;
        row.map(|r| {
            Ok(PlacementRow {
                session_id: r.try_get("session_id")?,
                client_ip: r.try_get("client_ip")?,
                wanted_region: r.try_get("wanted_region")?,
                served_region: r.try_get("served_region")?,
                edge_id: r.try_get("edge_id")?,
                explanation: r.try_get("explanation")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    // ---- audit and metrics entries ----

    /// Stores a batch of entries from an edge's outbox in one transaction and answers how many
    /// were new. Each (edge, outbox id, sequence number) is stored once: an entry that arrives
    /// again (a batch resent after a lost acknowledgement, overlapping batches) is skipped, so
    /// replaying is always safe. The numbers already stored in the batch's range are read first
    /// and left out (a resent batch costs one indexed read, not a failed insert per row); the
    /// unique key still decides between two writers racing. Rows go in multi-row inserts of at
    /// most [`ENTRY_ROWS_PER_STATEMENT`] rows and [`ENTRY_BYTES_PER_STATEMENT`] bytes of text.
    ///
    /// The count is exact on every database: SQLite and PostgreSQL count only inserted rows;
    /// MySQL counts a skipped duplicate like an inserted row (sqlx connects with
    /// `CLIENT_FOUND_ROWS`), so there the rows of the batch's range are counted again after the
    /// inserts, in the transaction's own snapshot.
    pub async fn store_outbox(
        &self,
        edge_id: &str,
        outbox_id: u64,
        entries: &[SequencedEntry],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let edge_id = clean_text(edge_id, MAX_ID_CHARS);
        let origin = OutboxOrigin { edge_id: &edge_id, outbox: outbox_id as i64 };
        let mut audit = Vec::new();
        let mut metrics = Vec::new();
        for e in entries {
            match &e.entry {
                OutboxEntry::Audit(a) => audit.push(AuditRow::new(e.seq, a)),
                OutboxEntry::Metrics(m) => metrics.push(MetricsRow::new(e.seq, m)),
            }
        }
        let audit_range = seq_range(&audit, |r| r.seq);
        let metrics_range = seq_range(&metrics, |r| r.seq);
        // The edge deletes what is acknowledged, so an acknowledged commit must survive a power
        // cut: on SQLite (WAL, `synchronous = NORMAL` for everything else) this transaction
        // syncs the log at its commit. PostgreSQL and MySQL commit durably by default.
        let mut conn = self.pool.acquire().await?;
        let sqlite = self.dialect == Dialect::Sqlite;
        if sqlite {
            sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
        }
        let stored = self.store_outbox_on(&mut conn, &origin, audit, metrics, audit_range, metrics_range, now_ms).await;
        if sqlite {
            if let Err(e) = sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await {
                tracing::warn!(error = %e, "could not restore synchronous = NORMAL; the connection stays on FULL");
            }
        }
        stored
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_outbox_on(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
        origin: &OutboxOrigin<'_>,
        mut audit: Vec<AuditRow<'_>>,
        mut metrics: Vec<MetricsRow<'_>>,
        audit_range: Option<(i64, i64)>,
        metrics_range: Option<(i64, i64)>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = sqlx::Connection::begin(&mut **conn).await?;
        let audit_known = self.stored_seqs(&mut tx, EntryTable::Audit, origin, audit_range).await?;
        let metrics_known = self.stored_seqs(&mut tx, EntryTable::Metrics, origin, metrics_range).await?;
        audit.retain(|r| !audit_known.contains(&r.seq));
        metrics.retain(|r| !metrics_known.contains(&r.seq));

        let mut stored = 0;
        let mut full_sql = None;
        for chunk in statement_chunks(&audit, AuditRow::text_bytes) {
            let sql = self.entry_insert_sql(AUDIT_INSERT, AUDIT_ROW, chunk.len(), &mut full_sql);
            let q = bind_audit_rows(sqlx::query(&sql), origin, chunk, now_ms);
            stored += q.persistent(chunk.len() == ENTRY_ROWS_PER_STATEMENT).execute(&mut *tx).await?.rows_affected();
        }
        let mut full_sql = None;
        for chunk in statement_chunks(&metrics, MetricsRow::text_bytes) {
            let sql = self.entry_insert_sql(METRICS_INSERT, METRICS_ROW, chunk.len(), &mut full_sql);
            let q = bind_metrics_rows(sqlx::query(&sql), origin, chunk, now_ms);
            stored += q.persistent(chunk.len() == ENTRY_ROWS_PER_STATEMENT).execute(&mut *tx).await?.rows_affected();
        }
        if self.dialect == Dialect::Mysql {
            let audit_now = self.count_seqs(&mut tx, EntryTable::Audit, origin, audit_range).await?;
            let metrics_now = self.count_seqs(&mut tx, EntryTable::Metrics, origin, metrics_range).await?;
            stored = (audit_now - audit_known.len() as u64) + (metrics_now - metrics_known.len() as u64);
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The multi-row insert of `rows` rows, skipping duplicates, with placeholders for this
    /// dialect. A full statement's SQL is built once per batch and kept in `full`.
    fn entry_insert_sql(&self, table: &str, row: &str, rows: usize, full: &mut Option<String>) -> String {
        let build = || {
            let conflict = match self.dialect {
                Dialect::Sqlite | Dialect::Postgres => " ON CONFLICT (edge_id, outbox_id, edge_seq) DO NOTHING",
                Dialect::Mysql => " ON DUPLICATE KEY UPDATE id = id",
            };
            self.sql(&(multi_row_insert(table, row, rows) + conflict)).into_owned()
        };
        if rows == ENTRY_ROWS_PER_STATEMENT {
            full.get_or_insert_with(build).clone()
        } else {
            build()
        }
    }

    /// The sequence numbers of one outbox already stored in `range` (inclusive).
    async fn stored_seqs(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        table: EntryTable,
        origin: &OutboxOrigin<'_>,
        range: Option<(i64, i64)>,
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        let Some((first, last)) = range else { return Ok(Default::default()) };
        let sql = format!(
            "SELECT edge_seq FROM {} WHERE edge_id = ? AND outbox_id = ? AND edge_seq BETWEEN ? AND ?",
            table.table_name()
        );
        let sql = self.sql(&sql);
        let rows = sqlx::query(&sql)
            .bind(origin.edge_id)
            .bind(origin.outbox)
            .bind(first)
            .bind(last)
            .fetch_all(&mut **tx)
            .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
    }

    /// How many rows of one outbox `range` holds (MySQL's count of what an insert stored).
    async fn count_seqs(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        table: EntryTable,
        origin: &OutboxOrigin<'_>,
        range: Option<(i64, i64)>,
    ) -> Result<u64, StoreError> {
        let Some((first, last)) = range else { return Ok(0) };
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE edge_id = ? AND outbox_id = ? AND edge_seq BETWEEN ? AND ?",
            table.table_name()
        );
        let sql = self.sql(&sql);
        let n: i64 = sqlx::query(&sql)
            .bind(origin.edge_id)
            .bind(origin.outbox)
            .bind(first)
            .bind(last)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        Ok(n as u64)
    }

    /// Stores an audit entry the locator made itself (no outbox id or sequence number; stored
    /// at `at_ms`).
    pub async fn insert_audit(&self, e: &LocatorAuditEntry) -> Result<(), StoreError> {
        self.insert_audit_with(&self.pool, e).await
    }

    async fn insert_audit_with<'e, E>(&self, executor: E, e: &LocatorAuditEntry) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let edge_id = e.edge_id.as_deref().map(|s| clean_text(s, MAX_ID_CHARS));
        let session_id = e.session_id.as_deref().map(|s| clean_text(s, MAX_ID_CHARS));
        let kind = clean_text(&e.kind, MAX_KIND_CHARS);
        let actor = clean_text(&e.actor, MAX_ID_CHARS);
        let detail = clean_text(&e.detail, MAX_DETAIL_CHARS);
        let sql = self.sql(
            "INSERT INTO audit_entries (edge_id, at, kind, session_id, actor, detail, stored_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(edge_id.as_deref())
            .bind(e.at_ms)
            .bind(kind.as_ref())
            .bind(session_id.as_deref())
            .bind(actor.as_ref())
            .bind(detail.as_ref())
            .bind(e.at_ms)
            .execute(executor)
            .await?;
        Ok(())
    }

    /// Declares an edge unavailable, in one transaction: its health becomes `unavailable` (if it
    /// is still `up` or `link_lost` with link epoch `epoch` and no heartbeat after
    /// `heard_before`), its live sessions end with [`END_REASON_EDGE_UNAVAILABLE`], and the audit
    /// entries are written (one `edge_unavailable` with `detail`, one `session_ended_by_locator`
    /// per session). Answers the sessions ended, or `None` when the edge is no longer as judged
    /// (another replica declared it, it registered again, a heartbeat arrived). Updating the
    /// edge row first locks it, so a registration racing with this waits for it and then
    /// reconciles (restoring the sessions the edge still runs).
    pub async fn declare_unavailable(
        &self,
        edge_id: &str,
        epoch: u64,
        heard_before: i64,
        detail: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = self.sql(
            "UPDATE edges SET health = ?, health_changed_at = ? WHERE id = ? AND link_epoch = ? \
             AND health IN (?, ?) AND last_heartbeat_at <= ?",
        );
        let changed = sqlx::query(&sql)
            .bind(Health::Unavailable.as_str())
            .bind(now_ms)
            .bind(edge_id)
            .bind(epoch as i64)
            .bind(Health::Up.as_str())
            .bind(Health::LinkLost.as_str())
            .bind(heard_before)
            .execute(&mut *tx)
            .await?;
        if changed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut ids: Vec<String> = if self.dialect == Dialect::Mysql {
            let rows = sqlx::query("SELECT id FROM sessions WHERE edge_id = ? AND ended_at IS NULL FOR UPDATE")
                .bind(edge_id)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE edge_id = ? AND ended_at IS NULL")
                .bind(now_ms)
                .bind(END_REASON_EDGE_UNAVAILABLE)
                .bind(edge_id)
                .execute(&mut *tx)
                .await?;
            rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?
        } else {
            let sql = self.sql(
                "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE edge_id = ? AND ended_at IS NULL RETURNING id",
            );
            let rows = sqlx::query(&sql)
                .bind(now_ms)
                .bind(END_REASON_EDGE_UNAVAILABLE)
                .bind(edge_id)
                .fetch_all(&mut *tx)
                .await?;
            rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?
        };
        ids.sort_unstable();
        let entry = |kind: &str, session_id: Option<String>, detail: &str| LocatorAuditEntry {
            at_ms: now_ms,
            kind: kind.into(),
            edge_id: Some(edge_id.to_owned()),
            session_id,
            actor: ACTOR_LOCATOR.into(),
            detail: detail.into(),
        };
        self.insert_audit_with(&mut *tx, &entry(audit_kind::EDGE_UNAVAILABLE, None, detail)).await?;
        for id in &ids {
            let e = entry(audit_kind::SESSION_ENDED_BY_LOCATOR, Some(id.clone()), END_REASON_EDGE_UNAVAILABLE);
            self.insert_audit_with(&mut *tx, &e).await?;
        }
        tx.commit().await?;
        Ok(Some(ids))
    }

    /// Audit entries matching `filter`, oldest first by (`at`, `id`), at most `limit` of them,
    /// after `after`; with the cursor of the next page when there is one. Keyset pagination:
    /// pages stay consistent while entries are added (an entry stored later with an `at` before
    /// the cursor, relayed late by an edge, is not on later pages: query its time range again).
    pub async fn audit_entries(
        &self,
        filter: &EntryFilter,
        limit: u32,
        after: Option<Cursor>,
    ) -> Result<(Vec<AuditRecord>, Option<Cursor>), StoreError> {
        let rows = self.entry_rows(EntryTable::Audit, AUDIT_COLUMNS, filter, limit, after).await?;
        let records = rows.iter().map(audit_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(page(records, limit, |r| Cursor { at: r.at, id: r.id }))
    }

    /// Metrics entries, like [`Store::audit_entries`]. The session filter matches session
    /// summaries.
    pub async fn metrics_entries(
        &self,
        filter: &EntryFilter,
        limit: u32,
        after: Option<Cursor>,
    ) -> Result<(Vec<MetricsRecord>, Option<Cursor>), StoreError> {
        let rows = self.entry_rows(EntryTable::Metrics, METRICS_COLUMNS, filter, limit, after).await?;
        let records = rows.iter().map(metrics_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(page(records, limit, |r| Cursor { at: r.at, id: r.id }))
    }

    /// Up to `limit + 1` rows of a filtered, keyset-paginated query (one more than asked tells
    /// whether there is a next page).
    async fn entry_rows(
        &self,
        table: EntryTable,
        columns: &str,
        filter: &EntryFilter,
        limit: u32,
        after: Option<Cursor>,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut conditions: Vec<&str> = Vec::new();
        let mut ints: Vec<i64> = Vec::new();
        let mut texts: Vec<&str> = Vec::new();
        // Integer conditions first, then text ones, so binds can go in two runs.
        if let Some(from) = filter.from {
            conditions.push("at >= ?");
            ints.push(from);
        }
        if let Some(to) = filter.to {
            conditions.push("at < ?");
            ints.push(to);
        }
        if let Some(c) = after {
            // `at >= ?` (or `<=`) lets every database range-scan the (…, at, id) indexes.
            conditions.push(if filter.newest_first {
                "at <= ? AND (at < ? OR id < ?)"
            } else {
                "at >= ? AND (at > ? OR id > ?)"
            });
            ints.extend([c.at, c.at, c.id]);
        }
        // Metrics entries have no actor: an actor filter matches none of them.
        let actor = if table == EntryTable::Audit {
            ("actor = ?", &filter.actor)
        } else {
            ("1 = 0 AND ? IS NULL", &filter.actor)
        };
        let text_filters = [
            ("edge_id = ?", &filter.edge_id),
            ("session_id = ?", &filter.session_id),
            ("kind = ?", &filter.kind),
            actor,
        ];
        for (condition, value) in text_filters {
            if let Some(v) = value {
                conditions.push(condition);
                texts.push(v);
            }
        }
        let mut sql = format!("SELECT {columns} FROM {}", table.table_name());
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        let order = if filter.newest_first { "at DESC, id DESC" } else { "at, id" };
        sql.push_str(&format!(" ORDER BY {order} LIMIT {}", u64::from(limit) + 1));
        let sql = self.sql(&sql);
        let mut q = sqlx::query(&sql);
        for v in ints {
            q = q.bind(v);
        }
        for v in texts {
            q = q.bind(v);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// Deletes up to `batch` entries that happened (`at`) before `older_than_ms`, oldest first,
    /// in one short statement; answers how many went. Call again until it answers less than
    /// `batch` (the retention task does, yielding between batches).
    pub async fn prune_entries(&self, table: EntryTable, older_than_ms: i64, batch: u32) -> Result<u64, StoreError> {
        let t = table.table_name();
        let sql = match self.dialect {
            // MySQL cannot LIMIT a subquery of IN, but limits a DELETE itself.
            Dialect::Mysql => format!("DELETE FROM {t} WHERE at < ? ORDER BY at, id LIMIT {batch}"),
            Dialect::Sqlite | Dialect::Postgres => {
                format!("DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE at < ? ORDER BY at, id LIMIT {batch})")
            }
        };
        let sql = self.sql(&sql);
        Ok(sqlx::query(&sql).bind(older_than_ms).execute(&self.pool).await?.rows_affected())
    }

    /// Every (outbox id, sequence number) stored for an edge, audit and metrics together,
    /// sorted (for tests and diagnostics: it reads them all).
    pub async fn outbox_keys(&self, edge_id: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        let sql = self.sql(
            "SELECT outbox_id, edge_seq FROM audit_entries WHERE edge_id = ? AND edge_seq IS NOT NULL \
             UNION ALL SELECT outbox_id, edge_seq FROM metrics_entries WHERE edge_id = ?",
        );
        let rows = sqlx::query(&sql).bind(edge_id).bind(edge_id).fetch_all(&self.pool).await?;
        let mut keys = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)? as u64, r.try_get::<i64, _>(1)? as u64)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// How many entries a table holds.
    pub async fn count_entries(&self, table: EntryTable) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {}", table.table_name());
        let n: i64 = sqlx::query(&sql).fetch_one(&self.pool).await?.try_get(0)?;
        Ok(n as u64)
    }
}

/// Rows per multi-row `INSERT` in [`Store::record_placements`]: at 17 parameters a row (the three
/// inserts in one PostgreSQL statement) 512 rows stay under SQLite's 32,766 and PostgreSQL's
/// and MySQL's 65,535 bound parameters.
const PLACEMENT_ROWS_PER_STATEMENT: usize = 512;

const SESSIONS_INSERT: &str =
    "sessions (id, edge_id, team, region_hint, created_at, require_approval, max_participants, participant_count)";
const PARTICIPANTS_INSERT: &str = "participants (session_id, participant_id, role, user_id, display_name, created_at)";
const PLACEMENTS_INSERT: &str =
    "placements (session_id, client_ip, wanted_region, served_region, edge_id, explanation, created_at)";

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the session rows of `SESSIONS_INSERT`.
fn bind_sessions<'q>(mut q: AnyQuery<'q>, batch: &'q [PlacementRecord]) -> AnyQuery<'q> {
    for p in batch {
        q = q.bind(&p.session.id).bind(&p.session.edge_id).bind(&p.session.team);
        q = q.bind(&p.session.region_hint).bind(p.session.created_at);
        q = q.bind(i64::from(p.session.require_approval)).bind(p.session.max_participants.map(i64::from));
    }
    q
}

/// Binds the host rows of `PARTICIPANTS_INSERT` (participant id 1 is in the SQL).
fn bind_participants<'q>(mut q: AnyQuery<'q>, batch: &'q [PlacementRecord]) -> AnyQuery<'q> {
    for p in batch {
        q = q.bind(&p.session.id).bind(p.host.role.as_str()).bind(&p.host.user_id);
        q = q.bind(&p.host.display_name).bind(p.host.created_at);
    }
    q
}

/// Binds the explanation rows of `PLACEMENTS_INSERT`.
fn bind_placements<'q>(mut q: AnyQuery<'q>, batch: &'q [PlacementRecord]) -> AnyQuery<'q> {
    for p in batch {
        q = q.bind(&p.session.id).bind(&p.client_ip).bind(&p.wanted_region).bind(&p.served_region);
        q = q.bind(&p.session.edge_id).bind(&p.explanation).bind(p.session.created_at);
    }
    q
}

/// `INSERT INTO <table_and_columns> VALUES <row>, <row>, ...` with `rows` copies of `row`.
fn multi_row_insert(table_and_columns: &str, row: &str, rows: usize) -> String {
    let mut sql = String::with_capacity(table_and_columns.len() + 20 + rows * (row.len() + 2));
    sql.push_str("INSERT INTO ");
    sql.push_str(table_and_columns);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql
}

/// Rows per multi-row `INSERT` in [`Store::store_outbox`]: at 15 parameters a metrics row, 1,000
/// rows stay under SQLite's 32,766 and PostgreSQL's and MySQL's 65,535 bound parameters; larger
/// statements were no faster in `outbox_rate`.
pub const ENTRY_ROWS_PER_STATEMENT: usize = 1_000;
/// Text bytes per multi-row `INSERT` in [`Store::store_outbox`]: a statement of long details
/// stays far below MySQL's smallest usual `max_allowed_packet` (4 MiB; MariaDB's default is
/// 16 MiB).
pub const ENTRY_BYTES_PER_STATEMENT: usize = 1 << 20;

/// Longest texts the entry tables keep, in characters: the VARCHAR columns of migration 0003 on
/// MySQL. Longer values (an edge is trusted, but not to be tidy) are cut on every database
/// alike, so a batch never fails on one database and not on another.
const MAX_ID_CHARS: usize = 128;
const MAX_KIND_CHARS: usize = 64;
const MAX_USER_CHARS: usize = 256;
const MAX_DETAIL_CHARS: usize = 4_096;

const AUDIT_INSERT: &str = "audit_entries (edge_id, outbox_id, edge_seq, at, kind, session_id, participant_id, \
     user_id, actor, detail, stored_at)";
const METRICS_INSERT: &str = "metrics_entries (edge_id, outbox_id, edge_seq, at, kind, interval_ms, connections, \
     sessions, messages_relayed, bytes_relayed, session_id, session_started_at, participants, end_reason, stored_at)";
/// One row of `AUDIT_INSERT` (an edge's entries have no actor) and of `METRICS_INSERT`.
const AUDIT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)";
const METRICS_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const AUDIT_COLUMNS: &str = "id, edge_id, outbox_id, edge_seq, at, kind, session_id, participant_id, user_id, actor, \
     detail, stored_at";
const METRICS_COLUMNS: &str = "id, edge_id, outbox_id, edge_seq, at, kind, interval_ms, connections, sessions, \
     messages_relayed, bytes_relayed, session_id, session_started_at, participants, end_reason, stored_at";

/// The condition of fenced session updates: binds the edge id, then the epoch. `edges` is not
/// the updated table, so MySQL accepts the subquery.
const EPOCH_FENCE: &str = "EXISTS (SELECT 1 FROM edges WHERE edges.id = ? AND edges.link_epoch = ?)";

/// Counts and durations are `u64` on the wire and `BIGINT` in SQL (sqlx's `Any` has no
/// unsigned types): beyond `i64::MAX` they saturate. Identifiers (outbox ids, sequence numbers)
/// are stored as their bit pattern instead (`as i64`, read back `as u64`), so they round-trip.
fn count_to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Text as the entry tables keep it: at most `max_chars` characters, NUL (which PostgreSQL
/// refuses in text) replaced. Borrowed when nothing changes.
fn clean_text(s: &str, max_chars: usize) -> Cow<'_, str> {
    if s.len() <= max_chars && !s.contains('\0') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().take(max_chars).map(|c| if c == '\0' { '\u{fffd}' } else { c }).collect())
}

/// The edge and outbox a batch of entries comes from.
struct OutboxOrigin<'a> {
    edge_id: &'a str,
    outbox: i64,
}

/// An edge's audit entry, ready to bind.
struct AuditRow<'a> {
    seq: i64,
    at: i64,
    kind: &'static str,
    session_id: Option<Cow<'a, str>>,
    participant_id: Option<i64>,
    user_id: Option<Cow<'a, str>>,
    detail: Cow<'a, str>,
}

impl<'a> AuditRow<'a> {
    fn new(seq: u64, a: &'a AuditEntry) -> Self {
        AuditRow {
            seq: seq as i64,
            at: a.at_ms,
            kind: a.event.as_str(),
            session_id: a.session_id.as_deref().map(|s| clean_text(s, MAX_ID_CHARS)),
            participant_id: a.participant_id.map(i64::from),
            user_id: a.user_id.as_deref().map(|s| clean_text(s, MAX_USER_CHARS)),
            detail: clean_text(&a.detail, MAX_DETAIL_CHARS),
        }
    }

    fn text_bytes(&self) -> usize {
        self.detail.len()
            + self.session_id.as_ref().map_or(0, |s| s.len())
            + self.user_id.as_ref().map_or(0, |s| s.len())
    }
}

/// An edge's metrics entry, ready to bind.
struct MetricsRow<'a> {
    seq: i64,
    at: i64,
    kind: &'static str,
    interval_ms: Option<i64>,
    connections: Option<i64>,
    sessions: Option<i64>,
    messages_relayed: i64,
    bytes_relayed: i64,
    session_id: Option<Cow<'a, str>>,
    session_started_at: Option<i64>,
    participants: Option<i64>,
    end_reason: Option<Cow<'a, str>>,
}

impl<'a> MetricsRow<'a> {
    fn new(seq: u64, m: &'a MetricsEntry) -> Self {
        let empty = MetricsRow {
            seq: seq as i64,
            at: 0,
            kind: m.kind(),
            interval_ms: None,
            connections: None,
            sessions: None,
            messages_relayed: 0,
            bytes_relayed: 0,
            session_id: None,
            session_started_at: None,
            participants: None,
            end_reason: None,
        };
        match m {
            MetricsEntry::Usage(u) => MetricsRow {
                at: u.at_ms,
                interval_ms: Some(i64::from(u.interval_ms)),
                connections: Some(i64::from(u.connections)),
                sessions: Some(i64::from(u.sessions)),
                messages_relayed: count_to_sql(u.messages_relayed),
                bytes_relayed: count_to_sql(u.bytes_relayed),
                ..empty
            },
            MetricsEntry::SessionSummary(s) => MetricsRow {
                at: s.at_ms,
                messages_relayed: count_to_sql(s.messages_relayed),
                bytes_relayed: count_to_sql(s.bytes_relayed),
                session_id: Some(clean_text(&s.session_id, MAX_ID_CHARS)),
                session_started_at: Some(s.started_at_ms),
                participants: Some(i64::from(s.participants)),
                end_reason: Some(clean_text(&s.end_reason, MAX_KIND_CHARS)),
                ..empty
            },
        }
    }

    fn text_bytes(&self) -> usize {
        self.session_id.as_ref().map_or(0, |s| s.len()) + self.end_reason.as_ref().map_or(0, |s| s.len())
    }
}

/// The smallest and largest sequence numbers of `rows` (`None` when empty).
fn seq_range<T>(rows: &[T], seq: impl Fn(&T) -> i64) -> Option<(i64, i64)> {
    let first = rows.iter().map(&seq).min()?;
    let last = rows.iter().map(&seq).max()?;
    Some((first, last))
}

/// Splits rows into statements of at most [`ENTRY_ROWS_PER_STATEMENT`] rows and about
/// [`ENTRY_BYTES_PER_STATEMENT`] bytes of text (a statement always takes at least one row).
fn statement_chunks<T>(rows: &[T], text_bytes: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::with_capacity(rows.len() / ENTRY_ROWS_PER_STATEMENT + 1);
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let row_bytes = text_bytes(row);
        if i > start && (i - start == ENTRY_ROWS_PER_STATEMENT || bytes + row_bytes > ENTRY_BYTES_PER_STATEMENT) {
            chunks.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += row_bytes;
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

/// Binds the rows of `AUDIT_INSERT` (the actor is NULL in the SQL).
fn bind_audit_rows<'q>(
    mut q: AnyQuery<'q>,
    origin: &OutboxOrigin<'q>,
    rows: &'q [AuditRow<'_>],
    now_ms: i64,
) -> AnyQuery<'q> {
    for r in rows {
        q = q.bind(origin.edge_id).bind(origin.outbox).bind(r.seq).bind(r.at).bind(r.kind);
        q = q.bind(r.session_id.as_deref()).bind(r.participant_id).bind(r.user_id.as_deref());
        q = q.bind(r.detail.as_ref()).bind(now_ms);
    }
    q
}

/// Binds the rows of `METRICS_INSERT`.
fn bind_metrics_rows<'q>(
    mut q: AnyQuery<'q>,
    origin: &OutboxOrigin<'q>,
    rows: &'q [MetricsRow<'_>],
    now_ms: i64,
) -> AnyQuery<'q> {
    for r in rows {
        q = q.bind(origin.edge_id).bind(origin.outbox).bind(r.seq).bind(r.at).bind(r.kind);
        q = q.bind(r.interval_ms).bind(r.connections).bind(r.sessions);
        q = q.bind(r.messages_relayed).bind(r.bytes_relayed).bind(r.session_id.as_deref());
        q = q.bind(r.session_started_at).bind(r.participants).bind(r.end_reason.as_deref()).bind(now_ms);
    }
    q
}

/// Cuts the extra row [`Store::entry_rows`] read and answers the next page's cursor if it
/// existed.
fn page<T>(mut records: Vec<T>, limit: u32, cursor: impl Fn(&T) -> Cursor) -> (Vec<T>, Option<Cursor>) {
    let limit = limit as usize;
    if records.len() <= limit {
        return (records, None);
    }
    records.truncate(limit);
    let next = records.last().map(cursor);
    (records, next)
}

fn opt_u32_col(row: &AnyRow, col: &str) -> Result<Option<u32>, StoreError> {
    let v: Option<i64> = row.try_get(col)?;
    v.map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))).transpose()
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        edge_id: row.try_get("edge_id")?,
        outbox_id: row.try_get::<Option<i64>, _>("outbox_id")?.map(|v| v as u64),
        edge_seq: row.try_get::<Option<i64>, _>("edge_seq")?.map(|v| v as u64),
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        session_id: row.try_get("session_id")?,
        participant_id: opt_u32_col(row, "participant_id")?,
        user_id: row.try_get("user_id")?,
        actor: row.try_get("actor")?,
        detail: row.try_get("detail")?,
        stored_at: row.try_get("stored_at")?,
    })
}

fn metrics_from_row(row: &AnyRow) -> Result<MetricsRecord, StoreError> {
    Ok(MetricsRecord {
        id: row.try_get("id")?,
        edge_id: row.try_get("edge_id")?,
        outbox_id: row.try_get::<i64, _>("outbox_id")? as u64,
        edge_seq: row.try_get::<i64, _>("edge_seq")? as u64,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        interval_ms: opt_u32_col(row, "interval_ms")?,
        connections: opt_u32_col(row, "connections")?,
        sessions: opt_u32_col(row, "sessions")?,
        messages_relayed: row.try_get::<i64, _>("messages_relayed")? as u64,
        bytes_relayed: row.try_get::<i64, _>("bytes_relayed")? as u64,
        session_id: row.try_get("session_id")?,
        session_started_at: row.try_get("session_started_at")?,
        participants: opt_u32_col(row, "participants")?,
        end_reason: row.try_get("end_reason")?,
        stored_at: row.try_get("stored_at")?,
    })
}

fn rule_from_row(row: &AnyRow) -> Result<RegionRuleRecord, StoreError> {
    Ok(RegionRuleRecord {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        matcher: row.try_get("matcher")?,
        region: row.try_get("region")?,
        created_at: row.try_get("created_at")?,
    })
}

const EDGE_COLUMNS: &str =
    "id, region, region_override, public_url, build, max_connections, max_sessions, admin_state, health, \
     cpu, loop_lag_ms, connections, sessions, registered_at, last_heartbeat_at, health_changed_at, \
     outbox_depth, outbox_oldest_age_ms, outbox_last_seq, outbox_dropped_audit, outbox_dropped_metrics, \
     outbox_id, link_epoch, drain_deadline, drained_at, stopping_since";

const SESSION_COLUMNS: &str =
    "id, edge_id, team, region_hint, created_at, started_at, ended_at, end_reason, participant_count, \
     require_approval, max_participants";

fn u32_col(row: &AnyRow, col: &str) -> Result<u32, StoreError> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))
}

fn edge_from_row(row: &AnyRow) -> Result<EdgeRecord, StoreError> {
    let health: String = row.try_get("health")?;
    let admin_state: String = row.try_get("admin_state")?;
    let cpu: f64 = row.try_get("cpu")?;
    Ok(EdgeRecord {
        id: row.try_get("id")?,
        region: row.try_get("region")?,
        region_override: row.try_get("region_override")?,
        public_url: row.try_get("public_url")?,
        build: row.try_get("build")?,
        max_connections: u32_col(row, "max_connections")?,
        max_sessions: u32_col(row, "max_sessions")?,
        admin_state: AdminState::parse(&admin_state)
            .ok_or_else(|| StoreError::Corrupt(format!("admin_state {admin_state}")))?,
        health: Health::parse(&health).ok_or_else(|| StoreError::Corrupt(format!("health {health}")))?,
        load: Load {
            cpu: cpu as f32,
            loop_lag_ms: u32_col(row, "loop_lag_ms")?,
            connections: u32_col(row, "connections")?,
            sessions: u32_col(row, "sessions")?,
        },
        outbox: OutboxStatus {
            depth: row.try_get::<i64, _>("outbox_depth")? as u64,
            oldest_age_ms: row.try_get::<i64, _>("outbox_oldest_age_ms")? as u64,
            last_seq: row.try_get::<i64, _>("outbox_last_seq")? as u64,
            dropped_audit: row.try_get::<i64, _>("outbox_dropped_audit")? as u64,
            dropped_metrics: row.try_get::<i64, _>("outbox_dropped_metrics")? as u64,
        },
        outbox_id: row.try_get::<i64, _>("outbox_id")? as u64,
        link_epoch: row.try_get::<i64, _>("link_epoch")? as u64,
        registered_at: row.try_get("registered_at")?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
        health_changed_at: row.try_get("health_changed_at")?,
        drain_deadline: row.try_get("drain_deadline")?,
        drained_at: row.try_get("drained_at")?,
        stopping_since: row.try_get("stopping_since")?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: row.try_get("id")?,
        edge_id: row.try_get("edge_id")?,
        team: row.try_get("team")?,
        region_hint: row.try_get("region_hint")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: row.try_get("end_reason")?,
        participant_count: u32_col(row, "participant_count")?,
        require_approval: row.try_get::<i64, _>("require_approval")? != 0,
        max_participants: row
            .try_get::<Option<i64>, _>("max_participants")?
            .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("max_participants = {v}"))))
            .transpose()?,
    })
}

/// A database URL with its password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn dialect_from_url() {
        assert_eq!(Dialect::from_url("sqlite://a.db?mode=rwc"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("postgresql://h/db"), Some(Dialect::Postgres));
        assert_eq!(Dialect::from_url("mariadb://h/db"), Some(Dialect::Mysql));
        assert_eq!(Dialect::from_url("redis://h"), None);
    }
}
