//! `GET /tokens`, `POST /tokens`, `DELETE /tokens/{id}`: named admin API tokens (admin scope
//! only). A token is shown once, in the answer that creates it; the locator keeps its SHA-256
//! digest. Revoking keeps the record (the audit log refers to its name) and refuses the token
//! from then on, on every replica (tokens are checked against the database on every request).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::auth::{mint_secret, sha256, Principal, Scope, TOKEN_PREFIX};
use super::{audit_action, rfc3339_ms};
use crate::api::ApiError;
use crate::db::{audit_kind, ApiTokenRecord};
use crate::LocatorState;

/// The longest lifetime a token can be given: ten years (absent means no expiry).
pub const MAX_EXPIRES_IN_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// Token names: what the audit log shows after `token:`.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<ApiTokenRecord> for TokenView {
    fn from(t: ApiTokenRecord) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            scope: t.scope,
            created_at: rfc3339_ms(t.created_at),
            created_by: t.created_by,
            expires_at: t.expires_at.map(rfc3339_ms),
            revoked_at: t.revoked_at.map(rfc3339_ms),
            last_used_at: t.last_used_at.map(rfc3339_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Serialize)]
pub struct CreatedToken {
    /// The token itself: shown this once, never stored.
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub scope: String,
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

/// Checks a token name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`, and not `root` (the
/// bootstrap token's name in the audit log).
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    if name == "root" {
        return Err(ApiError::BadRequest("`name` root is the bootstrap token's; pick another".into()));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(ok_char) {
        return Err(ApiError::BadRequest(format!(
            "`name` {name:?} must be 1 to {MAX_NAME_CHARS} letters, digits, '.', '_', '-' or '@'"
        )));
    }
    Ok(())
}

pub async fn list(State(state): State<Arc<LocatorState>>) -> Result<Json<TokenList>, ApiError> {
    let tokens = state.store.api_tokens().await?;
    Ok(Json(TokenList { tokens: tokens.into_iter().map(TokenView::from).collect() }))
}

pub async fn create(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let new: NewToken = crate::api::body::parse_json(&headers, body)?;
    validate_name(&new.name)?;
    let scope = Scope::parse(&new.scope)
        .ok_or_else(|| ApiError::BadRequest(format!("`scope` {:?} is not one of read, admin", new.scope)))?;
    if let Some(s) = new.expires_in_seconds {
        if !(1..=MAX_EXPIRES_IN_SECONDS).contains(&s) {
            return Err(ApiError::BadRequest(format!(
                "`expires_in_seconds` {s} must be from 1 to {MAX_EXPIRES_IN_SECONDS} (ten years)"
            )));
        }
    }
    let now = crate::tokens::now_ms();
    let (id, token) = mint_secret(TOKEN_PREFIX);
    let record = ApiTokenRecord {
        id,
        name: new.name.clone(),
        scope: scope.as_str().to_owned(),
        digest: sha256(token.as_bytes()).to_vec(),
        created_at: now,
        created_by: by.name.clone(),
        expires_at: new.expires_in_seconds.map(|s| now + s as i64 * 1000),
        revoked_at: None,
        last_used_at: None,
    };
    if !state.store.insert_api_token(&record).await? {
        return Err(ApiError::Conflict(format!(
            "a token named {:?} exists (names of revoked tokens are not reused): pick another name",
            new.name
        )));
    }
    let detail = match record.expires_at {
        Some(at) => format!("token {} ({} scope) created, expires {}", record.name, scope.as_str(), rfc3339_ms(at)),
        None => format!("token {} ({} scope) created, no expiry", record.name, scope.as_str()),
    };
    tracing::info!(token = %record.name, scope = scope.as_str(), principal = %by.name, "api token created");
    audit_action(&state, &by, audit_kind::TOKEN_CREATED, None, detail).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, view: record.into() })).into_response())
}

pub async fn revoke(
    State(state): State<Arc<LocatorState>>,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let record = state
        .store
        .revoke_api_token(&id, crate::tokens::now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no token has id {id:?}")))?;
    tracing::info!(token = %record.name, principal = %by.name, "api token revoked");
    audit_action(&state, &by, audit_kind::TOKEN_REVOKED, None, format!("token {} revoked", record.name)).await?;
    Ok(Json(record.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["ci", "ada@example.com", "deploy-bot.1_x"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "x".repeat(65).as_str(), "tok:en", "ü", "root"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
