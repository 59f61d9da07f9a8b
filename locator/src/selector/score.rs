//! The load score: the share of an edge's capacity in use, by its busiest dimension, plus a
//! small CPU term. Lower is better.
//!
//! `score = max(sessions' / S, connections' / C) + CPU_WEIGHT * cpu`, where `sessions'` and
//! `connections'` add the reservations (sessions placed but not yet seen in a heartbeat, each
//! counted as one session with one connection), `S` and `C` are the edge's configured
//! `max_sessions` and `max_connections`, or [`NOMINAL_SESSIONS`] and [`NOMINAL_CONNECTIONS`]
//! when it sets none, and `cpu` is the share (0.0-1.0) of the edge's cores in use.
//!
//! Why this shape: capacity shares make edges of different sizes comparable (an edge twice as
//! large takes twice the sessions), the maximum lets whichever resource is scarcest decide, and
//! the CPU term, kept small, steers between edges of equal counts without letting a momentary
//! CPU blip outweigh real session counts. An edge whose CPU is really too high is demoted by the
//! CPU limit instead (see the selector).

use crate::db::EdgeRecord;

/// Sessions an edge without `max_sessions` is measured against: a realistic figure for one
/// edge (each session is a few websockets), so unlimited and limited edges compare sensibly.
pub const NOMINAL_SESSIONS: u32 = 1_000;
/// Connections an edge without `max_connections` is measured against (ten per nominal session).
pub const NOMINAL_CONNECTIONS: u32 = 10_000;
/// Weight of the CPU share: a fully busy CPU counts like a quarter of the capacity in use.
pub const CPU_WEIGHT: f64 = 0.25;

/// The score of `edge` with `reserved` sessions added (see the module documentation).
pub fn score(edge: &EdgeRecord, reserved: f64) -> f64 {
    let cap = |configured: u32, nominal: u32| f64::from(if configured > 0 { configured } else { nominal });
    let sessions = (f64::from(edge.load.sessions) + reserved) / cap(edge.max_sessions, NOMINAL_SESSIONS);
    let connections = (f64::from(edge.load.connections) + reserved) / cap(edge.max_connections, NOMINAL_CONNECTIONS);
    sessions.max(connections) + CPU_WEIGHT * f64::from(edge.load.cpu.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{AdminState, Health, Load};

    fn edge(max_sessions: u32, max_connections: u32, load: Load) -> EdgeRecord {
        EdgeRecord {
            id: "e".into(),
            region: "r".into(),
            region_override: None,
            public_url: String::new(),
            build: String::new(),
            max_connections,
            max_sessions,
            admin_state: AdminState::Active,
            health: Health::Up,
            load,
            outbox: Default::default(),
            outbox_id: 0,
            link_epoch: 0,
            registered_at: 0,
            last_heartbeat_at: 0,
            health_changed_at: 0,
            drain_deadline: None,
            drained_at: None,
            stopping_since: None,
        }
    }

    #[test]
    fn busiest_dimension_plus_cpu() {
        let e = edge(100, 1_000, Load { cpu: 0.4, loop_lag_ms: 0, connections: 500, sessions: 10 });
        assert!((score(&e, 0.0) - (0.5 + 0.1)).abs() < 1e-6, "connections are the busiest: 500/1000");
        let e = edge(100, 1_000, Load { cpu: 0.0, loop_lag_ms: 0, connections: 10, sessions: 40 });
        assert!((score(&e, 10.0) - 0.5).abs() < 1e-6, "(40 + 10 reserved) / 100");
        let e = edge(0, 0, Load { cpu: 0.0, loop_lag_ms: 0, connections: 0, sessions: 250 });
        assert!((score(&e, 0.0) - 0.25).abs() < 1e-6, "nominal capacity");
        let e = edge(0, 0, Load { cpu: 7.0, loop_lag_ms: 0, connections: 0, sessions: 0 });
        assert!((score(&e, 0.0) - CPU_WEIGHT).abs() < 1e-6, "cpu share is clamped to 1");
    }
}
