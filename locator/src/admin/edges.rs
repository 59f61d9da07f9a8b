//! `GET /edges`, `POST /edges/{id}/suspend`, `POST /edges/{id}/resume`,
//! `POST /edges/{id}/drain`, `PUT /edges/{id}/region`: the edges as placement sees them, and the
//! admin's levers on them.
//!
//! Suspend is soft: a suspended edge keeps its sessions and gets new ones only when no other
//! edge is available. Drain is a suspend with a deadline: when it passes, the locator replica
//! holding the edge's link tells the edge to end every session it still carries with close code
//! 4400 (ask the locator again), so the participants come back through placement to another
//! edge, and the edge takes no new sessions until resumed ([`crate::drain`]). Resume or suspend
//! ends a drain.
//! Changes are written to SQL (every replica follows within its edge refresh) and applied to this
//! replica's placement at once, and each is audited naming the admin.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{audit_action, rfc3339_ms, Principal};
use crate::api::ApiError;
use crate::db::{audit_kind, AdminState, EdgeRecord, Load, OutboxStatus};
use crate::LocatorState;

#[derive(Debug, Serialize)]
pub struct EdgeView {
    pub id: String,
    /// The region placement uses (the override if set, else the reported one).
    pub region: String,
    pub reported_region: String,
    pub region_override: Option<String>,
    pub public_url: String,
    pub build: String,
    pub admin_state: &'static str,
    /// When a draining edge's remaining sessions are ended; `null` unless draining.
    pub drain_deadline: Option<String>,
    /// When the deadline was acted on; `null` before (and unless draining).
    pub drained_at: Option<String>,
    /// When the edge said it is stopping (SIGTERM); `null` unless it is.
    pub stopping_since: Option<String>,
    pub health: &'static str,
    /// Whether the edge may take a new session now (ignoring its region and tier).
    pub available: bool,
    pub load: Load,
    pub capacity: Capacity,
    /// Sessions this replica placed there recently that heartbeats may not show yet.
    pub reserved_sessions: f64,
    /// The edge's outbox as of its last heartbeat: entries not yet stored here, and drops.
    pub outbox: OutboxStatus,
    /// Bumped at every registration of the edge's link.
    pub link_epoch: u64,
    pub last_heartbeat_at: String,
    pub registered_at: String,
}

#[derive(Debug, Serialize)]
pub struct Capacity {
    pub max_connections: u32,
    pub max_sessions: u32,
}

#[derive(Debug, Serialize)]
pub struct EdgeList {
    pub edges: Vec<EdgeView>,
}

fn view(state: &LocatorState, e: &EdgeRecord) -> EdgeView {
    let reserved = state.placer.reserved(&e.id);
    let input = crate::selector::Input { edge: e, reserved };
    let limits = state.placer.limits();
    let report = crate::selector::select(&[input], e.effective_region(), &[], limits, crate::tokens::now_ms());
    EdgeView {
        id: e.id.clone(),
        region: e.effective_region().to_owned(),
        reported_region: e.region.clone(),
        region_override: e.region_override.clone(),
        public_url: e.public_url.clone(),
        build: e.build.clone(),
        admin_state: e.admin_state.as_str(),
        drain_deadline: e.drain_deadline.map(rfc3339_ms),
        drained_at: e.drained_at.map(rfc3339_ms),
        stopping_since: e.stopping_since.map(rfc3339_ms),
        health: e.health.as_str(),
        available: report.candidates[0].filtered.is_none(),
        load: e.load,
        capacity: Capacity { max_connections: e.max_connections, max_sessions: e.max_sessions },
        reserved_sessions: reserved,
        outbox: e.outbox,
        link_epoch: e.link_epoch,
        last_heartbeat_at: rfc3339_ms(e.last_heartbeat_at),
        registered_at: rfc3339_ms(e.registered_at),
    }
}

/// Re-reads the edges so this replica places by the change at once, then answers `id`'s view.
async fn changed(state: &LocatorState, id: &str) -> Result<Json<EdgeView>, ApiError> {
    state.placer.refresh_edges(&state.store).await?;
    let edge = state.store.edge(id).await?.ok_or_else(|| unknown(id))?;
    Ok(Json(view(state, &edge)))
}

fn unknown(id: &str) -> ApiError {
    ApiError::NotFound(format!("no edge has id {id:?}"))
}

pub async fn list(State(state): State<Arc<LocatorState>>) -> Result<Json<EdgeList>, ApiError> {
    let edges = state.store.edges().await?;
    Ok(Json(EdgeList { edges: edges.iter().map(|e| view(&state, e)).collect() }))
}

async fn set_state(
    state: &LocatorState,
    by: &Principal,
    id: &str,
    admin_state: AdminState,
    deadline: Option<i64>,
) -> Result<Json<EdgeView>, ApiError> {
    if !state.store.set_admin_state(id, admin_state, deadline).await? {
        return Err(unknown(id));
    }
    tracing::info!(edge.id = %id, admin_state = admin_state.as_str(), principal = %by.name, "edge admin state changed");
    let (kind, detail) = match (admin_state, deadline) {
        (AdminState::Draining, Some(at)) => {
            (audit_kind::EDGE_DRAINING, format!("draining; remaining sessions end at {}", rfc3339_ms(at)))
        }
        (AdminState::Active, _) => (audit_kind::EDGE_RESUMED, "admin state set to active".to_owned()),
        _ => (audit_kind::EDGE_SUSPENDED, format!("admin state set to {}", admin_state.as_str())),
    };
    audit_action(state, by, kind, Some(id), detail).await?;
    changed(state, id).await
}

pub async fn suspend(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<EdgeView>, ApiError> {
    set_state(&state, &by, &id, AdminState::Suspended, None).await
}

pub async fn resume(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<EdgeView>, ApiError> {
    set_state(&state, &by, &id, AdminState::Active, None).await
}

/// The longest drain deadline: a day. Longer is a suspend.
pub const MAX_DRAIN_SECONDS: u64 = 24 * 3600;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Seconds from now until the edge's remaining sessions are ended (1 to a day).
    pub deadline_seconds: u64,
}

pub async fn drain(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EdgeView>, ApiError> {
    let body: DrainBody = crate::api::body::parse_json(&headers, body)?;
    if !(1..=MAX_DRAIN_SECONDS).contains(&body.deadline_seconds) {
        return Err(ApiError::BadRequest(format!(
            "`deadline_seconds` {} must be from 1 to {MAX_DRAIN_SECONDS} (a day)",
            body.deadline_seconds
        )));
    }
    let deadline = crate::tokens::now_ms() + body.deadline_seconds as i64 * 1000;
    set_state(&state, &by, &id, AdminState::Draining, Some(deadline)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionBody {
    /// The region to move the edge to; `null` (or absent) clears the override.
    #[serde(default)]
    pub region: Option<String>,
}

pub async fn set_region(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EdgeView>, ApiError> {
    let body: RegionBody = crate::api::body::parse_json(&headers, body)?;
    if let Some(region) = &body.region {
        crate::geo::validate_region_name(region).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    if !state.store.set_region_override(&id, body.region.as_deref()).await? {
        return Err(unknown(&id));
    }
    tracing::info!(edge.id = %id, region = ?body.region, "edge region override changed");
    let detail = match &body.region {
        Some(region) => format!("region override set to {region}"),
        None => "region override cleared".to_owned(),
    };
    audit_action(&state, &by, audit_kind::EDGE_REGION_SET, Some(&id), detail).await?;
    changed(&state, &id).await
}
