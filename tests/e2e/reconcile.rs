//! Link loss against edge death, and reconciliation when an edge comes back, in one process
//! with real sockets: the edge reaches the locator through one [`FaultProxy`] and the locator
//! probes the edge's health endpoint through another (the edge's public URL), so a test can
//! cut either path while the edge keeps running. Clients connect to the edge directly.

use std::time::Duration;

use duet_client::{ClientError, Event};
use duet_locator::db::{audit_kind, EntryFilter, Health};
use duet_proto::session::EdgeFrame;
use duet_testkit::proxy::FaultProxy;
use duet_testkit::{wait_for_edge_health, wait_until, Cluster, ClusterOptions};

use crate::support::{next_frame, user};

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    cluster: Cluster,
    /// Edge to locator.
    link: FaultProxy,
    /// Locator to the edge's health endpoint (the edge's public URL points here).
    probe: FaultProxy,
    /// Where clients reach the edge (`ws://host:port`), bypassing the probe proxy.
    edge_url: String,
}

impl Rig {
    async fn start(link_grace: Duration) -> Rig {
        let options =
            ClusterOptions { tweak_locator: Some(Box::new(move |c| c.link_grace = link_grace)), ..Default::default() };
        let mut cluster = Cluster::start_with(options).await;
        let link = FaultProxy::start(cluster.locator.local_addr).await.expect("link proxy");
        // Retargeted at the edge once it listens.
        let probe = FaultProxy::start(cluster.locator.local_addr).await.expect("probe proxy");
        let (link_url, public_url) = (link.http_url(), format!("ws://{}", probe.addr()));
        let edge = cluster
            .add_edge(|c| {
                c.locator_url = link_url;
                c.public_url = Some(public_url);
            })
            .await;
        probe.retarget(edge.local_addr);
        let edge_url = format!("ws://{}", edge.local_addr);
        Rig { cluster, link, probe, edge_url }
    }

    /// Places a session and connects its host and one guest directly to the edge.
    async fn session(&self, name: &str) -> (String, duet_client::Session, duet_client::Session) {
        let client = self.cluster.client();
        let placed = client.create_session(&user(name)).await.expect("create");
        let guest = client.join_session(&placed.session_id, &user("Guest")).await.expect("join");
        let direct = |url: &str| url.replace(&format!("ws://{}", self.probe.addr()), &self.edge_url);
        let mut host = duet_client::connect(&direct(&placed.edge.url), &placed.token).await.expect("host");
        let g = duet_client::connect(&direct(&guest.edge.url), &guest.token).await.expect("guest");
        assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
        (placed.session_id, host, g)
    }

    async fn join_status(&self, session_id: &str) -> Result<(), u16> {
        match self.cluster.client().join_session(session_id, &user("Late")).await {
            Ok(_) => Ok(()),
            Err(ClientError::Api { status, .. }) => Err(status),
            Err(e) => panic!("join failed: {e}"),
        }
    }

    async fn ended(&self, session_id: &str) -> Option<String> {
        let s = self.cluster.locator.state.store.session(session_id).await.expect("read").expect("session");
        s.ended_at.map(|_| s.end_reason.unwrap_or_default())
    }
}

