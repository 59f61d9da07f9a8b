//! Tokens: the edge verifies them locally and refuses bad ones with documented close codes.

use std::time::Duration;

use duet_client::ClientError;
use duet_locator::tokens::{generate_key, Signer};
use duet_proto::token::Claims;
use duet_testkit::Cluster;

fn claims(session: &str, edge: &str) -> Claims {
    Claims {
        sid: session.into(),
        role: "guest".into(),
        pid: 9,
        sub: "mallory".into(),
        name: "Mallory".into(),
        team: None,
        appr: false,
        maxp: None,
        edge: edge.into(),
        iat: 0,
        exp: 0,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

async fn refused_with(url: &str, token: &str) -> Option<u16> {
    match duet_client::connect(url, token).await {
        Err(ClientError::Closed { code, .. }) => code,
        Err(e) => panic!("expected a close code, got {e}"),
        Ok(_) => panic!("token was accepted"),
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_close_codes() {
    let cluster = Cluster::start().await;
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    let edge_id = placed.edge.id.clone();
    let url = placed.edge.url.clone();
    let signer = cluster.locator.state.signer();

    // Expired beyond the 30 s leeway.
    let expired = signer.sign_until(claims(&placed.session_id, &edge_id), now() - 120).unwrap();
    assert_eq!(refused_with(&url, &expired).await, Some(4101));
    // Within the leeway it is still accepted.
    let barely = signer.sign_until(claims(&placed.session_id, &edge_id), now() - 5).unwrap();
    duet_client::connect(&url, &barely).await.expect("leeway");

    // For another session (the URL names this one).
    let other = signer.sign_until(claims("s_other", &edge_id), now() + 60).unwrap();
    assert_eq!(refused_with(&url, &other).await, Some(4102));
    // For another edge.
    let elsewhere = signer.sign_until(claims(&placed.session_id, "edge-elsewhere"), now() + 60).unwrap();
    assert_eq!(refused_with(&url, &elsewhere).await, Some(4103));

    // Forged: signed by a key the locator never issued, once under an unknown key id and once
    // claiming the real key id.
    let rogue = generate_key(0).unwrap();
    let forger = Signer::from_records(std::slice::from_ref(&rogue), Duration::from_secs(60)).unwrap();
    let forged = forger.sign_until(claims(&placed.session_id, &edge_id), now() + 60).unwrap();
    assert_eq!(refused_with(&url, &forged).await, Some(4100));
    let mut impostor = rogue.clone();
    impostor.kid = signer.verifying_keys()[0].kid.clone();
    let forger = Signer::from_records(&[impostor], Duration::from_secs(60)).unwrap();
    let forged = forger.sign_until(claims(&placed.session_id, &edge_id), now() + 60).unwrap();
    assert_eq!(refused_with(&url, &forged).await, Some(4100));
    // A valid token with its payload swapped for another session's.
    let good = signer.sign_until(claims(&placed.session_id, &edge_id), now() + 60).unwrap();
    let theirs = signer.sign_until(claims("s_other", &edge_id), now() + 60).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let other_parts: Vec<&str> = theirs.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(refused_with(&url, &spliced).await, Some(4100));
    // Garbage.
    assert_eq!(refused_with(&url, "not a token").await, Some(4100));
    assert_eq!(refused_with(&url, "").await, Some(4100));
    cluster.shutdown().await;
}

/// Edges cache the locator's keys on disk: an edge restarted while the locator is down still
/// admits participants with valid tokens.
#[tokio::test]
async fn keys_survive_an_edge_restart_without_the_locator() {
    let mut cluster = Cluster::start().await;
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    let config = cluster.edge_config(0);
    let edge_id = cluster.edges[0].state.edge_id.clone();
    // Stop the locator (the edge keeps running), then restart the edge on a new port.
    cluster.locator.state.shutdown.cancel();
    cluster.stop_edge(0);
    let old = cluster.edges.remove(0);
    old.wait().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let edge = duet_edge::start(config, listener, token.clone()).await.unwrap();
    assert_eq!(edge.state.edge_id, edge_id);
    assert!(!edge.state.keys.is_empty(), "keys loaded from the cache");
    // Not ready until it registers (orchestrators route nothing new to it), yet it serves the
    // sessions whose participants hold tokens.
    assert!(!edge.state.is_ready(), "ready before registering");
    let url = format!("ws://{addr}/v1/sessions/{}", placed.session_id);
    let session = duet_client::connect(&url, &placed.token).await.expect("admitted with cached keys");
    assert_eq!(session.welcome.participant_id, 1);
    token.cancel();
    edge.wait().await;
    cluster.shutdown().await;
}

/// Keys rotate on schedule; the new key reaches linked edges (and their disk cache) before it
/// matters, and tokens signed with the previous key keep working.
#[tokio::test]
async fn rotated_keys_reach_edges_and_old_tokens_stay_valid() {
    let mut cluster = Cluster::start_with(duet_testkit::ClusterOptions {
        tweak_locator: Some(Box::new(|c| c.key_rotation_interval = Duration::from_secs(1))),
        ..Default::default()
    })
    .await;
    cluster.add_edge(|_| {}).await;
    let before = cluster.client().create_session(&Default::default()).await.unwrap();
    let first_kid = cluster.locator.state.signer().verifying_keys()[0].kid.clone();
    let state = cluster.locator.state.clone();
    let edge = cluster.edges[0].state.clone();
    duet_testkit::wait_until("a rotated key known to the edge", Duration::from_secs(15), || {
        let signing = state.signer().verifying_keys()[0].kid.clone();
        let known = edge.keys.kids();
        let first_kid = first_kid.clone();
        async move { signing != first_kid && known.contains(&signing) && known.contains(&first_kid) }
    })
    .await;
    let cache = std::fs::read_to_string(cluster.edge_config(0).data_dir.join("keys.json")).unwrap();
    assert!(cache.contains(&first_kid));
    // The token from before the rotation still admits its holder.
    let s = duet_client::connect(&before.edge.url, &before.token).await.expect("pre-rotation token accepted");
    assert_eq!(s.welcome.participant_id, 1);
    // New tokens are signed with a newer key, which the edge accepts.
    let after = cluster.client().join_session(&before.session_id, &Default::default()).await.unwrap();
    let header = jsonwebtoken::decode_header(&after.token).unwrap();
    assert_ne!(header.kid.as_deref(), Some(first_kid.as_str()));
    duet_client::connect(&after.edge.url, &after.token).await.expect("post-rotation token accepted");
    cluster.shutdown().await;
}
