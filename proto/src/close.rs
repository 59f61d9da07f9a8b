//! The registry of websocket close codes duet sends, one range of 100 per area.
//!
//! Codes are part of the public protocol (`docs/protocol.md` lists them): a code, once assigned,
//! never changes meaning. Clients decide what to do from the range alone when they meet a code
//! they do not know: 40xx fix the client, 41xx get a new token, 42xx the session is gone or
//! refused, 43xx reconnect and resume, 44xx ask the locator again, 45xx retry later.

/// The standard close code a locator sends on its edge links when it shuts down (RFC 6455
/// "going away"): the edge reconnects with backoff, to another replica or to this one restarted.
/// Locators before link version 4 sent 4604 instead.
pub const GOING_AWAY: u16 = 1001;

/// A close code and the short reason sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    // 4000-4099: protocol (the client sent something it must not).
    /// A frame could not be decoded (truncated, trailing bytes, bad UTF-8, bad value).
    MalformedFrame,
    /// The frame's kind byte is not one this protocol version knows.
    UnknownKind,
    /// A message larger than the configured limit was declared.
    MessageTooLarge,
    /// The `join` asked for a protocol version this edge does not speak.
    UnsupportedVersion,
    /// No `join` arrived within the handshake timeout.
    HandshakeTimeout,
    /// A valid frame at the wrong moment (anything before `join`, a second `join`).
    UnexpectedFrame,
    /// A text websocket frame; the protocol is binary only.
    TextFrame,
    /// More messages per second than the edge allows one connection.
    TooManyMessages,

    // 4100-4199: authentication.
    /// The token is malformed, forged, or signed by an unknown key.
    TokenInvalid,
    /// The token expired before the first join.
    TokenExpired,
    /// The token is for another session than the URL names.
    TokenWrongSession,
    /// The token is for a session placed on another edge.
    TokenWrongEdge,
    /// The edge has no verification keys yet (it has never reached the locator).
    KeysUnavailable,
    /// `resume` asked for events the replay window no longer holds: join again with a token.
    ResyncNeeded,
    /// `resume` named no place this edge holds for it (wrong secret, unknown participant or
    /// session, the place was released): join again with a token.
    ResumeRefused,

    // 4200-4299: session.
    /// The session has ended; it cannot be joined again.
    SessionEnded,
    /// Another connection joined with the same participant id; this one was replaced.
    Replaced,
    /// The edge holds as many sessions or connections as it is configured for.
    EdgeFull,
    /// The host ended the session.
    EndedByHost,
    /// Nothing was sent in the session for the idle timeout.
    SessionIdle,
    /// The session holds its maximum number of participants.
    SessionFull,
    /// The host refused this guest, or the session ended before it was admitted.
    NotAdmitted,
    /// The host was gone for longer than the host grace period.
    HostGone,

    // 4300-4399: flow control.
    /// The client did not read fast enough; too many bytes were queued for it.
    SlowReader,
    /// The client sent nothing (not even a ping) for the idle timeout.
    ConnectionIdle,

    // 4400-4499: edge lifecycle.
    /// The edge is shutting down: ask the locator again.
    EdgeShuttingDown,

    // 4500-4599: the edge itself failed.
    /// An internal error; the client may retry.
    Internal,

    // 4600-4699: the edge-to-locator link. (4604, "locator shutting down", is retired: a
    // stopping locator now closes links with the standard 1001, [`GOING_AWAY`].)
    /// The link's protocol version is not accepted by this locator.
    LinkUnsupportedVersion,
    /// Another live link already holds this edge id.
    LinkDuplicateEdge,
    /// A link message could not be decoded, or came out of order.
    LinkMalformed,
    /// No `hello` arrived within the link handshake timeout.
    LinkHandshakeTimeout,
    /// The edge sent nothing for longer than the heartbeat timeout.
    LinkHeartbeatTimeout,
}

