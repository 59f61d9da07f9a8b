//! Plain records read from and written to the database.

use duet_proto::session::Role;

pub use duet_proto::link::{Load, OutboxStatus};

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
    /// The edge's outbox (a random number chosen when its outbox file was created).
    pub outbox_id: u64,
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
    /// The outbox status of the last heartbeat.
    pub outbox: OutboxStatus,
    /// The outbox the edge registered with.
    pub outbox_id: u64,
    /// Bumped at every registration (the first is 1): fences updates that come from an older
    /// link of the same edge.
    pub link_epoch: u64,
    pub registered_at: i64,
    pub last_heartbeat_at: i64,
    pub health_changed_at: i64,
    /// When a draining edge's remaining sessions are ended (Unix ms); set only while draining.
    pub drain_deadline: Option<i64>,
    /// When the deadline was acted on (the first replica to do so records it).
    pub drained_at: Option<i64>,
    /// When the edge said it is stopping (SIGTERM); cleared when it registers again.
    pub stopping_since: Option<i64>,
}

impl EdgeRecord {
    /// True once a draining edge's deadline has passed at `now_ms`: it takes no new sessions.
    pub fn drain_due(&self, now_ms: i64) -> bool {
        self.admin_state == AdminState::Draining && self.drain_deadline.is_some_and(|d| d <= now_ms)
    }

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
    /// Guests wait for the host's approval.
    pub require_approval: bool,
    /// The most participants at once (`None`: the edge's limit).
    pub max_participants: Option<u32>,
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
    pub require_approval: bool,
    pub max_participants: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRecord {
    pub participant_id: u32,
    pub role: Role,
    pub user_id: String,
    pub display_name: String,
    pub created_at: i64,
}

/// The end reason of sessions the locator ended because their edge was declared unavailable;
/// only these can be restored when the edge comes back ([`crate::db::Store::restore_session`]).
pub const END_REASON_EDGE_UNAVAILABLE: &str = "edge_unavailable";

/// Kinds of the audit entries the locator makes itself. Edges' entries use
/// [`duet_proto::outbox::AuditEvent::as_str`]; the two sets never share a name.
pub mod audit_kind {
    /// Failure detection declared an edge dead.
    pub const EDGE_UNAVAILABLE: &str = "edge_unavailable";
    /// An unavailable edge linked again.
    pub const EDGE_RECOVERED: &str = "edge_recovered";
    /// The locator ended a session (its edge became unavailable, or reconciliation).
    pub const SESSION_ENDED_BY_LOCATOR: &str = "session_ended_by_locator";
    /// A session the locator had ended was still running on its edge and came back.
    pub const SESSION_RESTORED: &str = "session_restored";
    pub const EDGE_SUSPENDED: &str = "edge_suspended";
    pub const EDGE_RESUMED: &str = "edge_resumed";
    /// An admin started draining an edge (its detail names the deadline).
    pub const EDGE_DRAINING: &str = "edge_draining";
    /// A draining edge's deadline passed and its remaining sessions were ended.
    pub const EDGE_DRAINED: &str = "edge_drained";
    pub const TOKEN_CREATED: &str = "token_created";
    pub const TOKEN_REVOKED: &str = "token_revoked";
    pub const CLIENT_KEY_CREATED: &str = "client_key_created";
    pub const CLIENT_KEY_REVOKED: &str = "client_key_revoked";
    pub const DASHBOARD_LOGIN: &str = "dashboard_login";
    pub const DASHBOARD_LOGOUT: &str = "dashboard_logout";
    /// An admin moved an edge to a region, or back to the one it reports.
    pub const EDGE_REGION_SET: &str = "edge_region_set";
    pub const REGION_RULE_ADDED: &str = "region_rule_added";
    pub const REGION_RULE_DELETED: &str = "region_rule_deleted";
    pub const REGION_FALLBACK_SET: &str = "region_fallback_set";
    /// A team's presence edge was gone and the team was assigned to another.
    pub const PRESENCE_MOVED: &str = "presence_moved";
}

/// Who made an audit entry the locator stores for itself: the locator, or an admin, named by
/// their principal (`token:root`, `token:<name>`, `user:<name>`; see `admin::auth`).
pub const ACTOR_LOCATOR: &str = "locator";

/// An audit entry the locator makes itself (not relayed from an edge's outbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatorAuditEntry {
    pub at_ms: i64,
    /// One of [`audit_kind`].
    pub kind: String,
    pub edge_id: Option<String>,
    pub session_id: Option<String>,
    /// [`ACTOR_LOCATOR`] or an admin's principal.
    pub actor: String,
    /// Free text for people.
    pub detail: String,
}

/// A stored audit entry: relayed from an edge (`outbox_id` and `edge_seq` set, no `actor`) or
/// made by the locator (`actor` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub edge_id: Option<String>,
    pub outbox_id: Option<u64>,
    pub edge_seq: Option<u64>,
    /// When it happened (Unix ms; an edge's clock for relayed entries).
    pub at: i64,
    pub kind: String,
    pub session_id: Option<String>,
    pub participant_id: Option<u32>,
    pub user_id: Option<String>,
    pub actor: Option<String>,
    pub detail: String,
    /// When the locator stored it.
    pub stored_at: i64,
}

/// A stored metrics entry, relayed from an edge. `kind` is `usage` (`interval_ms`,
/// `connections`, `sessions` set) or `session_summary` (`session_id`, `session_started_at`,
/// `participants`, `end_reason` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsRecord {
    pub id: i64,
    pub edge_id: String,
    pub outbox_id: u64,
    pub edge_seq: u64,
    pub at: i64,
    pub kind: String,
    pub interval_ms: Option<u32>,
    pub connections: Option<u32>,
    pub sessions: Option<u32>,
    pub messages_relayed: u64,
    pub bytes_relayed: u64,
    pub session_id: Option<String>,
    pub session_started_at: Option<i64>,
    pub participants: Option<u32>,
    pub end_reason: Option<String>,
    pub stored_at: i64,
}

/// The two tables of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryTable {
    Audit,
    Metrics,
}

impl EntryTable {
    pub const fn table_name(self) -> &'static str {
        match self {
            EntryTable::Audit => "audit_entries",
            EntryTable::Metrics => "metrics_entries",
        }
    }
}

/// Which entries a query reads; every field narrows it. `from` is inclusive and `to` exclusive
/// (Unix ms, compared with the entry's `at`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub edge_id: Option<String>,
    pub session_id: Option<String>,
    pub kind: Option<String>,
    /// Who made an audit entry (`locator`, `token:<name>`, `user:<name>`); audit entries only.
    pub actor: Option<String>,
    /// Read newest first (the cursor then walks back in time) instead of oldest first.
    pub newest_first: bool,
}

/// Where the next page of a query starts: after the entry with this `(at, id)`. Shown to
/// clients as an opaque string ([`Cursor::encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub id: i64,
}

impl Cursor {
    /// `"<at>.<id>"`: clients pass it back unchanged and must not build or parse it.
    pub fn encode(self) -> String {
        format!("{}.{}", self.at, self.id)
    }

    pub fn parse(s: &str) -> Option<Cursor> {
        let (at, id) = s.split_once('.')?;
        Some(Cursor { at: at.parse().ok()?, id: id.parse().ok()? })
    }
}
