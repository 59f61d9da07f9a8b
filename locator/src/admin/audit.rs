//! `GET /audit`, `GET /metrics`: the stored audit and metrics entries, filtered and paged.
//!
//! Query parameters, all optional: `from` (inclusive) and `to` (exclusive), RFC 3339 times
//! compared with when the entry happened; `edge`, `session`, `kind` and `actor` (audit entries
//! only, e.g. `token:root`), exact matches; `limit`
//! (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]); `cursor`, the `next_cursor` of the previous
//! page; `order`, `asc` (default) or `desc`. Entries come oldest first by (time, id), or newest
//! first with `desc`; a page is `{"entries": [...], "next_cursor":
//! "..." | null}`, and `null` means there is nothing after it. A malformed or unknown parameter
//! is answered `400` with a message naming it, and nothing is read.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::rfc3339_ms;
use crate::api::ApiError;
use crate::db::{AuditRecord, Cursor, EntryFilter, MetricsRecord};
use crate::LocatorState;

/// Entries per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: u32 = 100;
/// A page never holds more: a thousand entries is a few hundred KiB of JSON, read in one short
/// query.
pub const MAX_LIMIT: u32 = 1_000;

/// The query string as sent; every value is checked by [`parse`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryQuery {
    from: Option<String>,
    to: Option<String>,
    edge: Option<String>,
    session: Option<String>,
    kind: Option<String>,
    actor: Option<String>,
    order: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A checked query: what to read, how many, from where.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    pub filter: EntryFilter,
    pub limit: u32,
    pub after: Option<Cursor>,
}

pub(crate) fn time_param(name: &str, value: Option<String>) -> Result<Option<i64>, ApiError> {
    let Some(s) = value else { return Ok(None) };
    let t = time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).map_err(|_| {
        ApiError::BadRequest(format!(
            "`{name}` {s:?} is not an RFC 3339 time such as 2025-01-31T12:00:00Z (write + in an offset as %2B)"
        ))
    })?;
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).map(Some).map_err(|_| ApiError::BadRequest(format!("`{name}` {s:?} is out of range")))
}

pub(crate) fn text_param(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() => Err(ApiError::BadRequest(format!("`{name}` must not be empty"))),
        v => Ok(v),
    }
}

/// Checks every parameter, naming the first bad one.
pub fn parse(q: EntryQuery) -> Result<Parsed, ApiError> {
    let from = time_param("from", q.from)?;
    let to = time_param("to", q.to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::BadRequest("`from` must not be after `to`".into()));
        }
    }
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(s) => s.parse::<u32>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("`limit` {s:?} must be a whole number from 1 to {MAX_LIMIT}"))
        })?,
    };
    let after = match q.cursor {
        None => None,
        Some(s) => Some(Cursor::parse(&s).ok_or_else(|| {
            ApiError::BadRequest(format!("`cursor` {s:?} is not a next_cursor from a previous answer"))
        })?),
    };
    let filter = EntryFilter {
        from,
        to,
        edge_id: text_param("edge", q.edge)?,
        session_id: text_param("session", q.session)?,
        kind: text_param("kind", q.kind)?,
        actor: text_param("actor", q.actor)?,
        newest_first: match q.order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(ApiError::BadRequest(format!("`order` {other:?} is not one of asc, desc"))),
        },
    };
    Ok(Parsed { filter, limit, after })
}

fn query(q: Result<Query<EntryQuery>, QueryRejection>) -> Result<Parsed, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    parse(q)
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub entries: Vec<T>,
    /// Pass as `cursor` to read the next page; `null` when this is the last one.
    pub next_cursor: Option<String>,
}

/// An audit entry. Relayed from an edge: `outbox_id` and `edge_seq` set, `actor` null. Made by
/// the locator: `actor` is `locator` or an admin's principal (`token:<name>`, `user:<name>`),
/// `outbox_id` and `edge_seq` null.
#[derive(Debug, Serialize)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub edge_id: Option<String>,
    /// A decimal string: outbox ids are 64-bit, beyond what JSON numbers hold exactly in
    /// JavaScript.
    pub outbox_id: Option<String>,
    pub edge_seq: Option<u64>,
    pub session_id: Option<String>,
    pub participant_id: Option<u32>,
    pub user_id: Option<String>,
    pub actor: Option<String>,
    pub detail: String,
    pub stored_at: String,
}

impl From<AuditRecord> for AuditView {
    fn from(r: AuditRecord) -> Self {
        AuditView {
            id: r.id,
            at: rfc3339_ms(r.at),
            kind: r.kind,
            edge_id: r.edge_id,
            outbox_id: r.outbox_id.map(|v| v.to_string()),
            edge_seq: r.edge_seq,
            session_id: r.session_id,
            participant_id: r.participant_id,
            user_id: r.user_id,
            actor: r.actor,
            detail: r.detail,
            stored_at: rfc3339_ms(r.stored_at),
        }
    }
}

