//! The edge-to-locator link: one websocket per edge, binary frames, each one postcard-encoded
//! message (see [`crate::codec`]).
//!
//! The edge speaks first with [`Hello`]; the locator answers [`LocatorMessage::Welcome`] or
//! [`LocatorMessage::Refused`] and closes. After that the edge sends heartbeats every
//! `heartbeat_interval` and session events; the locator sends commands and acknowledgements.
//! Variants are only ever appended at the end of an enum, and a change to any message bumps
//! [`LINK_PROTOCOL_VERSION`]; the locator accepts the previous version too, so edges and locators
//! can be upgraded one at a time.

use serde::{Deserialize, Serialize};

use crate::outbox::OutboxEntry;

/// The link protocol version this build speaks.
pub const LINK_PROTOCOL_VERSION: u16 = 4;
/// The oldest link protocol version a locator of this build accepts. Normally the previous one;
/// version 1 was never released (its outbox was never acknowledged), so 2 is the first.
pub const LINK_MIN_PROTOCOL_VERSION: u16 = 2;

/// The path on the locator's public listener where edges open their link.
pub const LINK_PATH: &str = "/link/v1";

/// Messages from an edge to the locator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EdgeMessage {
    /// Always the first message. Its first field is the protocol version, so a locator can read
    /// it whatever the rest of the layout is.
    Hello(Hello),
    Heartbeat(Heartbeat),
    /// The first participant joined a session on this edge.
    SessionOpened {
        session_id: String,
    },
    /// The last participant left; the session is over on this edge.
    SessionClosed {
        session_id: String,
        reason: SessionEndReason,
    },
    /// The edge carried out the command with this id.
    CommandAck {
        id: u64,
    },
    /// Audit and metrics entries, each with the edge's own sequence number.
    Outbox {
        entries: Vec<SequencedEntry>,
    },
    /// The edge is stopping (SIGTERM): place no new sessions on it. Its running sessions go on
    /// for up to `remaining_ms`, then it closes their participants with 4400 and exits. Sent
    /// again after every registration while it lasts; a later registration without it means the
    /// edge was restarted and takes sessions again. Link version 4 and later.
    Draining {
        remaining_ms: u64,
    },
}

/// Messages from the locator to an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LocatorMessage {
    Welcome(Welcome),
    /// The link is refused; the locator closes it right after with the same code.
    Refused {
        code: u16,
        reason: String,
    },
    Command {
        id: u64,
        command: Command,
    },
    /// Every outbox entry up to and including this sequence number is committed.
    OutboxAck {
        up_to: u64,
    },
    /// The locator received and stored a heartbeat: the edge learns the link carries traffic in
    /// both directions, so a link that is up but black-holed is noticed by both sides.
    HeartbeatAck,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub edge_id: String,
    pub region: String,
    /// The ws:// or wss:// base URL clients use to reach this edge.
    pub public_url: String,
    pub capacity: Capacity,
    /// The edge's build (crate version and git revision when known).
    pub build: String,
    /// Sessions running on the edge right now, so the locator can reconcile after a link drop.
    pub live_sessions: Vec<String>,
    /// The edge's current load, so it is placeable before its first heartbeat.
    pub load: Load,
    /// A random number chosen when the edge's outbox file was created. Sequence numbers restart
    /// at 1 with a new outbox (a wiped data directory under the same edge id), so the locator
    /// stores entries once per (edge id, outbox id, sequence number), not per (edge id, sequence).
    pub outbox_id: u64,
}

/// What an edge is configured to carry (0: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    pub max_connections: u32,
    pub max_sessions: u32,
}

/// An edge's load at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Load {
    /// CPU used by the edge process over the last interval, as a share of the cores it may use
    /// (0.0 idle, 1.0 every usable core busy).
    pub cpu: f32,
    /// How late the edge's event loop ran a timer over the last interval, in milliseconds.
    pub loop_lag_ms: u32,
    pub connections: u32,
    pub sessions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub load: Load,
    pub outbox: OutboxStatus,
}

/// The state of an edge's outbox, exported on every heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Entries written but not yet acknowledged by a locator.
    pub depth: u64,
    /// Age of the oldest unacknowledged entry in milliseconds (0 when empty).
    pub oldest_age_ms: u64,
    /// The highest sequence number handed out so far (to an entry committed, or queued for the
    /// next group commit a few milliseconds away).
    pub last_seq: u64,
    /// Audit entries dropped because the outbox was full, since the edge started (each drop is
    /// also recorded as an `outbox_overflow` audit entry once there is room).
    pub dropped_audit: u64,
    /// Metrics entries dropped because the outbox was full, since the edge started.
    pub dropped_metrics: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides speak from now on (the edge's, if the locator accepts it).
    pub protocol_version: u16,
    pub locator_build: String,
    /// Keys that verify participant tokens. Edges cache them on disk.
    pub keys: Vec<VerifyingKey>,
    pub heartbeat_interval_ms: u32,
    /// This link's epoch: it grows by one each time the edge registers. The locator applies a
    /// link's session events only while its epoch is the edge's newest, so a stale link (one a
    /// replica has not yet noticed is gone) cannot override what a newer one reported.
    pub link_epoch: u64,
}

/// An Ed25519 public key that verifies tokens whose header names `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyingKey {
    pub kid: String,
    /// The 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Replace the set of token verification keys (rotation).
    UpdateKeys { keys: Vec<VerifyingKey> },
    /// End a session now (admin action or locator decision).
    EndSession { session_id: String, reason: SessionEndReason },
    /// The live sessions of a team whose presence this edge serves (sent when the team is
    /// assigned here and whenever one of its sessions starts or ends, on any edge).
    TeamSessions { team: String, sessions: Vec<String> },
    /// End every session the edge carries, closing its participants with 4400 (ask the locator
    /// again): a drain's deadline passed. Link version 3 and later.
    EndAllSessions { reason: SessionEndReason },
}

/// The first link version whose edges understand [`Command::EndAllSessions`] and
/// [`SessionEndReason::Drained`].
pub const LINK_VERSION_END_ALL: u16 = 3;

/// The first link version whose locators understand [`EdgeMessage::Draining`].
pub const LINK_VERSION_DRAINING: u16 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEndReason {
    /// Every participant left.
    Empty,
    /// An admin or the locator ended it.
    Ended,
    /// The edge shut down.
    EdgeShutdown,
    /// The host sent `end_session`.
    EndedByHost,
    /// Nothing was sent for the session idle timeout.
    Idle,
    /// The host was gone for longer than the host grace period.
    HostGone,
    /// An admin drained the edge and the drain's deadline passed.
    Drained,
}

impl SessionEndReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionEndReason::Empty => "empty",
            SessionEndReason::Ended => "ended",
            SessionEndReason::EdgeShutdown => "edge_shutdown",
            SessionEndReason::EndedByHost => "ended_by_host",
            SessionEndReason::Idle => "idle",
            SessionEndReason::HostGone => "host_gone",
            SessionEndReason::Drained => "drained",
        }
    }
}

/// An outbox entry with the edge's per-edge sequence number (1, 2, 3, ... never reused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequencedEntry {
    pub seq: u64,
    pub entry: OutboxEntry,
}
