//! What deployments rely on: `/metrics` on both binaries, the edge's drain on SIGTERM (real
//! processes), the locator's graceful stop, and TLS served in process with certificate reload.

use std::time::Duration;

use duet_proto::codec;
use duet_proto::link::{LocatorMessage, LINK_PATH, LINK_PROTOCOL_VERSION};
use duet_proto::session::{EdgeFrame, EVERYONE};
use duet_testkit::tls::TestCa;
use duet_testkit::{wait_until, Cluster, ClusterOptions, TEST_ADMIN_TOKEN, TEST_SECRET};
use duet_ws::{Limits, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::*;

/// The value of the series `series` (a metric name, with its labels when it has any).
fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The payload of the next message, skipping other frames.
async fn next_message(s: &mut duet_client::Session) -> bytes::Bytes {
    loop {
        if let EdgeFrame::Message { payload, .. } = next_frame(s).await {
            return payload;
        }
    }
}

async fn get(url: &str) -> (u16, String) {
    let res = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pages_show_traffic_placements_outbox_and_links() {
    let cluster = Cluster::start().await;
    let (placed, host) = host(&cluster, "Ada").await;
    let (_, mut guest) = guest(&cluster, &placed.session_id, "Bo").await;
    host.send(EVERYONE, 1, &b"counted"[..]).unwrap();
    assert_eq!(&next_message(&mut guest).await[..], b"counted");
    // A refused placement (a malformed body) is counted apart from the placed ones.
    let bad = reqwest::Client::new().post(format!("{}/api/v1/sessions", cluster.url())).body("[").send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let (status, page) = get(&format!("{}/metrics", cluster.url())).await;
    assert_eq!(status, 200);
    assert!(page.contains("# TYPE duet_locator_placement_duration_seconds histogram"), "{page}");
    assert_eq!(metric(&page, "duet_locator_placement_duration_seconds_count{result=\"placed\"}"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "duet_locator_placement_duration_seconds_count{result=\"refused\"}"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "duet_locator_links"), Some(1.0));
    assert_eq!(metric(&page, "duet_locator_edges{health=\"up\"}"), Some(1.0));
    assert_eq!(metric(&page, "duet_locator_ready"), Some(1.0));
    assert!(metric(&page, "duet_locator_db_pool_max").unwrap() >= 1.0);
    assert!(metric(&page, "duet_locator_db_pool_connections{state=\"idle\"}").is_some());
    assert!(metric(&page, "duet_locator_edge_outbox_depth{edge_id=\"edge-0\"}").is_some(), "{page}");

    let edge_url = format!("http://{}/metrics", cluster.edges[0].local_addr);
    let (status, page) = get(&edge_url).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&page, "duet_edge_sessions"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "duet_edge_connections"), Some(2.0));
    assert!(metric(&page, "duet_edge_messages_relayed_total").unwrap() >= 1.0);
    assert!(metric(&page, "duet_edge_bytes_relayed_total").unwrap() >= 7.0);
    assert_eq!(metric(&page, "duet_edge_link_up"), Some(1.0));
    assert_eq!(metric(&page, "duet_edge_link_connects_total"), Some(1.0));
    assert_eq!(metric(&page, "duet_edge_draining"), Some(0.0));
    assert_eq!(metric(&page, "duet_edge_ready"), Some(1.0));
    assert!(metric(&page, "duet_edge_outbox_depth").is_some());
    assert!(metric(&page, "duet_edge_outbox_oldest_age_seconds").is_some());
    assert_eq!(metric(&page, "duet_edge_outbox_dropped_total{kind=\"audit\"}"), Some(0.0));
    assert!(page.contains("duet_edge_info{edge_id=\"edge-0\",region=\"default\""), "{page}");
    drop((host, guest));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listener_of_their_own() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        tweak_locator: Some(Box::new(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()))),
        ..Default::default()
    })
    .await;
    cluster.add_edge(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let locator_metrics = cluster.locator.metrics_addr.expect("locator metrics listener");
    let edge_metrics = cluster.edges[0].metrics_addr.expect("edge metrics listener");
    assert_eq!(get(&format!("{}/metrics", cluster.url())).await.0, 404);
    assert_eq!(get(&format!("http://{}/metrics", cluster.edges[0].local_addr)).await.0, 404);
    let (status, page) = get(&format!("http://{locator_metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&page, "duet_locator_links"), Some(1.0), "{page}");
    let (status, page) = get(&format!("http://{edge_metrics}/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&page, "duet_edge_link_up"), Some(1.0), "{page}");
    cluster.shutdown().await;
}

/// A real process whose stdout is read line by line.
struct Proc {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let (child, lines) = crate::cli::spawn(cmd);
        Proc { child, lines }
    }

    /// The first word after `marker` in the first line that has it.
    async fn word_after(&mut self, marker: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                if let Some((_, rest)) = line.split_once(marker) {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await;
        found.ok().flatten().unwrap_or_else(|| panic!("no line with {marker:?}"))
    }

    fn signal_term(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id().expect("running") as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }

    /// SIGTERM, then exit status 0 within 30 s.
    async fn stop(&mut self, what: &str) {
        self.signal_term();
        self.exits_ok(Duration::from_secs(30), what).await;
    }

    async fn exits_ok(&mut self, within: Duration, what: &str) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{what} did not exit within {within:?}"))
            .unwrap();
        assert!(status.success(), "{what} exited with {status}");
    }
}

/// A locator process without an embedded edge; answers it and its URL.
async fn locator_process(dir: &std::path::Path) -> (Proc, String) {
    let mut locator = Proc::spawn(
        duet_testkit::command("duet-locator")
            .env("DUET_LISTEN", "127.0.0.1:0")
            .env("DUET_DATA_DIR", dir.join("locator"))
            .env("DUET_EMBEDDED_EDGE", "false")
            .env("DUET_ENROLLMENT_SECRET", TEST_SECRET)
            .env("DUET_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
            .env("DUET_PUBLIC_RATE_LIMIT", "0"),
    );
    let url = locator.word_after("duet locator: ").await;
    (locator, url)
}

/// An edge process linked to `locator_url`; answers it and its base URL (`ws://...`). It runs
/// on one thread, the single-threaded scheduler a pod limited to one CPU gets.
async fn edge_process(dir: &std::path::Path, locator_url: &str, id: &str, drain_timeout: &str) -> (Proc, String) {
    let mut edge = Proc::spawn(
        duet_testkit::command("duet-edge")
            .env("DUET_WORKER_THREADS", "1")
            .env("DUET_LISTEN", "127.0.0.1:0")
            .env("DUET_LOCATOR_URL", locator_url)
            .env("DUET_ENROLLMENT_SECRET", TEST_SECRET)
            .env("DUET_EDGE_ID", id)
            .env("DUET_DATA_DIR", dir.join(id))
            .env("DUET_DRAIN_TIMEOUT", drain_timeout),
    );
    let url = edge.word_after("serving sessions at ").await;
    let ready = format!("{}/readyz", url.replacen("ws://", "http://", 1));
    wait_until("the edge is ready", Duration::from_secs(20), || {
        let ready = ready.clone();
        async move { reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    (edge, url)
}

/// A locator process, an edge process and a session on it whose host is connected.
async fn one_hosted_session(
    dir: &std::path::Path,
    edge_id: &str,
    drain_timeout: &str,
) -> (Proc, Proc, String, duet_client::Session) {
    duet_testkit::init_tracing();
    let (locator, url) = locator_process(dir).await;
    let (edge, edge_url) = edge_process(dir, &url, edge_id, drain_timeout).await;
    let placed = duet_client::LocatorClient::new(&url).create_session(&user("Ada")).await.unwrap();
    let host = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    (locator, edge, edge_url, host)
}

async fn edge_json(admin: &Admin, id: &str) -> serde_json::Value {
    let edges = admin.ok("GET", "/edges", None).await;
    edges["edges"].as_array().unwrap().iter().find(|e| e["id"] == id).cloned().expect("edge listed")
}

/// SIGTERM (through `duet-edge drain`, as a preStop hook sends it): readiness turns off, the
/// locator stops placing sessions there, the running session goes on, and once its
/// participants leave the edge delivers its last audit entries and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_an_edge_and_it_exits_when_its_sessions_end() {
    duet_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (mut locator, url) = locator_process(dir.path()).await;
    let (mut edge, edge_url) = edge_process(dir.path(), &url, "edge-a", "60s").await;
    let http_base = edge_url.replacen("ws://", "http://", 1);
    let client = duet_client::LocatorClient::new(&url);
    let placed = client.create_session(&user("Ada")).await.unwrap();
    let host = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    let joined = client.join_session(&placed.session_id, &user("Bo")).await.unwrap();
    let mut guest = duet_client::connect(&joined.edge.url, &joined.token).await.unwrap();

    let pid = edge.child.id().unwrap().to_string();
    let mut drain = Proc::spawn(duet_testkit::command("duet-edge").args(["drain", "--pid", &pid, "--timeout", "50s"]));

    let readyz = format!("{http_base}/readyz");
    wait_until("readiness off", Duration::from_secs(10), || {
        let readyz = readyz.clone();
        async move { get(&readyz).await == (503, "draining: running sessions continue, new ones go elsewhere\n".into()) }
    })
    .await;
    assert_eq!(get(&format!("{http_base}/livez")).await.0, 200, "alive while draining");
    let admin = Admin::at(&url, TEST_ADMIN_TOKEN);
    wait_until("the locator knows the edge is stopping", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move { !edge_json(&admin, "edge-a").await["stopping_since"].is_null() }
    })
    .await;
    let refused = reqwest::Client::new().post(format!("{url}/api/v1/sessions")).json(&user("Cy")).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 503, "no other edge: nothing to place on");
    let (_, dry) = admin.call("POST", "/placement/dry-run", Some(serde_json::json!({"client_ip": "127.0.0.1"}))).await;
    assert_eq!(dry["candidates"][0]["filtered"], "stopping", "{dry}");

    // The running session is untouched.
    host.send(EVERYONE, 1, &b"still here"[..]).unwrap();
    assert_eq!(&next_message(&mut guest).await[..], b"still here");
    // The host ends the session: the edge stops long before its 60 s drain timeout.
    host.sender().end_session().unwrap();
    assert_eq!(closed(&mut guest).await, Some(4203));
    edge.exits_ok(Duration::from_secs(30), "the drained edge").await;
    drain.exits_ok(Duration::from_secs(10), "duet-edge drain").await;
    // What it wrote while draining reached the locator, and so did what it wrote as it stopped:
    // its first usage entry (the interval is a minute) is written at shutdown, so only the
    // link's flush before exit can have delivered it.
    let audit = admin.ok("GET", "/audit?kind=edge_stopping&edge=edge-a", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit}");
    let usage = admin.ok("GET", "/metrics?kind=usage&edge=edge-a", None).await;
    let usage = usage["entries"].as_array().unwrap();
    assert_eq!(usage.len(), 1, "{usage:?}");
    assert!(usage[0]["messages_relayed"].as_u64().unwrap() >= 1, "{usage:?}");
    let ended = admin.ok("GET", &format!("/sessions/{}", placed.session_id), None).await;
    assert_eq!(ended["session"]["end_reason"], "ended_by_host", "{ended}");

    // Restarted with the same id, it registers again and takes sessions.
    let (mut edge, _) = edge_process(dir.path(), &url, "edge-a", "60s").await;
    assert!(edge_json(&admin, "edge-a").await["stopping_since"].is_null());
    client.create_session(&user("Cy")).await.expect("placed on the restarted edge");
    edge.stop("the restarted edge").await;
    locator.stop("the locator").await;
}

/// When the drain timeout passes, the remaining participants are closed with 4400 (ask the
/// locator again) and the edge exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_closes_remaining_participants_with_4400() {
    let dir = tempfile::tempdir().unwrap();
    let (mut locator, mut edge, _, mut host) = one_hosted_session(dir.path(), "edge-b", "1s").await;
    edge.signal_term();
    assert_eq!(closed(&mut host).await, Some(4400));
    edge.exits_ok(Duration::from_secs(30), "the edge").await;
    locator.stop("the locator").await;
}

/// A second SIGTERM cuts the drain short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_the_edge_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut locator, mut edge, edge_url, mut host) = one_hosted_session(dir.path(), "edge-c", "1h").await;
    edge.signal_term();
    let readyz = format!("{}/readyz", edge_url.replacen("ws://", "http://", 1));
    wait_until("draining", Duration::from_secs(10), || {
        let readyz = readyz.clone();
        async move { get(&readyz).await.0 == 503 }
    })
    .await;
    edge.signal_term();
    assert_eq!(closed(&mut host).await, Some(4400));
    edge.exits_ok(Duration::from_secs(30), "the edge").await;
    locator.stop("the locator").await;
}

/// A placement in flight when a locator replica gets SIGTERM is committed and answered: the
/// replica stops its placement recorder only after its last request. (The edge is linked to
/// another replica on the same database, so it stays available throughout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_in_flight_at_sigterm_is_committed() {
    duet_testkit::init_tracing();
    let cluster = Cluster::start().await;
    let db = cluster.dir.path().join("locator").join("locator.db");
    let dir = tempfile::tempdir().unwrap();
    let mut replica = Proc::spawn(
        duet_testkit::command("duet-locator")
            .env("DUET_LISTEN", "127.0.0.1:0")
            .env("DUET_DATA_DIR", dir.path())
            .env("DUET_DATABASE_URL", format!("sqlite://{}?mode=rwc", db.display()))
            .env("DUET_EMBEDDED_EDGE", "false")
            .env("DUET_ENROLLMENT_SECRET", TEST_SECRET)
            .env("DUET_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
            .env("DUET_PUBLIC_RATE_LIMIT", "0"),
    );
    let url = replica.word_after("duet locator: ").await;
    let addr = url.trim_start_matches("http://").to_owned();
    duet_client::LocatorClient::new(&url).create_session(&user("Ada")).await.expect("the replica places on edge-0");

    let body = br#"{"user":{"id":"bo","name":"Bo"}}"#;
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(STEP, conn.read(&mut buf)).await.expect("100 continue in time").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"), "{:?}", &buf[..n]);

    replica.signal_term();
    wait_until("the replica refuses new connections", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.is_err() }
    })
    .await;
    conn.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, conn.read_to_end(&mut answer)).await.expect("answer in time").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let json = &answer[answer.find('{').expect("a JSON body")..];
    let placed: serde_json::Value = serde_json::from_str(json.trim_end()).expect("placement JSON");
    let id = placed["session_id"].as_str().expect("a session id");
    replica.exits_ok(Duration::from_secs(30), "the replica").await;
    // The other replica reads the committed session.
    let session = Admin::new(&cluster).ok("GET", &format!("/sessions/{id}"), None).await;
    assert_eq!(session["session"]["edge_id"], "edge-0", "{session}");
    cluster.shutdown().await;
}

