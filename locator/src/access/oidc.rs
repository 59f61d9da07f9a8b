//! OpenID Connect ID tokens as client credentials: verified against the provider's JWKS with
//! the configured issuer and audience.
//!
//! The key set comes from `oidc_jwks_url`, or from the `jwks_uri` of the issuer's discovery
//! document (`<issuer>/.well-known/openid-configuration`). It is fetched on first use, again
//! after [`REFRESH_EVERY`], and when a token names a key it does not hold (how a provider's key
//! rotation arrives). Fetch attempts, failed or not, are at least [`MIN_REFETCH`] apart, one at a
//! time, and verifications with a known key never wait for one. A failed fetch keeps the keys
//! already held. Only asymmetric algorithms are accepted (a JWKS holds public keys; `none` and
//! HMAC would let anyone mint tokens); `exp`, `nbf`, `iss`, `aud`, `azp` and `sub` are checked,
//! and a token with critical header extensions is refused (none are understood).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

/// Key sets are re-read at least this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(3600);
/// Key set fetches (for a stale set, an unknown key id, or after a failure) are at least this
/// far apart.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// An ID token longer than this is refused before it is parsed (real ones are 1-4 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 60;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A discovery document or key set larger than this is refused.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub audience: String,
    /// `None`: discovered from the issuer.
    pub jwks_url: Option<String>,
    /// A claim listing the teams the user belongs to (an array of strings, or one string); when
    /// set, a client may only use sessions and presence of those teams.
    pub team_claim: Option<String>,
    /// The claim holding the display name (`sub` when it is missing).
    pub name_claim: String,
}

/// Adds the certificates of `ca_file` (PEM) to what `builder` trusts.
pub(crate) fn extra_roots(
    mut builder: reqwest::ClientBuilder,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::ClientBuilder, String> {
    if let Some(path) = ca_file {
        for cert in duet_ws::tls::read_pem_certs(path).map_err(|e| e.to_string())? {
            let cert = reqwest::Certificate::from_der(&cert).map_err(|e| format!("{}: {e}", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// Who an ID token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    pub subject: String,
    pub name: String,
    /// `None` when no team claim is configured.
    pub teams: Option<Vec<String>>,
}

/// A fetched key set and when it was fetched.
type Keys = Option<(Arc<JwkSet>, Instant)>;

pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// When a fetch was last attempted; held while fetching, so fetches run one at a time.
    fetching: Mutex<Option<Instant>>,
}

impl Oidc {
    pub fn new(config: OidcConfig, ca_file: Option<&std::path::Path>) -> Result<Oidc, String> {
        let builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("duet-locator/", env!("CARGO_PKG_VERSION")));
        let http = extra_roots(builder, ca_file)?.build().map_err(|e| format!("http client: {e}"))?;
        Ok(Oidc { config, http, keys: RwLock::new(None), fetching: Mutex::new(None) })
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let mut response = self.http.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status().as_u16()));
        }
        let too_large = || format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes");
        if response.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if bytes.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{url}: not JSON: {e}"))
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery =
                    format!("{}/.well-known/openid-configuration", self.config.issuer.trim_end_matches('/'));
                let doc = self.get_json(&discovery).await?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{discovery}: no jwks_uri"))?
                    .to_owned()
            }
        };
        let doc = self.get_json(&url).await?;
        serde_json::from_value(doc).map_err(|e| format!("{url}: not a JWK set: {e}"))
    }

    fn current(&self) -> Keys {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The key for `kid` (or the only key when the token names none), fetching the set when it
    /// is missing, stale, or lacks the key, and a fetch is allowed.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, String> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let fresh = |keys: &Keys| match keys {
            Some((set, fetched)) if fetched.elapsed() < REFRESH_EVERY => find(set),
            _ => None,
        };
        if let Some(key) = fresh(&self.current()) {
            return Ok(key);
        }
        {
            let mut last_attempt = self.fetching.lock().await;
            // Another request may have fetched while this one waited.
            if let Some(key) = fresh(&self.current()) {
                return Ok(key);
            }
            if last_attempt.is_none_or(|at| at.elapsed() >= MIN_REFETCH) {
                *last_attempt = Some(Instant::now());
                match self.fetch().await {
                    Ok(set) => {
                        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some((Arc::new(set), Instant::now()))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot fetch the OpenID provider's keys; keeping the ones held")
                    }
                }
            }
        }
        match self.current() {
            // A stale set still verifies the keys it has.
            Some((set, _)) => find(&set).ok_or_else(|| match kid {
                Some(_) => "the ID token's key is not in the provider's key set".to_owned(),
                None => "the ID token names no key (kid) and the provider has several".to_owned(),
            }),
            None => Err("the OpenID provider's keys are not available; retry later".into()),
        }
    }

    /// Verifies an ID token: signature by a provider key, issuer, audience, expiry.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("the ID token is longer than {MAX_TOKEN_BYTES} bytes"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(format!("algorithm {:?} is not accepted for ID tokens", header.alg));
        }
        if header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err("the ID token has critical header extensions this locator does not understand".into());
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            return Err("the provider's key is not for signatures".into());
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("the provider's key is unusable: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|e| format!("ID token refused: {e}"))?;
        let claims = data.claims;
        // OpenID Connect Core 3.1.3.7: with several audiences the token must say which client it
        // was issued to (`azp`), and an `azp` present must be this client.
        let several = claims.get("aud").and_then(Value::as_array).is_some_and(|a| a.len() > 1);
        match claims.get("azp") {
            Some(Value::String(azp)) if *azp == self.config.audience => {}
            None if !several => {}
            _ => return Err("the ID token was issued to another client (azp)".into()),
        }
        let subject = claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or("no `sub` claim")?;
        let name = claims.get(&self.config.name_claim).and_then(Value::as_str).unwrap_or(subject);
        let teams = self.config.team_claim.as_ref().map(|claim| match claims.get(claim) {
            Some(Value::String(team)) => vec![team.clone()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        });
        Ok(OidcIdentity { subject: subject.to_owned(), name: name.to_owned(), teams })
    }
}
