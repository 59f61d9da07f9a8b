//! Golden bytes: every message's encoding is frozen in `tests/fixtures/*.hex`, and the byte-level
//! examples in `docs/protocol.md` must be exactly those fixtures.
//!
//! After a deliberate protocol change, regenerate with `DUET_BLESS=1 cargo test -p duet-proto`
//! (and bump the protocol version).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use duet_proto::codec;
use duet_proto::link::*;
use duet_proto::outbox::*;
use duet_proto::session::*;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn host() -> Participant {
    Participant { id: 1, role: Role::Host, user_id: "ada".into(), display_name: "Ada".into() }
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let session: Vec<(&str, Bytes)> = vec![
        ("session-join", ClientFrame::Join { version: 2, token: "eyJ0".into() }.encode().unwrap()),
        (
            "session-resume",
            ClientFrame::Resume {
                version: 2,
                participant_id: 2,
                resume_secret: Bytes::from_static(&[0xab; 4]),
                last_seq: 9,
            }
            .encode()
            .unwrap(),
        ),
        ("session-end-session", ClientFrame::EndSession.encode().unwrap()),
        ("session-admit", ClientFrame::Admit { participant_id: 3, admit: true }.encode().unwrap()),
        ("session-media-offer", ClientFrame::MediaOffer { sdp: "v=0\r\n".into() }.encode().unwrap()),
        ("session-media-answer", ClientFrame::MediaAnswer { offer_id: 2, sdp: "v=0\r\n".into() }.encode().unwrap()),
        (
            "session-media-candidate",
            ClientFrame::MediaCandidate { candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into() }
                .encode()
                .unwrap(),
        ),
        (
            "session-track-publish",
            ClientFrame::TrackPublish { mid: "1".into(), source: TrackSource::Screen }.encode().unwrap(),
        ),
        ("session-track-mute", ClientFrame::TrackMute { mid: "0".into(), muted: true }.encode().unwrap()),
        ("session-media-leave", ClientFrame::MediaLeave.encode().unwrap()),
        (
            "session-send",
            ClientFrame::Send { message_id: 42, to: EVERYONE, payload: Bytes::from_static(b"hi") }.encode().unwrap(),
        ),
        (
            "session-send-direct",
            ClientFrame::Send { message_id: 0, to: 2, payload: Bytes::from_static(b"k") }.encode().unwrap(),
        ),
        ("session-ping", ClientFrame::Ping { nonce: 1 }.encode().unwrap()),
        ("session-leave", ClientFrame::Leave.encode().unwrap()),
        (
            "session-welcome",
            EdgeFrame::Welcome {
                version: 2,
                participant_id: 2,
                seq: 5,
                resume_secret: Bytes::from_static(&[0xab; 4]),
                participants: vec![
                    host(),
                    Participant { id: 2, role: Role::Guest, user_id: "bo".into(), display_name: "Bo".into() },
                ],
                away: vec![1],
            }
            .encode()
            .unwrap(),
        ),
        ("session-participant-joined", EdgeFrame::ParticipantJoined { seq: 6, participant: host() }.encode().unwrap()),
        (
            "session-participant-left",
            EdgeFrame::ParticipantLeft { seq: 7, participant_id: 2, reason: LeaveReason::Disconnected }
                .encode()
                .unwrap(),
        ),
        (
            "session-message",
            EdgeFrame::Message { seq: 8, from: 1, to: EVERYONE, payload: Bytes::from_static(b"hi") }.encode().unwrap(),
        ),
        ("session-ack", EdgeFrame::Ack { message_id: 42, seq: 8 }.encode().unwrap()),
        (
            "session-error",
            EdgeFrame::Error { code: error_code::UNKNOWN_PARTICIPANT, message: "no 9".into() }.encode().unwrap(),
        ),
        ("session-pong", EdgeFrame::Pong { nonce: 1 }.encode().unwrap()),
        ("session-resumed", EdgeFrame::Resumed { seq: 12, replayed: 3 }.encode().unwrap()),
        ("session-participant-away", EdgeFrame::ParticipantAway { seq: 10, participant_id: 1 }.encode().unwrap()),
        ("session-participant-back", EdgeFrame::ParticipantBack { seq: 11, participant_id: 1 }.encode().unwrap()),
        (
            "session-join-request",
            EdgeFrame::JoinRequest {
                participant: Participant { id: 3, role: Role::Guest, user_id: "cy".into(), display_name: "Cy".into() },
            }
            .encode()
            .unwrap(),
        ),
        ("session-waiting", EdgeFrame::Waiting.encode().unwrap()),
        ("session-edge-media-answer", EdgeFrame::MediaAnswer { sdp: "v=0\r\n".into() }.encode().unwrap()),
        ("session-edge-media-offer", EdgeFrame::MediaOffer { offer_id: 2, sdp: "v=0\r\n".into() }.encode().unwrap()),
        (
            "session-track-published",
            EdgeFrame::TrackPublished {
                track_id: 5,
                participant_id: 1,
                source: TrackSource::Camera,
                muted: false,
                mid: "2".into(),
            }
            .encode()
            .unwrap(),
        ),
        ("session-track-unpublished", EdgeFrame::TrackUnpublished { track_id: 5 }.encode().unwrap()),
        ("session-track-muted", EdgeFrame::TrackMuted { track_id: 5, muted: true }.encode().unwrap()),
        ("session-media-closed", EdgeFrame::MediaClosed { reason: MediaCloseReason::Disconnected }.encode().unwrap()),
    ];
    let mut all: Vec<(&'static str, Vec<u8>)> = session.into_iter().map(|(n, b)| (n, b.to_vec())).collect();

    use duet_proto::presence::{Member, PresenceClientFrame, PresenceFrame};
    let presence: Vec<(&str, Bytes)> = vec![
        ("presence-hello", PresenceClientFrame::Hello { version: 1, token: "eyJ0".into() }.encode().unwrap()),
        ("presence-ping", PresenceClientFrame::Ping { nonce: 1 }.encode().unwrap()),
        (
            "presence-snapshot",
            PresenceFrame::Snapshot {
                seq: 4,
                members: vec![
                    Member { user_id: "ada".into(), display_name: "Ada".into(), connections: 2 },
                    Member { user_id: "bo".into(), display_name: "Bo".into(), connections: 1 },
                ],
                sessions: vec!["s_1".into()],
            }
            .encode()
            .unwrap(),
        ),
        ("presence-pong", PresenceFrame::Pong { nonce: 1 }.encode().unwrap()),
    ];
    all.extend(presence.into_iter().map(|(n, b)| (n, b.to_vec())));

    let link = vec![
        (
            "link-hello",
            codec::encode_edge(&EdgeMessage::Hello(Hello {
                protocol_version: 2,
                edge_id: "e1".into(),
                region: "eu".into(),
                public_url: "ws://h:1".into(),
                capacity: Capacity { max_connections: 100, max_sessions: 10 },
                build: "0.1.0".into(),
                live_sessions: vec!["s1".into()],
                load: Load { cpu: 0.5, loop_lag_ms: 2, connections: 3, sessions: 1 },
                outbox_id: 0x1234_5678_9abc_def0,
            }))
            .unwrap(),
        ),
        (
            "link-heartbeat",
            codec::encode_edge(&EdgeMessage::Heartbeat(Heartbeat {
                load: Load { cpu: 0.25, loop_lag_ms: 1, connections: 300, sessions: 2 },
                outbox: OutboxStatus {
                    depth: 3,
                    oldest_age_ms: 250,
                    last_seq: 17,
                    dropped_audit: 0,
                    dropped_metrics: 0,
                },
            }))
            .unwrap(),
        ),
        (
            "link-session-closed",
            codec::encode_edge(&EdgeMessage::SessionClosed {
                session_id: "s1".into(),
                reason: SessionEndReason::Empty,
            })
            .unwrap(),
        ),
        (
            "link-outbox",
            codec::encode_edge(&EdgeMessage::Outbox {
                entries: vec![SequencedEntry {
                    seq: 1,
                    entry: OutboxEntry::Audit(AuditEntry {
                        at_ms: 1_700_000_000_000,
                        event: AuditEvent::SessionStarted,
                        session_id: Some("s1".into()),
                        participant_id: None,
                        user_id: None,
                        detail: String::new(),
                    }),
                }],
            })
            .unwrap(),
        ),
        (
            "link-welcome",
            codec::encode_locator(&LocatorMessage::Welcome(Welcome {
                protocol_version: 2,
                locator_build: "0.1.0".into(),
                keys: vec![VerifyingKey { kid: "k1".into(), public_key: vec![7; 32] }],
                heartbeat_interval_ms: 1000,
                link_epoch: 4,
            }))
            .unwrap(),
        ),
        ("link-outbox-ack", codec::encode_locator(&LocatorMessage::OutboxAck { up_to: 17 }).unwrap()),
        ("link-heartbeat-ack", codec::encode_locator(&LocatorMessage::HeartbeatAck).unwrap()),
        (
            "link-outbox-metrics",
            codec::encode_edge(&EdgeMessage::Outbox {
                entries: vec![
                    SequencedEntry {
                        seq: 2,
                        entry: OutboxEntry::Metrics(MetricsEntry::Usage(UsageMetrics {
                            at_ms: 1_700_000_060_000,
                            interval_ms: 60_000,
                            connections: 4,
                            sessions: 2,
                            messages_relayed: 120,
                            bytes_relayed: 4096,
                        })),
                    },
                    SequencedEntry {
                        seq: 3,
                        entry: OutboxEntry::Metrics(MetricsEntry::SessionSummary(SessionSummary {
                            at_ms: 1_700_000_061_000,
                            session_id: "s1".into(),
                            started_at_ms: 1_700_000_000_000,
                            participants: 2,
                            messages_relayed: 100,
                            bytes_relayed: 2048,
                            end_reason: "empty".into(),
                        })),
                    },
                ],
            })
            .unwrap(),
        ),
        ("link-draining", codec::encode_edge(&EdgeMessage::Draining { remaining_ms: 15_000 }).unwrap()),
        ("link-refused", codec::encode_locator(&LocatorMessage::Refused { code: 4601, reason: "dup".into() }).unwrap()),
        (
            "link-command-end-session",
            codec::encode_locator(&LocatorMessage::Command {
                id: 3,
                command: Command::EndSession { session_id: "s1".into(), reason: SessionEndReason::Ended },
            })
            .unwrap(),
        ),
        (
            "link-command-team-sessions",
            codec::encode_locator(&LocatorMessage::Command {
                id: 8,
                command: Command::TeamSessions { team: "platform".into(), sessions: vec!["s1".into()] },
            })
            .unwrap(),
        ),
    ];
    all.extend(link);
    all
}

fn to_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = String::new();
    for chunk in parts.chunks(16) {
        out.push_str(&chunk.join(" "));
        out.push('\n');
    }
    out
}

