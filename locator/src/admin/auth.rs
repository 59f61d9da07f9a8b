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
/// `last_used_at` is written at most this often per token or client key.
pub const TOUCH_EVERY_MS: i64 = 60_000;

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

/// Who is calling, as the audit log names them, and the credential that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
    /// What was presented: `token:<id>` (a named token), `root:<fingerprint>` (the bootstrap
    /// token) or `user:<name>:<fingerprint>` (the configured password). A dashboard login keeps
    /// it and is valid only while [`credential_live`] says so.
    pub credential: String,
    /// When the credential expires (Unix ms), if it does.
    pub expires_at: Option<i64>,
}

/// The first 16 hex digits of a SHA-256 digest: enough to notice a replaced secret, too short to
/// be worth stealing from the database.
pub fn fingerprint(secret: &[u8]) -> String {
    sha256(secret)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the credential a dashboard login was made with still stands: the named token is
/// neither revoked nor expired, the bootstrap token or the password has not been replaced.
pub async fn credential_live(state: &LocatorState, credential: &str) -> Result<bool, ApiError> {
    let now = crate::tokens::now_ms();
    if let Some(id) = credential.strip_prefix("token:") {
        return Ok(state
            .store
            .api_token(id)
            .await?
            .is_some_and(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now)));
    }
    if let Some(fp) = credential.strip_prefix("root:") {
        return Ok(ct_eq(fp.as_bytes(), state.auth.root_fingerprint.as_bytes()));
    }
    if let Some(rest) = credential.strip_prefix("user:") {
        return Ok(match (&state.config.dashboard_login, rest.rsplit_once(':')) {
            (Some((user, hash)), Some((name, fp))) => {
                name == user && ct_eq(fp.as_bytes(), fingerprint(hash.as_bytes()).as_bytes())
            }
            _ => false,
        });
    }
    Ok(false)
}

/// The admin credentials a locator knows besides the stored tokens.
pub struct Auth {
    root_digest: [u8; 32],
    root_fingerprint: String,
    /// When each named token's use was last written.
    touched: Throttle,
    /// Dashboard login attempts per client address.
    pub login_limit: crate::access::RateLimit,
    /// Password checks running at once: Argon2 takes ~19 MiB and tens of milliseconds each, so
    /// a flood of logins must queue here, not in memory.
    pub password_checks: tokio::sync::Semaphore,
}

/// Dashboard login attempts per second per client address (bursts of twice that).
pub const LOGIN_ATTEMPTS_PER_SECOND: u32 = 2;

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

/// A new stored credential (named token, client key): `(id, "<prefix><id>_<secret>")`. The
/// 12-character id is its public part, used to find it; the 40-character secret has 206 bits.
pub fn mint_secret(prefix: &str) -> (String, String) {
    let id = crate::ids::random_id(12);
    let credential = format!("{prefix}{id}_{}", crate::ids::random_id(40));
    (id, credential)
}

/// The id inside a credential of the shape `<prefix><id>_<secret>` ([`mint_secret`]).
pub fn secret_id<'a>(prefix: &str, credential: &'a [u8]) -> Option<&'a str> {
    let rest = std::str::from_utf8(credential).ok()?.strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 12) && ok(secret, 40)).then_some(id)
}

impl Auth {
    pub fn new(root_token: &str) -> Auth {
        Auth {
            root_digest: sha256(root_token.as_bytes()),
            root_fingerprint: fingerprint(root_token.as_bytes()),
            touched: Throttle::default(),
            login_limit: crate::access::RateLimit::new(LOGIN_ATTEMPTS_PER_SECOND),
            password_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            ),
        }
    }

    /// True if `presented` is the bootstrap token (constant time, by digest).
    pub fn is_root(&self, presented: &[u8]) -> bool {
        ct_eq(&sha256(presented), &self.root_digest)
    }

    fn should_touch(&self, id: &str, now_ms: i64) -> bool {
        self.touched.due(id, now_ms)
    }
}

/// Decides when a credential's `last_used_at` is written: at most once per
/// [`TOUCH_EVERY_MS`] per id, so reads do not turn into writes.
#[derive(Default)]
pub struct Throttle(Mutex<HashMap<String, i64>>);

