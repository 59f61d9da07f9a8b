//! Who is calling the admin API, and what they may do.
//!
//! A caller is a [`Principal`] with a [`Scope`]: `read` may call every `GET` route except the
//! token list; `admin` may call everything. Principals are named in the audit log:
//!
//! - `token:root`: the operator's bootstrap token (`DUET_ADMIN_TOKEN`/`_FILE`, or generated into
//!   `<data_dir>/admin-token`), admin scope, compared by SHA-256 digest in constant time. It is
//!   meant to create named tokens and then stay in its secret store.
//! - `token:<name>`: a named token created through `POST /tokens` (CLI `tokens create`),
//!   `duet_<id>_<secret>`; only its digest is stored. It may expire and can be revoked.
//! - `user:<name>`: a dashboard login with the operator's configured username and password;
//!   admin scope.
//!
//! Requests carry either `Authorization: Bearer <token>` or the dashboard's login cookie. A
//! cookie-authenticated request that changes anything must also carry the login's CSRF token in
//! `X-CSRF-Token`, and an `Origin` header, when present, must name this host: a page on another
//! site can make the browser send the cookie, but it can neither read the CSRF token nor forge
//! `Origin`. Bearer tokens are never sent by a browser on its own, so they need neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::db::ApiTokenRecord;
use crate::LocatorState;

/// The login cookie of the dashboard.
pub const SESSION_COOKIE: &str = "duet_dashboard";
/// The header a cookie-authenticated change must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The bootstrap token's principal.
pub const ROOT_PRINCIPAL: &str = "token:root";
/// Named tokens start with this.
pub const TOKEN_PREFIX: &str = "duet_";
/// `last_used_at` is written at most this often per token, so reads do not turn into writes.
const TOUCH_EVERY_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Admin,
}

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Who is calling, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
}

/// The admin credentials a locator knows besides the stored tokens.
pub struct Auth {
    root_digest: [u8; 32],
    /// When each named token's use was last written.
    touched: Mutex<HashMap<String, i64>>,
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// True if the two byte strings are equal, in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// A new named token: `(id, token)`. The id is its public part; the secret has 206 bits.
pub fn mint_token() -> (String, String) {
    let id = crate::ids::random_id(12);
    let token = format!("{TOKEN_PREFIX}{id}_{}", crate::ids::random_id(40));
    (id, token)
}

/// The id inside a named token, if it has the shape `duet_<id>_<secret>`.
fn token_id(token: &[u8]) -> Option<&str> {
    let rest = std::str::from_utf8(token).ok()?.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 12) && ok(secret, 40)).then_some(id)
}

impl Auth {
    pub fn new(root_token: &str) -> Auth {
        Auth { root_digest: sha256(root_token.as_bytes()), touched: Mutex::new(HashMap::new()) }
    }

    /// True if `presented` is the bootstrap token (constant time, by digest).
    pub fn is_root(&self, presented: &[u8]) -> bool {
        ct_eq(&sha256(presented), &self.root_digest)
    }

    fn should_touch(&self, id: &str, now_ms: i64) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        match touched.get(id) {
            Some(&at) if now_ms - at < TOUCH_EVERY_MS => false,
            _ => {
                touched.insert(id.to_owned(), now_ms);
                true
            }
        }
    }
}

/// The principal a bearer token stands for, or why it is refused.
pub async fn bearer_principal(state: &LocatorState, presented: &[u8]) -> Result<Principal, ApiError> {
    if state.auth.is_root(presented) {
        return Ok(Principal { name: ROOT_PRINCIPAL.to_owned(), scope: Scope::Admin });
    }
    let wrong = || ApiError::Unauthorized("wrong credentials".into());
    let id = token_id(presented).ok_or_else(wrong)?;
    let record: ApiTokenRecord = state.store.api_token(id).await?.ok_or_else(wrong)?;
    if !ct_eq(&sha256(presented), &record.digest) {
        return Err(wrong());
    }
    let now = crate::tokens::now_ms();
    if record.revoked_at.is_some() {
        return Err(ApiError::Unauthorized(format!("token {:?} was revoked", record.name)));
    }
    if record.expires_at.is_some_and(|at| at <= now) {
        return Err(ApiError::Unauthorized(format!("token {:?} has expired", record.name)));
    }
    let scope =
        Scope::parse(&record.scope).ok_or_else(|| ApiError::Internal(format!("token scope {}", record.scope)))?;
    if state.auth.should_touch(id, now) {
        if let Err(e) = state.store.touch_api_token(id, now).await {
            tracing::warn!(error = %e, token = %record.name, "cannot record a token's use");
        }
    }
    Ok(Principal { name: format!("token:{}", record.name), scope })
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Refuses a request whose `Origin` names another site than the `Host` it was sent to.
pub fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, h)| h.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(ApiError::Forbidden("cross-site request refused (Origin does not match Host)".into())),
    }
}

