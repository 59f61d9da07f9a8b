//! The storage suite: every store method, run once per dialect (`store::sqlite::*`,
//! `store::postgres::*`, `store::mysql::*`), each test on a fresh database.

use duet_locator::db::*;
use duet_proto::session::Role;
use duet_testkit::TestDb;

async fn open(dialect: Dialect) -> Option<(Store, TestDb)> {
    let db = TestDb::fresh(dialect).await?;
    let store = Store::open(&db.url).await.unwrap_or_else(|e| panic!("open {}: {e}", dialect.name()));
    // Migrating twice is a no-op.
    store.migrate().await.expect("second migration run");
    Some((store, db))
}

fn registration(id: &str) -> EdgeRegistration {
    EdgeRegistration {
        id: id.into(),
        region: "eu".into(),
        public_url: format!("ws://{id}:8081"),
        build: "duet-edge 0.1.0".into(),
        max_connections: 100,
        max_sessions: 10,
        load: Load { cpu: 0.5, loop_lag_ms: 3, connections: 4, sessions: 1 },
    }
}

fn person(role: Role, user: &str) -> NewParticipant {
    NewParticipant { role, user_id: user.into(), display_name: user.to_uppercase(), created_at: 1_000 }
}

pub async fn signing_keys(dialect: Dialect) {
    let Some((store, db)) = open(dialect).await else { return };
    assert!(store.signing_keys().await.unwrap().is_empty());
    let old = duet_locator::tokens::generate_key(1_000).unwrap();
    let new = duet_locator::tokens::generate_key(2_000).unwrap();
    store.insert_signing_key(&old).await.unwrap();
    store.insert_signing_key(&new).await.unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys, vec![new.clone(), old.clone()], "newest first, bytes intact");
    assert!(store.insert_signing_key(&old).await.is_err(), "key ids are unique");
    store.close().await;
    db.drop_db().await;
}

/// Rotation and retirement on schedule, driven by explicit clock values.
pub async fn key_rotation(dialect: Dialect) {
    use duet_locator::tokens::{maintain, KeyPolicy};
    use std::time::Duration;
    let Some((store, db)) = open(dialect).await else { return };
    let policy = KeyPolicy { rotate_after: Duration::from_secs(100), retire_after: Duration::from_secs(50) };
    assert!(maintain(&store, 1_000, policy).await.unwrap(), "first key made");
    let first = store.signing_keys().await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(!maintain(&store, 50_000, policy).await.unwrap(), "not due yet");
    assert!(maintain(&store, 101_000, policy).await.unwrap(), "rotated");
    let both = store.signing_keys().await.unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!((both[0].created_at, &both[1].kid), (101_000, &first[0].kid), "the new key signs, the old verifies");
    assert!(!maintain(&store, 140_000, policy).await.unwrap(), "old key still covers live tokens");
    assert!(maintain(&store, 151_000, policy).await.unwrap(), "old key retired");
    let left = store.signing_keys().await.unwrap();
    assert_eq!(left.iter().map(|k| &k.kid).collect::<Vec<_>>(), vec![&both[0].kid]);
    assert!(!store.retire_signing_key(&first[0].kid, 160_000).await.unwrap(), "retiring twice changes nothing");
    store.close().await;
    db.drop_db().await;
}

pub async fn edges(dialect: Dialect) {
    let Some((store, db)) = open(dialect).await else { return };
    let reg = registration("edge-a");
    store.upsert_edge(&reg, 5_000).await.unwrap();
    let e = store.edge("edge-a").await.unwrap().unwrap();
    assert_eq!(e.region, "eu");
    assert_eq!(e.public_url, "ws://edge-a:8081");
    assert_eq!(e.admin_state, AdminState::Active);
    assert_eq!(e.health, Health::Up);
    assert_eq!(e.load, reg.load);
    assert_eq!((e.max_connections, e.max_sessions), (100, 10));
    assert_eq!((e.registered_at, e.last_heartbeat_at), (5_000, 5_000));

    let load = Load { cpu: 1.25, loop_lag_ms: 9, connections: 40, sessions: 7 };
    assert!(store.record_heartbeat("edge-a", &load, 6_000).await.unwrap());
    assert!(!store.record_heartbeat("edge-x", &load, 6_000).await.unwrap(), "unknown edge");
    let e = store.edge("edge-a").await.unwrap().unwrap();
    assert_eq!((e.load, e.last_heartbeat_at), (load, 6_000));

    assert!(store.set_edge_health("edge-a", Health::LinkLost, 7_000).await.unwrap());
    assert!(!store.set_edge_health("edge-a", Health::LinkLost, 7_500).await.unwrap(), "no change, no write");
    let e = store.edge("edge-a").await.unwrap().unwrap();
    assert_eq!((e.health, e.health_changed_at), (Health::LinkLost, 7_000));

    // Re-registration brings it back up with the new figures.
    let mut reg2 = registration("edge-a");
    reg2.region = "us".into();
    store.upsert_edge(&reg2, 8_000).await.unwrap();
    store.upsert_edge(&registration("edge-b"), 8_000).await.unwrap();
    let all = store.edges().await.unwrap();
    assert_eq!(all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["edge-a", "edge-b"]);
    assert_eq!((all[0].region.as_str(), all[0].health), ("us", Health::Up));
    assert!(store.edge("nope").await.unwrap().is_none());
    store.close().await;
    db.drop_db().await;
}