impl Throttle {
    /// True if `id`'s use should be written now (and remembers that it was).
    pub fn due(&self, id: &str, now_ms: i64) -> bool {
        let mut touched = self.0.lock().unwrap_or_else(|p| p.into_inner());
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
        return Ok(Principal {
            name: ROOT_PRINCIPAL.to_owned(),
            scope: Scope::Admin,
            credential: format!("root:{}", state.auth.root_fingerprint),
            expires_at: None,
        });
    }
    let wrong = || ApiError::Unauthorized("wrong credentials".into());
    let id = secret_id(TOKEN_PREFIX, presented).ok_or_else(wrong)?;
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
    Ok(Principal {
        name: format!("token:{}", record.name),
        scope,
        credential: format!("token:{}", record.id),
        expires_at: record.expires_at,
    })
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

/// Refuses a request whose `Origin` names another site than this locator: the configured
/// `public_url` when there is one (behind a proxy that rewrites `Host`), else the `Host` the
/// request was sent to. A request without `Origin` is not a cross-site browser request.
pub fn check_origin_against(public_url: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    let same = match public_url {
        Some(url) => {
            // The origin of the URL: scheme and authority, no path.
            let base = url.split_once("://").map_or(url, |(scheme, rest)| {
                let authority = rest.split('/').next().unwrap_or(rest);
                &url[..scheme.len() + 3 + authority.len()]
            });
            origin.eq_ignore_ascii_case(base)
        }
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            matches!((origin.split_once("://"), host), (Some((_, o)), Some(h)) if o.eq_ignore_ascii_case(h))
        }
    };
    if same {
        Ok(())
    } else {
        Err(ApiError::Forbidden("cross-site request refused (its Origin is not this locator)".into()))
    }
}

pub fn check_origin(state: &LocatorState, headers: &HeaderMap) -> Result<(), ApiError> {
    check_origin_against(state.config.public_url.as_deref(), headers)
}

/// The dashboard login a request's cookie belongs to; for changes, after the CSRF and origin
/// checks.
pub async fn cookie_principal(
    state: &LocatorState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Principal, ApiError> {
    cookie_login(state, headers, method).await.map(|(principal, _)| principal)
}

/// [`cookie_principal`] with the login's CSRF token (for the dashboard's session endpoints).
pub async fn cookie_login(
    state: &LocatorState,
    headers: &HeaderMap,
    method: &Method,
) -> Result<(Principal, String), ApiError> {
    let cookie = cookie(headers, SESSION_COOKIE).unwrap_or_default();
    let digest = sha256(cookie.as_bytes());
    let login = state
        .store
        .dashboard_session(&digest, crate::tokens::now_ms())
        .await?
        .ok_or_else(|| ApiError::Unauthorized("not logged in, or the login has expired".into()))?;
    let credential = login.credential.clone().unwrap_or_default();
    if !credential_live(state, &credential).await? {
        state.store.delete_dashboard_session(&digest).await?;
        tracing::info!(principal = %login.principal, "dashboard login ended: its credential was revoked, expired or replaced");
        return Err(ApiError::Unauthorized(
            "the credential this login was made with was revoked, has expired or was replaced; log in again".into(),
        ));
    }
    if !is_safe(method) {
        check_origin(state, headers)?;
        let presented = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !ct_eq(presented, login.csrf.as_bytes()) {
            return Err(ApiError::Forbidden(format!("missing or wrong {CSRF_HEADER} header")));
        }
    }
    let scope = Scope::parse(&login.scope).ok_or_else(|| ApiError::Internal(format!("login scope {}", login.scope)))?;
    let principal = Principal { name: login.principal, scope, credential, expires_at: Some(login.expires_at) };
    Ok((principal, login.csrf))
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
        let (id, token) = mint_secret(TOKEN_PREFIX);
        assert_eq!(secret_id(TOKEN_PREFIX, token.as_bytes()), Some(id.as_str()));
        for bad in ["", "duet_", "duet_abc_def", "xduet_aaaaaaaaaaaa_", &token[..token.len() - 1], &format!("{token}x")]
        {
            assert_eq!(secret_id(TOKEN_PREFIX, bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(secret_id(TOKEN_PREFIX, token.to_uppercase().as_bytes()), None);
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
        assert!(check_origin_against(None, &h).is_ok(), "no Origin: not a cross-site browser request");
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(check_origin_against(None, &h).is_ok());
        assert!(check_origin_against(Some("https://duet.example.com"), &h).is_err(), "the configured origin wins");
        h.insert(header::ORIGIN, "https://duet.example.com".parse().unwrap());
        assert!(check_origin_against(Some("https://duet.example.com/duet/"), &h).is_ok(), "behind a proxy");
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(check_origin_against(None, &h).is_err());
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(check_origin_against(None, &h).is_err());
    }
}
