//! The admin dashboard at `/dashboard`: a single page (`locator/dashboard/`, embedded in the
//! binary, no external resources, so it works air-gapped) that calls the admin API with a login
//! cookie, and the login endpoints under `/dashboard/api`.
//!
//! Login takes an admin API token (any scope; the page then offers what that scope allows) or the
//! operator's configured username and Argon2-hashed password (admin scope). It sets the
//! `duet_dashboard` cookie (random, HttpOnly, SameSite=Strict; only its SHA-256 digest is stored,
//! in the database, so every locator replica knows the login) and answers the login's CSRF
//! token, which the page sends as `X-CSRF-Token` with every change (see [`crate::admin::auth`]).
//! Pages are served with a strict Content-Security-Policy and may not be framed.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::admin::audit_action;
use crate::admin::auth::{self, Principal, Scope, SESSION_COOKIE};
use crate::api::ApiError;
use crate::db::{audit_kind, DashboardSessionRecord};
use crate::LocatorState;

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

/// What the page may load and where it may connect: only this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

crate::api::routes! {
    /// The dashboard's page, assets and login endpoints.
    dashboard_routes, ROUTES;
    GET "/dashboard" => index,
    GET "/dashboard/" => index,
    GET "/dashboard/app.js" => app_js,
    GET "/dashboard/app.css" => app_css,
    GET "/dashboard/api/login-options" => login_options,
    POST "/dashboard/api/login" => login,
    GET "/dashboard/api/session" => session,
    POST "/dashboard/api/logout" => logout,
}

pub fn router() -> axum::Router<Arc<LocatorState>> {
    dashboard_routes()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The assets change with the binary; revalidating is cheap on a LAN.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[derive(Debug, Serialize)]
pub struct LoginOptions {
    /// Whether a username and password are configured (else only tokens log in).
    pub password: bool,
}

async fn login_options(State(state): State<Arc<LocatorState>>) -> Json<LoginOptions> {
    Json(LoginOptions { password: state.config.dashboard_login.is_some() })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// Who is logged in, and the CSRF token changes must carry.
#[derive(Debug, Serialize)]
pub struct LoginView {
    pub principal: String,
    pub scope: Scope,
    pub csrf: String,
}

/// Checks a configured username and password hash (at start-up, so a typo fails fast).
pub fn validate_login(user: &str, hash: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 64 || !user.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)) {
        return Err(format!("{user:?} must be 1 to 64 letters, digits, '.', '_', '-' or '@'"));
    }
    let parsed = PasswordHash::new(hash).map_err(|e| {
        format!("the password hash is not a PHC string ({e}); make one with `duet-locator hash-password`")
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("the password hash uses {}, not Argon2", parsed.algorithm));
    }
    Ok(())
}

/// An Argon2id hash of `password` with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Verifies a username and password against the configuration, off the async threads (Argon2
/// takes tens of milliseconds by design).
async fn check_password(state: &LocatorState, username: String, password: String) -> Result<Principal, ApiError> {
    let wrong = || ApiError::Unauthorized("wrong username or password".into());
    let Some((user, hash)) = state.config.dashboard_login.clone() else {
        return Err(ApiError::Unauthorized("password login is not configured; log in with an admin token".into()));
    };
    // Never more checks at once than cores; a flood waits its turn briefly, then is refused.
    let _permit = tokio::time::timeout(PASSWORD_CHECK_WAIT, state.auth.password_checks.acquire())
        .await
        .map_err(|_| ApiError::RateLimited(1))?
        .map_err(|_| ApiError::NotReady)?;
    let name = user.clone();
    let hash_for_fingerprint = hash.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let hash_ok = PasswordHash::new(&hash)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        // Both checks always run, so timing does not tell which one failed.
        auth::ct_eq(username.as_bytes(), user.as_bytes()) & hash_ok
    })
    .await
    .map_err(|e| ApiError::Internal(format!("password check: {e}")))?;
    if !ok {
        return Err(wrong());
    }
    Ok(Principal {
        name: format!("user:{name}"),
        scope: Scope::Admin,
        credential: format!("user:{name}:{}", auth::fingerprint(hash_for_fingerprint.as_bytes())),
        expires_at: None,
    })
}

