//! ICE servers in placement answers: the configured STUN and TURN URLs as `RTCIceServer`
//! entries on create and join, TURN credentials in coturn's REST API scheme (expiry and
//! participant in the username, the password recomputed here with HMAC-SHA1), and an empty list
//! when nothing is configured.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use duet_testkit::{Cluster, ClusterOptions};
use serde_json::{json, Value};

const TURN_SECRET: &str = "e2e-coturn-static-auth-secret";
const LIFETIME: Duration = Duration::from_secs(3 * 3600);
const STUN: [&str; 2] = ["stun:127.0.0.1:3478", "stuns:stun.example.com:5349"];
const TURN: [&str; 2] = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"];

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// POSTs `{}` to `path`; answers the JSON answer after checking the status.
async fn post(cluster: &Cluster, path: &str, status: u16) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", cluster.url()))
        .json(&json!({}))
        .send()
        .await
        .expect("placement request");
    assert_eq!(res.status().as_u16(), status, "POST {path}");
    res.json().await.unwrap()
}

/// The password coturn derives from a username with `static-auth-secret`.
fn coturn_password(username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, TURN_SECRET.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Checks a TURN username and credential minted for `session_id`/`participant_id` between
/// `before` and `after` (Unix seconds).
fn check_turn_credential(username: &str, credential: &str, session_id: &str, participant_id: u64, before: u64) {
    let (expiry, participant) = username.split_once(':').expect("username is expiry:participant");
    let expiry: u64 = expiry.parse().expect("expiry in Unix seconds");
    let expected = before + LIFETIME.as_secs();
    assert!(expiry.abs_diff(expected) <= 5, "expiry {expiry} is not now + lifetime ({expected}) ± 5 s");
    assert_eq!(participant, format!("{session_id}/{participant_id}"));
    assert!(username.ends_with(&format!("{session_id}/{participant_id}")));
    assert_eq!(credential, coturn_password(username), "the credential verifies with the shared secret");
}

/// Checks a JSON answer's `ice_servers`: the STUN entry exactly, the TURN entry's URLs and its
/// credential; answers the TURN username.
fn check_answer(answer: &Value, before: u64) -> String {
    let servers = answer["ice_servers"].as_array().unwrap_or_else(|| panic!("no ice_servers in {answer}"));
    assert_eq!(servers.len(), 2, "{answer}");
    assert_eq!(servers[0], json!({ "urls": STUN }), "a STUN entry carries only its URLs");
    let turn = servers[1].as_object().unwrap();
    let mut keys: Vec<&str> = turn.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["credential", "urls", "username"]);
    assert_eq!(turn["urls"], json!(TURN));
    let username = turn["username"].as_str().unwrap();
    let session_id = answer["session_id"].as_str().unwrap();
    let participant_id = answer["participant_id"].as_u64().unwrap();
    check_turn_credential(username, turn["credential"].as_str().unwrap(), session_id, participant_id, before);
    username.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_join_answers_carry_stun_and_turn_with_coturn_credentials() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        tweak_locator: Some(Box::new(|config| {
            config.stun_urls = STUN.map(String::from).to_vec();
            config.turn_urls = TURN.map(String::from).to_vec();
            config.turn_secret = Some(TURN_SECRET.into());
            config.turn_credential_lifetime = LIFETIME;
        })),
        ..Default::default()
    })
    .await;
    cluster.add_edge(|_| {}).await;

    let before = unix_now();
    let created = post(&cluster, "/api/v1/sessions", 201).await;
    let host_username = check_answer(&created, before);
    let session_id = created["session_id"].as_str().unwrap();
    let joined = post(&cluster, &format!("/api/v1/sessions/{session_id}/join"), 200).await;
    assert_eq!(joined["participant_id"], 2);
    let guest_username = check_answer(&joined, before);
    assert_ne!(host_username, guest_username, "each participant gets its own credential");

    // The client library reads them too.
    let placed = cluster.client().join_session(session_id, &Default::default()).await.expect("join session");
    assert_eq!(placed.ice_servers.len(), 2);
    assert_eq!(placed.ice_servers[0].urls, STUN);
    assert_eq!((placed.ice_servers[0].username.as_ref(), placed.ice_servers[0].credential.as_ref()), (None, None));
    let turn = &placed.ice_servers[1];
    assert_eq!(turn.urls, TURN);
    check_turn_credential(
        turn.username.as_deref().unwrap(),
        turn.credential.as_deref().unwrap(),
        session_id,
        u64::from(placed.participant_id),
        before,
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stun_or_turn_ice_servers_is_empty() {
    let cluster = Cluster::start().await;
    let created = post(&cluster, "/api/v1/sessions", 201).await;
    assert_eq!(created["ice_servers"], json!([]), "always present, empty: {created}");
    let session_id = created["session_id"].as_str().unwrap();
    let joined = post(&cluster, &format!("/api/v1/sessions/{session_id}/join"), 200).await;
    assert_eq!(joined["ice_servers"], json!([]), "{joined}");
    let placed = cluster.client().create_session(&Default::default()).await.expect("create session");
    assert!(placed.ice_servers.is_empty());
    cluster.shutdown().await;
}
