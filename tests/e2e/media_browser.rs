//! WebRTC media through a real edge in real Chromium: `tests/browser/media.mjs` (playwright-core,
//! Debian's `chromium` with fake camera and microphone) publishes from a host page and receives
//! on a guest page, with the signalling carried by the Node client of `tests/node` over protocol
//! version 3. Over UDP straight to the edge's media port, with a Rust `webrtc` peer
//! (`duet_client::media::MediaPeer`) as a third participant; with the guest page relaying
//! only, over TCP through a real coturn whose credentials the locator mints; and with the guest
//! page on the edge's ICE-TCP port, no UDP candidate exchanged.
//!
//! Needs `npm ci` in tests/browser and tests/node, Debian's `chromium` and `coturn`: missing ones
//! fail the test with the command that installs them.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_client::media::{MediaConfig, MediaError, MediaPeer, Publish};
use duet_client::{Event, Session};
use duet_proto::session::{ClientFrame, EdgeFrame, TrackSource};
use duet_testkit::{wait_until, Cluster, ClusterOptions};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::support::user;

/// The script bounds itself at 80 s (Chromium's start included); this is the harness's backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
/// The Rust peer's media: connected, the host's video announced and flowing. Loopback ICE and
/// DTLS take well under a second; the host page publishes a few seconds after the script starts.
const RUST_PEER_TIMEOUT: Duration = Duration::from_secs(60);
/// coturn listens within a few hundred milliseconds of starting.
const TURN_START: Duration = Duration::from_secs(10);
/// Video packets the Rust peer must receive beyond the first, to show that media keeps flowing.
const MORE_PACKETS: u64 = 20;
/// What the Rust peer tells the session once it receives the host's video (the script waits for it).
const RECEIVED_MESSAGE: &str = "media received";
/// The counter `/metrics` shows for `MediaStats::packets_out` (edge/src/metrics.rs).
const FORWARDED_METRIC: &str = "duet_edge_media_packets_sent_total";

/// `tests/browser`, after checking that everything the script needs is installed.
fn browser_dir() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tests.join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/browser has no node_modules: run `npm ci` in tests/browser (scripts/test does)"
    );
    assert!(
        tests.join("node/node_modules/ws").exists(),
        "tests/node has no node_modules (media.mjs uses its client): run `npm ci` in tests/node (scripts/test does)"
    );
    assert!(
        std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js 20 (`apt-get install nodejs`)"
    );
    assert!(
        Path::new(&chromium()).exists(),
        "{} is missing: `apt-get install chromium` (scripts/test does)",
        chromium()
    );
    dir
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// POSTs `{}` to the locator's `path`; answers the JSON answer (its `ice_servers` as it came).
async fn place(cluster: &Cluster, path: &str) -> Value {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", cluster.url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("placement request");
    assert!(res.status().is_success(), "POST {path}: {}", res.status());
    res.json().await.expect("placement answer")
}

/// A session's host and guest placements, through the locator.
async fn host_and_guest(cluster: &Cluster) -> (Value, Value) {
    let host = place(cluster, "/api/v1/sessions").await;
    let session_id = host["session_id"].as_str().expect("session_id");
    let guest = place(cluster, &format!("/api/v1/sessions/{session_id}/join")).await;
    (host, guest)
}

/// Starts `media.mjs` for `host` and `guest` in `mode`; its output comes back from the task.
fn run_script(cluster: &Cluster, host: &Value, guest: &Value, mode: &str, others: u32) -> JoinHandle<Output> {
    let edge = &cluster.edges[0];
    let media = edge.state.media.as_ref().expect("the test kit's edges have media");
    let mut command = tokio::process::Command::new("node");
    command
        .arg("media.mjs")
        .current_dir(browser_dir())
        .env("DUET_LOCATOR_URL", cluster.url())
        .env("DUET_EDGE_URL", host["edge"]["url"].as_str().expect("edge.url"))
        .env("DUET_HOST_TOKEN", host["token"].as_str().expect("token"))
        .env("DUET_GUEST_TOKEN", guest["token"].as_str().expect("token"))
        .env("DUET_HOST_ICE_SERVERS", host["ice_servers"].to_string())
        .env("DUET_GUEST_ICE_SERVERS", guest["ice_servers"].to_string())
        .env(
            "DUET_EDGE_MEDIA_ADDR",
            match mode {
                "ice-tcp" => media.tcp_addr.expect("ICE-TCP on").to_string(),
                _ => media.udp_addr.to_string(),
            },
        )
        .env("DUET_EDGE_METRICS_URL", format!("http://{}/metrics", edge.local_addr))
        .env("DUET_FORWARDED_METRIC", FORWARDED_METRIC)
        .env("DUET_MEDIA_MODE", mode)
        .env("DUET_OTHER_PUBLISHERS", others.to_string())
        .env("CHROMIUM", chromium())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("node starts");
    tokio::spawn(async move {
        tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
            .await
            .expect("the media script finished in time (it was killed)")
            .expect("the media script's output")
    })
}

