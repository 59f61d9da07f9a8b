//! The `idle` scenario (S4, idle scale): what an idle participant costs the edge in memory, and
//! how fast the edge takes new participants.
//!
//! Each run starts a fresh locator (SQLite, no embedded edge) and one `duet-edge` (its limit of
//! connections per client address lifted, since every connection comes from loopback). Then:
//!
//! 1. [`Args::participants`] places are taken through the locator, in sessions of
//!    [`Args::per_session`] (a host creates each session, guests join it), [`PLACEMENT_CONCURRENCY`]
//!    requests at a time. The edge has seen no websocket yet; its resident set size (`VmRSS`
//!    from `/proc/<pid>/status`) is read: the *before* figure.
//! 2. Every participant connects and joins ([`Args::concurrency`] handshakes at a time), from
//!    [`Args::sources`] loopback source addresses in turn (127.A.B.1, 127.A.B.2, ..., with A and B
//!    drawn at random for each run), since one source address reaches the edge's one port from at
//!    most the ephemeral port range. Fresh addresses each run keep the previous runs' client
//!    ports, closed and waiting in TIME_WAIT for a minute, out of the kernel's port search.
//!    Handshakes per second = participants / time from the first connect to the last `welcome`.
//! 3. Every participant sends one `ping` and reads until its `pong` (past the `participant_joined`
//!    frames of later joiners), so every connection has been read from and written to. The edge's
//!    RSS is read again: the *after* figure.
//!
//! User-space memory per connection = (after − before) / participants: what the edge's process
//! holds for each idle participant (buffers, tasks, session state), not the kernel's socket
//! buffers. The open-file limit of the load generator (and of the servers it starts, which
//! inherit it) is raised for the run to the participants plus [`FD_HEADROOM`]: each process holds
//! one end of every connection. Where the hard limit cannot be raised, the run takes the most
//! whole sessions that fit and says so.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use duet_client::LocatorClient;
use duet_proto::session::{kind, ClientFrame, SESSION_PROTOCOL_VERSION};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::database::LocatorDb;
use crate::procs::{self, user, Binaries, Cluster, ClusterSpec, Pinning, STARTUP_TIMEOUT, TEARDOWN_ALLOWANCE};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{fmt_count, Spread};

/// Name of this scenario's section in the benchmarks document.
const SCENARIO: &str = "idle";
/// The anchor of its section.
const SECTION: &str = "#idle-scale-s4";
/// Target on the reference machine: user-space memory per idle participant, at most.
const TARGET_BYTES_PER_CONNECTION: f64 = 12.0 * 1024.0;
/// Limits lifted on the edge: every connection comes from loopback, and a participant that sends
/// nothing for the default 90 s would be closed before a large run ends.
const EDGE_ENV: &[(&str, &str)] = &[("DUET_MAX_CONNECTIONS_PER_ADDRESS", "0"), ("DUET_IDLE_TIMEOUT", "1h")];
/// Placement requests in flight at once.
const PLACEMENT_CONCURRENCY: usize = 32;
/// File descriptors each process needs beyond one per participant (the load generator holds one
/// end of each connection, the edge the other; both have the same limit).
const FD_HEADROOM: u64 = 1024;
/// Time one handshake, join or ping may take before the run fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Client-side websocket limits: small, since the load generator holds every connection too.
const CLIENT_LIMITS: duet_ws::Limits = duet_ws::Limits { max_message_bytes: 1 << 20, max_queued_bytes: 1 << 20 };

