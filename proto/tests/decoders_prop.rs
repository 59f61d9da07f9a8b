//! Property tests of every decoder of untrusted bytes: session frames, link messages, outbox
//! entries and token claims.
//!
//! What they guarantee: arbitrary bytes never panic a decoder; whatever decodes re-encodes to
//! something that decodes to the same value; every valid frame round-trips; no strict prefix of a
//! valid encoding is accepted; changing one byte of a valid frame never panics. The strategies
//! name every `ClientFrame` and `EdgeFrame` variant without a `_` arm, so a new frame kind does not
//! compile here until it has a strategy. `proto/fuzz` runs the same checks under libFuzzer
//! (`scripts/fuzz`); these are the bounded, every-`cargo test` part.

use duet_proto::presence::{PresenceClientFrame, PresenceFrame};
use std::path::Path;

use bytes::Bytes;
use duet_proto::codec;
use duet_proto::link::{LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION};
use duet_proto::session::{ClientFrame, EdgeFrame, LeaveReason, MediaCloseReason, Participant, Role, TrackSource};
use duet_proto::token::Claims;
use proptest::collection::vec;
use proptest::prelude::*;

/// Cases of the cheap properties: each decodes a few kilobytes at most, so 2000 run in well under
/// a second.
const CASES: u32 = 2000;

// ---- every decoder, with its round-trip check ----

/// Runs every decoder over `bytes`. Panics (a test failure) if a decoder panics, or if a decoded
/// value does not survive encoding and decoding again.
fn decode_everything(bytes: &[u8]) {
    if let Ok(frame) = ClientFrame::decode(bytes) {
        check_client_round_trip(&frame);
    }
    if let Ok(frame) = EdgeFrame::decode(bytes) {
        check_edge_round_trip(&frame);
    }
    if let Ok(frame) = PresenceClientFrame::decode(bytes) {
        let again = PresenceClientFrame::decode(&frame.encode().expect("encodes")).expect("decodes");
        assert_eq!(again, frame, "presence client frame does not round-trip");
    }
    if let Ok(frame) = PresenceFrame::decode(bytes) {
        let again = PresenceFrame::decode(&frame.encode().expect("encodes")).expect("decodes");
        assert_eq!(again, frame, "presence frame does not round-trip");
    }
    if let Ok(msg) = codec::decode_edge(bytes) {
        let once = codec::encode_edge(&msg).expect("a decoded edge message encodes");
        // Compared as bytes, not values: `Load::cpu` is an `f32` and may be NaN.
        let again = codec::decode_edge(&once).expect("an encoded edge message decodes");
        assert_eq!(codec::encode_edge(&again).unwrap(), once, "edge message re-encodes differently");
    }
    if let Ok(msg) = codec::decode_locator(bytes) {
        let once = codec::encode_locator(&msg).expect("a decoded locator message encodes");
        let again = codec::decode_locator(&once).expect("an encoded locator message decodes");
        assert_eq!(codec::encode_locator(&again).unwrap(), once, "locator message re-encodes differently");
    }
    if let Ok(entry) = codec::decode_entry(bytes) {
        let once = codec::encode_entry(&entry).expect("a decoded outbox entry encodes");
        let again = codec::decode_entry(&once).expect("an encoded outbox entry decodes");
        assert_eq!(codec::encode_entry(&again).unwrap(), once, "outbox entry re-encodes differently");
    }
    if let Ok(version) = codec::peek_hello_version(bytes) {
        let accepted = codec::decode_hello(bytes, version, version);
        assert!(!matches!(accepted, Err(codec::CodecError::UnsupportedVersion { .. })), "peeked version refused");
    }
    let _ = codec::decode_hello(bytes, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION);
    if let Ok(claims) = serde_json::from_slice::<Claims>(bytes) {
        let json = serde_json::to_vec(&claims).expect("claims serialize");
        assert_eq!(serde_json::from_slice::<Claims>(&json).unwrap(), claims, "claims do not round-trip");
    }
}

