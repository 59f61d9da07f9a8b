//! Random input on session connections: whatever a client sends before a valid `join`, the edge
//! ends that one connection with the right close code, never panics, and keeps serving others.
//!
//! One edge runs for the whole test, on real time (its SQLite outbox must not meet paused time).
//! Connections go through an in-memory pipe into `relay::serve`, as the listener's upgraded
//! websockets do; the last check goes through the real TCP listener. Cases are generated with
//! proptest (a failure prints the smallest input that still fails) and bounded in count; every
//! wait has a deadline that only a hung edge reaches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_edge::{EdgeConfig, EdgeState};
use duet_proto::close::CloseCode;
use duet_proto::session::{ClientFrame, SESSION_PROTOCOL_VERSION};
use duet_ws::{Limits, Message, Role};
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Connections per property: each takes about a millisecond in memory, so both run in a second.
const CASES: u32 = 200;

/// The edge's message size limit here: the smallest its configuration allows, so random messages
/// over it (refused with 4002 before they are read) are generated too.
const MAX_MESSAGE: usize = 1024;

/// How long the edge may take to answer or end one connection. It needs milliseconds; only a hung
/// connection reaches this. Below the handshake timeout, so that timeout cannot hide a hang.
const DEADLINE: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client side's limits: far above anything the edge sends back.
const CLIENT_LIMITS: Limits = Limits { max_message_bytes: 1 << 20, max_queued_bytes: 1 << 20 };

/// Panics anywhere in the process (the edge's own tasks included, whose panics a test would
/// otherwise never see).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
}

fn runner() -> TestRunner {
    // No regression file: the inputs are cheap to regenerate and a failure prints the minimal one.
    TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() })
}

// ---- raw bytes: not websocket framing ----

/// Random bytes, or one masked frame header with a random first byte and a length that may lie,
/// then random bytes (which reaches past fastwebsockets' header checks more often).
fn raw_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..4096),
        (any::<u8>(), 0u8..=127, any::<[u8; 4]>(), vec(any::<u8>(), 0..512)).prop_map(|(b0, len, mask, rest)| {
            let mut bytes = vec![b0, 0x80 | len];
            bytes.extend(mask);
            bytes.extend(rest);
            bytes
        }),
    ]
}

/// Writes `bytes` and ends the stream: the edge must end the connection, without panicking.
async fn raw_bytes_end_the_connection(state: &Arc<EdgeState>, bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(duet_edge::relay::serve(state.clone(), "s_raw".into(), server_io));
    let (mut read, mut write) = tokio::io::split(client_io);
    // Read whatever the edge answers concurrently, so its writes never wait for ours.
    let answer = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = read.read_to_end(&mut out).await;
        out
    });
    // Either may fail once the edge has closed its end; that is an answer too.
    let _ = write.write_all(&bytes).await;
    let _ = write.shutdown().await;

    let served = tokio::time::timeout(DEADLINE, server).await;
    prop_assert!(served.is_ok(), "the edge kept the connection open for {DEADLINE:?} after the input ended");
    if let Ok(Err(e)) = served {
        return Err(TestCaseError::fail(format!("serve failed: {e}")));
    }
    // Everything the edge holds of the connection is dropped: the client reads end of stream.
    prop_assert!(tokio::time::timeout(DEADLINE, answer).await.is_ok(), "the edge's end of the pipe stayed open");
    Ok(())
}

// ---- websocket messages before any valid join ----

#[derive(Debug, Clone)]
struct Outgoing {
    text: bool,
    bytes: Vec<u8>,
}

fn token() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..200).prop_map(String::from_iter)
}

/// A message body: random bytes (some over the size limit), a known or unknown kind byte with a
/// short random body, or a frame that decodes (a `join` with a random token, any other frame).
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..MAX_MESSAGE + 64),
        3 => (any::<u8>(), vec(any::<u8>(), 0..64)).prop_map(|(kind, rest)| [vec![kind], rest].concat()),
        2 => (prop_oneof![Just(SESSION_PROTOCOL_VERSION), any::<u8>()], token())
            .prop_map(|(version, token)| ClientFrame::Join { version, token }.encode().unwrap().to_vec()),
        1 => prop_oneof![
            any::<u64>().prop_map(|nonce| ClientFrame::Ping { nonce }),
            Just(ClientFrame::Leave),
            (any::<u64>(), any::<u32>(), vec(any::<u8>(), 0..64))
                .prop_map(|(message_id, to, payload)| ClientFrame::Send { message_id, to, payload: payload.into() }),
        ]
        .prop_map(|frame| frame.encode().unwrap().to_vec()),
    ]
}

/// One to four messages, mostly binary; text ones are random bytes too (not always UTF-8).
fn messages() -> impl Strategy<Value = Vec<Outgoing>> {
    vec((prop::bool::weighted(0.1), body()).prop_map(|(text, bytes)| Outgoing { text, bytes }), 1..=4)
}

/// The close codes the edge may answer a first message with.
fn expected_close(first: &Outgoing) -> std::ops::RangeInclusive<u16> {
    let exactly = |code: CloseCode| code.code()..=code.code();
    if first.bytes.len() > MAX_MESSAGE {
        return exactly(CloseCode::MessageTooLarge);
    }
    if first.text {
        return match std::str::from_utf8(&first.bytes) {
            Ok(_) => exactly(CloseCode::TextFrame),
            Err(_) => exactly(CloseCode::MalformedFrame),
        };
    }
    match ClientFrame::decode(&first.bytes) {
        Err(e) => exactly(e.close_code()),
        // A frame that decodes is either not a valid first frame (40xx) or a join or resume whose
        // token or secret is refused (41xx).
        Ok(_) => 4000..=4199,
    }
}

