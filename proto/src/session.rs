//! The client-to-edge session protocol: one websocket binary frame per message.
//!
//! Every frame starts with a kind byte; kinds `0x01..=0x7f` go from client to edge, `0x81..=0xff`
//! from edge to client. Integers are fixed-width big-endian; strings are a `u16` byte length and
//! UTF-8; payloads are a `u32` byte length and opaque bytes (the edge never reads them: they are
//! end-to-end encrypted by the clients). `docs/protocol.md` is the normative description and its
//! byte examples are frozen by `tests/golden.rs`.
//!
//! Decoding is strict and allocation-bounded by the frame itself: a length field that points past
//! the frame, trailing bytes, invalid UTF-8 or an unknown enum value is an error, never a panic.

use bytes::{BufMut, Bytes, BytesMut};

/// The session protocol version a client asks for in `join` and `resume`. Version 2 added resume,
/// away participants, host approval and `end_session`; version 3 added media signalling (the
/// `media_*` and `track_*` kinds). Version 1 is no longer accepted.
pub const SESSION_PROTOCOL_VERSION: u8 = 3;

/// The oldest version an edge still accepts: a version-2 participant takes part in everything but
/// media, and never receives a version-3 kind.
pub const MIN_SESSION_PROTOCOL_VERSION: u8 = 2;

/// The first version with media signalling.
pub const MEDIA_PROTOCOL_VERSION: u8 = 3;

/// The longest SDP a `media_offer` or `media_answer` may carry (a session of 50 participants
/// publishing three tracks each stays well below it; the frame size limit applies as well).
pub const MAX_SDP_BYTES: usize = 512 * 1024;

/// A participant's id inside one session, assigned by the locator (the host is 1).
pub type ParticipantId = u32;

/// `to` value of a message addressed to every other participant.
pub const EVERYONE: ParticipantId = 0;

/// Kind bytes. Stable forever: new kinds are added, none is reused.
pub mod kind {
    pub const JOIN: u8 = 0x01;
    pub const SEND: u8 = 0x02;
    pub const PING: u8 = 0x03;
    pub const LEAVE: u8 = 0x04;
    pub const RESUME: u8 = 0x05;
    pub const END_SESSION: u8 = 0x06;
    pub const ADMIT: u8 = 0x07;
    pub const MEDIA_OFFER: u8 = 0x08;
    pub const MEDIA_ANSWER: u8 = 0x09;
    pub const MEDIA_CANDIDATE: u8 = 0x0a;
    pub const TRACK_PUBLISH: u8 = 0x0b;
    pub const TRACK_MUTE: u8 = 0x0c;
    pub const MEDIA_LEAVE: u8 = 0x0d;

    pub const WELCOME: u8 = 0x81;
    pub const PARTICIPANT_JOINED: u8 = 0x82;
    pub const PARTICIPANT_LEFT: u8 = 0x83;
    pub const MESSAGE: u8 = 0x84;
    pub const ACK: u8 = 0x85;
    pub const ERROR: u8 = 0x86;
    pub const PONG: u8 = 0x87;
    pub const RESUMED: u8 = 0x88;
    pub const PARTICIPANT_AWAY: u8 = 0x89;
    pub const PARTICIPANT_BACK: u8 = 0x8a;
    pub const JOIN_REQUEST: u8 = 0x8b;
    pub const WAITING: u8 = 0x8c;
    pub const MEDIA_ANSWER_FROM_EDGE: u8 = 0x8d;
    pub const MEDIA_OFFER_FROM_EDGE: u8 = 0x8e;
    pub const TRACK_PUBLISHED: u8 = 0x8f;
    pub const TRACK_UNPUBLISHED: u8 = 0x90;
    pub const TRACK_MUTED: u8 = 0x91;
    pub const MEDIA_CLOSED: u8 = 0x92;
}

/// What a published track carries. Audio and video are told apart by the SDP; the source says
/// which of a participant's video tracks is its camera and which its screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
    ScreenAudio,
}

impl TrackSource {
    pub const fn to_byte(self) -> u8 {
        match self {
            TrackSource::Microphone => 1,
            TrackSource::Camera => 2,
            TrackSource::Screen => 3,
            TrackSource::ScreenAudio => 4,
        }
    }