fn check_client_round_trip(frame: &ClientFrame) {
    let bytes = frame.encode().expect("a decoded client frame encodes");
    assert_eq!(&ClientFrame::decode(&bytes).expect("an encoded client frame decodes"), frame);
}

fn check_edge_round_trip(frame: &EdgeFrame) {
    let bytes = frame.encode().expect("a decoded edge frame encodes");
    assert_eq!(&EdgeFrame::decode(&bytes).expect("an encoded edge frame decodes"), frame);
}

// ---- strategies for valid frames ----

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn participant() -> impl Strategy<Value = Participant> {
    (any::<u32>(), prop_oneof![Just(Role::Host), Just(Role::Guest)], text(24), text(24))
        .prop_map(|(id, role, user_id, display_name)| Participant { id, role, user_id, display_name })
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (any::<u8>(), text(300)).prop_map(|(version, token)| ClientFrame::Join { version, token }),
        (any::<u64>(), any::<u32>(), blob(512)).prop_map(|(message_id, to, payload)| ClientFrame::Send {
            message_id,
            to,
            payload
        }),
        any::<u64>().prop_map(|nonce| ClientFrame::Ping { nonce }),
        Just(ClientFrame::Leave),
        (any::<u8>(), any::<u32>(), blob(255), any::<u64>()).prop_map(
            |(version, participant_id, resume_secret, last_seq)| ClientFrame::Resume {
                version,
                participant_id,
                resume_secret,
                last_seq
            }
        ),
        Just(ClientFrame::EndSession),
        (any::<u32>(), any::<bool>()).prop_map(|(participant_id, admit)| ClientFrame::Admit { participant_id, admit }),
        text(600).prop_map(|sdp| ClientFrame::MediaOffer { sdp }),
        (any::<u32>(), text(600)).prop_map(|(offer_id, sdp)| ClientFrame::MediaAnswer { offer_id, sdp }),
        text(200).prop_map(|candidate| ClientFrame::MediaCandidate { candidate }),
        (text(8), source()).prop_map(|(mid, source)| ClientFrame::TrackPublish { mid, source }),
        (text(8), any::<bool>()).prop_map(|(mid, muted)| ClientFrame::TrackMute { mid, muted }),
        Just(ClientFrame::MediaLeave),
    ]
}

fn source() -> impl Strategy<Value = TrackSource> {
    prop_oneof![
        Just(TrackSource::Microphone),
        Just(TrackSource::Camera),
        Just(TrackSource::Screen),
        Just(TrackSource::ScreenAudio)
    ]
}