/// SIGTERM on the locator: no new connections, the request in flight is answered, and edge
/// links are closed with 1001 going away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_locator_finishes_requests_in_flight_and_closes_links_with_going_away() {
    duet_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (mut locator, url) = locator_process(dir.path()).await;
    let addr = url.trim_start_matches("http://").to_owned();

    // An edge's link (spoken here directly, to see its close code).
    let auth = format!("Bearer {TEST_SECRET}");
    let limits = Limits { max_message_bytes: 1 << 20, max_queued_bytes: 1 << 20 };
    let mut link = duet_ws::connect(&format!("{url}{LINK_PATH}"), &[("authorization", &auth)], limits).await.unwrap();
    link.writer().send(crate::link::hello("edge-l", LINK_PROTOCOL_VERSION).into()).unwrap();
    match link.next().await.unwrap() {
        Message::Binary(b) => assert!(matches!(codec::decode_locator(&b).unwrap(), LocatorMessage::Welcome(_))),
        other => panic!("{other:?}"),
    }

    // A request in flight: its headers are read and its handler waits for the body (hyper
    // answers `100 Continue` when the handler starts reading it).
    let body = br#"{"name":"in-flight","scope":"read"}"#;
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/admin/tokens HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TEST_ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(STEP, conn.read(&mut buf)).await.expect("100 continue in time").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"), "{:?}", &buf[..n]);

    locator.signal_term();
    loop {
        match tokio::time::timeout(STEP, link.next()).await.expect("link closed in time") {
            Ok(Message::Close { code, reason }) => {
                assert_eq!(code, Some(1001), "{reason}");
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("link ended without a close frame: {e}"),
        }
    }
    wait_until("new connections refused", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move { tokio::net::TcpStream::connect(&addr).await.is_err() }
    })
    .await;
    conn.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, conn.read_to_end(&mut answer)).await.expect("answer in time").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("in-flight"), "{answer}");
    locator.exits_ok(Duration::from_secs(30), "the locator").await;
}

