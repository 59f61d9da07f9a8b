//! `POST /api/v1/sessions` (start a session as host) and `POST /api/v1/sessions/{id}/join`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use duet_proto::session::Role;
use duet_proto::token::Claims;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use super::{ApiError, MAX_BODY_BYTES};
use crate::db::{EdgeRecord, NewParticipant, NewSession};
use crate::tokens::now_ms;
use crate::LocatorState;

/// The optional body of both endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    pub team: Option<String>,
    pub user: Option<UserInfo>,
    pub region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PlacementAnswer {
    pub session_id: String,
    pub participant_id: u32,
    pub role: String,
    pub edge: EdgeInfo,
    pub token: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeInfo {
    pub id: String,
    pub region: String,
    /// Full websocket URL of the session on its edge.
    pub url: String,
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::BadRequest(format!("`{field}` must be 1 to {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("`{field}` must not contain control characters")));
    }
    Ok(())
}

/// Parses the optional JSON body: empty is `{}`; anything else must be JSON.
fn parse_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<PlacementRequest, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(MAX_BODY_BYTES)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PlacementRequest::default());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType(format!("content type {mime:?} is not application/json")));
        }
    }
    let req: PlacementRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    if let Some(team) = &req.team {
        check_len("team", team, 128)?;
    }
    if let Some(user) = &req.user {
        check_len("user.id", &user.id, 256)?;
        check_len("user.name", &user.name, 256)?;
    }
    if let Some(region) = &req.region {
        check_len("region", region, 64)?;
    }
    Ok(req)
}

fn session_url(edge: &EdgeRecord, session_id: &str) -> String {
    format!("{}{}/{}", edge.public_url.trim_end_matches('/'), "/v1/sessions", session_id)
}

fn answer(
    state: &LocatorState,
    session_id: &str,
    team: Option<String>,
    edge: &EdgeRecord,
    participant_id: u32,
    participant: &NewParticipant,
) -> Result<PlacementAnswer, ApiError> {
    let claims = Claims {
        sid: session_id.to_owned(),
        role: participant.role.as_str().to_owned(),
        pid: participant_id,
        sub: participant.user_id.clone(),
        name: participant.display_name.clone(),
        team,
        edge: edge.id.clone(),
        iat: 0,
        exp: 0,
    };
    let (token, exp) = state.signer().sign(claims)?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(exp as i64)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| ApiError::Internal(format!("expiry {exp} not representable")))?;
    Ok(PlacementAnswer {
        session_id: session_id.to_owned(),
        participant_id,
        role: participant.role.as_str().to_owned(),
        edge: EdgeInfo { id: edge.id.clone(), region: edge.region.clone(), url: session_url(edge, session_id) },
        token,
        expires_at,
    })
}

/// The participant a request describes; without `user`, a made-up id and a name derived from it
/// (`Host`, or `Guest` and the id's first four characters), so token and database agree.
fn participant(req: &PlacementRequest, role: Role) -> NewParticipant {
    let (user_id, display_name) = match &req.user {
        Some(u) => (u.id.clone(), u.name.clone()),
        None => {
            let suffix = crate::ids::random_id(10);
            let name = match role {
                Role::Host => "Host".to_owned(),
                Role::Guest => format!("Guest {}", &suffix[..4]),
            };
            (format!("anon-{suffix}"), name)
        }
    };
    NewParticipant { role, user_id, display_name, created_at: now_ms() }
}

pub async fn create(
    State(state): State<Arc<LocatorState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = parse_body(&headers, body)?;
    let now = now_ms();
    let edges = state.store.edges().await?;
    let edge = crate::selector::choose(&edges, now, state.config.heartbeat_timeout, req.region.as_deref())
        .ok_or(ApiError::NoEdgeAvailable)?
        .clone();
    let session_id = crate::ids::session_id();
    let host = participant(&req, Role::Host);
    let new = NewSession {
        id: session_id.clone(),
        edge_id: edge.id.clone(),
        team: req.team.clone(),
        region_hint: req.region.clone(),
        created_at: now,
    };
    state.store.create_session(&new, &host).await?;
    let body = answer(&state, &session_id, req.team, &edge, 1, &host)?;
    tracing::info!(session.id = %session_id, edge.id = %edge.id, "session placed");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn join(
    State(state): State<Arc<LocatorState>>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req = parse_body(&headers, body)?;
    if session_id.len() > 64 {
        return Err(ApiError::NotFound("no session has an id that long".into()));
    }
    let session = state
        .store
        .session(&session_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("session {session_id} does not exist")))?;
    if session.ended_at.is_some() {
        return Err(ApiError::SessionEnded(format!("session {session_id} has ended")));
    }
    let edge =
        state.store.edge(&session.edge_id).await?.ok_or_else(|| {
            ApiError::Internal(format!("session {session_id} is on unknown edge {}", session.edge_id))
        })?;
    let guest = participant(&req, Role::Guest);
    let id = state
        .store
        .add_participant(&session_id, &guest)
        .await?
        .ok_or_else(|| ApiError::SessionEnded(format!("session {session_id} has ended")))?;
    let body = answer(&state, &session_id, session.team, &edge, id, &guest)?;
    Ok((StatusCode::OK, Json(body)).into_response())
}