/// Fails the test unless the script passed; prints its output either way.
fn check_script(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "media script failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("media test: ok"), "{stdout}\n{stderr}");
}

fn send(session: &Session, frame: ClientFrame) {
    session.sender().send_raw(frame.encode().expect("encodes")).expect("session open");
}

/// The Rust participant: a `MediaPeer` publishing audio, signalling over its session as §2
/// "Media (version 3)" says, until it has received enough of the host's video.
struct RustPeer {
    session: Session,
    peer: MediaPeer,
    /// The mid the host's camera arrives on, once announced.
    video_mid: Option<String>,
}

impl RustPeer {
    async fn start(session: Session) -> RustPeer {
        let (peer, offer) = MediaPeer::new(&MediaConfig::loopback(), &[Publish::Audio]).await.expect("media peer");
        send(&session, ClientFrame::MediaOffer { sdp: offer });
        // After the offer ("or after", §2): before the first offer the edge refuses it (error 8).
        for track in peer.published() {
            send(&session, ClientFrame::TrackPublish { mid: track.mid, source: TrackSource::Microphone });
        }
        // Samples written before the connection is up are dropped by the stack.
        peer.start_sending();
        RustPeer { session, peer, video_mid: None }
    }

    /// Applies one frame from the edge.
    async fn handle(&mut self, event: Option<Event>) {
        let frame = match event {
            Some(Event::Frame(f)) => f,
            other => panic!("the Rust peer's session ended: {other:?}"),
        };
        match frame {
            EdgeFrame::MediaAnswer { sdp } => self.peer.apply_answer(&sdp).await.expect("the edge's answer applies"),
            EdgeFrame::MediaOffer { offer_id, sdp } => match self.peer.answer_offer(&sdp).await {
                Ok(answer) => send(&self.session, ClientFrame::MediaAnswer { offer_id, sdp: answer }),
                // Ours wins; the edge offers again after answering it.
                Err(MediaError::OfferOutstanding) => {}
                Err(e) => panic!("the edge's offer {offer_id}: {e}"),
            },
            EdgeFrame::TrackPublished { participant_id: 1, source: TrackSource::Camera, mid, .. } => {
                self.video_mid = Some(mid);
            }
            EdgeFrame::Error { code, message } => {
                panic!("the edge refused the Rust peer's signalling: {code} {message}")
            }
            EdgeFrame::MediaClosed { reason } => panic!("the Rust peer's media closed: {reason:?}"),
            _ => {}
        }
    }

    /// Packets received on the host's video so far (0 before it is announced).
    async fn video_packets(&self) -> u64 {
        match &self.video_mid {
            Some(mid) => self.peer.packets_received_on(mid).await,
            None => 0,
        }
    }

    /// Answers the edge until `done` holds (checked every 50 ms), at most `RUST_PEER_TIMEOUT`.
    async fn until(&mut self, what: &str, script: &mut JoinHandle<Output>, mut done: impl FnMut(u64) -> bool) -> u64 {
        let deadline = tokio::time::Instant::now() + RUST_PEER_TIMEOUT;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                event = self.session.recv() => self.handle(event).await,
                _ = tick.tick() => {
                    let packets = self.video_packets().await;
                    if done(packets) {
                        return packets;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the Rust peer: timed out after {RUST_PEER_TIMEOUT:?} waiting for {what} (video mid {:?}, {packets} video packets, {} in all, connection {:?})",
                        self.video_mid, self.peer.packets_received(), self.peer.connection_state()
                    );
                }
                out = &mut *script => {
                    let out = out.expect("the script task");
                    check_script(&out);
                    panic!("the media script ended before the Rust peer saw {what}");
                }
            }
        }
    }
}

