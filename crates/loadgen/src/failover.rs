//! The `failover` scenario: how soon the locator stops sending sessions to an edge killed with
//! `kill -9`, and that the sessions on the surviving edge never notice.
//!
//! Each run starts a fresh locator (its defaults: heartbeats every second; an edge whose link is
//! lost is probed at once, and judged `unavailable` 3 s after its last heartbeat if the probe
//! fails) and two edges. Once the locator sees both up, one session is placed; the edge it goes
//! to is B, the other A. On B's session a host and a guest join, and the host sends a message every
//! [`BYSTANDER_INTERVAL`] for the whole run, each checked on arrival. Then A is killed with
//! SIGKILL and the locator's `GET /metrics` is polled every [`POLL_INTERVAL`] for its count of
//! edges by health (`duet_locator_edges{health="..."}`, what placement reads): the times from
//! the kill to A's `link_lost` and to its `unavailable` are the figures. From `link_lost` on, a
//! session is placed every [`PLACE_EVERY`], and [`PLACEMENTS_AFTER`] more once A is
//! `unavailable`: none may go to A. The bystander session must lose nothing.
//!
//! The locator judges after 3 s of silence and checks every 100 ms, so a run ends within 3 s
//! give or take that period: the target is 3.1 s, judged on the median.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use duet_client::LocatorClient;
use duet_proto::session::{kind, ClientFrame, EVERYONE};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::database::LocatorDb;
use crate::http;
use crate::procs::{self, user, AbortOnDrop, Binaries, Cluster, ClusterSpec, Pinning, STARTUP_TIMEOUT};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{fmt_duration, fmt_millis, Spread};

/// Name of this scenario's section in the benchmarks document.
const SCENARIO: &str = "failover";
/// The dead edge is `unavailable` within this at the locator's defaults.
/// The locator's contract at its defaults: `unavailable` 3 s (`heartbeat_timeout`) after the
/// edge was last heard, give or take one check period (100 ms, `heartbeat_interval / 10`).
const TARGET_DETECTION: Duration = Duration::from_millis(3_100);
/// How often the locator's metrics are read.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// A detection slower than this fails the run.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(20);
/// The bystander host's send interval.
const BYSTANDER_INTERVAL: Duration = Duration::from_millis(20);
/// Sessions placed after the detection, each of which must go to the surviving edge.
const PLACEMENTS_AFTER: usize = 20;
/// While the dead edge is not yet `unavailable`, a session is placed this often.
const PLACE_EVERY: Duration = Duration::from_millis(100);
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_LIMITS: duet_ws::Limits = duet_ws::Limits { max_message_bytes: 1 << 20, max_queued_bytes: 1 << 20 };

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs, each on fresh processes.
    #[arg(long, short = 'r', default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    repetitions: u32,
    /// One run: checks that it works, not the target.
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

/// What one run measured.
struct RunFigures {
    link_lost: Option<Duration>,
    unavailable: Duration,
    /// Sessions placed once the locator had seen the lost link, and those of them that went to the
    /// dead edge.
    placed: usize,
    misplaced: usize,
    /// The bystander's messages sent, and those that did not arrive in order.
    bystander_sent: u64,
    bystander_missing: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let repetitions = if args.smoke { 1 } else { args.repetitions as usize };
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let provenance = Provenance::collect();
    let mut runs = Vec::with_capacity(repetitions);
    for n in 1..=repetitions {
        let budget = STARTUP_TIMEOUT + DETECTION_TIMEOUT + STEP_TIMEOUT * 4;
        let figures = tokio::time::timeout(budget, measure(&args, &bins))
            .await
            .map_err(|_| anyhow::anyhow!("run {n} overran its {budget:?} budget"))?
            .with_context(|| format!("run {n}"))?;
        eprintln!(
            "run {n}/{repetitions}: link_lost after {}, unavailable after {} ms; {} of {} sessions placed after the \
             lost link was seen on the dead edge; bystander: {} sent, {} missing",
            figures.link_lost.map_or_else(|| "(not seen)".to_owned(), |d| format!("{} ms", d.as_millis())),
            figures.unavailable.as_millis(),
            figures.misplaced,
            figures.placed,
            figures.bystander_sent,
            figures.bystander_missing,
        );
        runs.push(figures);
    }
    let (section, rows) = render(&args, &provenance, &runs);
    println!("\n{section}");
    if let Some(path) = &args.markdown {
        report::write_section(path, SCENARIO, &section)?;
        report::write_summary(path, &rows)?;
        eprintln!("wrote the {SCENARIO} section of {}", path.display());
    }
    Ok(())
}