/// How long a login waits for a free password check before it is refused with 429.
const PASSWORD_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn set_cookie(value: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("duet_dashboard=; Max-Age=0"))
}

/// Whether the page is served over https (the cookie is then marked Secure): the configured
/// `public_url` says so, or the browser's `Origin` does.
fn is_https(state: &LocatorState, headers: &HeaderMap) -> bool {
    state.config.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
        || headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).is_some_and(|o| o.starts_with("https://"))
}

async fn login(
    State(state): State<Arc<LocatorState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    auth::check_origin(&state, &headers)?;
    let client_ip = crate::client_addr::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    state.auth.login_limit.check(client_ip, std::time::Instant::now()).map_err(ApiError::RateLimited)?;
    let body: LoginBody = crate::api::body::parse_json(&headers, body)?;
    let attempt = match body {
        LoginBody { token: Some(token), username: None, password: None } => {
            auth::bearer_principal(&state, token.trim().as_bytes()).await
        }
        LoginBody { token: None, username: Some(u), password: Some(p) } => check_password(&state, u, p).await,
        _ => return Err(ApiError::BadRequest("send either `token`, or `username` and `password`".into())),
    };
    let principal = match attempt {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(client.ip = %client_ip, error = %e, "dashboard login refused");
            return Err(e);
        }
    };
    let now = crate::tokens::now_ms();
    let ttl = state.config.dashboard_login_ttl;
    let cookie = crate::ids::random_id(43);
    // A login never outlives the token it was made with.
    let expires_at = (now + ttl.as_millis() as i64).min(principal.expires_at.unwrap_or(i64::MAX));
    let record = DashboardSessionRecord {
        principal: principal.name.clone(),
        credential: Some(principal.credential.clone()),
        scope: principal.scope.as_str().to_owned(),
        csrf: crate::ids::random_id(32),
        created_at: now,
        expires_at,
    };
    state.store.insert_dashboard_session(&auth::sha256(cookie.as_bytes()), &record).await?;
    if let Err(e) = state.store.prune_dashboard_sessions(now).await {
        tracing::warn!(error = %e, "cannot delete expired dashboard logins");
    }
    tracing::info!(principal = %principal.name, "dashboard login");
    audit_action(&state, &principal, audit_kind::DASHBOARD_LOGIN, None, "logged in to the dashboard".into()).await?;
    let view = LoginView { principal: principal.name, scope: principal.scope, csrf: record.csrf };
    let mut response = Json(view).into_response();
    let max_age = u64::try_from((expires_at - now) / 1000).unwrap_or(0);
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&cookie, max_age, is_https(&state, &headers)));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The login of the request's cookie, with its CSRF token; checks CSRF and origin for `method`s
/// that change something.
async fn current(state: &LocatorState, headers: &HeaderMap, method: &Method) -> Result<LoginView, ApiError> {
    let (principal, csrf) = auth::cookie_login(state, headers, method).await?;
    Ok(LoginView { principal: principal.name, scope: principal.scope, csrf })
}

async fn session(State(state): State<Arc<LocatorState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let view = current(&state, &headers, &Method::GET).await?;
    let mut response = Json(view).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn logout(State(state): State<Arc<LocatorState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let view = current(&state, &headers, &Method::POST).await?;
    let cookie = auth::cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    state.store.delete_dashboard_session(&auth::sha256(cookie.as_bytes())).await?;
    let principal = Principal { name: view.principal, scope: view.scope, credential: String::new(), expires_at: None };
    audit_action(&state, &principal, audit_kind::DASHBOARD_LOGOUT, None, "logged out of the dashboard".into()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie("", 0, is_https(&state, &headers)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_are_checked() {
        let hash = hash_password("correct horse").unwrap();
        assert!(validate_login("ada", &hash).is_ok());
        assert!(validate_login("", &hash).is_err());
        assert!(validate_login("a b", &hash).is_err());
        let err = validate_login("ada", "hunter2").unwrap_err();
        assert!(err.contains("hash-password"), "{err}");
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"correct horse!", &parsed).is_err());
    }
}
