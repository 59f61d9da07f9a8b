//! `POST /placement/dry-run` (where would a client at this address go, and why, without placing
//! anything) and `GET /sessions/{id}/placement` (why a session went where it went).

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::ApiError;
use crate::placement::Explanation;
use crate::LocatorState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// The client address to place (IPv4 or IPv6); absent: the default region.
    pub client_ip: Option<String>,
    /// A region the client asks for, as in `POST /api/v1/sessions`.
    pub region: Option<String>,
}

pub async fn dry_run(
    State(state): State<Arc<LocatorState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Explanation>, ApiError> {
    let req: DryRun = crate::api::body::parse_json(&headers, body)?;
    let ip = match &req.client_ip {
        Some(s) => Some(
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| ApiError::BadRequest(format!("`client_ip` {s:?} is not an IPv4 or IPv6 address")))?,
        ),
        None => None,
    };
    if let Some(region) = &req.region {
        crate::geo::validate_region_name(region).map_err(|e| ApiError::BadRequest(format!("`region`: {e}")))?;
    }
    Ok(Json(state.placer.place(ip, req.region.as_deref(), false).explanation))
}

pub async fn explanation(
    State(state): State<Arc<LocatorState>>,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let row = state
        .store
        .placement(&session_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no placement is recorded for session {session_id:?}")))?;
    let explanation: serde_json::Value = serde_json::from_slice(&row.explanation)
        .map_err(|e| ApiError::Internal(format!("stored explanation of {session_id} is not JSON: {e}")))?;
    let body = serde_json::json!({
        "session_id": row.session_id,
        "edge_id": row.edge_id,
        "created_at": super::rfc3339_ms(row.created_at),
        "explanation": explanation,
    });
    Ok(Json(body).into_response())
}