fn edge_frame() -> impl Strategy<Value = EdgeFrame> {
    let reason = prop_oneof![Just(LeaveReason::Left), Just(LeaveReason::Disconnected), Just(LeaveReason::Removed)];
    prop_oneof![
        (any::<u8>(), any::<u32>(), any::<u64>(), blob(255), vec(participant(), 0..6), vec(any::<u32>(), 0..6))
            .prop_map(|(version, participant_id, seq, resume_secret, participants, away)| EdgeFrame::Welcome {
                version,
                participant_id,
                seq,
                resume_secret,
                participants,
                away,
            }),
        (any::<u64>(), participant()).prop_map(|(seq, participant)| EdgeFrame::ParticipantJoined { seq, participant }),
        (any::<u64>(), any::<u32>(), reason).prop_map(|(seq, participant_id, reason)| EdgeFrame::ParticipantLeft {
            seq,
            participant_id,
            reason
        }),
        (any::<u64>(), any::<u32>(), any::<u32>(), blob(512)).prop_map(|(seq, from, to, payload)| EdgeFrame::Message {
            seq,
            from,
            to,
            payload
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(message_id, seq)| EdgeFrame::Ack { message_id, seq }),
        (any::<u16>(), text(100)).prop_map(|(code, message)| EdgeFrame::Error { code, message }),
        any::<u64>().prop_map(|nonce| EdgeFrame::Pong { nonce }),
        (any::<u64>(), any::<u32>()).prop_map(|(seq, replayed)| EdgeFrame::Resumed { seq, replayed }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(seq, participant_id)| EdgeFrame::ParticipantAway { seq, participant_id }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(seq, participant_id)| EdgeFrame::ParticipantBack { seq, participant_id }),
        participant().prop_map(|participant| EdgeFrame::JoinRequest { participant }),
        Just(EdgeFrame::Waiting),
        text(600).prop_map(|sdp| EdgeFrame::MediaAnswer { sdp }),
        (any::<u32>(), text(600)).prop_map(|(offer_id, sdp)| EdgeFrame::MediaOffer { offer_id, sdp }),
        (any::<u32>(), any::<u32>(), source(), any::<bool>(), text(8)).prop_map(
            |(track_id, participant_id, source, muted, mid)| EdgeFrame::TrackPublished {
                track_id,
                participant_id,
                source,
                muted,
                mid
            }
        ),
        any::<u32>().prop_map(|track_id| EdgeFrame::TrackUnpublished { track_id }),
        (any::<u32>(), any::<bool>()).prop_map(|(track_id, muted)| EdgeFrame::TrackMuted { track_id, muted }),
        prop_oneof![
            Just(MediaCloseReason::Left),
            Just(MediaCloseReason::Disconnected),
            Just(MediaCloseReason::Failed),
            Just(MediaCloseReason::Stopped)
        ]
        .prop_map(|reason| EdgeFrame::MediaClosed { reason }),
    ]
}

/// The variant's name. No `_` arm: a new variant fails to compile here until `client_frame` above
/// builds it too.
fn client_variant(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Join { .. } => "join",
        ClientFrame::Send { .. } => "send",
        ClientFrame::Ping { .. } => "ping",
        ClientFrame::Leave => "leave",
        ClientFrame::Resume { .. } => "resume",
        ClientFrame::EndSession => "end_session",
        ClientFrame::Admit { .. } => "admit",
        ClientFrame::MediaOffer { .. } => "media_offer",
        ClientFrame::MediaAnswer { .. } => "media_answer",
        ClientFrame::MediaCandidate { .. } => "media_candidate",
        ClientFrame::TrackPublish { .. } => "track_publish",
        ClientFrame::TrackMute { .. } => "track_mute",
        ClientFrame::MediaLeave => "media_leave",
    }
}

/// The variant's name. No `_` arm: a new variant fails to compile here until `edge_frame` above
/// builds it too.
fn edge_variant(frame: &EdgeFrame) -> &'static str {
    match frame {
        EdgeFrame::Welcome { .. } => "welcome",
        EdgeFrame::ParticipantJoined { .. } => "participant_joined",
        EdgeFrame::ParticipantLeft { .. } => "participant_left",
        EdgeFrame::Message { .. } => "message",
        EdgeFrame::Ack { .. } => "ack",
        EdgeFrame::Error { .. } => "error",
        EdgeFrame::Pong { .. } => "pong",
        EdgeFrame::Resumed { .. } => "resumed",
        EdgeFrame::ParticipantAway { .. } => "participant_away",
        EdgeFrame::ParticipantBack { .. } => "participant_back",
        EdgeFrame::JoinRequest { .. } => "join_request",
        EdgeFrame::Waiting => "waiting",
        EdgeFrame::MediaAnswer { .. } => "media_answer",
        EdgeFrame::MediaOffer { .. } => "media_offer",
        EdgeFrame::TrackPublished { .. } => "track_published",
        EdgeFrame::TrackUnpublished { .. } => "track_unpublished",
        EdgeFrame::TrackMuted { .. } => "track_muted",
        EdgeFrame::MediaClosed { .. } => "media_closed",
    }
}

/// Any valid session frame, client or edge, encoded.
fn encoded_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        client_frame().prop_map(|f| f.encode().unwrap().to_vec()),
        edge_frame().prop_map(|f| f.encode().unwrap().to_vec()),
    ]
}

