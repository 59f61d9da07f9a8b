//! Placement: the load score and reservations (through scripted link peers whose load the test
//! sets), regions from CIDR rules, GeoIP and defaults (real edges, the real MaxMind test
//! databases, clients behind a trusted proxy), fallback orders, soft suspend, the admin API's
//! rules and their validation, explanations, and rules that outlive the locator. The region
//! scenario runs once per database (`placement::regions::{sqlite,postgres,mysql}`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use duet_locator::db::Dialect;
use duet_proto::link::{Capacity, Load};
use duet_testkit::{geoip_test_database, Cluster, ClusterOptions, ScriptedEdge, TestDb, TEST_SECRET};
use serde_json::json;

use crate::support::{place_from, Admin};

async fn scripted(cluster: &Cluster, id: &str, region: &str, max_sessions: u32, sessions: u32) -> ScriptedEdge {
    let capacity = Capacity { max_connections: 0, max_sessions };
    let load = Load { cpu: 0.0, loop_lag_ms: 0, connections: sessions, sessions };
    let edge = ScriptedEdge::connect(&cluster.url(), TEST_SECRET, id, region, capacity, load).await;
    // Placement knows the edge once its registration is in the placer's snapshot.
    let admin = Admin::new(cluster);
    duet_testkit::wait_until(&format!("{id} available"), Duration::from_secs(10), || {
        let admin = &admin;
        async move {
            let edges = admin.ok("GET", "/edges", None).await;
            edges["edges"].as_array().unwrap().iter().any(|e| e["id"] == id && e["available"] == true)
        }
    })
    .await;
    edge
}