    pub const fn from_byte(b: u8) -> Option<TrackSource> {
        match b {
            1 => Some(TrackSource::Microphone),
            2 => Some(TrackSource::Camera),
            3 => Some(TrackSource::Screen),
            4 => Some(TrackSource::ScreenAudio),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            TrackSource::Microphone => "microphone",
            TrackSource::Camera => "camera",
            TrackSource::Screen => "screen",
            TrackSource::ScreenAudio => "screen_audio",
        }
    }

    /// Whether the track is audio (else video).
    pub const fn is_audio(self) -> bool {
        matches!(self, TrackSource::Microphone | TrackSource::ScreenAudio)
    }
}

/// Why the edge ended a participant's media connection (`media_closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaCloseReason {
    /// The client sent `media_leave`.
    Left,
    /// ICE lost the client (no consent or traffic for the ICE timeout).
    Disconnected,
    /// The edge failed on this connection (its state was dropped; the client may offer again).
    Failed,
    /// The edge is shutting down or media is being stopped for the session.
    Stopped,
}

impl MediaCloseReason {
    pub const fn to_byte(self) -> u8 {
        match self {
            MediaCloseReason::Left => 0,
            MediaCloseReason::Disconnected => 1,
            MediaCloseReason::Failed => 2,
            MediaCloseReason::Stopped => 3,
        }
    }

    pub const fn from_byte(b: u8) -> Option<MediaCloseReason> {
        match b {
            0 => Some(MediaCloseReason::Left),
            1 => Some(MediaCloseReason::Disconnected),
            2 => Some(MediaCloseReason::Failed),
            3 => Some(MediaCloseReason::Stopped),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            MediaCloseReason::Left => "left",
            MediaCloseReason::Disconnected => "disconnected",
            MediaCloseReason::Failed => "failed",
            MediaCloseReason::Stopped => "stopped",
        }
    }
}

/// A participant's role in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Host,
    Guest,
}

impl Role {
    pub const fn to_byte(self) -> u8 {
        match self {
            Role::Host => 1,
            Role::Guest => 2,
        }
    }

    pub const fn from_byte(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Host),
            2 => Some(Role::Guest),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Guest => "guest",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "host" => Some(Role::Host),
            "guest" => Some(Role::Guest),
            _ => None,
        }
    }
}

/// Why a participant left, as told to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its connection was lost and it did not resume within its grace period.
    Disconnected,
    /// Its connection was closed by the edge (slow reader, protocol error).
    Removed,
}

impl LeaveReason {
    pub const fn to_byte(self) -> u8 {
        match self {
            LeaveReason::Left => 0,
            LeaveReason::Disconnected => 1,
            LeaveReason::Removed => 2,
        }
    }

    pub const fn from_byte(b: u8) -> Option<LeaveReason> {
        match b {
            0 => Some(LeaveReason::Left),
            1 => Some(LeaveReason::Disconnected),
            2 => Some(LeaveReason::Removed),
            _ => None,
        }
    }
}

/// Codes of the non-fatal `error` frame (the connection stays open).
pub mod error_code {
    /// `send` named a participant that is not in the session.
    pub const UNKNOWN_PARTICIPANT: u16 = 1;
    /// `send` named the sender itself.
    pub const SELF_ADDRESSED: u16 = 2;
    /// `end_session` or `admit` from a participant that is not the host.
    pub const NOT_HOST: u16 = 3;
    /// `admit` named a participant that is not waiting for approval.
    pub const NOT_WAITING: u16 = 4;
    /// `send` from a guest still waiting for the host's approval.
    pub const NOT_ADMITTED: u16 = 5;
    /// A media frame on an edge without media (or from a guest still waiting for approval).
    pub const MEDIA_UNAVAILABLE: u16 = 6;
    /// A `media_offer`, `media_answer` or `media_candidate` the edge could not apply; the message
    /// says why. The media connection is unchanged (an offer may be sent again).
    pub const MEDIA_REJECTED: u16 = 7;
    /// `track_publish` or `track_mute` named a mid that is not one of the sender's sending
    /// transceivers, or a media frame that needs a media connection came before `media_offer`.
    pub const UNKNOWN_TRACK: u16 = 8;
}

