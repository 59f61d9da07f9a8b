//! Participant tokens: Ed25519-signed JWTs that edges verify locally.
//!
//! The signing key lives in the database so that restarts and every replica sign with the same
//! key. The newest unretired key signs; every unretired key is sent to edges for verification.
//! [`maintain`] rotates: once the newest key is older than the rotation interval a new one is
//! inserted, and a superseded key is retired only when every token it signed has expired
//! (token lifetime plus the edges' clock-skew leeway plus a margin), so a rotation never
//! invalidates a live token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use duet_proto::link::VerifyingKey;
use duet_proto::token::Claims;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::db::{SigningKeyRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing key could not be generated or parsed")]
    Key,
    #[error("token could not be signed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Signs participant tokens with the database's current key.
pub struct Signer {
    kid: String,
    key: EncodingKey,
    verifying: Vec<VerifyingKey>,
    ttl: Duration,
}

impl Signer {
    /// Loads the keys, creating the first one if the database has none.
    pub async fn load_or_create(store: &Store, ttl: Duration) -> Result<Signer, TokenError> {
        let mut keys = store.signing_keys().await?;
        if keys.is_empty() {
            let record = generate_key(now_ms())?;
            // Another replica may create one at the same moment; whichever is newer signs, and
            // both verify, so a duplicate is harmless.
            store.insert_signing_key(&record).await?;
            keys = store.signing_keys().await?;
        }
        Signer::from_records(&keys, ttl)
    }

    pub fn from_records(keys: &[SigningKeyRecord], ttl: Duration) -> Result<Signer, TokenError> {
        let current = keys.first().ok_or(TokenError::Key)?;
        Ed25519KeyPair::from_pkcs8(&current.private_key).map_err(|_| TokenError::Key)?;
        Ok(Signer {
            kid: current.kid.clone(),
            key: EncodingKey::from_ed_der(&current.private_key),
            verifying: keys
                .iter()
                .map(|k| VerifyingKey { kid: k.kid.clone(), public_key: k.public_key.clone() })
                .collect(),
            ttl,
        })
    }

    /// Keys edges need to verify every token this locator may have signed.
    pub fn verifying_keys(&self) -> Vec<VerifyingKey> {
        self.verifying.clone()
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs claims; `iat` and `exp` are set here from the configured lifetime.
    pub fn sign(&self, claims: Claims) -> Result<(String, u64), TokenError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = now + self.ttl.as_secs();
        Ok((self.sign_until(claims, exp)?, exp))
    }

    /// Signs claims with an explicit expiry (Unix seconds); `iat` is now.
    pub fn sign_until(&self, mut claims: Claims, exp: u64) -> Result<String, TokenError> {
        claims.iat = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        claims.exp = exp;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

/// A fresh Ed25519 key with a random key id.
pub fn generate_key(now_ms: i64) -> Result<SigningKeyRecord, TokenError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| TokenError::Key)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| TokenError::Key)?;
    Ok(SigningKeyRecord {
        kid: format!("k{}", crate::ids::random_id(12)),
        private_key: pkcs8.as_ref().to_vec(),
        public_key: pair.public_key().as_ref().to_vec(),
        created_at: now_ms,
        retired_at: None,
    })
}

/// When keys rotate and retire.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// A new key is made once the newest is this old.
    pub rotate_after: Duration,
    /// A superseded key verifies for this long after its successor appeared.
    pub retire_after: Duration,
}

/// Margin beyond token lifetime and leeway before a superseded key is retired, for clock
/// differences between locator replicas.
const RETIRE_MARGIN: Duration = Duration::from_secs(30);

impl KeyPolicy {
    pub fn new(rotate_after: Duration, token_ttl: Duration) -> KeyPolicy {
        let leeway = Duration::from_secs(duet_proto::token::EXPIRY_LEEWAY_SECS);
        KeyPolicy { rotate_after, retire_after: token_ttl + leeway + RETIRE_MARGIN }
    }
}

/// One rotation step at `now_ms`: inserts a new key if the newest is due, retires superseded keys
/// whose tokens have all expired. Returns true if the key set changed. Safe to run on every
/// replica: a race inserts two keys, both verify, and the newest signs everywhere.
pub async fn maintain(store: &Store, now_ms: i64, policy: KeyPolicy) -> Result<bool, TokenError> {
    let keys = store.signing_keys().await?;
    let mut changed = false;
    let rotate_ms = policy.rotate_after.as_millis() as i64;
    if keys.first().is_none_or(|newest| now_ms - newest.created_at >= rotate_ms) {
        store.insert_signing_key(&generate_key(now_ms)?).await?;
        changed = true;
        tracing::info!("signing key rotated");
    }
    let retire_ms = policy.retire_after.as_millis() as i64;
    for pair in keys.windows(2) {
        let (successor, older) = (&pair[0], &pair[1]);
        if now_ms - successor.created_at >= retire_ms && store.retire_signing_key(&older.kid, now_ms).await? {
            changed = true;
            tracing::info!(kid = %older.kid, "signing key retired");
        }
    }
    Ok(changed)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
