//! `GET /regions`, `POST /regions/rules`, `DELETE /regions/rules/{id}`,
//! `PUT /regions/{region}/fallback`, `POST /geoip/reload`: where clients are placed.
//!
//! Rules are validated and normalized before they are stored (a malformed CIDR, an unknown
//! country or continent code, or a rule that repeats an existing one is refused with a message
//! naming the problem, and nothing changes). A GeoIP reload that fails keeps the database in use.
//! Changes apply to this replica at once and reach the others within their rules refresh; each
//! is audited.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{audit_action, rfc3339_ms, Principal};
use crate::api::ApiError;
use crate::db::{audit_kind, RegionRuleRecord};
use crate::geo::{self, GeoIp, RuleKind};
use crate::LocatorState;

/// Fallback orders longer than this make no sense (and bound the stored list).
const MAX_FALLBACK_REGIONS: usize = 32;

#[derive(Debug, Serialize)]
pub struct RuleView {
    pub id: i64,
    pub kind: String,
    #[serde(rename = "match")]
    pub matcher: String,
    pub region: String,
    pub created_at: String,
}

fn rule_view(r: RegionRuleRecord) -> RuleView {
    RuleView { id: r.id, kind: r.kind, matcher: r.matcher, region: r.region, created_at: rfc3339_ms(r.created_at) }
}

/// A rule as the audit log tells it: `rule 3: cidr 10.0.0.0/8 -> eu`.
fn describe_rule(r: &RegionRuleRecord) -> String {
    format!("rule {}: {} {} -> {}", r.id, r.kind, r.matcher, r.region)
}

#[derive(Debug, Serialize)]
pub struct GeoIpView {
    pub path: String,
    pub database_type: String,
    pub build_epoch: u64,
}

fn geoip_view(db: &GeoIp) -> GeoIpView {
    GeoIpView {
        path: db.path().display().to_string(),
        database_type: db.database_type().to_owned(),
        build_epoch: db.build_epoch(),
    }
}

