//! Relaying through a real locator and edge: ordering, addressing, membership.

use std::collections::HashMap;

use duet_client::Event;
use duet_proto::session::{error_code, EdgeFrame, LeaveReason, Role, EVERYONE};
use duet_testkit::{wait_until, Cluster};

use crate::support::*;

const PER_SENDER: u64 = 1000;

/// Host and two guests each send 1,000 messages at once: every receiver sees the same
/// sequence-to-payload mapping, and each sender's messages in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_senders_agree_on_one_order() {
    let cluster = Cluster::start().await;
    // Everyone knows everyone before the burst starts.
    let (_, host, g1, g2) = trio(&cluster).await;

    let mut tasks = Vec::new();
    for mut s in [host, g1, g2] {
        tasks.push(tokio::spawn(async move {
            let me = s.welcome.participant_id;
            let sender = s.sender();
            let send = tokio::spawn(async move {
                for i in 0..PER_SENDER {
                    sender.send(EVERYONE, i + 1, format!("{me}:{i}").into_bytes()).expect("send");
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
            let mut received = Vec::new();
            let mut acks = Vec::new();
            while received.len() < 2 * PER_SENDER as usize || acks.len() < PER_SENDER as usize {
                match tokio::time::timeout(STEP, s.recv()).await.expect("traffic keeps flowing") {
                    Some(Event::Frame(EdgeFrame::Message { seq, from, to, payload })) => {
                        assert_eq!(to, EVERYONE);
                        received.push((seq, from, String::from_utf8(payload.to_vec()).unwrap()));
                    }
                    Some(Event::Frame(EdgeFrame::Ack { message_id, seq })) => acks.push((message_id, seq)),
                    Some(Event::Frame(other)) => panic!("unexpected {other:?}"),
                    other => panic!("connection ended: {other:?}"),
                }
            }
            send.await.unwrap();
            (me, received, acks)
        }));
    }
    let mut by_seq: HashMap<u64, (u32, String)> = HashMap::new();
    for t in tasks {
        let (me, received, acks) = t.await.unwrap();
        // Strictly increasing sequence numbers.
        assert!(received.windows(2).all(|w| w[0].0 < w[1].0), "participant {me} saw events out of order");
        // Each sender's messages in the order sent.
        let mut next_from: HashMap<u32, u64> = HashMap::new();
        for (seq, from, payload) in &received {
            let (sender, index) = payload.split_once(':').unwrap();
            assert_eq!(sender.parse::<u32>().unwrap(), *from);
            let want = next_from.entry(*from).or_insert(0);
            assert_eq!(index.parse::<u64>().unwrap(), *want, "sender {from} reordered for {me}");
            *want += 1;
            if let Some(prev) = by_seq.insert(*seq, (*from, payload.clone())) {
                assert_eq!(prev, (*from, payload.clone()), "seq {seq} maps to two payloads");
            }
        }
        assert_eq!(next_from.len(), 2);
        // Acks in order, one per message, and consistent with what others received.
        assert_eq!(acks.iter().map(|a| a.0).collect::<Vec<_>>(), (1..=PER_SENDER).collect::<Vec<_>>());
        for (mid, seq) in acks {
            let want = (me, format!("{me}:{}", mid - 1));
            if let Some(prev) = by_seq.insert(seq, want.clone()) {
                assert_eq!(prev, want, "ack seq {seq} disagrees with delivery");
            }
        }
    }
    assert_eq!(by_seq.len(), 3 * PER_SENDER as usize);
    cluster.shutdown().await;
}

#[tokio::test]
async fn welcome_lists_everyone_and_ping_is_answered() {
    let cluster = Cluster::start().await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    assert_eq!(host.welcome.participant_id, 1);
    assert_eq!(host.welcome.seq, 0);
    assert_eq!(host.welcome.resume_secret.len(), 32);
    let (gp, g) = guest(&cluster, &placed.session_id, "Bo").await;
    assert_eq!(gp.participant_id, 2);
    assert_eq!(g.welcome.participant_id, 2);
    assert_eq!(g.welcome.seq, 1, "the host's join was event 1");
    let listed: Vec<(u32, Role, &str, &str)> =
        g.welcome.participants.iter().map(|p| (p.id, p.role, p.user_id.as_str(), p.display_name.as_str())).collect();
    assert_eq!(listed, vec![(1, Role::Host, "ada", "Ada"), (2, Role::Guest, "bo", "Bo")]);
    match next_frame(&mut host).await {
        EdgeFrame::ParticipantJoined { seq, participant } => {
            assert_eq!(seq, 2);
            assert_eq!((participant.id, participant.display_name.as_str()), (2, "Bo"));
        }
        other => panic!("{other:?}"),
    }
    host.ping(77).unwrap();
    assert_eq!(next_frame(&mut host).await, EdgeFrame::Pong { nonce: 77 });
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_direct_message_reaches_only_its_target() {
    let cluster = Cluster::start().await;
    let (_, mut host, mut g1, mut g2) = trio(&cluster).await;

    g1.send(3, 5, &b"key for cy"[..]).unwrap();
    g1.send(EVERYONE, 6, &b"marker"[..]).unwrap();
    match next_frame(&mut g2).await {
        EdgeFrame::Message { from, to, payload, .. } => {
            assert_eq!((from, to, &payload[..]), (2, 3, &b"key for cy"[..]))
        }
        other => panic!("{other:?}"),
    }
    match next_frame(&mut host).await {
        EdgeFrame::Message { payload, to, .. } => {
            assert_eq!((to, &payload[..]), (EVERYONE, &b"marker"[..]), "host saw the direct message")
        }
        other => panic!("{other:?}"),
    }
    // Unknown and self-addressed targets are refused without closing or sequencing.
    g1.send(42, 7, &b"x"[..]).unwrap();
    g1.send(2, 8, &b"x"[..]).unwrap();
    let mut errors = Vec::new();
    while errors.len() < 2 {
        match next_frame(&mut g1).await {
            EdgeFrame::Error { code, .. } => errors.push(code),
            EdgeFrame::Ack { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(errors, vec![error_code::UNKNOWN_PARTICIPANT, error_code::SELF_ADDRESSED]);
    g1.send(EVERYONE, 9, &b"after"[..]).unwrap();
    match next_frame(&mut host).await {
        EdgeFrame::Message { seq, payload, .. } => {
            assert_eq!(&payload[..], b"after");
            assert_eq!(seq, 6, "joins 1-3, direct 4, marker 5: refused sends take no number");
        }
        other => panic!("{other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn leaving_going_away_and_the_host_ending_the_session() {
    let cluster = Cluster::start().await;
    let (placed, mut host, mut g1, mut g2) = trio(&cluster).await;

    g1.leave().unwrap();
    assert_eq!(closed(&mut g1).await, Some(1000));
    for s in [&mut host, &mut g2] {
        match next_frame(s).await {
            EdgeFrame::ParticipantLeft { participant_id, reason, .. } => {
                assert_eq!((participant_id, reason), (2, LeaveReason::Left))
            }
            other => panic!("{other:?}"),
        }
    }
    // A dropped connection (close without leave) makes the participant away: it keeps its place.
    g2.close();
    match next_frame(&mut host).await {
        EdgeFrame::ParticipantAway { participant_id, .. } => assert_eq!(participant_id, 3),
        other => panic!("{other:?}"),
    }
    // A new connection with the host's token replaces the old one; its welcome lists the away guest.
    let mut again = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    assert_eq!(closed(&mut host).await, Some(4201));
    assert_eq!(again.welcome.away, vec![3]);
    assert_eq!(again.welcome.participants.iter().map(|p| p.id).collect::<Vec<_>>(), vec![1, 3]);
    // The host ends the session for everyone, itself included.
    again.sender().end_session().unwrap();
    assert_eq!(closed(&mut again).await, Some(4203));

    // The session is over: the locator hears it from the edge and refuses joins with 410.
    let client = cluster.client();
    let id = placed.session_id.clone();
    wait_until("session marked ended", STEP, || {
        let client = client.clone();
        let id = id.clone();
        async move {
            matches!(
                client.join_session(&id, &Default::default()).await,
                Err(duet_client::ClientError::Api { status: 410, .. })
            )
        }
    })
    .await;
    // And the edge refuses late connections with 4200.
    match duet_client::connect(&placed.edge.url, &placed.token).await {
        Err(duet_client::ClientError::Closed { code, .. }) => assert_eq!(code, Some(4200)),
        other => panic!("expected 4200, got {:?}", other.map(|_| ())),
    }
    cluster.shutdown().await;
}

/// Stopping an edge closes its session connections with 4400 ("ask the locator again"), and
/// its readiness turns false first.
#[tokio::test]
async fn edge_shutdown_tells_clients_to_ask_again() {
    let cluster = Cluster::start().await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    let (_, mut g) = guest(&cluster, &placed.session_id, "Bo").await;
    cluster.stop_edge(0);
    assert!(!cluster.edges[0].state.is_ready());
    assert_eq!(closed(&mut host).await, Some(4400));
    assert_eq!(closed(&mut g).await, Some(4400));
    cluster.shutdown().await;
}
