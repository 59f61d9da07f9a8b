//! The admin API's principals and lifecycle against a real locator and edges: scoped tokens on
//! every route, the audit log naming the admin, drain with a deadline, the session list and
//! usage series, the dashboard's login, cookie and CSRF rules, and the OpenAPI document.

use std::collections::BTreeSet;
use std::time::Duration;

use duet_testkit::{wait_until, Cluster, ClusterOptions, TEST_ADMIN_TOKEN};
use serde_json::{json, Value};

use crate::support::{closed, guest, host, Admin};

const WAIT: Duration = Duration::from_secs(15);

/// A route's path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{edge_id}", "edge-0")
        .replace("{rule_id}", "1")
        .replace("{region}", "eu")
        .replace("{session_id}", "s_x")
        .replace("{token_id}", "nope")
}

/// Creates a token with the root token; answers `(id, token)`.
async fn create_token(admin: &Admin, name: &str, scope: &str, expires_in: Option<u64>) -> (String, String) {
    let body = json!({ "name": name, "scope": scope, "expires_in_seconds": expires_in });
    let made = admin.ok("POST", "/tokens", Some(body)).await;
    (made["id"].as_str().unwrap().to_owned(), made["token"].as_str().unwrap().to_owned())
}

async fn status(cluster: &Cluster, method: &str, path: &str, auth: Option<&str>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(m, format!("{}/api/v1/admin{path}", cluster.url())).json(&json!({}));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = req.send().await.unwrap();
    let code = res.status().as_u16();
    (code, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_admin_route_refuses_missing_wrong_revoked_expired_and_read_only_tokens() {
    let cluster = Cluster::start().await;
    let root = Admin::new(&cluster);
    let (_, read) = create_token(&root, "reader", "read", None).await;
    let (revoked_id, revoked) = create_token(&root, "gone", "admin", None).await;
    root.ok("DELETE", &format!("/tokens/{revoked_id}"), None).await;
    let (_, expiring) = create_token(&root, "brief", "admin", Some(1)).await;
    let expiring_auth = format!("Bearer {expiring}");
    wait_until("the short-lived token expires", WAIT, || {
        let cluster = &cluster;
        let auth = expiring_auth.clone();
        async move { status(cluster, "GET", "/edges", Some(&auth)).await.0 == 401 }
    })
    .await;
    // The read token with its last character changed (to one it does not already have).
    let last = if read.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("Bearer {}{last}", &read[..read.len() - 1]);
    let refusals = [
        None,
        Some("Bearer wrong-token-wrong-token".to_owned()),
        Some("Basic dGVzdDp0ZXN0".to_owned()),
        Some("Bearer ".to_owned()),
        Some(forged),
        Some(format!("Bearer {revoked}")),
        Some(expiring_auth.clone()),
    ];
    assert!(duet_locator::admin::ROUTES.len() >= 20);
    for (method, path) in duet_locator::admin::ROUTES {
        let path = concrete(path);
        for auth in &refusals {
            let (code, body) = status(&cluster, method, &path, auth.as_deref()).await;
            assert_eq!((code, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{method} {path} {auth:?}");
        }
        let (code, body) = status(&cluster, method, &path, Some(&format!("Bearer {read}"))).await;
        if *method == "GET" && !path.starts_with("/tokens") {
            assert!(code != 401 && code != 403, "{method} {path} with a read token: {code} {body}");
        } else {
            assert_eq!((code, body["error"]["code"].as_str()), (403, Some("forbidden")), "{method} {path}: {body}");
        }
    }
    // Nothing changed, and the refusals wrote nothing to the audit log.
    let edges = root.ok("GET", "/edges", None).await;
    assert_eq!(edges["edges"][0]["admin_state"], "active");
    let audit = root.ok("GET", "/audit?kind=edge_suspended", None).await;
    assert_eq!(audit["entries"], json!([]));
    cluster.shutdown().await;
}

#[tokio::test]
async fn named_tokens_are_audited_by_name_and_revoked_at_once() {
    let cluster = Cluster::start().await;
    let root = Admin::new(&cluster);
    let (id, token) = create_token(&root, "ops", "admin", Some(3600)).await;
    assert!(token.starts_with("duet_") && token.contains(&id), "{token}");
    let (code, body) = root.call("POST", "/tokens", Some(json!({ "name": "ops", "scope": "read" }))).await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    for bad in [json!({ "name": "x", "scope": "owner" }), json!({ "name": "a b", "scope": "read" })] {
        let (code, body) = root.call("POST", "/tokens", Some(bad.clone())).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let ops = Admin::at(&cluster.url(), &token);
    ops.ok("POST", "/edges/edge-0/suspend", None).await;
    let audit = root.ok("GET", "/audit?kind=edge_suspended", None).await;
    assert_eq!(audit["entries"][0]["actor"], "token:ops");
    let by_actor = root.ok("GET", "/audit?actor=token:root", None).await;
    let kinds: BTreeSet<&str> =
        by_actor["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains("token_created") && !kinds.contains("edge_suspended"), "{kinds:?}");
    let newest = root.ok("GET", "/audit?order=desc&limit=1", None).await;
    assert_eq!(newest["entries"][0]["kind"], "edge_suspended", "the latest entry first: {newest}");
    let (code, _) = root.call("GET", "/audit?order=sideways", None).await;
    assert_eq!(code, 400);
    let listed = root.ok("GET", "/tokens", None).await;
    let ops_row = &listed["tokens"][0];
    assert_eq!((ops_row["name"].as_str(), ops_row["scope"].as_str()), (Some("ops"), Some("admin")));
    assert!(ops_row["last_used_at"].is_string() && ops_row.get("token").is_none(), "{ops_row}");
    root.ok("DELETE", &format!("/tokens/{id}"), None).await;
    let (code, body) = ops.call("GET", "/edges", None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_drained_edge_ends_its_sessions_at_the_deadline_with_4400() {
    let mut cluster = Cluster::start().await;
    cluster.add_edge(|_| {}).await;
    let admin = Admin::new(&cluster);
    let (placed, mut h) = host(&cluster, "Ada").await;
    let (_, mut g) = guest(&cluster, &placed.session_id, "Bo").await;
    let edge = placed.edge.id.clone();
    let other = if edge == "edge-0" { "edge-1" } else { "edge-0" };
    let (code, body) =
        admin.call("POST", &format!("/edges/{edge}/drain"), Some(json!({ "deadline_seconds": 0 }))).await;
    assert_eq!(code, 400, "{body}");
    let view = admin.ok("POST", &format!("/edges/{edge}/drain"), Some(json!({ "deadline_seconds": 1 }))).await;
    assert_eq!(view["admin_state"], "draining");
    assert!(view["drain_deadline"].is_string(), "{view}");
    // A new session goes to the other edge while this one drains.
    let (next, _next_host) = host(&cluster, "Cy").await;
    assert_eq!(next.edge.id, other);
    assert_eq!(closed(&mut h).await, Some(4400));
    assert_eq!(closed(&mut g).await, Some(4400));
    wait_until("the drain is audited", WAIT, || {
        let admin = admin.clone();
        async move { admin.ok("GET", "/audit?kind=edge_drained", None).await["entries"].as_array().unwrap().len() == 1 }
    })
    .await;
    let started = admin.ok("GET", "/audit?kind=edge_draining", None).await;
    assert_eq!(started["entries"][0]["actor"], "token:root");
    let edges = admin.ok("GET", "/edges", None).await;
    let drained = edges["edges"].as_array().unwrap().iter().find(|e| e["id"] == edge.as_str()).unwrap().clone();
    assert_eq!(drained["admin_state"], "draining");
    assert!(drained["drain_deadline"].is_string() && drained["drained_at"].is_string(), "{drained}");
    assert_eq!(drained["available"], false, "a drained edge takes no new session, even as a last resort");
    cluster.stop_edge(if other == "edge-0" { 0 } else { 1 });
    wait_until("the other edge is gone", WAIT, || {
        let admin = admin.clone();
        let other = other.to_owned();
        async move {
            let edges = admin.ok("GET", "/edges", None).await;
            edges["edges"].as_array().unwrap().iter().any(|e| e["id"] == other.as_str() && e["available"] == false)
        }
    })
    .await;
    let (code, _) = admin.call("POST", "/placement/dry-run", Some(json!({}))).await;
    assert_eq!(code, 200);
    let refused = cluster.client().create_session(&Default::default()).await.unwrap_err();
    assert!(matches!(refused, duet_client::ClientError::Api { status: 503, .. }), "{refused:?}");
    wait_until("the session is recorded as drained", WAIT, || {
        let admin = admin.clone();
        let id = placed.session_id.clone();
        async move { admin.ok("GET", &format!("/sessions/{id}"), None).await["session"]["end_reason"] == "drained" }
    })
    .await;
    admin.ok("POST", &format!("/edges/{edge}/resume"), None).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn sessions_are_listed_newest_first_with_their_participants_and_usage_is_a_series() {
    let cluster = Cluster::start().await;
    let admin = Admin::new(&cluster);
    let (first, _h1) = host(&cluster, "Ada").await;
    let (_, _g1) = guest(&cluster, &first.session_id, "Bo").await;
    let (second, _h2) = host(&cluster, "Cy").await;
    let list = admin.ok("GET", "/sessions?state=live&limit=1", None).await;
    assert_eq!(list["sessions"][0]["id"], second.session_id.as_str());
    let cursor = list["next_cursor"].as_str().unwrap().to_owned();
    let rest = admin.ok("GET", &format!("/sessions?state=live&cursor={cursor}"), None).await;
    assert_eq!(rest["sessions"][0]["id"], first.session_id.as_str());
    let detail = admin.ok("GET", &format!("/sessions/{}", first.session_id), None).await;
    let roles: Vec<&str> =
        detail["participants"].as_array().unwrap().iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["host", "guest"]);
    for bad in ["/sessions?state=open", "/sessions?cursor=x", "/sessions?limit=0", "/usage?step_seconds=1"] {
        let (code, body) = admin.call("GET", bad, None).await;
        assert_eq!((code, body["error"]["code"].as_str()), (400, Some("bad_request")), "{bad}: {body}");
    }
    let (code, _) = admin.call("GET", "/sessions/s_nope", None).await;
    assert_eq!(code, 404);
    let usage = admin.ok("GET", "/usage", None).await;
    let points = usage["points"].as_array().unwrap();
    assert_eq!((usage["step_seconds"].as_i64(), points.len()), (Some(60), 60));
    assert_eq!(points.last().unwrap()["users_online"], 3, "ada, bo and cy hold places now: {usage}");
    cluster.shutdown().await;
}

/// A dashboard login through the same calls the page makes.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    fn new(cluster: &Cluster) -> Browser {
        Browser { http: reqwest::Client::new(), base: cluster.url() }
    }

    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }
}

#[tokio::test]
async fn dashboard_logins_use_an_httponly_cookie_and_refuse_cross_site_changes() {
    let hash = duet_locator::dashboard::hash_password("correct horse battery").unwrap();
    let options = ClusterOptions {
        tweak_locator: Some(Box::new(move |c| c.dashboard_login = Some(("ada".into(), hash)))),
        ..Default::default()
    };
    let mut cluster = Cluster::start_with(options).await;
    cluster.add_edge(|_| {}).await;
    let b = Browser::new(&cluster);
    let page = reqwest::get(format!("{}/dashboard", cluster.url())).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let options: Value =
        reqwest::get(format!("{}/dashboard/api/login-options", cluster.url())).await.unwrap().json().await.unwrap();
    assert_eq!(options["password"], true);

    let wrong = b.post("/dashboard/api/login", json!({ "username": "ada", "password": "nope" }), &[]).await;
    assert_eq!(wrong.status().as_u16(), 401);
    let evil = [("origin", "http://evil.example")];
    let cross = b.post("/dashboard/api/login", json!({ "token": TEST_ADMIN_TOKEN }), &evil).await;
    assert_eq!(cross.status().as_u16(), 403);
    let ok =
        b.post("/dashboard/api/login", json!({ "username": "ada", "password": "correct horse battery" }), &[]).await;
    assert_eq!(ok.status().as_u16(), 200);
    let set_cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let login: Value = ok.json().await.unwrap();
    assert_eq!((login["principal"].as_str(), login["scope"].as_str()), (Some("user:ada"), Some("admin")));
    let csrf = login["csrf"].as_str().unwrap().to_owned();

    let suspend = "/api/v1/admin/edges/edge-0/suspend";
    let no_csrf = b.post(suspend, json!({}), &[("cookie", &cookie)]).await;
    assert_eq!(no_csrf.status().as_u16(), 403, "a change without the CSRF token");
    let bad_origin = b.post(suspend, json!({}), &[("cookie", &cookie), ("x-csrf-token", &csrf), evil[0]]).await;
    assert_eq!(bad_origin.status().as_u16(), 403, "a change from another site");
    let done = b.post(suspend, json!({}), &[("cookie", &cookie), ("x-csrf-token", &csrf)]).await;
    assert_eq!(done.status().as_u16(), 200);
    let audit = Admin::new(&cluster).ok("GET", "/audit?kind=edge_suspended", None).await;
    assert_eq!(audit["entries"][0]["actor"], "user:ada");
    let read = b.http.get(format!("{}/api/v1/admin/edges", b.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(read.status().as_u16(), 200, "reads need no CSRF token");

    let logout = b.post("/dashboard/api/logout", json!({}), &[("cookie", &cookie), ("x-csrf-token", &csrf)]).await;
    assert_eq!(logout.status().as_u16(), 204);
    let after = b.http.get(format!("{}/dashboard/api/session", b.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status().as_u16(), 401, "the cookie is dead after logout");

    // A login made with a named token ends when the token is revoked, and never outlives it.
    let root = Admin::new(&cluster);
    let (id, token) = create_token(&root, "brief", "admin", Some(600)).await;
    let login = b.post("/dashboard/api/login", json!({ "token": token }), &[]).await;
    assert_eq!(login.status().as_u16(), 200);
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let max_age: u64 = set_cookie.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!(max_age <= 600, "the login ends with its token: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let session = |cookie: String| {
        let b = &b;
        async move { b.http.get(format!("{}/dashboard/api/session", b.base)).header("cookie", cookie).send().await.unwrap() }
    };
    assert_eq!(session(cookie.clone()).await.status().as_u16(), 200);
    root.ok("DELETE", &format!("/tokens/{id}"), None).await;
    assert_eq!(session(cookie.clone()).await.status().as_u16(), 401, "revoking the token ends its logins");

    // Guessing is slowed per address: a burst of wrong logins meets 429.
    let mut limited = false;
    for _ in 0..10 {
        let wrong = b.post("/dashboard/api/login", json!({ "token": "guess-guess-guess-guess" }), &[]).await;
        match wrong.status().as_u16() {
            401 => continue,
            429 => {
                limited = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(limited, "ten quick wrong logins from one address are limited");
    cluster.shutdown().await;
}

/// Every route the routers have is in docs/openapi.json (served at /api/v1/openapi.json), and
/// the document has no route the routers lack.
#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let cluster = Cluster::start().await;
    let served: Value =
        reqwest::get(format!("{}/api/v1/openapi.json", cluster.url())).await.unwrap().json().await.unwrap();
    let in_doc: BTreeSet<(String, String)> = served["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            let path = path.clone();
            ops.as_object()
                .expect("operations")
                .keys()
                .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "delete" | "patch"))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let admin = duet_locator::admin::ROUTES.iter().map(|(m, p)| (m.to_string(), format!("/api/v1/admin{p}")));
    let public = duet_locator::api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string()));
    let dashboard = duet_locator::dashboard::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string()));
    let in_router: BTreeSet<(String, String)> = admin.chain(public).chain(dashboard).collect();
    let missing: Vec<_> = in_router.difference(&in_doc).collect();
    let extra: Vec<_> = in_doc.difference(&in_router).collect();
    assert!(missing.is_empty(), "routes missing from docs/openapi.json: {missing:?}");
    assert!(extra.is_empty(), "docs/openapi.json lists routes no router has: {extra:?}");
    cluster.shutdown().await;
}

/// Admin states (with a drain's deadline), named tokens and dashboard logins are in the database:
/// a restarted locator (or another replica) knows them. On every database.
async fn admin_state_outlives_the_locator(dialect: duet_locator::db::Dialect) {
    let Some(db) = duet_testkit::TestDb::fresh(dialect).await else { return };
    let options = || ClusterOptions { database_url: Some(db.url.clone()), ..Default::default() };
    let mut cluster = Cluster::start_with(options()).await;
    cluster.add_edge(|_| {}).await;
    cluster.add_edge(|_| {}).await;
    let root = Admin::new(&cluster);
    root.ok("POST", "/edges/edge-0/suspend", None).await;
    let drained = root.ok("POST", "/edges/edge-1/drain", Some(json!({ "deadline_seconds": 3600 }))).await;
    let (_, token) = create_token(&root, "ops", "read", None).await;
    let login = reqwest::Client::new()
        .post(format!("{}/dashboard/api/login", cluster.url()))
        .json(&json!({ "token": TEST_ADMIN_TOKEN }))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    cluster.shutdown().await;

    let restarted = Cluster::start_with(options()).await;
    let edges = Admin::at(&restarted.url(), &token).ok("GET", "/edges", None).await;
    let state = |id: &str| edges["edges"].as_array().unwrap().iter().find(|e| e["id"] == id).unwrap().clone();
    assert_eq!(state("edge-0")["admin_state"], "suspended");
    assert_eq!(
        (&state("edge-1")["admin_state"], &state("edge-1")["drain_deadline"]),
        (&json!("draining"), &drained["drain_deadline"])
    );
    let session = reqwest::Client::new()
        .get(format!("{}/dashboard/api/session", restarted.url()))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status().as_u16(), 200, "the dashboard login outlives the locator");
    restarted.shutdown().await;
    db.drop_db().await;
}

#[tokio::test]
async fn admin_state_outlives_the_locator_sqlite() {
    admin_state_outlives_the_locator(duet_locator::db::Dialect::Sqlite).await
}

#[tokio::test]
async fn admin_state_outlives_the_locator_postgres() {
    admin_state_outlives_the_locator(duet_locator::db::Dialect::Postgres).await
}

#[tokio::test]
async fn admin_state_outlives_the_locator_mysql() {
    admin_state_outlives_the_locator(duet_locator::db::Dialect::Mysql).await
}
