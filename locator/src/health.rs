//! Telling a dead edge from a broken link.
//!
//! An edge's health is `up` while heartbeats arrive, `link_lost` when they stopped but the edge
//! still answers its health endpoint (`GET /livez` on its public URL), and `unavailable` when
//! neither: then its sessions are ended in the database with the reason `edge_unavailable` and
//! audit entries, and placement skips it. The admin state (active, suspended, draining) is a
//! separate field this module never touches.
//!
//! Timing at the defaults (heartbeat every 1 s, `heartbeat_timeout` 3 s, `probe_timeout` 1 s):
//! once an edge has been silent for `heartbeat_timeout - probe_timeout` (2 s) the locator probes
//! it, again whenever the previous probe has finished; when the silence reaches
//! `heartbeat_timeout` the latest probe decides. A dead process refuses the probe at once and a
//! partitioned one lets it time out by then, so either is `unavailable` 3 s after its last
//! heartbeat, give or take one check period ([`CHECK_PERIOD_DIVISOR`]).
//!
//! [`Detector`] is the decision logic alone, on tokio's clock, so it runs on paused time in tests;
//! [`run`] feeds it this replica's view of the edges and carries out what it decides, re-reading
//! the edge from SQL first so that a replica with a stale view never acts on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::db::{EdgeRecord, Health, StoreError};
use crate::tokens::now_ms;
use crate::LocatorState;

/// The end reason of sessions whose edge was declared unavailable; reconciliation restores
/// such a session if its edge comes back still running it.
pub use crate::db::END_REASON_EDGE_UNAVAILABLE;

/// Edges are checked `heartbeat_interval / 10` apart (100 ms at the defaults).
pub const CHECK_PERIOD_DIVISOR: u32 = 10;

/// The timeouts failure detection works with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// No heartbeat for this long, and a failed probe, make an edge unavailable.
    pub heartbeat_timeout: Duration,
    /// A probe that has not answered in this time has failed.
    pub probe_timeout: Duration,
}

impl Timing {
    /// Silence after which probing starts, so that a probe's answer is in by the timeout.
    fn probe_after(&self) -> Duration {
        self.heartbeat_timeout.saturating_sub(self.probe_timeout)
    }
}

/// One edge as the detector sees it.
#[derive(Debug, Clone)]
pub struct EdgeView {
    pub id: String,
    pub health: Health,
    pub last_heartbeat: Instant,
    /// Where its health endpoint is (`http(s)://host:port/livez`).
    pub probe_url: String,
}

/// What the detector wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Probe { edge_id: String, url: String },
    MarkLinkLost { edge_id: String },
    MarkUnavailable { edge_id: String, detail: String },
}

#[derive(Debug, Default)]
struct Tracked {
    probing: bool,
    /// When the latest finished probe was started, and its outcome.
    last: Option<(Instant, Result<(), String>)>,
}

/// The failure-detection state machine (see the module documentation).
#[derive(Debug)]
pub struct Detector {
    timing: Timing,
    tracked: HashMap<String, Tracked>,
}

impl Detector {
    pub fn new(timing: Timing) -> Detector {
        Detector { timing, tracked: HashMap::new() }
    }

    /// Looks at every edge once; returns what to do now.
    pub fn tick(&mut self, now: Instant, edges: &[EdgeView]) -> Vec<Action> {
        let mut actions = Vec::new();
        self.tracked.retain(|id, _| edges.iter().any(|e| &e.id == id));
        for e in edges {
            if e.health == Health::Unavailable {
                self.tracked.remove(&e.id);
                continue;
            }
            let silent = now.saturating_duration_since(e.last_heartbeat);
            if silent < self.timing.probe_after() && e.health == Health::Up {
                self.tracked.remove(&e.id);
                continue;
            }
            let t = self.tracked.entry(e.id.clone()).or_default();
            if !t.probing {
                t.probing = true;
                actions.push(Action::Probe { edge_id: e.id.clone(), url: e.probe_url.clone() });
            }
            if silent < self.timing.heartbeat_timeout {
                continue;
            }
            // Only a probe started after the heartbeats stopped counts.
            match &t.last {
                Some((started, Err(error))) if *started >= e.last_heartbeat => {
                    let detail =
                        format!("no heartbeat for {} ms and the health probe failed: {error}", silent.as_millis());
                    actions.push(Action::MarkUnavailable { edge_id: e.id.clone(), detail });
                }
                Some((started, Ok(()))) if *started >= e.last_heartbeat && e.health == Health::Up => {
                    actions.push(Action::MarkLinkLost { edge_id: e.id.clone() });
                }
                _ => {}
            }
        }
        actions
    }

