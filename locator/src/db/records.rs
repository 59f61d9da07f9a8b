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
    pub region: String,
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