/// The end-entity certificate a TLS server at `addr` presents now.
async fn presented_cert(addr: std::net::SocketAddr, ca: &TestCa) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.client_config()).connect(name, tcp).await.expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
}

/// Both binaries serve TLS themselves from PEM files; the edge's link verifies the locator's
/// certificate against the configured CA, and a renewed certificate is served without restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_in_process_with_a_private_ca_and_certificate_reload() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let files = duet_ws::tls::TlsFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    let first = ca.write_server_pem(&files.cert, &files.key);
    let locator_files = files.clone();
    let mut cluster = Cluster::start_with(ClusterOptions {
        tweak_locator: Some(Box::new(move |c| c.tls = Some(locator_files))),
        ..Default::default()
    })
    .await;
    assert!(cluster.url().starts_with("https://"), "{}", cluster.url());
    let edge_files = files.clone();
    let ca_pem = ca.ca_pem_path.clone();
    cluster
        .add_edge(move |c| {
            c.tls = Some(edge_files);
            c.ca_file = Some(ca_pem);
        })
        .await;
    let edge_addr = cluster.edges[0].local_addr;

    let locator = duet_client::LocatorClient::with_ca_certs(&cluster.url(), &[ca.ca_der.to_vec()]).unwrap();
    let placed = locator.create_session(&user("Ada")).await.unwrap();
    assert!(placed.edge.url.starts_with("wss://"), "{}", placed.edge.url);
    let tls = Some(ca.client_config());
    let host = duet_client::connect_with_tls(&placed.edge.url, &placed.token, tls.clone()).await.unwrap();
    let joined = locator.join_session(&placed.session_id, &user("Bo")).await.unwrap();
    let mut guest = duet_client::connect_with_tls(&joined.edge.url, &joined.token, tls).await.unwrap();
    host.send(EVERYONE, 1, &b"tls end to end"[..]).unwrap();
    assert_eq!(&next_message(&mut guest).await[..], b"tls end to end");
    assert_eq!(presented_cert(cluster.locator.local_addr, &ca).await, first.to_vec());

    // Renewal in place: new handshakes get the new certificate; the open session is untouched.
    let second = ca.write_server_pem(&files.cert, &files.key);
    cluster.locator.tls.as_ref().unwrap().reload().unwrap();
    cluster.edges[0].tls.as_ref().unwrap().reload().unwrap();
    assert_eq!(presented_cert(cluster.locator.local_addr, &ca).await, second.to_vec());
    assert_eq!(presented_cert(edge_addr, &ca).await, second.to_vec());
    host.send(EVERYONE, 2, &b"after renewal"[..]).unwrap();
    assert_eq!(&next_message(&mut guest).await[..], b"after renewal");

    // An edge that does not trust the private CA cannot link.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = cluster.edge_config(1);
    config.ca_file = None;
    let token = cluster.shutdown.child_token();
    let untrusting = duet_edge::start(config, listener, token.clone()).await.unwrap();
    let state = untrusting.state.clone();
    wait_until("two failed link attempts", Duration::from_secs(20), || {
        let attempts = state.link_attempts.load(std::sync::atomic::Ordering::Relaxed);
        async move { attempts >= 2 }
    })
    .await;
    assert!(!untrusting.state.registered.load(std::sync::atomic::Ordering::Acquire));
    token.cancel();
    untrusting.wait().await;
    drop((host, guest));
    cluster.shutdown().await;
}

