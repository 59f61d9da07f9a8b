//! The admin API under `/api/v1/admin`: edges (list, suspend, resume, region override), regions
//! (rules, fallback orders, GeoIP reload), placement (dry run, stored explanations) and the
//! audit and metrics entries. One file per area; the admin CLI and, later, the dashboard call
//! the same routes.
//!
//! Every change an admin makes (suspend, resume, region override, rules, fallback orders) is
//! written to the audit log with actor `admin` ([`audit_action`]): the static admin token has no
//! name yet, so the log cannot say which admin.
//!
//! Every route requires `Authorization: Bearer <admin token>`. The token comes from
//! `DUET_ADMIN_TOKEN`/`_FILE` or is generated into `<data_dir>/admin-token`; presented tokens are
//! compared by their SHA-256 digests in constant time, so neither content nor length leaks
//! through timing. Errors use the one JSON shape of [`crate::api::error`].

pub mod audit;
pub mod edges;
pub mod placement;
pub mod regions;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::db::{LocatorAuditEntry, ACTOR_ADMIN};
use crate::LocatorState;

/// The admin token, kept only as its digest.
pub struct AdminToken {
    digest: [u8; 32],
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken { digest: sha256(token.as_bytes()) }
    }

    /// True if `presented` is the token (constant time).
    pub fn verify(&self, presented: &[u8]) -> bool {
        bool::from(sha256(presented).ct_eq(&self.digest))
    }
}

/// Refuses a request without the admin token with 401 before any handler runs.
async fn require_admin(State(state): State<Arc<LocatorState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(|t| t.trim_ascii());
    match presented {
        Some(t) if state.admin_token.verify(t) => next.run(req).await,
        _ => {
            tracing::info!(path = %req.uri().path(), "admin request refused: missing or wrong token");
            ApiError::Unauthorized.into_response()
        }
    }
}

/// The admin routes, relative to `/api/v1/admin`.
pub fn router(state: Arc<LocatorState>) -> Router<Arc<LocatorState>> {
    Router::new()
        .route("/edges", get(edges::list))
        .route("/edges/{edge_id}/suspend", post(edges::suspend))
        .route("/edges/{edge_id}/resume", post(edges::resume))
        .route("/edges/{edge_id}/region", put(edges::set_region))
        .route("/regions", get(regions::list))
        .route("/regions/rules", post(regions::add_rule))
        .route("/regions/rules/{rule_id}", delete(regions::remove_rule))
        .route("/regions/{region}/fallback", put(regions::set_fallback))
        .route("/geoip/reload", post(regions::reload_geoip))
        .route("/placement/dry-run", post(placement::dry_run))
        .route("/sessions/{session_id}/placement", get(placement::explanation))
        .route("/audit", get(audit::list_audit))
        .route("/metrics", get(audit::list_metrics))
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin))
}

/// Records an admin's change in the audit log, after the change is made. An audit entry must
/// not be lost silently: when it cannot be stored, the request fails with 500 and the cause is
/// logged, although the change itself stays made (the admin sees the failure and can check; a
/// repeated change is harmless: a no-op, or refused with 404 or 409).
pub async fn audit_action(
    state: &LocatorState,
    kind: &str,
    edge_id: Option<&str>,
    detail: String,
) -> Result<(), ApiError> {
    let entry = LocatorAuditEntry {
        at_ms: crate::tokens::now_ms(),
        kind: kind.to_owned(),
        edge_id: edge_id.map(str::to_owned),
        session_id: None,
        actor: ACTOR_ADMIN.to_owned(),
        detail,
    };
    state
        .store
        .insert_audit(&entry)
        .await
        .map_err(|e| ApiError::Internal(format!("{kind} was applied but its audit entry was not stored: {e}")))
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_digest() {
        let t = AdminToken::new("correct-horse-battery-staple");
        assert!(t.verify(b"correct-horse-battery-staple"));
        assert!(!t.verify(b"correct-horse-battery-stapl"));
        assert!(!t.verify(b""));
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
