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