/// The dashboard login a request's cookie belongs to; for changes, after the CSRF and origin
/// checks.
pub async fn cookie_principal(
    state: &LocatorState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Principal, ApiError> {
    let cookie = cookie(headers, SESSION_COOKIE).unwrap_or_default();
    let login = state
        .store
        .dashboard_session(&sha256(cookie.as_bytes()), crate::tokens::now_ms())
        .await?
        .ok_or_else(|| ApiError::Unauthorized("not logged in, or the login has expired".into()))?;
    if !is_safe(method) {
        check_origin(headers)?;
        let presented = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !ct_eq(presented, login.csrf.as_bytes()) {
            return Err(ApiError::Forbidden(format!("missing or wrong {CSRF_HEADER} header")));
        }
    }
    let scope = Scope::parse(&login.scope).ok_or_else(|| ApiError::Internal(format!("login scope {}", login.scope)))?;
    Ok(Principal { name: login.principal, scope })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The caller of a request, from its bearer token or, without one, its login cookie.
pub async fn principal(state: &LocatorState, headers: &HeaderMap, method: &Method) -> Result<Principal, ApiError> {
    match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let token =
                value.as_bytes().strip_prefix(b"Bearer ").map(|t| t.trim_ascii()).ok_or_else(|| {
                    ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
                })?;
            bearer_principal(state, token).await
        }
        None if cookie(headers, SESSION_COOKIE).is_some() => cookie_principal(state, headers, method).await,
        None => Err(ApiError::Unauthorized("missing credentials: send `Authorization: Bearer <token>`".into())),
    }
}

/// The scope a request needs: reading needs `read`, anything else (and the token list, which
/// names every admin's tokens) needs `admin`.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    if is_safe(method) && !path.starts_with("/tokens") && !path.starts_with("/api/v1/admin/tokens") {
        Scope::Read
    } else {
        Scope::Admin
    }
}

/// Middleware for the admin routes: finds the principal, checks its scope, and hands it to the
/// handler as an extension. Refusals are 401 (who are you?) or 403 (not allowed), before any
/// handler runs.
pub async fn require(State(state): State<Arc<LocatorState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let principal = match principal(&state, req.headers(), req.method()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(path = %path, error = %e, "admin request refused");
            return e.into_response();
        }
    };
    let needed = required_scope(req.method(), &path);
    if principal.scope < needed {
        tracing::info!(path = %path, principal = %principal.name, "admin request refused: scope");
        return ApiError::Forbidden(format!(
            "{} has {} scope; this needs {} scope",
            principal.name,
            principal.scope.as_str(),
            needed.as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_token_compares_by_digest() {
        let auth = Auth::new("correct-horse-battery-staple");
        assert!(auth.is_root(b"correct-horse-battery-staple"));
        assert!(!auth.is_root(b"correct-horse-battery-stapl"));
        assert!(!auth.is_root(b""));
    }

    #[test]
    fn minted_tokens_parse_and_others_do_not() {
        let (id, token) = mint_token();
        assert_eq!(token_id(token.as_bytes()), Some(id.as_str()));
        for bad in ["", "duet_", "duet_abc_def", "xduet_aaaaaaaaaaaa_", &token[..token.len() - 1], &format!("{token}x")]
        {
            assert_eq!(token_id(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(token_id(token.to_uppercase().as_bytes()), None);
    }

    #[test]
    fn scopes_by_method_and_path() {
        assert_eq!(required_scope(&Method::GET, "/edges"), Scope::Read);
        assert_eq!(required_scope(&Method::POST, "/edges/a/suspend"), Scope::Admin);
        assert_eq!(required_scope(&Method::GET, "/tokens"), Scope::Admin);
        assert!(Scope::Read < Scope::Admin);
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; duet_dashboard=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        h.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(check_origin(&h).is_ok(), "no Origin: not a cross-site browser request");
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_origin(&h).is_err());
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(check_origin(&h).is_err());
    }
}
