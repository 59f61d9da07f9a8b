//! The `placement` scenario: how many sessions per second the locator places, and how fast it
//! answers at half that rate, on each database.
//!
//! Each run starts a fresh cluster (a locator without embedded edge, [`Args::edges`] edges, a
//! fresh database), waits until it is ready and places one session, then:
//!
//! 1. warm-up: a closed loop whose figures are thrown away (connections, caches, database pages);
//! 2. closed loop: [`Args::connections`] connections POST `{}` to `/api/v1/sessions` back to
//!    back; throughput = 201 answers / elapsed time;
//! 3. open loop at [`OPEN_LOOP_SHARE`] of that throughput (or `--rate`): latency percentiles
//!    from each request's scheduled instant;
//! 4. open loop at [`TARGET_OPEN_RATE`], half the throughput target, which the p99 target is
//!    checked at.
//!
//! Runs repeat [`Args::repetitions`] times per database; the report gives the median and range of
//! each figure and says whether the targets are met. Any answer but 201 is an error; more than
//! [`crate::drive::MAX_ERROR_SHARE`] of them fail the run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper::StatusCode;
use tokio::time::Instant;

use crate::database::{BenchDatabase, DbKind, DEFAULT_POSTGRES_URL, ENV_POSTGRES_URL};
use crate::drive::{self, OpenLoop, PhaseResult, REQUEST_TIMEOUT};
use crate::http::{Connection, RequestSpec};
use crate::procs::{
    self, Binaries, Cluster, ClusterSpec, MachineCpu, Pinning, FIRST_PLACEMENT_RETRY, FIRST_PLACEMENT_TIMEOUT,
    STARTUP_TIMEOUT, TEARDOWN_ALLOWANCE,
};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{fmt_count, fmt_duration, fmt_millis, fmt_ms, fmt_share, parse_duration, Latency, Spread};

/// The endpoint measured, and the body sent: the smallest valid placement request.
const PLACEMENT_PATH: &str = "/api/v1/sessions";
const PLACEMENT_BODY: &str = "{}";
/// Command name of PostgreSQL's server processes, whose CPU use is reported.
const POSTGRES_COMMAND: &str = "postgres";
/// Name of this scenario's section in the benchmarks document.
const SCENARIO: &str = "placement";
/// The anchor of its section.
const SECTION: &str = "#placement";

/// Target throughput on the reference machine, placements per second, for each database.
const TARGET_PLACEMENTS_PER_SEC: f64 = 5_000.0;
/// Target p99 latency in the open loop.
const TARGET_P99: Duration = Duration::from_millis(10);
/// The open loop runs at this share of the closed-loop throughput: loaded, but with headroom, as
/// a service should be run; the latency target applies there.
const OPEN_LOOP_SHARE: f64 = 0.5;
/// The rate the p99 target is measured at: half the throughput target.
const TARGET_OPEN_RATE: f64 = TARGET_PLACEMENTS_PER_SEC * OPEN_LOOP_SHARE;

