//! The locator's public HTTP surface: the placement API (`/api/v1/sessions`), team presence
//! (`/api/v1/teams/{team}/presence`), health
//! (`/livez`, `/readyz`), the edges' link endpoint (`/link/v1`) and the admin API
//! (`/api/v1/admin`, in [`crate::admin`]). One file per area.

pub mod body;
pub mod error;
pub mod health;
pub mod presence;
pub mod sessions;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::LocatorState;
pub use error::ApiError;

/// Request bodies are small JSON documents; 64 KiB is generous and bounds memory per request.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: Arc<LocatorState>) -> Router {
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/sessions", post(sessions::create))
        .route("/api/v1/sessions/{session_id}/join", post(sessions::join))
        .route("/api/v1/teams/{team}/presence", get(presence::presence))
        .route(duet_proto::link::LINK_PATH, get(crate::link::accept))
        .nest("/api/v1/admin", crate::admin::router(state.clone()))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
