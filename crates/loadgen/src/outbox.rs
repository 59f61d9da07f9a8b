//! The `outbox` scenario: how soon an edge delivers the audit entries it buffered during a link
//! outage once the link is back, and whether each arrives exactly once, on each database.
//!
//! Each run starts a fresh locator (no embedded edge) on a fresh database, and one edge whose
//! link to the locator goes through a [`FaultProxy`] in this process. Then:
//!
//! 1. [`Args::sessions`] sessions are placed on the edge, each with its host connected and a
//!    guest placed (not connected);
//! 2. the proxy black-holes the link (no byte passes either way, nothing is closed) and the
//!    guests churn: each round a guest connects with its token, leaves and waits for the close,
//!    which writes exactly two audit entries (`participant_joined`, `participant_left`). The
//!    rounds run until they have written at least [`Args::entries`] entries; the churn then
//!    stops;
//! 3. the proxy heals at t0 (closing what lived through the outage) and the database is polled
//!    every [`POLL_INTERVAL`]: the edge's record (its link epoch changes when it registers
//!    again) and the highest sequence number stored for its outbox. Delivery is complete at the
//!    first poll whose stored maximum reaches the edge's last sequence number, as reported by a
//!    heartbeat on the new link that also reports its outbox empty (acknowledged through);
//! 4. every (outbox, sequence) key stored for the edge is read and compared with `1..=last`:
//!    a missing key is lost, a key stored twice duplicated; entries the edge dropped because its
//!    outbox was full (its heartbeat counts them) are lost too.
//!
//! The locator commits an edge's batches one transaction at a time in sequence order, so the
//! stored maximum reaching `last` means everything before it is stored too; step 4 checks it
//! rather than trusting it, and a run whose keys are incomplete at that point keeps polling the
//! full key set until they are complete or [`DELIVERY_TIMEOUT`] passes.
//!
//! Runs repeat [`Args::repetitions`] times per database; the report gives the median and range of
//! each figure and whether the target is met: all delivered within [`TARGET_DELIVERY`] of the
//! link's return, none lost, none duplicated.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use duet_client::{Event, LocatorClient, Placement};
use duet_locator::db::{EdgeRecord, Health, Store};
use duet_testkit::proxy::FaultProxy;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::database::{BenchDatabase, DbKind, DEFAULT_POSTGRES_URL, ENV_POSTGRES_URL};
use crate::procs::{
    self, user, Binaries, Cluster, ClusterSpec, MachineCpu, Pinning, FIRST_PLACEMENT_TIMEOUT, STARTUP_TIMEOUT,
    TEARDOWN_ALLOWANCE,
};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{fmt_count, Spread};

/// Name of this scenario's section in the benchmarks document.
const SCENARIO: &str = "outbox";
/// The anchor of its section.
const SECTION: &str = "#outbox-delivery-after-a-link-outage";
/// Command name of PostgreSQL's server processes, whose CPU use is reported.
const POSTGRES_COMMAND: &str = "postgres";

/// Everything buffered must be stored within this time of the link's return.
const TARGET_DELIVERY: Duration = Duration::from_secs(5);
/// Audit entries one churn round writes: `participant_joined` and `participant_left`.
const ENTRIES_PER_ROUND: u64 = 2;

