//! Placement: from a client's address to an edge, fast, and explained.
//!
//! The [`Placer`] keeps what a placement needs in memory, so a placement touches no database
//! until it is committed: a snapshot of the edges (refreshed from SQL every [`EDGE_REFRESH`], and
//! at once when this replica registers an edge, hears a heartbeat or an admin changes an edge),
//! the region rules and fallback orders (refreshed every [`RULES_REFRESH`] and at once on a
//! change through this replica), the GeoIP database, and the reservations of recent placements.
//! SQL stays the source of truth: another replica's changes reach this one within those
//! intervals. Reservations are per replica (each replica counts what it placed itself).
//!
//! A placement is: the client's region ([`crate::geo`]), then the edge ([`crate::selector`]),
//! then a reservation on it, all under one short lock so concurrent placements see each other;
//! then its rows and explanation are committed in batches ([`recorder`]).

pub mod recorder;
pub mod reservations;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::db::{EdgeRecord, Load, Store, StoreError};
use crate::geo::{GeoIp, RegionRule, RegionSource, Resolver, RuleKind};
use crate::selector::{self, CandidateReport, Limits};
use reservations::Reservations;

/// How often the edge snapshot is re-read from SQL: placement sees another replica's heartbeat
/// or admin change within a quarter second, for four small queries a second.
pub const EDGE_REFRESH: Duration = Duration::from_millis(250);
/// How often region rules and fallback orders are re-read from SQL (changes through this
/// replica apply at once).
pub const RULES_REFRESH: Duration = Duration::from_secs(2);

/// Why a placement went where it went. Stored with every session and answered by the dry run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The address the region was resolved from (after trusted proxies).
    pub client_ip: Option<String>,
    pub wanted_region: String,
    pub region_source: RegionSource,
    pub country: Option<String>,
    pub continent: Option<String>,
    /// The chosen edge's region; `None` when no edge was available.
    pub served_region: Option<String>,
    /// True when the session is served outside the wanted region.
    pub fallback: bool,
    pub chosen: Option<String>,
    pub candidates: Vec<CandidateReport>,
}

/// A placement decision: the edge (if any) and why.
#[derive(Debug, Clone)]
pub struct Decision {
    pub edge: Option<EdgeRecord>,
    pub explanation: Explanation,
}

/// The region rules in force.
pub struct Regions {
    pub resolver: Resolver,
    pub rules: Vec<RegionRule>,
    /// Fallback order per region.
    pub fallbacks: HashMap<String, Vec<String>>,
}

/// In-memory state for placing sessions (see the module documentation).
pub struct Placer {
    limits: Limits,
    default_region: String,
    /// Edges as last read from SQL, patched by this replica's heartbeats.
    edges: RwLock<Arc<Vec<EdgeRecord>>>,
    regions: RwLock<Arc<Regions>>,
    geoip: RwLock<Option<Arc<GeoIp>>>,
    /// Held across weigh-choose-reserve so concurrent placements see each other's reservations.
    reservations: Mutex<Reservations>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(|p| p.into_inner()) = value;
}

impl Placer {
    /// `hold` and `fade` shape reservations (see [`reservations`]).
    pub fn new(
        limits: Limits,
        default_region: String,
        geoip: Option<Arc<GeoIp>>,
        hold: Duration,
        fade: Duration,
    ) -> Placer {
        let regions = Regions {
            resolver: Resolver::new(&[], default_region.clone(), geoip.clone()),
            rules: Vec::new(),
            fallbacks: HashMap::new(),
        };
        Placer {
            limits,
            default_region,
            edges: RwLock::new(Arc::new(Vec::new())),
            regions: RwLock::new(Arc::new(regions)),
            geoip: RwLock::new(geoip),
            reservations: Mutex::new(Reservations::new(hold, fade)),
        }
    }

    pub fn edges(&self) -> Arc<Vec<EdgeRecord>> {
        read(&self.edges)
    }

    pub fn regions(&self) -> Arc<Regions> {
        read(&self.regions)
    }

    pub fn geoip(&self) -> Option<Arc<GeoIp>> {
        read(&self.geoip)
    }

    pub fn default_region(&self) -> &str {
        &self.default_region
    }

    /// The limits edges are filtered and demoted by.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Re-reads the edges from SQL.
    pub async fn refresh_edges(&self, store: &Store) -> Result<(), StoreError> {
        let edges = store.edges().await?;
        self.reservations.lock().unwrap_or_else(|p| p.into_inner()).retain_edges(|id| edges.iter().any(|e| e.id == id));
        write(&self.edges, Arc::new(edges));
        Ok(())
    }