async fn measure(args: &Args, bins: &Binaries) -> anyhow::Result<RunFigures> {
    let database = args.database.create().await?;
    let mut cluster = Cluster::start(ClusterSpec {
        bins,
        pinning: &args.pinning,
        database_url: database.url(),
        edges: 2,
        startup_timeout: STARTUP_TIMEOUT,
        media_ports: false,
        edge_env: &[],
    })
    .await?;
    let client = LocatorClient::new(&cluster.locator_url());
    let ids: Vec<String> = (1..=2).map(procs::edge_id).collect();
    // Placement sees an edge once the locator has taken its first heartbeat: until both are up,
    // every session would go to the first.
    let locator = cluster.locator.addr;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while edge_health(locator).await?.up < 2 {
        if Instant::now() >= deadline {
            bail!("the locator did not see both edges up within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    // The bystander's session decides which edge survives: wherever placement puts it (which
    // edge that is depends on the edges' reported load); the other one is killed.
    let survivor = procs::first_session(&mut cluster, &client, &user("bystander-host")).await?;
    let Some(survivor_index) = ids.iter().position(|id| *id == survivor.edge.id) else {
        bail!("the bystander session went to {}, not a benchmark edge", survivor.edge.id);
    };
    let victim_index = 1 - survivor_index;
    let guest = client.join_session(&survivor.session_id, &user("bystander")).await.context("joining")?;
    let host = procs::join_placed(&survivor, CLIENT_LIMITS, STEP_TIMEOUT).await.context("the host's join")?;
    let guest = procs::join_placed(&guest, CLIENT_LIMITS, STEP_TIMEOUT).await.context("the guest's join")?;
    let (stop_bystander, stop) = oneshot::channel();
    let bystander = tokio::spawn(bystander(host, guest, stop));

    let victim = cluster.edges.remove(victim_index);
    let killed_at = Instant::now();
    victim.stop().await;
    let mut link_lost = None;
    let (mut placed, mut misplaced) = (0usize, 0usize);
    let mut next_placement: Option<Instant> = None;
    let unavailable = loop {
        // From the moment the locator has noticed the lost link, placement must avoid the edge
        // (before it, a request can still be sent there: nothing tells the locator sooner).
        if let Some(at) = next_placement.filter(|at| Instant::now() >= *at) {
            let late =
                client.create_session(&user(&format!("during{placed}"))).await.context("placing after the kill")?;
            placed += 1;
            misplaced += usize::from(late.edge.id == ids[victim_index]);
            next_placement = Some(at + PLACE_EVERY);
        }
        let counts = edge_health(locator).await?;
        let elapsed = killed_at.elapsed();
        if counts.link_lost > 0 && link_lost.is_none() {
            link_lost = Some(elapsed);
            next_placement = Some(Instant::now());
        }
        if counts.unavailable > 0 {
            break elapsed;
        }
        if elapsed > DETECTION_TIMEOUT {
            bail!("the killed edge was not unavailable within {DETECTION_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    for i in 0..PLACEMENTS_AFTER {
        let late = client.create_session(&user(&format!("late{i}"))).await.context("placing after the kill")?;
        placed += 1;
        misplaced += usize::from(late.edge.id == ids[victim_index]);
    }
    let _ = stop_bystander.send(());
    let (sent, missing) = bystander.await.context("the bystander task panicked")??;
    cluster.check_alive()?;
    cluster.stop().await;
    drop(database);
    Ok(RunFigures { link_lost, unavailable, placed, misplaced, bystander_sent: sent, bystander_missing: missing })
}

/// Edges by health, as the locator's metrics count them.
#[derive(Debug, Default, PartialEq, Eq)]
struct HealthCounts {
    up: u64,
    link_lost: u64,
    unavailable: u64,
}

async fn edge_health(locator: SocketAddr) -> anyhow::Result<HealthCounts> {
    let (status, body) = http::get(locator, "/metrics").await.context("reading the locator's metrics")?;
    if !status.is_success() {
        bail!("GET /metrics answered {status}");
    }
    parse_health(&String::from_utf8_lossy(&body)).context("no duet_locator_edges gauge in the locator's metrics")
}

fn parse_health(text: &str) -> Option<HealthCounts> {
    let value = |health: &str| -> Option<u64> {
        let prefix = format!("duet_locator_edges{{health=\"{health}\"}}");
        let line = text.lines().find(|l| l.starts_with(&prefix))?;
        line[prefix.len()..].trim().parse::<f64>().ok().map(|v| v as u64)
    };
    Some(HealthCounts { up: value("up")?, link_lost: value("link_lost")?, unavailable: value("unavailable")? })
}

/// The bystander session: the host sends a numbered message every [`BYSTANDER_INTERVAL`] until
/// `stop`, and the guest checks that each arrives, in order. Returns the messages sent and those
/// missing: skipped over (a later one arrived first, so it is lost or late), or not arrived
/// [`STEP_TIMEOUT`] after the stop. A duplicate or a late-comer fails the run.
async fn bystander(
    host: duet_ws::ClientReader,
    mut guest: duet_ws::ClientReader,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<(u64, u64)> {
    // The guest reads in a task of its own: a read is not cancel-safe, a channel is.
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<anyhow::Result<u64>>();
    let _reader = AbortOnDrop(tokio::spawn(async move {
        loop {
            let result = match guest.next().await {
                Ok(duet_ws::Message::Binary(f))
                    if f.first() == Some(&kind::MESSAGE) && f.len() == procs::MESSAGE_HEADER + 8 =>
                {
                    Ok(u64::from_be_bytes(f[procs::MESSAGE_HEADER..].try_into().expect("8 bytes")))
                }
                Ok(duet_ws::Message::Binary(_)) => continue,
                Ok(other) => Err(anyhow::anyhow!("the bystander guest received {other:?}")),
                Err(e) => Err(anyhow::anyhow!("the bystander guest's connection failed: {e}")),
            };
            let failed = result.is_err();
            if arrivals.send(result).is_err() || failed {
                return;
            }
        }
    }));
    let mut tick = tokio::time::interval(BYSTANDER_INTERVAL);
    let (mut sent, mut next) = (0u64, 0u64);
    let mut skipped = 0u64;
    let mut stopped: Option<Instant> = None;
    let mut last_arrival = Instant::now();
    loop {
        if stopped.is_some() && next >= sent {
            break;
        }
        // Nothing for STEP_TIMEOUT while sending is a stalled session; after the stop, the
        // stragglers get as long.
        let give_up = stopped.map_or(last_arrival, |at| at.max(last_arrival)) + STEP_TIMEOUT;
        tokio::select! {
            _ = tick.tick(), if stopped.is_none() => {
                let frame = ClientFrame::Send { message_id: 0, to: EVERYONE, payload: Bytes::copy_from_slice(&sent.to_be_bytes()) };
                host.writer().send(frame.encode()?).context("the bystander host could not send")?;
                sent += 1;
            }
            _ = &mut stop, if stopped.is_none() => stopped = Some(Instant::now()),
            arrival = arrived.recv() => {
                let n = arrival.context("the bystander guest's reader ended")??;
                if n < next {
                    bail!("the bystander guest received message {n} again or out of order, after {}", next - 1);
                }
                skipped += n - next;
                next = n + 1;
                last_arrival = Instant::now();
            }
            _ = tokio::time::sleep_until(give_up) => {
                if stopped.is_none() {
                    bail!("the bystander guest received nothing for {STEP_TIMEOUT:?}");
                }
                break;
            }
        }
    }
    Ok((sent, skipped + sent.saturating_sub(next)))
}

fn render(args: &Args, p: &Provenance, runs: &[RunFigures]) -> (String, Vec<SummaryRow>) {
    let unavailable = Spread::of(runs.iter().map(|r| r.unavailable.as_micros() as f64)).expect("at least one run");
    let link_lost = Spread::of(runs.iter().filter_map(|r| r.link_lost).map(|d| d.as_micros() as f64));
    let misplaced: usize = runs.iter().map(|r| r.misplaced).sum();
    let slow = unavailable.median > TARGET_DETECTION.as_micros() as f64;
    let over = runs.iter().filter(|r| r.unavailable > TARGET_DETECTION).count();
    let lost: u64 = runs.iter().map(|r| r.bystander_missing).sum();
    let placed: usize = runs.iter().map(|r| r.placed).sum();
    let verdict = if args.smoke {
        "not checked (smoke run)".to_owned()
    } else if !slow && misplaced == 0 && lost == 0 {
        "yes".to_owned()
    } else {
        let mut misses = Vec::new();
        if slow {
            misses.push(format!("median above {}", fmt_duration(TARGET_DETECTION)));
        }
        if misplaced > 0 {
            misses.push(format!("{misplaced} later sessions placed on the dead edge"));
        }
        if lost > 0 {
            misses.push(format!("{lost} bystander messages lost"));
        }
        format!("no: {}", misses.join("; "))
    };
    let mut out = format!("Measured {} on {} ({} CPUs), revision {}.\n\n", p.date, p.cpu_model, p.cpus, p.revision);
    out.push_str("| kill -9 to `link_lost` (ms) | kill -9 to `unavailable` (ms) | sessions placed on the dead edge once its link was lost | bystander messages lost | target met? |\n");
    out.push_str("|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| {} | {} | {misplaced} of {placed} | {} of {} | {verdict} |\n\n",
        link_lost.map_or_else(|| "not seen".to_owned(), |s| s.format(fmt_millis)),
        unavailable.format(fmt_millis),
        runs.iter().map(|r| r.bystander_missing).sum::<u64>(),
        runs.iter().map(|r| r.bystander_sent).sum::<u64>(),
    ));
    out.push_str(&format!(
        "Target: an edge killed with `kill -9` is `unavailable` within {} at the locator's defaults (median: \
         3 s of silence, give or take the locator's 100 ms check period), and no session placed once its lost \
         link is seen goes to it; the sessions of the surviving edge notice nothing. Figures are the median and \
         (min–max) over {} run{}, each on fresh processes; {over} run{} took longer than {}.\n\n",
        fmt_duration(TARGET_DETECTION),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        if over == 1 { "" } else { "s" },
        fmt_duration(TARGET_DETECTION),
    ));
    out.push_str(&format!("- Command: `{}`\n", p.command));
    out.push_str(&format!(
        "- Pinning: locator and 2 edges on CPU {}, load generator on CPU {}. Detection is read from the locator's \
         `GET /metrics` every {} ms (the edges by health, as placement sees them).\n",
        args.pinning.server_cpus,
        args.pinning.loadgen_cpus,
        POLL_INTERVAL.as_millis(),
    ));
    let rows = vec![SummaryRow::new(
        p,
        "#failover-detection",
        "Failover: kill -9 of an edge until `unavailable`",
        format!("≤ {} (median), no session placed there once its link is lost", fmt_duration(TARGET_DETECTION)),
        format!("{} ms, {misplaced} of {placed} placed there", unavailable.format(fmt_millis)),
        verdict.clone(),
    )];
    (out, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_edges_by_health_from_the_metrics() {
        let text = "# HELP duet_locator_edges Registered edges by health\n# TYPE duet_locator_edges gauge\n\
                    duet_locator_edges{health=\"up\"} 1\nduet_locator_edges{health=\"link_lost\"} 0\n\
                    duet_locator_edges{health=\"unavailable\"} 1\n";
        assert_eq!(parse_health(text), Some(HealthCounts { up: 1, link_lost: 0, unavailable: 1 }));
        assert_eq!(parse_health("duet_locator_links 2\n"), None);
    }
}
