//! Who may start and join sessions and see team presence: the operator's choice
//! (`client_auth`), checked on the public API before anything else runs, after a per-address
//! request limit.
//!
//! - `open`: anyone who reaches the listener (the one-machine default on loopback). A locator
//!   listening on another address must choose its modes explicitly.
//! - `keys`: per-team client keys, `duetck_<id>_<secret>`, made and revoked by admins
//!   (`duet-locator client-keys ...`), stored as SHA-256 digests. A key is for one team: the
//!   sessions it starts belong to that team, it joins only that team's sessions and sees only
//!   that team's presence.
//! - `oidc`: OpenID Connect ID tokens from the configured provider ([`oidc`]). The participant's
//!   id and name are the token's `sub` and name claim, whatever the request says; with a team
//!   claim configured, the user only reaches the teams it lists.
//!
//! `keys` and `oidc` may be combined. Clients send `Authorization: Bearer <key or ID token>`.
//! Refusals are `401 unauthorized` (no or bad credentials), `403 forbidden` (another team) and
//! `429 rate_limited` (with `Retry-After`), in the API's JSON error shape.

pub mod oidc;
pub mod ratelimit;

use std::net::IpAddr;
use std::time::Instant;

use axum::http::{header, HeaderMap};

use crate::admin::auth::{ct_eq, secret_id, sha256};
use crate::api::ApiError;
use crate::LocatorState;
pub use oidc::{Oidc, OidcConfig, OidcIdentity};
pub use ratelimit::RateLimit;

/// Client keys start with this.
pub const CLIENT_KEY_PREFIX: &str = "duetck_";

/// One way clients may be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Open,
    Keys,
    Oidc,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::Keys => "keys",
            Mode::Oidc => "oidc",
        }
    }

    /// A comma-separated list: `open`, or `keys`, `oidc`, `keys,oidc`.
    pub fn parse_list(s: &str) -> Result<Vec<Mode>, String> {
        let mut modes = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mode = match part {
                "open" => Mode::Open,
                "keys" => Mode::Keys,
                "oidc" => Mode::Oidc,
                other => return Err(format!("{other:?} is not one of open, keys, oidc")),
            };
            if !modes.contains(&mode) {
                modes.push(mode);
            }
        }
        if modes.is_empty() {
            return Err("name at least one of open, keys, oidc".into());
        }
        if modes.contains(&Mode::Open) && modes.len() > 1 {
            return Err("open admits everyone: it cannot be combined with keys or oidc".into());
        }
        Ok(modes)
    }
}

/// Who a public API request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    /// Open mode: nobody in particular.
    Anyone,
    /// A team's client key.
    Key { id: String, team: String },
    /// A user of the OpenID provider.
    User(OidcIdentity),
}

impl Client {
    /// The team a new session belongs to: a key's team, else the requested one (checked).
    pub fn session_team(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        match self {
            Client::Key { team, .. } => match requested {
                Some(r) if r != *team => {
                    Err(ApiError::Forbidden(format!("this client key is for team {team:?}, not {r:?}")))
                }
                _ => Ok(Some(team.clone())),
            },
            _ => {
                self.may_use_team(requested.as_deref())?;
                Ok(requested)
            }
        }
    }

    /// Refuses a session or presence of a team this client does not belong to.
    pub fn may_use_team(&self, team: Option<&str>) -> Result<(), ApiError> {
        match (self, team) {
            (Client::Anyone, _) => Ok(()),
            (Client::Key { team: own, .. }, Some(t)) if t == own => Ok(()),
            (Client::Key { team: own, .. }, Some(t)) => {
                Err(ApiError::Forbidden(format!("this client key is for team {own:?}, not {t:?}")))
            }
            (Client::Key { team: own, .. }, None) => {
                Err(ApiError::Forbidden(format!("this client key is for team {own:?}; the session belongs to no team")))
            }
            (Client::User(OidcIdentity { teams: None, .. }), _) => Ok(()),
            (Client::User(OidcIdentity { teams: Some(teams), .. }), Some(t)) if teams.iter().any(|x| x == t) => Ok(()),
            (Client::User(OidcIdentity { teams: Some(_), subject, .. }), Some(t)) => {
                Err(ApiError::Forbidden(format!("user {subject:?} is not in team {t:?}")))
            }
            (Client::User(OidcIdentity { teams: Some(_), subject, .. }), None) => Err(ApiError::Forbidden(format!(
                "user {subject:?} may only use sessions of their teams; this one belongs to no team"
            ))),
        }
    }

    /// The user id and name the identity provider vouches for, which win over the request's.
    pub fn user(&self) -> Option<(String, String)> {
        match self {
            Client::User(u) => Some((u.subject.clone(), u.name.clone())),
            _ => None,
        }
    }
}

/// The public API's admission: modes, the OpenID verifier and the per-address limit.
pub struct Access {
    modes: Vec<Mode>,
    oidc: Option<Oidc>,
    limit: RateLimit,
    touched: crate::admin::auth::Throttle,
}

