//! Sessions that survive the network: resume from the replay window, re-sends stored once, the
//! host's grace, the session lifecycle (idle timeout, participant limit, host approval), slow
//! readers, and the per-connection limits. Real locator and edge, real sockets on loopback.

use std::time::Duration;

use bytes::Bytes;
use duet_client::{ClientError, Event, PlacementRequest, Session, SessionOptions};
use duet_edge::EdgeConfig;
use duet_proto::session::{error_code, EdgeFrame, Role};
use duet_testkit::{Cluster, ClusterOptions};

use crate::support::{closed, guest, host, next_frame, trio, user, STEP};

async fn cluster_with(tweak: impl FnOnce(&mut EdgeConfig)) -> Cluster {
    let mut cluster = Cluster::start_with(ClusterOptions::default()).await;
    cluster.add_edge(tweak).await;
    cluster
}

/// Frames until the next `message`, skipping presence events.
async fn next_message(s: &mut Session) -> (u64, Bytes) {
    loop {
        match next_frame(s).await {
            EdgeFrame::Message { seq, payload, .. } => return (seq, payload),
            EdgeFrame::ParticipantAway { .. } | EdgeFrame::ParticipantBack { .. } => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn expect_refusal(result: Result<Session, ClientError>) -> Option<u16> {
    match result {
        Err(ClientError::Closed { code, .. }) => code,
        Ok(_) => panic!("expected a refusal, got a session"),
        Err(other) => panic!("expected a close, got {other}"),
    }
}

/// Waits until the session has an audit entry of `kind` whose detail contains `detail`.
async fn audited(cluster: &Cluster, session: &str, kind: &str, detail: &str) {
    let admin = crate::support::Admin::new(cluster);
    let path = format!("/audit?session={session}&kind={kind}");
    duet_testkit::wait_until(&format!("{kind} audited"), STEP, || {
        let admin = admin.clone();
        let path = path.clone();
        async move {
            let page = admin.ok("GET", &path, None).await;
            page["entries"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["detail"].as_str().is_some_and(|d| d.contains(detail))))
        }
    })
    .await;
}

/// A guest whose connection drops mid-stream resumes and receives exactly the messages it
/// missed, in order, then live traffic; the host sees it go away and come back.
#[tokio::test]
async fn a_guest_reconnecting_mid_stream_receives_exactly_what_it_missed() {
    let cluster = Cluster::start().await;
    let (placed, mut host, mut g1, mut g2) = trio(&cluster).await;
    let url = placed.edge.url.clone();
    let (g1_id, secret) = (g1.welcome.participant_id, g1.welcome.resume_secret.clone());

    // 200 messages; the guest's connection drops after it has read 50 of them, while the rest
    // are still being sent.
    let sender = host.sender();
    let sending = tokio::spawn(async move {
        for i in 0..200u64 {
            sender.send(0, i + 1, format!("m{i}").into_bytes()).unwrap();
            tokio::task::yield_now().await;
        }
    });
    let mut got = Vec::new();
    for _ in 0..50 {
        got.push(next_message(&mut g1).await.1);
    }
    let last_seq = g1.last_seq();
    // What it had received but not read yet is lost with the connection, as on a real drop.
    g1.abort();
    sending.await.unwrap();
    // g2 sees the 200 messages and g1's away event, in sequence order.
    let mut messages = 0;
    let mut away = false;
    while messages < 200 || !away {
        match next_frame(&mut g2).await {
            EdgeFrame::Message { .. } => messages += 1,
            EdgeFrame::ParticipantAway { participant_id, .. } => away = participant_id == g1_id,
            other => panic!("{other:?}"),
        }
    }

    let mut back = duet_client::resume(&url, g1_id, secret, last_seq).await.expect("resume");
    let replayed = back.welcome.replayed.expect("a resume");
    let mut seqs = Vec::new();
    for _ in 0..replayed {
        match next_frame(&mut back).await {
            EdgeFrame::Message { seq, payload, .. } => {
                seqs.push(seq);
                got.push(payload);
            }
            // g1's own away event is not sent to it; nothing else happened in between.
            other => panic!("unexpected replayed frame {other:?}"),
        }
    }
    let expected: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("m{i}"))).collect();
    assert_eq!(got, expected, "exactly the missed messages, in order, once");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(seqs.first().is_some_and(|s| *s > last_seq));

    // The host saw it go and come back, after the 200 messages' acks.
    let mut saw = Vec::new();
    while saw.len() < 2 {
        match next_frame(&mut host).await {
            EdgeFrame::Ack { .. } => {}
            EdgeFrame::ParticipantAway { participant_id, .. } => saw.push(("away", participant_id)),
            EdgeFrame::ParticipantBack { participant_id, .. } => saw.push(("back", participant_id)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(saw, vec![("away", g1_id), ("back", g1_id)]);
    // And live traffic flows again.
    host.send(0, 1_000, &b"live"[..]).unwrap();
    assert_eq!(&next_message(&mut back).await.1[..], b"live");
    cluster.shutdown().await;
}

/// Sends that were sequenced but whose acks were lost are re-sent after the resume with their
/// message ids: acknowledged with their original seq, delivered once.
#[tokio::test]
async fn unacknowledged_sends_are_resent_and_stored_once() {
    let cluster = Cluster::start().await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    let (_, bo) = guest(&cluster, &placed.session_id, "Bo").await;
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
    let (id, secret) = (bo.welcome.participant_id, bo.welcome.resume_secret.clone());

    for i in 1..=3u64 {
        bo.send(0, i, format!("b{i}").into_bytes()).unwrap();
    }
    let mut first_seqs = Vec::new();
    for _ in 1..=3 {
        let (seq, _) = next_message(&mut host).await;
        first_seqs.push(seq);
    }
    // Bo's connection drops; it does not know whether its sends arrived.
    let last_seq = bo.welcome.seq;
    bo.abort();
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantAway { .. }));

    let mut bo = duet_client::resume(&placed.edge.url, id, secret, last_seq).await.expect("resume");
    assert_eq!(bo.welcome.replayed, Some(0), "its own messages are not replayed to it");
    for i in 1..=4u64 {
        bo.send(0, i, format!("b{i}").into_bytes()).unwrap();
    }
    let mut acks = Vec::new();
    while acks.len() < 4 {
        match next_frame(&mut bo).await {
            EdgeFrame::Ack { message_id, seq } => acks.push((message_id, seq)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(&acks[..3], &[(1, first_seqs[0]), (2, first_seqs[1]), (3, first_seqs[2])]);
    // The host gets Bo's return and only the new message.
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantBack { .. }));
    let (seq, payload) = next_message(&mut host).await;
    assert_eq!((&payload[..], seq), (&b"b4"[..], acks[3].1));
    host.ping(7).unwrap();
    assert_eq!(next_frame(&mut host).await, EdgeFrame::Pong { nonce: 7 }, "nothing else was delivered");
    cluster.shutdown().await;
}

/// Resumes the edge must refuse: outside the replay window (4105), wrong secret or unknown
/// participant (4106), ended session (4200).
#[tokio::test]
async fn resumes_outside_the_window_or_without_a_place_are_refused() {
    // A 4 KiB window holds about 20 small messages (each counted with its bookkeeping).
    let cluster = cluster_with(|c| {
        c.replay_window_bytes = 4096;
        c.max_message_bytes = 1024;
        c.max_queued_bytes = 1 << 20;
    })
    .await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    let (_, bo) = guest(&cluster, &placed.session_id, "Bo").await;
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
    let (id, secret, last_seq) = (bo.welcome.participant_id, bo.welcome.resume_secret.clone(), bo.welcome.seq);
    let url = placed.edge.url.clone();
    bo.abort();
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantAway { .. }));

    let wrong = Bytes::from(vec![0u8; secret.len()]);
    assert_eq!(expect_refusal(duet_client::resume(&url, id, wrong, last_seq).await).await, Some(4106));
    assert_eq!(expect_refusal(duet_client::resume(&url, 99, secret.clone(), last_seq).await).await, Some(4106));
    assert_eq!(
        expect_refusal(duet_client::resume(&url, id, secret.clone(), last_seq + 1_000).await).await,
        Some(4106),
        "a last_seq from the future"
    );
    let elsewhere = url.replace(&placed.session_id, "s_nosuchsession");
    assert_eq!(expect_refusal(duet_client::resume(&elsewhere, id, secret.clone(), 0).await).await, Some(4106));

    // 300 messages push Bo's last event out of the window.
    for i in 0..300u64 {
        host.send(0, i + 1, vec![b'x'; 32]).unwrap();
    }
    for _ in 0..300 {
        assert!(matches!(next_frame(&mut host).await, EdgeFrame::Ack { .. }));
    }
    assert_eq!(expect_refusal(duet_client::resume(&url, id, secret.clone(), last_seq).await).await, Some(4105));

    // Once the host ends the session, a resume gets 4200.
    host.sender().end_session().unwrap();
    assert_eq!(closed(&mut host).await, Some(4203));
    audited(&cluster, &placed.session_id, "session_ended", "ended_by_host").await;
    let host_secret = host.welcome.resume_secret.clone();
    assert_eq!(expect_refusal(duet_client::resume(&url, 1, host_secret, 0).await).await, Some(4200));
    cluster.shutdown().await;
}

