//! Storage for the admin surface: scoped API tokens, dashboard logins, the session list and the
//! usage series. Same rules as the rest of [`Store`]: one SQL text for every dialect where
//! possible, times in Unix milliseconds.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{session_from_row, Dialect, SessionRecord, Store, StoreError, SESSION_COLUMNS};

/// A scoped admin API token as stored: never the token itself, only its SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// The public part of the token (`duet_<id>_<secret>`), used to find it.
    pub id: String,
    pub name: String,
    /// `read` or `admin`.
    pub scope: String,
    pub digest: Vec<u8>,
    pub created_at: i64,
    /// The principal that created it (`token:root`, `user:ada`, ...).
    pub created_by: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A team's client key as stored (only its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyRecord {
    pub id: String,
    pub team: String,
    pub name: String,
    pub digest: Vec<u8>,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

const CLIENT_KEY_COLUMNS: &str = "id, team, name, digest, created_at, created_by, revoked_at, last_used_at";

fn client_key_from_row(row: &AnyRow) -> Result<ClientKeyRecord, StoreError> {
    Ok(ClientKeyRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        digest: unhex(&row.try_get::<String, _>("digest")?)?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// A dashboard login, found by the digest of its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSessionRecord {
    pub principal: String,
    /// What the login was made with (see `admin::auth::Credential`); re-checked on every use.
    pub credential: Option<String>,
    pub scope: String,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Which sessions a list shows. `live`: `Some(true)` not ended, `Some(false)` ended, `None` both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub live: Option<bool>,
    pub edge_id: Option<String>,
    pub team: Option<String>,
}

/// Where the next page of sessions starts: before the session with this `(created_at, id)`
/// (sessions are listed newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    pub created_at: i64,
    pub id: String,
}

impl SessionCursor {
    /// `"<created_at>.<id>"`: clients pass it back unchanged.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn parse(s: &str) -> Option<SessionCursor> {
        let (at, id) = s.split_once('.')?;
        if id.is_empty() || id.len() > 128 {
            return None;
        }
        Some(SessionCursor { created_at: at.parse().ok()?, id: id.to_owned() })
    }
}

/// One edge's peak usage within one step of a usage series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRow {
    /// The step's index from the start of the series.
    pub bucket: i64,
    pub connections: i64,
    pub sessions: i64,
}

/// When a user held a place in a session: from joining until the session ended (`None`: live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpan {
    pub user_id: String,
    pub from: i64,
    pub until: Option<i64>,
}

/// Digests are stored as lowercase hex: one text type that every dialect and driver reads back
/// the same way.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, StoreError> {
    let bad = || StoreError::Corrupt(format!("digest {s:?} is not hex"));
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
        .collect()
}

const TOKEN_COLUMNS: &str = "id, name, scope, digest, created_at, created_by, expires_at, revoked_at, last_used_at";

