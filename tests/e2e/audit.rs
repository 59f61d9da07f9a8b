//! The admin API's audit and metrics routes: admin actions land in the audit log, filters and
//! pages, relayed entries as JSON, bad parameters (400 naming them), and authentication (401).

use duet_locator::admin::rfc3339_ms;
use duet_locator::tokens::now_ms;
use duet_proto::link::SequencedEntry;
use duet_proto::outbox::{AuditEntry, AuditEvent, MetricsEntry, OutboxEntry, UsageMetrics};
use duet_testkit::Cluster;
use serde_json::{json, Value};

use crate::support::Admin;

/// Every page of `path` (which has a query string) with `limit`; answers the entries in order.
async fn walk(admin: &Admin, path: &str, limit: u32) -> (Vec<Value>, usize) {
    let mut entries = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(c) => format!("{path}&limit={limit}&cursor={c}"),
            None => format!("{path}&limit={limit}"),
        };
        let page = admin.ok("GET", &page_path, None).await;
        pages += 1;
        let got = page["entries"].as_array().unwrap();
        assert!(got.len() <= limit as usize, "{page}");
        entries.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (entries, pages),
        }
    }
}

#[tokio::test]
async fn admin_actions_are_audited_and_queryable() {
    let cluster = Cluster::start().await;
    let admin = Admin::new(&cluster);
    let since = rfc3339_ms(now_ms());

    admin.ok("POST", "/edges/edge-0/suspend", None).await;
    admin.ok("POST", "/edges/edge-0/resume", None).await;
    admin.ok("PUT", "/edges/edge-0/region", Some(json!({ "region": "eu" }))).await;
    admin.ok("PUT", "/edges/edge-0/region", Some(json!({ "region": null }))).await;
    let rule = admin.add_rule("cidr", "10.0.0.0/8", "eu").await;
    admin.ok("DELETE", &format!("/regions/rules/{rule}"), None).await;
    admin.ok("PUT", "/regions/eu/fallback", Some(json!({ "fallback": ["us", "ap"] }))).await;
    // Refused requests change nothing and are not audited.
    assert_eq!(admin.call("POST", "/edges/no-such-edge/suspend", None).await.0, 404);

    // The suspend, as the log shows it.
    let page = admin.ok("GET", "/audit?kind=edge_suspended", None).await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{page}");
    let e = &entries[0];
    assert_eq!(
        (&e["edge_id"], &e["actor"], &e["kind"]),
        (&json!("edge-0"), &json!("token:root"), &json!("edge_suspended"))
    );
    assert_eq!((&e["outbox_id"], &e["edge_seq"]), (&Value::Null, &Value::Null), "made by the locator");
    assert_eq!(e["detail"], "admin state set to suspended");
    assert_eq!(page["next_cursor"], Value::Null);

    // Every admin action since the start, oldest first, the same in pages of 3 as in one page.
    let (all, pages) = walk(&admin, &format!("/audit?from={since}"), 1_000).await;
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "edge_suspended",
            "edge_resumed",
            "edge_region_set",
            "edge_region_set",
            "region_rule_added",
            "region_rule_deleted",
            "region_fallback_set"
        ],
        "{all:?}"
    );
    assert_eq!(pages, 1);
    assert_eq!(all[3]["detail"], "region override cleared");
    assert_eq!(all[5]["detail"], format!("rule {rule}: cidr 10.0.0.0/8 -> eu"));
    assert_eq!(all[6]["detail"], "region eu falls back to us, ap");
    let (paged, pages) = walk(&admin, &format!("/audit?from={since}"), 3).await;
    assert_eq!((paged, pages), (all.clone(), 3));
    let (edge_only, _) = walk(&admin, &format!("/audit?from={since}&edge=edge-0"), 10).await;
    assert_eq!(edge_only.len(), 4, "suspend, resume and two region changes name the edge");
    // `to` is exclusive: the entries before the first region change, unless they share its
    // millisecond.
    let to = all[2]["at"].as_str().unwrap();
    let before = walk(&admin, &format!("/audit?from={since}&to={to}"), 10).await.0;
    let expected: Vec<Value> = all[..2].iter().filter(|e| e["at"] != all[2]["at"]).cloned().collect();
    assert_eq!(before, expected);

    // The edges view shows the outbox and the link epoch.
    let edges = admin.ok("GET", "/edges", None).await;
    let edge = &edges["edges"][0];
    assert_eq!(edge["link_epoch"], 1, "{edge}");
    for field in ["depth", "oldest_age_ms", "last_seq", "dropped_audit", "dropped_metrics"] {
        assert!(edge["outbox"][field].is_u64(), "outbox.{field}: {edge}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn relayed_entries_as_json() {
    let cluster = Cluster::start().await;
    let admin = Admin::new(&cluster);
    let store = &cluster.locator.state.store;
    let outbox_id = u64::MAX - 3;
    let entries = [
        SequencedEntry {
            seq: 1,
            entry: OutboxEntry::Audit(AuditEntry {
                at_ms: 1_700_000_000_000,
                event: AuditEvent::ParticipantJoined,
                session_id: Some("s_audit".into()),
                participant_id: Some(2),
                user_id: Some("bo".into()),
                detail: "guest".into(),
            }),
        },
        SequencedEntry {
            seq: 2,
            entry: OutboxEntry::Metrics(MetricsEntry::Usage(UsageMetrics {
                at_ms: 1_700_000_000_500,
                interval_ms: 10_000,
                connections: 4,
                sessions: 2,
                messages_relayed: 77,
                bytes_relayed: 7_700,
            })),
        },
    ];
    assert_eq!(store.store_outbox("edge-x", outbox_id, &entries, now_ms()).await.unwrap(), 2);

    let page = admin.ok("GET", "/audit?edge=edge-x&session=s_audit", None).await;
    let e = &page["entries"][0];
    assert_eq!(e["at"], "2023-11-14T22:13:20Z");
    assert_eq!((&e["outbox_id"], &e["edge_seq"]), (&json!(outbox_id.to_string()), &json!(1)), "ids are strings");
    assert_eq!((&e["participant_id"], &e["user_id"], &e["actor"]), (&json!(2), &json!("bo"), &Value::Null));

    let page = admin.ok("GET", "/metrics?edge=edge-x&kind=usage&from=2023-11-14T22:13:20.500Z", None).await;
    let m = &page["entries"][0];
    assert_eq!((&m["kind"], &m["at"], &m["edge_seq"]), (&json!("usage"), &json!("2023-11-14T22:13:20.5Z"), &json!(2)));
    assert_eq!((&m["interval_ms"], &m["connections"], &m["sessions"]), (&json!(10_000), &json!(4), &json!(2)));
    assert_eq!(
        (&m["messages_relayed"], &m["bytes_relayed"], &m["session_id"]),
        (&json!(77), &json!(7_700), &Value::Null)
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let page = admin.ok("GET", "/metrics?edge=edge-x&to=2023-11-14T22:13:20.500Z", None).await;
    assert!(page["entries"].as_array().unwrap().is_empty(), "{page}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_and_missing_tokens_are_refused() {
    let cluster = Cluster::start().await;
    let admin = Admin::new(&cluster);
    for route in ["/audit", "/metrics"] {
        for (query, named) in [
            ("from=yesterday", "`from`"),
            ("to=1700000000000", "`to`"),
            ("from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "`from`"),
            ("limit=0", "`limit`"),
            ("limit=1001", "`limit`"),
            ("limit=-1", "`limit`"),
            ("cursor=not-a-cursor", "`cursor`"),
            ("session=", "`session`"),
            ("colour=red", "colour"),
        ] {
            let (status, body) = admin.call("GET", &format!("{route}?{query}"), None).await;
            assert_eq!(status, 400, "{route}?{query}: {body}");
            assert_eq!(body["error"]["code"], "bad_request");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(named), "{route}?{query}: {message}");
        }
        let url = format!("{}/api/v1/admin{route}", cluster.url());
        let res = reqwest::Client::new().get(&url).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401, "{route} without a token");
        let (status, body) = Admin::at(&cluster.url(), "not-the-admin-token-at-all").call("GET", route, None).await;
        assert_eq!((status, &body["error"]["code"]), (401, &json!("unauthorized")), "{route} with a wrong token");
    }
    cluster.shutdown().await;
}
