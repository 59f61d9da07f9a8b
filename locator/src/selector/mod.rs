//! Choosing the edge for a new session: which edges may take it (filters), in which order they
//! are tried (tiers and regions), and which one wins (the load score in [`score`]).
//!
//! The rule, with its reasoning, is in `docs/placement.md`; this module is its executable form
//! and reports every decision it takes, so every placement can be explained:
//!
//! 1. **Filters.** An edge whose link is lost or that is unavailable, whose last heartbeat is
//!    older than the heartbeat timeout, that is draining, or that is at a configured capacity
//!    (counting reservations) is not a candidate.
//! 2. **Tiers.** Candidates are `preferred`, `demoted` (CPU or event-loop lag above its limit) or
//!    `suspended` (soft: used only when no active edge is left anywhere).
//! 3. **Regions.** The client's region first, then its fallback regions in order, then any
//!    region. The first of these with a preferred or demoted candidate serves; only when none has
//!    one are suspended edges tried, in the same order.
//! 4. **Score.** Within a region, preferred before demoted, then the lowest score, then the
//!    fewest sessions, then the edge id, so equal edges are taken in a fixed order.
//!
//! Everything here is pure: no clock, no I/O, so it is tested exhaustively with plain values.

pub mod score;

use std::time::Duration;

use serde::Serialize;

use crate::db::{AdminState, EdgeRecord, Health};

/// The limits that filter and demote edges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// An edge silent for longer is not a candidate.
    pub heartbeat_timeout: Duration,
    /// CPU share (0.0-1.0 of the cores the edge may use) above which an edge is demoted.
    pub cpu_limit: f32,
    /// Event-loop lag above which an edge is demoted.
    pub lag_limit: Duration,
}

/// One edge as the selector sees it: its last known state plus the sessions this locator
/// placed on it recently that its heartbeats may not show yet.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub edge: &'a EdgeRecord,
    pub reserved: f64,
}

/// Why an edge is not a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filtered {
    /// Its link to the locator is down.
    LinkLost,
    /// Failure detection declared it dead.
    Unavailable,
    /// No heartbeat within the heartbeat timeout.
    StaleHeartbeat,
    /// An admin drained it and the drain's deadline has passed.
    Drained,
    /// The edge is stopping (it was sent SIGTERM) and finishes only its running sessions.
    Stopping,
    /// Sessions (with reservations) reached its `max_sessions`.
    SessionCapacity,
    /// Connections (with reservations) reached its `max_connections`.
    ConnectionCapacity,
}

/// The order in which candidates are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Preferred,
    /// CPU or lag above its limit: used only when its region has no preferred candidate.
    Demoted,
    /// Suspended or being drained by an admin: used only when no other edge is available
    /// anywhere.
    Suspended,
}

/// What the selector concluded about one edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateReport {
    pub edge: String,
    pub region: String,
    /// `None` when filtered.
    pub tier: Option<Tier>,
    pub filtered: Option<Filtered>,
    /// Why it was demoted, e.g. `cpu 0.93 > 0.85`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub demoted: Option<String>,
    /// Lower is better; `None` when filtered.
    pub score: Option<f64>,
    pub sessions: u32,
    pub connections: u32,
    pub reserved_sessions: f64,
}

/// The outcome: the chosen edge (an index into the inputs) and the report on every edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub chosen: Option<usize>,
    /// The region of the chosen edge.
    pub served_region: Option<String>,
    /// True when the chosen edge is outside the wanted region.
    pub fallback: bool,
    pub candidates: Vec<CandidateReport>,
}

