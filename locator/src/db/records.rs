//! Plain records read from and written to the database.

use duet_proto::session::Role;

pub use duet_proto::link::Load;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// PKCS#8 document of the Ed25519 private key.
    pub private_key: Vec<u8>,
    /// The raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// What an edge says about itself when its link registers.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRegistration {
    pub id: String,
    pub region: String,
    pub public_url: String,
    pub build: String,
    pub max_connections: u32,
    pub max_sessions: u32,
    pub load: Load,
}

/// An edge's admin state: set by admins, never by failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Active,
    Suspended,
    Draining,
}

impl AdminState {
    pub const fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Suspended => "suspended",
            AdminState::Draining => "draining",
        }
    }

    pub fn parse(s: &str) -> Option<AdminState> {
        match s {
            "active" => Some(AdminState::Active),
            "suspended" => Some(AdminState::Suspended),
            "draining" => Some(AdminState::Draining),
            _ => None,
        }
    }
}

/// An edge's health: set by the link and failure detection, never by admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Its link is up.
    Up,
    /// Its link dropped; the edge may still be serving its sessions.
    LinkLost,
    /// Declared dead.
    Unavailable,
}

impl Health {
    pub const fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::LinkLost => "link_lost",
            Health::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        match s {
            "up" => Some(Health::Up),
            "link_lost" => Some(Health::LinkLost),
            "unavailable" => Some(Health::Unavailable),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRecord {
    pub id: String,
    /// The region the edge reports (its configuration).
    pub region: String,
    /// The region an admin moved it to, which wins over the reported one.
    pub region_override: Option<String>,
    pub public_url: String,
    pub build: String,
    pub max_connections: u32,
    pub max_sessions: u32,
    pub admin_state: AdminState,
    pub health: Health,
    pub load: Load,
    pub registered_at: i64,
    pub last_heartbeat_at: i64,
    pub health_changed_at: i64,
}

impl EdgeRecord {
    /// The region placement uses: the admin's override, else the edge's own.
    pub fn effective_region(&self) -> &str {
        self.region_override.as_deref().unwrap_or(&self.region)
    }
}

/// A client-to-region rule as stored (`kind` is `cidr`, `country` or `continent`; `matcher` is
/// normalized before it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRuleRecord {
    pub id: i64,
    pub kind: String,
    pub matcher: String,
    pub region: String,
    pub created_at: i64,
}

/// The regions tried, in order, when `region` has no available edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionFallback {
    pub region: String,
    pub fallback: Vec<String>,
}

/// One placement: the session, its host and why it went where it went, committed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRecord {
    pub session: NewSession,
    pub host: NewParticipant,
    pub client_ip: Option<String>,
    pub wanted_region: String,
    pub served_region: String,
    /// The explanation as JSON.
    pub explanation: Vec<u8>,
}

/// A stored placement explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRow {
    pub session_id: String,
    pub client_ip: Option<String>,
    pub wanted_region: String,
    pub served_region: String,
    pub edge_id: String,
    pub explanation: Vec<u8>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub edge_id: String,
    pub team: Option<String>,
    pub region_hint: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewParticipant {
    pub role: Role,
    pub user_id: String,
    pub display_name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub edge_id: String,
    pub team: Option<String>,
    pub region_hint: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub participant_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRecord {
    pub participant_id: u32,
    pub role: Role,
    pub user_id: String,
    pub display_name: String,
    pub created_at: i64,
}