/// The host's lost connection does not end the session during `host_grace`: it resumes; once
/// gone for longer, the session ends with 4207.
#[tokio::test]
async fn the_host_may_come_back_within_its_grace() {
    let cluster = cluster_with(|c| c.host_grace = Duration::from_secs(2)).await;
    let (placed, host) = host(&cluster, "Ada").await;
    let (_, mut bo) = guest(&cluster, &placed.session_id, "Bo").await;
    let (secret, last_seq) = (host.welcome.resume_secret.clone(), host.welcome.seq);
    host.abort();
    assert_eq!(next_frame(&mut bo).await, EdgeFrame::ParticipantAway { seq: 3, participant_id: 1 });
    let host = duet_client::resume(&placed.edge.url, 1, secret, last_seq).await.expect("host resumes");
    assert_eq!(host.welcome.replayed, Some(1), "bo's join");
    assert_eq!(next_frame(&mut bo).await, EdgeFrame::ParticipantBack { seq: 4, participant_id: 1 });

    // Gone for good: the guest is told the host is gone.
    host.abort();
    assert!(matches!(next_frame(&mut bo).await, EdgeFrame::ParticipantAway { .. }));
    assert_eq!(closed(&mut bo).await, Some(4207));
    audited(&cluster, &placed.session_id, "participant_resumed", "1 events replayed").await;
    audited(&cluster, &placed.session_id, "session_ended", "host_gone").await;
    cluster.shutdown().await;
}