// ---- the properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// (a) Arbitrary bytes never panic a decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        decode_everything(&bytes);
    }

    /// (a) The same with short inputs, which reach past the kind byte or the postcard tag far more
    /// often than long random ones.
    #[test]
    fn short_bytes_never_panic(bytes in vec(any::<u8>(), 0..48)) {
        decode_everything(&bytes);
    }

    /// (b) Every client frame round-trips.
    #[test]
    fn client_frames_round_trip(frame in client_frame()) {
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(ClientFrame::decode(&bytes), Ok(frame.clone()), "{} did not round-trip", client_variant(&frame));
    }

    /// (b) Every edge frame round-trips.
    #[test]
    fn edge_frames_round_trip(frame in edge_frame()) {
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(EdgeFrame::decode(&bytes), Ok(frame.clone()), "{} did not round-trip", edge_variant(&frame));
    }

    /// (c) No strict prefix of a valid frame is accepted, by either decoder.
    #[test]
    fn strict_prefixes_are_refused(bytes in encoded_frame()) {
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            prop_assert!(ClientFrame::decode(prefix).is_err(), "client decoder accepted {cut} of {} bytes", bytes.len());
            prop_assert!(EdgeFrame::decode(prefix).is_err(), "edge decoder accepted {cut} of {} bytes", bytes.len());
        }
    }

    /// (d) Changing one byte of a valid frame never panics a decoder (and what still decodes
    /// round-trips).
    #[test]
    fn one_changed_byte_never_panics(bytes in encoded_frame(), at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let mut bytes = bytes;
        let i = at.index(bytes.len());
        bytes[i] = to;
        decode_everything(&bytes);
    }
}

// ---- the golden fixtures: valid link messages and frames of every kind ----

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("hex") {
            continue;
        }
        let digits: String = std::fs::read_to_string(&path).unwrap().split_whitespace().collect();
        let bytes = hex::decode(&digits).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((path.file_stem().unwrap().to_string_lossy().into_owned(), bytes));
    }
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

/// (c) For every fixture (each link message and session frame kind), the decoder it is an
/// encoding of refuses every strict prefix. Postcard ignores bytes after a message, so a link
/// fixture can also decode as another type from its first bytes; the fixture's own decoder is the
/// one that re-encodes it to exactly the same bytes.
#[test]
fn strict_prefixes_of_fixtures_are_refused() {
    type Decoder = fn(&[u8]) -> Option<Vec<u8>>;
    let decoders: [(&str, Decoder); 7] = [
        ("presence client frame", |b| PresenceClientFrame::decode(b).ok().map(|f| f.encode().unwrap().to_vec())),
        ("presence frame", |b| PresenceFrame::decode(b).ok().map(|f| f.encode().unwrap().to_vec())),
        ("client frame", |b| ClientFrame::decode(b).ok().map(|f| f.encode().unwrap().to_vec())),
        ("edge frame", |b| EdgeFrame::decode(b).ok().map(|f| f.encode().unwrap().to_vec())),
        ("edge message", |b| codec::decode_edge(b).ok().map(|m| codec::encode_edge(&m).unwrap())),
        ("locator message", |b| codec::decode_locator(b).ok().map(|m| codec::encode_locator(&m).unwrap())),
        ("outbox entry", |b| codec::decode_entry(b).ok().map(|e| codec::encode_entry(&e).unwrap())),
    ];
    let mut checked = 0;
    for (name, bytes) in fixtures() {
        // A fixture that is the encoding of nothing (stale after a layout change, before `just
        // bless`) is `golden.rs`'s to report.
        let owners = decoders.iter().filter(|(_, decode)| decode(&bytes).as_ref() == Some(&bytes));
        for (decoder, decode) in owners {
            checked += 1;
            for cut in 0..bytes.len() {
                assert!(
                    decode(&bytes[..cut]).is_none(),
                    "{decoder} decoder accepted {cut} of {} bytes of {name}",
                    bytes.len()
                );
            }
        }
    }
    assert!(checked > 0, "no fixture is the encoding of anything");
}

/// (d) Every single-byte change of every fixture, exhaustively: 256 values at every position.
#[test]
fn every_one_byte_change_of_fixtures_never_panics() {
    for (_, bytes) in fixtures() {
        decode_everything(&bytes);
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            for b in 0..=255u8 {
                changed[i] = b;
                decode_everything(&changed);
            }
        }
    }
}