pub async fn sessions_and_participants(dialect: Dialect) {
    let Some((store, db)) = open(dialect).await else { return };
    let s = NewSession {
        id: "s_1".into(),
        edge_id: "edge-a".into(),
        team: Some("platform".into()),
        region_hint: None,
        created_at: 10,
    };
    store.create_session(&s, &person(Role::Host, "ada")).await.unwrap();
    assert!(store.create_session(&s, &person(Role::Host, "ada")).await.is_err(), "ids are unique");
    let rec = store.session("s_1").await.unwrap().unwrap();
    assert_eq!(rec.team.as_deref(), Some("platform"));
    assert_eq!(rec.region_hint, None);
    assert_eq!((rec.started_at, rec.ended_at, rec.participant_count), (None, None, 1));

    // Concurrent joins get distinct ids.
    let mut joins = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        joins.push(tokio::spawn(
            async move { store.add_participant("s_1", &person(Role::Guest, &format!("g{i}"))).await },
        ));
    }
    let mut ids = Vec::new();
    for j in joins {
        ids.push(j.await.unwrap().unwrap().unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (2..=9).collect::<Vec<u32>>());
    let ps = store.participants("s_1").await.unwrap();
    assert_eq!(ps.len(), 9);
    assert_eq!(
        (ps[0].participant_id, ps[0].role, ps[0].user_id.as_str(), ps[0].display_name.as_str()),
        (1, Role::Host, "ada", "ADA")
    );
    assert!(ps[1..].iter().all(|p| p.role == Role::Guest));

    assert!(store.add_participant("s_nope", &person(Role::Guest, "x")).await.unwrap().is_none());

    assert_eq!(store.live_sessions_on("edge-a").await.unwrap().len(), 1);
    assert!(store.mark_session_started("s_1", 20).await.unwrap());
    assert!(!store.mark_session_started("s_1", 30).await.unwrap(), "first start kept");
    assert!(store.mark_session_ended("s_1", "empty", 40).await.unwrap());
    assert!(!store.mark_session_ended("s_1", "ended", 50).await.unwrap(), "first end kept");
    let rec = store.session("s_1").await.unwrap().unwrap();
    assert_eq!((rec.started_at, rec.ended_at, rec.end_reason.as_deref()), (Some(20), Some(40), Some("empty")));
    assert!(store.live_sessions_on("edge-a").await.unwrap().is_empty());
    assert!(
        store.add_participant("s_1", &person(Role::Guest, "late")).await.unwrap().is_none(),
        "ended sessions take no one"
    );
    assert!(store.session("s_2").await.unwrap().is_none());
    store.ping().await.unwrap();
    store.close().await;
    db.drop_db().await;
}

pub async fn edge_admin_fields(dialect: Dialect) {
    let Some((store, db)) = open(dialect).await else { return };
    store.upsert_edge(&registration("edge-a"), 1_000).await.unwrap();
    assert!(store.set_admin_state("edge-a", AdminState::Suspended).await.unwrap());
    assert!(store.set_admin_state("edge-a", AdminState::Suspended).await.unwrap(), "unchanged still known");
    assert!(!store.set_admin_state("nope", AdminState::Suspended).await.unwrap());
    assert!(store.set_region_override("edge-a", Some("us")).await.unwrap());
    assert!(!store.set_region_override("nope", Some("us")).await.unwrap());
    // Re-registration keeps what the admin set.
    store.upsert_edge(&registration("edge-a"), 2_000).await.unwrap();
    let e = store.edge("edge-a").await.unwrap().unwrap();
    assert_eq!((e.admin_state, e.region.as_str(), e.effective_region()), (AdminState::Suspended, "eu", "us"));
    store.set_region_override("edge-a", None).await.unwrap();
    assert_eq!(store.edge("edge-a").await.unwrap().unwrap().effective_region(), "eu");
    store.close().await;
    db.drop_db().await;
}