/// `--smoke`: one small run.
const SMOKE_PARTICIPANTS: u32 = 500;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Participants joined and left idle.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(2..=500_000))]
    participants: u32,
    /// Participants per session (a host and guests).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=50))]
    per_session: u32,
    /// Loopback source addresses the connections come from, in 127.0.0.0/8 (fresh ones each run).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=200))]
    sources: u8,
    /// Handshakes (connect, upgrade, join, welcome) in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Runs, each with a fresh locator and edge.
    #[arg(long, short = 'r', default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repetitions: u32,
    /// One run with 500 participants: checks that it works, not the target.
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
    #[command(flatten)]
    pub pinning: Pinning,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    participants: usize,
    per_session: usize,
    repetitions: usize,
    /// Participants asked for and the open-file limit, when that limit allowed fewer.
    capped_from: Option<(usize, u64)>,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        let participants = if args.smoke { SMOKE_PARTICIPANTS.min(args.participants) } else { args.participants };
        Plan {
            participants: participants as usize,
            per_session: args.per_session as usize,
            repetitions: if args.smoke { 1 } else { args.repetitions as usize },
            capped_from: None,
        }
    }

    /// At most as many participants as `fd_limit` lets each process hold, in whole sessions.
    fn capped(mut self, fd_limit: u64) -> Plan {
        let room = usize::try_from(fd_limit.saturating_sub(FD_HEADROOM)).unwrap_or(usize::MAX);
        if room < self.participants {
            self.capped_from = Some((self.participants, fd_limit));
            self.participants = (room / self.per_session * self.per_session).max(self.per_session);
        }
        self
    }

    /// An upper bound for one run: generous per participant (placement, handshake and ping at a
    /// few thousand per second each), plus startup and teardown.
    fn run_budget(&self) -> Duration {
        STARTUP_TIMEOUT + STEP_TIMEOUT * 3 + Duration::from_millis(3 * self.participants as u64) + TEARDOWN_ALLOWANCE
    }
}

#[derive(Debug, Clone)]
struct RunFigures {
    rss_before: u64,
    rss_after: u64,
    participants: usize,
    handshakes_per_sec: f64,
    placements_per_sec: f64,
}

impl RunFigures {
    fn bytes_per_connection(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.participants as f64
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let plan = Plan::of(&args);
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let fd_limit = procs::raise_fd_limit(plan.participants as u64 + FD_HEADROOM)?;
    let plan = plan.capped(fd_limit);
    if let Some((asked, _)) = plan.capped_from {
        eprintln!(
            "warning: the open-file limit is {fd_limit} and cannot be raised (no CAP_SYS_RESOURCE): {} participants \
             instead of {asked}",
            plan.participants
        );
    }
    let provenance = Provenance::collect();
    let mut runs = Vec::with_capacity(plan.repetitions);
    for n in 1..=plan.repetitions {
        eprintln!(
            "==> run {n}/{}: {} participants in sessions of {}",
            plan.repetitions, plan.participants, plan.per_session
        );
        let budget = plan.run_budget();
        let figures = tokio::time::timeout(budget, measure_once(&args, &bins, plan))
            .await
            .map_err(|_| anyhow::anyhow!("run {n} overran its {budget:?} budget"))?
            .with_context(|| format!("run {n}"))?;
        eprintln!(
            "run {n}/{}: {} bytes per connection (RSS {} MiB before, {} MiB after), {} handshakes/s, {} placements/s",
            plan.repetitions,
            fmt_count(figures.bytes_per_connection()),
            figures.rss_before >> 20,
            figures.rss_after >> 20,
            fmt_count(figures.handshakes_per_sec),
            fmt_count(figures.placements_per_sec),
        );
        runs.push(figures);
    }
    let mut rows = Vec::new();
    let section = render(&args, plan, &provenance, &runs, &mut rows);
    println!("\n{section}");
    if let Some(path) = &args.markdown {
        report::write_section(path, SCENARIO, &section)?;
        report::write_summary(path, &rows)?;
        eprintln!("wrote the {SCENARIO} section of {}", path.display());
    }
    Ok(())
}

type Reader = duet_ws::ClientReader;

async fn measure_once(args: &Args, bins: &Binaries, plan: Plan) -> anyhow::Result<RunFigures> {
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
    procs::first_session(&mut cluster, &client, &user("warm-up")).await?;

    let started = Instant::now();
    let places = place_all(&client, plan).await?;
    let placements_per_sec = places.len() as f64 / started.elapsed().as_secs_f64();
    cluster.check_alive()?;
    let edge_pid = cluster.edges[0].pid().context("the edge has exited")?;
    let rss_before = procs::rss_of(edge_pid)?;

    let (a, b) = (rand::random_range(1..=254u8), rand::random_range(0..=255u8));
    let sources: Vec<IpAddr> = (0..args.sources).map(|i| IpAddr::V4(Ipv4Addr::new(127, a, b, 1 + i))).collect();
    let started = Instant::now();
    let mut readers = connect_all(places, &sources, args.concurrency as usize).await?;
    let handshakes_per_sec = readers.len() as f64 / started.elapsed().as_secs_f64();
    cluster.check_alive()?;
    ping_all(&mut readers, args.concurrency as usize).await?;
    cluster.check_alive()?;
    let rss_after = procs::rss_of(edge_pid)?;
    let participants = readers.len();
    drop(readers);
    cluster.stop().await;
    drop(database);
    Ok(RunFigures { rss_before, rss_after, participants, handshakes_per_sec, placements_per_sec })
}

/// Takes every place through the locator: (edge URL, token) per participant.
async fn place_all(client: &LocatorClient, plan: Plan) -> anyhow::Result<Vec<(String, String)>> {
    let sessions = plan.participants.div_ceil(plan.per_session);
    let limit = Arc::new(Semaphore::new(PLACEMENT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for s in 0..sessions {
        let size = plan.per_session.min(plan.participants - s * plan.per_session);
        let client = client.clone();
        let permit = limit.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let _permit = permit;
            let host = client.create_session(&user(&format!("s{s}-host"))).await.context("placing a session")?;
            let mut places = vec![(host.edge.url.clone(), host.token.clone())];
            for g in 1..size {
                let guest = client
                    .join_session(&host.session_id, &user(&format!("s{s}-guest{g}")))
                    .await
                    .context("joining a session")?;
                places.push((guest.edge.url, guest.token));
            }
            anyhow::Ok(places)
        });
    }
    let mut all = Vec::with_capacity(plan.participants);
    while let Some(done) = tasks.join_next().await {
        all.extend(done.context("a placement task panicked")??);
    }
    Ok(all)
}

/// Connects and joins every participant, `concurrency` at a time, from `sources` in turn.
async fn connect_all(
    places: Vec<(String, String)>,
    sources: &[IpAddr],
    concurrency: usize,
) -> anyhow::Result<Vec<Reader>> {
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut readers = Vec::with_capacity(places.len());
    for (i, (url, token)) in places.into_iter().enumerate() {
        let source = sources[i % sources.len()];
        let permit = limit.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let _permit = permit;
            tokio::time::timeout(STEP_TIMEOUT, join(&url, &token, source))
                .await
                .map_err(|_| anyhow::anyhow!("no welcome within {STEP_TIMEOUT:?}"))?
                .with_context(|| format!("participant {i} from {source}"))
        });
        // Collect finished handshakes as we go, so that a failure stops the run early.
        while let Some(done) = tasks.try_join_next() {
            readers.push(done.context("a handshake task panicked")??);
        }
    }
    while let Some(done) = tasks.join_next().await {
        readers.push(done.context("a handshake task panicked")??);
    }
    Ok(readers)
}

