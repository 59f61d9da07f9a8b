//! The `media` scenario: how many video packets per second one edge forwards, SRTP on, and what
//! each forwarded packet and megabit costs it in CPU, from one publisher to N subscribers.
//!
//! Each run starts a fresh locator (no embedded edge) and one `duet-edge` whose media UDP port
//! the load generator picked free on 127.0.0.1. One session is placed on the edge; its host
//! publishes synthetic VP8 video ([`Args::fps`] frames a second of [`Args::frame_bytes`] each)
//! through a str0m load peer ([`duet_testkit::media::LoadPeer`]). Then, for each subscriber count
//! of [`Args::subscribers`] in increasing order (a ramp within the run):
//!
//! 1. guests join the session until there are that many, each with a load peer that subscribes
//!    and, in the testkit's bench mode (`count_rtp_only`), counts the RTP datagrams it receives
//!    without decrypting them (STUN, DTLS and RTCP still go to str0m);
//! 2. once every subscriber receives video, a warm-up ([`Args::warmup`]) whose figures are
//!    thrown away;
//! 3. a measurement window ([`Args::window`]): the edge's counters from its `/metrics` page
//!    (packets and bytes forwarded, packets received, send drops), the subscribers' and the
//!    publisher's counters, and the CPU time of the edge, the locator, the load generator and
//!    the machine from `/proc`, each read before and after.
//!
//! Runs repeat [`Args::repetitions`] times; the report gives the median and range of each figure
//! per subscriber count, and whether the target is met: at least [`TARGET_PACKETS_PER_CORE`]
//! forwarded packets per second per core of the edge's CPU, judged at the largest count, where
//! fixed costs weigh least and a saturated edge shows its ceiling.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context};
use duet_client::LocatorClient;
use duet_testkit::media::{LoadPeer, Options, Publish};
use hyper::StatusCode;
use tokio::time::Instant;

use crate::database::LocatorDb;
use crate::http;
use crate::procs::{
    self, user, Binaries, Cluster, ClusterSpec, MachineCpu, Pinning, FIRST_PLACEMENT_TIMEOUT, STARTUP_TIMEOUT,
    TEARDOWN_ALLOWANCE,
};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{fmt_count, fmt_duration, fmt_share, parse_duration, Spread};

/// Name of this scenario's section in the benchmarks document.
const SCENARIO: &str = "media";
/// The anchor of its section.
const SECTION: &str = "#media-forwarding";

/// Target on the reference machine: forwarded video packets per second per core of the edge.
const TARGET_PACKETS_PER_CORE: f64 = 30_000.0;
/// A session holds 50 participants by default (the edge's `max_participants`): the host and 49.
const MAX_SUBSCRIBERS: usize = 49;

/// The edge's counters read from its metrics page.
const METRIC_PACKETS_SENT: &str = "duet_edge_media_packets_sent_total";
const METRIC_BYTES_SENT: &str = "duet_edge_media_bytes_sent_total";
const METRIC_PACKETS_RECEIVED: &str = "duet_edge_media_packets_received_total";
const METRIC_SEND_DROPPED: &str = "duet_edge_media_send_dropped_total";
const METRIC_PEERS: &str = "duet_edge_media_peers";

