//! The `echo` scenario (S1, the echo floor): what duet's routing, token and session layers cost
//! on top of the websocket library they are built on.
//!
//! Two servers are measured the same way, alternately, each run on fresh processes:
//!
//! - **duet**: a locator (SQLite, no embedded edge) and one `duet-edge`. [`Args::pairs`] sessions
//!   are placed through the locator; in each, participant A (the host) and B (a guest) join over
//!   websockets, and A sends `send` frames to everyone else, which the edge relays to B as
//!   `message` frames: A → edge → B.
//! - **fastwebsockets**: the `echo_server` example of the fastwebsockets release duet is built
//!   on, compiled from its crates.io source when the benchmark runs (`scripts/bench` does it; the
//!   binary is passed with [`Args::echo_server`]) and listening where the example does,
//!   127.0.0.1:8080. [`Args::pairs`] clients each send binary messages and read them back:
//!   client → server → client.
//!
//! Both are driven by the same client code (`duet_ws`, itself on fastwebsockets) in a closed
//! loop: each pair keeps [`Args::window`] messages of [`Args::message_bytes`] payload bytes in
//! flight, sending the next as soon as one arrives. A message carries its send instant, so each
//! arrival gives a latency. After a warm-up, a window counts the arrivals (messages/s) and
//! records their latencies in an HDR histogram; the CPU time of the server process(es) and of
//! the load generator is read from `/proc` before and after.
//!
//! Both servers run on the server CPU (`taskset -c`), the load generator on its own. The target:
//! duet relays at least [`TARGET_RATIO`] of the messages per second the bare echo server echoes.
//! One load-generator core cannot saturate the echo server (it echoes a message for about half
//! the CPU the client spends sending and reading it), so the servers are compared by messages
//! per second of their own CPU time (per server core), which is their cost per message whether
//! or not they are saturated; the raw rates are reported beside it. The verdict is the median of
//! the per-run ratios (duet run `n` against echo run `n`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use duet_client::LocatorClient;
use duet_proto::session::{kind, ClientFrame};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::database::LocatorDb;
use crate::procs::{
    self, user, Binaries, Cluster, ClusterSpec, CpuTimes, Pinning, Server, STARTUP_TIMEOUT, TEARDOWN_ALLOWANCE,
};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{self, fmt_count, fmt_duration, fmt_millis, fmt_ms, fmt_share, parse_duration, Latency, Spread};

/// Name of this scenario's section in the benchmarks document.
const SCENARIO: &str = "echo";
/// The anchor of its section.
const SECTION: &str = "#echo-floor-s1";
/// duet's messages/s against the bare echo server's, at least.
pub const TARGET_RATIO: f64 = 0.97;
/// Where fastwebsockets' `echo_server` example listens; it takes no arguments.
const ECHO_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// The variable naming the echo server binary, as `scripts/bench` sets it.
const ENV_ECHO_SERVER: &str = "DUET_BENCH_FASTWEBSOCKETS_ECHO";
/// Limits lifted on the edge: the benchmark measures the relay, not the limiters (the message
/// rate limit would close a sender above 500 messages/s, the per-address limit refuse more than
/// 128 pairs from loopback, and B, which never sends, would be closed as idle after 90 s).
const EDGE_ENV: &[(&str, &str)] =
    &[("DUET_MAX_MESSAGES_PER_SECOND", "0"), ("DUET_MAX_CONNECTIONS_PER_ADDRESS", "0"), ("DUET_IDLE_TIMEOUT", "1h")];
/// Open files each process needs beyond two per pair.
const FD_HEADROOM: u64 = 1024;

/// Every payload starts with the nanoseconds from the run's base instant to its send.
const STAMP_BYTES: usize = 8;

/// Time a pair may go without an arrival before the run fails: the server stalled or dropped it.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Client-side websocket limits: generous, the servers enforce their own.
const CLIENT_LIMITS: duet_ws::Limits = duet_ws::Limits { max_message_bytes: 16 << 20, max_queued_bytes: 64 << 20 };

