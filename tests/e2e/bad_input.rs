//! Hostile or broken input: every case gets its documented close code or HTTP error, and the
//! edge keeps serving.

use std::time::Duration;

use duet_client::Event;
use duet_proto::session::{kind, ClientFrame, EdgeFrame, LeaveReason};
use duet_testkit::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn small_limits_cluster() -> Cluster {
    let mut cluster = Cluster::start_with(Default::default()).await;
    cluster
        .add_edge(|c| {
            c.max_message_bytes = 1024;
            c.max_queued_bytes = 1024;
            c.handshake_timeout = Duration::from_millis(300);
        })
        .await;
    cluster
}

/// Opens a raw connection to a fresh session's URL, sends `frames`, returns the close code.
async fn close_code_after(url: &str, frames: Vec<Result<Vec<u8>, &str>>) -> Option<u16> {
    let (sender, mut rx) = duet_client::open_raw(url).await.unwrap();
    for f in frames {
        match f {
            Ok(bytes) => sender.send_raw(bytes).unwrap(),
            Err(text) => sender.send_text(text).unwrap(),
        }
    }
    loop {
        match tokio::time::timeout(STEP, rx.recv()).await.expect("closed in time") {
            Some(Ok(_)) => continue,
            Some(Err(Event::Closed { code, .. })) => return code,
            Some(Err(other)) => panic!("{other:?}"),
            None => return None,
        }
    }
}

