//! Who may start and join sessions: per-team client keys, OpenID Connect ID tokens verified
//! against a JWKS this test serves itself (a real HTTP server on loopback, keys generated here),
//! and the public API's per-address rate limit. Against a real locator and edge.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use duet_locator::access::{Mode, OidcConfig};
use duet_testkit::{Cluster, ClusterOptions};
use serde_json::{json, Value};

use crate::support::Admin;

/// `(status, body)` of a public API call with an optional bearer credential.
async fn public(cluster: &Cluster, method: &str, path: &str, credential: Option<&str>, body: Value) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(m, format!("{}{path}", cluster.url()));
    if method != "GET" {
        req = req.json(&body);
    }
    if let Some(c) = credential {
        req = req.bearer_auth(c);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn cluster_with(tweak: impl FnOnce(&mut duet_locator::LocatorConfig) + Send + 'static) -> Cluster {
    let options = ClusterOptions { tweak_locator: Some(Box::new(tweak)), ..Default::default() };
    let mut cluster = Cluster::start_with(options).await;
    cluster.add_edge(|_| {}).await;
    cluster
}

#[tokio::test]
async fn client_keys_admit_their_team_only() {
    let cluster = cluster_with(|c| c.client_auth = vec![Mode::Keys]).await;
    let admin = Admin::new(&cluster);
    let (code, body) = public(&cluster, "POST", "/api/v1/sessions", None, json!({})).await;
    assert_eq!((code, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("client key"), "{body}");
    let red = admin.ok("POST", "/client-keys", Some(json!({ "team": "red", "name": "laptops" }))).await;
    let red_key = red["key"].as_str().unwrap().to_owned();
    assert!(red_key.starts_with("duetck_"), "{red}");
    let (code, _) = admin.call("POST", "/client-keys", Some(json!({ "team": "red", "name": "laptops" }))).await;
    assert_eq!(code, 409);
    let blue = admin.ok("POST", "/client-keys", Some(json!({ "team": "blue", "name": "laptops" }))).await;
    let blue_key = blue["key"].as_str().unwrap().to_owned();

    // A red key starts red sessions (the team comes from the key), never blue ones.
    let (code, placed) = public(&cluster, "POST", "/api/v1/sessions", Some(&red_key), json!({})).await;
    assert_eq!(code, 201, "{placed}");
    let id = placed["session_id"].as_str().unwrap().to_owned();
    assert_eq!(admin.ok("GET", &format!("/sessions/{id}"), None).await["session"]["team"], "red");
    let (code, body) = public(&cluster, "POST", "/api/v1/sessions", Some(&red_key), json!({ "team": "blue" })).await;
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let join = format!("/api/v1/sessions/{id}/join");
    assert_eq!(public(&cluster, "POST", &join, Some(&red_key), json!({})).await.0, 200);
    assert_eq!(public(&cluster, "POST", &join, Some(&blue_key), json!({})).await.0, 403);
    assert_eq!(public(&cluster, "GET", "/api/v1/teams/red/presence", Some(&red_key), Value::Null).await.0, 200);
    assert_eq!(public(&cluster, "GET", "/api/v1/teams/red/presence", Some(&blue_key), Value::Null).await.0, 403);
    for bad in ["duetck_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "garbage", "eyJhbGciOiJub25lIn0.e30."] {
        let (code, body) = public(&cluster, "POST", "/api/v1/sessions", Some(bad), json!({})).await;
        assert_eq!(code, 401, "{bad}: {body}");
    }

    // The client library sends the key it is given.
    let placed = cluster.client().with_credential(red_key.clone()).create_session(&Default::default()).await.unwrap();
    duet_client::connect(&placed.edge.url, &placed.token).await.expect("the keyed host connects to its edge");
    let refused = cluster.client().create_session(&Default::default()).await.unwrap_err();
    assert!(matches!(refused, duet_client::ClientError::Api { status: 401, .. }), "{refused:?}");

    let listed = admin.ok("GET", "/client-keys?team=red", None).await;
    assert_eq!(listed["client_keys"].as_array().unwrap().len(), 1);
    assert!(listed["client_keys"][0]["last_used_at"].is_string() && listed["client_keys"][0].get("key").is_none());
    let red_id = red["id"].as_str().unwrap();
    admin.ok("DELETE", &format!("/client-keys/{red_id}"), None).await;
    let (code, body) = public(&cluster, "POST", "/api/v1/sessions", Some(&red_key), json!({})).await;
    assert_eq!(code, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    let audit = admin.ok("GET", "/audit?kind=client_key_revoked", None).await;
    assert_eq!(audit["entries"][0]["actor"], "token:root");
    cluster.shutdown().await;
}

/// An OpenID provider of our own: a P-256 key, its JWKS and discovery document on loopback.
struct Provider {
    issuer: String,
    pkcs8: Vec<u8>,
    server: tokio::task::JoinHandle<()>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn new_key() -> (EcdsaKeyPair, Vec<u8>) {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    let pkcs8 = doc.as_ref().to_vec();
    (EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap(), pkcs8)
}

impl Provider {
    async fn start() -> Provider {
        let (key, pkcs8) = new_key();
        let point = key.public_key().as_ref().to_vec();
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/keys") });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route("/keys", axum::routing::get(move || async move { axum::Json(jwks) }));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Provider { issuer, pkcs8, server }
    }

    /// An ID token with a changed header.
    fn token_with_header(&self, change: impl FnOnce(&mut jsonwebtoken::Header), claims: Value) -> String {
        let parts: Vec<String> = self.token(claims).split('.').map(str::to_owned).collect();
        let mut header: jsonwebtoken::Header =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
        change(&mut header);
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }

    /// An ID token with these claims over the defaults, signed with `pkcs8` under `kid`.
    fn token_with(&self, pkcs8: &[u8], kid: &str, claims: Value) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut all = json!({ "iss": self.issuer, "aud": "duet", "sub": "u-ada", "name": "Ada L.", "iat": now, "exp": now + 300 });
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &all, &jsonwebtoken::EncodingKey::from_ec_der(pkcs8)).unwrap()
    }

    fn token(&self, claims: Value) -> String {
        self.token_with(&self.pkcs8, "k1", claims)
    }
}

#[tokio::test]
async fn oidc_id_tokens_are_verified_against_the_providers_jwks() {
    let provider = Arc::new(Provider::start().await);
    let issuer = provider.issuer.clone();
    let cluster = cluster_with(move |c| {
        c.client_auth = vec![Mode::Oidc];
        c.oidc = Some(OidcConfig {
            issuer,
            audience: "duet".into(),
            jwks_url: None,
            team_claim: Some("groups".into()),
            name_claim: "name".into(),
        });
    })
    .await;
    let admin = Admin::new(&cluster);
    let good = provider.token(json!({ "groups": ["red"] }));
    // The user is who the token says, whatever the request claims.
    let body = json!({ "team": "red", "user": { "id": "mallory", "name": "Mallory" } });
    let (code, placed) = public(&cluster, "POST", "/api/v1/sessions", Some(&good), body).await;
    assert_eq!(code, 201, "{placed}");
    let id = placed["session_id"].as_str().unwrap();
    let detail = admin.ok("GET", &format!("/sessions/{id}"), None).await;
    assert_eq!(
        (&detail["participants"][0]["user_id"], &detail["participants"][0]["display_name"]),
        (&json!("u-ada"), &json!("Ada L."))
    );
    let (code, body) = public(&cluster, "POST", "/api/v1/sessions", Some(&good), json!({ "team": "blue" })).await;
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (code, _) = public(&cluster, "GET", "/api/v1/teams/red/presence", Some(&good), Value::Null).await;
    assert_eq!(code, 200);
    let shared = provider.token(json!({ "aud": ["duet", "other-app"], "azp": "duet", "groups": ["red"] }));
    let (code, body) = public(&cluster, "POST", "/api/v1/sessions", Some(&shared), json!({ "team": "red" })).await;
    assert_eq!(code, 201, "several audiences with this client as azp: {body}");

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (_, other_pkcs8) = new_key();
    let refused = [
        ("no credential", None),
        ("wrong audience", Some(provider.token(json!({ "aud": "other-app", "groups": ["red"] })))),
        ("wrong issuer", Some(provider.token(json!({ "iss": "http://evil.example", "groups": ["red"] })))),
        ("expired", Some(provider.token(json!({ "exp": now - 3600, "groups": ["red"] })))),
        (
            "another key under the provider's kid",
            Some(provider.token_with(&other_pkcs8, "k1", json!({ "groups": ["red"] }))),
        ),
        ("an unknown kid", Some(provider.token_with(&other_pkcs8, "k9", json!({ "groups": ["red"] })))),
        (
            "HMAC",
            Some(
                jsonwebtoken::encode(
                    &jsonwebtoken::Header::default(),
                    &json!({ "sub": "x", "exp": now + 60 }),
                    &jsonwebtoken::EncodingKey::from_secret(b"k"),
                )
                .unwrap(),
            ),
        ),
        ("garbage", Some("not.a.jwt".to_owned())),
        (
            "several audiences without azp",
            Some(provider.token(json!({ "aud": ["duet", "other-app"], "groups": ["red"] }))),
        ),
        ("another client's azp", Some(provider.token(json!({ "azp": "other-app", "groups": ["red"] })))),
        ("not yet valid", Some(provider.token(json!({ "nbf": now + 3600, "groups": ["red"] })))),
        (
            "a critical extension",
            Some(provider.token_with_header(|h| h.crit = Some(vec!["b64".into()]), json!({ "groups": ["red"] }))),
        ),
        ("20 KiB", Some(provider.token(json!({ "groups": ["red"], "pad": "x".repeat(20_000) })))),
    ];
    for (what, credential) in refused {
        let (code, body) =
            public(&cluster, "POST", "/api/v1/sessions", credential.as_deref(), json!({ "team": "red" })).await;
        assert_eq!((code, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{what}: {body}");
    }
    provider.server.abort();
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_public_api_limits_requests_per_address() {
    let cluster = cluster_with(|c| c.public_rate_limit = 1).await;
    let mut limited = None;
    for _ in 0..10 {
        let res = reqwest::Client::new().post(format!("{}/api/v1/sessions", cluster.url())).send().await.unwrap();
        if res.status().as_u16() == 429 {
            limited =
                Some((res.headers()["retry-after"].to_str().unwrap().to_owned(), res.json::<Value>().await.unwrap()));
            break;
        }
        assert_eq!(res.status().as_u16(), 201);
    }
    let (retry_after, body) = limited.expect("a burst of 10 at 1/s is limited");
    assert!(retry_after.parse::<u64>().unwrap() >= 1, "{retry_after}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // The admin API is not the public API's budget.
    Admin::new(&cluster).ok("GET", "/edges", None).await;
    cluster.shutdown().await;
}