/// `--smoke`: one short run of each server.
const SMOKE_PAIRS: usize = 10;
const SMOKE_WARMUP: Duration = Duration::from_millis(500);
const SMOKE_DURATION: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sender-receiver pairs (duet: sessions of two; echo: connections).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pairs: u32,
    /// Payload bytes of each message (at least 8: the send instant).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(8..=1_048_000))]
    message_bytes: u32,
    /// Messages each pair keeps in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    window: u32,
    /// Warm-up before each measurement (`500ms`, `2s`, or seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Measurement window of each run.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    duration: Duration,
    /// Runs of each server, alternating, each on fresh processes.
    #[arg(long, short = 'r', default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repetitions: u32,
    /// One short run of each server (10 pairs, 0.5 s warm-up, 1 s window): checks that it works,
    /// not the target.
    #[arg(long, conflicts_with = "markdown")]
    smoke: bool,
    /// Rewrite this scenario's section of this Markdown file (docs/benchmarks.md).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    #[command(flatten)]
    database: LocatorDb,
    /// Directory of duet-locator and duet-edge [default: this executable's directory].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// fastwebsockets' `echo_server` example, built from its crates.io source (`scripts/bench`
    /// builds it under target/bench-peers/).
    #[arg(long, env = ENV_ECHO_SERVER, value_name = "PATH")]
    echo_server: PathBuf,
    #[command(flatten)]
    pub pinning: Pinning,
}

/// What every run does, after `--smoke` is applied.
#[derive(Debug, Clone, Copy)]
struct Plan {
    pairs: usize,
    message_bytes: usize,
    window: usize,
    warmup: Duration,
    duration: Duration,
    repetitions: usize,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        let (pairs, warmup, duration, repetitions) = if args.smoke {
            (SMOKE_PAIRS.min(args.pairs as usize), SMOKE_WARMUP, SMOKE_DURATION, 1)
        } else {
            (args.pairs as usize, args.warmup, args.duration, args.repetitions as usize)
        };
        Plan {
            pairs,
            message_bytes: args.message_bytes as usize,
            window: args.window as usize,
            warmup,
            duration,
            repetitions,
        }
    }

    /// An upper bound for one run of one server, from start to teardown.
    fn run_budget(&self) -> Duration {
        STARTUP_TIMEOUT + self.warmup + self.duration + STALL_TIMEOUT * 2 + TEARDOWN_ALLOWANCE
    }
}

/// The two servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// duet's session protocol: `send` from A, `message` to B.
    Duet,
    /// Bare websocket messages, echoed on the connection they came on.
    Echo,
}

impl Wire {
    fn name(self) -> &'static str {
        match self {
            Wire::Duet => "duet",
            Wire::Echo => "fastwebsockets echo",
        }
    }

    /// The websocket message that carries `payload`.
    fn frame(self, payload: &[u8]) -> Bytes {
        match self {
            Wire::Duet => ClientFrame::Send { message_id: 0, to: 0, payload: Bytes::copy_from_slice(payload) }
                .encode()
                .expect("a payload below 4 GiB encodes"),
            Wire::Echo => Bytes::copy_from_slice(payload),
        }
    }

    /// The payload of an arrival; `Ok(None)` for a frame that is not a relayed message (duet's
    /// `participant_joined` and the like).
    fn payload(self, frame: &[u8]) -> anyhow::Result<Option<&[u8]>> {
        match self {
            Wire::Echo => Ok(Some(frame)),
            Wire::Duet => match frame.first() {
                Some(&kind::MESSAGE) if frame.len() >= procs::MESSAGE_HEADER => {
                    Ok(Some(&frame[procs::MESSAGE_HEADER..]))
                }
                Some(&kind::ERROR) => bail!("the edge answered with an error frame: {frame:?}"),
                Some(_) => Ok(None),
                None => bail!("an empty message from the edge"),
            },
        }
    }
}

type Reader = duet_ws::ClientReader;

/// One sender and one receiver: two connections (duet) or one (echo).
struct Pair {
    wire: Wire,
    sender: duet_ws::Writer,
    receiver: Reader,
    /// duet: A's own reader, held so its connection stays open; nothing is read from it.
    _sender_reader: Option<Reader>,
}

