//! `POST /api/v1/sessions` (start a session as host) and `POST /api/v1/sessions/{id}/join`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use duet_proto::session::Role;
use duet_proto::token::Claims;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use super::ApiError;
use crate::access::Client;
use crate::db::{EdgeRecord, Health, NewParticipant, NewSession, PlacementRecord};
use crate::ice::IceServer;
use crate::placement::recorder::RecordError;
use crate::tokens::now_ms;
use crate::LocatorState;

/// The optional body of both endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    pub team: Option<String>,
    pub user: Option<UserInfo>,
    pub region: Option<String>,
    /// Session options (create only).
    pub options: Option<SessionOptions>,
}

/// What the host chooses for its session.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionOptions {
    /// Guests wait for the host to admit them.
    #[serde(default)]
    pub require_approval: bool,
    /// The most participants at once, 2-10000 (the edge's own limit applies too).
    pub max_participants: Option<u32>,
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
    /// On creation: the region the client was placed in and the one that serves it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionInfo>,
    /// STUN and TURN servers for WebRTC media, as `RTCIceServer`s; TURN credentials are this
    /// participant's ([`crate::ice`]). Always present, empty when none are configured.
    pub ice_servers: Vec<IceServer>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RegionInfo {
    /// The client's region (rules, GeoIP, default, or the request's `region`).
    pub wanted: String,
    /// The region of the edge that serves the session.
    pub served: String,
    /// True when `served` differs from `wanted` (the wanted region had no available edge).
    pub fallback: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeInfo {
    pub id: String,
    pub region: String,
    /// Full websocket URL of the session on its edge.
    pub url: String,
}

pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > max {
        return Err(ApiError::BadRequest(format!("`{field}` must be 1 to {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!("`{field}` must not contain control characters")));
    }
    Ok(())
}

/// Parses and checks the optional JSON body of both endpoints.
fn parse_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<PlacementRequest, ApiError> {
    let req: PlacementRequest = super::body::parse_json(headers, body)?;
    if let Some(team) = &req.team {
        check_len("team", team, 128)?;
    }
    if let Some(user) = &req.user {
        check_len("user.id", &user.id, 256)?;
        check_len("user.name", &user.name, 256)?;
    }
    if let Some(region) = &req.region {
        crate::geo::validate_region_name(region).map_err(|e| ApiError::BadRequest(format!("`region`: {e}")))?;
    }
    if let Some(max) = req.options.and_then(|o| o.max_participants) {
        if !(2..=10_000).contains(&max) {
            return Err(ApiError::BadRequest("`options.max_participants` must be between 2 and 10000".into()));
        }
    }
    Ok(req)
}

fn session_url(edge: &EdgeRecord, session_id: &str) -> String {
    format!("{}{}/{}", edge.public_url.trim_end_matches('/'), "/v1/sessions", session_id)
}

/// Signs `claims`; answers the token and its expiry as RFC 3339 (UTC).
pub(crate) fn sign(state: &LocatorState, claims: Claims) -> Result<(String, String), ApiError> {
    let (token, exp) = state.signer().sign(claims)?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(exp as i64)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| ApiError::Internal(format!("expiry {exp} not representable")))?;
    Ok((token, expires_at))
}

/// Seconds since the Unix epoch, the clock TURN credentials' expiries are on.
fn unix_now() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or(0)
}

fn answer(
    state: &LocatorState,
    session_id: &str,
    team: Option<String>,
    options: SessionOptions,
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
        appr: options.require_approval,
        maxp: options.max_participants,
        edge: edge.id.clone(),
        iat: 0,
        exp: 0,
    };
    let (token, expires_at) = sign(state, claims)?;
    Ok(PlacementAnswer {
        session_id: session_id.to_owned(),
        participant_id,
        role: participant.role.as_str().to_owned(),
        edge: EdgeInfo {
            id: edge.id.clone(),
            region: edge.effective_region().to_owned(),
            url: session_url(edge, session_id),
        },
        token,
        expires_at,
        region: None,
        ice_servers: crate::ice::servers(&state.config, session_id, participant_id, unix_now()),
    })
}

