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

use axum::Router;

use crate::LocatorState;
pub use error::ApiError;

/// Request bodies are small JSON documents; 64 KiB is generous and bounds memory per request.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Declares a router function and the list of its routes, `(method, path)`, from one table, so
/// the list (checked against the OpenAPI document by a test) cannot miss a route.
macro_rules! routes {
    ($(#[$doc:meta])* $name:ident, $list:ident; $($method:ident $path:expr => $handler:expr),* $(,)?) => {
        /// The routes of the router of the same table, `(method, path)`.
        pub const $list: &[(&str, &str)] = &[$((stringify!($method), $path)),*];
        $(#[$doc])*
        fn $name() -> axum::Router<std::sync::Arc<crate::LocatorState>> {
            axum::Router::new()
                $(.route($path, axum::routing::on(axum::routing::MethodFilter::$method, $handler)))*
        }
    };
}
pub(crate) use routes;

routes! {
    /// The public routes (the admin API is nested under `/api/v1/admin`).
    public_routes, ROUTES;
    GET "/livez" => health::livez,
    GET "/readyz" => health::readyz,
    POST "/api/v1/sessions" => sessions::create,
    POST "/api/v1/sessions/{session_id}/join" => sessions::join,
    GET "/api/v1/teams/{team}/presence" => presence::presence,
    GET "/api/v1/openapi.json" => openapi,
    GET duet_proto::link::LINK_PATH => crate::link::accept,
}

/// The OpenAPI document of every HTTP route, `docs/openapi.json`, embedded at build time.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub fn router(state: Arc<LocatorState>) -> Router {
    public_routes()
        .nest("/api/v1/admin", crate::admin::router(state.clone()))
        .merge(crate::dashboard::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