pub async fn region_rules_and_fallbacks(dialect: Dialect) {
    let Some((store, db)) = open(dialect).await else { return };
    assert!(store.region_rules().await.unwrap().is_empty());
    let a = store.insert_region_rule("cidr", "10.0.0.0/8", "eu", 1_000).await.unwrap().unwrap();
    let b = store.insert_region_rule("country", "GB", "uk", 2_000).await.unwrap().unwrap();
    assert!(b.id > a.id);
    let dup = store.insert_region_rule("cidr", "10.0.0.0/8", "us", 3_000).await.unwrap().unwrap_err();
    assert_eq!(dup, a, "the existing rule is answered, not replaced");
    let rules = store.region_rules().await.unwrap();
    assert_eq!(rules, vec![a.clone(), b.clone()]);
    assert_eq!((rules[0].kind.as_str(), rules[0].matcher.as_str(), rules[0].created_at), ("cidr", "10.0.0.0/8", 1_000));
    assert!(store.delete_region_rule(a.id).await.unwrap());
    assert!(!store.delete_region_rule(a.id).await.unwrap());
    assert_eq!(store.region_rules().await.unwrap(), vec![b]);

    store.set_region_fallback("uk", &["eu".into(), "us".into()], 5).await.unwrap();
    store.set_region_fallback("ap", &["us".into()], 5).await.unwrap();
    store.set_region_fallback("uk", &["us".into(), "eu".into()], 6).await.unwrap();
    let f = store.region_fallbacks().await.unwrap();
    assert_eq!(
        f,
        vec![
            RegionFallback { region: "ap".into(), fallback: vec!["us".into()] },
            RegionFallback { region: "uk".into(), fallback: vec!["us".into(), "eu".into()] },
        ]
    );
    store.set_region_fallback("ap", &[], 7).await.unwrap();
    assert_eq!(store.region_fallbacks().await.unwrap().len(), 1, "an empty order removes it");
    store.close().await;
    db.drop_db().await;
}

pub async fn placements_in_batches(dialect: Dialect) {
    let Some((store, db)) = open(dialect).await else { return };
    let record = |i: usize| PlacementRecord {
        session: NewSession {
            id: format!("s_{i}"),
            edge_id: "edge-a".into(),
            team: i.is_multiple_of(2).then(|| "t".to_owned()),
            region_hint: None,
            created_at: i as i64,
        },
        host: person(Role::Host, &format!("h{i}")),
        client_ip: Some("2001:db8::1".into()),
        wanted_region: "uk".into(),
        served_region: "eu".into(),
        explanation: format!("{{\"n\":{i}}}").into_bytes(),
    };
    // More than one multi-row statement's worth, in one transaction.
    let batch: Vec<PlacementRecord> = (0..1_100).map(record).collect();
    store.record_placements(&batch).await.unwrap();
    store.record_placements(&[]).await.unwrap();
    assert_eq!(store.live_sessions_on("edge-a").await.unwrap().len(), 1_100);
    let s = store.session("s_1099").await.unwrap().unwrap();
    assert_eq!((s.participant_count, s.created_at, s.team), (1, 1_099, None));
    let host = &store.participants("s_1099").await.unwrap()[0];
    assert_eq!((host.participant_id, host.role, host.user_id.as_str()), (1, Role::Host, "h1099"));
    let p = store.placement("s_7").await.unwrap().unwrap();
    assert_eq!(p.explanation, br#"{"n":7}"#.to_vec());
    assert_eq!(
        (p.client_ip.as_deref(), p.wanted_region.as_str(), p.served_region.as_str()),
        (Some("2001:db8::1"), "uk", "eu")
    );
    // A joining guest continues the host's numbering.
    assert_eq!(store.add_participant("s_7", &person(Role::Guest, "g")).await.unwrap(), Some(2));
    // All or nothing: a batch with a duplicate id stores none of its placements.
    let bad = vec![record(5_000), record(5)];
    assert!(store.record_placements(&bad).await.is_err());
    assert!(store.session("s_5000").await.unwrap().is_none());
    assert!(store.placement("nope").await.unwrap().is_none());
    store.close().await;
    db.drop_db().await;
}

macro_rules! suite {
    ($($dialect:ident => $value:expr),* $(,)?) => {$(
        mod $dialect {
            use super::*;
            #[tokio::test]
            async fn signing_keys() { super::signing_keys($value).await }
            #[tokio::test]
            async fn key_rotation() { super::key_rotation($value).await }
            #[tokio::test]
            async fn edges() { super::edges($value).await }
            #[tokio::test]
            async fn sessions_and_participants() { super::sessions_and_participants($value).await }
            #[tokio::test]
            async fn edge_admin_fields() { super::edge_admin_fields($value).await }
            #[tokio::test]
            async fn region_rules_and_fallbacks() { super::region_rules_and_fallbacks($value).await }
            #[tokio::test]
            async fn placements_in_batches() { super::placements_in_batches($value).await }
        }
    )*};
}

suite!(sqlite => Dialect::Sqlite, postgres => Dialect::Postgres, mysql => Dialect::Mysql);
