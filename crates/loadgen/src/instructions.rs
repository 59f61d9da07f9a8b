//! The `instructions` scenario: the edge's instructions per relayed message, counted by
//! callgrind. Instructions executed hardly depend on how fast the machine is or what else runs
//! on it, so the figure moves mostly when the code does: a regression figure without the noise of
//! the timed scenarios.
//!
//! Each count starts a fresh locator (SQLite) and one `duet-edge` running under `valgrind
//! --tool=callgrind` (through a two-line wrapper script given to the cluster as the edge binary).
//! One session is placed; host A and guest B join; A sends `n` messages of [`Args::message_bytes`]
//! to everyone else, one at a time, each after B has read the previous one (a strict ping-pong,
//! so the edge never batches and the work per message is the same in every run). Both then
//! `leave`, the edge gets SIGTERM and callgrind writes its totals when the edge exits.
//!
//! The edge's start, registration, the joins and its stop cost the same whatever `n` is, so two
//! counts, with `n` = [`Args::messages`] and 2 × that, give the cost of one message as their
//! difference divided by `n`. The edge's periodic work while the longer run lasts (a heartbeat
//! every second, load samples) is in that difference too, in proportion to how long the extra
//! messages take under valgrind: the figure is repeatable to a few tenths of a percent on one
//! machine, not to the instruction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use duet_client::LocatorClient;
use duet_proto::session::{kind, ClientFrame, EVERYONE};
use tokio::time::Instant;

use crate::database::LocatorDb;
use crate::procs::{self, user, Binaries, Cluster, ClusterSpec, Pinning};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{fmt_count, Spread};

/// Name of this scenario's section in the benchmarks document.
const SCENARIO: &str = "instructions";
/// The message size the summary table's row describes.
const DEFAULT_MESSAGE_BYTES: u32 = 1024;
/// Under valgrind the edge runs some 50 times slower than natively: its readiness, a message's
/// relay and its exit get this long.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
const CLIENT_LIMITS: duet_ws::Limits = duet_ws::Limits { max_message_bytes: 1 << 20, max_queued_bytes: 1 << 20 };
/// The edge's limits lifted (a ping-pong under valgrind is slow, but the default message rate
/// limit is not what is measured), and a short drain: nobody is left to drain once A and B left.
const EDGE_ENV: &[(&str, &str)] = &[("DUET_MAX_MESSAGES_PER_SECOND", "0"), ("DUET_DRAIN_TIMEOUT", "5s")];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages of the shorter count (the longer sends twice as many).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    messages: u32,
    /// Payload bytes of each message.
    #[arg(long, default_value_t = DEFAULT_MESSAGE_BYTES, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    message_bytes: u32,
    /// Pairs of counts, each on fresh processes.
    #[arg(long, short = 'r', default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    repetitions: u32,
    /// One pair of short counts (200 and 400 messages): checks that it works.
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
    /// Copy callgrind's output files here (`edge-<messages>.callgrind`, for `callgrind_annotate`).
    #[arg(long, value_name = "DIR")]
    keep_output: Option<PathBuf>,
    /// valgrind, with its callgrind tool (Debian's valgrind package).
    #[arg(long, env = "DUET_BENCH_VALGRIND", value_name = "PATH", default_value = "valgrind")]
    valgrind: PathBuf,
    #[command(flatten)]
    pub pinning: Pinning,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (n, repetitions) = if args.smoke { (200, 1) } else { (args.messages as u64, args.repetitions as usize) };
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let provenance = Provenance::collect();
    let mut per_message = Vec::with_capacity(repetitions);
    let mut totals = Vec::with_capacity(repetitions);
    for r in 1..=repetitions {
        let short = count(&args, &bins, n).await.with_context(|| format!("run {r}, {n} messages"))?;
        let long = count(&args, &bins, 2 * n).await.with_context(|| format!("run {r}, {} messages", 2 * n))?;
        let each = long.saturating_sub(short) as f64 / n as f64;
        eprintln!(
            "run {r}/{repetitions}: {} instructions with {n} messages, {} with {}: {} per message",
            fmt_count(short as f64),
            fmt_count(long as f64),
            2 * n,
            fmt_count(each)
        );
        per_message.push(each);
        totals.push(short as f64);
    }
    let each = Spread::of(per_message).expect("at least one run");
    let total = Spread::of(totals).expect("at least one run");
    let mut out = format!(
        "Measured {} on {} ({} CPUs), revision {}.\n\n",
        provenance.date, provenance.cpu_model, provenance.cpus, provenance.revision
    );
    out.push_str("| path | payload bytes | edge instructions per relayed message | edge instructions, whole run of the shorter count |\n");
    out.push_str("|---|---|---|---|\n");
    out.push_str(&format!(
        "| A → edge → B, one at a time | {} | {} | {} ({} messages) |\n\n",
        args.message_bytes,
        each.format(fmt_count),
        total.format(fmt_count),
        fmt_count(n as f64),
    ));
    out.push_str(&format!(
        "Median and (min–max) over {repetitions} pair{} of counts. No target: compare it with the figure of the \
         previous revision.\n\n- Command: `{}`\n",
        if repetitions == 1 { "" } else { "s" },
        provenance.command
    ));
    println!("\n{out}");
    if let Some(path) = &args.markdown {
        report::write_section(path, SCENARIO, &out)?;
    }
    if let Some(path) = args.markdown.as_ref().filter(|_| args.message_bytes == DEFAULT_MESSAGE_BYTES) {
        report::write_summary(
            path,
            &[SummaryRow::new(
                &provenance,
                "#instructions-per-relayed-message-callgrind",
                "Edge instructions per relayed 1 KiB message (callgrind)",
                "regression figure",
                each.format(fmt_count),
                "no target",
            )],
        )?;
    }
    if let Some(path) = &args.markdown {
        eprintln!("wrote the {SCENARIO} section of {}", path.display());
    }
    Ok(())
}

