//! Least-loaded selection: among available edges (in the hinted region when it has any), the one
//! with the lowest share of its capacity in use, then the fewest sessions, then by id.

use std::time::Duration;

use crate::db::EdgeRecord;

fn utilisation(edge: &EdgeRecord) -> f64 {
    let s = if edge.max_sessions > 0 { f64::from(edge.load.sessions) / f64::from(edge.max_sessions) } else { 0.0 };
    let c =
        if edge.max_connections > 0 { f64::from(edge.load.connections) / f64::from(edge.max_connections) } else { 0.0 };
    s.max(c)
}

pub fn choose<'a>(
    edges: &'a [EdgeRecord],
    now_ms: i64,
    heartbeat_timeout: Duration,
    region: Option<&str>,
) -> Option<&'a EdgeRecord> {
    let available: Vec<&EdgeRecord> =
        edges.iter().filter(|e| super::is_available(e, now_ms, heartbeat_timeout)).collect();
    let in_region: Vec<&EdgeRecord> = match region {
        Some(r) => available.iter().copied().filter(|e| e.region == r).collect(),
        None => Vec::new(),
    };
    let pool = if in_region.is_empty() { available } else { in_region };
    pool.into_iter().min_by(|a, b| {
        utilisation(a)
            .total_cmp(&utilisation(b))
            .then(a.load.sessions.cmp(&b.load.sessions))
            .then(a.load.connections.cmp(&b.load.connections))
            .then(a.id.cmp(&b.id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{AdminState, Health, Load};

    fn edge(id: &str, region: &str, sessions: u32, heartbeat_at: i64) -> EdgeRecord {
        EdgeRecord {
            id: id.into(),
            region: region.into(),
            public_url: format!("ws://{id}"),
            build: String::new(),
            max_connections: 0,
            max_sessions: 10,
            admin_state: AdminState::Active,
            health: Health::Up,
            load: Load { sessions, ..Load::default() },
            registered_at: 0,
            last_heartbeat_at: heartbeat_at,
            health_changed_at: 0,
        }
    }

    #[test]
    fn picks_least_loaded_fresh_active_edge() {
        let t = Duration::from_secs(3);
        let mut edges = vec![edge("a", "eu", 5, 1000), edge("b", "eu", 2, 1000), edge("c", "us", 0, 1000)];
        assert_eq!(choose(&edges, 1000, t, None).unwrap().id, "c");
        assert_eq!(choose(&edges, 1000, t, Some("eu")).unwrap().id, "b");
        assert_eq!(choose(&edges, 1000, t, Some("mars")).unwrap().id, "c");
        edges[2].last_heartbeat_at = -5000; // stale
        assert_eq!(choose(&edges, 1000, t, None).unwrap().id, "b");
        edges[1].health = Health::LinkLost;
        edges[0].admin_state = AdminState::Suspended;
        assert!(choose(&edges, 1000, t, None).is_none());
        let full = vec![edge("f", "eu", 10, 1000)];
        assert!(choose(&full, 1000, t, None).is_none());
    }
}