/// Places `n` sessions, `parallel` at a time; answers the count per edge.
async fn place_many(cluster: &Cluster, n: usize, parallel: usize) -> HashMap<String, usize> {
    let client = Arc::new(cluster.client());
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, permits) = (client.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            client.create_session(&Default::default()).await.expect("placement").edge.id
        });
    }
    let mut counts = HashMap::new();
    while let Some(id) = tasks.join_next().await {
        *counts.entry(id.unwrap()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_spreads_evenly_over_4_equal_edges() {
    let cluster = Cluster::start_with(ClusterOptions::default()).await;
    let mut edges = Vec::new();
    for i in 0..4 {
        edges.push(scripted(&cluster, &format!("equal-{i}"), "default", 0, 0).await);
    }
    // All at once: 1,000 requests in flight, far faster than heartbeats.
    let counts = place_many(&cluster, 1_000, 1_000).await;
    assert_eq!(counts.values().sum::<usize>(), 1_000);
    for e in &edges {
        let n = counts.get(&e.id).copied().unwrap_or(0);
        assert!((225..=275).contains(&n), "{} got {n} of 1,000 (within ±10% of 250 expected): {counts:?}", e.id);
    }
    // Every answered placement is committed with its explanation.
    let store = &cluster.locator.state.store;
    let mut stored = 0;
    for e in &edges {
        stored += store.live_sessions_on(&e.id).await.unwrap().len();
    }
    assert_eq!(stored, 1_000);
    drop(edges);
    cluster.shutdown().await;
}

/// Edges of unequal capacity and load get sessions by the documented score: each new session
/// goes where `max(sessions / max_sessions, ...)` is lowest, so after 150 sessions every edge
/// is at the same share of its capacity. Round-robin (50 each) fails this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unequal_edges_fill_to_equal_shares_of_capacity() {
    let cluster = Cluster::start_with(ClusterOptions::default()).await;
    let small = scripted(&cluster, "small", "default", 100, 0).await; // 0 of 100
    let busy = scripted(&cluster, "busy", "default", 100, 50).await; // 50 of 100
    let large = scripted(&cluster, "large", "default", 200, 0).await; // 0 of 200
    let counts = place_many(&cluster, 150, 1).await;
    // Water-filling to an equal share u: 100u + (100u - 50) + 200u = 150, so u = 0.5.
    let got = |e: &ScriptedEdge| counts.get(&e.id).copied().unwrap_or(0) as i64;
    for (edge, expected) in [(&small, 50), (&busy, 0), (&large, 100)] {
        assert!((got(edge) - expected).abs() <= 1, "{} got {}, expected {expected}: {counts:?}", edge.id, got(edge));
    }
    // The explanation of the last one shows the scores it compared.
    let admin = Admin::new(&cluster);
    let dry = admin.ok("POST", "/placement/dry-run", Some(json!({}))).await;
    let scores: Vec<f64> = dry["candidates"].as_array().unwrap().iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(scores.iter().all(|s| (s - 0.5).abs() < 0.02), "all near 0.5: {dry}");
    // A higher-loaded edge is demoted; a full edge is skipped.
    busy.set_load(Load { cpu: 0.95, loop_lag_ms: 0, connections: 0, sessions: 0 });
    large.set_load(Load { cpu: 0.0, loop_lag_ms: 0, connections: 0, sessions: 200 });
    duet_testkit::wait_until("heartbeats applied", Duration::from_secs(10), || {
        let admin = &admin;
        async move {
            let dry = admin.ok("POST", "/placement/dry-run", Some(json!({}))).await;
            let c = dry["candidates"].as_array().unwrap().clone();
            c.iter().any(|c| c["edge"] == "busy" && c["tier"] == "demoted")
                && c.iter().any(|c| c["edge"] == "large" && c["filtered"] == "session_capacity")
        }
    })
    .await;
    let dry = admin.ok("POST", "/placement/dry-run", Some(json!({}))).await;
    assert_eq!(dry["chosen"], "small", "{dry}");
    drop((small, busy, large));
    cluster.shutdown().await;
}

/// Addresses from MaxMind's test databases (GeoIP2-Country-Test.mmdb).
const SE: &str = "89.160.20.112"; // 89.160.20.112/28: Sweden, Europe
const GB: &str = "81.2.69.142"; // 81.2.69.142/31: United Kingdom, Europe
const US: &str = "216.160.83.56"; // 216.160.83.56/29: United States, North America
const JP6: &str = "2001:218::1"; // 2001:218::/32: Japan, Asia
const CN: &str = "175.16.199.1"; // 175.16.199.0/24: China, Asia

fn served(answer: &serde_json::Value) -> (&str, &str) {
    (answer["region"]["wanted"].as_str().unwrap(), answer["edge"]["region"].as_str().unwrap())
}

pub async fn regions(dialect: Dialect) {
    let Some(db) = TestDb::fresh(dialect).await else { return };
    let options = || ClusterOptions {
        database_url: Some(db.url.clone()),
        tweak_locator: Some(Box::new(|c: &mut duet_locator::LocatorConfig| {
            c.geoip_database = Some(geoip_test_database("GeoIP2-Country-Test.mmdb"));
            c.trusted_proxies = duet_locator::client_addr::TrustedProxies::parse_list("127.0.0.1").unwrap();
        })),
    };
    let mut cluster = Cluster::start_with(options()).await;
    for (id, region) in [("eu-1", "eu"), ("eu-2", "eu"), ("na-1", "na"), ("home-1", "default")] {
        cluster
            .add_edge(|c| {
                c.id = Some(id.into());
                c.region = region.into();
            })
            .await;
    }
    let admin = Admin::new(&cluster);
    admin.add_rule("continent", "EU", "eu").await;
    admin.add_rule("continent", "na", "na").await; // codes are case-insensitive
    let gb = admin.add_rule("country", "GB", "uk").await; // a region without edges
    admin.add_rule("continent", "AS", "asia").await; // likewise
    admin.add_rule("cidr", "89.160.20.112/28", "na").await; // beats GeoIP's Sweden
    admin.add_rule("cidr", "10.20.0.0/16", "eu").await; // an office network GeoIP cannot place
    admin.ok("PUT", "/regions/uk/fallback", Some(json!({ "fallback": ["eu"] }))).await;
    admin.ok("PUT", "/regions/asia/fallback", Some(json!({ "fallback": ["na", "eu"] }))).await;

    // Continent rules, through a trusted proxy (the test's address, 127.0.0.1).
    let a = place_from(&cluster, US).await;
    assert_eq!(served(&a), ("na", "na"));
    assert_eq!(a["region"]["fallback"], false);
    assert!(a["edge"]["id"].as_str().unwrap() == "na-1");
    let a = place_from(&cluster, "203.0.113.9, 81.2.69.142").await; // rightmost untrusted counts
    assert_eq!(served(&a), ("uk", "eu"), "country rule, then uk's fallback: {a}");
    assert_eq!(a["region"]["fallback"], true);
    // CIDR beats GeoIP; CIDR places private addresses; unknown and private ones get the default.
    assert_eq!(served(&place_from(&cluster, SE).await), ("na", "na"));
    assert_eq!(served(&place_from(&cluster, "10.20.30.40").await), ("eu", "eu"));
    assert_eq!(served(&place_from(&cluster, "10.99.0.1").await), ("default", "default"));
    assert_eq!(served(&place_from(&cluster, "192.0.2.10").await), ("default", "default"));
    // IPv6, through the RFC 7239 header; Asia has no edge: na first, as configured.
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/sessions", cluster.url()))
        .header("forwarded", format!("for=\"[{JP6}]:4711\";proto=https"))
        .send()
        .await
        .unwrap();
    assert_eq!(served(&res.json::<serde_json::Value>().await.unwrap()), ("asia", "na"));
    admin.ok("PUT", "/regions/asia/fallback", Some(json!({ "fallback": ["eu", "na"] }))).await;
    assert_eq!(served(&place_from(&cluster, CN).await), ("asia", "eu"), "the new order applies at once");

    // The stored explanation says why, and the dry run agrees without placing anything.
    let a = place_from(&cluster, GB).await;
    let sid = a["session_id"].as_str().unwrap();
    let stored = admin.ok("GET", &format!("/sessions/{sid}/placement"), None).await;
    let why = &stored["explanation"];
    assert_eq!(why["client_ip"], GB);
    assert_eq!(why["region_source"], json!({ "kind": "country", "rule_id": gb, "match": "GB" }));
    assert_eq!((why["country"].as_str(), why["continent"].as_str()), (Some("GB"), Some("EU")));
    assert_eq!(why["chosen"], a["edge"]["id"]);
    assert_eq!(why["candidates"].as_array().unwrap().len(), 4);
    let before = cluster.locator.state.store.live_sessions_on("eu-1").await.unwrap().len();
    let dry = admin.ok("POST", "/placement/dry-run", Some(json!({ "client_ip": GB }))).await;
    assert_eq!((dry["wanted_region"].as_str(), dry["served_region"].as_str()), (Some("uk"), Some("eu")));
    assert_eq!(cluster.locator.state.store.live_sessions_on("eu-1").await.unwrap().len(), before);

    // Soft suspend: both eu edges suspended, Europe is served elsewhere; all suspended, the
    // suspended edges in the client's region take it.
    admin.ok("POST", "/edges/eu-1/suspend", None).await;
    admin.ok("POST", "/edges/eu-2/suspend", None).await;
    let a = place_from(&cluster, "10.20.0.1").await;
    assert_ne!(a["edge"]["region"], "eu", "{a}");
    for id in ["na-1", "home-1"] {
        let e = admin.ok("POST", &format!("/edges/{id}/suspend"), None).await;
        assert_eq!(e["admin_state"], "suspended");
    }
    let a = place_from(&cluster, "10.20.0.1").await;
    assert_eq!(served(&a), ("eu", "eu"), "the last edges standing: {a}");
    for id in ["eu-1", "eu-2", "na-1", "home-1"] {
        admin.ok("POST", &format!("/edges/{id}/resume"), None).await;
    }
    // An admin moves an edge to another region.
    let e = admin.ok("PUT", "/edges/home-1/region", Some(json!({ "region": "asia" }))).await;
    assert_eq!((e["region"].as_str(), e["reported_region"].as_str()), (Some("asia"), Some("default")));
    let a = place_from(&cluster, CN).await;
    assert_eq!((served(&a), a["edge"]["id"].as_str()), (("asia", "asia"), Some("home-1")));

    // Rules, fallbacks and the override outlive the locator.
    let rules_before = admin.ok("GET", "/regions", None).await;
    cluster.shutdown().await;
    let restarted = Cluster::start_with(options()).await;
    let admin = Admin::new(&restarted);
    let rules_after = admin.ok("GET", "/regions", None).await;
    assert_eq!(rules_after["rules"], rules_before["rules"]);
    let fallbacks = |v: &serde_json::Value| {
        v["regions"].as_array().unwrap().iter().map(|r| (r["name"].clone(), r["fallback"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(fallbacks(&rules_after), fallbacks(&rules_before));
    let dry = admin.ok("POST", "/placement/dry-run", Some(json!({ "client_ip": GB }))).await;
    assert_eq!(dry["wanted_region"], "uk");
    let home = admin.ok("GET", "/edges", None).await["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "home-1")
        .cloned()
        .unwrap();
    assert_eq!(home["region"], "asia");
    restarted.shutdown().await;
    db.drop_db().await;
}

mod regions {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::regions(Dialect::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::regions(Dialect::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        super::regions(Dialect::Mysql).await
    }
}

/// A peer that is not a trusted proxy cannot pick its region with a forged header.
#[tokio::test]
async fn untrusted_peers_cannot_forge_their_address() {
    let cluster = Cluster::start_with(ClusterOptions {
        tweak_locator: Some(Box::new(|c| {
            c.geoip_database = Some(geoip_test_database("GeoIP2-Country-Test.mmdb"));
            c.trusted_proxies = duet_locator::client_addr::TrustedProxies::parse_list("192.0.2.0/24").unwrap();
        })),
        ..Default::default()
    })
    .await;
    let mut cluster = cluster;
    cluster.add_edge(|c| c.region = "default".into()).await;
    cluster.add_edge(|c| c.region = "na".into()).await;
    let admin = Admin::new(&cluster);
    admin.add_rule("continent", "NA", "na").await;
    for header in ["x-forwarded-for", "forwarded"] {
        let value = if header == "forwarded" { format!("for={US}") } else { US.to_owned() };
        let res = reqwest::Client::new()
            .post(format!("{}/api/v1/sessions", cluster.url()))
            .header(header, value)
            .send()
            .await
            .unwrap();
        let a: serde_json::Value = res.json().await.unwrap();
        assert_eq!(served(&a), ("default", "default"), "{header} from an untrusted peer is ignored");
        let sid = a["session_id"].as_str().unwrap();
        let stored = admin.ok("GET", &format!("/sessions/{sid}/placement"), None).await;
        assert_eq!(stored["explanation"]["client_ip"], "127.0.0.1");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_rules_are_refused_with_the_reason_and_change_nothing() {
    let cluster = Cluster::start().await;
    let admin = Admin::new(&cluster);
    let first = admin.add_rule("cidr", "10.0.0.0/8", "eu").await;
    let cases = [
        (json!({ "kind": "cidr", "match": "10.0.0.0/33", "region": "eu" }), 400, "10.0.0.0/33"),
        (json!({ "kind": "cidr", "match": "10.1.2.3/8", "region": "eu" }), 400, "10.0.0.0/8"),
        (json!({ "kind": "cidr", "match": "banana", "region": "eu" }), 400, "banana"),
        (json!({ "kind": "country", "match": "XX", "region": "eu" }), 400, "XX"),
        (json!({ "kind": "continent", "match": "EUR", "region": "eu" }), 400, "EUR"),
        (json!({ "kind": "planet", "match": "EU", "region": "eu" }), 400, "planet"),
        (json!({ "kind": "cidr", "match": "10.1.0.0/16", "region": "eu west" }), 400, "region"),
        (json!({ "kind": "cidr", "match": "10.0.0.0/8", "region": "us" }), 409, "rule"),
        (json!({ "kind": "cidr", "match": "10.0.0.0/8" }), 400, "region"),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = admin.call("POST", "/regions/rules", Some(body.clone())).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message:?} should name {needle:?}");
    }
    let (status, _) = admin.call("PUT", "/regions/eu/fallback", Some(json!({ "fallback": ["us", "eu"] }))).await;
    assert_eq!(status, 400, "a region cannot fall back to itself");
    let (status, _) = admin.call("PUT", "/regions/eu/fallback", Some(json!({ "fallback": ["us", "us"] }))).await;
    assert_eq!(status, 400);
    let (status, _) = admin.call("POST", "/placement/dry-run", Some(json!({ "client_ip": "1.2.3" }))).await;
    assert_eq!(status, 400);
    let (status, _) = admin.call("POST", "/edges/nope/suspend", None).await;
    assert_eq!(status, 404);
    let (status, _) = admin.call("DELETE", "/regions/rules/999", None).await;
    assert_eq!(status, 404);
    let regions = admin.ok("GET", "/regions", None).await;
    let rules = regions["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!((rules[0]["id"].as_i64(), rules[0]["region"].as_str()), (Some(first), Some("eu")));
    assert!(regions["regions"].as_array().unwrap().iter().all(|r| r["fallback"].as_array().unwrap().is_empty()));
    // Removing works once.
    admin.ok("DELETE", &format!("/regions/rules/{first}"), None).await;
    let (status, _) = admin.call("DELETE", &format!("/regions/rules/{first}"), None).await;
    assert_eq!(status, 404);
    cluster.shutdown().await;
}

/// A broken or missing GeoIP file is refused, naming it, and the database in use stays.
#[tokio::test]
async fn geoip_reload_keeps_the_database_in_use_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("geo.mmdb");
    std::fs::copy(geoip_test_database("GeoIP2-Country-Test.mmdb"), &file).unwrap();
    let configured = file.clone();
    let cluster = Cluster::start_with(ClusterOptions {
        tweak_locator: Some(Box::new(move |c| c.geoip_database = Some(configured))),
        ..Default::default()
    })
    .await;
    let admin = Admin::new(&cluster);
    let country = |dry: &serde_json::Value| dry["country"].as_str().map(str::to_owned);
    let dry = admin.ok("POST", "/placement/dry-run", Some(json!({ "client_ip": GB }))).await;
    assert_eq!(country(&dry).as_deref(), Some("GB"));

    std::fs::write(&file, b"this is not a MaxMind database").unwrap();
    let (status, answer) = admin.call("POST", "/geoip/reload", None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("geo.mmdb"), "{answer}");
    std::fs::remove_file(&file).unwrap();
    let (status, answer) = admin.call("POST", "/geoip/reload", None).await;
    assert_eq!(status, 400, "{answer}");
    let dry = admin.ok("POST", "/placement/dry-run", Some(json!({ "client_ip": GB }))).await;
    assert_eq!(country(&dry).as_deref(), Some("GB"), "the loaded database is still used");

    std::fs::copy(geoip_test_database("GeoIP2-City-Test.mmdb"), &file).unwrap();
    let loaded = admin.ok("POST", "/geoip/reload", None).await;
    assert!(loaded["database_type"].as_str().unwrap().contains("City"), "{loaded}");
    cluster.shutdown().await;

    // A locator does not start on a missing database, and says which.
    let mut config = duet_locator::LocatorConfig::new(dir.path().join("locator"));
    config.geoip_database = Some(dir.path().join("missing.mmdb"));
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listeners = duet_locator::Listeners { api, edge: None };
    let err = duet_locator::start(config, listeners, Default::default()).await.err().expect("start fails");
    assert!(err.to_string().contains("missing.mmdb"), "{err}");
}