/// One machine with TLS: the locator and its embedded edge serve the same certificate, the
/// embedded edge links over the loopback listener that serves only the link, and its metrics are
/// on the locator's page only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_machine_with_tls_in_process() {
    duet_testkit::init_tracing();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let files = duet_ws::tls::TlsFiles { cert: dir.path().join("tls.crt"), key: dir.path().join("tls.key") };
    ca.write_server_pem(&files.cert, &files.key);
    let mut config = duet_locator::LocatorConfig::new(dir.path().join("data"));
    config.tls = Some(files);
    config.embedded_edge = Some(duet_locator::config::EmbeddedEdge {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        region: "default".into(),
        media: None,
    });
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let locator =
        duet_locator::start(config, duet_locator::Listeners { api, edge: Some(edge) }, shutdown.clone()).await.unwrap();
    let edge_id = locator.edge.as_ref().unwrap().state.edge_id.clone();
    duet_testkit::wait_for_edge_health(
        &locator.state.store,
        &edge_id,
        duet_locator::db::Health::Up,
        Duration::from_secs(15),
    )
    .await;

    let client = duet_client::LocatorClient::with_ca_certs(&locator.url(), &[ca.ca_der.to_vec()]).unwrap();
    let placed = client.create_session(&user("Ada")).await.unwrap();
    assert!(placed.edge.url.starts_with("wss://"), "{}", placed.edge.url);
    let host = duet_client::connect_with_tls(&placed.edge.url, &placed.token, Some(ca.client_config())).await;
    assert!(host.is_ok(), "the embedded edge serves wss with the certificate");

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&ca.ca_der).unwrap())
        .build()
        .unwrap();
    let page = https.get(format!("{}/metrics", locator.url())).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&page, "duet_locator_links"), Some(1.0), "{page}");
    assert_eq!(metric(&page, "duet_edge_sessions"), Some(1.0), "the embedded edge's metrics: {page}");
    let edge_addr = locator.edge.as_ref().unwrap().local_addr;
    let on_edge = https.get(format!("https://localhost:{}/metrics", edge_addr.port())).send().await.unwrap();
    assert_eq!(on_edge.status().as_u16(), 404, "the embedded edge serves no metrics page of its own");
    drop(host);
    shutdown.cancel();
    locator.wait().await;
}