/// A session nobody sends anything in ends at the idle timeout; pings keep connections, not
/// sessions, alive.
#[tokio::test]
async fn an_idle_session_ends() {
    let cluster = cluster_with(|c| c.session_idle_timeout = Duration::from_secs(1)).await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    host.ping(1).unwrap();
    assert_eq!(next_frame(&mut host).await, EdgeFrame::Pong { nonce: 1 });
    assert_eq!(closed(&mut host).await, Some(4204));
    audited(&cluster, &placed.session_id, "session_ended", "idle").await;
    cluster.shutdown().await;
}

/// The participant limit, from the session's options or the edge's configuration.
#[tokio::test]
async fn a_full_session_refuses_more_participants() {
    let cluster = cluster_with(|c| c.max_participants = 3).await;
    let options = SessionOptions { require_approval: false, max_participants: Some(2) };
    let req = PlacementRequest { options: Some(options), ..user("Ada") };
    let placed = cluster.client().create_session(&req).await.unwrap();
    let _host = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    let (_, _bo) = guest(&cluster, &placed.session_id, "Bo").await;
    let cy = cluster.client().join_session(&placed.session_id, &user("Cy")).await.unwrap();
    assert_eq!(expect_refusal(duet_client::connect(&cy.edge.url, &cy.token).await).await, Some(4205));
    audited(&cluster, &placed.session_id, "participant_refused", "session full (2 participants)").await;

    // Without options the edge's limit (3) applies; an away participant keeps its place.
    let (placed, _host, g1, _g2) = trio(&cluster).await;
    g1.abort();
    let dee = cluster.client().join_session(&placed.session_id, &user("Dee")).await.unwrap();
    assert_eq!(expect_refusal(duet_client::connect(&dee.edge.url, &dee.token).await).await, Some(4205));
    cluster.shutdown().await;
}