async fn join(url: &str, token: &str, source: IpAddr) -> anyhow::Result<Reader> {
    let mut reader = duet_ws::connect_from(url, source, &[], CLIENT_LIMITS).await?;
    let join = ClientFrame::Join { version: SESSION_PROTOCOL_VERSION, token: token.to_owned() };
    reader.writer().send(join.encode()?)?;
    read_until(&mut reader, kind::WELCOME).await?;
    Ok(reader)
}

/// Reads frames until one of `kind` (skipping events such as `participant_joined`).
async fn read_until(reader: &mut Reader, kind: u8) -> anyhow::Result<()> {
    loop {
        match reader.next().await {
            Ok(duet_ws::Message::Binary(frame)) if frame.first() == Some(&kind) => return Ok(()),
            Ok(duet_ws::Message::Binary(_)) => {}
            Ok(other) => bail!("waiting for kind {kind:#04x}, got {other:?}"),
            Err(e) => bail!("waiting for kind {kind:#04x}: {e}"),
        }
    }
}

/// One `ping` on every connection, answered with `pong`, `concurrency` at a time.
async fn ping_all(readers: &mut Vec<Reader>, concurrency: usize) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for (i, mut reader) in std::mem::take(readers).into_iter().enumerate() {
        let permit = limit.clone().acquire_owned().await.expect("never closed");
        tasks.spawn(async move {
            let _permit = permit;
            reader.writer().send(ClientFrame::Ping { nonce: i as u64 }.encode()?)?;
            tokio::time::timeout(STEP_TIMEOUT, read_until(&mut reader, kind::PONG))
                .await
                .map_err(|_| anyhow::anyhow!("no pong within {STEP_TIMEOUT:?}"))??;
            anyhow::Ok(reader)
        });
    }
    while let Some(done) = tasks.join_next().await {
        readers.push(done.context("a ping task panicked")??);
    }
    Ok(())
}

fn fmt_kib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0)
}

