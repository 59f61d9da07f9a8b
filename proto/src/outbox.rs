//! Audit and metrics entries: written by an edge to its durable outbox before they are sent over
//! the link, stored by the locator once per (edge, sequence number).
//!
//! Entries are stored on the edge in this crate's postcard encoding ([`crate::codec::encode_entry`]),
//! so variants are only ever appended, like every link message.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutboxEntry {
    Audit(AuditEntry),
    Metrics(MetricsEntry),
}

impl OutboxEntry {
    /// When the entry was made (Unix ms, the edge's clock).
    pub fn at_ms(&self) -> i64 {
        match self {
            OutboxEntry::Audit(a) => a.at_ms,
            OutboxEntry::Metrics(MetricsEntry::Usage(u)) => u.at_ms,
            OutboxEntry::Metrics(MetricsEntry::SessionSummary(s)) => s.at_ms,
        }
    }
}

/// Something that happened and must be on the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix time in milliseconds, from the edge's clock.
    pub at_ms: i64,
    pub event: AuditEvent,
    pub session_id: Option<String>,
    pub participant_id: Option<u32>,
    pub user_id: Option<String>,
    /// Free text for people (a reason, a close code), never parsed.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditEvent {
    SessionStarted,
    SessionEnded,
    ParticipantJoined,
    ParticipantLeft,
    EdgeStarted,
    EdgeStopping,
    /// The outbox was full and metrics entries were dropped (the detail says how many); audit
    /// entries are never dropped without one of these.
    OutboxOverflow,
    /// A participant's connection was lost; it keeps its place for its grace period.
    ParticipantAway,
    /// An away participant resumed (the detail says how many events were replayed).
    ParticipantResumed,
    /// A guest asked to join a session that needs the host's approval.
    AdmissionRequested,
    /// The host admitted a waiting guest.
    ParticipantAdmitted,
    /// A join was refused: by the host, or because the session was full.
    ParticipantRefused,
    /// A participant's media connection completed ICE and DTLS with the edge.
    MediaConnected,
    /// A participant's media connection ended (the detail says why and what it carried).
    MediaClosed,
    /// A participant published a track (the detail names its source and kind).
    TrackPublished,
    /// A published track ended.
    TrackUnpublished,
}

impl AuditEvent {
    /// The name stored in the locator's audit table and shown by the admin API.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditEvent::SessionStarted => "session_started",
            AuditEvent::SessionEnded => "session_ended",
            AuditEvent::ParticipantJoined => "participant_joined",
            AuditEvent::ParticipantLeft => "participant_left",
            AuditEvent::EdgeStarted => "edge_started",
            AuditEvent::EdgeStopping => "edge_stopping",
            AuditEvent::OutboxOverflow => "outbox_overflow",
            AuditEvent::ParticipantAway => "participant_away",
            AuditEvent::ParticipantResumed => "participant_resumed",
            AuditEvent::AdmissionRequested => "admission_requested",
            AuditEvent::ParticipantAdmitted => "participant_admitted",
            AuditEvent::ParticipantRefused => "participant_refused",
            AuditEvent::MediaConnected => "media_connected",
            AuditEvent::MediaClosed => "media_closed",
            AuditEvent::TrackPublished => "track_published",
            AuditEvent::TrackUnpublished => "track_unpublished",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricsEntry {
    /// Usage of one edge over one interval.
    Usage(UsageMetrics),
    /// One ended session, as the edge saw it.
    SessionSummary(SessionSummary),
}

impl MetricsEntry {
    /// The name stored in the locator's metrics table.
    pub const fn kind(&self) -> &'static str {
        match self {
            MetricsEntry::Usage(_) => "usage",
            MetricsEntry::SessionSummary(_) => "session_summary",
        }
    }
}

/// Usage over one interval on one edge. Counters are for the interval, gauges at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageMetrics {
    pub at_ms: i64,
    pub interval_ms: u32,
    /// Open client websockets at the end of the interval.
    pub connections: u32,
    /// Running sessions at the end of the interval.
    pub sessions: u32,
    pub messages_relayed: u64,
    pub bytes_relayed: u64,
}

/// A session that ended on this edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// When it ended.
    pub at_ms: i64,
    pub session_id: String,
    pub started_at_ms: i64,
    /// Participants that joined over the session's life (a rejoin counts again).
    pub participants: u32,
    pub messages_relayed: u64,
    pub bytes_relayed: u64,
    /// Why it ended (`SessionEndReason::as_str`).
    pub end_reason: String,
}