/// The host's message reaches the guest: the session runs on the edge.
async fn relays(host: &duet_client::Session, guest: &mut duet_client::Session, text: &str) {
    host.send(0, 0, text.as_bytes().to_vec()).expect("send");
    loop {
        match tokio::time::timeout(WAIT, guest.recv()).await.expect("message in time") {
            Some(Event::Frame(EdgeFrame::Message { payload, .. })) => {
                assert_eq!(payload.as_ref(), text.as_bytes());
                return;
            }
            Some(Event::Frame(_)) => continue,
            other => panic!("session broke: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_lost_edge_keeps_its_joins_for_the_grace_period_then_refuses() {
    let rig = Rig::start(Duration::from_secs(2)).await;
    let store = &rig.cluster.locator.state.store;
    let (session_id, host, mut guest) = rig.session("Ada").await;

    // The link is cut; the edge still answers its probe: link lost, not unavailable.
    rig.link.blackhole();
    wait_for_edge_health(store, "edge-0", Health::LinkLost, WAIT).await;
    assert_eq!(rig.join_status(&session_id).await, Ok(()), "joins still routed within link_grace");
    assert_eq!(rig.ended(&session_id).await, None);
    relays(&host, &mut guest, "still here").await;
    // No new session goes to an edge without a link.
    let err = rig.cluster.client().create_session(&user("New")).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 503, .. }), "{err}");

    // After the grace period, joins are refused with 503 edge_unreachable.
    wait_until("joins refused after link_grace", WAIT, || async { rig.join_status(&session_id).await == Err(503) })
        .await;
    assert_eq!(store.edge("edge-0").await.unwrap().unwrap().health, Health::LinkLost);

    rig.link.heal();
    wait_for_edge_health(store, "edge-0", Health::Up, WAIT).await;
    assert_eq!(rig.join_status(&session_id).await, Ok(()));
    relays(&host, &mut guest, "never noticed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_back_from_unavailable_gets_its_sessions_restored_and_stale_ones_ended() {
    let rig = Rig::start(Duration::from_secs(60)).await;
    let store = &rig.cluster.locator.state.store;
    let (alive, host, mut guest) = rig.session("Ada").await;
    let (stale, mut stale_host, _stale_guest) = rig.session("Bo").await;
    // The locator ends `stale` (as an admin on a replica without the edge's link might) without
    // the edge hearing of it.
    assert!(store.mark_session_ended(&stale, "ended", duet_locator::tokens::now_ms()).await.unwrap());

    // A partition hides both the link and the probe: the edge is declared dead.
    rig.link.blackhole();
    rig.probe.blackhole();
    wait_for_edge_health(store, "edge-0", Health::Unavailable, WAIT).await;
    assert_eq!(rig.ended(&alive).await.as_deref(), Some("edge_unavailable"));
    assert_eq!(rig.join_status(&alive).await, Err(410));
    // The sessions themselves never depended on the locator.
    relays(&host, &mut guest, "during the partition").await;

    rig.link.heal();
    rig.probe.heal();
    wait_for_edge_health(store, "edge-0", Health::Up, WAIT).await;
    wait_until("the live session is restored", WAIT, || async { rig.ended(&alive).await.is_none() }).await;
    assert_eq!(rig.join_status(&alive).await, Ok(()));
    relays(&host, &mut guest, "after the partition").await;
    let restored = EntryFilter {
        session_id: Some(alive.clone()),
        kind: Some(audit_kind::SESSION_RESTORED.into()),
        ..Default::default()
    };
    assert_eq!(store.audit_entries(&restored, 10, None).await.unwrap().0.len(), 1);
    for kind in [audit_kind::EDGE_UNAVAILABLE, audit_kind::EDGE_RECOVERED] {
        let filter = EntryFilter { edge_id: Some("edge-0".into()), kind: Some(kind.into()), ..Default::default() };
        assert_eq!(store.audit_entries(&filter, 10, None).await.unwrap().0.len(), 1, "one {kind} entry");
    }

    // The stale session is ended on the edge by the locator's command.
    loop {
        match tokio::time::timeout(WAIT, stale_host.recv()).await.expect("stale session ends in time") {
            Some(Event::Closed { code, .. }) => {
                assert_eq!(code, Some(duet_proto::CloseCode::SessionEnded.code()));
                break;
            }
            Some(Event::Frame(_)) => continue,
            None => panic!("closed without a code"),
        }
    }
    assert_eq!(rig.ended(&stale).await.as_deref(), Some("ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ended_while_the_link_was_down_is_ended_on_return() {
    let rig = Rig::start(Duration::from_secs(60)).await;
    let store = &rig.cluster.locator.state.store;
    let (session_id, host, guest) = rig.session("Ada").await;
    rig.link.blackhole();
    wait_for_edge_health(store, "edge-0", Health::LinkLost, WAIT).await;
    // Everyone leaves while the locator cannot hear it.
    for s in [&guest, &host] {
        s.leave().expect("leave");
    }
    let state = rig.cluster.edges[0].state.clone();
    wait_until("the session ended on the edge", WAIT, || {
        let gone = !state.live_sessions().contains(&session_id);
        async move { gone }
    })
    .await;
    assert_eq!(rig.ended(&session_id).await, None, "the locator has not heard yet");

    rig.link.heal();
    wait_for_edge_health(store, "edge-0", Health::Up, WAIT).await;
    wait_until("the session is ended in the database", WAIT, || async { rig.ended(&session_id).await.is_some() }).await;
    let reason = rig.ended(&session_id).await.unwrap();
    assert!(["ended_while_unlinked", "empty"].contains(&reason.as_str()), "{reason}");
    assert_eq!(rig.join_status(&session_id).await, Err(410));
}
