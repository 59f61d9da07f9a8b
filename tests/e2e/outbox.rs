//! Fault tests of the outbox and of failure detection, with real processes: a `duet-locator`
//! (no embedded edge) on a real database, the edge under test (`edge-f`, region `f`) linked
//! through a [`FaultProxy`], and a bystander edge (`edge-b`) linked directly, carrying a session
//! that must never notice anything.
//!
//! Each case churns participants on `edge-f` (a guest joins and leaves again and again, two audit
//! entries each time), waits until a batch of entries is provably sent but unacknowledged (the
//! locator has committed entries beyond what the edge's heartbeats report as acknowledged, with
//! acknowledgements black-holed), then injects its fault, keeps the churn going until at least
//! 10,000 entries exist, and finally compares the (edge, outbox, sequence) set the edge produced
//! with the one stored: every sequence number from 1 to the edge's last, each exactly once.
//! These tests need `cargo build --workspace --bins` first (the README's test command does it).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_client::{Event, LocatorClient, PlacementRequest};
use duet_locator::db::{audit_kind, EdgeRecord, EntryFilter, Health, Store};
use duet_proto::session::EdgeFrame;
use duet_testkit::proxy::FaultProxy;
use duet_testkit::{wait_until, TEST_ADMIN_TOKEN, TEST_SECRET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::user;

/// Every case must have at least this many entries produced on the faulted edge.
const MIN_ENTRIES: u64 = 10_000;
/// Bound on each wait; a case as a whole stays well under a minute on this machine.
const WAIT: Duration = Duration::from_secs(60);

/// A process that is killed when dropped.
struct Proc {
    child: Child,
    /// The URL it printed (the locator's base URL or the edge's public URL).
    url: String,
}

impl Proc {
    async fn kill9(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = self.child.wait().await;
    }
}

/// Runs `cmd` and waits for the stdout line containing `marker`; its last word is the URL.
async fn spawn(mut cmd: Command, marker: &str) -> Proc {
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn().expect("spawn process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(marker) {
                return line;
            }
        }
        panic!("process exited before printing {marker:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {marker:?} line within 30 s"));
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = if marker == "duet locator:" {
        line.split_whitespace().nth(2).expect("url").to_owned()
    } else {
        line.split_whitespace().last().expect("url").to_owned()
    };
    Proc { child, url }
}