fn token_from_row(row: &AnyRow) -> Result<ApiTokenRecord, StoreError> {
    Ok(ApiTokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: row.try_get("scope")?,
        digest: unhex(&row.try_get::<String, _>("digest")?)?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

impl Store {
    // ---- API tokens ----

    /// Stores a new token; false when another token has the same name (the unique key decides,
    /// so two replicas cannot both create it).
    pub async fn insert_api_token(&self, t: &ApiTokenRecord) -> Result<bool, StoreError> {
        if self.api_token_by_name(&t.name).await?.is_some() {
            return Ok(false);
        }
        let sql = format!("INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
        let sql = self.sql(&sql);
        let inserted = sqlx::query(&sql)
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.scope)
            .bind(hex(&t.digest))
            .bind(t.created_at)
            .bind(&t.created_by)
            .bind(t.expires_at)
            .bind(t.revoked_at)
            .bind(t.last_used_at)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            // Lost a race for the name: the other insert is there now.
            Err(_) if self.api_token_by_name(&t.name).await?.is_some() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?");
        let sql = self.sql(&sql);
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn api_token_by_name(&self, name: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE name = ?");
        let sql = self.sql(&sql);
        let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Every token, revoked and expired ones included, oldest first.
    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token (keeping the first revocation time); `None` if there is no such token.
    pub async fn revoke_api_token(&self, id: &str, now_ms: i64) -> Result<Option<ApiTokenRecord>, StoreError> {
        let sql = self.sql("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL");
        sqlx::query(&sql).bind(now_ms).bind(id).execute(&self.pool).await?;
        self.api_token(id).await
    }

    /// Records that a token was used (callers throttle this).
    pub async fn touch_api_token(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE api_tokens SET last_used_at = ? WHERE id = ?");
        sqlx::query(&sql).bind(now_ms).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Edges an admin is draining.
    pub async fn draining_edges(&self) -> Result<Vec<super::EdgeRecord>, StoreError> {
        let sql = format!("SELECT {} FROM edges WHERE admin_state = 'draining' ORDER BY id", super::EDGE_COLUMNS);
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(super::edge_from_row).collect()
    }

    /// Records that a draining edge's deadline `deadline` was acted on at `now_ms`, unless that
    /// is already recorded or the drain was changed: the caller that gets `true` writes the
    /// audit entry.
    pub async fn mark_drained(&self, edge_id: &str, deadline: i64, now_ms: i64) -> Result<bool, StoreError> {
        let sql = self.sql(
            "UPDATE edges SET drained_at = ? WHERE id = ? AND drain_deadline = ? AND admin_state = 'draining' \
             AND drained_at IS NULL",
        );
        Ok(sqlx::query(&sql).bind(now_ms).bind(edge_id).bind(deadline).execute(&self.pool).await?.rows_affected() > 0)
    }

    // ---- client keys ----

    /// Stores a new client key; false when the team has a key of that name.
    pub async fn insert_client_key(&self, k: &ClientKeyRecord) -> Result<bool, StoreError> {
        let taken = |keys: Vec<ClientKeyRecord>| keys.iter().any(|o| o.team == k.team && o.name == k.name);
        if taken(self.client_keys(Some(&k.team)).await?) {
            return Ok(false);
        }
        let sql = format!("INSERT INTO client_keys ({CLIENT_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        let sql = self.sql(&sql);
        let inserted = sqlx::query(&sql)
            .bind(&k.id)
            .bind(&k.team)
            .bind(&k.name)
            .bind(hex(&k.digest))
            .bind(k.created_at)
            .bind(&k.created_by)
            .bind(k.revoked_at)
            .bind(k.last_used_at)
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(_) if taken(self.client_keys(Some(&k.team)).await?) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn client_key(&self, id: &str) -> Result<Option<ClientKeyRecord>, StoreError> {
        let sql = format!("SELECT {CLIENT_KEY_COLUMNS} FROM client_keys WHERE id = ?");
        let sql = self.sql(&sql);
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(client_key_from_row).transpose()
    }

    /// Every client key (of `team`, if given), revoked ones included, by team then age.
    pub async fn client_keys(&self, team: Option<&str>) -> Result<Vec<ClientKeyRecord>, StoreError> {
        let rows = match team {
            Some(team) => {
                let sql =
                    format!("SELECT {CLIENT_KEY_COLUMNS} FROM client_keys WHERE team = ? ORDER BY created_at, id");
                let sql = self.sql(&sql);
                sqlx::query(&sql).bind(team).fetch_all(&self.pool).await?
            }
            None => {
                let sql = format!("SELECT {CLIENT_KEY_COLUMNS} FROM client_keys ORDER BY team, created_at, id");
                sqlx::query(&sql).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(client_key_from_row).collect()
    }

    /// Revokes a client key (keeping the first revocation time); `None` if there is none.
    pub async fn revoke_client_key(&self, id: &str, now_ms: i64) -> Result<Option<ClientKeyRecord>, StoreError> {
        let sql = self.sql("UPDATE client_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL");
        sqlx::query(&sql).bind(now_ms).bind(id).execute(&self.pool).await?;
        self.client_key(id).await
    }

    pub async fn touch_client_key(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE client_keys SET last_used_at = ? WHERE id = ?");
        sqlx::query(&sql).bind(now_ms).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    // ---- dashboard logins ----

    pub async fn insert_dashboard_session(&self, digest: &[u8], s: &DashboardSessionRecord) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO dashboard_sessions (digest, principal, credential, scope, csrf, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(hex(digest))
            .bind(&s.principal)
            .bind(&s.credential)
            .bind(&s.scope)
            .bind(&s.csrf)
            .bind(s.created_at)
            .bind(s.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The login whose cookie has this digest, if it has not expired at `now_ms`.
    pub async fn dashboard_session(
        &self,
        digest: &[u8],
        now_ms: i64,
    ) -> Result<Option<DashboardSessionRecord>, StoreError> {
        let sql = self.sql(
            "SELECT principal, credential, scope, csrf, created_at, expires_at FROM dashboard_sessions \
             WHERE digest = ? AND expires_at > ?",
        );
        let row = sqlx::query(&sql).bind(hex(digest)).bind(now_ms).fetch_optional(&self.pool).await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(DashboardSessionRecord {
            principal: r.try_get("principal")?,
            credential: r.try_get("credential")?,
            scope: r.try_get("scope")?,
            csrf: r.try_get("csrf")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
        }))
    }

    pub async fn delete_dashboard_session(&self, digest: &[u8]) -> Result<(), StoreError> {
        let sql = self.sql("DELETE FROM dashboard_sessions WHERE digest = ?");
        sqlx::query(&sql).bind(hex(digest)).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes logins that expired before `now_ms`; answers how many.
    pub async fn prune_dashboard_sessions(&self, now_ms: i64) -> Result<u64, StoreError> {
        let sql = self.sql("DELETE FROM dashboard_sessions WHERE expires_at <= ?");
        Ok(sqlx::query(&sql).bind(now_ms).execute(&self.pool).await?.rows_affected())
    }

    // ---- sessions, as admins list them ----

    /// Sessions matching `filter`, newest first by (`created_at`, `id`), at most `limit`, before
    /// `before`; with the cursor of the next page when there is one.
    pub async fn sessions_page(
        &self,
        filter: &SessionFilter,
        limit: u32,
        before: Option<&SessionCursor>,
    ) -> Result<(Vec<SessionRecord>, Option<SessionCursor>), StoreError> {
        let mut conditions: Vec<&str> = Vec::new();
        match filter.live {
            Some(true) => conditions.push("ended_at IS NULL"),
            Some(false) => conditions.push("ended_at IS NOT NULL"),
            None => {}
        }
        if before.is_some() {
            conditions.push("created_at <= ? AND (created_at < ? OR id < ?)");
        }
        if filter.edge_id.is_some() {
            conditions.push("edge_id = ?");
        }
        if filter.team.is_some() {
            conditions.push("team = ?");
        }
        let mut sql = format!("SELECT {SESSION_COLUMNS} FROM sessions");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {}", u64::from(limit) + 1));
        let sql = self.sql(&sql);
        let mut q = sqlx::query(&sql);
        if let Some(c) = before {
            q = q.bind(c.created_at).bind(c.created_at).bind(c.id.as_str());
        }
        if let Some(edge) = &filter.edge_id {
            q = q.bind(edge.as_str());
        }
        if let Some(team) = &filter.team {
            q = q.bind(team.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut records = rows.iter().map(session_from_row).collect::<Result<Vec<_>, _>>()?;
        if records.len() <= limit as usize {
            return Ok((records, None));
        }
        records.truncate(limit as usize);
        let next = records.last().map(|r| SessionCursor { created_at: r.created_at, id: r.id.clone() });
        Ok((records, next))
    }

    // ---- usage series ----

    /// Each edge's peak connections and sessions per step of `step_ms` from `from` (inclusive)
    /// to `to` (exclusive), from the edges' `usage` metrics entries.
    pub async fn usage_rows(&self, from: i64, to: i64, step_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
        // Integer division: MySQL's `/` answers a decimal.
        let div = if self.dialect == Dialect::Mysql { "DIV" } else { "/" };
        let sql = format!(
            "SELECT (at - ?) {div} ? AS bucket, edge_id, MAX(connections) AS connections, MAX(sessions) AS sessions \
             FROM metrics_entries WHERE kind = 'usage' AND at >= ? AND at < ? GROUP BY bucket, edge_id"
        );
        let sql = self.sql(&sql);
        let rows = sqlx::query(&sql).bind(from).bind(step_ms).bind(from).bind(to).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    bucket: r.try_get("bucket")?,
                    connections: r.try_get::<Option<i64>, _>("connections")?.unwrap_or(0),
                    sessions: r.try_get::<Option<i64>, _>("sessions")?.unwrap_or(0),
                })
            })
            .collect()
    }

    /// Who held a place in a session at some time in [`from`, `to`): participants of sessions
    /// that had not ended by `from`, joined before `to`. At most `limit` rows, the latest joins
    /// first.
    pub async fn user_spans(&self, from: i64, to: i64, limit: u32) -> Result<Vec<UserSpan>, StoreError> {
        let sql = format!(
            "SELECT p.user_id AS user_id, p.created_at AS joined_at, s.ended_at AS ended_at \
             FROM participants p JOIN sessions s ON s.id = p.session_id \
             WHERE p.created_at < ? AND (s.ended_at IS NULL OR s.ended_at > ?) \
             ORDER BY p.created_at DESC LIMIT {limit}"
        );
        let sql = self.sql(&sql);
        let rows = sqlx::query(&sql).bind(to).bind(from).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(UserSpan {
                    user_id: r.try_get("user_id")?,
                    from: r.try_get("joined_at")?,
                    until: r.try_get("ended_at")?,
                })
            })
            .collect()
    }
}