impl Access {
    /// `ca_file`: extra CA certificates trusted for the OIDC issuer, besides the system roots.
    pub fn new(
        modes: Vec<Mode>,
        oidc: Option<OidcConfig>,
        per_second: u32,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Access, String> {
        let oidc = match (modes.contains(&Mode::Oidc), oidc) {
            (true, Some(config)) => Some(Oidc::new(config, ca_file)?),
            (true, None) => return Err("client_auth oidc needs oidc_issuer and oidc_audience".into()),
            (false, _) => None,
        };
        Ok(Access { modes, oidc, limit: RateLimit::new(per_second), touched: Default::default() })
    }

    fn allows(&self, mode: Mode) -> bool {
        self.modes.contains(&mode)
    }

    fn should_touch(&self, id: &str, now_ms: i64) -> bool {
        self.touched.due(id, now_ms)
    }
}

async fn key_client(state: &LocatorState, key: &str) -> Result<Client, ApiError> {
    let wrong = || ApiError::Unauthorized("wrong client key".into());
    let id = secret_id(CLIENT_KEY_PREFIX, key.as_bytes()).ok_or_else(wrong)?;
    let record = state.store.client_key(id).await?.ok_or_else(wrong)?;
    if !ct_eq(&sha256(key.as_bytes()), &record.digest) {
        return Err(wrong());
    }
    if record.revoked_at.is_some() {
        return Err(ApiError::Unauthorized(format!("client key {:?} was revoked", record.name)));
    }
    let now = crate::tokens::now_ms();
    if state.access.should_touch(id, now) {
        if let Err(e) = state.store.touch_client_key(id, now).await {
            tracing::warn!(error = %e, key = %record.name, "cannot record a client key's use");
        }
    }
    Ok(Client::Key { id: record.id, team: record.team })
}

/// Admits a public API request from `client_ip`, or says why not.
pub async fn admit(state: &LocatorState, headers: &HeaderMap, client_ip: IpAddr) -> Result<Client, ApiError> {
    let access = &state.access;
    access.limit.check(client_ip, Instant::now()).map_err(ApiError::RateLimited)?;
    if access.allows(Mode::Open) {
        return Ok(Client::Anyone);
    }
    let presented = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let token = v
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized("the Authorization header must be `Bearer <credential>`".into())
                })?;
            Some(token)
        }
    };
    let Some(credential) = presented else {
        let wanted = match (access.allows(Mode::Keys), access.allows(Mode::Oidc)) {
            (true, true) => "a client key or an ID token",
            (true, false) => "a client key",
            _ => "an ID token",
        };
        return Err(ApiError::Unauthorized(format!(
            "this locator admits clients with {wanted}: send `Authorization: Bearer <credential>`"
        )));
    };
    if credential.starts_with(CLIENT_KEY_PREFIX) {
        if !access.allows(Mode::Keys) {
            return Err(ApiError::Unauthorized("this locator does not accept client keys".into()));
        }
        return key_client(state, credential).await;
    }
    match &access.oidc {
        Some(oidc) => oidc.verify(credential).await.map(Client::User).map_err(ApiError::Unauthorized),
        None => Err(ApiError::Unauthorized("wrong client key".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse_list("open").unwrap(), [Mode::Open]);
        assert_eq!(Mode::parse_list("keys, oidc,keys").unwrap(), [Mode::Keys, Mode::Oidc]);
        for bad in ["", "open,keys", "ldap", " , "] {
            assert!(Mode::parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_keys_parse() {
        let (id, key) = crate::admin::auth::mint_secret(CLIENT_KEY_PREFIX);
        assert_eq!(secret_id(CLIENT_KEY_PREFIX, key.as_bytes()), Some(id.as_str()));
        assert_eq!(secret_id(CLIENT_KEY_PREFIX, &key.as_bytes()[1..]), None);
        assert_eq!(secret_id(CLIENT_KEY_PREFIX, b"duetck_short_key"), None);
    }

    #[test]
    fn teams_bind_keys_and_users() {
        let key = Client::Key { id: "k".into(), team: "red".into() };
        assert_eq!(key.session_team(None).unwrap().as_deref(), Some("red"));
        assert!(key.session_team(Some("blue".into())).is_err());
        assert!(key.may_use_team(Some("red")).is_ok());
        assert!(key.may_use_team(None).is_err());
        let user = |teams: Option<Vec<String>>| {
            Client::User(OidcIdentity { subject: "ada".into(), name: "Ada".into(), teams })
        };
        assert!(user(None).may_use_team(Some("any")).is_ok());
        let red = user(Some(vec!["red".into()]));
        assert!(red.may_use_team(Some("red")).is_ok());
        assert!(matches!(red.may_use_team(Some("blue")), Err(ApiError::Forbidden(_))));
        assert_eq!(red.user(), Some(("ada".into(), "Ada".into())));
        assert!(Client::Anyone.may_use_team(None).is_ok());
    }
}