async fn start_locator(dir: &Path, database_url: &str) -> Proc {
    let mut cmd = duet_testkit::command("duet-locator");
    cmd.current_dir(dir)
        .env("DUET_LISTEN", "127.0.0.1:0")
        .env("DUET_EMBEDDED_EDGE", "false")
        .env("DUET_DATABASE_URL", database_url)
        .env("DUET_ENROLLMENT_SECRET", TEST_SECRET)
        .env("DUET_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
        .env("DUET_LOG", "warn");
    spawn(cmd, "duet locator:").await
}

async fn start_edge(dir: &Path, id: &str, locator_url: &str) -> Proc {
    let region = id.trim_start_matches("edge-");
    let mut cmd = duet_testkit::command("duet-edge");
    cmd.env("DUET_LISTEN", "127.0.0.1:0")
        .env("DUET_LOCATOR_URL", locator_url)
        .env("DUET_DATA_DIR", dir.join(id))
        .env("DUET_EDGE_ID", id)
        .env("DUET_REGION", region)
        .env("DUET_ENROLLMENT_SECRET", TEST_SECRET)
        .env("DUET_LOG", "warn");
    spawn(cmd, "serving sessions at").await
}

async fn edge(store: &Store, id: &str) -> Option<EdgeRecord> {
    store.edge(id).await.ok().flatten()
}

async fn wait_health(store: &Store, id: &str, health: Health) -> Duration {
    let started = Instant::now();
    wait_until(&format!("{id} is {health:?}"), WAIT, || async move {
        edge(store, id).await.is_some_and(|e| e.health == health)
    })
    .await;
    started.elapsed()
}

/// The (outbox id, sequence) keys stored for an edge.
async fn stored(store: &Store, id: &str) -> Vec<(u64, u64)> {
    store.outbox_keys(id).await.expect("read stored keys")
}

/// Waits until the locator holds entries of `edge-f` that the edge has not had acknowledged:
/// with acknowledgements black-holed, the stored maximum passes the acknowledged point that
/// the edge's heartbeats report (last sequence minus depth).
async fn wait_sent_but_unacknowledged(store: &Store) {
    wait_until("a committed batch the edge has not had acknowledged", WAIT, || async move {
        let Some(e) = edge(store, "edge-f").await else { return false };
        let acked = e.outbox.last_seq.saturating_sub(e.outbox.depth);
        let max = stored(store, "edge-f").await.iter().map(|k| k.1).max().unwrap_or(0);
        e.outbox.depth > 0 && max > acked
    })
    .await;
}

/// Participants joining and leaving a session on `edge-f` in a loop, without the locator: the
/// host stays, the guest reconnects with its token each round.
struct Churn {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Churn {
    async fn start(locator: &LocatorClient, sessions: usize) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..sessions {
            let req = PlacementRequest { region: Some("f".into()), ..user(&format!("Host{i}")) };
            let placed = locator.create_session(&req).await.expect("create session");
            assert_eq!(placed.edge.id, "edge-f", "sessions of region f go to edge-f");
            let guest = locator.join_session(&placed.session_id, &user(&format!("Guest{i}"))).await.expect("join");
            let host = duet_client::connect(&placed.edge.url, &placed.token).await.expect("host connects");
            let (stop, rounds) = (stop.clone(), rounds.clone());
            tasks.push(tokio::spawn(async move {
                let _host = host;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut g) = duet_client::connect(&guest.edge.url, &guest.token).await else {
                        // The edge is down (the kill -9 case); try again shortly.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let _ = g.leave();
                    let mut left = false;
                    while let Some(ev) = g.recv().await {
                        if let Event::Closed { code, .. } = ev {
                            left = code == Some(1000);
                            break;
                        }
                    }
                    // Only a leave the edge answered counts (not one cut short by a kill).
                    if left {
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Churn { stop, rounds, tasks }
    }

    /// Waits until `n` more rounds (2n entries) have run, whatever the locator can see.
    async fn more_rounds(&self, n: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + n;
        let rounds = self.rounds.clone();
        wait_until(&format!("{n} more churn rounds"), WAIT, || {
            let done = rounds.load(Ordering::Relaxed) >= target;
            async move { done }
        })
        .await;
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.rounds.load(Ordering::Relaxed)
    }
}

/// A session on the bystander edge exchanging a message every 20 ms; it fails the test if the
/// connection drops or a message is lost or reordered.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Bystander {
    async fn start(locator: &LocatorClient) -> Bystander {
        let req = PlacementRequest { region: Some("b".into()), ..user("Bystander") };
        let placed = locator.create_session(&req).await.expect("create bystander session");
        assert_eq!(placed.edge.id, "edge-b");
        let guest = locator.join_session(&placed.session_id, &user("Watcher")).await.expect("join bystander");
        let host = duet_client::connect(&placed.edge.url, &placed.token).await.expect("bystander host");
        let mut watcher = duet_client::connect(&guest.edge.url, &guest.token).await.expect("bystander guest");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                host.send(0, n, n.to_be_bytes().to_vec()).expect("bystander host sends");
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), watcher.recv()).await {
                        Ok(Some(Event::Frame(EdgeFrame::Message { payload, .. }))) => {
                            assert_eq!(payload.as_ref(), n.to_be_bytes(), "bystander message {n} lost or reordered");
                            break;
                        }
                        Ok(Some(Event::Frame(_))) => continue,
                        other => panic!("bystander session noticed the fault: {other:?}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        });
        Bystander { stop, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("bystander session ran to the end")
    }
}

/// The processes and connections of one case.
struct Rig {
    dir: tempfile::TempDir,
    database_url: String,
    store: Store,
    locator: Proc,
    /// Between `edge-f` and the locator: the faults.
    proxy: FaultProxy,
    /// Between `edge-b` and the locator: only follows a restarted locator.
    proxy_b: FaultProxy,
    edge_f: Proc,
    _edge_b: Proc,
}

impl Rig {
    async fn start(database_url: Option<String>) -> Rig {
        duet_testkit::init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url =
            database_url.unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.path().join("locator.db").display()));
        let locator = start_locator(dir.path(), &database_url).await;
        let store = Store::connect(&database_url).await.expect("test connects to the database");
        let proxy = FaultProxy::start(locator_addr(&locator.url)).await.expect("proxy");
        let edge_f = start_edge(dir.path(), "edge-f", &proxy.http_url()).await;
        let proxy_b = FaultProxy::start(locator_addr(&locator.url)).await.expect("proxy");
        let edge_b = start_edge(dir.path(), "edge-b", &proxy_b.http_url()).await;
        for id in ["edge-f", "edge-b"] {
            wait_health(&store, id, Health::Up).await;
        }
        Rig { dir, database_url, store, locator, proxy, proxy_b, edge_f, _edge_b: edge_b }
    }

    fn client(&self) -> LocatorClient {
        LocatorClient::new(&self.locator.url)
    }

    /// Churns until `edge-f` has produced at least `n` entries (as its heartbeats report).
    async fn produce(&self, n: u64) {
        wait_until(&format!("edge-f produced {n} entries"), WAIT, || async move {
            edge(&self.store, "edge-f").await.is_some_and(|e| e.outbox.last_seq >= n)
        })
        .await;
    }

    /// After the churn stopped: everything `edge-f` produced is stored, once.
    async fn assert_every_entry_stored_once(&self) -> u64 {
        let store = &self.store;
        wait_until("edge-f's outbox drained into the database", WAIT, || async move {
            let Some(e) = edge(store, "edge-f").await else { return false };
            e.outbox.depth == 0 && stored(store, "edge-f").await.len() as u64 >= e.outbox.last_seq
        })
        .await;
        let e = edge(store, "edge-f").await.expect("edge-f");
        let keys = stored(store, "edge-f").await;
        let distinct: BTreeSet<(u64, u64)> = keys.iter().copied().collect();
        assert_eq!(distinct.len(), keys.len(), "an entry was stored twice");
        let outboxes: BTreeSet<u64> = keys.iter().map(|k| k.0).collect();
        assert_eq!(outboxes.len(), 1, "one outbox: {outboxes:?}");
        let seqs: Vec<u64> = keys.iter().map(|k| k.1).collect::<BTreeSet<_>>().into_iter().collect();
        let want: Vec<u64> = (1..=e.outbox.last_seq).collect();
        if seqs != want {
            let missing: Vec<u64> = want.iter().filter(|s| !seqs.contains(s)).take(20).copied().collect();
            let extra: Vec<u64> = seqs.iter().filter(|s| !want.contains(s)).take(20).copied().collect();
            panic!("stored set differs from produced 1..={}: missing {missing:?}, extra {extra:?}", e.outbox.last_seq);
        }
        assert!(e.outbox.last_seq >= MIN_ENTRIES, "only {} entries produced", e.outbox.last_seq);
        assert_eq!((e.outbox.dropped_audit, e.outbox.dropped_metrics), (0, 0));
        e.outbox.last_seq
    }
}

/// How many `participant_left` entries of `edge-f` are stored: each churn round that finished
/// wrote one, so this must be at least the number of rounds (the two sets agreeing on their
/// numbers is not enough: an entry never pushed would be missing from both).
async fn stored_leaves(store: &Store) -> u64 {
    let filter =
        EntryFilter { edge_id: Some("edge-f".into()), kind: Some("participant_left".into()), ..Default::default() };
    let (mut n, mut cursor) = (0u64, None);
    loop {
        let (page, next) = store.audit_entries(&filter, 1000, cursor).await.expect("read audit entries");
        n += page.len() as u64;
        match next {
            Some(c) => cursor = Some(c),
            None => return n,
        }
    }
}

fn locator_addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://").parse().expect("locator address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_edge_mid_traffic() {
    let mut rig = Rig::start(None).await;
    let bystander = Bystander::start(&rig.client()).await;
    let churn = Churn::start(&rig.client(), 8).await;
    rig.produce(2_000).await;
    rig.proxy.blackhole_downstream();
    wait_sent_but_unacknowledged(&rig.store).await;

    rig.edge_f.kill9().await;
    let detected = wait_health(&rig.store, "edge-f", Health::Unavailable).await;
    eprintln!("kill -9 of edge-f detected as unavailable after {} ms", detected.as_millis());
    assert!(detected <= Duration::from_secs(6), "unavailable only after {detected:?}");
    // A dead edge gets no new session, even from its own region.
    for i in 0..5 {
        let req = PlacementRequest { region: Some("f".into()), ..user(&format!("Late{i}")) };
        let placed = rig.client().create_session(&req).await.expect("placed elsewhere");
        assert_eq!(placed.edge.id, "edge-b");
    }
    let filter = EntryFilter {
        edge_id: Some("edge-f".into()),
        kind: Some(audit_kind::EDGE_UNAVAILABLE.into()),
        ..Default::default()
    };
    let audit = rig.store.audit_entries(&filter, 10, None).await.expect("audit").0;
    assert_eq!(audit.len(), 1, "one edge_unavailable entry: {audit:?}");
    assert_eq!(audit[0].actor.as_deref(), Some("locator"));
    let ended = EntryFilter { kind: Some(audit_kind::SESSION_ENDED_BY_LOCATOR.into()), ..filter };
    let ended = rig.store.audit_entries(&ended, 100, None).await.expect("audit").0;
    assert_eq!(ended.len(), 8, "each churn session on edge-f ended by the locator: {ended:?}");
    let rounds = churn.stop().await;

    // The edge comes back on the same data directory and resends what was not acknowledged.
    rig.proxy.heal();
    rig.edge_f = start_edge(rig.dir.path(), "edge-f", &rig.proxy.http_url()).await;
    wait_health(&rig.store, "edge-f", Health::Up).await;
    // Entries after the restart too, up to the case's minimum.
    let churn = Churn::start(&rig.client(), 8).await;
    rig.produce(MIN_ENTRIES).await;
    let rounds = rounds + churn.stop().await;
    let n = rig.assert_every_entry_stored_once().await;
    // A round ends when the guest sees the close that answers its `leave`, which the edge sends
    // only once the leave's audit entry is on disk: even the rounds just before the kill count.
    let leaves = stored_leaves(&rig.store).await;
    assert!(leaves >= rounds, "{leaves} participant_left entries stored for {rounds} rounds");
    eprintln!("kill -9: {n} entries produced, {n} stored once, {rounds} churn rounds, {leaves} leaves stored");
    assert!(bystander.stop().await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_blackholed_without_killing_either_side() {
    let rig = Rig::start(None).await;
    let bystander = Bystander::start(&rig.client()).await;
    let churn = Churn::start(&rig.client(), 8).await;
    rig.produce(2_000).await;
    rig.proxy.blackhole_downstream();
    wait_sent_but_unacknowledged(&rig.store).await;

    // Now nothing passes either way; both sides notice the silence by themselves.
    rig.proxy.blackhole();
    let noticed = wait_health(&rig.store, "edge-f", Health::LinkLost).await;
    eprintln!("black-holed link: edge-f link_lost after {} ms (its probe still answers)", noticed.as_millis());
    // The churn goes on, unseen by the locator.
    churn.more_rounds(1_000).await;
    rig.proxy.heal();
    wait_health(&rig.store, "edge-f", Health::Up).await;
    rig.produce(MIN_ENTRIES).await;
    let rounds = churn.stop().await;
    let n = rig.assert_every_entry_stored_once().await;
    let leaves = stored_leaves(&rig.store).await;
    assert!(leaves >= rounds, "{leaves} participant_left entries stored for {rounds} rounds");
    eprintln!("black-holed link: {n} entries produced, {n} stored once, {rounds} churn rounds, {leaves} leaves stored");
    assert!(bystander.stop().await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locator_restart() {
    let mut rig = Rig::start(None).await;
    let bystander = Bystander::start(&rig.client()).await;
    let churn = Churn::start(&rig.client(), 8).await;
    rig.produce(2_000).await;
    rig.proxy.blackhole_downstream();
    wait_sent_but_unacknowledged(&rig.store).await;

    // The locator dies hard; sessions keep relaying while it is away.
    rig.locator.kill9().await;
    churn.more_rounds(1_000).await;
    rig.locator = start_locator(rig.dir.path(), &rig.database_url).await;
    let addr = locator_addr(&rig.locator.url);
    rig.proxy.retarget(addr);
    rig.proxy_b.retarget(addr);
    rig.proxy.heal();
    rig.proxy_b.cut();
    rig.produce(MIN_ENTRIES).await;
    let rounds = churn.stop().await;
    let n = rig.assert_every_entry_stored_once().await;
    let leaves = stored_leaves(&rig.store).await;
    assert!(leaves >= rounds, "{leaves} participant_left entries stored for {rounds} rounds");
    eprintln!("locator restart: {n} entries produced, {n} stored once, {rounds} churn rounds, {leaves} leaves stored");
    assert!(bystander.stop().await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart() {
    // A private PostgreSQL, so stopping it cannot disturb any other test.
    let Some(mut pg) = duet_testkit::private_pg::PrivatePostgres::start_or_skip().await else { return };
    let rig = Rig::start(Some(pg.url())).await;
    let bystander = Bystander::start(&rig.client()).await;
    let churn = Churn::start(&rig.client(), 8).await;
    rig.produce(2_000).await;
    rig.proxy.blackhole_downstream();
    wait_sent_but_unacknowledged(&rig.store).await;

    pg.stop_immediate().await.expect("stop the database");
    rig.proxy.heal();
    // Commits fail meanwhile; the edge keeps everything and the sessions go on.
    churn.more_rounds(1_000).await;
    pg.start_again().await.expect("start the database again");
    rig.produce(MIN_ENTRIES).await;
    let rounds = churn.stop().await;
    let n = rig.assert_every_entry_stored_once().await;
    let leaves = stored_leaves(&rig.store).await;
    assert!(leaves >= rounds, "{leaves} participant_left entries stored for {rounds} rounds");
    eprintln!("database restart: {n} entries produced, {n} stored once, {rounds} churn rounds, {leaves} leaves stored");
    assert!(bystander.stop().await > 0);
}