/// Host and guest in Chromium over UDP; a second guest is a Rust `webrtc` peer publishing audio.
/// Both receivers get the host's video from the edge's media port, and the edge's forwarded
/// counter covers what each received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_peers_exchange_media_through_the_edge() {
    browser_dir();
    let cluster = Cluster::start().await;
    let media = cluster.edges[0].state.media.clone().expect("the test kit's edges have media");
    let (host, guest) = host_and_guest(&cluster).await;
    let session_id = host["session_id"].as_str().unwrap();
    let placed = cluster.client().join_session(session_id, &user("Cy")).await.expect("join session");
    let session = duet_client::connect(&placed.edge.url, &placed.token).await.expect("the Rust peer connects");
    let mut script = run_script(&cluster, &host, &guest, "udp", 1);

    let mut rust = RustPeer::start(session).await;
    let first = rust.until("the host's video", &mut script, |n| n > 0).await;
    rust.until("more of the host's video", &mut script, |n| n >= first + MORE_PACKETS).await;
    let remote = rust.peer.selected_remote().await;
    assert_eq!(remote, Some(media.udp_addr), "the Rust peer's selected pair ends at the edge's media port");
    let received = rust.peer.packets_received();
    let forwarded = media.stats.packets_out.load(Ordering::Relaxed);
    assert!(forwarded >= received, "the edge forwarded {forwarded} packets, the Rust peer received {received}");
    println!("the Rust peer: selected remote {remote:?}; received {received} packets; the edge forwarded {forwarded}");
    rust.session.send(0, 0, RECEIVED_MESSAGE).expect("session open");

    // Keep answering the edge (the host's tracks go away) until the script is done.
    let out = loop {
        tokio::select! {
            event = rust.session.recv() => rust.handle(event).await,
            out = &mut script => break out.expect("the script task"),
        }
    };
    check_script(&out);
    rust.peer.close().await;
    cluster.shutdown().await;
}

/// A coturn for one test, with the REST API's shared secret; killed when dropped.
struct Coturn {
    /// Its TURN port on 127.0.0.1 (TCP and UDP).
    port: u16,
    secret: String,
    log: PathBuf,
    _process: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Coturn {
    async fn start() -> Coturn {
        let turnserver = std::env::var("TURNSERVER").unwrap_or_else(|_| "/usr/bin/turnserver".into());
        assert!(
            Path::new(&turnserver).exists(),
            "{turnserver} is missing: `apt-get install coturn` (scripts/test does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Relay ports below Linux's ephemeral range (32768 and up), so no test's port-0 socket
        // takes them; 200 of them at an offset of their own per process.
        let min_port = 20_000 + (std::process::id() % 50) * 200;
        let secret = format!("coturn-{}", duet_locator::ids::random_id(24));
        let log = dir.path().join("turnserver.log");
        let args = [
            "-n",
            "--listening-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--relay-ip=127.0.0.1",
            &format!("--min-port={min_port}"),
            &format!("--max-port={}", min_port + 199),
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
            "--realm=duet",
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
            "--simple-log",
            &format!("--pidfile={}", dir.path().join("turnserver.pid").display()),
            &format!("--userdb={}", dir.path().join("turndb").display()),
        ];
        let process = tokio::process::Command::new(&turnserver)
            .args(args)
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{turnserver} does not start: {e}"));
        wait_until("coturn accepts TCP", TURN_START, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        Coturn { port, secret, log, _process: process, _dir: dir }
    }
}

/// The guest page relays only (`iceTransportPolicy: 'relay'`) through coturn over TCP, with the
/// credentials the locator minted; its selected pair is a TCP relay candidate to the edge's media
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relays_over_tcp_through_coturn() {
    browser_dir();
    let turn = Coturn::start().await;
    let (url, secret) = (format!("turn:127.0.0.1:{}?transport=tcp", turn.port), turn.secret.clone());
    let mut cluster = Cluster::start_with(ClusterOptions {
        tweak_locator: Some(Box::new(move |config| {
            config.turn_urls = vec![url];
            config.turn_secret = Some(secret);
        })),
        ..Default::default()
    })
    .await;
    cluster.add_edge(|_| {}).await;
    let (host, guest) = host_and_guest(&cluster).await;
    assert_eq!(guest["ice_servers"][0]["urls"][0], format!("turn:127.0.0.1:{}?transport=tcp", turn.port), "{guest}");

    let out = run_script(&cluster, &host, &guest, "turn-tcp", 0).await.expect("the script task");
    if !out.status.success() {
        eprintln!("coturn's log:\n{}", std::fs::read_to_string(&turn.log).unwrap_or_default());
    }
    check_script(&out);
    cluster.shutdown().await;
}

/// The guest page exchanges no UDP candidate with the edge (dropped from every SDP and trickled
/// candidate, both ways), so its only path is the edge's passive ICE-TCP candidate: its selected
/// pair is TCP to the edge's ICE-TCP port, and video flows over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_connects_over_ice_tcp() {
    browser_dir();
    // A cluster of one edge, with ICE-TCP on.
    let mut cluster = Cluster::start_with(ClusterOptions::default()).await;
    cluster
        .add_edge(|c| {
            if let Some(media) = c.media.as_mut() {
                media.tcp_listen = Some("127.0.0.1:0".parse().unwrap());
            }
        })
        .await;
    assert!(cluster.edges[0].state.media.as_ref().unwrap().tcp_addr.is_some());
    let (host, guest) = host_and_guest(&cluster).await;
    let out = run_script(&cluster, &host, &guest, "ice-tcp", 0).await.expect("the script task");
    check_script(&out);
    cluster.shutdown().await;
}