/// Time new peers get to connect (ICE, DTLS, negotiation) and receive their first packets; a
/// peer connects in tens of milliseconds on loopback, a few dozen at once in about a second.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between checks while waiting for peers.
const MEDIA_POLL: Duration = Duration::from_millis(50);
/// Bound on one guest's join (placement answer and websocket welcome).
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Load peers ping their session this often: the edge closes a session websocket that sends
/// nothing for 90 s, and a run with a ramp lasts longer than that.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Defaults: 250 frames/s of 11,000 bytes (10 RTP packets each) is about 2,500 packets/s
/// (22 Mbit/s) from the publisher, the packet rate of a few HD camera streams: 12 subscribers
/// ask the edge for the target's 30,000 packets/s, and the ramp's 10 to 49 subscribers for
/// 25,000 to 122,500, past what one core of the reference machine forwards, so the table shows
/// where it saturates. What the edge's work depends on is packets, not what they encode.
const DEFAULT_FPS: u32 = 250;
const DEFAULT_FRAME_BYTES: usize = 11_000;
/// A keyframe a second at the default rate (the payloads are random either way).
const DEFAULT_KEYFRAME_EVERY: u32 = 250;
const DEFAULT_WARMUP: &str = "3s";
const DEFAULT_WINDOW: &str = "10s";
/// `--smoke`: one short run with a few subscribers, enough to show everything works end to end.
const SMOKE_SUBSCRIBERS: usize = 4;
const SMOKE_WARMUP: Duration = Duration::from_secs(1);
const SMOKE_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Subscribers of the one publisher; a comma-separated list is a ramp, measured in increasing
    /// order within each run (at most 49: a session holds 50 participants).
    #[arg(long, short = 'n', value_delimiter = ',', default_values_t = [10, 20, 30, 40, 49])]
    subscribers: Vec<usize>,
    /// Video frames the publisher sends per second.
    #[arg(long, default_value_t = DEFAULT_FPS)]
    fps: u32,
    /// Bytes of each frame (about 1,100 fit one RTP packet; larger frames are split).
    #[arg(long, default_value_t = DEFAULT_FRAME_BYTES)]
    frame_bytes: usize,
    /// A keyframe every this many frames.
    #[arg(long, default_value_t = DEFAULT_KEYFRAME_EVERY)]
    keyframe_every: u32,
    /// Warm-up before each measurement, once every subscriber receives video (`500ms`, `2s`, or seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_WARMUP)]
    warmup: Duration,
    /// Measurement window at each subscriber count.
    #[arg(long = "seconds", value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_WINDOW)]
    window: Duration,
    /// Runs, each with a fresh locator and edge.
    #[arg(long, short = 'r', visible_alias = "runs", default_value_t = 3)]
    repetitions: usize,
    /// One run with 4 subscribers (1 s warm-up, 2 s window): checks that it works, not the target.
    #[arg(long, conflicts_with = "markdown")]
    smoke: bool,
    /// Rewrite this scenario's section of this Markdown file (docs/benchmarks.md).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Directory of duet-locator and duet-edge [default: this executable's directory].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    #[command(flatten)]
    database: LocatorDb,
    #[command(flatten)]
    pub pinning: Pinning,
}

/// What every run does, after `--smoke` is applied.
#[derive(Debug, Clone)]
struct Plan {
    /// Subscriber counts, increasing, without repeats.
    steps: Vec<usize>,
    warmup: Duration,
    window: Duration,
    repetitions: usize,
    video: Publish,
}

impl Plan {
    fn of(args: &Args) -> anyhow::Result<Plan> {
        let mut steps = if args.smoke { vec![SMOKE_SUBSCRIBERS] } else { args.subscribers.clone() };
        steps.sort_unstable();
        steps.dedup();
        match steps.as_slice() {
            [] | [0, ..] => bail!("--subscribers needs counts of at least 1"),
            [.., max] if *max > MAX_SUBSCRIBERS => {
                bail!("--subscribers: at most {MAX_SUBSCRIBERS} (a session holds 50 participants, the host included)")
            }
            _ => {}
        }
        if args.fps == 0 || args.frame_bytes < 16 || args.keyframe_every == 0 || args.repetitions == 0 {
            bail!("--fps, --keyframe-every and --repetitions need at least 1, --frame-bytes at least 16");
        }
        let video =
            Publish::Video { fps: args.fps, frame_bytes: args.frame_bytes, keyframe_every: args.keyframe_every };
        Ok(Plan {
            steps,
            warmup: if args.smoke { SMOKE_WARMUP } else { args.warmup },
            window: if args.smoke { SMOKE_WINDOW } else { args.window },
            repetitions: if args.smoke { 1 } else { args.repetitions },
            video,
        })
    }

    /// An upper bound for one run, from start to teardown.
    fn run_budget(&self) -> Duration {
        let joins = JOIN_TIMEOUT * u32::try_from(self.steps.last().copied().unwrap_or(0)).unwrap_or(u32::MAX);
        let steps = u32::try_from(self.steps.len()).unwrap_or(u32::MAX);
        STARTUP_TIMEOUT
            + FIRST_PLACEMENT_TIMEOUT
            + MEDIA_TIMEOUT
            + joins
            + (MEDIA_TIMEOUT + self.warmup + self.window) * steps
            + TEARDOWN_ALLOWANCE
    }
}

/// The edge's media counters, from its `/metrics` page.
#[derive(Debug, Clone, Copy)]
struct EdgeCounters {
    packets_sent: f64,
    bytes_sent: f64,
    packets_received: f64,
    send_dropped: f64,
    peers: f64,
}