/// A metrics entry: `usage` sets `interval_ms`, `connections` and `sessions`;
/// `session_summary` sets `session_id`, `session_started_at`, `participants` and `end_reason`.
#[derive(Debug, Serialize)]
pub struct MetricsView {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub edge_id: String,
    /// A decimal string, like the audit entries'.
    pub outbox_id: String,
    pub edge_seq: u64,
    pub interval_ms: Option<u32>,
    pub connections: Option<u32>,
    pub sessions: Option<u32>,
    pub messages_relayed: u64,
    pub bytes_relayed: u64,
    pub session_id: Option<String>,
    pub session_started_at: Option<String>,
    pub participants: Option<u32>,
    pub end_reason: Option<String>,
    pub stored_at: String,
}

impl From<MetricsRecord> for MetricsView {
    fn from(r: MetricsRecord) -> Self {
        MetricsView {
            id: r.id,
            at: rfc3339_ms(r.at),
            kind: r.kind,
            edge_id: r.edge_id,
            outbox_id: r.outbox_id.to_string(),
            edge_seq: r.edge_seq,
            interval_ms: r.interval_ms,
            connections: r.connections,
            sessions: r.sessions,
            messages_relayed: r.messages_relayed,
            bytes_relayed: r.bytes_relayed,
            session_id: r.session_id,
            session_started_at: r.session_started_at.map(rfc3339_ms),
            participants: r.participants,
            end_reason: r.end_reason,
            stored_at: rfc3339_ms(r.stored_at),
        }
    }
}

pub async fn list_audit(
    State(state): State<Arc<LocatorState>>,
    q: Result<Query<EntryQuery>, QueryRejection>,
) -> Result<Json<Page<AuditView>>, ApiError> {
    let q = query(q)?;
    let (records, next) = state.store.audit_entries(&q.filter, q.limit, q.after).await?;
    Ok(Json(Page {
        entries: records.into_iter().map(AuditView::from).collect(),
        next_cursor: next.map(Cursor::encode),
    }))
}

pub async fn list_metrics(
    State(state): State<Arc<LocatorState>>,
    q: Result<Query<EntryQuery>, QueryRejection>,
) -> Result<Json<Page<MetricsView>>, ApiError> {
    let q = query(q)?;
    let (records, next) = state.store.metrics_entries(&q.filter, q.limit, q.after).await?;
    Ok(Json(Page {
        entries: records.into_iter().map(MetricsView::from).collect(),
        next_cursor: next.map(Cursor::encode),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Parsed, String> {
        let text = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let uri: axum::http::Uri = format!("/audit?{text}").parse().unwrap();
        let q = Query::<EntryQuery>::try_from_uri(&uri).map_err(|e| e.body_text())?;
        parse(q.0).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_filters_and_pages() {
        let p = q(&[]).unwrap();
        assert_eq!((p.filter, p.limit, p.after), (EntryFilter::default(), DEFAULT_LIMIT, None));
        let p = q(&[
            ("from", "2023-11-14T22:13:20.123Z"),
            ("to", "2023-11-15T00:13:20%2B01:00"),
            ("edge", "edge-1"),
            ("session", "s_1"),
            ("kind", "session_started"),
            ("limit", "1000"),
            ("cursor", "1700000000123.42"),
        ])
        .unwrap();
        assert_eq!((p.filter.from, p.filter.to), (Some(1_700_000_000_123), Some(1_700_003_600_000)));
        assert_eq!(p.filter.edge_id.as_deref(), Some("edge-1"));
        assert_eq!((p.filter.session_id.as_deref(), p.filter.kind.as_deref()), (Some("s_1"), Some("session_started")));
        assert_eq!((p.limit, p.after), (1000, Some(Cursor { at: 1_700_000_000_123, id: 42 })));
    }

    #[test]
    fn bad_parameters_are_named() {
        for (pairs, named) in [
            (&[("from", "yesterday")][..], "`from`"),
            (&[("to", "1700000000000")][..], "`to`"),
            (&[("from", "2024-01-02T00:00:00Z"), ("to", "2024-01-01T00:00:00Z")][..], "`from`"),
            (&[("limit", "0")][..], "`limit`"),
            (&[("limit", "1001")][..], "`limit`"),
            (&[("limit", "ten")][..], "`limit`"),
            (&[("cursor", "abc")][..], "`cursor`"),
            (&[("edge", "")][..], "`edge`"),
            (&[("color", "red")][..], "color"),
        ] {
            let err = q(pairs).unwrap_err();
            assert!(err.contains(named), "{pairs:?}: {err}");
        }
    }
}