fn verdict(per_connection: Option<Spread>) -> String {
    match per_connection {
        Some(s) if s.median <= TARGET_BYTES_PER_CONNECTION => "yes".to_owned(),
        Some(_) => format!("no: above {} KiB", fmt_kib(TARGET_BYTES_PER_CONNECTION)),
        None => "not measured".to_owned(),
    }
}

fn render(args: &Args, plan: Plan, p: &Provenance, runs: &[RunFigures], rows: &mut Vec<SummaryRow>) -> String {
    let spread = |pick: fn(&RunFigures) -> f64| Spread::of(runs.iter().map(pick));
    let per_connection = spread(RunFigures::bytes_per_connection);
    let fmt = |s: Option<Spread>, f: fn(f64) -> String| s.map_or_else(|| "n/a".to_owned(), |s| s.format(f));
    let mut out = String::new();
    out.push_str(&format!("Measured {} on {} ({} CPUs), revision {}.\n\n", p.date, p.cpu_model, p.cpus, p.revision));
    out.push_str(
        "| participants | edge RSS before (MiB) | edge RSS after (MiB) | user-space memory per connection (KiB) | handshakes/s | placements/s (setup) |\n",
    );
    out.push_str("|---|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| {} | {} | {} | {} | {} | {} |\n",
        fmt_count(plan.participants as f64),
        fmt(spread(|f| f.rss_before as f64), |v| format!("{:.0}", v / 1048576.0)),
        fmt(spread(|f| f.rss_after as f64), |v| format!("{:.0}", v / 1048576.0)),
        fmt(per_connection, fmt_kib),
        fmt(spread(|f| f.handshakes_per_sec), fmt_count),
        fmt(spread(|f| f.placements_per_sec), fmt_count),
    ));
    let target = if args.smoke { "not checked (smoke run)".to_owned() } else { verdict(per_connection) };
    let n = plan.repetitions;
    rows.push(SummaryRow::new(
        p,
        SECTION,
        "S4 idle scale: edge memory per idle participant".to_owned(),
        format!("≤ {} KiB", fmt_kib(TARGET_BYTES_PER_CONNECTION)),
        format!("{} KiB at {} participants", fmt(per_connection, fmt_kib), fmt_count(plan.participants as f64)),
        target.clone(),
    ));
    out.push_str(&format!(
        "\nTarget: at most {} KiB of user-space memory per idle participant: **{target}**. Figures are the median \
         and (min–max) over {n} run{}.\n\n",
        fmt_kib(TARGET_BYTES_PER_CONNECTION),
        if n == 1 { "" } else { "s" },
    ));
    if let Some((asked, fd_limit)) = plan.capped_from {
        out.push_str(&format!(
            "- **{} participants instead of {}**: the open-file limit here is {} (hard), and this machine does not \
             let a process raise it (no CAP_SYS_RESOURCE); the edge and the load generator each hold one \
             descriptor per participant.\n",
            fmt_count(plan.participants as f64),
            fmt_count(asked as f64),
            fmt_count(fd_limit as f64),
        ));
    }
    out.push_str(&format!("- Command: `{}`\n", p.command));
    out.push_str(&format!("- Pinning: {}.\n", args.pinning.describe(1)));
    out.push_str(&format!(
        "- Each run: a fresh locator and edge; {} places taken through the locator in sessions of {}; then every \
         participant connects and joins ({} handshakes at a time, from {} loopback source address{} in \
         127.0.0.0/8, fresh ones each run), and sends one `ping` answered by `pong`. Memory per connection = (edge RSS after − before) / \
         participants; handshakes/s = participants / time from the first connect to the last `welcome`.\n",
        fmt_count(plan.participants as f64),
        plan.per_session,
        args.concurrency,
        args.sources,
        if args.sources == 1 { "" } else { "es" },
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_are_capped_to_whole_sessions_within_the_file_limit() {
        let plan = Plan { participants: 50_000, per_session: 5, repetitions: 1, capped_from: None };
        let capped = plan.capped(20_000);
        assert_eq!(capped.participants, 18_975);
        assert_eq!(capped.capped_from, Some((50_000, 20_000)));
        assert_eq!(plan.capped(60_000).capped_from, None);
    }

    #[test]
    fn the_verdict_holds_the_median_to_12_kib() {
        let s = |median| Some(Spread { median, min: median, max: median });
        assert_eq!(verdict(s(12.0 * 1024.0)), "yes");
        assert_eq!(verdict(s(12.5 * 1024.0)), "no: above 12.0 KiB");
    }
}