/// What one run of one server measured.
#[derive(Debug, Clone)]
struct RunFigures {
    messages_per_sec: f64,
    latency: Latency,
    /// Share of one core: the edge (duet) or the echo server.
    server_cpu: Option<f64>,
    /// The server's CPU time per message counted in the window, in microseconds: user space
    /// (its own code) and system (the kernel's, the network stack's work in its system calls).
    server_user_us: Option<f64>,
    server_system_us: Option<f64>,
    /// duet only: the locator, idle but for heartbeats.
    locator_cpu: Option<f64>,
    loadgen_cpu: Option<f64>,
    others_cpu: Option<f64>,
    steal: Option<f64>,
}

impl RunFigures {
    /// Messages per second of the server's own CPU time: its cost per message, whether or not
    /// it was saturated.
    fn per_core(&self) -> Option<f64> {
        self.server_cpu.filter(|c| *c > 0.0).map(|c| self.messages_per_sec / c)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::of(&args);
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    if !args.echo_server.is_file() {
        bail!(
            "{} not found: `scripts/bench echo` builds fastwebsockets' echo_server example and passes it \
             (or set {ENV_ECHO_SERVER})",
            args.echo_server.display()
        );
    }
    let want = 2 * plan.pairs as u64 + FD_HEADROOM;
    let fd_limit = procs::raise_fd_limit(want)?;
    if fd_limit < want {
        bail!("{} pairs need {want} open files and the limit is {fd_limit}: use fewer --pairs", plan.pairs);
    }
    let provenance = Provenance::collect();
    let mut results: Vec<(RunFigures, RunFigures)> = Vec::with_capacity(plan.repetitions);
    for n in 1..=plan.repetitions {
        let budget = plan.run_budget();
        eprintln!("==> run {n}/{}: duet, {} sessions of two", plan.repetitions, plan.pairs);
        let duet = tokio::time::timeout(budget, measure_duet(&args, &bins, plan))
            .await
            .map_err(|_| anyhow::anyhow!("the duet run overran its {budget:?} budget"))?
            .with_context(|| format!("duet, run {n}"))?;
        print_run(Wire::Duet, n, plan.repetitions, &duet);
        eprintln!("==> run {n}/{}: fastwebsockets echo, {} connections", plan.repetitions, plan.pairs);
        let echo = tokio::time::timeout(budget, measure_echo(&args, plan))
            .await
            .map_err(|_| anyhow::anyhow!("the echo run overran its {budget:?} budget"))?
            .with_context(|| format!("fastwebsockets echo, run {n}"))?;
        print_run(Wire::Echo, n, plan.repetitions, &echo);
        results.push((duet, echo));
    }
    let mut rows = Vec::new();
    let section = render(&args, plan, &provenance, &results, &mut rows);
    println!("\n{section}");
    if let Some(path) = &args.markdown {
        report::write_section(path, SCENARIO, &section)?;
        report::write_summary(path, &rows)?;
        eprintln!("wrote the {SCENARIO} section of {}", path.display());
    }
    Ok(())
}

async fn measure_duet(args: &Args, bins: &Binaries, plan: Plan) -> anyhow::Result<RunFigures> {
    // Declared before the cluster, so on an early return the servers die before it is dropped.
    let database = args.database.create().await?;
    let mut cluster = Cluster::start(ClusterSpec {
        bins,
        pinning: &args.pinning,
        database_url: database.url(),
        edges: 1,
        startup_timeout: STARTUP_TIMEOUT,
        media_ports: false,
        edge_env: EDGE_ENV,
    })
    .await?;
    let client = LocatorClient::new(&cluster.locator_url());
    let mut pairs = Vec::with_capacity(plan.pairs);
    for i in 0..plan.pairs {
        let host_req = user(&format!("a{i}"));
        let host = if i == 0 {
            procs::first_session(&mut cluster, &client, &host_req).await?
        } else {
            client.create_session(&host_req).await.context("placing a session")?
        };
        let guest =
            client.join_session(&host.session_id, &user(&format!("b{i}"))).await.context("joining a session")?;
        let a = procs::join_placed(&host, CLIENT_LIMITS, STALL_TIMEOUT).await.context("the host's join")?;
        let b = procs::join_placed(&guest, CLIENT_LIMITS, STALL_TIMEOUT).await.context("the guest's join")?;
        pairs.push(Pair { wire: Wire::Duet, sender: a.writer().clone(), receiver: b, _sender_reader: Some(a) });
    }
    cluster.check_alive()?;
    let edge = &cluster.edges[0];
    let figures = drive(pairs, plan, || (edge.cpu_times(), cluster.locator.cpu_time())).await;
    cluster.check_alive()?;
    cluster.stop().await;
    drop(database);
    figures
}

async fn measure_echo(args: &Args, plan: Plan) -> anyhow::Result<RunFigures> {
    // The example's address is fixed; a taken port would measure whoever holds it.
    drop(TcpListener::bind(ECHO_ADDR).with_context(|| {
        format!("{ECHO_ADDR} is taken: fastwebsockets' echo_server example listens there and nowhere else")
    })?);
    let dir =
        tempfile::Builder::new().prefix("duet-bench-echo-").tempdir().context("creating a temporary directory")?;
    let mut server = Server::spawn(
        "fastwebsockets echo_server".to_owned(),
        &args.echo_server,
        &[],
        &[],
        &args.pinning.server_cpus,
        dir.path().join("echo.log"),
        ECHO_ADDR,
    )?;
    server.wait_listening(Instant::now() + STARTUP_TIMEOUT).await?;
    let url = format!("ws://{ECHO_ADDR}/");
    let mut pairs = Vec::with_capacity(plan.pairs);
    for _ in 0..plan.pairs {
        let reader = duet_ws::connect(&url, &[], CLIENT_LIMITS).await.context("connecting to the echo server")?;
        pairs.push(Pair { wire: Wire::Echo, sender: reader.writer().clone(), receiver: reader, _sender_reader: None });
    }
    let figures = drive(pairs, plan, || (server.cpu_times(), None)).await;
    server.check_alive()?;
    server.stop().await;
    figures
}

/// What one pair counted in the window.
struct PairTally {
    received: u64,
    latencies: Histogram<u64>,
}

/// Runs the closed loop on every pair: warm-up, then the window; `cpu` reads the server's (and,
/// for duet, the locator's) CPU time.
async fn drive(
    pairs: Vec<Pair>,
    plan: Plan,
    cpu: impl Fn() -> (Option<CpuTimes>, Option<Duration>),
) -> anyhow::Result<RunFigures> {
    let base = Instant::now();
    let measure_from = base + plan.warmup;
    let end = measure_from + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for pair in pairs {
        tasks.spawn(pair_loop(pair, plan, base, measure_from, end));
    }
    tokio::time::sleep_until(measure_from).await;
    let before = (cpu(), procs::own_cpu_time(), procs::machine_cpu(), Instant::now());
    tokio::time::sleep_until(end).await;
    let after = (cpu(), procs::own_cpu_time(), procs::machine_cpu(), Instant::now());
    let mut received = 0;
    let mut latencies = stats::histogram();
    while let Some(done) = tasks.join_next().await {
        let tally = done.context("a pair's task panicked")??;
        received += tally.received;
        latencies.add(&tally.latencies).context("merging latency histograms")?;
    }
    let wall = (after.3 - before.3).as_secs_f64();
    let share = |a: Option<Duration>, b: Option<Duration>| Some((b? - a?).as_secs_f64() / wall);
    let server_times = before.0 .0.zip(after.0 .0).map(|(b, a)| a.since(b));
    let server_cpu = server_times.map(|t| t.total().as_secs_f64() / wall);
    let per_message = |d: Duration| (received > 0).then(|| d.as_secs_f64() * 1e6 / received as f64);
    let locator_cpu = share(before.0 .1, after.0 .1);
    let loadgen_cpu = share(before.1, after.1);
    let (others_cpu, steal) = match (before.2, after.2) {
        (Some(b), Some(a)) => {
            let busy = (a.busy - b.busy).as_secs_f64() / wall;
            let ours = server_cpu.unwrap_or(0.0) + locator_cpu.unwrap_or(0.0) + loadgen_cpu.unwrap_or(0.0);
            (Some((busy - ours).max(0.0)), Some((a.steal - b.steal).as_secs_f64() / wall))
        }
        _ => (None, None),
    };
    Ok(RunFigures {
        messages_per_sec: received as f64 / plan.duration.as_secs_f64(),
        latency: Latency::of(&latencies),
        server_cpu,
        server_user_us: server_times.and_then(|t| per_message(t.user)),
        server_system_us: server_times.and_then(|t| per_message(t.system)),
        locator_cpu,
        loadgen_cpu,
        others_cpu,
        steal,
    })
}

/// One pair's closed loop: [`Plan::window`] messages in flight until `end`, then the stragglers
/// are read; arrivals in `[measure_from, end)` are counted.
async fn pair_loop(
    mut pair: Pair,
    plan: Plan,
    base: Instant,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<PairTally> {
    let mut payload = BytesMut::zeroed(plan.message_bytes);
    let send = |pair: &Pair, payload: &mut BytesMut| -> anyhow::Result<()> {
        let stamp = u64::try_from((Instant::now() - base).as_nanos()).unwrap_or(u64::MAX);
        payload[..STAMP_BYTES].copy_from_slice(&stamp.to_be_bytes());
        pair.sender.send(pair.wire.frame(payload)).context("sending")?;
        Ok(())
    };
    for _ in 0..plan.window {
        send(&pair, &mut payload)?;
    }
    let mut in_flight = plan.window;
    let mut tally = PairTally { received: 0, latencies: stats::histogram() };
    while in_flight > 0 {
        let frame = match tokio::time::timeout(STALL_TIMEOUT, pair.receiver.next()).await {
            Err(_) => bail!("{}: no message for {STALL_TIMEOUT:?} with {in_flight} in flight", pair.wire.name()),
            Ok(Ok(duet_ws::Message::Binary(frame))) => frame,
            Ok(Ok(other)) => bail!("{}: unexpected {other:?}", pair.wire.name()),
            Ok(Err(e)) => bail!("{}: the connection failed: {e}", pair.wire.name()),
        };
        let Some(body) = pair.wire.payload(&frame)? else { continue };
        if body.len() != plan.message_bytes {
            bail!(
                "{}: a message of {} payload bytes arrived, {} were sent",
                pair.wire.name(),
                body.len(),
                plan.message_bytes
            );
        }
        let now = Instant::now();
        let stamp = u64::from_be_bytes(body[..STAMP_BYTES].try_into().expect("8 bytes"));
        if now >= measure_from && now < end {
            tally.received += 1;
            let sent = base + Duration::from_nanos(stamp);
            stats::record(&mut tally.latencies, now.saturating_duration_since(sent));
        }
        if now < end {
            send(&pair, &mut payload)?;
        } else {
            in_flight -= 1;
        }
    }
    Ok(tally)
}

fn print_run(wire: Wire, n: usize, of: usize, f: &RunFigures) {
    eprintln!(
        "{} run {n}/{of}: {} messages/s, {} per server core (user {} µs, system {} µs per message), p50 {}, p99 {} (CPU: server {}, load generator {}{}; other processes {}, steal {})",
        wire.name(),
        fmt_count(f.messages_per_sec),
        f.per_core().map_or_else(|| "n/a".to_owned(), fmt_count),
        f.server_user_us.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}")),
        f.server_system_us.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}")),
        fmt_ms(f.latency.p50 as f64),
        fmt_ms(f.latency.p99 as f64),
        fmt_share(f.server_cpu),
        fmt_share(f.loadgen_cpu),
        f.locator_cpu.map(|c| format!(", locator {}", fmt_share(Some(c)))).unwrap_or_default(),
        fmt_share(f.others_cpu),
        fmt_share(f.steal),
    );
}

