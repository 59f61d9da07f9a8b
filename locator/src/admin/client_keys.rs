//! `GET /client-keys`, `POST /client-keys`, `DELETE /client-keys/{id}`: the per-team keys IDE
//! plugins present when the locator runs with `client_auth = keys` ([`crate::access`]). A key is
//! shown once, in the answer that creates it; the locator keeps its SHA-256 digest. Revoking
//! refuses the key at once on every replica (keys are checked against the database on every
//! request); sessions already running are not affected.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::{mint_secret, sha256, Principal};
use super::tokens::validate_name;
use super::{audit_action, rfc3339_ms};
use crate::access::CLIENT_KEY_PREFIX;
use crate::api::sessions::check_len;
use crate::api::ApiError;
use crate::db::{audit_kind, ClientKeyRecord};
use crate::LocatorState;

#[derive(Debug, Serialize)]
pub struct ClientKeyView {
    pub id: String,
    pub team: String,
    pub name: String,
    pub created_at: String,
    pub created_by: String,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<ClientKeyRecord> for ClientKeyView {
    fn from(k: ClientKeyRecord) -> Self {
        ClientKeyView {
            id: k.id,
            team: k.team,
            name: k.name,
            created_at: rfc3339_ms(k.created_at),
            created_by: k.created_by,
            revoked_at: k.revoked_at.map(rfc3339_ms),
            last_used_at: k.last_used_at.map(rfc3339_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClientKeyList {
    pub client_keys: Vec<ClientKeyView>,
}

#[derive(Debug, Serialize)]
pub struct CreatedClientKey {
    /// The key itself: shown this once, never stored.
    pub key: String,
    #[serde(flatten)]
    pub view: ClientKeyView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    team: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClientKey {
    pub team: String,
    pub name: String,
}

pub async fn list(
    State(state): State<Arc<LocatorState>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ClientKeyList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let keys = state.store.client_keys(q.team.as_deref()).await?;
    Ok(Json(ClientKeyList { client_keys: keys.into_iter().map(ClientKeyView::from).collect() }))
}

pub async fn create(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let new: NewClientKey = crate::api::body::parse_json(&headers, body)?;
    check_len("team", &new.team, 128)?;
    validate_name(&new.name)?;
    let (id, key) = mint_secret(CLIENT_KEY_PREFIX);
    let record = ClientKeyRecord {
        id,
        team: new.team.clone(),
        name: new.name.clone(),
        digest: sha256(key.as_bytes()).to_vec(),
        created_at: crate::tokens::now_ms(),
        created_by: by.name.clone(),
        revoked_at: None,
        last_used_at: None,
    };
    if !state.store.insert_client_key(&record).await? {
        return Err(ApiError::Conflict(format!(
            "team {:?} has a client key named {:?} (names of revoked keys are not reused): pick another name",
            new.team, new.name
        )));
    }
    tracing::info!(team = %record.team, key = %record.name, principal = %by.name, "client key created");
    let detail = format!("client key {} for team {} created", record.name, record.team);
    audit_action(&state, &by, audit_kind::CLIENT_KEY_CREATED, None, detail).await?;
    Ok((StatusCode::CREATED, Json(CreatedClientKey { key, view: record.into() })).into_response())
}

pub async fn revoke(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ClientKeyView>, ApiError> {
    let record = state
        .store
        .revoke_client_key(&id, crate::tokens::now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no client key has id {id:?}")))?;
    tracing::info!(team = %record.team, key = %record.name, principal = %by.name, "client key revoked");
    let detail = format!("client key {} for team {} revoked", record.name, record.team);
    audit_action(&state, &by, audit_kind::CLIENT_KEY_REVOKED, None, detail).await?;
    Ok(Json(record.into()))
}