/// Defaults of the phases: long enough for stable medians, short enough for three runs on two
/// databases to take about three minutes.
const DEFAULT_WARMUP: &str = "2s";
const DEFAULT_CLOSED: &str = "10s";
const DEFAULT_OPEN: &str = "10s";
/// `--smoke`: one short run, enough to show everything works end to end.
const SMOKE_WARMUP: Duration = Duration::from_secs(1);
const SMOKE_CLOSED: Duration = Duration::from_secs(2);
const SMOKE_OPEN: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Databases to measure, one after the other (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["sqlite", "postgres"])]
    db: Vec<DbKind>,
    /// Edges registered with the locator.
    #[arg(long, default_value_t = 8)]
    edges: usize,
    /// Connections of the closed loop (and connections opened before the open loop starts).
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// Warm-up before each measurement (`500ms`, `2s`, or seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_WARMUP)]
    warmup: Duration,
    /// Duration of the closed-loop phase.
    #[arg(long = "closed", value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_CLOSED)]
    closed_duration: Duration,
    /// Duration of the open-loop phase.
    #[arg(long = "open", value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_OPEN)]
    open_duration: Duration,
    /// Open-loop rate in placements per second [default: half the closed-loop throughput].
    #[arg(long, value_name = "PER_SEC")]
    rate: Option<f64>,
    /// Most connections the open loop uses at once.
    #[arg(long, default_value_t = 256)]
    max_open_connections: usize,
    /// Runs per database, each with a fresh locator, edges and database.
    #[arg(long, short = 'r', default_value_t = 3)]
    repetitions: usize,
    /// One short run (1 s warm-up, 2 s per phase): checks that it works, not the targets.
    #[arg(long, conflicts_with = "markdown")]
    smoke: bool,
    /// Rewrite this scenario's section of this Markdown file (docs/benchmarks.md).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Directory of duet-locator and duet-edge [default: this executable's directory].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// PostgreSQL admin URL; each run creates and drops a database through it.
    #[arg(long, env = ENV_POSTGRES_URL, hide_env_values = true, value_name = "URL", default_value = DEFAULT_POSTGRES_URL)]
    postgres_url: String,
    #[command(flatten)]
    pub pinning: Pinning,
}

/// The phases of every run, after `--smoke` is applied.
#[derive(Debug, Clone, Copy)]
struct Phases {
    warmup: Duration,
    closed: Duration,
    open: Duration,
    repetitions: usize,
}

impl Phases {
    /// An upper bound for one run, from start to teardown.
    fn run_budget(&self) -> Duration {
        // Each phase may overrun by one request timeout; the open loop drains for up to two.
        STARTUP_TIMEOUT
            + FIRST_PLACEMENT_TIMEOUT
            + self.warmup
            + self.closed
            + self.open
            + REQUEST_TIMEOUT * 4
            + TEARDOWN_ALLOWANCE
    }
}

/// CPU time used so far by each party; `None` where it could not be read.
struct CpuTimes {
    at: Instant,
    locator: Option<Duration>,
    edges: Option<Duration>,
    loadgen: Option<Duration>,
    /// PostgreSQL runs only.
    postgres: Option<Duration>,
    machine: Option<MachineCpu>,
}

impl CpuTimes {
    fn sample(cluster: &Cluster, db: DbKind) -> CpuTimes {
        let (locator, edges) = cluster.cpu_times();
        CpuTimes {
            at: Instant::now(),
            locator,
            edges,
            loadgen: procs::own_cpu_time(),
            postgres: (db == DbKind::Postgres).then(|| procs::cpu_time_of_named(POSTGRES_COMMAND)),
            machine: procs::machine_cpu(),
        }
    }

    /// The CPU used since `before`, as shares of one core.
    fn shares_since(&self, before: &CpuTimes) -> CpuShares {
        let elapsed = self.at.saturating_duration_since(before.at).as_secs_f64().max(f64::EPSILON);
        let used = |now: Option<Duration>, then: Option<Duration>| Some(now?.saturating_sub(then?));
        let share = |d: Option<Duration>| d.map(|d| d.as_secs_f64() / elapsed);
        let locator = used(self.locator, before.locator);
        let edges = used(self.edges, before.edges);
        let loadgen = used(self.loadgen, before.loadgen);
        let postgres = used(self.postgres, before.postgres);
        let busy = used(self.machine.map(|m| m.busy), before.machine.map(|m| m.busy));
        // Everything the machine did besides the parties measured: other builds, services.
        let ours = [locator, edges, loadgen, postgres.or(Some(Duration::ZERO))].into_iter().sum::<Option<Duration>>();
        let others = busy.zip(ours).map(|(busy, ours)| busy.saturating_sub(ours));
        CpuShares {
            locator: share(locator),
            edges: share(edges),
            loadgen: share(loadgen),
            postgres: share(postgres),
            others: share(others),
            steal: share(used(self.machine.map(|m| m.steal), before.machine.map(|m| m.steal))),
        }
    }
}

