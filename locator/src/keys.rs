//! Keeps the token keys current: rotates and retires them on schedule ([`tokens::maintain`]),
//! picks up keys other replicas made, and pushes every change to the edges linked here, which
//! cache them on disk.

use std::sync::Arc;
use std::time::Duration;

use duet_proto::link::Command;

use crate::tokens::{self, KeyPolicy, Signer};
use crate::LocatorState;

/// Keys are checked at a quarter of the rotation interval, at most every 30 s and at least every
/// 100 ms: a new key reaches edges well before it signs the first tokens of other replicas.
pub fn check_interval(rotate_after: Duration) -> Duration {
    (rotate_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

pub async fn run(state: Arc<LocatorState>) {
    let policy = KeyPolicy::new(state.config.key_rotation_interval, state.config.token_ttl);
    let every = check_interval(policy.rotate_after);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = state.shutdown.cancelled() => return,
        }
        if let Err(e) = tokens::maintain(&state.store, tokens::now_ms(), policy).await {
            tracing::warn!(error = %e, "key maintenance failed");
            continue;
        }
        reload(&state).await;
    }
}

/// Reloads the key set from the database; when it changed, swaps the signer and tells the edges.
pub async fn reload(state: &LocatorState) {
    let keys = match state.store.signing_keys().await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, "could not load signing keys");
            return;
        }
    };
    let current: Vec<String> = state.signer().verifying_keys().into_iter().map(|k| k.kid).collect();
    let loaded: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
    if current == loaded {
        return;
    }
    match Signer::from_records(&keys, state.config.token_ttl) {
        Ok(signer) => {
            let verifying = signer.verifying_keys();
            state.set_signer(signer);
            tracing::info!(keys = loaded.len(), signing = %loaded[0], "token keys changed; telling edges");
            state.links.broadcast(&Command::UpdateKeys { keys: verifying });
        }
        Err(e) => tracing::error!(error = %e, "stored signing keys are unusable"),
    }
}