impl EdgeCounters {
    async fn read(cluster: &Cluster) -> anyhow::Result<EdgeCounters> {
        let addr = cluster.edges[0].addr;
        let (status, body) = http::get(addr, "/metrics").await.context("reading the edge's /metrics")?;
        if status != StatusCode::OK {
            bail!("the edge's /metrics answered {status}");
        }
        let page = String::from_utf8_lossy(&body);
        let value = |name: &str| {
            metric(&page, name)
                .with_context(|| format!("the edge's /metrics has no {name}: is its media on (DUET_MEDIA_LISTEN)?"))
        };
        Ok(EdgeCounters {
            packets_sent: value(METRIC_PACKETS_SENT)?,
            bytes_sent: value(METRIC_BYTES_SENT)?,
            packets_received: value(METRIC_PACKETS_RECEIVED)?,
            send_dropped: value(METRIC_SEND_DROPPED)?,
            peers: value(METRIC_PEERS)?,
        })
    }
}

/// The value of an unlabelled metric on a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Everything read at the start and at the end of a window.
struct Sample {
    at: Instant,
    edge: EdgeCounters,
    edge_cpu: Option<Duration>,
    locator_cpu: Option<Duration>,
    loadgen_cpu: Option<Duration>,
    machine: Option<MachineCpu>,
    /// Summed over the subscribers: RTP packets received.
    received_packets: u64,
    /// The publisher's RTP packets sent.
    published_packets: u64,
}

impl Sample {
    async fn take(cluster: &Cluster, publisher: &LoadPeer, subscribers: &[LoadPeer]) -> anyhow::Result<Sample> {
        // The edge's counters first and the peers' right after, at both ends of the window, so
        // the time between the two reads (about a millisecond) shifts both ends alike.
        let edge = EdgeCounters::read(cluster).await?;
        let at = Instant::now();
        let (locator_cpu, edge_cpu) = cluster.cpu_times();
        let sum = |pick: fn(&LoadPeer) -> u64| subscribers.iter().map(pick).sum::<u64>();
        Ok(Sample {
            at,
            edge,
            edge_cpu,
            locator_cpu,
            loadgen_cpu: procs::own_cpu_time(),
            machine: procs::machine_cpu(),
            received_packets: sum(|p| p.stats.packets_received.load(Ordering::Relaxed)),
            published_packets: publisher.stats.packets_sent.load(Ordering::Relaxed),
        })
    }
}

/// The figures of one subscriber count in one run; rates per second of the window.
#[derive(Debug, Clone, Copy)]
struct StepFigures {
    subscribers: usize,
    /// RTP packets the publisher sent, and the edge received.
    published: f64,
    edge_received: f64,
    /// RTP packets and bytes the edge sent to subscribers.
    forwarded: f64,
    forwarded_bytes: f64,
    /// RTP packets the subscribers received.
    received: f64,
    /// Datagrams the edge could not hand to its socket, in the window.
    send_dropped: f64,
    /// CPU used, as shares of one core (1.0 = one core busy).
    edge_cpu: Option<f64>,
    locator_cpu: Option<f64>,
    loadgen_cpu: Option<f64>,
    /// Every other process on the machine, and the time the hypervisor took.
    others_cpu: Option<f64>,
    steal: Option<f64>,
}

impl StepFigures {
    fn between(subscribers: usize, before: &Sample, after: &Sample) -> StepFigures {
        let elapsed = after.at.saturating_duration_since(before.at).as_secs_f64().max(f64::EPSILON);
        let rate = |then: f64, now: f64| (now - then).max(0.0) / elapsed;
        let count = |then: u64, now: u64| now.saturating_sub(then) as f64 / elapsed;
        let used = |then: Option<Duration>, now: Option<Duration>| Some(now?.saturating_sub(then?));
        let share = |d: Option<Duration>| d.map(|d| d.as_secs_f64() / elapsed);
        let edge = used(before.edge_cpu, after.edge_cpu);
        let locator = used(before.locator_cpu, after.locator_cpu);
        let loadgen = used(before.loadgen_cpu, after.loadgen_cpu);
        let busy = used(before.machine.map(|m| m.busy), after.machine.map(|m| m.busy));
        let ours = [edge, locator, loadgen].into_iter().sum::<Option<Duration>>();
        let others = busy.zip(ours).map(|(busy, ours)| busy.saturating_sub(ours));
        StepFigures {
            subscribers,
            published: count(before.published_packets, after.published_packets),
            edge_received: rate(before.edge.packets_received, after.edge.packets_received),
            forwarded: rate(before.edge.packets_sent, after.edge.packets_sent),
            forwarded_bytes: rate(before.edge.bytes_sent, after.edge.bytes_sent),
            received: count(before.received_packets, after.received_packets),
            send_dropped: (after.edge.send_dropped - before.edge.send_dropped).max(0.0),
            edge_cpu: share(edge),
            locator_cpu: share(locator),
            loadgen_cpu: share(loadgen),
            others_cpu: share(others),
            steal: share(used(before.machine.map(|m| m.steal), after.machine.map(|m| m.steal))),
        }
    }