/// The edge's instructions (callgrind's total `Ir`) over its whole life, with `n` messages relayed.
async fn count(args: &Args, bins: &Binaries, n: u64) -> anyhow::Result<u64> {
    let dir = tempfile::Builder::new().prefix("duet-bench-callgrind-").tempdir().context("creating a directory")?;
    let out_file = dir.path().join("edge.callgrind");
    let wrapper = dir.path().join("duet-edge");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} --tool=callgrind --callgrind-out-file={} {} \"$@\"\n",
            shell_word(&args.valgrind),
            shell_word(&out_file),
            shell_word(&bins.edge)
        ),
    )
    .context("writing the valgrind wrapper")?;
    set_executable(&wrapper)?;
    let wrapped = Binaries { locator: bins.locator.clone(), edge: wrapper };
    let database = args.database.create().await?;
    let mut cluster = Cluster::start(ClusterSpec {
        bins: &wrapped,
        pinning: &args.pinning,
        database_url: database.url(),
        edges: 1,
        startup_timeout: STARTUP_TIMEOUT,
        media_ports: false,
        edge_env: EDGE_ENV,
    })
    .await?;
    let client = LocatorClient::new(&cluster.locator_url());
    let host = procs::first_session(&mut cluster, &client, &user("a")).await?;
    let guest = client.join_session(&host.session_id, &user("b")).await.context("joining the session")?;
    let mut a = procs::join_placed(&host, CLIENT_LIMITS, STEP_TIMEOUT).await.context("the host's join")?;
    let mut b = procs::join_placed(&guest, CLIENT_LIMITS, STEP_TIMEOUT).await.context("the guest's join")?;
    let payload = Bytes::from(vec![7u8; args.message_bytes as usize]);
    let frame = ClientFrame::Send { message_id: 0, to: EVERYONE, payload }.encode()?;
    for i in 0..n {
        a.writer().send(frame.clone())?;
        loop {
            match tokio::time::timeout(STEP_TIMEOUT, b.next()).await {
                Err(_) => bail!("message {i} not relayed within {STEP_TIMEOUT:?}"),
                Ok(Ok(duet_ws::Message::Binary(f))) if f.first() == Some(&kind::MESSAGE) => break,
                Ok(Ok(duet_ws::Message::Binary(_))) => {}
                Ok(Ok(other)) => bail!("B received {other:?}"),
                Ok(Err(e)) => bail!("B's connection failed: {e}"),
            }
        }
    }
    for reader in [&mut a, &mut b] {
        reader.writer().send(ClientFrame::Leave.encode()?)?;
        // The edge answers `leave` by closing with 1000.
        let _ = tokio::time::timeout(STEP_TIMEOUT, async { while reader.next().await.is_ok() {} }).await;
    }
    let edge = cluster.edges.pop().expect("one edge");
    terminate(edge).await?;
    cluster.stop().await;
    drop(database);
    let text = std::fs::read_to_string(&out_file)
        .with_context(|| format!("callgrind wrote no {} when the edge exited", out_file.display()))?;
    if let Some(keep) = &args.keep_output {
        std::fs::create_dir_all(keep).with_context(|| format!("creating {}", keep.display()))?;
        let to = keep.join(format!("edge-{n}.callgrind"));
        std::fs::write(&to, &text).with_context(|| format!("writing {}", to.display()))?;
    }
    callgrind_total(&text).context("no `totals:` or `summary:` line in callgrind's output")
}

/// SIGTERM to the edge (callgrind writes its output at exit; a SIGKILL would lose it), then waits
/// for it to exit.
async fn terminate(mut edge: procs::Server) -> anyhow::Result<()> {
    let pid = edge.pid().context("the edge has already exited")?;
    let pid = rustix::process::Pid::from_raw(pid as i32).context("a process id of 0")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).context("signalling the edge")?;
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while edge.check_alive().is_ok() {
        if Instant::now() >= deadline {
            edge.stop().await;
            bail!("the edge did not exit within {EXIT_TIMEOUT:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The instruction total of a callgrind output file: its `totals:` line (or `summary:`).
fn callgrind_total(text: &str) -> Option<u64> {
    let line =
        text.lines().find(|l| l.starts_with("totals:")).or_else(|| text.lines().find(|l| l.starts_with("summary:")))?;
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn shell_word(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).context("making the wrapper executable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrinds_total() {
        let out = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 1234\nfn=main\n5 10\ntotals: 1234567\n";
        assert_eq!(callgrind_total(out), Some(1_234_567));
        assert_eq!(callgrind_total("events: Ir\nsummary: 42\n"), Some(42));
        assert_eq!(callgrind_total("events: Ir\n"), None);
    }

    #[test]
    fn shell_words_survive_quotes() {
        assert_eq!(shell_word(Path::new("/tmp/a b/it's")), r"'/tmp/a b/it'\''s'");
    }
}