    /// Applies a heartbeat this replica stored, without waiting for the next refresh.
    pub fn note_heartbeat(&self, edge_id: &str, load: &Load, at_ms: i64) {
        let mut guard = self.edges.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = guard.iter().position(|e| e.id == edge_id) {
            let edges = Arc::make_mut(&mut guard);
            edges[i].load = *load;
            edges[i].last_heartbeat_at = at_ms;
        }
    }

    /// Re-reads region rules and fallback orders from SQL and rebuilds the resolver.
    pub async fn refresh_rules(&self, store: &Store) -> Result<(), StoreError> {
        let records = store.region_rules().await?;
        let fallbacks = store.region_fallbacks().await?;
        let rules: Vec<RegionRule> = records
            .into_iter()
            .filter_map(|r| match RuleKind::parse(&r.kind) {
                Some(kind) => Some(RegionRule { id: r.id, kind, matcher: r.matcher, region: r.region }),
                None => {
                    tracing::warn!(rule.id = r.id, kind = %r.kind, "ignoring a region rule of unknown kind");
                    None
                }
            })
            .collect();
        self.install_rules(rules, fallbacks.into_iter().map(|f| (f.region, f.fallback)).collect());
        Ok(())
    }

    fn install_rules(&self, rules: Vec<RegionRule>, fallbacks: HashMap<String, Vec<String>>) {
        let resolver = Resolver::new(&rules, self.default_region.clone(), self.geoip());
        write(&self.regions, Arc::new(Regions { resolver, rules, fallbacks }));
    }

    /// Replaces the GeoIP database (the rules stay as they are).
    pub fn set_geoip(&self, geoip: Option<Arc<GeoIp>>) {
        write(&self.geoip, geoip);
        let current = self.regions();
        self.install_rules(current.rules.clone(), current.fallbacks.clone());
    }

    /// Chooses an edge for a client. With `reserve`, the choice counts against its edge at
    /// once; without, nothing changes (a dry run).
    pub fn place(&self, client_ip: Option<IpAddr>, requested_region: Option<&str>, reserve: bool) -> Decision {
        let regions = self.regions();
        let mut resolution = regions.resolver.resolve(client_ip);
        if let Some(r) = requested_region {
            resolution.region = r.to_owned();
            resolution.source = RegionSource::Request;
        }
        let fallback = regions.fallbacks.get(&resolution.region).map(Vec::as_slice).unwrap_or(&[]);
        let edges = self.edges();
        let now = tokio::time::Instant::now();
        let now_ms = crate::tokens::now_ms();
        let selection = {
            let mut reservations = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
            let inputs: Vec<selector::Input> =
                edges.iter().map(|e| selector::Input { edge: e, reserved: reservations.weight(&e.id, now) }).collect();
            let selection = selector::select(&inputs, &resolution.region, fallback, &self.limits, now_ms);
            if let (true, Some(i)) = (reserve, selection.chosen) {
                reservations.add(&edges[i].id, now);
            }
            selection
        };
        let edge = selection.chosen.map(|i| edges[i].clone());
        let explanation = Explanation {
            client_ip: client_ip.map(|ip| ip.to_string()),
            wanted_region: resolution.region,
            region_source: resolution.source,
            country: resolution.geo.country,
            continent: resolution.geo.continent,
            served_region: selection.served_region,
            fallback: selection.fallback,
            chosen: edge.as_ref().map(|e| e.id.clone()),
            candidates: selection.candidates,
        };
        Decision { edge, explanation }
    }

    /// The reserved sessions per edge right now (for the admin API).
    pub fn reserved(&self, edge_id: &str) -> f64 {
        let now = tokio::time::Instant::now();
        self.reservations.lock().unwrap_or_else(|p| p.into_inner()).weight(edge_id, now)
    }
}

/// Keeps the placer's snapshots fresh until shutdown.
pub async fn run(state: Arc<crate::LocatorState>) {
    let mut edges = tokio::time::interval(EDGE_REFRESH);
    edges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rules = tokio::time::interval(RULES_REFRESH);
    rules.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = edges.tick() => {
                if let Err(e) = state.placer.refresh_edges(&state.store).await {
                    tracing::warn!(error = %e, "could not refresh edges for placement");
                }
            }
            _ = rules.tick() => {
                if let Err(e) = state.placer.refresh_rules(&state.store).await {
                    tracing::warn!(error = %e, "could not refresh region rules");
                }
            }
            _ = state.shutdown.cancelled() => return,
        }
    }
}