#[tokio::test]
async fn handshake_violations_get_protocol_close_codes() {
    let cluster = small_limits_cluster().await;
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    let url = &placed.edge.url;
    let join = |v: u8| ClientFrame::Join { version: v, token: placed.token.clone() }.encode().unwrap().to_vec();

    assert_eq!(close_code_after(url, vec![Err("{\"join\":1}")]).await, Some(4006), "text frame");
    assert_eq!(close_code_after(url, vec![Ok(vec![0x7e, 1, 2])]).await, Some(4001), "unknown kind");
    assert_eq!(close_code_after(url, vec![Ok(vec![kind::JOIN, 1, 0, 200, b'x'])]).await, Some(4000), "truncated join");
    assert_eq!(close_code_after(url, vec![Ok(vec![])]).await, Some(4000), "empty frame");
    assert_eq!(
        close_code_after(url, vec![Ok(ClientFrame::Ping { nonce: 1 }.encode().unwrap().to_vec())]).await,
        Some(4005),
        "ping before join"
    );
    assert_eq!(close_code_after(url, vec![Ok(join(1))]).await, Some(4003), "version 1 is no longer spoken");
    assert_eq!(close_code_after(url, vec![Ok(join(4))]).await, Some(4003), "unsupported version");
    assert_eq!(close_code_after(url, vec![]).await, Some(4004), "no join within the handshake timeout");
    assert_eq!(close_code_after(url, vec![Ok(vec![0u8; 2000])]).await, Some(4002), "oversized first frame");
    assert_eq!(close_code_after(url, vec![Ok(join(2)), Ok(join(2))]).await, Some(4005), "second join");
    let resume = ClientFrame::Resume {
        version: 2,
        participant_id: 1,
        resume_secret: bytes::Bytes::from_static(&[0; 32]),
        last_seq: 0,
    };
    // (The second join removed the only participant, which ended that session: a new one.)
    let again = cluster.client().create_session(&Default::default()).await.unwrap();
    let join_again = ClientFrame::Join { version: 2, token: again.token.clone() }.encode().unwrap().to_vec();
    assert_eq!(
        close_code_after(&again.edge.url, vec![Ok(join_again), Ok(resume.encode().unwrap().to_vec())]).await,
        Some(4005),
        "a resume after the join"
    );
    assert_eq!(
        close_code_after(url, vec![Ok(vec![kind::ADMIT, 0, 0, 0, 2, 9])]).await,
        Some(4000),
        "admit with a bad value"
    );

    // A version-2 participant cannot use a version-3 kind: it is unknown in its version.
    let v2 = cluster.client().create_session(&Default::default()).await.unwrap();
    let join_v2 = ClientFrame::Join { version: 2, token: v2.token.clone() }.encode().unwrap().to_vec();
    let offer = ClientFrame::MediaOffer { sdp: "v=0\r\n".into() }.encode().unwrap().to_vec();
    assert_eq!(
        close_code_after(&v2.edge.url, vec![Ok(join_v2), Ok(offer)]).await,
        Some(4001),
        "a media kind from a version-2 participant"
    );

    // The edge still serves a well-behaved client afterwards.
    let (_, s) = host(&cluster, "Ada").await;
    assert_eq!(s.welcome.participant_id, 1);
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_frames_inside_a_session_remove_only_the_sender() {
    let cluster = small_limits_cluster().await;
    let (placed, mut h) = host(&cluster, "Ada").await;
    for (frame, code) in [(vec![0x7f], 4001u16), (vec![kind::SEND, 0, 1], 4000), (vec![kind::SEND; 1500], 4002)] {
        let (_, g) = guest(&cluster, &placed.session_id, "Bo").await;
        let id = g.welcome.participant_id;
        assert!(matches!(next_frame(&mut h).await, EdgeFrame::ParticipantJoined { .. }));
        g.sender().send_raw(frame).unwrap();
        let mut g = g;
        assert_eq!(closed(&mut g).await, Some(code));
        match next_frame(&mut h).await {
            EdgeFrame::ParticipantLeft { participant_id, reason, .. } => {
                assert_eq!((participant_id, reason), (id, LeaveReason::Removed));
            }
            other => panic!("{other:?}"),
        }
    }
    h.ping(5).unwrap();
    assert_eq!(next_frame(&mut h).await, EdgeFrame::Pong { nonce: 5 });
    cluster.shutdown().await;
}

/// A frame header declaring 1 GiB is refused at once with 4002: the edge does not wait for (or
/// buffer) a payload it will not accept.
#[tokio::test]
async fn a_declared_oversized_frame_is_refused_before_its_payload() {
    let cluster = small_limits_cluster().await;
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    let addr = cluster.edges[0].local_addr;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let path = format!("/v1/sessions/{}", placed.session_id);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // FIN + binary, masked, 64-bit length = 1 GiB, mask key; no payload follows.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 30).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    tcp.write_all(&frame).await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(STEP, tcp.read_exact(&mut reply)).await.expect("answered without the payload").unwrap();
    assert_eq!(reply[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 4002);
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_placement_api_rejects_garbage_with_json_errors() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    let base = cluster.url();
    let check = |resp: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(resp.status().as_u16(), status);
        let body: serde_json::Value = resp.json().await.expect("json error body");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    let url = format!("{base}/api/v1/sessions");
    let r = http.post(&url).header("content-type", "application/json").body("{not json").send().await.unwrap();
    check(r, 400, "bad_request").await;
    let r =
        http.post(&url).header("content-type", "application/json").body(r#"{"user":{"id":""}}"#).send().await.unwrap();
    check(r, 400, "bad_request").await;
    let r = http.post(&url).header("content-type", "application/json").body(r#"{"team":""}"#).send().await.unwrap();
    check(r, 400, "bad_request").await;
    let r = http.post(&url).header("content-type", "application/json").body(r#"{"team":7}"#).send().await.unwrap();
    check(r, 400, "bad_request").await;
    let r = http.post(&url).header("content-type", "text/plain").body("{}").send().await.unwrap();
    check(r, 415, "unsupported_media_type").await;
    let r =
        http.post(&url).header("content-type", "application/json").body(vec![b' '; 70 * 1024]).send().await.unwrap();
    check(r, 413, "payload_too_large").await;
    let r = http.get(&url).send().await.unwrap();
    check(r, 405, "method_not_allowed").await;
    let r = http.post(format!("{base}/api/v1/sessions/s_nope/join")).send().await.unwrap();
    check(r, 404, "not_found").await;
    let r = http.get(format!("{base}/nowhere")).send().await.unwrap();
    check(r, 404, "not_found").await;
    // `{}` and an empty body are valid.
    let r = http.post(&url).header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = http.post(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);

    // The edge's HTTP side: no upgrade, or an invalid session id.
    let edge = format!("http://{}", cluster.edges[0].local_addr);
    let r = http.get(format!("{edge}/v1/sessions/s_x")).send().await.unwrap();
    check(r, 400, "bad_request").await;
    let r = http.get(format!("{edge}/v1/sessions/{}", "x".repeat(100))).send().await.unwrap();
    check(r, 400, "bad_request").await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn no_edge_means_503() {
    let cluster = Cluster::start_with(Default::default()).await;
    let err = cluster.client().create_session(&Default::default()).await.unwrap_err();
    assert!(
        matches!(err, duet_client::ClientError::Api { status: 503, ref code, .. } if code == "no_edge_available"),
        "{err}"
    );
    cluster.shutdown().await;
}

/// Session ids in the join path are never sliced or echoed unchecked: long and multi-byte ids
/// get a plain 404.
#[tokio::test]
async fn odd_session_ids_in_the_join_path_get_404() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    for id in [format!("a{}", "é".repeat(40)), "x".repeat(65), "%00".into(), "s_%F0%9F%92%A5".into()] {
        let r = http.post(format!("{}/api/v1/sessions/{id}/join", cluster.url())).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{id}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    cluster.shutdown().await;
}

/// Reads until the server closes the connection (bounded), answering what it sent.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut got)).await.expect("the edge closes in time").ok();
    String::from_utf8_lossy(&got).into_owned()
}

/// Garbage instead of HTTP gets 400 and a closed connection; a request whose headers never end
/// is closed after the handshake timeout (408), dozens at once; a running session notices
/// nothing.
#[tokio::test]
async fn garbage_http_and_half_open_handshakes_are_refused_while_a_session_keeps_working() {
    let cluster = small_limits_cluster().await;
    let (placed, mut host) = host(&cluster, "Ada").await;
    let (_, mut bo) = guest(&cluster, &placed.session_id, "Bo").await;
    assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
    let addr = cluster.edges[0].local_addr;

    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage.write_all(b"\x16\x03\x01\x02\x00 this is not HTTP\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut garbage).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    let mut half_open = Vec::new();
    for _ in 0..50 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(format!("GET /v1/sessions/{} HTTP/1.1\r\nHost: edge\r\nUpgr", placed.session_id).as_bytes())
            .await
            .unwrap();
        half_open.push(tcp);
    }
    // Meanwhile the session relays as usual.
    host.send(0, 1, &b"still here"[..]).unwrap();
    match next_frame(&mut bo).await {
        EdgeFrame::Message { payload, .. } => assert_eq!(&payload[..], b"still here"),
        other => panic!("{other:?}"),
    }
    for tcp in &mut half_open {
        let answer = read_until_closed(tcp).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    bo.send(0, 1, &b"and still"[..]).unwrap();
    loop {
        match next_frame(&mut host).await {
            EdgeFrame::Message { payload, .. } => break assert_eq!(&payload[..], b"and still"),
            EdgeFrame::Ack { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    cluster.shutdown().await;
}

/// Behind a trusted proxy the connection limit counts the forwarded client addresses, and an
/// untrusted peer's forwarding headers are ignored.
#[tokio::test]
async fn connections_per_address_count_clients_behind_a_trusted_proxy() {
    let mut cluster = Cluster::start_with(Default::default()).await;
    cluster
        .add_edge(|c| {
            c.max_connections_per_address = 2;
            c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        })
        .await;
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    let url = &placed.edge.url;
    let limits = duet_ws::Limits { max_message_bytes: 1 << 16, max_queued_bytes: 1 << 16 };
    let from = |ip: &'static str| async move { duet_ws::connect(url, &[("x-forwarded-for", ip)], limits).await };
    let _a1 = from("203.0.113.1").await.expect("first from .1");
    let _a2 = from("203.0.113.1").await.expect("second from .1");
    let refused = from("203.0.113.1").await.err().expect("a third from .1 is refused");
    assert!(refused.to_string().contains("429"), "{refused}");
    let _b = from("203.0.113.2").await.expect("another client is not affected");
    cluster.shutdown().await;

    // Without trusting the proxy, every connection counts against the peer itself.
    let mut cluster = Cluster::start_with(Default::default()).await;
    cluster.add_edge(|c| c.max_connections_per_address = 2).await;
    let placed = cluster.client().create_session(&Default::default()).await.unwrap();
    let url = &placed.edge.url;
    let from = |ip: &'static str| async move { duet_ws::connect(url, &[("x-forwarded-for", ip)], limits).await };
    let _c1 = from("203.0.113.1").await.unwrap();
    let _c2 = from("203.0.113.2").await.unwrap();
    assert!(from("203.0.113.3").await.is_err(), "forged headers from an untrusted peer change nothing");
    cluster.shutdown().await;
}
