//! `GET /sessions`, `GET /sessions/{id}`: live and past sessions, newest first, and one session
//! with its participants.
//!
//! List parameters, all optional: `state` (`live` or `ended`; both when absent), `edge`, `team`
//! (exact matches), `limit` (1 to [`super::audit::MAX_LIMIT`], default
//! [`super::audit::DEFAULT_LIMIT`]) and `cursor` (the `next_cursor` of the previous page).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::audit::{text_param, DEFAULT_LIMIT, MAX_LIMIT};
use super::rfc3339_ms;
use crate::api::ApiError;
use crate::db::{ParticipantRecord, SessionCursor, SessionFilter, SessionRecord};
use crate::LocatorState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    edge: Option<String>,
    team: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    pub edge_id: String,
    pub team: Option<String>,
    pub region_hint: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    /// Places given out so far (the host and every guest that got a join token).
    pub participant_count: u32,
    pub require_approval: bool,
    pub max_participants: Option<u32>,
}

impl From<SessionRecord> for SessionView {
    fn from(s: SessionRecord) -> Self {
        SessionView {
            id: s.id,
            edge_id: s.edge_id,
            team: s.team,
            region_hint: s.region_hint,
            created_at: rfc3339_ms(s.created_at),
            started_at: s.started_at.map(rfc3339_ms),
            ended_at: s.ended_at.map(rfc3339_ms),
            end_reason: s.end_reason,
            participant_count: s.participant_count,
            require_approval: s.require_approval,
            max_participants: s.max_participants,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    /// Pass as `cursor` to read the next page; `null` when this is the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ParticipantView {
    pub participant_id: u32,
    pub role: &'static str,
    pub user_id: String,
    pub display_name: String,
    pub created_at: String,
}

impl From<ParticipantRecord> for ParticipantView {
    fn from(p: ParticipantRecord) -> Self {
        ParticipantView {
            participant_id: p.participant_id,
            role: p.role.as_str(),
            user_id: p.user_id,
            display_name: p.display_name,
            created_at: rfc3339_ms(p.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SessionDetail {
    pub session: SessionView,
    pub participants: Vec<ParticipantView>,
}

/// The checked list parameters.
pub fn parse(q: ListQuery) -> Result<(SessionFilter, u32, Option<SessionCursor>), ApiError> {
    let live = match q.state.as_deref() {
        None => None,
        Some("live") => Some(true),
        Some("ended") => Some(false),
        Some(other) => return Err(ApiError::BadRequest(format!("`state` {other:?} is not one of live, ended"))),
    };
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(s) => s.parse::<u32>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::BadRequest(format!("`limit` {s:?} must be a whole number from 1 to {MAX_LIMIT}"))
        })?,
    };
    let cursor = match q.cursor {
        None => None,
        Some(s) => Some(SessionCursor::parse(&s).ok_or_else(|| {
            ApiError::BadRequest(format!("`cursor` {s:?} is not a next_cursor from a previous answer"))
        })?),
    };
    let filter = SessionFilter { live, edge_id: text_param("edge", q.edge)?, team: text_param("team", q.team)? };
    Ok((filter, limit, cursor))
}

pub async fn list(
    State(state): State<Arc<LocatorState>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<SessionList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (filter, limit, cursor) = parse(q)?;
    let (records, next) = state.store.sessions_page(&filter, limit, cursor.as_ref()).await?;
    Ok(Json(SessionList {
        sessions: records.into_iter().map(SessionView::from).collect(),
        next_cursor: next.map(|c| c.encode()),
    }))
}

pub async fn show(
    State(state): State<Arc<LocatorState>>,
    Path(id): Path<String>,
) -> Result<Json<SessionDetail>, ApiError> {
    let session =
        state.store.session(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no session has id {id:?}")))?;
    let participants = state.store.participants(&id).await?;
    Ok(Json(SessionDetail {
        session: session.into(),
        participants: participants.into_iter().map(ParticipantView::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_are_checked() {
        let ok = parse(ListQuery { state: Some("live".into()), limit: Some("5".into()), ..Default::default() });
        let (filter, limit, cursor) = ok.unwrap();
        assert_eq!((filter.live, limit, cursor), (Some(true), 5, None));
        for bad in [
            ListQuery { state: Some("open".into()), ..Default::default() },
            ListQuery { limit: Some("0".into()), ..Default::default() },
            ListQuery { cursor: Some("nope".into()), ..Default::default() },
            ListQuery { team: Some(String::new()), ..Default::default() },
        ] {
            assert!(matches!(parse(bad), Err(ApiError::BadRequest(_))));
        }
        let c = SessionCursor { created_at: 12, id: "s_ab.c".into() };
        assert_eq!(SessionCursor::parse(&c.encode()), Some(c));
    }
}