impl CloseCode {
    /// Every code, in registry order (used by docs tests and clients' tables).
    pub const ALL: &'static [CloseCode] = &[
        CloseCode::MalformedFrame,
        CloseCode::UnknownKind,
        CloseCode::MessageTooLarge,
        CloseCode::UnsupportedVersion,
        CloseCode::HandshakeTimeout,
        CloseCode::UnexpectedFrame,
        CloseCode::TextFrame,
        CloseCode::TooManyMessages,
        CloseCode::TokenInvalid,
        CloseCode::TokenExpired,
        CloseCode::TokenWrongSession,
        CloseCode::TokenWrongEdge,
        CloseCode::KeysUnavailable,
        CloseCode::ResyncNeeded,
        CloseCode::ResumeRefused,
        CloseCode::SessionEnded,
        CloseCode::Replaced,
        CloseCode::EdgeFull,
        CloseCode::EndedByHost,
        CloseCode::SessionIdle,
        CloseCode::SessionFull,
        CloseCode::NotAdmitted,
        CloseCode::HostGone,
        CloseCode::SlowReader,
        CloseCode::ConnectionIdle,
        CloseCode::EdgeShuttingDown,
        CloseCode::Internal,
        CloseCode::LinkUnsupportedVersion,
        CloseCode::LinkDuplicateEdge,
        CloseCode::LinkMalformed,
        CloseCode::LinkHandshakeTimeout,
        CloseCode::LinkHeartbeatTimeout,
    ];

    pub const fn code(self) -> u16 {
        match self {
            CloseCode::MalformedFrame => 4000,
            CloseCode::UnknownKind => 4001,
            CloseCode::MessageTooLarge => 4002,
            CloseCode::UnsupportedVersion => 4003,
            CloseCode::HandshakeTimeout => 4004,
            CloseCode::UnexpectedFrame => 4005,
            CloseCode::TextFrame => 4006,
            CloseCode::TooManyMessages => 4007,
            CloseCode::TokenInvalid => 4100,
            CloseCode::TokenExpired => 4101,
            CloseCode::TokenWrongSession => 4102,
            CloseCode::TokenWrongEdge => 4103,
            CloseCode::KeysUnavailable => 4104,
            CloseCode::ResyncNeeded => 4105,
            CloseCode::ResumeRefused => 4106,
            CloseCode::SessionEnded => 4200,
            CloseCode::Replaced => 4201,
            CloseCode::EdgeFull => 4202,
            CloseCode::EndedByHost => 4203,
            CloseCode::SessionIdle => 4204,
            CloseCode::SessionFull => 4205,
            CloseCode::NotAdmitted => 4206,
            CloseCode::HostGone => 4207,
            CloseCode::SlowReader => 4300,
            CloseCode::ConnectionIdle => 4301,
            CloseCode::EdgeShuttingDown => 4400,
            CloseCode::Internal => 4500,
            CloseCode::LinkUnsupportedVersion => 4600,
            CloseCode::LinkDuplicateEdge => 4601,
            CloseCode::LinkMalformed => 4602,
            CloseCode::LinkHandshakeTimeout => 4603,
            CloseCode::LinkHeartbeatTimeout => 4605,
        }
    }

    /// The registry's short name, also the default close reason.
    pub const fn name(self) -> &'static str {
        match self {
            CloseCode::MalformedFrame => "malformed frame",
            CloseCode::UnknownKind => "unknown frame kind",
            CloseCode::MessageTooLarge => "message too large",
            CloseCode::UnsupportedVersion => "unsupported protocol version",
            CloseCode::HandshakeTimeout => "handshake timeout",
            CloseCode::UnexpectedFrame => "unexpected frame",
            CloseCode::TextFrame => "text frames are not supported",
            CloseCode::TooManyMessages => "too many messages per second",
            CloseCode::TokenInvalid => "token invalid",
            CloseCode::TokenExpired => "token expired",
            CloseCode::TokenWrongSession => "token is for another session",
            CloseCode::TokenWrongEdge => "token is for another edge",
            CloseCode::KeysUnavailable => "verification keys unavailable",
            CloseCode::ResyncNeeded => "resync needed",
            CloseCode::ResumeRefused => "resume refused",
            CloseCode::SessionEnded => "session ended",
            CloseCode::Replaced => "replaced by a newer connection",
            CloseCode::EdgeFull => "edge at capacity",
            CloseCode::EndedByHost => "session ended by the host",
            CloseCode::SessionIdle => "session idle",
            CloseCode::SessionFull => "session full",
            CloseCode::NotAdmitted => "not admitted",
            CloseCode::HostGone => "host gone",
            CloseCode::SlowReader => "slow reader",
            CloseCode::ConnectionIdle => "connection idle",
            CloseCode::EdgeShuttingDown => "edge shutting down",
            CloseCode::Internal => "internal error",
            CloseCode::LinkUnsupportedVersion => "link protocol version not supported",
            CloseCode::LinkDuplicateEdge => "edge id already linked",
            CloseCode::LinkMalformed => "malformed link message",
            CloseCode::LinkHandshakeTimeout => "link handshake timeout",
            CloseCode::LinkHeartbeatTimeout => "no heartbeat in time",
        }
    }

    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.iter().copied().find(|c| c.code() == code)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for c in CloseCode::ALL {
            assert!((4000..5000).contains(&c.code()), "{c} out of range");
            assert!(seen.insert(c.code()), "{c} assigned twice");
            assert_eq!(CloseCode::from_code(c.code()), Some(*c));
            assert!(c.name().len() < 100, "close reasons must fit a close frame");
        }
    }
}
