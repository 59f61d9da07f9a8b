//! Choosing the edge for a new session. Only edges that are up, heard from recently and active
//! are candidates; among them the least loaded wins, preferring the requested region.
//! (The full scoring with reservations and GeoIP regions lives in later strategies beside this
//! one.)

mod least_loaded;

use std::time::Duration;

use crate::db::EdgeRecord;

pub use least_loaded::choose;

/// True if the edge may take new sessions now.
pub fn is_available(edge: &EdgeRecord, now_ms: i64, heartbeat_timeout: Duration) -> bool {
    edge.health == crate::db::Health::Up
        && now_ms - edge.last_heartbeat_at <= heartbeat_timeout.as_millis() as i64
        && edge.admin_state == crate::db::AdminState::Active
        && (edge.max_sessions == 0 || edge.load.sessions < edge.max_sessions)
        && (edge.max_connections == 0 || edge.load.connections < edge.max_connections)
}
