//! Team presence: the locator assigns a team to an edge, clients there see who is online and
//! which of the team's sessions are live, and when that edge dies the team moves.

use std::time::Duration;

use duet_client::{Event, Presence, PresencePlacement, User};
use duet_proto::presence::PresenceFrame;
use duet_testkit::{wait_until, Cluster, ClusterOptions};

use crate::support::{Admin, STEP};

fn who(name: &str) -> User {
    User { id: name.to_lowercase(), name: name.into() }
}

/// Reads snapshots until one satisfies `want`; answers it as (members' ids, sessions).
async fn snapshot_where(p: &mut Presence, want: impl Fn(&[String], &[String]) -> bool) -> (Vec<String>, Vec<String>) {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let next = tokio::time::timeout_at(deadline, p.recv()).await.expect("a matching snapshot in time");
        match next {
            Some(Ok(PresenceFrame::Snapshot { members, sessions, .. })) => {
                let ids: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
                if want(&ids, &sessions) {
                    return (ids, sessions);
                }
            }
            Some(Ok(PresenceFrame::Pong { .. })) => {}
            Some(Err(e)) => panic!("presence closed: {e:?}"),
            None => panic!("presence ended"),
        }
    }
}

async fn join(cluster: &Cluster, team: &str, name: &str) -> (PresencePlacement, Presence) {
    let placed = cluster.client().presence(team, Some(&who(name))).await.expect("presence placement");
    let conn = duet_client::connect_presence(&placed.edge.url, &placed.token).await.expect("presence connects");
    (placed, conn)
}

#[tokio::test]
async fn presence_shows_the_team_and_follows_it_to_a_new_edge_when_its_edge_dies() {
    let mut cluster = Cluster::start_with(ClusterOptions::default()).await;
    cluster.add_edge(|_| {}).await;
    cluster.add_edge(|_| {}).await;
    let team = "platform team/eu";

    let (first, mut ada) = join(&cluster, team, "Ada").await;
    assert!(first.edge.url.ends_with("/v1/teams/platform%20team%2Feu/presence"), "{}", first.edge.url);
    snapshot_where(&mut ada, |m, _| m == ["ada"]).await;
    let (second, mut bo) = join(&cluster, team, "Bo").await;
    assert_eq!(second.edge.id, first.edge.id, "one edge per team");
    snapshot_where(&mut ada, |m, _| m == ["ada", "bo"]).await;
    snapshot_where(&mut bo, |m, _| m == ["ada", "bo"]).await;

    // A session of the team, wherever it runs, shows up as live once its host connects.
    let req = duet_client::PlacementRequest { team: Some(team.into()), ..crate::support::user("Ada") };
    let placed = cluster.client().create_session(&req).await.unwrap();
    let host = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    let id = placed.session_id.clone();
    snapshot_where(&mut bo, |_, s| s.contains(&id)).await;
    // Its end is seen too.
    host.leave().unwrap();
    snapshot_where(&mut bo, |_, s| !s.contains(&id)).await;

    // The team's edge dies: its presence connections close, and asking again leads elsewhere.
    let dead = cluster.edges.iter().position(|e| e.state.edge_id == first.edge.id).unwrap();
    cluster.stop_edge(dead);
    for p in [&mut ada, &mut bo] {
        loop {
            match tokio::time::timeout(STEP, p.recv()).await.expect("closed in time") {
                Some(Ok(_)) => {}
                Some(Err(Event::Closed { code, .. })) => {
                    assert_eq!(code, Some(4400), "an edge shutting down says so");
                    break;
                }
                Some(Err(other)) => panic!("{other:?}"),
                None => panic!("the presence connection ended without a close frame"),
            }
        }
    }
    let client = cluster.client();
    let dead_id = first.edge.id.clone();
    wait_until("the team is assigned to a live edge", Duration::from_secs(20), || {
        let client = client.clone();
        let dead_id = dead_id.clone();
        async move { client.presence(team, Some(&who("Ada"))).await.is_ok_and(|p| p.edge.id != dead_id) }
    })
    .await;
    let (moved, mut ada) = join(&cluster, team, "Ada").await;
    assert_ne!(moved.edge.id, first.edge.id);
    let (again, bo) = join(&cluster, team, "Bo").await;
    assert_eq!(again.edge.id, moved.edge.id);
    snapshot_where(&mut ada, |m, _| m == ["ada", "bo"]).await;
    // Two windows of one user are one member with two connections.
    let (_, mut ada2) = join(&cluster, team, "Ada").await;
    let (members, _) = snapshot_where(&mut ada2, |m, _| m == ["ada", "bo"]).await;
    assert_eq!(members.len(), 2);
    ada2.ping(5).unwrap();
    bo.close();
    snapshot_where(&mut ada, |m, _| m == ["ada"]).await;

    let admin = Admin::new(&cluster);
    let page = admin.ok("GET", "/audit?kind=presence_moved", None).await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    assert!(entries[0]["detail"].as_str().unwrap().contains(&first.edge.id));
    cluster.shutdown().await;
}