    /// What a lossless edge would forward: every packet published, to every subscriber.
    fn offered(&self) -> f64 {
        self.published * self.subscribers as f64
    }

    /// Share of the offered packets the edge forwarded.
    fn forwarded_share(&self) -> f64 {
        if self.offered() > 0.0 {
            self.forwarded / self.offered()
        } else {
            0.0
        }
    }

    /// Share of the forwarded packets the subscribers did not receive.
    fn loss(&self) -> f64 {
        if self.forwarded > 0.0 {
            (1.0 - self.received / self.forwarded).max(0.0)
        } else {
            0.0
        }
    }

    fn forwarded_mbps(&self) -> f64 {
        self.forwarded_bytes * 8.0 / 1e6
    }

    /// Forwarded packets per second per core of the edge's CPU.
    fn per_core(&self) -> Option<f64> {
        self.edge_cpu.filter(|c| *c > 0.0).map(|c| self.forwarded / c)
    }

    /// Milliseconds of edge CPU per second for each forwarded Mbit/s.
    fn cpu_ms_per_mbps(&self) -> Option<f64> {
        let mbps = self.forwarded_mbps();
        self.edge_cpu.filter(|_| mbps > 0.0).map(|c| c * 1000.0 / mbps)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::of(&args)?;
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let provenance = Provenance::collect();
    let overall = plan.run_budget() * u32::try_from(plan.repetitions).context("too many runs")?;
    let runs = tokio::time::timeout(overall, measure_all(&args, &bins, &plan))
        .await
        .with_context(|| format!("the benchmark did not finish within its deadline of {overall:?}"))??;

    let mut rows = Vec::new();
    let body = render(&args, &plan, &provenance, &runs, &mut rows);
    println!("\n{body}");
    if args.smoke {
        println!("smoke run: finished without errors; target not checked");
    }
    if let Some(path) = &args.markdown {
        report::write_section(path, SCENARIO, &body)?;
        report::write_summary(path, &rows)?;
        println!("wrote the {SCENARIO} section of {}", path.display());
    }
    Ok(())
}

async fn measure_all(args: &Args, bins: &Binaries, plan: &Plan) -> anyhow::Result<Vec<Vec<StepFigures>>> {
    let mut runs = Vec::with_capacity(plan.repetitions);
    for n in 1..=plan.repetitions {
        eprintln!("==> run {n}/{}: starting the locator and an edge", plan.repetitions);
        let steps = measure_once(args, bins, plan).await.with_context(|| format!("run {n}"))?;
        for step in &steps {
            print_step(n, plan.repetitions, step);
        }
        runs.push(steps);
    }
    Ok(runs)
}

async fn measure_once(args: &Args, bins: &Binaries, plan: &Plan) -> anyhow::Result<Vec<StepFigures>> {
    // Declared before the cluster, so on an early return the servers die before it is dropped.
    let database = args.database.create().await?;
    let mut cluster = Cluster::start(ClusterSpec {
        bins,
        pinning: &args.pinning,
        database_url: database.url(),
        edges: 1,
        startup_timeout: STARTUP_TIMEOUT,
        media_ports: true,
        edge_env: &[],
    })
    .await?;
    let client = LocatorClient::new(&cluster.locator_url());
    let host = procs::first_session(&mut cluster, &client, &user("publisher")).await?;
    let edge_id = procs::edge_id(1);
    if host.edge.id != edge_id {
        bail!("the session was placed on {}, not on {edge_id}", host.edge.id);
    }
    let options = Options { count_rtp_only: true, keepalive: Some(KEEPALIVE) };
    let session = duet_client::connect(&host.edge.url, &host.token).await.context("connecting the host")?;
    let publisher = LoadPeer::start_with(session, plan.video, options).await.context("starting the publisher")?;
    wait_for(&mut cluster, "the publisher's video to reach the edge", || {
        publisher.stats.packets_sent.load(Ordering::Relaxed) > 0
    })
    .await?;
    check_peer(&publisher, "the publisher")?;
    let media = cluster.edges[0].media_addr.map_or_else(|| "?".to_owned(), |a| a.to_string());
    eprintln!("    publishing {} to the edge's media port {media}", describe_video(plan.video));

    let mut subscribers: Vec<LoadPeer> = Vec::with_capacity(plan.steps.last().copied().unwrap_or(0));
    let mut figures = Vec::with_capacity(plan.steps.len());
    for &count in &plan.steps {
        eprintln!("    {count} subscribers: joining");
        while subscribers.len() < count {
            let name = format!("sub{}", subscribers.len() + 1);
            let guest = tokio::time::timeout(JOIN_TIMEOUT, join(&client, &host.session_id, &name))
                .await
                .with_context(|| format!("a guest's join took more than {JOIN_TIMEOUT:?}"))??;
            let peer = LoadPeer::start_with(guest, Publish::Nothing, options).await.context("starting a subscriber")?;
            subscribers.push(peer);
        }
        let floor: Vec<u64> = subscribers.iter().map(|p| p.stats.packets()).collect();
        wait_for(&mut cluster, "every subscriber to receive video", || {
            subscribers.iter().zip(&floor).all(|(p, floor)| p.stats.packets() > *floor)
        })
        .await?;
        eprintln!("    {count} subscribers: warm-up {}, then {}", fmt_duration(plan.warmup), fmt_duration(plan.window));
        tokio::time::sleep(plan.warmup).await;
        let before = Sample::take(&cluster, &publisher, &subscribers).await?;
        tokio::time::sleep(plan.window).await;
        let after = Sample::take(&cluster, &publisher, &subscribers).await?;
        cluster.check_alive()?;
        check_peer(&publisher, "the publisher")?;
        for (i, peer) in subscribers.iter().enumerate() {
            check_peer(peer, &format!("subscriber {}", i + 1))?;
        }
        let peers = after.edge.peers as usize;
        if peers != count + 1 {
            bail!("the edge holds {peers} media connections, not {}", count + 1);
        }
        figures.push(StepFigures::between(count, &before, &after));
    }
    drop(subscribers);
    drop(publisher);
    cluster.stop().await;
    drop(database);
    Ok(figures)
}

/// An error if the edge closed the peer's media or refused something.
fn check_peer(peer: &LoadPeer, who: &str) -> anyhow::Result<()> {
    if let Some(reason) = *peer.stats.closed.lock().expect("peer stats lock") {
        bail!("the edge closed {who}'s media ({reason:?})");
    }
    if let Some((code, message)) = peer.stats.errors.lock().expect("peer stats lock").first() {
        bail!("the edge refused a frame of {who}: error {code}: {message}");
    }
    Ok(())
}

/// Polls `done` until it holds, a server exits or [`MEDIA_TIMEOUT`] passes.
async fn wait_for(cluster: &mut Cluster, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    loop {
        if done() {
            return Ok(());
        }
        cluster.check_alive()?;
        if Instant::now() >= deadline {
            bail!("timed out after {MEDIA_TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(MEDIA_POLL).await;
    }
}

/// A guest joins the session through the locator and connects to the edge.
async fn join(client: &LocatorClient, session_id: &str, name: &str) -> anyhow::Result<duet_client::Session> {
    let placed = client.join_session(session_id, &user(name)).await.context("joining the session")?;
    duet_client::connect(&placed.edge.url, &placed.token).await.context("a guest connecting")
}

fn describe_video(video: Publish) -> String {
    match video {
        Publish::Video { fps, frame_bytes, keyframe_every } => format!(
            "VP8-framed video, {fps} frames/s of {} bytes (a keyframe every {keyframe_every})",
            fmt_count(frame_bytes as f64)
        ),
        Publish::Audio => "audio".to_owned(),
        Publish::Nothing => "nothing".to_owned(),
    }
}

fn fmt_percent(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// Megabits per second: `12.3`, or `1,027` from 100 on.
fn fmt_mbps(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        fmt_count(v)
    }
}

fn fmt_cores(v: f64) -> String {
    format!("{v:.2}")
}

fn print_step(n: usize, of: usize, f: &StepFigures) {
    println!(
        "run {n}/{of}, {} subscribers: published {}/s, edge received {}/s, forwarded {}/s ({} Mbit/s, {} of offered), \
         subscribers received {}/s (loss {}), send drops {}; per core {}/s, {} ms CPU per Mbit/s; CPU: edge {}, \
         locator {}, load generator {}; other processes {}, steal {}",
        f.subscribers,
        fmt_count(f.published),
        fmt_count(f.edge_received),
        fmt_count(f.forwarded),
        fmt_mbps(f.forwarded_mbps()),
        fmt_percent(f.forwarded_share()),
        fmt_count(f.received),
        fmt_percent(f.loss()),
        fmt_count(f.send_dropped),
        f.per_core().map_or_else(|| "?".to_owned(), fmt_count),
        f.cpu_ms_per_mbps().map_or_else(|| "?".to_owned(), |v| format!("{v:.2}")),
        fmt_share(f.edge_cpu),
        fmt_share(f.locator_cpu),
        fmt_share(f.loadgen_cpu),
        fmt_share(f.others_cpu),
        fmt_share(f.steal),
    );
}

/// The figures of one subscriber count over all runs.
fn step_runs(runs: &[Vec<StepFigures>], step: usize) -> Vec<StepFigures> {
    runs.iter().filter_map(|r| r.get(step).copied()).collect()
}

fn spread(figures: &[StepFigures], pick: impl Fn(&StepFigures) -> f64) -> Spread {
    Spread::of(figures.iter().map(pick)).expect("at least one run")
}

fn spread_opt(figures: &[StepFigures], pick: impl Fn(&StepFigures) -> Option<f64>) -> Option<Spread> {
    let values: Option<Vec<f64>> = figures.iter().map(pick).collect();
    Spread::of(values?)
}

fn fmt_spread(s: Option<Spread>, fmt: impl Fn(f64) -> String) -> String {
    s.map_or_else(|| "?".to_owned(), |s| s.format(fmt))
}

fn verdict(per_core: Option<Spread>) -> String {
    match per_core {
        Some(s) if s.median >= TARGET_PACKETS_PER_CORE => "yes".to_owned(),
        Some(_) => format!("no: below {}/s per core", fmt_count(TARGET_PACKETS_PER_CORE)),
        None => "unknown: the edge's CPU time could not be read".to_owned(),
    }
}

/// The summary: a row per subscriber count and how it was measured. Printed, and written between
/// the markers of the benchmarks document.
fn render(args: &Args, plan: &Plan, p: &Provenance, runs: &[Vec<StepFigures>], rows: &mut Vec<SummaryRow>) -> String {
    let mut out = String::new();
    out.push_str(&format!("Measured {} on {} ({} CPUs), revision {}.\n\n", p.date, p.cpu_model, p.cpus, p.revision));
    out.push_str(
        "| subscribers | published packets/s | forwarded packets/s, median (min–max) | forwarded of offered | \
         received by subscribers (loss) | forwarded Mbit/s | edge CPU (cores) | forwarded packets/s per core | \
         edge CPU per forwarded Mbit/s (ms/s) | send drops | load generator CPU |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut notes = Vec::new();
    for (i, count) in plan.steps.iter().enumerate() {
        let f = step_runs(runs, i);
        out.push_str(&format!(
            "| {count} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |\n",
            spread(&f, |s| s.published).format(fmt_count),
            spread(&f, |s| s.forwarded).format(fmt_count),
            spread(&f, StepFigures::forwarded_share).format(fmt_percent),
            spread(&f, |s| s.received).format(fmt_count),
            spread(&f, StepFigures::loss).format(fmt_percent),
            spread(&f, StepFigures::forwarded_mbps).format(fmt_mbps),
            fmt_spread(spread_opt(&f, |s| s.edge_cpu), fmt_cores),
            fmt_spread(spread_opt(&f, StepFigures::per_core), fmt_count),
            fmt_spread(spread_opt(&f, StepFigures::cpu_ms_per_mbps), |v| format!("{v:.2}")),
            spread(&f, |s| s.send_dropped).format(fmt_count),
            fmt_spread(spread_opt(&f, |s| s.loadgen_cpu), |v| fmt_share(Some(v))),
        ));
        let median = |pick: fn(&StepFigures) -> Option<f64>| fmt_share(spread_opt(&f, pick).map(|s| s.median));
        notes.push(format!(
            "{count}: locator {}, other processes {}, steal {}",
            median(|s| s.locator_cpu),
            median(|s| s.others_cpu),
            median(|s| s.steal)
        ));
    }
    let last = plan.steps.len() - 1;
    let top = plan.steps[last];
    let per_core = spread_opt(&step_runs(runs, last), StepFigures::per_core);
    let target = if args.smoke { "not checked (smoke run)".to_owned() } else { verdict(per_core) };
    let runs_n = plan.repetitions;
    rows.push(SummaryRow::new(
        p,
        SECTION,
        "Media: video packets forwarded per edge core, SRTP on, at the largest subscriber count".to_owned(),
        format!("≥ {}/s", fmt_count(TARGET_PACKETS_PER_CORE)),
        format!("{}/s at {top} subscribers", fmt_spread(per_core, fmt_count)),
        target.clone(),
    ));
    out.push_str(&format!(
        "\nTarget: at least {} forwarded video packets/s per core of the edge's CPU, SRTP on, judged at the \
         largest subscriber count ({top}): **{target}**, {} packets/s per core there. Figures are the median \
         and (min–max) over {runs_n} run{}, per second of each {} window; offered = published packets/s × \
         subscribers.\n\n",
        fmt_count(TARGET_PACKETS_PER_CORE),
        fmt_spread(per_core, fmt_count),
        if runs_n == 1 { "" } else { "s" },
        fmt_duration(plan.window),
    ));
    out.push_str(&format!("- Command: `{}`\n", p.command));
    out.push_str(&format!("- Pinning: {}.\n", args.pinning.describe(1)));
    out.push_str(&format!(
        "- Each run: a fresh locator and edge; one session whose host publishes {}; subscribers join in \
         steps ({}), and at each step, once every one receives video, {} warm-up and a {} window.\n",
        describe_video(plan.video),
        plan.steps.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        fmt_duration(plan.warmup),
        fmt_duration(plan.window),
    ));
    out.push_str(&format!(
        "- Other CPU during the window, share of one core (median), by subscriber count: {}.\n",
        notes.join("; ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_metrics() {
        let page = "# HELP duet_edge_media_peers x\nduet_edge_media_peers 3\nduet_edge_media_peers_opened_total 9\n\
                    duet_edge_media_packets_sent_total 1.5e3\n";
        assert_eq!(metric(page, METRIC_PEERS), Some(3.0));
        assert_eq!(metric(page, METRIC_PACKETS_SENT), Some(1500.0));
        assert_eq!(metric(page, METRIC_BYTES_SENT), None);
    }

    fn step(forwarded: f64, received: f64, edge_cpu: f64) -> StepFigures {
        StepFigures {
            subscribers: 30,
            published: 1000.0,
            edge_received: 1000.0,
            forwarded,
            forwarded_bytes: forwarded * 1250.0,
            received,
            send_dropped: 0.0,
            edge_cpu: Some(edge_cpu),
            locator_cpu: None,
            loadgen_cpu: None,
            others_cpu: None,
            steal: None,
        }
    }

    #[test]
    fn derives_rates_per_core_and_per_megabit() {
        let f = step(30_000.0, 29_700.0, 0.75);
        assert_eq!(f.offered(), 30_000.0);
        assert_eq!(f.forwarded_share(), 1.0);
        assert!((f.loss() - 0.01).abs() < 1e-9);
        assert_eq!(f.forwarded_mbps(), 300.0);
        assert_eq!(f.per_core(), Some(40_000.0));
        assert_eq!(f.cpu_ms_per_mbps(), Some(2.5));
        assert_eq!(step(100.0, 101.0, 0.0).loss(), 0.0);
        assert_eq!(step(100.0, 100.0, 0.0).per_core(), None);
    }

    #[test]
    fn verdicts() {
        let s = |v| Some(Spread { median: v, min: v, max: v });
        assert_eq!(verdict(s(31_000.0)), "yes");
        assert_eq!(verdict(s(20_000.0)), "no: below 30,000/s per core");
    }
}