/// CPU used during the closed loop, as a share of one core (1.0 = one core fully busy).
#[derive(Debug, Clone, Copy)]
struct CpuShares {
    locator: Option<f64>,
    edges: Option<f64>,
    loadgen: Option<f64>,
    /// The PostgreSQL server's processes (PostgreSQL runs only; not pinned).
    postgres: Option<f64>,
    /// Every other process on the machine.
    others: Option<f64>,
    /// CPU time the hypervisor gave to other virtual machines.
    steal: Option<f64>,
}

impl CpuShares {
    /// `locator 97%, edges 2%, load generator 15%[, PostgreSQL server 40%]; other processes 3%, steal 0%`.
    fn describe(&self) -> String {
        let mut out = format!(
            "locator {}, edges {}, load generator {}",
            fmt_share(self.locator),
            fmt_share(self.edges),
            fmt_share(self.loadgen)
        );
        if self.postgres.is_some() {
            out.push_str(&format!(", PostgreSQL server {}", fmt_share(self.postgres)));
        }
        out.push_str(&format!("; other processes {}, steal {}", fmt_share(self.others), fmt_share(self.steal)));
        out
    }
}

/// The figures of one run.
struct RunFigures {
    closed: PhaseResult,
    closed_cpu: CpuShares,
    rate: f64,
    open: PhaseResult,
    open_cpu: CpuShares,
    /// The open loop at half the target throughput ([`TARGET_OPEN_RATE`]), which the p99
    /// target is about.
    at_target: PhaseResult,
}

impl RunFigures {
    fn latency(&self) -> Latency {
        Latency::of(&self.open.tally.latency)
    }

    fn latency_at_target(&self) -> Latency {
        Latency::of(&self.at_target.tally.latency)
    }