#[derive(Debug, Default, Serialize)]
pub struct RegionView {
    pub name: String,
    pub edges: Vec<String>,
    pub fallback: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RegionsView {
    pub default_region: String,
    pub geoip: Option<GeoIpView>,
    /// Every region that has an edge, a rule, a fallback order or is the default.
    pub regions: Vec<RegionView>,
    pub rules: Vec<RuleView>,
}

pub async fn list(State(state): State<Arc<LocatorState>>) -> Result<Json<RegionsView>, ApiError> {
    let edges = state.store.edges().await?;
    let rules = state.store.region_rules().await?;
    let fallbacks = state.store.region_fallbacks().await?;
    let mut regions: BTreeMap<String, RegionView> = BTreeMap::new();
    fn region<'a>(regions: &'a mut BTreeMap<String, RegionView>, name: &str) -> &'a mut RegionView {
        regions.entry(name.to_owned()).or_insert_with(|| RegionView { name: name.to_owned(), ..Default::default() })
    }
    region(&mut regions, state.placer.default_region());
    for e in &edges {
        region(&mut regions, e.effective_region()).edges.push(e.id.clone());
    }
    for r in &rules {
        region(&mut regions, &r.region);
    }
    for f in fallbacks {
        region(&mut regions, &f.region).fallback = f.fallback;
    }
    Ok(Json(RegionsView {
        default_region: state.placer.default_region().to_owned(),
        geoip: state.placer.geoip().as_deref().map(geoip_view),
        regions: regions.into_values().collect(),
        rules: rules.into_iter().map(rule_view).collect(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    pub kind: String,
    #[serde(rename = "match")]
    pub matcher: String,
    pub region: String,
}

pub async fn add_rule(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let rule: NewRule = crate::api::body::parse_json(&headers, body)?;
    let kind = RuleKind::parse(&rule.kind).ok_or_else(|| {
        ApiError::BadRequest(format!("`kind` {:?} is not one of cidr, country, continent", rule.kind))
    })?;
    let matcher = geo::normalize_matcher(kind, &rule.matcher).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    geo::validate_region_name(&rule.region).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match state.store.insert_region_rule(kind.as_str(), &matcher, &rule.region, crate::tokens::now_ms()).await? {
        Ok(created) => {
            tracing::info!(rule.id = created.id, kind = kind.as_str(), matcher = %matcher, region = %created.region, "region rule added");
            audit_action(&state, &by, audit_kind::REGION_RULE_ADDED, None, describe_rule(&created)).await?;
            state.placer.refresh_rules(&state.store).await?;
            Ok((StatusCode::CREATED, Json(rule_view(created))).into_response())
        }
        Err(existing) => Err(ApiError::Conflict(format!(
            "{} {} already maps to region {} (rule {}); remove that rule first",
            existing.kind, existing.matcher, existing.region, existing.id
        ))),
    }
}

pub async fn remove_rule(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: i64 = id.parse().map_err(|_| ApiError::NotFound(format!("no region rule has id {id:?}")))?;
    // Read first, so the audit entry says what the rule was.
    let rule = state.store.region_rules().await?.into_iter().find(|r| r.id == id);
    if !state.store.delete_region_rule(id).await? {
        return Err(ApiError::NotFound(format!("no region rule has id {id}")));
    }
    tracing::info!(rule.id = id, "region rule removed");
    let detail = rule.as_ref().map_or_else(|| format!("rule {id}"), describe_rule);
    audit_action(&state, &by, audit_kind::REGION_RULE_DELETED, None, detail).await?;
    state.placer.refresh_rules(&state.store).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackBody {
    pub fallback: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FallbackView {
    pub region: String,
    pub fallback: Vec<String>,
}

pub async fn set_fallback(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(region): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FallbackView>, ApiError> {
    let body: FallbackBody = crate::api::body::parse_json(&headers, body)?;
    geo::validate_region_name(&region).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if body.fallback.len() > MAX_FALLBACK_REGIONS {
        return Err(ApiError::BadRequest(format!("at most {MAX_FALLBACK_REGIONS} fallback regions")));
    }
    for (i, r) in body.fallback.iter().enumerate() {
        geo::validate_region_name(r).map_err(|e| ApiError::BadRequest(format!("fallback[{i}]: {e}")))?;
        if *r == region {
            return Err(ApiError::BadRequest(format!("region {region} cannot fall back to itself")));
        }
        if body.fallback[..i].contains(r) {
            return Err(ApiError::BadRequest(format!("region {r} appears twice in the fallback order")));
        }
    }
    state.store.set_region_fallback(&region, &body.fallback, crate::tokens::now_ms()).await?;
    tracing::info!(region = %region, fallback = ?body.fallback, "region fallback order set");
    let detail = if body.fallback.is_empty() {
        format!("region {region}: fallback order cleared")
    } else {
        format!("region {region} falls back to {}", body.fallback.join(", "))
    };
    audit_action(&state, &by, audit_kind::REGION_FALLBACK_SET, None, detail).await?;
    state.placer.refresh_rules(&state.store).await?;
    Ok(Json(FallbackView { region, fallback: body.fallback }))
}

/// Re-reads the configured GeoIP database (after the operator replaced the file). A missing or
/// broken file is refused and the database in use stays.
pub async fn reload_geoip(State(state): State<Arc<LocatorState>>) -> Result<Json<GeoIpView>, ApiError> {
    let Some(path) = state.config.geoip_database.clone() else {
        return Err(ApiError::BadRequest("no geoip_database is configured".into()));
    };
    let loaded = tokio::task::spawn_blocking(move || GeoIp::open(&path))
        .await
        .map_err(|e| ApiError::Internal(format!("geoip reload task: {e}")))?;
    match loaded {
        Ok(db) => {
            let view = geoip_view(&db);
            tracing::info!(path = %view.path, database_type = %view.database_type, "geoip database reloaded");
            state.placer.set_geoip(Some(Arc::new(db)));
            Ok(Json(view))
        }
        Err(e) => {
            tracing::warn!(error = %e, "geoip reload refused; keeping the database in use");
            Err(ApiError::BadRequest(format!("{e}; the database in use is unchanged")))
        }
    }
}