fn spread(runs: &[&RunFigures], pick: impl Fn(&RunFigures) -> f64) -> Spread {
    Spread::of(runs.iter().map(|f| pick(f))).expect("at least one run")
}

fn spread_opt(runs: &[&RunFigures], pick: impl Fn(&RunFigures) -> Option<f64>) -> Option<Spread> {
    runs.iter().map(|f| pick(f)).collect::<Option<Vec<f64>>>().and_then(Spread::of)
}

/// The per-run ratios of duet's messages/s to the echo server's.
fn throughput_ratios(results: &[(RunFigures, RunFigures)]) -> Option<Spread> {
    Spread::of(results.iter().map(|(duet, echo)| duet.messages_per_sec / echo.messages_per_sec))
}

/// The per-run ratios of duet's messages per server core to the echo server's; `None` if a
/// server's CPU time could not be read.
fn per_core_ratios(results: &[(RunFigures, RunFigures)]) -> Option<Spread> {
    results
        .iter()
        .map(|(duet, echo)| Some(duet.per_core()? / echo.per_core()?))
        .collect::<Option<Vec<f64>>>()
        .and_then(Spread::of)
}

/// A load generator at this share of its core or more may be what limits a run.
const LOADGEN_SATURATED: f64 = 0.9;

fn verdict(ratio: Option<Spread>) -> String {
    match ratio {
        Some(r) if r.median >= TARGET_RATIO => "yes".to_owned(),
        Some(_) => format!("no: below {TARGET_RATIO:.2}x"),
        None => "not measured".to_owned(),
    }
}