fn filter(input: &Input<'_>, limits: &Limits, now_ms: i64) -> Option<Filtered> {
    let e = input.edge;
    match e.health {
        Health::LinkLost => return Some(Filtered::LinkLost),
        Health::Unavailable => return Some(Filtered::Unavailable),
        Health::Up => {}
    }
    let timeout_ms = i64::try_from(limits.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(e.last_heartbeat_at) > timeout_ms {
        return Some(Filtered::StaleHeartbeat);
    }
    if e.drain_due(now_ms) {
        return Some(Filtered::Drained);
    }
    if e.stopping_since.is_some() {
        return Some(Filtered::Stopping);
    }
    if e.max_sessions > 0 && f64::from(e.load.sessions) + input.reserved >= f64::from(e.max_sessions) {
        return Some(Filtered::SessionCapacity);
    }
    if e.max_connections > 0 && f64::from(e.load.connections) + input.reserved >= f64::from(e.max_connections) {
        return Some(Filtered::ConnectionCapacity);
    }
    None
}

fn tier(edge: &EdgeRecord, limits: &Limits) -> (Tier, Option<String>) {
    if matches!(edge.admin_state, AdminState::Suspended | AdminState::Draining) {
        return (Tier::Suspended, None);
    }
    let lag_limit_ms = u32::try_from(limits.lag_limit.as_millis()).unwrap_or(u32::MAX);
    if edge.load.cpu > limits.cpu_limit {
        return (Tier::Demoted, Some(format!("cpu {:.2} > {:.2}", edge.load.cpu, limits.cpu_limit)));
    }
    if edge.load.loop_lag_ms > lag_limit_ms {
        return (Tier::Demoted, Some(format!("loop lag {} ms > {} ms", edge.load.loop_lag_ms, lag_limit_ms)));
    }
    (Tier::Preferred, None)
}

/// Chooses an edge for a client whose region is `wanted`, trying `fallback` regions next.
pub fn select(inputs: &[Input<'_>], wanted: &str, fallback: &[String], limits: &Limits, now_ms: i64) -> Selection {
    let candidates: Vec<CandidateReport> = inputs
        .iter()
        .map(|input| {
            let e = input.edge;
            let mut report = CandidateReport {
                edge: e.id.clone(),
                region: e.effective_region().to_owned(),
                tier: None,
                filtered: filter(input, limits, now_ms),
                demoted: None,
                score: None,
                sessions: e.load.sessions,
                connections: e.load.connections,
                reserved_sessions: input.reserved,
            };
            if report.filtered.is_none() {
                let (t, why) = tier(e, limits);
                report.tier = Some(t);
                report.demoted = why;
                report.score = Some(score::score(e, input.reserved));
            }
            report
        })
        .collect();

    // The region walk: wanted, then the fallbacks in order (each once), then anywhere.
    let mut order: Vec<&str> = vec![wanted];
    for r in fallback {
        if !order.contains(&r.as_str()) {
            order.push(r);
        }
    }
    let best = |in_region: &dyn Fn(&str) -> bool, suspended: bool| -> Option<usize> {
        (0..inputs.len())
            .filter(|&i| {
                let c = &candidates[i];
                match c.tier {
                    Some(Tier::Suspended) => suspended && in_region(&c.region),
                    Some(_) => !suspended && in_region(&c.region),
                    None => false,
                }
            })
            .min_by(|&a, &b| {
                let (ca, cb) = (&candidates[a], &candidates[b]);
                ca.tier
                    .cmp(&cb.tier)
                    .then(ca.score.unwrap_or(f64::MAX).total_cmp(&cb.score.unwrap_or(f64::MAX)))
                    .then(
                        (f64::from(ca.sessions) + ca.reserved_sessions)
                            .total_cmp(&(f64::from(cb.sessions) + cb.reserved_sessions)),
                    )
                    .then(ca.edge.cmp(&cb.edge))
            })
    };
    let mut chosen = None;
    'passes: for suspended in [false, true] {
        for region in &order {
            if let Some(i) = best(&|r: &str| r == *region, suspended) {
                chosen = Some(i);
                break 'passes;
            }
        }
        if let Some(i) = best(&|_: &str| true, suspended) {
            chosen = Some(i);
            break;
        }
    }
    let served_region = chosen.map(|i| candidates[i].region.clone());
    let fallback = served_region.as_deref().is_some_and(|r| r != wanted);
    Selection { chosen, served_region, fallback, candidates }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Load;

    const NOW: i64 = 100_000;
    const LIMITS: Limits =
        Limits { heartbeat_timeout: Duration::from_secs(3), cpu_limit: 0.85, lag_limit: Duration::from_millis(100) };

    fn edge(id: &str, region: &str) -> EdgeRecord {
        EdgeRecord {
            id: id.into(),
            region: region.into(),
            region_override: None,
            public_url: format!("ws://{id}"),
            build: String::new(),
            max_connections: 0,
            max_sessions: 0,
            admin_state: AdminState::Active,
            health: Health::Up,
            load: Load::default(),
            outbox: Default::default(),
            outbox_id: 0,
            link_epoch: 0,
            registered_at: 0,
            last_heartbeat_at: NOW,
            health_changed_at: 0,
            drain_deadline: None,
            drained_at: None,
            stopping_since: None,
        }
    }

    fn pick(edges: &[EdgeRecord], wanted: &str, fallback: &[&str]) -> Selection {
        let inputs: Vec<Input> = edges.iter().map(|e| Input { edge: e, reserved: 0.0 }).collect();
        let fallback: Vec<String> = fallback.iter().map(|s| s.to_string()).collect();
        select(&inputs, wanted, &fallback, &LIMITS, NOW)
    }

    fn chosen(edges: &[EdgeRecord], wanted: &str, fallback: &[&str]) -> Option<String> {
        let s = pick(edges, wanted, fallback);
        s.chosen.map(|i| edges[i].id.clone())
    }

    #[test]
    fn filters_say_why() {
        let mut edges =
            vec![edge("a", "eu"), edge("b", "eu"), edge("c", "eu"), edge("d", "eu"), edge("e", "eu"), edge("f", "eu")];
        edges[0].health = Health::LinkLost;
        edges[1].last_heartbeat_at = NOW - 3_001;
        edges[2].admin_state = AdminState::Draining;
        edges[2].drain_deadline = Some(NOW);
        edges[3].max_sessions = 2;
        edges[3].load.sessions = 2;
        edges[4].max_connections = 10;
        edges[4].load.connections = 10;
        edges[5].stopping_since = Some(NOW - 1);
        let s = pick(&edges, "eu", &[]);
        assert_eq!(s.chosen, None);
        let why: Vec<_> = s.candidates.iter().map(|c| c.filtered).collect();
        assert_eq!(
            why,
            [
                Some(Filtered::LinkLost),
                Some(Filtered::StaleHeartbeat),
                Some(Filtered::Drained),
                Some(Filtered::SessionCapacity),
                Some(Filtered::ConnectionCapacity),
                Some(Filtered::Stopping)
            ]
        );
        edges[1].last_heartbeat_at = NOW - 3_000; // exactly at the timeout is still fresh
        assert_eq!(chosen(&edges, "eu", &[]).as_deref(), Some("b"));
    }

    #[test]
    fn reservations_count_against_capacity() {
        let mut e = edge("a", "eu");
        e.max_sessions = 10;
        e.load.sessions = 9;
        let ok = select(&[Input { edge: &e, reserved: 0.5 }], "eu", &[], &LIMITS, NOW);
        assert_eq!(ok.chosen, Some(0));
        let full = select(&[Input { edge: &e, reserved: 1.0 }], "eu", &[], &LIMITS, NOW);
        assert_eq!(full.candidates[0].filtered, Some(Filtered::SessionCapacity));
    }

    #[test]
    fn lowest_score_wins_then_sessions_then_id() {
        let mut edges = vec![edge("b", "eu"), edge("a", "eu"), edge("c", "eu")];
        assert_eq!(chosen(&edges, "eu", &[]).as_deref(), Some("a"), "equal edges: by id");
        edges[1].load.sessions = 1;
        assert_eq!(chosen(&edges, "eu", &[]).as_deref(), Some("b"));
        edges[2].max_sessions = 100_000; // far more room than the nominal capacity
        edges[2].load.sessions = 5;
        edges[0].load.sessions = 5;
        assert_eq!(chosen(&edges, "eu", &[]).as_deref(), Some("c"), "share of capacity, not raw count");
    }

    #[test]
    fn demoted_edges_come_after_preferred_ones_in_their_region() {
        let mut edges = vec![edge("a", "eu"), edge("b", "eu"), edge("c", "us")];
        edges[0].load.cpu = 0.9;
        edges[1].load.sessions = 500;
        let s = pick(&edges, "eu", &[]);
        assert_eq!(s.chosen, Some(1));
        assert_eq!(s.candidates[0].tier, Some(Tier::Demoted));
        assert_eq!(s.candidates[0].demoted.as_deref(), Some("cpu 0.90 > 0.85"));
        edges[1].load.loop_lag_ms = 150;
        let s = pick(&edges, "eu", &[]);
        assert_eq!(s.candidates[1].demoted.as_deref(), Some("loop lag 150 ms > 100 ms"));
        assert_eq!(s.chosen, Some(0), "a demoted edge in the region beats another region");
        assert!(!s.fallback);
    }

    #[test]
    fn regions_fall_back_in_order_then_anywhere() {
        let edges = vec![edge("a", "eu"), edge("b", "us"), edge("c", "ap")];
        assert_eq!(chosen(&edges, "eu", &["ap"]).as_deref(), Some("a"));
        let s = pick(&edges[1..], "eu", &["ap", "us"]);
        assert_eq!((s.served_region.as_deref(), s.fallback), (Some("ap"), true));
        let s = pick(&edges[1..], "eu", &["us", "ap"]);
        assert_eq!(s.served_region.as_deref(), Some("us"));
        let s = pick(&edges[1..], "mars", &[]);
        assert_eq!((s.served_region.as_deref(), s.fallback), (Some("us"), true), "anywhere: lowest score, then id (b)");
    }

    #[test]
    fn suspended_edges_only_when_nothing_else_is_left() {
        let mut edges = vec![edge("a", "eu"), edge("b", "us")];
        edges[0].admin_state = AdminState::Suspended;
        let s = pick(&edges, "eu", &[]);
        assert_eq!((s.chosen, s.fallback), (Some(1), true), "another region before a suspended edge");
        assert_eq!(s.candidates[0].tier, Some(Tier::Suspended));
        edges[1].health = Health::LinkLost;
        assert_eq!(chosen(&edges, "eu", &[]).as_deref(), Some("a"), "the last edge standing");
    }

    #[test]
    fn admin_override_moves_an_edge() {
        let mut edges = vec![edge("a", "eu"), edge("b", "us")];
        edges[1].region_override = Some("eu".into());
        edges[0].load.sessions = 1;
        let s = pick(&edges, "eu", &[]);
        assert_eq!((s.chosen, s.candidates[1].region.as_str()), (Some(1), "eu"));
    }
}