/// A participant as listed in `welcome` and `participant_joined`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub id: ParticipantId,
    pub role: Role,
    pub user_id: String,
    pub display_name: String,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// First frame on every connection.
    Join {
        version: u8,
        token: String,
    },
    /// A message for everyone else (`to == EVERYONE`) or for one participant. `message_id` is the
    /// client's own id (0: none); a non-zero id is echoed back in an `ack`.
    Send {
        message_id: u64,
        to: ParticipantId,
        payload: Bytes,
    },
    Ping {
        nonce: u64,
    },
    /// Leave the session on purpose (the edge then closes with 1000).
    Leave,
    /// First frame of a reconnecting participant instead of `join`: the secret from its
    /// `welcome` and the highest sequence number it received.
    Resume {
        version: u8,
        participant_id: ParticipantId,
        resume_secret: Bytes,
        last_seq: u64,
    },
    /// The host ends the session for everyone.
    EndSession,
    /// The host admits (`admit == true`) or refuses a guest waiting for approval.
    Admit {
        participant_id: ParticipantId,
        admit: bool,
    },
    /// An SDP offer for this participant's media connection (the first one opens it); answered
    /// with [`EdgeFrame::MediaAnswer`].
    MediaOffer {
        sdp: String,
    },
    /// The client's answer to the edge's [`EdgeFrame::MediaOffer`] with the same `offer_id`.
    MediaAnswer {
        offer_id: u32,
        sdp: String,
    },
    /// A trickled ICE candidate (`candidate:...`, as in an SDP `a=` line without `a=`); an empty
    /// string ends the client's candidates.
    MediaCandidate {
        candidate: String,
    },
    /// Declares what the sending transceiver `mid` carries (before or after the offer that adds it).
    TrackPublish {
        mid: String,
        source: TrackSource,
    },
    /// The sender muted (`true`) or unmuted its track on `mid`; the others are told.
    TrackMute {
        mid: String,
        muted: bool,
    },
    /// Ends this participant's media connection (its tracks are unpublished); the session goes on.
    MediaLeave,
}

/// Frames the edge sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeFrame {
    Welcome {
        version: u8,
        participant_id: ParticipantId,
        /// The session's latest sequence number when this participant joined.
        seq: u64,
        /// Secret for resuming this participant's place after a dropped connection.
        resume_secret: Bytes,
        /// Everyone holding a place in the session, this participant included.
        participants: Vec<Participant>,
        /// Those of `participants` whose connection is lost (they may resume).
        away: Vec<ParticipantId>,
    },
    ParticipantJoined {
        seq: u64,
        participant: Participant,
    },
    ParticipantLeft {
        seq: u64,
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    Message {
        seq: u64,
        from: ParticipantId,
        to: ParticipantId,
        payload: Bytes,
    },
    Ack {
        message_id: u64,
        seq: u64,
    },
    Error {
        code: u16,
        message: String,
    },
    Pong {
        nonce: u64,
    },
    /// Answers `resume`: the replayed events (those after the resume's `last_seq`) follow, then
    /// live traffic. `seq` is the session's latest sequence number, the last one replayed.
    Resumed {
        seq: u64,
        replayed: u32,
    },
    /// A participant's connection was lost; it keeps its place and may resume.
    ParticipantAway {
        seq: u64,
        participant_id: ParticipantId,
    },
    /// An away participant resumed or joined again.
    ParticipantBack {
        seq: u64,
        participant_id: ParticipantId,
    },
    /// To the host: a guest asks to join a session that needs approval.
    JoinRequest {
        participant: Participant,
    },
    /// To a guest: the host must approve the join; `welcome` follows if it does.
    Waiting,
    /// The edge's answer to the client's `media_offer`.
    MediaAnswer {
        sdp: String,
    },
    /// The edge adds or removes tracks on the client's media connection; the client answers with
    /// `media_answer` carrying `offer_id`.
    MediaOffer {
        offer_id: u32,
        sdp: String,
    },
    /// Another participant's track arrives on this connection's transceiver `mid` (announced
    /// before the `media_offer` that adds it).
    TrackPublished {
        track_id: u32,
        participant_id: ParticipantId,
        source: TrackSource,
        muted: bool,
        mid: String,
    },
    /// The track is gone (its publisher stopped it, left media or left the session); its
    /// transceiver is stopped by the next `media_offer`.
    TrackUnpublished {
        track_id: u32,
    },
    TrackMuted {
        track_id: u32,
        muted: bool,
    },
    /// The edge ended this participant's media connection; the session goes on, and a new
    /// `media_offer` opens a new media connection.
    MediaClosed {
        reason: MediaCloseReason,
    },
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    #[error("frame kind 0x{kind:02x} truncated at field `{field}`")]
    Truncated { kind: u8, field: &'static str },
    #[error("frame kind 0x{kind:02x} has {extra} trailing bytes")]
    TrailingBytes { kind: u8, extra: usize },
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("field `{field}` has invalid value {value}")]
    InvalidValue { field: &'static str, value: u64 },
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
}

impl DecodeError {
    /// The close code a peer that sent this frame is closed with.
    pub fn close_code(&self) -> crate::CloseCode {
        match self {
            DecodeError::UnknownKind(_) => crate::CloseCode::UnknownKind,
            _ => crate::CloseCode::MalformedFrame,
        }
    }
}

/// A cursor over one frame's bytes that reports which field ran short.
pub(crate) struct Reader<'a> {
    pub(crate) kind: u8,
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { kind: self.kind, field });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16(field)? as usize;
        let b = self.take(len, field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// A `u32`-length UTF-8 string of at most `max` bytes (SDP).
    fn text32(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, max });
        }
        let b = self.take(len, field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidValue { field, value: b.into() }),
        }
    }

    fn source(&mut self) -> Result<TrackSource, DecodeError> {
        let b = self.u8("source")?;
        TrackSource::from_byte(b).ok_or(DecodeError::InvalidValue { field: "source", value: b.into() })
    }

    pub(crate) fn bytes8(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u8(field)? as usize;
        Ok(Bytes::copy_from_slice(self.take(len, field)?))
    }

    pub(crate) fn bytes32(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)? as usize;
        Ok(Bytes::copy_from_slice(self.take(len, field)?))
    }

    fn participant(&mut self) -> Result<Participant, DecodeError> {
        let id = self.u32("participant_id")?;
        let role_byte = self.u8("role")?;
        let role =
            Role::from_byte(role_byte).ok_or(DecodeError::InvalidValue { field: "role", value: role_byte.into() })?;
        let user_id = self.str16("user_id")?;
        let display_name = self.str16("display_name")?;
        Ok(Participant { id, role, user_id, display_name })
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { kind: self.kind, extra: self.buf.len() })
        }
    }
}