/// Bound on one churn round (connect, leave, close): the edge answers in about a millisecond.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the churn as a whole: a fixed allowance plus a generous time per entry (this machine
/// churns 1,500-3,000 rounds a second; the bound allows 200).
const CHURN_ALLOWANCE: Duration = Duration::from_secs(30);
const CHURN_PER_ENTRY: Duration = Duration::from_micros(2_500);
/// How long after the heal the run waits for the delivery to complete before it counts what is
/// missing as lost: twelve times the target.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between two polls of the database during the delivery. A poll reads the edge's row
/// and the stored maximum, two indexed lookups of well under a millisecond, so polling this
/// often measures to about 10 ms without loading the database being measured.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Entries buffered during the outage by default (the figure of the target).
const DEFAULT_ENTRIES: u64 = 100_000;
/// `--smoke`: one short run per database, enough to show everything works end to end.
const SMOKE_ENTRIES: u64 = 2_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Databases to measure, one after the other (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["sqlite", "postgres"])]
    db: Vec<DbKind>,
    /// Entries the edge buffers during the outage (at least; two per churn round).
    #[arg(long, default_value_t = DEFAULT_ENTRIES)]
    entries: u64,
    /// Sessions on the edge whose guests churn concurrently.
    #[arg(long, default_value_t = 32)]
    sessions: usize,
    /// Runs per database, each with a fresh locator, edge and database.
    #[arg(long, short = 'r', visible_alias = "runs", default_value_t = 3)]
    repetitions: usize,
    /// One run per database with 2,000 entries: checks that it works, not the target.
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

/// What every run does, after `--smoke` is applied.
#[derive(Debug, Clone, Copy)]
struct Plan {
    entries: u64,
    sessions: usize,
    repetitions: usize,
}

impl Plan {
    fn rounds(&self) -> u64 {
        self.entries.div_ceil(ENTRIES_PER_ROUND)
    }

    fn churn_timeout(&self) -> Duration {
        CHURN_ALLOWANCE + CHURN_PER_ENTRY * u32::try_from(self.entries).unwrap_or(u32::MAX)
    }

    /// An upper bound for one run, from start to teardown.
    fn run_budget(&self) -> Duration {
        STARTUP_TIMEOUT + FIRST_PLACEMENT_TIMEOUT + self.churn_timeout() + DELIVERY_TIMEOUT * 2 + TEARDOWN_ALLOWANCE
    }
}

/// The figures of one run.
struct RunFigures {
    /// Entries written after the last one stored before the heal: what the link had to carry.
    buffered: u64,
    /// The edge's last sequence number, as its heartbeat reported with the outbox empty.
    last_seq: u64,
    churn: Duration,
    /// From the heal until the edge registered again; `None` if it did not within the bound.
    reconnect: Option<Duration>,
    /// From the heal until every buffered entry was stored; `None` if not within the bound.
    delivery: Option<Duration>,
    lost: u64,
    duplicated: u64,
    /// The longest poll (edge row and stored maximum) during the delivery: the resolution.
    slowest_poll: Duration,
    /// CPU time from the heal to the end of the delivery check.
    cpu: DeliveryCpu,
}

impl RunFigures {
    fn delivered_per_sec(&self) -> Option<f64> {
        self.delivery.map(|d| self.buffered as f64 / d.as_secs_f64().max(f64::EPSILON))
    }

    fn target_met(&self) -> bool {
        self.delivery.is_some_and(|d| d <= TARGET_DELIVERY) && self.lost == 0 && self.duplicated == 0
    }
}

/// CPU seconds each party used from the heal until the delivery was confirmed.
#[derive(Debug, Clone, Copy, Default)]
struct DeliveryCpu {
    locator: Option<f64>,
    edge: Option<f64>,
    loadgen: Option<f64>,
    /// PostgreSQL runs only.
    postgres: Option<f64>,
    /// Every other process on the machine (other builds and tests on a shared machine).
    others: Option<f64>,
    /// Time the hypervisor gave the machine's virtual CPUs to someone else.
    steal: Option<f64>,
}

struct CpuSample {
    locator: Option<Duration>,
    edge: Option<Duration>,
    loadgen: Option<Duration>,
    postgres: Option<Duration>,
    machine: Option<MachineCpu>,
}

impl CpuSample {
    fn take(cluster: &Cluster, db: DbKind) -> CpuSample {
        let (locator, edge) = cluster.cpu_times();
        CpuSample {
            locator,
            edge,
            loadgen: procs::own_cpu_time(),
            postgres: (db == DbKind::Postgres).then(|| procs::cpu_time_of_named(POSTGRES_COMMAND)),
            machine: procs::machine_cpu(),
        }
    }

