//! Audit and metrics entries: written by an edge to its durable outbox before they are sent over
//! the link, stored by the locator once per (edge, sequence number).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutboxEntry {
    Audit(AuditEntry),
    Metrics(MetricsEntry),
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
}

/// Usage over one interval on one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsEntry {
    pub at_ms: i64,
    pub interval_ms: u32,
    pub connections: u32,
    pub sessions: u32,
    pub messages_relayed: u64,
    pub bytes_relayed: u64,
}