pub(crate) fn put_str16(out: &mut BytesMut, s: &str, field: &'static str) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError::TooLong { field, max: u16::MAX as usize })?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_text32(out: &mut BytesMut, s: &str, field: &'static str) -> Result<(), EncodeError> {
    if s.len() > MAX_SDP_BYTES {
        return Err(EncodeError::TooLong { field, max: MAX_SDP_BYTES });
    }
    out.put_u32(s.len() as u32);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_bytes8(out: &mut BytesMut, b: &[u8], field: &'static str) -> Result<(), EncodeError> {
    let len = u8::try_from(b.len()).map_err(|_| EncodeError::TooLong { field, max: u8::MAX as usize })?;
    out.put_u8(len);
    out.put_slice(b);
    Ok(())
}

fn put_participant(out: &mut BytesMut, p: &Participant) -> Result<(), EncodeError> {
    out.put_u32(p.id);
    out.put_u8(p.role.to_byte());
    put_str16(out, &p.user_id, "user_id")?;
    put_str16(out, &p.display_name, "display_name")
}

/// Why a frame could not be encoded (a field too long for its length prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
}

impl ClientFrame {
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        match self {
            ClientFrame::Join { version, token } => {
                out.put_u8(kind::JOIN);
                out.put_u8(*version);
                put_str16(&mut out, token, "token")?;
            }
            ClientFrame::Send { message_id, to, payload } => {
                out.reserve(17 + payload.len());
                out.put_u8(kind::SEND);
                out.put_u64(*message_id);
                out.put_u32(*to);
                let len = u32::try_from(payload.len())
                    .map_err(|_| EncodeError::TooLong { field: "payload", max: u32::MAX as usize })?;
                out.put_u32(len);
                out.put_slice(payload);
            }
            ClientFrame::Ping { nonce } => {
                out.put_u8(kind::PING);
                out.put_u64(*nonce);
            }
            ClientFrame::Leave => out.put_u8(kind::LEAVE),
            ClientFrame::Resume { version, participant_id, resume_secret, last_seq } => {
                out.put_u8(kind::RESUME);
                out.put_u8(*version);
                out.put_u32(*participant_id);
                put_bytes8(&mut out, resume_secret, "resume_secret")?;
                out.put_u64(*last_seq);
            }
            ClientFrame::EndSession => out.put_u8(kind::END_SESSION),
            ClientFrame::Admit { participant_id, admit } => {
                out.put_u8(kind::ADMIT);
                out.put_u32(*participant_id);
                out.put_u8(u8::from(*admit));
            }
            ClientFrame::MediaOffer { sdp } => {
                out.put_u8(kind::MEDIA_OFFER);
                put_text32(&mut out, sdp, "sdp")?;
            }
            ClientFrame::MediaAnswer { offer_id, sdp } => {
                out.put_u8(kind::MEDIA_ANSWER);
                out.put_u32(*offer_id);
                put_text32(&mut out, sdp, "sdp")?;
            }
            ClientFrame::MediaCandidate { candidate } => {
                out.put_u8(kind::MEDIA_CANDIDATE);
                put_str16(&mut out, candidate, "candidate")?;
            }
            ClientFrame::TrackPublish { mid, source } => {
                out.put_u8(kind::TRACK_PUBLISH);
                put_str16(&mut out, mid, "mid")?;
                out.put_u8(source.to_byte());
            }
            ClientFrame::TrackMute { mid, muted } => {
                out.put_u8(kind::TRACK_MUTE);
                put_str16(&mut out, mid, "mid")?;
                out.put_u8(u8::from(*muted));
            }
            ClientFrame::MediaLeave => out.put_u8(kind::MEDIA_LEAVE),
        }
        Ok(out.freeze())
    }

    pub fn decode(frame: &[u8]) -> Result<ClientFrame, DecodeError> {
        let (&k, rest) = frame.split_first().ok_or(DecodeError::Empty)?;
        let mut r = Reader { kind: k, buf: rest };
        let decoded = match k {
            kind::JOIN => ClientFrame::Join { version: r.u8("version")?, token: r.str16("token")? },
            kind::SEND => {
                ClientFrame::Send { message_id: r.u64("message_id")?, to: r.u32("to")?, payload: r.bytes32("payload")? }
            }
            kind::PING => ClientFrame::Ping { nonce: r.u64("nonce")? },
            kind::LEAVE => ClientFrame::Leave,
            kind::RESUME => ClientFrame::Resume {
                version: r.u8("version")?,
                participant_id: r.u32("participant_id")?,
                resume_secret: r.bytes8("resume_secret")?,
                last_seq: r.u64("last_seq")?,
            },
            kind::END_SESSION => ClientFrame::EndSession,
            kind::ADMIT => {
                let participant_id = r.u32("participant_id")?;
                let b = r.u8("admit")?;
                let admit = match b {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::InvalidValue { field: "admit", value: b.into() }),
                };
                ClientFrame::Admit { participant_id, admit }
            }
            kind::MEDIA_OFFER => ClientFrame::MediaOffer { sdp: r.text32("sdp", MAX_SDP_BYTES)? },
            kind::MEDIA_ANSWER => {
                ClientFrame::MediaAnswer { offer_id: r.u32("offer_id")?, sdp: r.text32("sdp", MAX_SDP_BYTES)? }
            }
            kind::MEDIA_CANDIDATE => ClientFrame::MediaCandidate { candidate: r.str16("candidate")? },
            kind::TRACK_PUBLISH => ClientFrame::TrackPublish { mid: r.str16("mid")?, source: r.source()? },
            kind::TRACK_MUTE => ClientFrame::TrackMute { mid: r.str16("mid")?, muted: r.flag("muted")? },
            kind::MEDIA_LEAVE => ClientFrame::MediaLeave,
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(decoded)
    }

    /// The first session protocol version with this frame (a participant that joined with an
    /// older version sending it is closed with 4001, as for an unknown kind).
    pub fn since_version(&self) -> u8 {
        match self {
            ClientFrame::MediaOffer { .. }
            | ClientFrame::MediaAnswer { .. }
            | ClientFrame::MediaCandidate { .. }
            | ClientFrame::TrackPublish { .. }
            | ClientFrame::TrackMute { .. }
            | ClientFrame::MediaLeave => MEDIA_PROTOCOL_VERSION,
            _ => 1,
        }
    }
}

