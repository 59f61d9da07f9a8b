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

mod records;

use std::borrow::Cow;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

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
                    // except for the last transactions before a power cut, which the locator can
                    // lose without harm (edges resend what was not acknowledged).
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
        migrator.run(&self.pool).await?;
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

    /// Records an edge that (re)registered over its link: health `up`, fresh heartbeat. The admin
    /// state of a known edge is kept.
    pub async fn upsert_edge(&self, edge: &EdgeRegistration, now_ms: i64) -> Result<(), StoreError> {
        let sql = match self.dialect {
            Dialect::Sqlite | Dialect::Postgres => {
                "INSERT INTO edges (id, region, public_url, build, max_connections, max_sessions, health, \
                 cpu, loop_lag_ms, connections, sessions, registered_at, last_heartbeat_at, health_changed_at) \
                 VALUES (?, ?, ?, ?, ?, ?, 'up', ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET region = excluded.region, public_url = excluded.public_url, \
                 build = excluded.build, max_connections = excluded.max_connections, \
                 max_sessions = excluded.max_sessions, health = 'up', cpu = excluded.cpu, \
                 loop_lag_ms = excluded.loop_lag_ms, connections = excluded.connections, \
                 sessions = excluded.sessions, registered_at = excluded.registered_at, \
                 last_heartbeat_at = excluded.last_heartbeat_at, health_changed_at = excluded.health_changed_at"
            }
            Dialect::Mysql => {
                "INSERT INTO edges (id, region, public_url, build, max_connections, max_sessions, health, \
                 cpu, loop_lag_ms, connections, sessions, registered_at, last_heartbeat_at, health_changed_at) \
                 VALUES (?, ?, ?, ?, ?, ?, 'up', ?, ?, ?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE region = VALUES(region), public_url = VALUES(public_url), \
                 build = VALUES(build), max_connections = VALUES(max_connections), \
                 max_sessions = VALUES(max_sessions), health = 'up', cpu = VALUES(cpu), \
                 loop_lag_ms = VALUES(loop_lag_ms), connections = VALUES(connections), \
                 sessions = VALUES(sessions), registered_at = VALUES(registered_at), \
                 last_heartbeat_at = VALUES(last_heartbeat_at), health_changed_at = VALUES(health_changed_at)"
            }
        };
        let sql = self.sql(sql);
        sqlx::query(&sql)
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
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a heartbeat's load. Returns false if the edge is unknown.
    pub async fn record_heartbeat(&self, edge_id: &str, load: &Load, now_ms: i64) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE edges SET cpu = ?, loop_lag_ms = ?, connections = ?, sessions = ?, last_heartbeat_at = ? \
             WHERE id = ?",
        );
        let done = sqlx::query(&sql)
            .bind(f64::from(load.cpu))
            .bind(i64::from(load.loop_lag_ms))
            .bind(i64::from(load.connections))
            .bind(i64::from(load.sessions))
            .bind(now_ms)
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
            "INSERT INTO sessions (id, edge_id, team, region_hint, created_at, participant_count) \
             VALUES (?, ?, ?, ?, ?, 1)",
        );
        sqlx::query(&sql)
            .bind(&s.id)
            .bind(&s.edge_id)
            .bind(&s.team)
            .bind(&s.region_hint)
            .bind(s.created_at)
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

    /// Sets an edge's admin state. Returns false if the edge is unknown.
    pub async fn set_admin_state(&self, edge_id: &str, state: AdminState) -> Result<bool, StoreError> {
        let sql = self.sql("UPDATE edges SET admin_state = ? WHERE id = ?");
        let done = sqlx::query(&sql).bind(state.as_str()).bind(edge_id).execute(&self.pool).await?;
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
        let sessions = |n| multi_row_insert(SESSIONS_INSERT, "(?, ?, ?, ?, ?, 1)", n);
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
}

/// Rows per multi-row `INSERT` in [`Store::record_placements`]: at 17 parameters a row (the three
/// inserts in one PostgreSQL statement) 512 rows stay under SQLite's 32,766 and PostgreSQL's
/// and MySQL's 65,535 bound parameters.
const PLACEMENT_ROWS_PER_STATEMENT: usize = 512;

const SESSIONS_INSERT: &str = "sessions (id, edge_id, team, region_hint, created_at, participant_count)";
const PARTICIPANTS_INSERT: &str = "participants (session_id, participant_id, role, user_id, display_name, created_at)";
const PLACEMENTS_INSERT: &str =
    "placements (session_id, client_ip, wanted_region, served_region, edge_id, explanation, created_at)";

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the session rows of `SESSIONS_INSERT`.
fn bind_sessions<'q>(mut q: AnyQuery<'q>, batch: &'q [PlacementRecord]) -> AnyQuery<'q> {
    for p in batch {
        q = q.bind(&p.session.id).bind(&p.session.edge_id).bind(&p.session.team);
        q = q.bind(&p.session.region_hint).bind(p.session.created_at);
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
     cpu, loop_lag_ms, connections, sessions, registered_at, last_heartbeat_at, health_changed_at";

const SESSION_COLUMNS: &str =
    "id, edge_id, team, region_hint, created_at, started_at, ended_at, end_reason, participant_count";

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
        registered_at: row.try_get("registered_at")?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
        health_changed_at: row.try_get("health_changed_at")?,
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