/// Host approval: a guest waits, the host admits it; another is refused with 4206; a guest
/// cannot admit anyone. Every step is an audit entry.
#[tokio::test]
async fn guests_wait_for_the_host_to_admit_them() {
    let cluster = Cluster::start().await;
    let options = SessionOptions { require_approval: true, max_participants: None };
    let req = PlacementRequest { options: Some(options), ..user("Ada") };
    let placed = cluster.client().create_session(&req).await.unwrap();
    let mut host = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    assert!(!host.welcome.waited);

    let bo = cluster.client().join_session(&placed.session_id, &user("Bo")).await.unwrap();
    let bo_task = tokio::spawn(async move { duet_client::connect(&bo.edge.url, &bo.token).await });
    let request = match next_frame(&mut host).await {
        EdgeFrame::JoinRequest { participant } => participant,
        other => panic!("{other:?}"),
    };
    assert_eq!((request.id, request.role, request.display_name.as_str()), (2, Role::Guest, "Bo"));
    // Nothing reaches a waiting guest: the host's message now is not in Bo's history.
    host.send(0, 1, &b"before"[..]).unwrap();
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::Ack { .. }));
    host.sender().admit(2, true).unwrap();
    let mut bo = bo_task.await.unwrap().expect("admitted");
    assert!(bo.welcome.waited);
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
    // A guest cannot admit or end the session.
    bo.sender().admit(3, true).unwrap();
    assert!(matches!(next_frame(&mut bo).await, EdgeFrame::Error { code: error_code::NOT_HOST, .. }));
    bo.sender().end_session().unwrap();
    assert!(matches!(next_frame(&mut bo).await, EdgeFrame::Error { code: error_code::NOT_HOST, .. }));
    host.sender().admit(9, true).unwrap();
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::Error { code: error_code::NOT_WAITING, .. }));

    let cy = cluster.client().join_session(&placed.session_id, &user("Cy")).await.unwrap();
    let cy_task = tokio::spawn(async move { duet_client::connect(&cy.edge.url, &cy.token).await });
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::JoinRequest { .. }));
    host.sender().admit(3, false).unwrap();
    assert_eq!(expect_refusal(cy_task.await.unwrap()).await, Some(4206));

    let admin = crate::support::Admin::new(&cluster);
    let session = placed.session_id.clone();
    duet_testkit::wait_until("approval steps audited", STEP, || {
        let admin = admin.clone();
        let session = session.clone();
        async move {
            let page = admin.ok("GET", &format!("/audit?session={session}"), None).await;
            let kinds: Vec<String> = page["entries"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["kind"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            ["admission_requested", "participant_admitted", "participant_refused"]
                .iter()
                .all(|k| kinds.iter().any(|x| x == k))
        }
    })
    .await;
    cluster.shutdown().await;
}

/// A guest that stops reading is cut off with 4300 once its queue is full, while the host and
/// the other guest get every message; its place is kept, and a resume either replays exactly
/// what it missed or, if that left the window, says `resync needed`.
#[tokio::test]
async fn a_stalled_guest_is_cut_off_and_the_others_keep_going() {
    let cluster = cluster_with(|c| {
        c.max_message_bytes = 64 << 10;
        c.max_queued_bytes = 256 << 10;
        c.replay_window_bytes = 256 << 10;
        c.max_messages_per_second = 0;
    })
    .await;
    let (placed, mut host, mut stalled, mut reader) = trio(&cluster).await;
    let (stalled_id, secret) = (stalled.welcome.participant_id, stalled.welcome.resume_secret.clone());
    // Far more than the queue, the stalled client's event buffer and both sockets' buffers.
    const N: u64 = 20_000;
    let payload = Bytes::from(vec![b'p'; 1024]);
    let sender = host.sender();
    let p = payload.clone();
    let sending = tokio::spawn(async move {
        for i in 1..=N {
            sender.send(0, i, p.clone()).unwrap();
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // The reading guest gets every message, in order, while `stalled` reads nothing.
    let mut last = 0;
    let mut count = 0;
    while count < N {
        match next_frame(&mut reader).await {
            EdgeFrame::Message { seq, .. } => {
                assert!(seq > last);
                last = seq;
                count += 1;
            }
            EdgeFrame::ParticipantAway { participant_id, .. } => assert_eq!(participant_id, stalled_id),
            other => panic!("{other:?}"),
        }
    }
    sending.await.unwrap();
    let mut acks = 0;
    let mut away_seen = false;
    while acks < N || !away_seen {
        match next_frame(&mut host).await {
            EdgeFrame::Ack { .. } => acks += 1,
            EdgeFrame::ParticipantAway { participant_id, .. } => {
                assert_eq!(participant_id, stalled_id);
                away_seen = true;
            }
            other => panic!("{other:?}"),
        }
    }
    // What the stalled guest had received before the cut, then its close code.
    let mut got = Vec::new();
    let code = loop {
        match tokio::time::timeout(STEP, stalled.recv()).await.expect("stalled guest's events") {
            Some(Event::Frame(EdgeFrame::Message { seq, .. })) => got.push(seq),
            Some(Event::Frame(_)) => {}
            Some(Event::Closed { code, .. }) => break code,
            None => break None,
        }
    };
    assert_eq!(code, Some(4300));
    assert!((got.len() as u64) < N, "it was cut off before the end");
    let last_seq = stalled.last_seq();
    match duet_client::resume(&placed.edge.url, stalled_id, secret, last_seq).await {
        Ok(mut back) => {
            let replayed = back.welcome.replayed.unwrap();
            for _ in 0..replayed {
                if let EdgeFrame::Message { seq, .. } = next_frame(&mut back).await {
                    got.push(seq);
                }
            }
            assert_eq!(got.len() as u64, N, "exactly the missed messages");
            assert!(got.windows(2).all(|w| w[0] < w[1]));
        }
        Err(ClientError::Closed { code, .. }) => assert_eq!(code, Some(4105), "only resync may refuse it"),
        Err(e) => panic!("{e}"),
    }
    cluster.shutdown().await;
}

/// Per-connection limits: the message rate (4007), the idle timeout (4301, then resume works),
/// connections per client address (HTTP 429); other sessions keep working.
#[tokio::test]
async fn floods_idlers_and_crowds_are_refused_while_others_keep_working() {
    let cluster = cluster_with(|c| {
        c.max_messages_per_second = 50;
        c.idle_timeout = Duration::from_secs(1);
        c.max_connections_per_address = 6;
    })
    .await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    let (_, mut bo) = guest(&cluster, &placed.session_id, "Bo").await;
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));

    // A flood: far more than 2 × 50 messages at once.
    let (flood_placed, flooder) = crate::support::host(&cluster, "Flo").await;
    let mut flooder = flooder;
    for i in 0..500u64 {
        if flooder.send(0, i + 1, &b"spam"[..]).is_err() {
            break;
        }
    }
    assert_eq!(closed(&mut flooder).await, Some(4007));
    let _ = flood_placed;

    // An idle connection is closed with 4301 and may resume.
    let (id, secret, last_seq) = (bo.welcome.participant_id, bo.welcome.resume_secret.clone(), bo.welcome.seq);
    let keepalive = host.sender();
    let pinging = tokio::spawn(async move {
        for i in 0..40u64 {
            if keepalive.ping(i).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    assert_eq!(closed(&mut bo).await, Some(4301));
    let mut bo = duet_client::resume(&placed.edge.url, id, secret, last_seq).await.expect("resume after idle");
    host.send(0, 1, &b"still here"[..]).unwrap();
    assert_eq!(&next_message(&mut bo).await.1[..], b"still here");

    // Connections per address: 3 are open (host, bo, and the flooder's is gone); 3 more fit.
    let mut extra = Vec::new();
    let url = placed.edge.url.clone();
    loop {
        match duet_client::open_raw(&url).await {
            Ok(c) => extra.push(c),
            Err(ClientError::Connect(e)) => {
                assert!(e.to_string().contains("429"), "{e}");
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(extra.len() <= 6, "the limit was not enforced");
    }
    assert!(extra.len() >= 3, "only {} more connections fit under a limit of 6", extra.len());
    pinging.abort();
    cluster.shutdown().await;
}

/// A resume never reaches back before the participant's own join, whatever `last_seq` claims:
/// what was said before a guest arrived stays unseen by it.
#[tokio::test]
async fn a_resume_replays_nothing_from_before_the_join() {
    let cluster = Cluster::start().await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    host.send(0, 1, &b"before bo"[..]).unwrap();
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::Ack { .. }));
    let (_, bo) = guest(&cluster, &placed.session_id, "Bo").await;
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
    let (id, secret) = (bo.welcome.participant_id, bo.welcome.resume_secret.clone());
    bo.abort();
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantAway { .. }));
    host.send(0, 2, &b"after bo"[..]).unwrap();
    let mut back = duet_client::resume(&placed.edge.url, id, secret, 0).await.expect("resume");
    assert_eq!(back.welcome.replayed, Some(1));
    assert_eq!(&next_message(&mut back).await.1[..], b"after bo");
    cluster.shutdown().await;
}