    fn since(&self, before: &CpuSample) -> DeliveryCpu {
        let used = |now: Option<Duration>, then: Option<Duration>| Some(now?.saturating_sub(then?));
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let locator = used(self.locator, before.locator);
        let edge = used(self.edge, before.edge);
        let loadgen = used(self.loadgen, before.loadgen);
        let postgres = used(self.postgres, before.postgres);
        let busy = used(self.machine.map(|m| m.busy), before.machine.map(|m| m.busy));
        let ours = [locator, edge, loadgen, postgres.or(Some(Duration::ZERO))].into_iter().sum::<Option<Duration>>();
        DeliveryCpu {
            locator: secs(locator),
            edge: secs(edge),
            loadgen: secs(loadgen),
            postgres: secs(postgres),
            others: secs(busy.zip(ours).map(|(busy, ours)| busy.saturating_sub(ours))),
            steal: secs(used(self.machine.map(|m| m.steal), before.machine.map(|m| m.steal))),
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.db.is_empty() || args.sessions == 0 || args.repetitions == 0 || args.entries == 0 {
        bail!("--db, --sessions, --repetitions and --entries need at least one");
    }
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let plan = if args.smoke {
        Plan { entries: SMOKE_ENTRIES, sessions: args.sessions, repetitions: 1 }
    } else {
        Plan { entries: args.entries, sessions: args.sessions, repetitions: args.repetitions }
    };
    let mut dbs: Vec<DbKind> = Vec::with_capacity(args.db.len());
    for db in &args.db {
        if !dbs.contains(db) {
            dbs.push(*db);
        }
    }
    let runs = u32::try_from(plan.repetitions * dbs.len()).context("too many runs")?;
    let overall = plan.run_budget() * runs;
    let provenance = Provenance::collect();

    let results = tokio::time::timeout(overall, measure_all(&args, &bins, &dbs, plan))
        .await
        .with_context(|| format!("the benchmark did not finish within its deadline of {overall:?}"))??;

    let mut rows = Vec::new();
    let body = render(&args, plan, &provenance, &results, &mut rows);
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

async fn measure_all(
    args: &Args,
    bins: &Binaries,
    dbs: &[DbKind],
    plan: Plan,
) -> anyhow::Result<Vec<(DbKind, Vec<RunFigures>)>> {
    let mut results = Vec::with_capacity(dbs.len());
    for &db in dbs {
        let mut runs = Vec::with_capacity(plan.repetitions);
        for n in 1..=plan.repetitions {
            eprintln!("==> {db}, run {n}/{}: starting the locator and an edge behind a fault proxy", plan.repetitions);
            let figures = measure_once(args, bins, db, plan).await.with_context(|| format!("{db}, run {n}"))?;
            print_run(db, n, plan.repetitions, &figures);
            runs.push(figures);
        }
        results.push((db, runs));
    }
    Ok(results)
}

async fn measure_once(args: &Args, bins: &Binaries, db: DbKind, plan: Plan) -> anyhow::Result<RunFigures> {
    // Declared before the cluster, so on an early return the servers die before it is dropped.
    let database = BenchDatabase::create(db, &args.postgres_url).await?;
    let mut cluster = Cluster::start(ClusterSpec {
        bins,
        pinning: &args.pinning,
        database_url: database.url(),
        edges: 0,
        startup_timeout: STARTUP_TIMEOUT,
        media_ports: false,
        edge_env: &[],
    })
    .await?;
    let proxy = FaultProxy::start(cluster.locator.addr).await.context("starting the fault proxy")?;
    cluster.add_edges(1, &proxy.http_url(), Instant::now() + STARTUP_TIMEOUT).await?;
    let edge_id = procs::edge_id(1);
    let probe = Probe::connect(cluster.database_url(), db, &edge_id).await?;
    let client = LocatorClient::new(&cluster.locator_url());

    eprintln!("    placing {} sessions on the edge", plan.sessions);
    let mut sessions = Sessions::open(&mut cluster, &client, &edge_id, plan.sessions).await?;

    eprintln!("    link black-holed; churning until {} entries are buffered", fmt_count(plan.entries as f64));
    proxy.blackhole();
    let epoch_before = probe.edge().await?.link_epoch;
    let churn = tokio::time::timeout(plan.churn_timeout(), sessions.churn(plan.rounds()))
        .await
        .with_context(|| format!("the churn did not finish within {:?}", plan.churn_timeout()))??;
    sessions.check_hosts()?;
    cluster.check_alive()?;

    let stored_before = probe.stored_max().await?;
    eprintln!("    link healed; waiting for the delivery");
    let cpu_before = CpuSample::take(&cluster, db);
    let t0 = Instant::now();
    proxy.heal();
    let delivery = probe.follow_delivery(t0, epoch_before).await?;
    let cpu = CpuSample::take(&cluster, db).since(&cpu_before);
    sessions.check_hosts()?;
    cluster.check_alive()?;

    let last_seq = delivery.edge.outbox.last_seq;
    let keys = probe.keys().await?;
    let check = KeyCheck::of(&keys, delivery.edge.outbox_id, last_seq);
    if check.foreign_outboxes > 0 {
        bail!(
            "{} stored entries carry another outbox id than the edge's {}",
            check.foreign_outboxes,
            delivery.edge.outbox_id
        );
    }
    let dropped = delivery.edge.outbox.dropped_audit + delivery.edge.outbox.dropped_metrics;
    let buffered = last_seq.saturating_sub(stored_before);
    if delivery.complete.is_some() && buffered < plan.entries {
        bail!("only {buffered} entries were buffered, fewer than the {} the churn wrote", plan.entries);
    }

    sessions.close();
    probe.close().await;
    cluster.stop().await;
    drop(database);
    Ok(RunFigures {
        buffered,
        last_seq,
        churn,
        reconnect: delivery.reconnect,
        delivery: delivery.complete,
        lost: check.missing + dropped,
        duplicated: check.duplicated,
        slowest_poll: delivery.slowest_poll,
        cpu,
    })
}

/// The sessions on the edge: hosts connected (each drained by a task that notices a close), and
/// a guest placement per session for the churn.
struct Sessions {
    guests: Vec<Placement>,
    /// Tasks reading the hosts' events; one ends (with the reason) if its host is disconnected.
    hosts: JoinSet<String>,
}

impl Sessions {
    async fn open(cluster: &mut Cluster, client: &LocatorClient, edge_id: &str, n: usize) -> anyhow::Result<Sessions> {
        let mut guests = Vec::with_capacity(n);
        let mut hosts = JoinSet::new();
        for i in 0..n {
            let host = if i == 0 {
                procs::first_session(cluster, client, &user(&format!("host{i}"))).await?
            } else {
                client.create_session(&user(&format!("host{i}"))).await.context("placing a session")?
            };
            if host.edge.id != edge_id {
                bail!("a session was placed on {}, not on {edge_id}", host.edge.id);
            }
            let guest = client.join_session(&host.session_id, &user(&format!("guest{i}"))).await.context("joining")?;
            let mut session = duet_client::connect(&host.edge.url, &host.token).await.context("connecting a host")?;
            hosts.spawn(async move {
                while let Some(event) = session.recv().await {
                    if let Event::Closed { code, reason } = event {
                        return format!("code {code:?}: {reason}");
                    }
                }
                "connection ended".to_owned()
            });
            guests.push(guest);
        }
        Ok(Sessions { guests, hosts })
    }

    /// Runs `rounds` churn rounds over all guests at once; answers how long they took.
    async fn churn(&self, rounds: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let claimed = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for guest in &self.guests {
            let (guest, claimed) = (guest.clone(), claimed.clone());
            tasks.spawn(async move {
                while claimed.fetch_add(1, Ordering::Relaxed) < rounds {
                    tokio::time::timeout(ROUND_TIMEOUT, churn_round(&guest))
                        .await
                        .with_context(|| format!("a churn round took more than {ROUND_TIMEOUT:?}"))??;
                }
                anyhow::Ok(())
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.context("a churn task panicked")??;
        }
        Ok(started.elapsed())
    }

    /// An error if a host was disconnected: the sessions must live through the outage.
    fn check_hosts(&mut self) -> anyhow::Result<()> {
        match self.hosts.try_join_next() {
            None => Ok(()),
            Some(Ok(reason)) => bail!("a host was disconnected from its session ({reason})"),
            Some(Err(e)) => bail!("a host's reader task failed: {e}"),
        }
    }

    fn close(mut self) {
        self.hosts.abort_all();
    }
}

/// One guest joins its session with its token, leaves and waits for the edge to close.
async fn churn_round(guest: &Placement) -> anyhow::Result<()> {
    let mut session = duet_client::connect(&guest.edge.url, &guest.token).await.context("a guest connecting")?;
    session.leave().context("a guest leaving")?;
    while let Some(event) = session.recv().await {
        if matches!(event, Event::Closed { .. }) {
            break;
        }
    }
    Ok(())
}

/// Read access to the locator's database: the edge's row (its last heartbeat) through the
/// locator's own [`Store`], and the highest sequence number stored for the edge's outbox through
/// one connection of its own.
struct Probe {
    store: Store,
    pool: AnyPool,
    /// The stored maximum of both entry tables, in the database's placeholder syntax.
    max_sql: &'static str,
    edge_id: String,
}

/// What [`Probe::follow_delivery`] saw.
struct Delivery {
    reconnect: Option<Duration>,
    complete: Option<Duration>,
    /// The edge's row when the delivery was confirmed (or at the bound).
    edge: EdgeRecord,
    slowest_poll: Duration,
}

impl Probe {
    async fn connect(url: &str, db: DbKind, edge_id: &str) -> anyhow::Result<Probe> {
        let store = Store::connect(url).await.context("connecting to the locator's database")?;
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("connecting to the locator's database")?;
        let max_sql = match db {
            DbKind::Sqlite => {
                "SELECT (SELECT MAX(edge_seq) FROM audit_entries WHERE edge_id = ? AND outbox_id = ?), \
                 (SELECT MAX(edge_seq) FROM metrics_entries WHERE edge_id = ? AND outbox_id = ?)"
            }
            DbKind::Postgres => {
                "SELECT (SELECT MAX(edge_seq) FROM audit_entries WHERE edge_id = $1 AND outbox_id = $2), \
                 (SELECT MAX(edge_seq) FROM metrics_entries WHERE edge_id = $3 AND outbox_id = $4)"
            }
        };
        Ok(Probe { store, pool, max_sql, edge_id: edge_id.to_owned() })
    }

    async fn edge(&self) -> anyhow::Result<EdgeRecord> {
        self.store.edge(&self.edge_id).await?.with_context(|| format!("{} is not registered", self.edge_id))
    }

    /// The highest sequence number stored for the edge's current outbox (0 for none).
    async fn stored_max(&self) -> anyhow::Result<u64> {
        let outbox = self.edge().await?.outbox_id;
        self.stored_max_of(outbox).await
    }

    async fn stored_max_of(&self, outbox_id: u64) -> anyhow::Result<u64> {
        let outbox = outbox_id as i64;
        let row = sqlx::query(self.max_sql)
            .bind(&self.edge_id)
            .bind(outbox)
            .bind(&self.edge_id)
            .bind(outbox)
            .fetch_one(&self.pool)
            .await
            .context("reading the stored maximum")?;
        let audit: Option<i64> = row.try_get(0)?;
        let metrics: Option<i64> = row.try_get(1)?;
        Ok(audit.unwrap_or(0).max(metrics.unwrap_or(0)).max(0) as u64)
    }

    async fn close(self) {
        self.pool.close().await;
        self.store.close().await;
    }

    /// Every (outbox id, sequence number) stored for the edge.
    async fn keys(&self) -> anyhow::Result<Vec<(u64, u64)>> {
        Ok(self.store.outbox_keys(&self.edge_id).await?)
    }

    /// Polls from the heal at `t0` until a heartbeat on a new link (epoch above `epoch_before`)
    /// reports the outbox empty and the store holds its last sequence number, or until
    /// [`DELIVERY_TIMEOUT`]. Completion is the first poll whose stored maximum had reached that
    /// number (later confirmed by the full key set, falling back to polling it).
    async fn follow_delivery(&self, t0: Instant, epoch_before: u64) -> anyhow::Result<Delivery> {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconnect = None;
        let mut slowest_poll = Duration::ZERO;
        // (time since the heal when the query returned, stored maximum)
        let mut samples: Vec<(Duration, u64)> = Vec::new();
        let (edge, confirmed) = loop {
            tick.tick().await;
            let started = Instant::now();
            let edge = self.edge().await?;
            if reconnect.is_none() && edge.link_epoch > epoch_before {
                reconnect = Some(t0.elapsed());
            }
            let max = self.stored_max_of(edge.outbox_id).await?;
            slowest_poll = slowest_poll.max(started.elapsed());
            samples.push((t0.elapsed(), max));
            let confirmed = edge.link_epoch > epoch_before
                && edge.health == Health::Up
                && edge.last_heartbeat_at > edge.registered_at
                && edge.outbox.depth == 0
                && max >= edge.outbox.last_seq;
            if confirmed || t0.elapsed() >= DELIVERY_TIMEOUT {
                break (edge, confirmed);
            }
        };
        let last = edge.outbox.last_seq;
        let mut complete =
            if confirmed { samples.iter().find(|(_, max)| *max >= last).map(|(at, _)| *at) } else { None };
        // The maximum stands for the whole prefix only if nothing below it is missing.
        if complete.is_some() && !KeyCheck::of(&self.keys().await?, edge.outbox_id, last).is_complete() {
            complete = None;
            while t0.elapsed() < DELIVERY_TIMEOUT {
                tick.tick().await;
                if KeyCheck::of(&self.keys().await?, edge.outbox_id, last).is_complete() {
                    complete = Some(t0.elapsed());
                    break;
                }
            }
        }
        Ok(Delivery { reconnect, complete, edge, slowest_poll })
    }
}

/// The stored keys of an edge compared with what it produced, `1..=last` of its outbox.
#[derive(Debug, PartialEq, Eq)]
struct KeyCheck {
    /// Sequence numbers in `1..=last` not stored.
    missing: u64,
    /// Keys stored more than once (the extra copies).
    duplicated: u64,
    /// Keys of any other outbox.
    foreign_outboxes: u64,
}

impl KeyCheck {
    fn of(keys: &[(u64, u64)], outbox_id: u64, last: u64) -> KeyCheck {
        let distinct: BTreeSet<(u64, u64)> = keys.iter().copied().collect();
        let duplicated = (keys.len() - distinct.len()) as u64;
        let foreign_outboxes = distinct.iter().filter(|(outbox, _)| *outbox != outbox_id).count() as u64;
        let present =
            distinct.iter().filter(|&&(outbox, seq)| outbox == outbox_id && (1..=last).contains(&seq)).count();
        KeyCheck { missing: last - present as u64, duplicated, foreign_outboxes }
    }

    fn is_complete(&self) -> bool {
        self.missing == 0
    }
}

fn fmt_secs(secs: f64) -> String {
    format!("{secs:.2}")
}

fn fmt_opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| format!("> {}", DELIVERY_TIMEOUT.as_secs()), |d| fmt_secs(d.as_secs_f64()))
}

fn print_run(db: DbKind, n: usize, of: usize, f: &RunFigures) {
    println!(
        "{db} run {n}/{of}: {} entries buffered (last sequence number {}, churned in {:.1} s); link back after {} s, \
         all stored after {} s ({}/s); lost {}, duplicated {}; slowest poll {} ms; CPU s from the heal: {}",
        fmt_count(f.buffered as f64),
        fmt_count(f.last_seq as f64),
        f.churn.as_secs_f64(),
        fmt_opt_secs(f.reconnect),
        fmt_opt_secs(f.delivery),
        f.delivered_per_sec().map_or_else(|| "?".to_owned(), fmt_count),
        f.lost,
        f.duplicated,
        f.slowest_poll.as_millis(),
        describe_cpu(&f.cpu),
    );
}

fn describe_cpu(cpu: &DeliveryCpu) -> String {
    let s = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"));
    let mut out = format!("locator {}, edge {}, load generator {}", s(cpu.locator), s(cpu.edge), s(cpu.loadgen));
    if cpu.postgres.is_some() {
        out.push_str(&format!(", PostgreSQL server {}", s(cpu.postgres)));
    }
    out.push_str(&format!("; other processes {}, steal {}", s(cpu.others), s(cpu.steal)));
    out
}

/// Figure `pick` of every run that has it, summarised.
fn spread(runs: &[RunFigures], pick: impl Fn(&RunFigures) -> Option<f64>) -> Option<Spread> {
    Spread::of(runs.iter().filter_map(pick))
}

fn fmt_spread(s: Option<Spread>, fmt: impl Fn(f64) -> String) -> String {
    s.map_or_else(|| "–".to_owned(), |s| s.format(fmt))
}

fn verdict(runs: &[RunFigures]) -> String {
    let slow = runs.iter().filter(|r| r.delivery.is_none_or(|d| d > TARGET_DELIVERY)).count();
    let lost: u64 = runs.iter().map(|r| r.lost).sum();
    let duplicated: u64 = runs.iter().map(|r| r.duplicated).sum();
    if runs.iter().all(RunFigures::target_met) {
        return "yes".to_owned();
    }
    let mut misses = Vec::new();
    if slow > 0 {
        misses.push(format!("{slow} of {} runs slower than {} s", runs.len(), TARGET_DELIVERY.as_secs()));
    }
    if lost > 0 {
        misses.push(format!("{lost} lost"));
    }
    if duplicated > 0 {
        misses.push(format!("{duplicated} duplicated"));
    }
    format!("no: {}", misses.join(", "))
}

/// The summary: a table per database and how it was measured. Printed, and written between the
/// markers of the benchmarks document.
fn render(
    args: &Args,
    plan: Plan,
    p: &Provenance,
    results: &[(DbKind, Vec<RunFigures>)],
    rows: &mut Vec<SummaryRow>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!("Measured {} on {} ({} CPUs), revision {}.\n\n", p.date, p.cpu_model, p.cpus, p.revision));
    out.push_str(
        "| database | entries buffered | link back after (s) | all stored after (s), median (min–max) | entries/s | lost | duplicated | target met? |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    let mut cpu_notes = Vec::new();
    let mut churn_notes = Vec::new();
    let mut poll_notes = Vec::new();
    for (db, runs) in results {
        let buffered = spread(runs, |r| Some(r.buffered as f64));
        let reconnect = spread(runs, |r| r.reconnect.map(|d| d.as_secs_f64()));
        let delivery = spread(runs, |r| r.delivery.map(|d| d.as_secs_f64()));
        let rate = spread(runs, RunFigures::delivered_per_sec);
        let lost: u64 = runs.iter().map(|r| r.lost).sum();
        let duplicated: u64 = runs.iter().map(|r| r.duplicated).sum();
        let unfinished = runs.iter().filter(|r| r.delivery.is_none()).count();
        let mut delivery = fmt_spread(delivery, fmt_secs);
        if unfinished > 0 {
            delivery.push_str(&format!("; {unfinished} run(s) not done in {} s", DELIVERY_TIMEOUT.as_secs()));
        }
        let target = if args.smoke { "not checked (smoke run)".to_owned() } else { verdict(runs) };
        rows.push(SummaryRow::new(
            p,
            SECTION,
            format!("Outbox on {db}: entries buffered during an outage, all stored after the link's return"),
            format!("≥ 100,000 in ≤ {} s, none lost or duplicated", TARGET_DELIVERY.as_secs()),
            format!("{} in {delivery} s, {lost} lost, {duplicated} duplicated", fmt_spread(buffered, fmt_count)),
            target.clone(),
        ));
        out.push_str(&format!(
            "| {db} | {} | {} | {delivery} | {} | {lost} | {duplicated} | {target} |\n",
            fmt_spread(buffered, fmt_count),
            fmt_spread(reconnect, fmt_secs),
            fmt_spread(rate, fmt_count),
        ));
        let median = |pick: fn(&DeliveryCpu) -> Option<f64>| spread(runs, |r| pick(&r.cpu)).map(|s| s.median);
        let cpu = DeliveryCpu {
            locator: median(|c| c.locator),
            edge: median(|c| c.edge),
            loadgen: median(|c| c.loadgen),
            postgres: median(|c| c.postgres),
            others: median(|c| c.others),
            steal: median(|c| c.steal),
        };
        cpu_notes.push(format!("{db}: {}", describe_cpu(&cpu)));
        let churn = spread(runs, |r| Some(r.churn.as_secs_f64()));
        churn_notes.push(format!("{db} {} s", fmt_spread(churn, |v| format!("{v:.1}"))));
        let poll = spread(runs, |r| Some(r.slowest_poll.as_secs_f64() * 1000.0));
        poll_notes.push(format!("{db} {} ms", fmt_spread(poll, |v| format!("{v:.0}"))));
    }
    let runs = plan.repetitions;
    out.push_str(&format!(
        "\nTarget: at least {} entries buffered during a link outage are all stored within {} s of the link's \
         return, with none lost and none duplicated, on each database, in every run. Times are from the heal of the \
         link; figures are the median and (min–max) over {runs} run{}; lost and duplicated are totals over the \
         runs.\n\n",
        fmt_count(plan.entries as f64),
        TARGET_DELIVERY.as_secs(),
        if runs == 1 { "" } else { "s" },
    ));
    out.push_str(&format!("- Command: `{}`\n", p.command));
    out.push_str(&format!(
        "- Pinning: {}; the fault proxy between the edge and the locator runs in the load generator.\n",
        args.pinning.describe(1)
    ));
    out.push_str(&format!(
        "- Each run: a fresh locator, edge and database; {} sessions on the edge; link black-holed; {} churn rounds \
         (a guest joins and leaves, 2 audit entries each) over all sessions at once, taking {}; then the link is \
         healed.\n",
        plan.sessions,
        fmt_count(plan.rounds() as f64),
        churn_notes.join(", "),
    ));
    out.push_str(&format!(
        "- Resolution: the database is polled every {} ms; the slowest poll (median over runs): {}.\n",
        POLL_INTERVAL.as_millis(),
        poll_notes.join(", "),
    ));
    out.push_str(&format!(
        "- CPU seconds from the heal until the delivery was confirmed (median; the confirmation comes with the \
         next heartbeat, up to a second after the last commit): {}.\n",
        cpu_notes.join(". ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_keys_against_the_produced_range() {
        let keys = [(7, 1), (7, 2), (7, 2), (7, 4), (8, 1), (7, 9)];
        assert_eq!(KeyCheck::of(&keys, 7, 4), KeyCheck { missing: 1, duplicated: 1, foreign_outboxes: 1 });
        assert!(KeyCheck::of(&[(7, 1), (7, 2)], 7, 2).is_complete());
        assert!(KeyCheck::of(&[], 7, 0).is_complete());
    }

    #[test]
    fn rounds_cover_the_entries() {
        let plan = Plan { entries: 2_001, sessions: 32, repetitions: 1 };
        assert_eq!(plan.rounds(), 1_001);
        assert!(plan.churn_timeout() > CHURN_ALLOWANCE);
    }
}
