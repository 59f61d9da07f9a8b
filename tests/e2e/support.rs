//! Helpers shared by the e2e modules.

use std::time::Duration;

use duet_client::{Event, Placement, PlacementRequest, Session, User};
use duet_proto::session::EdgeFrame;
use duet_testkit::Cluster;

pub const STEP: Duration = Duration::from_secs(10);

pub fn user(name: &str) -> PlacementRequest {
    PlacementRequest { user: Some(User { id: name.to_lowercase(), name: name.into() }), ..Default::default() }
}

/// Creates a session and connects its host.
pub async fn host(cluster: &Cluster, name: &str) -> (Placement, Session) {
    let placed = cluster.client().create_session(&user(name)).await.expect("create session");
    let session = duet_client::connect(&placed.edge.url, &placed.token).await.expect("host connects");
    (placed, session)
}

/// Joins a session as a guest and connects.
pub async fn guest(cluster: &Cluster, session_id: &str, name: &str) -> (Placement, Session) {
    let placed = cluster.client().join_session(session_id, &user(name)).await.expect("join session");
    let session = duet_client::connect(&placed.edge.url, &placed.token).await.expect("guest connects");
    (placed, session)
}

/// The next frame, failing the test on close or timeout.
pub async fn next_frame(s: &mut Session) -> EdgeFrame {
    match tokio::time::timeout(STEP, s.recv()).await {
        Ok(Some(Event::Frame(f))) => f,
        Ok(other) => panic!("expected a frame, got {other:?}"),
        Err(_) => panic!("no frame within {STEP:?}"),
    }
}

/// Skips frames until the connection closes; returns the close code.
pub async fn closed(s: &mut Session) -> Option<u16> {
    loop {
        match tokio::time::timeout(STEP, s.recv()).await {
            Ok(Some(Event::Closed { code, .. })) => return code,
            Ok(Some(Event::Frame(_))) => continue,
            Ok(None) => return None,
            Err(_) => panic!("connection not closed within {STEP:?}"),
        }
    }
}

/// A host (Ada) and two guests (Bo, Cy) in one session, with the join announcements already
/// consumed, so the next frame each one sees is new traffic.
pub async fn trio(cluster: &Cluster) -> (Placement, Session, Session, Session) {
    let (placed, mut host) = host(cluster, "Ada").await;
    let (_, mut g1) = guest(cluster, &placed.session_id, "Bo").await;
    let (_, g2) = guest(cluster, &placed.session_id, "Cy").await;
    for _ in 0..2 {
        assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
    }
    assert!(matches!(next_frame(&mut g1).await, EdgeFrame::ParticipantJoined { .. }));
    (placed, host, g1, g2)
}

/// A client of the admin API with the test admin token.
#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    pub fn new(cluster: &Cluster) -> Admin {
        Admin::at(&cluster.url(), duet_testkit::TEST_ADMIN_TOKEN)
    }

    pub fn at(locator_url: &str, token: &str) -> Admin {
        Admin { http: reqwest::Client::new(), base: format!("{locator_url}/api/v1/admin"), token: token.into() }
    }

    /// Sends a request; answers (status, JSON body or `null`).
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("admin request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, if text.is_empty() { serde_json::Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    /// Like [`Admin::call`], failing the test unless the status is 2xx.
    pub async fn ok(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let (status, value) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {value}");
        value
    }

    pub async fn add_rule(&self, kind: &str, matcher: &str, region: &str) -> i64 {
        let rule = serde_json::json!({ "kind": kind, "match": matcher, "region": region });
        self.ok("POST", "/regions/rules", Some(rule)).await["id"].as_i64().unwrap()
    }
}

/// Creates a session as a client behind the locator's trusted proxy at `forwarded_for`;
/// answers the whole JSON answer.
pub async fn place_from(cluster: &Cluster, forwarded_for: &str) -> serde_json::Value {
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/sessions", cluster.url()))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("create session");
    assert_eq!(res.status().as_u16(), 201, "placement from {forwarded_for}");
    res.json().await.unwrap()
}