    /// A probe of `edge_id` started at `started` finished.
    pub fn probe_finished(&mut self, edge_id: &str, started: Instant, outcome: Result<(), String>) {
        if let Some(t) = self.tracked.get_mut(edge_id) {
            t.probing = false;
            t.last = Some((started, outcome));
        }
    }
}

/// `ws://host:port/...` → `http://host:port/livez` (and `wss` → `https`).
pub fn probe_url(public_url: &str) -> String {
    let (scheme, rest) = match public_url.split_once("://") {
        Some(("wss", rest)) => ("https", rest),
        Some((_, rest)) => ("http", rest),
        None => ("http", public_url),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/livez")
}

/// Probes one edge's health endpoint.
async fn probe(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<(), String> {
    match client.get(url).timeout(timeout).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{url} answered {}", r.status())),
        Err(e) if e.is_timeout() => Err(format!("{url} did not answer within {} ms", timeout.as_millis())),
        Err(e) if e.is_connect() => Err(format!("{url} refused the connection")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

fn view(e: &EdgeRecord, now: Instant, now_ms: i64) -> EdgeView {
    let silent = Duration::from_millis(u64::try_from(now_ms.saturating_sub(e.last_heartbeat_at)).unwrap_or(0));
    EdgeView {
        id: e.id.clone(),
        health: e.health,
        last_heartbeat: now.checked_sub(silent).unwrap_or(now),
        probe_url: probe_url(&e.public_url),
    }
}

/// Runs failure detection until shutdown.
pub async fn run(state: Arc<LocatorState>) {
    let timing =
        Timing { heartbeat_timeout: state.config.heartbeat_timeout, probe_timeout: state.config.probe_timeout };
    let mut detector = Detector::new(timing);
    let client =
        match crate::access::oidc::extra_roots(reqwest::Client::builder().no_proxy(), state.config.ca_file.as_deref())
            .and_then(|b| b.build().map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the health probe client; failure detection is off");
                return;
            }
        };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Instant, Result<(), String>)>();
    let mut check = tokio::time::interval(state.config.heartbeat_interval / CHECK_PERIOD_DIVISOR);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = check.tick() => {}
            Some((edge_id, started, outcome)) = done_rx.recv() => {
                detector.probe_finished(&edge_id, started, outcome);
                continue;
            }
            _ = state.shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let wall = now_ms();
        let edges: Vec<EdgeView> = state.placer.edges().iter().map(|e| view(e, now, wall)).collect();
        for action in detector.tick(now, &edges) {
            match action {
                Action::Probe { edge_id, url } => {
                    let (client, done) = (client.clone(), done_tx.clone());
                    let timeout = timing.probe_timeout;
                    tokio::spawn(async move {
                        let started = Instant::now();
                        let outcome = probe(&client, &url, timeout).await;
                        let _ = done.send((edge_id, started, outcome));
                    });
                }
                Action::MarkLinkLost { edge_id } => {
                    if let Err(e) = mark(&state, &edge_id, Health::LinkLost, String::new()).await {
                        tracing::warn!(edge.id = %edge_id, error = %e, "could not record link loss");
                    }
                }
                Action::MarkUnavailable { edge_id, detail } => {
                    if let Err(e) = mark(&state, &edge_id, Health::Unavailable, detail).await {
                        tracing::warn!(edge.id = %edge_id, error = %e, "could not mark edge unavailable");
                    }
                }
            }
        }
    }
}

/// Records a verdict after checking it against SQL (another replica may hold fresher heartbeats).
async fn mark(state: &LocatorState, edge_id: &str, health: Health, detail: String) -> Result<(), StoreError> {
    let now = now_ms();
    let Some(edge) = state.store.edge(edge_id).await? else { return Ok(()) };
    let timeout_ms = i64::try_from(state.config.heartbeat_timeout.as_millis()).unwrap_or(i64::MAX);
    let silent_ms = now.saturating_sub(edge.last_heartbeat_at);
    if silent_ms < timeout_ms || edge.health == Health::Unavailable {
        return Ok(());
    }
    // Conditional on what was just read (health, epoch, last heartbeat): exactly one replica
    // carries out the verdict, and none does once the edge registered again or a heartbeat
    // arrived. Unavailability, the sessions' ends and their audit entries are one transaction.
    let epoch = edge.link_epoch;
    let heard = edge.last_heartbeat_at;
    if health == Health::Unavailable {
        let Some(ended) = state.store.declare_unavailable(edge_id, epoch, heard, &detail, now).await? else {
            return Ok(());
        };
        tracing::warn!(edge.id = %edge_id, silent_ms, sessions_ended = ended.len(), %detail, "edge unavailable");
        if !ended.is_empty() {
            state.presence.changed();
        }
    } else {
        if !state.store.change_edge_health(edge_id, &[Health::Up], health, epoch, Some(heard), now).await? {
            return Ok(());
        }
        tracing::warn!(edge.id = %edge_id, silent_ms, "edge link lost; the edge still answers its health probe");
    }
    if let Err(e) = state.placer.refresh_edges(&state.store).await {
        tracing::warn!(error = %e, "could not refresh edges for placement");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing { heartbeat_timeout: Duration::from_secs(3), probe_timeout: Duration::from_secs(1) }
    }

    fn edge(health: Health, last_heartbeat: Instant) -> EdgeView {
        EdgeView { id: "e1".into(), health, last_heartbeat, probe_url: "http://127.0.0.1:1/livez".into() }
    }

    #[test]
    fn probe_urls() {
        assert_eq!(probe_url("ws://127.0.0.1:8081"), "http://127.0.0.1:8081/livez");
        assert_eq!(probe_url("wss://edge-0.example.com/base"), "https://edge-0.example.com/livez");
    }

    /// Drives the detector like `run` does, every 100 ms, with a probe that fails after
    /// `probe_delay` (0: refused at once; the probe timeout: a partition). Returns how long after
    /// the last heartbeat the edge was marked unavailable.
    async fn time_to_unavailable(probe_delay: Duration, alive: bool) -> (Option<Duration>, Vec<Action>) {
        let mut d = Detector::new(timing());
        let last = Instant::now();
        let mut seen = Vec::new();
        let mut pending: Vec<(Instant, Instant)> = Vec::new();
        let mut health = Health::Up;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = Instant::now();
            for (started, done_at) in std::mem::take(&mut pending) {
                if done_at <= now {
                    let outcome = if alive { Ok(()) } else { Err("refused".to_owned()) };
                    d.probe_finished("e1", started, outcome);
                } else {
                    pending.push((started, done_at));
                }
            }
            for a in d.tick(now, &[edge(health, last)]) {
                match &a {
                    Action::Probe { .. } => pending.push((now, now + probe_delay.min(timing().probe_timeout))),
                    Action::MarkUnavailable { .. } => return (Some(now - last), seen),
                    Action::MarkLinkLost { .. } => health = Health::LinkLost,
                }
                seen.push(a);
            }
        }
        (None, seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_edge_is_unavailable_within_three_seconds() {
        let (after, actions) = time_to_unavailable(Duration::ZERO, false).await;
        let after = after.expect("marked unavailable");
        assert!(after <= Duration::from_secs(3), "took {after:?}");
        assert!(after >= Duration::from_secs(3) - Duration::from_millis(100), "too eager: {after:?}");
        assert!(matches!(actions.first(), Some(Action::Probe { .. })), "{actions:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partitioned_edge_is_unavailable_within_three_seconds() {
        // The probe hangs until its timeout, as it does when packets vanish.
        let (after, _) = time_to_unavailable(Duration::from_secs(1), false).await;
        let after = after.expect("marked unavailable");
        assert!(after <= Duration::from_secs(3), "took {after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_edge_that_answers_its_probe_is_link_lost_not_unavailable() {
        let (after, actions) = time_to_unavailable(Duration::from_millis(5), true).await;
        assert_eq!(after, None, "{actions:?}");
        assert!(actions.contains(&Action::MarkLinkLost { edge_id: "e1".into() }), "{actions:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_heartbeats_need_no_probe() {
        let mut d = Detector::new(timing());
        let t0 = Instant::now();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = Instant::now();
            // A heartbeat every second.
            let last = now - Duration::from_millis((now - t0).as_millis() as u64 % 1000);
            assert!(d.tick(now, &[edge(Health::Up, last)]).is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_from_before_the_silence_does_not_count() {
        let mut d = Detector::new(timing());
        let t0 = Instant::now();
        // A probe that succeeded long ago, then heartbeats stop at t0 + 10 s.
        d.tracked.insert("e1".into(), Tracked { probing: false, last: Some((t0, Ok(()))) });
        tokio::time::advance(Duration::from_secs(13)).await;
        let actions = d.tick(Instant::now(), &[edge(Health::Up, t0 + Duration::from_secs(10))]);
        assert_eq!(actions, vec![Action::Probe { edge_id: "e1".into(), url: "http://127.0.0.1:1/livez".into() }]);
    }
}
