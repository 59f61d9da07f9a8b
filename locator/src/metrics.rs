//! `/metrics` in the Prometheus text format: placement latency as a histogram updated by each
//! request, everything else read at scrape time (links this replica holds, every edge's health
//! and outbox as last reported, the database pool). With an embedded edge its metrics follow on
//! the same page. The names are listed in docs/operations.md.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use duet_edge::metrics::{gauge, gauge_family};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::api::error::ApiError;
use crate::db::Health;
use crate::LocatorState;

/// How a placement request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct Outcome {
    result: &'static str,
}

impl Outcome {
    /// `placed`; `no_edge` (no edge could take it, 503); `refused` (the client's fault or its
    /// limits: 4xx); `error` (the locator's: 5xx).
    pub fn of(result: &Result<axum::response::Response, ApiError>) -> Outcome {
        let result = match result {
            Ok(_) => "placed",
            Err(ApiError::NoEdgeAvailable) => "no_edge",
            Err(e) if e.status_and_code().0.is_client_error() => "refused",
            Err(_) => "error",
        };
        Outcome { result }
    }
}

/// The metrics requests update as they run.
#[derive(Debug, Clone)]
pub struct LocatorMetrics {
    placement: Family<Outcome, Histogram, fn() -> Histogram>,
}

/// 0.25 ms to about 4 s in factors of two: placements commit in batches of a few ms, and the
/// 10 ms target sits between two buckets.
fn placement_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Default for LocatorMetrics {
    fn default() -> Self {
        LocatorMetrics { placement: Family::new_with_constructor(placement_histogram) }
    }
}

impl LocatorMetrics {
    /// Records one `POST /api/v1/sessions`, from its arrival to its answer.
    pub fn placement(&self, outcome: Outcome, started: Instant) {
        self.placement.get_or_create(&outcome).observe(started.elapsed().as_secs_f64());
    }
}

/// Reads the locator's state at scrape time.
struct LocatorCollector {
    state: Arc<LocatorState>,
    /// Whether the database answered the scrape's ping.
    database_up: bool,
}

impl fmt::Debug for LocatorCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocatorCollector").field("database_up", &self.database_up).finish()
    }
}

impl Collector for LocatorCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &*self.state;
        let version = env!("CARGO_PKG_VERSION");
        gauge_family(
            &mut enc,
            "duet_locator_info",
            "This locator's version (always 1)",
            &[(&[("version", version)], 1.0)],
        )?;
        let ready = self.database_up && !s.shutdown.is_cancelled();
        gauge(
            &mut enc,
            "duet_locator_ready",
            "1 while /readyz answers 200 (database reachable, not stopping)",
            f64::from(u8::from(ready)),
        )?;
        gauge(&mut enc, "duet_locator_links", "Edge links this replica holds", s.links.linked_edges().len() as f64)?;
        let edges = s.placer.edges();
        let count = |h: Health| edges.iter().filter(|e| e.health == h).count() as f64;
        gauge_family(
            &mut enc,
            "duet_locator_edges",
            "Registered edges by health, as this replica last read them",
            &[
                (&[("health", "up")], count(Health::Up)),
                (&[("health", "link_lost")], count(Health::LinkLost)),
                (&[("health", "unavailable")], count(Health::Unavailable)),
            ],
        )?;
        let ids: Vec<[(&str, &str); 1]> = edges.iter().map(|e| [("edge_id", e.id.as_str())]).collect();
        let depth: Vec<(&[(&str, &str)], f64)> =
            ids.iter().zip(edges.iter()).map(|(l, e)| (&l[..], e.outbox.depth as f64)).collect();
        gauge_family(
            &mut enc,
            "duet_locator_edge_outbox_depth",
            "Each edge's outbox depth, from its last heartbeat",
            &depth,
        )?;
        let age: Vec<(&[(&str, &str)], f64)> =
            ids.iter().zip(edges.iter()).map(|(l, e)| (&l[..], e.outbox.oldest_age_ms as f64 / 1000.0)).collect();
        gauge_family(
            &mut enc,
            "duet_locator_edge_outbox_oldest_age_seconds",
            "Age of each edge's oldest unacknowledged outbox entry, from its last heartbeat",
            &age,
        )?;
        let pool = s.store.pool_stats();
        gauge_family(
            &mut enc,
            "duet_locator_db_pool_connections",
            "Database connections open in this replica's pool",
            &[(&[("state", "idle")], pool.idle as f64), (&[("state", "in_use")], pool.in_use() as f64)],
        )?;
        gauge(&mut enc, "duet_locator_db_pool_max", "Most connections this replica's pool opens", pool.max as f64)?;
        Ok(())
    }
}

/// The locator's metrics page (and its embedded edge's).
pub async fn scrape(state: &Arc<LocatorState>, edge: Option<&Arc<duet_edge::EdgeState>>) -> String {
    let database_up = state.store.ping().await.is_ok();
    let mut registry = Registry::default();
    registry.register(
        "duet_locator_placement_duration_seconds",
        "Time from a POST /api/v1/sessions request's arrival to its answer, by result",
        state.metrics.placement.clone(),
    );
    registry.register_collector(Box::new(LocatorCollector { state: state.clone(), database_up }));
    let mut text = duet_edge::metrics::render(&registry);
    if let Some(edge) = edge {
        text.push_str(&duet_edge::metrics::scrape(edge));
    }
    text
}
