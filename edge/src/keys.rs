//! Token verification on the edge, with no database: the locator's public keys arrive in the
//! link's welcome (and in key-rotation commands) and are cached on disk, so an edge restarted
//! while the locator is away still admits participants of running sessions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use duet_proto::close::CloseCode;
use duet_proto::link::VerifyingKey;
use duet_proto::token::{Claims, EXPIRY_LEEWAY_SECS};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// Why a token was refused; each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("token invalid: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("token is for session {0}")]
    WrongSession(String),
    #[error("token is for edge {0}")]
    WrongEdge(String),
    #[error("no verification keys yet")]
    NoKeys,
}

impl TokenRefused {
    pub fn close_code(&self) -> CloseCode {
        match self {
            TokenRefused::Invalid(_) => CloseCode::TokenInvalid,
            TokenRefused::Expired => CloseCode::TokenExpired,
            TokenRefused::WrongSession(_) => CloseCode::TokenWrongSession,
            TokenRefused::WrongEdge(_) => CloseCode::TokenWrongEdge,
            TokenRefused::NoKeys => CloseCode::KeysUnavailable,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CachedKey {
    kid: String,
    /// base64 (standard) of the 32-byte public key.
    public_key: String,
}

/// The verification keys this edge knows, by key id.
pub struct KeyStore {
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// Where the keys are cached (`<data_dir>/keys.json`).
    path: PathBuf,
}

impl KeyStore {
    /// Loads the cached keys, if any. A damaged cache is ignored (the next link refills it).
    pub fn load(path: PathBuf) -> KeyStore {
        let store = KeyStore { keys: RwLock::new(HashMap::new()), path };
        if let Ok(text) = std::fs::read_to_string(&store.path) {
            match serde_json::from_str::<Vec<CachedKey>>(&text) {
                Ok(cached) => {
                    let keys: Vec<VerifyingKey> = cached
                        .into_iter()
                        .filter_map(|c| {
                            let pk = base64::engine::general_purpose::STANDARD.decode(c.public_key).ok()?;
                            Some(VerifyingKey { kid: c.kid, public_key: pk })
                        })
                        .collect();
                    store.install(&keys);
                }
                Err(e) => tracing::warn!(path = %store.path.display(), error = %e, "ignoring damaged key cache"),
            }
        }
        store
    }

    /// Ids of the keys this edge verifies with.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.read().map(|k| k.keys().cloned().collect()).unwrap_or_default();
        kids.sort();
        kids
    }

    pub fn is_empty(&self) -> bool {
        self.keys.read().map(|k| k.is_empty()).unwrap_or(true)
    }

    fn install(&self, keys: &[VerifyingKey]) {
        let map: HashMap<String, DecodingKey> = keys
            .iter()
            .filter(|k| k.public_key.len() == 32)
            .map(|k| (k.kid.clone(), DecodingKey::from_ed_der(&k.public_key)))
            .collect();
        if let Ok(mut guard) = self.keys.write() {
            *guard = map;
        }
    }

    /// Replaces the keys and rewrites the cache (atomically: write then rename).
    pub fn replace(&self, keys: &[VerifyingKey]) -> std::io::Result<()> {
        self.install(keys);
        let cached: Vec<CachedKey> = keys
            .iter()
            .map(|k| CachedKey {
                kid: k.kid.clone(),
                public_key: base64::engine::general_purpose::STANDARD.encode(&k.public_key),
            })
            .collect();
        let text = serde_json::to_string_pretty(&cached).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Verifies a token for `session_id` on `edge_id`. Expiry is checked here, at join only.
    pub fn verify(&self, token: &str, session_id: &str, edge_id: &str) -> Result<Claims, TokenRefused> {
        let claims = self.verify_subject(token, session_id, edge_id)?;
        if duet_proto::session::Role::parse(&claims.role).is_none() {
            return Err(TokenRefused::Invalid(format!("role {:?}", claims.role)));
        }
        Ok(claims)
    }

    /// Verifies a presence token for `team` on `edge_id` (its `sid` is `presence:<team>`, which
    /// no session id can be, so session and presence tokens are not interchangeable).
    pub fn verify_presence(&self, token: &str, team: &str, edge_id: &str) -> Result<Claims, TokenRefused> {
        let claims = self.verify_subject(token, &duet_proto::presence::presence_subject(team), edge_id)?;
        if claims.role != "member" {
            return Err(TokenRefused::Invalid(format!("role {:?}", claims.role)));
        }
        Ok(claims)
    }

    fn verify_subject(&self, token: &str, session_id: &str, edge_id: &str) -> Result<Claims, TokenRefused> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenRefused::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenRefused::Invalid(format!("algorithm {:?} not accepted", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| TokenRefused::Invalid("no key id".into()))?;
        let keys = self.keys.read().map_err(|_| TokenRefused::NoKeys)?;
        if keys.is_empty() {
            return Err(TokenRefused::NoKeys);
        }
        let key = keys.get(&kid).ok_or_else(|| TokenRefused::Invalid(format!("unknown key id {kid}")))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = EXPIRY_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenRefused::Expired,
            _ => TokenRefused::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        if claims.sid != session_id {
            return Err(TokenRefused::WrongSession(claims.sid));
        }
        if claims.edge != edge_id {
            return Err(TokenRefused::WrongEdge(claims.edge));
        }
        Ok(claims)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