#[tokio::test]
async fn presence_refuses_bad_teams_queries_and_tokens() {
    let cluster = Cluster::start().await;
    let client = cluster.client();
    let long = "t".repeat(129);
    match client.presence(&long, None).await {
        Err(duet_client::ClientError::Api { status: 400, .. }) => {}
        other => panic!("{:?}", other.map(|p| p.team)),
    }
    let http = reqwest::Client::new();
    let resp = http.get(format!("{}/api/v1/teams/x/presence?color=red", cluster.url())).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    for team in ["%FF", "a%07b"] {
        let resp = http.get(format!("{}/api/v1/teams/{team}/presence", cluster.url())).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{team}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{team}: {body}");
    }
    // `.` and `..` cannot be named in a URL that clients would not normalize away: refused.
    // (Sent raw: an HTTP client library would resolve the dot segments itself.)
    for team in ["%2E", "%2E%2E"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = cluster.locator.local_addr;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /api/v1/teams/{team}/presence HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(STEP, tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{team}: {answer}");
        assert!(answer.contains("bad_request"), "{team}: {answer}");
    }

    // A session token is not a presence token, and a presence token is for its team only.
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    let presence = client.presence("a", None).await.unwrap();
    let mut wrong = duet_client::connect_presence(&presence.edge.url, &placed.token).await.unwrap();
    assert!(matches!(wrong.recv().await, Some(Err(Event::Closed { code: Some(4102), .. }))));
    let other = presence.edge.url.replace("/teams/a/", "/teams/b/");
    let mut wrong = duet_client::connect_presence(&other, &presence.token).await.unwrap();
    assert!(matches!(wrong.recv().await, Some(Err(Event::Closed { code: Some(4102), .. }))));
    // Anonymous members get a made-up id.
    let mut anon = duet_client::connect_presence(&presence.edge.url, &presence.token).await.unwrap();
    let (members, _) = snapshot_where(&mut anon, |m, _| m.len() == 1).await;
    assert!(members[0].starts_with("anon-"));
    cluster.shutdown().await;
}

/// Two locator replicas over one database: the team's presence edge is linked to one, the
/// team's session runs on an edge linked to the other, and the session still shows up in the
/// team's presence (the first replica's periodic sync reads it from the database).
#[tokio::test]
async fn a_session_reported_to_another_replica_reaches_the_presence_edge() {
    let db = duet_testkit::TestDb::fresh(duet_locator::db::Dialect::Sqlite).await.unwrap();
    let options = || ClusterOptions { database_url: Some(db.url.clone()), ..Default::default() };
    let mut a = Cluster::start_with(options()).await;
    a.add_edge(|c| c.id = Some("edge-a".into())).await;
    let mut b = Cluster::start_with(options()).await;
    b.add_edge(|c| {
        c.id = Some("edge-b".into());
        c.region = "elsewhere".into();
    })
    .await;
    let team = "two-replicas";
    // The presence request wants the default region: edge-a, linked to replica a.
    let presence = a.client().presence(team, Some(&who("Ada"))).await.unwrap();
    assert_eq!(presence.edge.id, "edge-a");
    let mut ada = duet_client::connect_presence(&presence.edge.url, &presence.token).await.unwrap();
    snapshot_where(&mut ada, |m, _| m == ["ada"]).await;

    // A session of the team placed in the other region: edge-b, whose events go to replica b.
    let req = duet_client::PlacementRequest {
        team: Some(team.into()),
        region: Some("elsewhere".into()),
        ..crate::support::user("Bo")
    };
    let placed = b.client().create_session(&req).await.unwrap();
    assert_eq!(placed.edge.id, "edge-b");
    let host = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    let id = placed.session_id.clone();
    snapshot_where(&mut ada, |_, s| s.contains(&id)).await;
    host.leave().unwrap();
    snapshot_where(&mut ada, |_, s| s.is_empty()).await;
    b.shutdown().await;
    a.shutdown().await;
}