    /// How late the generator sent its open-loop requests, 99th percentile, microseconds.
    fn send_lag_p99(&self) -> u64 {
        self.open.send_lag.as_ref().map_or(0, |h| h.value_at_quantile(0.99))
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.db.is_empty() || args.edges == 0 || args.connections == 0 || args.repetitions == 0 {
        bail!("--db, --edges, --connections and --repetitions need at least one");
    }
    if args.max_open_connections < args.connections {
        bail!("--max-open-connections must be at least --connections");
    }
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let phases = if args.smoke {
        Phases { warmup: SMOKE_WARMUP, closed: SMOKE_CLOSED, open: SMOKE_OPEN, repetitions: 1 }
    } else {
        Phases {
            warmup: args.warmup,
            closed: args.closed_duration,
            open: args.open_duration,
            repetitions: args.repetitions,
        }
    };
    let mut dbs: Vec<DbKind> = Vec::with_capacity(args.db.len());
    for db in &args.db {
        if !dbs.contains(db) {
            dbs.push(*db);
        }
    }
    let runs = u32::try_from(phases.repetitions * dbs.len()).context("too many runs")?;
    let overall = phases.run_budget() * runs;
    let provenance = Provenance::collect();

    let results = tokio::time::timeout(overall, measure_all(&args, &bins, &dbs, phases))
        .await
        .with_context(|| format!("the benchmark did not finish within its deadline of {overall:?}"))??;

    let mut rows = Vec::new();
    let body = render(&args, phases, &provenance, &results, &mut rows);
    println!("\n{body}");
    if args.smoke {
        println!("smoke run: finished without errors; targets not checked");
    }
    if let Some(path) = &args.markdown {
        report::write_section(path, SCENARIO, &body)?;
        report::write_summary(path, &rows)?;
        println!("wrote the {SCENARIO} section of {}", path.display());
    }
    Ok(())
}

async fn measure_all(
    args: &Args,
    bins: &Binaries,
    dbs: &[DbKind],
    phases: Phases,
) -> anyhow::Result<Vec<(DbKind, Vec<RunFigures>)>> {
    let mut results = Vec::with_capacity(dbs.len());
    for &db in dbs {
        let mut runs = Vec::with_capacity(phases.repetitions);
        for n in 1..=phases.repetitions {
            eprintln!("==> {db}, run {n}/{}: starting the locator and {} edges", phases.repetitions, args.edges);
            let figures = measure_once(args, bins, db, phases).await.with_context(|| format!("{db}, run {n}"))?;
            print_run(db, n, phases.repetitions, &figures);
            runs.push(figures);
        }
        results.push((db, runs));
    }
    Ok(results)
}

async fn measure_once(args: &Args, bins: &Binaries, db: DbKind, phases: Phases) -> anyhow::Result<RunFigures> {
    // Declared before the cluster, so on an early return the servers die before it is dropped.
    let database = BenchDatabase::create(db, &args.postgres_url).await?;
    let mut cluster = Cluster::start(ClusterSpec {
        bins,
        pinning: &args.pinning,
        database_url: database.url(),
        edges: args.edges,
        startup_timeout: STARTUP_TIMEOUT,
        media_ports: false,
        edge_env: &[],
    })
    .await?;
    let addr = cluster.locator.addr;
    let spec = RequestSpec::post_json(addr, PLACEMENT_PATH, PLACEMENT_BODY, StatusCode::CREATED);
    first_placement(&mut cluster, &spec).await?;

    eprintln!("    warm-up: {}", fmt_duration(phases.warmup));
    drive::closed_loop(addr, &spec, args.connections, phases.warmup).await?.ensure_few_errors("warm-up")?;

    eprintln!("    closed loop: {} on {} connections", fmt_duration(phases.closed), args.connections);
    let before = CpuTimes::sample(&cluster, db);
    let closed = drive::closed_loop(addr, &spec, args.connections, phases.closed).await?;
    let after_closed = CpuTimes::sample(&cluster, db);
    let closed_cpu = after_closed.shares_since(&before);
    closed.ensure_few_errors("closed loop")?;
    cluster.check_alive()?;

    let rate = args.rate.unwrap_or(closed.throughput() * OPEN_LOOP_SHARE);
    eprintln!("    open loop: {} at {}/s", fmt_duration(phases.open), fmt_count(rate));
    let open = drive::open_loop(
        addr,
        &spec,
        OpenLoop {
            rate,
            duration: phases.open,
            initial_connections: args.connections,
            max_connections: args.max_open_connections,
        },
    )
    .await?;
    let open_cpu = CpuTimes::sample(&cluster, db).shares_since(&after_closed);
    open.ensure_few_errors("open loop")?;
    cluster.check_alive()?;

    eprintln!("    open loop: {} at {}/s (half the target)", fmt_duration(phases.open), fmt_count(TARGET_OPEN_RATE));
    let open_loop = OpenLoop {
        rate: TARGET_OPEN_RATE,
        duration: phases.open,
        initial_connections: args.connections,
        max_connections: args.max_open_connections,
    };
    let at_target = drive::open_loop(addr, &spec, open_loop).await?;
    at_target.ensure_few_errors("open loop at half the target")?;
    cluster.check_alive()?;

    cluster.stop().await;
    drop(database);
    Ok(RunFigures { closed, closed_cpu, rate, open, open_cpu, at_target })
}

/// Retries one placement until it is answered 201: edges are ready before the locator has
/// necessarily taken their first heartbeat into account.
async fn first_placement(cluster: &mut Cluster, spec: &RequestSpec) -> anyhow::Result<()> {
    let deadline = Instant::now() + FIRST_PLACEMENT_TIMEOUT;
    loop {
        cluster.check_alive()?;
        let last = match Connection::open(cluster.locator.addr).await {
            Ok(mut conn) => match tokio::time::timeout(REQUEST_TIMEOUT, conn.exchange(spec)).await {
                Ok(Ok(StatusCode::CREATED)) => return Ok(()),
                Ok(Ok(status)) => format!("answered {status}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("no placement succeeded within {FIRST_PLACEMENT_TIMEOUT:?} of readiness: the last one {last}");
        }
        tokio::time::sleep(FIRST_PLACEMENT_RETRY).await;
    }
}

fn print_run(db: DbKind, n: usize, of: usize, f: &RunFigures) {
    let l = f.latency();
    println!(
        "{db} run {n}/{of}: closed loop {} placements/s on {} connections (errors: {}; CPU: {})",
        fmt_count(f.closed.throughput()),
        f.closed.connections,
        f.closed.error_summary(),
        f.closed_cpu.describe(),
    );
    println!(
        "{db} run {n}/{of}: open loop at {}/s on up to {} connections: p50 {}, p99 {}, p99.9 {}, max {} (errors: {}; send lag p99 {}; CPU: {})",
        fmt_count(f.rate),
        f.open.connections,
        fmt_ms(l.p50 as f64),
        fmt_ms(l.p99 as f64),
        fmt_ms(l.p999 as f64),
        fmt_ms(l.max as f64),
        f.open.error_summary(),
        fmt_ms(f.send_lag_p99() as f64),
        f.open_cpu.describe(),
    );
    let t = f.latency_at_target();
    println!(
        "{db} run {n}/{of}: open loop at {}/s: p50 {}, p99 {}, p99.9 {}, max {} (errors: {})",
        fmt_count(TARGET_OPEN_RATE),
        fmt_ms(t.p50 as f64),
        fmt_ms(t.p99 as f64),
        fmt_ms(t.p999 as f64),
        fmt_ms(t.max as f64),
        f.at_target.error_summary(),
    );
}

/// Figure `pick` of every run, summarised.
fn spread(runs: &[RunFigures], pick: impl Fn(&RunFigures) -> f64) -> Spread {
    Spread::of(runs.iter().map(pick)).expect("at least one run")
}

fn spread_opt(runs: &[RunFigures], pick: impl Fn(&RunFigures) -> Option<f64>) -> Option<Spread> {
    let values: Option<Vec<f64>> = runs.iter().map(pick).collect();
    Spread::of(values?)
}

/// The median of each CPU share over the runs.
fn median_cpu(runs: &[RunFigures], pick: fn(&RunFigures) -> &CpuShares) -> CpuShares {
    let median = |field: fn(&CpuShares) -> Option<f64>| spread_opt(runs, |r| field(pick(r))).map(|s| s.median);
    CpuShares {
        locator: median(|c| c.locator),
        edges: median(|c| c.edges),
        loadgen: median(|c| c.loadgen),
        postgres: median(|c| c.postgres),
        others: median(|c| c.others),
        steal: median(|c| c.steal),
    }
}

fn verdict(throughput: &Spread, p99: &Spread) -> String {
    let fast = throughput.median >= TARGET_PLACEMENTS_PER_SEC;
    let prompt = p99.median <= TARGET_P99.as_micros() as f64;
    match (fast, prompt) {
        (true, true) => "yes".to_owned(),
        (false, true) => format!("no: below {}/s", fmt_count(TARGET_PLACEMENTS_PER_SEC)),
        (true, false) => format!("no: p99 above {}", fmt_duration(TARGET_P99)),
        (false, false) => {
            format!("no: below {}/s, p99 above {}", fmt_count(TARGET_PLACEMENTS_PER_SEC), fmt_duration(TARGET_P99))
        }
    }
}

/// The summary: a table per database and how it was measured. Printed, and written between the
/// markers of the benchmarks document.
fn render(
    args: &Args,
    phases: Phases,
    p: &Provenance,
    results: &[(DbKind, Vec<RunFigures>)],
    rows: &mut Vec<SummaryRow>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!("Measured {} on {} ({} CPUs), revision {}.\n\n", p.date, p.cpu_model, p.cpus, p.revision));
    out.push_str(
        "| database | placements/s, median (min–max) | open-loop rate (/s) | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | p50 at 2,500/s (ms) | p99 at 2,500/s (ms) | target met? |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let mut closed_cpu_notes = Vec::new();
    let mut open_cpu_notes = Vec::new();
    let mut lag_notes = Vec::new();
    for (db, runs) in results {
        let throughput = spread(runs, |r| r.closed.throughput());
        let rate = spread(runs, |r| r.rate);
        let p50 = spread(runs, |r| r.latency().p50 as f64);
        let p99 = spread(runs, |r| r.latency().p99 as f64);
        let p999 = spread(runs, |r| r.latency().p999 as f64);
        let max = spread(runs, |r| r.latency().max as f64);
        let t50 = spread(runs, |r| r.latency_at_target().p50 as f64);
        let t99 = spread(runs, |r| r.latency_at_target().p99 as f64);
        let target = if args.smoke { "not checked (smoke run)".to_owned() } else { verdict(&throughput, &t99) };
        rows.push(SummaryRow::new(
            p,
            SECTION,
            format!("Placement on {db}: placements/s, p99 at {}/s", fmt_count(TARGET_OPEN_RATE)),
            format!("≥ {}/s, ≤ {}", fmt_count(TARGET_PLACEMENTS_PER_SEC), fmt_duration(TARGET_P99)),
            format!("{}/s, {} ms", throughput.format(fmt_count), t99.format(fmt_millis)),
            target.clone(),
        ));
        out.push_str(&format!(
            "| {db} | {} | {} | {} | {} | {} | {} | {} | {} | {target} |\n",
            throughput.format(fmt_count),
            rate.format(fmt_count),
            p50.format(fmt_millis),
            p99.format(fmt_millis),
            p999.format(fmt_millis),
            max.format(fmt_millis),
            t50.format(fmt_millis),
            t99.format(fmt_millis),
        ));
        closed_cpu_notes.push(format!("{db}: {}", median_cpu(runs, |r| &r.closed_cpu).describe()));
        open_cpu_notes.push(format!("{db}: {}", median_cpu(runs, |r| &r.open_cpu).describe()));
        let lag = spread(runs, |r| r.send_lag_p99() as f64);
        lag_notes.push(format!("{db}: {} ms", lag.format(fmt_millis)));
    }
    let runs = phases.repetitions;
    out.push_str(&format!(
        "\nTargets: at least {}/s on each database, and p99 at most {} at half that rate ({}/s). The first \
         open loop runs at {:.0}% of each run's own throughput (a harder test when the throughput is above \
         the target), the second at {}/s. Figures are the median and (min–max) over {runs} run{}; \
         latencies are measured from each request's scheduled send time.\n\n",
        fmt_count(TARGET_PLACEMENTS_PER_SEC),
        fmt_duration(TARGET_P99),
        fmt_count(TARGET_OPEN_RATE),
        OPEN_LOOP_SHARE * 100.0,
        fmt_count(TARGET_OPEN_RATE),
        if runs == 1 { "" } else { "s" },
    ));
    out.push_str(&format!("- Command: `{}`\n", p.command));
    out.push_str(&format!("- Pinning: {}.\n", args.pinning.describe(args.edges)));
    out.push_str(&format!(
        "- Each run: a fresh locator, {} edges and database; {} warm-up, {} closed loop on {} connections, \
         {} open loop on up to {} connections.\n",
        args.edges,
        fmt_duration(phases.warmup),
        fmt_duration(phases.closed),
        args.connections,
        fmt_duration(phases.open),
        args.max_open_connections,
    ));
    out.push_str(&format!(
        "- CPU during the closed loop, share of one core (median): {}.\n",
        closed_cpu_notes.join(". ")
    ));
    out.push_str(&format!("- CPU during the open loop, likewise: {}.\n", open_cpu_notes.join(". ")));
    out.push_str(&format!(
        "- Open loop, how late the generator sent (p99, included in the latencies above): {}.\n",
        lag_notes.join("; ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_name_what_is_missed() {
        let s = |v| Spread { median: v, min: v, max: v };
        assert_eq!(verdict(&s(6000.0), &s(2000.0)), "yes");
        assert_eq!(verdict(&s(4000.0), &s(2000.0)), "no: below 5,000/s");
        assert_eq!(verdict(&s(6000.0), &s(20000.0)), "no: p99 above 10 ms");
        assert_eq!(TARGET_OPEN_RATE, 2_500.0);
    }
}
