//! The edge-to-locator link: authentication, versions, duplicates, and an edge that starts
//! before its locator.

use std::time::Duration;

use duet_locator::db::Health;
use duet_proto::codec;
use duet_proto::link::*;
use duet_testkit::{wait_for_edge_health, wait_until, Cluster, TEST_SECRET};
use duet_ws::{Limits, Message};

const LIMITS: Limits = Limits { max_message_bytes: 1 << 20, max_queued_bytes: 1 << 20 };

/// An encoded hello of a test edge.
pub(crate) fn hello(edge_id: &str, version: u16) -> Vec<u8> {
    codec::encode_edge(&EdgeMessage::Hello(Hello {
        protocol_version: version,
        edge_id: edge_id.into(),
        region: "default".into(),
        public_url: "ws://127.0.0.1:1".into(),
        capacity: Capacity::default(),
        build: "test".into(),
        live_sessions: vec![],
        load: Load::default(),
        outbox_id: 1,
    }))
    .unwrap()
}

/// Opens a link with the test secret, sends `first`, returns (refusal code, close code).
async fn refused(cluster: &Cluster, first: Vec<u8>) -> (Option<u16>, Option<u16>) {
    let url = format!("{}{LINK_PATH}", cluster.url());
    let auth = format!("Bearer {TEST_SECRET}");
    let mut reader = duet_ws::connect(&url, &[("authorization", &auth)], LIMITS).await.unwrap();
    reader.writer().send(first.into()).unwrap();
    let mut refusal = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await.expect("answer in time") {
            Ok(Message::Binary(b)) => match codec::decode_locator(&b).unwrap() {
                LocatorMessage::Refused { code, .. } => refusal = Some(code),
                other => panic!("expected a refusal, got {other:?}"),
            },
            Ok(Message::Close { code, .. }) => return (refusal, code),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn links_are_authenticated_and_checked() {
    let cluster = Cluster::start().await;
    // Wrong or missing secret: 401 before any upgrade.
    let url = format!("{}{LINK_PATH}", cluster.url());
    let http = reqwest::Client::new();
    let r = http.get(&url).header("authorization", "Bearer wrong-secret-wrong-secret").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(matches!(
        duet_ws::connect(&url, &[("authorization", "Bearer nope")], LIMITS).await,
        Err(duet_ws::ConnectError::Handshake(_))
    ));

    // Versions: the current one and the previous are accepted; others are refused with 4600.
    assert_eq!(refused(&cluster, hello("edge-new", LINK_PROTOCOL_VERSION + 1)).await, (Some(4600), Some(4600)));
    assert_eq!(refused(&cluster, hello("edge-old", LINK_MIN_PROTOCOL_VERSION - 1)).await, (Some(4600), Some(4600)));
    // A second live link for an edge id is refused with 4601.
    let linked = cluster.edges[0].state.edge_id.clone();
    assert_eq!(refused(&cluster, hello(&linked, LINK_PROTOCOL_VERSION)).await, (Some(4601), Some(4601)));
    // Garbage, a heartbeat first, an invalid edge id: 4602.
    assert_eq!(refused(&cluster, vec![0xff, 0xff, 0xff]).await, (Some(4602), Some(4602)));
    let hb = codec::encode_edge(&EdgeMessage::Heartbeat(Heartbeat::default())).unwrap();
    assert_eq!(refused(&cluster, hb).await, (Some(4602), Some(4602)));
    assert_eq!(refused(&cluster, hello("bad id!", LINK_PROTOCOL_VERSION)).await, (Some(4602), Some(4602)));

    // The original link is untouched.
    assert!(cluster.edges[0].state.linked.load(std::sync::atomic::Ordering::Acquire));
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    assert_eq!(placed.edge.id, linked);
    cluster.shutdown().await;
}

/// An edge started before its locator keeps retrying and registers once the locator is up.
#[tokio::test]
async fn an_edge_started_first_registers_when_the_locator_arrives() {
    duet_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // Reserve an address for the locator, then free it so nothing listens there yet.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut config = duet_edge::EdgeConfig::new(format!("http://{addr}"), TEST_SECRET, dir.path().join("edge"));
    config.id = Some("early".into());
    let edge_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let edge = duet_edge::start(config, edge_listener, token.clone()).await.unwrap();
    assert!(!edge.state.is_ready(), "no keys before the first link");
    // Let it fail a few attempts.
    let state = edge.state.clone();
    wait_until("three failed link attempts", Duration::from_secs(10), || {
        let attempts = state.link_attempts.load(std::sync::atomic::Ordering::Relaxed);
        async move { attempts >= 3 }
    })
    .await;
    assert!(!edge.state.linked.load(std::sync::atomic::Ordering::Acquire));

    let mut locator_config = duet_locator::LocatorConfig::new(dir.path().join("locator"));
    locator_config.enrollment_secret = Some(TEST_SECRET.into());
    let api = tokio::net::TcpListener::bind(addr).await.expect("the reserved port is still free");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let locator = duet_locator::start(locator_config, duet_locator::Listeners { api, edge: None }, shutdown.clone())
        .await
        .unwrap();
    let store = locator.state.store.clone();
    wait_for_edge_health(&store, "early", Health::Up, Duration::from_secs(20)).await;
    let state = edge.state.clone();
    wait_until("the early edge got keys", Duration::from_secs(5), || {
        let ready = state.is_ready();
        async move { ready }
    })
    .await;
    // Heartbeats keep arriving.
    let first = store.edge("early").await.unwrap().unwrap().last_heartbeat_at;
    wait_until("a later heartbeat", Duration::from_secs(5), || {
        let store = store.clone();
        async move { store.edge("early").await.unwrap().unwrap().last_heartbeat_at > first }
    })
    .await;
    token.cancel();
    edge.wait().await;
    // The locator notices the link went away.
    wait_for_edge_health(&store, "early", Health::LinkLost, Duration::from_secs(10)).await;
    shutdown.cancel();
    locator.wait().await;
}

/// A locator of the previous release, reduced to its link handshake: it refuses link versions
/// above 3 with 4600 and welcomes version 3. Each hello's version goes to `seen`.
async fn previous_release_locator(listener: tokio::net::TcpListener, seen: tokio::sync::mpsc::UnboundedSender<u16>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let seen = seen.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req).expect("a websocket upgrade");
                    tokio::spawn(async move {
                        let mut ws = upgrade.await.expect("upgraded");
                        let frame = ws.read_frame().await.expect("hello");
                        let version = codec::peek_hello_version(&frame.payload).expect("a hello");
                        let _ = seen.send(version);
                        let answer = if version > 3 {
                            LocatorMessage::Refused { code: 4600, reason: "link version not supported".into() }
                        } else {
                            LocatorMessage::Welcome(Welcome {
                                protocol_version: version,
                                locator_build: "duet-locator (previous release)".into(),
                                keys: vec![],
                                heartbeat_interval_ms: 1000,
                                link_epoch: 1,
                            })
                        };
                        let bytes = codec::encode_locator(&answer).unwrap();
                        let _ = ws.write_frame(fastwebsockets::Frame::binary(bytes.as_slice().into())).await;
                        if version > 3 {
                            let _ = ws.write_frame(fastwebsockets::Frame::close(4600, b"version")).await;
                        } else {
                            // Keep the link open, reading (and ignoring) what the edge sends.
                            while ws.read_frame().await.is_ok() {}
                        }
                    });
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

/// Edges may be upgraded before their locator: refused at link version 4, an edge offers 3.
#[tokio::test]
async fn an_edge_links_to_a_locator_of_the_previous_release() {
    duet_testkit::init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let locator = tokio::spawn(previous_release_locator(listener, seen_tx));
    let dir = tempfile::tempdir().unwrap();
    let config = duet_edge::EdgeConfig::new(url, TEST_SECRET, dir.path().join("edge"));
    let edge_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let edge = duet_edge::start(config, edge_listener, token.clone()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await.unwrap();
    assert_eq!((first, second), (Some(LINK_PROTOCOL_VERSION), Some(3)));
    let state = edge.state.clone();
    wait_until("linked at version 3", Duration::from_secs(10), || {
        let up = state.linked.load(std::sync::atomic::Ordering::Acquire);
        async move { up }
    })
    .await;
    token.cancel();
    edge.wait().await;
    locator.abort();
}