impl EdgeFrame {
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        match self {
            EdgeFrame::Welcome { version, participant_id, seq, resume_secret, participants, away } => {
                out.put_u8(kind::WELCOME);
                out.put_u8(*version);
                out.put_u32(*participant_id);
                out.put_u64(*seq);
                put_bytes8(&mut out, resume_secret, "resume_secret")?;
                let count = u16::try_from(participants.len())
                    .map_err(|_| EncodeError::TooLong { field: "participants", max: u16::MAX as usize })?;
                out.put_u16(count);
                for p in participants {
                    put_participant(&mut out, p)?;
                }
                let count = u16::try_from(away.len())
                    .map_err(|_| EncodeError::TooLong { field: "away", max: u16::MAX as usize })?;
                out.put_u16(count);
                for id in away {
                    out.put_u32(*id);
                }
            }
            EdgeFrame::ParticipantJoined { seq, participant } => {
                out.put_u8(kind::PARTICIPANT_JOINED);
                out.put_u64(*seq);
                put_participant(&mut out, participant)?;
            }
            EdgeFrame::ParticipantLeft { seq, participant_id, reason } => {
                out.put_u8(kind::PARTICIPANT_LEFT);
                out.put_u64(*seq);
                out.put_u32(*participant_id);
                out.put_u8(reason.to_byte());
            }
            EdgeFrame::Message { seq, from, to, payload } => {
                out.reserve(21 + payload.len());
                out.put_u8(kind::MESSAGE);
                out.put_u64(*seq);
                out.put_u32(*from);
                out.put_u32(*to);
                let len = u32::try_from(payload.len())
                    .map_err(|_| EncodeError::TooLong { field: "payload", max: u32::MAX as usize })?;
                out.put_u32(len);
                out.put_slice(payload);
            }
            EdgeFrame::Ack { message_id, seq } => {
                out.put_u8(kind::ACK);
                out.put_u64(*message_id);
                out.put_u64(*seq);
            }
            EdgeFrame::Error { code, message } => {
                out.put_u8(kind::ERROR);
                out.put_u16(*code);
                put_str16(&mut out, message, "message")?;
            }
            EdgeFrame::Pong { nonce } => {
                out.put_u8(kind::PONG);
                out.put_u64(*nonce);
            }
            EdgeFrame::Resumed { seq, replayed } => {
                out.put_u8(kind::RESUMED);
                out.put_u64(*seq);
                out.put_u32(*replayed);
            }
            EdgeFrame::ParticipantAway { seq, participant_id } => {
                out.put_u8(kind::PARTICIPANT_AWAY);
                out.put_u64(*seq);
                out.put_u32(*participant_id);
            }
            EdgeFrame::ParticipantBack { seq, participant_id } => {
                out.put_u8(kind::PARTICIPANT_BACK);
                out.put_u64(*seq);
                out.put_u32(*participant_id);
            }
            EdgeFrame::JoinRequest { participant } => {
                out.put_u8(kind::JOIN_REQUEST);
                put_participant(&mut out, participant)?;
            }
            EdgeFrame::Waiting => out.put_u8(kind::WAITING),
            EdgeFrame::MediaAnswer { sdp } => {
                out.put_u8(kind::MEDIA_ANSWER_FROM_EDGE);
                put_text32(&mut out, sdp, "sdp")?;
            }
            EdgeFrame::MediaOffer { offer_id, sdp } => {
                out.put_u8(kind::MEDIA_OFFER_FROM_EDGE);
                out.put_u32(*offer_id);
                put_text32(&mut out, sdp, "sdp")?;
            }
            EdgeFrame::TrackPublished { track_id, participant_id, source, muted, mid } => {
                out.put_u8(kind::TRACK_PUBLISHED);
                out.put_u32(*track_id);
                out.put_u32(*participant_id);
                out.put_u8(source.to_byte());
                out.put_u8(u8::from(*muted));
                put_str16(&mut out, mid, "mid")?;
            }
            EdgeFrame::TrackUnpublished { track_id } => {
                out.put_u8(kind::TRACK_UNPUBLISHED);
                out.put_u32(*track_id);
            }
            EdgeFrame::TrackMuted { track_id, muted } => {
                out.put_u8(kind::TRACK_MUTED);
                out.put_u32(*track_id);
                out.put_u8(u8::from(*muted));
            }
            EdgeFrame::MediaClosed { reason } => {
                out.put_u8(kind::MEDIA_CLOSED);
                out.put_u8(reason.to_byte());
            }
        }
        Ok(out.freeze())
    }

    pub fn decode(frame: &[u8]) -> Result<EdgeFrame, DecodeError> {
        let (&k, rest) = frame.split_first().ok_or(DecodeError::Empty)?;
        let mut r = Reader { kind: k, buf: rest };
        let decoded = match k {
            kind::WELCOME => {
                let version = r.u8("version")?;
                let participant_id = r.u32("participant_id")?;
                let seq = r.u64("seq")?;
                let resume_secret = r.bytes8("resume_secret")?;
                let count = r.u16("participant_count")?;
                // Each participant takes at least 9 bytes, so a count larger than the rest of the
                // frame allows is refused before anything is allocated for it.
                if usize::from(count) * 9 > r.buf.len() {
                    return Err(DecodeError::Truncated { kind: k, field: "participants" });
                }
                let mut participants = Vec::with_capacity(count.into());
                for _ in 0..count {
                    participants.push(r.participant()?);
                }
                let count = r.u16("away_count")?;
                if usize::from(count) * 4 > r.buf.len() {
                    return Err(DecodeError::Truncated { kind: k, field: "away" });
                }
                let mut away = Vec::with_capacity(count.into());
                for _ in 0..count {
                    away.push(r.u32("away")?);
                }
                EdgeFrame::Welcome { version, participant_id, seq, resume_secret, participants, away }
            }
            kind::PARTICIPANT_JOINED => {
                EdgeFrame::ParticipantJoined { seq: r.u64("seq")?, participant: r.participant()? }
            }
            kind::PARTICIPANT_LEFT => {
                let seq = r.u64("seq")?;
                let participant_id = r.u32("participant_id")?;
                let b = r.u8("reason")?;
                let reason =
                    LeaveReason::from_byte(b).ok_or(DecodeError::InvalidValue { field: "reason", value: b.into() })?;
                EdgeFrame::ParticipantLeft { seq, participant_id, reason }
            }
            kind::MESSAGE => EdgeFrame::Message {
                seq: r.u64("seq")?,
                from: r.u32("from")?,
                to: r.u32("to")?,
                payload: r.bytes32("payload")?,
            },
            kind::ACK => EdgeFrame::Ack { message_id: r.u64("message_id")?, seq: r.u64("seq")? },
            kind::ERROR => EdgeFrame::Error { code: r.u16("code")?, message: r.str16("message")? },
            kind::PONG => EdgeFrame::Pong { nonce: r.u64("nonce")? },
            kind::RESUMED => EdgeFrame::Resumed { seq: r.u64("seq")?, replayed: r.u32("replayed")? },
            kind::PARTICIPANT_AWAY => {
                EdgeFrame::ParticipantAway { seq: r.u64("seq")?, participant_id: r.u32("participant_id")? }
            }
            kind::PARTICIPANT_BACK => {
                EdgeFrame::ParticipantBack { seq: r.u64("seq")?, participant_id: r.u32("participant_id")? }
            }
            kind::JOIN_REQUEST => EdgeFrame::JoinRequest { participant: r.participant()? },
            kind::WAITING => EdgeFrame::Waiting,
            kind::MEDIA_ANSWER_FROM_EDGE => EdgeFrame::MediaAnswer { sdp: r.text32("sdp", MAX_SDP_BYTES)? },
            kind::MEDIA_OFFER_FROM_EDGE => {
                EdgeFrame::MediaOffer { offer_id: r.u32("offer_id")?, sdp: r.text32("sdp", MAX_SDP_BYTES)? }
            }
            kind::TRACK_PUBLISHED => EdgeFrame::TrackPublished {
                track_id: r.u32("track_id")?,
                participant_id: r.u32("participant_id")?,
                source: r.source()?,
                muted: r.flag("muted")?,
                mid: r.str16("mid")?,
            },
            kind::TRACK_UNPUBLISHED => EdgeFrame::TrackUnpublished { track_id: r.u32("track_id")? },
            kind::TRACK_MUTED => EdgeFrame::TrackMuted { track_id: r.u32("track_id")?, muted: r.flag("muted")? },
            kind::MEDIA_CLOSED => {
                let b = r.u8("reason")?;
                let reason = MediaCloseReason::from_byte(b)
                    .ok_or(DecodeError::InvalidValue { field: "reason", value: b.into() })?;
                EdgeFrame::MediaClosed { reason }
            }
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_round_trip() {
        let frames = [
            ClientFrame::Join { version: 1, token: "abc".into() },
            ClientFrame::Send { message_id: 7, to: 0, payload: Bytes::from_static(b"hi") },
            ClientFrame::Ping { nonce: u64::MAX },
            ClientFrame::Leave,
            ClientFrame::Resume {
                version: 2,
                participant_id: 3,
                resume_secret: Bytes::from_static(&[7; 32]),
                last_seq: 41,
            },
            ClientFrame::EndSession,
            ClientFrame::Admit { participant_id: 4, admit: true },
            ClientFrame::Admit { participant_id: 5, admit: false },
            ClientFrame::MediaOffer { sdp: "v=0\r\n".into() },
            ClientFrame::MediaAnswer { offer_id: 3, sdp: "v=0\r\n".into() },
            ClientFrame::MediaCandidate { candidate: String::new() },
            ClientFrame::TrackPublish { mid: "0".into(), source: TrackSource::Screen },
            ClientFrame::TrackMute { mid: "1".into(), muted: true },
            ClientFrame::MediaLeave,
        ];
        for f in frames {
            assert_eq!(ClientFrame::decode(&f.encode().unwrap()).unwrap(), f);
        }
    }

    #[test]
    fn edge_frames_round_trip() {
        let ada = Participant { id: 1, role: Role::Host, user_id: "ada".into(), display_name: "Ada".into() };
        let frames = [
            EdgeFrame::Resumed { seq: 9, replayed: 3 },
            EdgeFrame::ParticipantAway { seq: 10, participant_id: 2 },
            EdgeFrame::ParticipantBack { seq: 11, participant_id: 2 },
            EdgeFrame::JoinRequest { participant: ada },
            EdgeFrame::Waiting,
            EdgeFrame::MediaAnswer { sdp: "v=0\r\n".into() },
            EdgeFrame::MediaOffer { offer_id: 9, sdp: "v=0\r\n".into() },
            EdgeFrame::TrackPublished {
                track_id: 4,
                participant_id: 2,
                source: TrackSource::Camera,
                muted: false,
                mid: "3".into(),
            },
            EdgeFrame::TrackUnpublished { track_id: 4 },
            EdgeFrame::TrackMuted { track_id: 4, muted: true },
            EdgeFrame::MediaClosed { reason: MediaCloseReason::Disconnected },
        ];
        for f in frames {
            assert_eq!(EdgeFrame::decode(&f.encode().unwrap()).unwrap(), f);
        }
        assert_eq!(
            ClientFrame::decode(&[kind::ADMIT, 0, 0, 0, 2, 7]),
            Err(DecodeError::InvalidValue { field: "admit", value: 7 })
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let frame = EdgeFrame::Welcome {
            version: 1,
            participant_id: 2,
            seq: 9,
            resume_secret: Bytes::from_static(&[1; 32]),
            participants: vec![Participant {
                id: 1,
                role: Role::Host,
                user_id: "ada".into(),
                display_name: "Ada".into(),
            }],
            away: vec![1],
        };
        let bytes = frame.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(EdgeFrame::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(EdgeFrame::decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn garbage_is_refused_with_a_precise_error() {
        assert_eq!(ClientFrame::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(ClientFrame::decode(&[0x7e]), Err(DecodeError::UnknownKind(0x7e)));
        assert_eq!(
            ClientFrame::decode(&[kind::PING, 0, 0, 0, 0, 0, 0, 0, 1, 9]),
            Err(DecodeError::TrailingBytes { kind: kind::PING, extra: 1 })
        );
        assert_eq!(
            ClientFrame::decode(&[kind::JOIN, 1, 0, 2, 0xff, 0xfe]),
            Err(DecodeError::InvalidUtf8 { field: "token" })
        );
        // A payload length far past the frame is refused without allocating it.
        assert_eq!(
            ClientFrame::decode(&[kind::SEND, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated { kind: kind::SEND, field: "payload" })
        );
        let huge_count = [kind::WELCOME, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert!(matches!(EdgeFrame::decode(&huge_count), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn pseudo_random_input_never_panics() {
        // A small deterministic fuzz loop (xorshift), so a decoder change that can panic fails here.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            let _ = ClientFrame::decode(&bytes);
            let _ = EdgeFrame::decode(&bytes);
        }
    }
}