/// The participant a request describes: the identity provider's user when the client has one,
/// else the request's `user`, else a made-up id and a name derived from it (`Host`, or `Guest`
/// and the id's first four characters), so token and database agree.
fn participant(req: &PlacementRequest, client: &Client, role: Role) -> NewParticipant {
    let (user_id, display_name) = match (client.user(), &req.user) {
        (Some(vouched), _) => vouched,
        (None, Some(u)) => (u.id.clone(), u.name.clone()),
        (None, None) => {
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = place(&state, peer, headers, body).await;
    state.metrics.placement(crate::metrics::Outcome::of(&result), started);
    result
}

async fn place(
    state: &Arc<LocatorState>,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let client_ip = crate::client_addr::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    let client = crate::access::admit(state, &headers, client_ip).await?;
    let mut req = parse_body(&headers, body)?;
    req.team = client.session_team(req.team.take())?;
    let decision = state.placer.place(Some(client_ip), req.region.as_deref(), true);
    let Some(edge) = decision.edge else {
        tracing::warn!(client.ip = %client_ip, region = %decision.explanation.wanted_region, "no edge available");
        return Err(ApiError::NoEdgeAvailable);
    };
    let explanation = decision.explanation;
    let now = now_ms();
    let session_id = crate::ids::session_id();
    let host = participant(&req, &client, Role::Host);
    let options = req.options.unwrap_or_default();
    let body = answer(state, &session_id, req.team.clone(), options, &edge, 1, &host)?;
    let body = PlacementAnswer {
        region: Some(RegionInfo {
            wanted: explanation.wanted_region.clone(),
            served: edge.effective_region().to_owned(),
            fallback: explanation.fallback,
        }),
        ..body
    };
    let record = PlacementRecord {
        session: NewSession {
            id: session_id.clone(),
            edge_id: edge.id.clone(),
            team: req.team,
            region_hint: req.region,
            created_at: now,
            require_approval: options.require_approval,
            max_participants: options.max_participants,
        },
        host,
        client_ip: Some(client_ip.to_string()),
        wanted_region: explanation.wanted_region.clone(),
        served_region: edge.effective_region().to_owned(),
        explanation: serde_json::to_vec(&explanation)
            .map_err(|e| ApiError::Internal(format!("explanation not serializable: {e}")))?,
    };
    state.recorder.record(record).await.map_err(|e| match e {
        RecordError::Closed => ApiError::NotReady,
        RecordError::Store(e) => ApiError::Internal(format!("store: {e}")),
    })?;
    tracing::debug!(session.id = %session_id, edge.id = %edge.id, region = %explanation.wanted_region, "session placed");
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Joins go to the session's edge while it is up, and for `link_grace` after its link was lost
/// while it still answers its health probe; an unavailable edge's sessions have been ended.
pub(crate) fn check_joinable(state: &LocatorState, edge: &EdgeRecord) -> Result<(), ApiError> {
    match edge.health {
        Health::Up => Ok(()),
        Health::LinkLost => {
            let grace_ms = i64::try_from(state.config.link_grace.as_millis()).unwrap_or(i64::MAX);
            if now_ms().saturating_sub(edge.health_changed_at) <= grace_ms {
                Ok(())
            } else {
                Err(ApiError::EdgeUnreachable(format!(
                    "edge {} lost its link to the locator more than {} s ago; retry later",
                    edge.id,
                    state.config.link_grace.as_secs()
                )))
            }
        }
        Health::Unavailable => Err(ApiError::EdgeUnreachable(format!("edge {} is unavailable", edge.id))),
    }
}

pub async fn join(
    State(state): State<Arc<LocatorState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session_id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let client_ip = crate::client_addr::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    let client = crate::access::admit(&state, &headers, client_ip).await?;
    // A path that is not UTF-8 names no session.
    let Path(session_id) =
        session_id.map_err(|_| ApiError::NotFound("no session has such an id (the path is not UTF-8)".into()))?;
    let req = parse_body(&headers, body)?;
    if session_id.len() > 64 {
        return Err(ApiError::NotFound("no session has an id that long".into()));
    }
    let session = state
        .store
        .session(&session_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("session {session_id} does not exist")))?;
    client.may_use_team(session.team.as_deref())?;
    if session.ended_at.is_some() {
        return Err(ApiError::SessionEnded(format!("session {session_id} has ended")));
    }
    let edge =
        state.store.edge(&session.edge_id).await?.ok_or_else(|| {
            ApiError::Internal(format!("session {session_id} is on unknown edge {}", session.edge_id))
        })?;
    check_joinable(&state, &edge)?;
    let guest = participant(&req, &client, Role::Guest);
    let id = state
        .store
        .add_participant(&session_id, &guest)
        .await?
        .ok_or_else(|| ApiError::SessionEnded(format!("session {session_id} has ended")))?;
    let options =
        SessionOptions { require_approval: session.require_approval, max_participants: session.max_participants };
    let body = answer(&state, &session_id, session.team, options, &edge, id, &guest)?;
    Ok((StatusCode::OK, Json(body)).into_response())
}