/// Sends `msgs` back to back with no valid join first: the first is answered with a close in the
/// expected range; the edge never panics and lets go of the connection.
///
/// The client here is a bare fastwebsockets socket, not `duet_ws::split`: the edge closes after
/// the first message, so writing the next ones fails, and a split client whose writer has failed
/// reports the close that follows as an error (it cannot echo it) instead of its code.
async fn messages_are_refused(
    state: &Arc<EdgeState>,
    msgs: Vec<Outgoing>,
    seen: &Mutex<BTreeMap<u16, u32>>,
) -> Result<(), TestCaseError> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(duet_edge::relay::serve(state.clone(), "s_random".into(), server_io));
    let mut client = WebSocket::after_handshake(client_io, Role::Client);
    client.set_auto_close(false);
    client.set_auto_pong(false);
    for m in &msgs {
        let payload = Payload::Borrowed(&m.bytes);
        let frame = if m.text { Frame::text(payload) } else { Frame::binary(payload) };
        // Fails once the edge has closed its end; the messages after that are never read.
        if client.write_frame(frame).await.is_err() {
            break;
        }
    }
    let want = expected_close(&msgs[0]);
    let answer = tokio::time::timeout(DEADLINE, client.read_frame()).await;
    let Ok(answer) = answer else {
        return Err(TestCaseError::fail(format!("no answer within {DEADLINE:?}")));
    };
    match answer {
        Ok(frame) if frame.opcode == OpCode::Close && frame.payload.len() >= 2 => {
            let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
            prop_assert!(want.contains(&code), "closed with {code}, expected {want:?}");
            *seen.lock().unwrap().entry(code).or_default() += 1;
        }
        Ok(frame) => {
            return Err(TestCaseError::fail(format!(
                "expected a close in {want:?}, got a {:?} frame of {} bytes",
                frame.opcode,
                frame.payload.len()
            )))
        }
        Err(e) => return Err(TestCaseError::fail(format!("expected a close in {want:?}, got {e}"))),
    }
    let served = tokio::time::timeout(DEADLINE, server).await;
    prop_assert!(served.is_ok(), "the edge kept the connection for {DEADLINE:?} after closing it");
    if let Ok(Err(e)) = served {
        return Err(TestCaseError::fail(format!("serve failed: {e}")));
    }
    Ok(())
}

// ---- the edge is still up ----

/// A join with a garbage token gets 4100, over the real listener and over a pipe.
async fn bad_token_is_refused(edge: &duet_edge::Edge) {
    let join = ClientFrame::Join { version: SESSION_PROTOCOL_VERSION, token: "garbage".into() }.encode().unwrap();

    let url = format!("ws://{}/v1/sessions/s_after", edge.local_addr);
    let mut ws = duet_ws::connect(&url, &[], CLIENT_LIMITS).await.expect("the edge still accepts connections");
    ws.writer().send(join.clone()).unwrap();
    match tokio::time::timeout(DEADLINE, ws.next()).await.expect("an answer to join") {
        Ok(Message::Close { code, .. }) => assert_eq!(code, Some(CloseCode::TokenInvalid.code())),
        other => panic!("expected a 4100 close over TCP, got {other:?}"),
    }

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(duet_edge::relay::serve(edge.state.clone(), "s_after".into(), server_io));
    let mut client = duet_ws::split(client_io, Role::Client, CLIENT_LIMITS);
    client.writer().send(join).unwrap();
    match tokio::time::timeout(DEADLINE, client.next()).await.expect("an answer to join") {
        Ok(Message::Close { code, .. }) => assert_eq!(code, Some(CloseCode::TokenInvalid.code())),
        other => panic!("expected a 4100 close over a pipe, got {other:?}"),
    }
    tokio::time::timeout(DEADLINE, server).await.expect("connection ended").expect("serve did not panic");
}

#[test]
fn random_input_never_panics_and_the_edge_stays_up() {
    count_panics();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No locator listens here; the edge keeps retrying its link, which does not matter.
    let mut config = EdgeConfig::new("http://127.0.0.1:9", "0123456789abcdef0123", dir.path().into());
    config.max_message_bytes = MAX_MESSAGE;
    config.handshake_timeout = HANDSHAKE_TIMEOUT;
    let shutdown = CancellationToken::new();
    let edge = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        duet_edge::start(config, listener, shutdown.clone()).await.unwrap()
    });
    let state = edge.state.clone();

    let raw = runner().run(&raw_input(), |bytes| rt.block_on(raw_bytes_end_the_connection(&state, bytes)));
    if let Err(e) = raw {
        panic!("raw bytes: {e}");
    }
    let seen = Mutex::new(BTreeMap::new());
    let msgs = runner().run(&messages(), |msgs| rt.block_on(messages_are_refused(&state, msgs, &seen)));
    if let Err(e) = msgs {
        panic!("random messages: {e}");
    }
    // The strategies reach each way of refusing a first message, not only the commonest.
    let seen = seen.into_inner().unwrap();
    eprintln!("close codes of {CASES} random first messages: {seen:?}");
    for code in [
        CloseCode::MalformedFrame,
        CloseCode::UnknownKind,
        CloseCode::UnsupportedVersion,
        CloseCode::UnexpectedFrame,
        CloseCode::TokenInvalid,
    ] {
        assert!(seen.contains_key(&code.code()), "no random message was refused with {code}: {seen:?}");
    }
    // Every connection above has ended (each `serve` was awaited), so none is still counted.
    assert_eq!(state.connections.load(Ordering::Acquire), 0, "connections left open");

    rt.block_on(bad_token_is_refused(&edge));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked (see the output above)");

    shutdown.cancel();
    rt.block_on(edge.wait());
}