fn render(
    args: &Args,
    plan: Plan,
    p: &Provenance,
    results: &[(RunFigures, RunFigures)],
    rows: &mut Vec<SummaryRow>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!("Measured {} on {} ({} CPUs), revision {}.\n\n", p.date, p.cpu_model, p.cpus, p.revision));
    out.push_str(
        "| server | path | messages/s, median (min–max) | server CPU | messages/s per server core | server CPU per message, user (µs) | server CPU per message, system (µs) | p50 (ms) | p99 (ms) | p99.9 (ms) | load generator CPU |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for wire in [Wire::Duet, Wire::Echo] {
        let runs: Vec<&RunFigures> = results.iter().map(|(d, e)| if wire == Wire::Duet { d } else { e }).collect();
        let path = match wire {
            Wire::Duet => "A → edge → B, two participants per session",
            Wire::Echo => "client → server → client",
        };
        let shares = |pick: fn(&RunFigures) -> Option<f64>| {
            spread_opt(&runs, pick).map_or_else(|| "n/a".to_owned(), |s| s.format(|v| fmt_share(Some(v))))
        };
        let micros = |pick: fn(&RunFigures) -> Option<f64>| {
            spread_opt(&runs, pick).map_or_else(|| "n/a".to_owned(), |s| s.format(|v| format!("{v:.2}")))
        };
        out.push_str(&format!(
            "| {} | {path} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            wire.name(),
            spread(&runs, |f| f.messages_per_sec).format(fmt_count),
            shares(|f| f.server_cpu),
            spread_opt(&runs, RunFigures::per_core).map_or_else(|| "n/a".to_owned(), |s| s.format(fmt_count)),
            micros(|f| f.server_user_us),
            micros(|f| f.server_system_us),
            spread(&runs, |f| f.latency.p50 as f64).format(fmt_millis),
            spread(&runs, |f| f.latency.p99 as f64).format(fmt_millis),
            spread(&runs, |f| f.latency.p999 as f64).format(fmt_millis),
            shares(|f| f.loadgen_cpu),
        ));
    }
    let per_core = per_core_ratios(results);
    let throughput = throughput_ratios(results);
    let target = if args.smoke { "not checked (smoke run)".to_owned() } else { verdict(per_core) };
    let n = plan.repetitions;
    let fmt_ratio = |r: Option<Spread>| r.map_or_else(|| "n/a".to_owned(), |r| r.format(|v| format!("{v:.3}x")));
    rows.push(SummaryRow::new(
        p,
        SECTION,
        "S1 echo floor: duet/fastwebsockets echo, messages per server core".to_owned(),
        format!("≥ {TARGET_RATIO:.2}x"),
        fmt_ratio(per_core),
        target.clone(),
    ));
    out.push_str(&format!(
        "\nTarget: duet relays at least {TARGET_RATIO:.2}x the messages/s of fastwebsockets' own echo server \
         example, per core of server CPU: **{target}**, duet/echo = {} per server core, {} in raw messages/s \
         (medians and min–max of the per-run ratios). Figures are the median and (min–max) over {n} run{} of \
         each server, alternating.\n\n",
        fmt_ratio(per_core),
        fmt_ratio(throughput),
        if n == 1 { "" } else { "s" },
    ));
    let saturated = results
        .iter()
        .flat_map(|(d, e)| [d, e])
        .filter(|f| f.loadgen_cpu.is_some_and(|c| c >= LOADGEN_SATURATED))
        .count();
    if saturated > 0 {
        out.push_str(&format!(
            "- The load generator used {}% or more of its core in {saturated} of {} runs: there the client, not \
             the server, set the pace, and only the figures per server core compare the servers' costs.\n",
            LOADGEN_SATURATED * 100.0,
            results.len() * 2,
        ));
    }
    out.push_str(
        "- Server CPU per message: the server's CPU time in the window over the messages counted in it, from \
         `/proc/<pid>/stat` (10 ms ticks): user is the server's own code, system the kernel's work in its \
         system calls (loopback TCP included). The two add up to the inverse of the figure per server core.\n",
    );
    out.push_str(&format!("- Command: `{}`\n", p.command));
    out.push_str(&format!(
        "- Pinning: the servers on CPU {} (`taskset -c {}`: duet's locator and edge, or the echo server), the load \
         generator on CPU {} (pins itself with `taskset -a -p -c {}`).\n",
        args.pinning.server_cpus, args.pinning.server_cpus, args.pinning.loadgen_cpus, args.pinning.loadgen_cpus
    ));
    out.push_str(&format!(
        "- Each run: fresh processes; {} pairs, each keeping {} messages of {} payload bytes in flight (closed \
         loop); {} warm-up, then a {} window. Latency is from a message's send to its arrival at the receiver.\n",
        plan.pairs,
        plan.window,
        plan.message_bytes,
        fmt_duration(plan.warmup),
        fmt_duration(plan.duration),
    ));
    let duet: Vec<&RunFigures> = results.iter().map(|(d, _)| d).collect();
    let all: Vec<&RunFigures> = results.iter().flat_map(|(d, e)| [d, e]).collect();
    let median = |runs: &[&RunFigures], pick: fn(&RunFigures) -> Option<f64>| {
        fmt_share(spread_opt(runs, pick).map(|s| s.median))
    };
    out.push_str(&format!(
        "- Other CPU during the windows, share of one core (median): duet's locator {}; other processes {}, \
         steal {}.\n",
        median(&duet, |f| f.locator_cpu),
        median(&all, |f| f.others_cpu),
        median(&all, |f| f.steal),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duet_frames_carry_the_payload_after_the_send_header() {
        let frame = Wire::Duet.frame(&[7; 16]);
        assert_eq!(frame.len(), 17 + 16);
        assert_eq!(frame[0], 0x02);
        let mut relayed = vec![kind::MESSAGE];
        relayed.extend_from_slice(&[0; procs::MESSAGE_HEADER - 1]);
        relayed.extend_from_slice(&[7; 16]);
        assert_eq!(Wire::Duet.payload(&relayed).unwrap(), Some(&[7u8; 16][..]));
        assert_eq!(Wire::Duet.payload(&[0x82, 0, 0]).unwrap(), None);
        assert!(Wire::Duet.payload(&[kind::ERROR, 0, 1]).is_err());
        assert!(Wire::Duet.payload(&[]).is_err());
    }

    #[test]
    fn echo_frames_are_the_payload() {
        assert_eq!(&Wire::Echo.frame(&[1, 2, 3])[..], &[1, 2, 3]);
        assert_eq!(Wire::Echo.payload(&[1, 2, 3]).unwrap(), Some(&[1u8, 2, 3][..]));
    }

    #[test]
    fn the_verdict_uses_the_median_ratio() {
        let r = |median| Some(Spread { median, min: median - 0.1, max: median + 0.1 });
        assert_eq!(verdict(r(0.97)), "yes");
        assert_eq!(verdict(r(0.96)), "no: below 0.97x");
        assert_eq!(verdict(None), "not measured");
    }
}