fn normalize(hex_text: &str) -> Vec<u8> {
    let digits: String = hex_text.split_whitespace().collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("bad hex {hex_text:?}: {e}"))
}

#[test]
fn encodings_match_fixtures() {
    let bless = std::env::var_os("DUET_BLESS").is_some();
    for (name, bytes) in samples() {
        let path = fixtures_dir().join(format!("{name}.hex"));
        if bless {
            std::fs::write(&path, to_hex(&bytes)).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(normalize(&want), bytes, "{name}: encoding changed; see {}", path.display());
    }
}

#[test]
fn fixtures_decode_back() {
    for (name, _) in samples() {
        let bytes = normalize(&std::fs::read_to_string(fixtures_dir().join(format!("{name}.hex"))).unwrap());
        if name.starts_with("session-") {
            let client = ClientFrame::decode(&bytes);
            let edge = EdgeFrame::decode(&bytes);
            assert!(client.is_ok() || edge.is_ok(), "{name} does not decode");
        } else if name.starts_with("presence-") {
            let client = duet_proto::presence::PresenceClientFrame::decode(&bytes);
            let edge = duet_proto::presence::PresenceFrame::decode(&bytes);
            assert!(client.is_ok() || edge.is_ok(), "{name} does not decode");
        } else {
            assert!(
                codec::decode_edge(&bytes).is_ok() || codec::decode_locator(&bytes).is_ok(),
                "{name} does not decode"
            );
        }
    }
}

/// `docs/protocol.md` marks each byte example with `<!-- fixture: NAME -->` followed by a fenced
/// block; each must equal the fixture, and every session fixture must be shown there.
#[test]
fn protocol_doc_examples_are_the_fixtures() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/protocol.md");
    let mut shown = std::collections::HashSet::new();
    let mut rest = doc.as_str();
    while let Some(i) = rest.find("<!-- fixture: ") {
        rest = &rest[i + "<!-- fixture: ".len()..];
        let end = rest.find(" -->").expect("unterminated fixture marker");
        let name = rest[..end].to_string();
        let open = rest.find("```").expect("fixture marker without a code block");
        let body_start = open + rest[open..].find('\n').unwrap() + 1;
        let body_end = body_start + rest[body_start..].find("```").unwrap();
        let body = &rest[body_start..body_end];
        let want = std::fs::read_to_string(fixtures_dir().join(format!("{name}.hex")))
            .unwrap_or_else(|_| panic!("docs/protocol.md names unknown fixture {name}"));
        assert_eq!(normalize(body), normalize(&want), "docs/protocol.md example {name} differs from its fixture");
        shown.insert(name);
        rest = &rest[body_end..];
    }
    for (name, _) in samples() {
        if name.starts_with("session-") || name.starts_with("presence-") {
            assert!(shown.contains(name), "docs/protocol.md shows no example for {name}");
        }
    }
}

/// Every registered close code is in the table of `docs/protocol.md`, with its name.
#[test]
fn protocol_doc_lists_every_close_code() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")).unwrap();
    for code in duet_proto::CloseCode::ALL {
        let row = format!("| {} | {}", code.code(), code.name());
        assert!(doc.lines().any(|l| l.starts_with(&row)), "docs/protocol.md has no row for close code {code}");
    }
}
