//! The admin API under `/api/v1/admin`: edges (list, suspend, resume, drain, region override),
//! regions (rules, fallback orders, GeoIP reload), placement (dry run, stored explanations),
//! sessions (live and past), the audit log, metrics entries and the usage series, the named
//! API tokens and the teams' client keys. One file per area; the admin CLI and the dashboard call the same routes, and
//! `docs/openapi.json` (served at `/api/v1/openapi.json`) describes every one of them.
//!
//! Every route requires a principal ([`auth`]): `read` scope for reading, `admin` scope for
//! changes and tokens. Every change an admin makes is written to the audit log naming the
//! principal ([`audit_action`]). Errors use the one JSON shape of [`crate::api::error`].

pub mod audit;
pub mod auth;
pub mod client_keys;
pub mod edges;
pub mod placement;
pub mod regions;
pub mod sessions;
pub mod tokens;
pub mod usage;

use std::sync::Arc;

use axum::Router;

pub use auth::{Principal, Scope};

use crate::api::ApiError;
use crate::db::LocatorAuditEntry;
use crate::LocatorState;

crate::api::routes! {
    /// The admin routes, relative to `/api/v1/admin`, without their authentication layer.
    admin_routes, ROUTES;
    GET "/edges" => edges::list,
    POST "/edges/{edge_id}/suspend" => edges::suspend,
    POST "/edges/{edge_id}/resume" => edges::resume,
    POST "/edges/{edge_id}/drain" => edges::drain,
    PUT "/edges/{edge_id}/region" => edges::set_region,
    GET "/regions" => regions::list,
    POST "/regions/rules" => regions::add_rule,
    DELETE "/regions/rules/{rule_id}" => regions::remove_rule,
    PUT "/regions/{region}/fallback" => regions::set_fallback,
    POST "/geoip/reload" => regions::reload_geoip,
    POST "/placement/dry-run" => placement::dry_run,
    GET "/sessions" => sessions::list,
    GET "/sessions/{session_id}" => sessions::show,
    GET "/sessions/{session_id}/placement" => placement::explanation,
    GET "/audit" => audit::list_audit,
    GET "/metrics" => audit::list_metrics,
    GET "/usage" => usage::series,
    GET "/tokens" => tokens::list,
    POST "/tokens" => tokens::create,
    DELETE "/tokens/{token_id}" => tokens::revoke,
    GET "/client-keys" => client_keys::list,
    POST "/client-keys" => client_keys::create,
    DELETE "/client-keys/{key_id}" => client_keys::revoke,
}

/// The admin routes, relative to `/api/v1/admin`, each behind [`auth::require`].
pub fn router(state: Arc<LocatorState>) -> Router<Arc<LocatorState>> {
    admin_routes().route_layer(axum::middleware::from_fn_with_state(state, auth::require))
}

/// Records an admin's change in the audit log, naming the principal, after the change is made.
/// An audit entry must not be lost silently: when it cannot be stored, the request fails with
/// 500 and the cause is logged, although the change itself stays made (the admin sees the
/// failure and can check; a repeated change is harmless: a no-op, or refused with 404 or 409).
pub async fn audit_action(
    state: &LocatorState,
    by: &Principal,
    kind: &str,
    edge_id: Option<&str>,
    detail: String,
) -> Result<(), ApiError> {
    let entry = LocatorAuditEntry {
        at_ms: crate::tokens::now_ms(),
        kind: kind.to_owned(),
        edge_id: edge_id.map(str::to_owned),
        session_id: None,
        actor: by.name.clone(),
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
    fn times_as_rfc3339() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
