//! The `fanout` (S2 fan-out, with S5 slow consumers) and `sessions` (S3 many small sessions)
//! scenarios: messages relayed to everyone else in a session, against a nats-server instance
//! relaying the same messages over its websocket listener.
//!
//! # The two servers
//!
//! - **duet**: a locator (SQLite, no embedded edge) and one `duet-edge`. Each session is placed
//!   through the locator; its participants join over websockets and senders send `send` frames
//!   to everyone else, which the edge relays as `message` frames.
//! - **NATS**: its own `nats-server` process (the Debian package), with `GOMAXPROCS=1` and its
//!   websocket listener on (no TLS, no compression). Each session is a subject; every
//!   participant that receives subscribes to it, senders publish to it, and `echo: false` keeps
//!   a sender's own messages from coming back to it, as in duet.
//!
//! Both are driven by the same client code (`duet_ws`), on the same core, with the server on the
//! other; everything but the wire format is shared.
//!
//! # Load
//!
//! Open loop: messages are scheduled at fixed instants (a ticker thread, see
//! [`drive::ticker`]), each sent by the next sender in turn, whatever the arrivals do. Each
//! message carries its phase, its sender, the sender's sequence number and its *scheduled*
//! instant, so an arrival gives its latency (time spent waiting in the load generator counts),
//! and each receiver checks that every sender's messages arrive once and in order (a duplicate or
//! a late-comer is counted as such, never as a delivery). A phase, a warm-up too, ends when every
//! receiver holds all it should (or [`DRAIN_TIMEOUT`] after the last send: the rest is lost).
//! Deliveries/s count the arrivals before the last scheduled send, over the phase's length.
//!
//! Each run, for each server, alternately, on fresh processes:
//!
//! 1. **Ramp**: after a warm-up, phases of [`Args::step`] at rates growing by [`Args::factor`]
//!    until one *breaks*: a message lost or delivered out of order, a connection closed, a send
//!    refused, or a p99 latency above [`Args::latency_limit`] (twice in a row: a step broken by
//!    its latency alone runs again once, since one stall of the shared machine does that at any
//!    rate). The break is then narrowed
//!    ([`Args::refine`] bisections, each on fresh processes). The highest rate that held is the
//!    server's **capacity**; a lower bound when the ramp never broke, or when the load generator
//!    was saturated ([`LOADGEN_SATURATED`]) in the step that broke.
//! 2. **Load levels**: on fresh processes, a warm-up, then a [`Args::duration`] phase at each of
//!    25%, 50% and 80% of the capacity: deliveries/s, server CPU time per delivery, latency
//!    percentiles, lost and reordered messages.
//! 3. **Slow consumers** (`fanout` only, S5): [`Args::slow`] of the guests read at
//!    [`Args::slow_speed`] of the send rate (paced per message) while the host sends at 80% of the
//!    capacity: the share of their deliveries the fast guests receive on time against the 80%
//!    level without slow readers, and the server's peak resident memory above its start of phase
//!    (duet closes a reader whose queue passes the edge's `max_queued_bytes`, 4300; NATS one whose
//!    pending bytes pass its `max_pending`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use duet_client::{LocatorClient, PlacementRequest, SessionOptions};
use duet_proto::session::{kind, ClientFrame, EVERYONE};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::database::LocatorDb;
use crate::drive;
use crate::procs::{
    self, user, AbortOnDrop, Binaries, Cluster, ClusterSpec, Pinning, Server, STARTUP_TIMEOUT, TEARDOWN_ALLOWANCE,
};
use crate::report::{self, Provenance, SummaryRow};
use crate::stats::{self, fmt_count, fmt_duration, fmt_millis, fmt_share, parse_duration, Latency, Spread};

/// S2: duet's capacity in deliveries/s against NATS's, at least.
pub const TARGET_CAPACITY_RATIO: f64 = 1.2;
/// S2: duet's host-to-guest p99 at 50% of its capacity, at most (microseconds).
pub const TARGET_P99_AT_HALF: u64 = 1_000;
/// S5: what the fast guests receive with slow readers present, against without, at least.
pub const TARGET_FAST_SHARE: f64 = 0.9;
/// The load levels measured after the ramp, as shares of the capacity.
const LEVELS: [f64; 3] = [0.25, 0.5, 0.8];
/// A load generator at this share of its core or more may be what limits a step.
const LOADGEN_SATURATED: f64 = 0.9;
/// What slow consumers may add to duet's edge: the edge's default `max_queued_bytes` (8 MiB)
/// for each, plus this for the allocator and the rest of the process.
const SLOW_RSS_SLACK: u64 = 16 << 20;
const EDGE_MAX_QUEUED_BYTES: u64 = 8 << 20;
/// The level the slow-consumer phase runs at (and compares with).
const SLOW_LEVEL: f64 = 0.8;
/// After the last send of a phase, how long the arrivals may take before the rest counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a phase checks whether everything has arrived, and samples the server's memory.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const RSS_INTERVAL: Duration = Duration::from_millis(50);
/// Most ramp steps before the ramp gives up finding a break.
const MAX_STEPS: usize = 40;
/// Time a connection, join or subscription may take before the run fails.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Client-side websocket limits: generous (the servers enforce their own), but bounded. Under
/// load nats-server packs everything pending for a subscriber into one websocket message, which
/// passed 1 MiB at 3,000,000 deliveries/s.
const CLIENT_LIMITS: duet_ws::Limits = duet_ws::Limits { max_message_bytes: 64 << 20, max_queued_bytes: 64 << 20 };
/// Largest NATS message payload the parser accepts (nats-server's default `max_payload`).
const NATS_MAX_PAYLOAD: usize = 1 << 20;
/// The variable naming the nats-server binary, as `scripts/bench` sets it.
const ENV_NATS_SERVER: &str = "DUET_BENCH_NATS_SERVER";
/// Open files each process needs beyond one per participant.
const FD_HEADROOM: u64 = 1024;
/// Payload header: phase tag (u32), sender (u32), sequence number (u64), scheduled instant (u64,
/// nanoseconds from the run's base).
const PAYLOAD_HEADER: usize = 24;
/// Longest NATS protocol line the parser holds before refusing the stream.
const NATS_MAX_LINE: usize = 4096;

/// Which of the two scenarios runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// S2 and S5: one host, 50 guests, the host sending.
    Fanout,
    /// S3: 200 sessions of 5, everyone sending.
    Sessions,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Sessions => "sessions",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sessions [default: fanout 1, sessions 200].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    sessions: Option<u32>,
    /// Participants per session, the host included [default: fanout 51, sessions 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    participants: Option<u32>,
    /// Payload bytes of each message (at least 24: phase, sender, sequence number and send
    /// instant) [default: fanout 1024, sessions 256].
    #[arg(long, value_parser = clap::value_parser!(u32).range(24..=65_536))]
    message_bytes: Option<u32>,
    /// First ramp rate, messages sent per second over all senders [default: fanout 500,
    /// sessions 5000].
    #[arg(long, value_name = "PER_SEC")]
    start_rate: Option<f64>,
    /// Each ramp step sends this many times the previous step's rate.
    #[arg(long, default_value_t = 1.25)]
    factor: f64,
    /// Bisections narrowing the break once the ramp found it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10))]
    refine: u32,
    /// A step whose p99 latency is above this has broken (`10ms`, `0.5s`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10ms")]
    latency_limit: Duration,
    /// Length of each ramp step.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2s")]
    step: Duration,
    /// Warm-up on fresh processes, before the ramp and before the load levels.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Length of each load level (25%, 50%, 80% of the capacity) and of the slow-consumer phase.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    duration: Duration,
    /// `fanout` only: guests reading slowly in the slow-consumer phase (0: no such phase).
    #[arg(long, default_value_t = 5)]
    slow: u32,
    /// How fast the slow guests read, as a share of the send rate.
    #[arg(long, default_value_t = 0.1)]
    slow_speed: f64,
    /// Runs of each server, alternating, each on fresh processes.
    #[arg(long, short = 'r', default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repetitions: u32,
    /// One short run of each server (a few sessions, short phases, one ramp step after the
    /// warm-up): checks that it works, not the targets.
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
    /// The nats-server binary (Debian's package installs /usr/sbin/nats-server).
    #[arg(long, env = ENV_NATS_SERVER, value_name = "PATH", default_value = "/usr/sbin/nats-server")]
    nats_server: PathBuf,
    #[command(flatten)]
    pub pinning: Pinning,
}

/// What every run does, after the scenario's defaults and `--smoke` are applied.
#[derive(Debug, Clone)]
struct Plan {
    scenario: Scenario,
    sessions: usize,
    participants: usize,
    everyone_sends: bool,
    message_bytes: usize,
    start_rate: f64,
    factor: f64,
    refine: usize,
    latency_limit: Duration,
    step: Duration,
    warmup: Duration,
    duration: Duration,
    /// Slow guests (of session 0) in the slow-consumer phase; 0: no such phase.
    slow: usize,
    slow_speed: f64,
    max_steps: usize,
    repetitions: usize,
}

impl Plan {
    fn of(scenario: Scenario, args: &Args) -> anyhow::Result<Plan> {
        let (sessions, participants, everyone_sends, message_bytes, start_rate) = match scenario {
            Scenario::Fanout => (1, 51, false, 1024, 500.0),
            Scenario::Sessions => (200, 5, true, 256, 5000.0),
        };
        let mut plan = Plan {
            scenario,
            sessions: args.sessions.map_or(sessions, |n| n as usize),
            participants: args.participants.map_or(participants, |n| n as usize),
            everyone_sends,
            message_bytes: args.message_bytes.map_or(message_bytes, |n| n as usize),
            start_rate: args.start_rate.unwrap_or(start_rate),
            factor: args.factor,
            refine: args.refine as usize,
            latency_limit: args.latency_limit,
            step: args.step,
            warmup: args.warmup,
            duration: args.duration,
            slow: if scenario == Scenario::Fanout { args.slow as usize } else { 0 },
            slow_speed: args.slow_speed,
            max_steps: MAX_STEPS,
            repetitions: args.repetitions as usize,
        };
        if !(plan.start_rate.is_finite() && plan.start_rate > 0.0) {
            bail!("--start-rate must be a positive number of messages per second");
        }
        if !(plan.factor.is_finite() && plan.factor > 1.0 && plan.factor <= 4.0) {
            bail!("--factor must be above 1 and at most 4");
        }
        if !(plan.slow_speed.is_finite() && plan.slow_speed > 0.0 && plan.slow_speed < 1.0) {
            bail!("--slow-speed must be between 0 and 1 (a share of the send rate)");
        }
        if plan.slow >= plan.participants - 1 {
            bail!("--slow {} leaves no fast guest among {} participants", plan.slow, plan.participants);
        }
        if args.smoke {
            plan.sessions = plan.sessions.min(if scenario == Scenario::Fanout { 1 } else { 10 });
            plan.participants = plan.participants.min(if scenario == Scenario::Fanout { 11 } else { 5 });
            plan.slow = plan.slow.min(2);
            plan.warmup = Duration::from_millis(300);
            plan.step = Duration::from_millis(500);
            plan.duration = Duration::from_millis(500);
            plan.max_steps = 1;
            plan.refine = 0;
            plan.repetitions = 1;
        }
        Ok(plan)
    }

    /// The topology and message size the summary table's rows describe.
    fn is_default(&self, scenario: Scenario) -> bool {
        let (sessions, participants, message_bytes) = match scenario {
            Scenario::Fanout => (1, 51, 1024),
            Scenario::Sessions => (200, 5, 256),
        };
        (self.sessions, self.participants, self.message_bytes) == (sessions, participants, message_bytes)
    }

    /// Deliveries per message: everyone in the session but its sender.
    fn fanout(&self) -> usize {
        self.participants - 1
    }

    fn senders_per_session(&self) -> usize {
        if self.everyone_sends {
            self.participants
        } else {
            1
        }
    }

    /// An upper bound for one run of one server: every phase, setups and teardowns.
    fn run_budget(&self) -> Duration {
        // A step broken by its latency alone runs twice.
        let phases = 2 * (self.max_steps + self.refine) + LEVELS.len() + 4;
        let setups = (self.refine + 3) as u32;
        (self.step.max(self.duration) + self.warmup + DRAIN_TIMEOUT * 2) * phases as u32
            + (STARTUP_TIMEOUT + SETUP_TIMEOUT * 4 + TEARDOWN_ALLOWANCE) * setups
    }
}

/// The two servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Duet,
    Nats,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Duet => "duet",
            Broker::Nats => "NATS",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads and what each receiver counts.

/// The payload of one message: its header, then zeros up to the message size.
fn payload(len: usize, tag: u32, sender: u32, seq: u64, stamp: u64) -> BytesMut {
    let mut p = BytesMut::with_capacity(len);
    p.put_u32(tag);
    p.put_u32(sender);
    p.put_u64(seq);
    p.put_u64(stamp);
    p.resize(len, 0);
    p
}

/// What one receiver has counted; shared between its reading task and the phase controller.
struct Inbox {
    /// The phase being counted: arrivals carrying another tag (a warm-up's, 0, or a previous
    /// phase's stragglers) are only checked for order.
    tag: u32,
    /// Arrivals of the phase, each counted once (a duplicate is not).
    received: u64,
    /// Those of them that arrived before the phase's last scheduled send.
    on_time: u64,
    /// The phase's last scheduled send instant.
    window_end: Option<Instant>,
    latency: Histogram<u64>,
    /// Arrivals with a sequence number at or below one already seen from the same sender.
    reordered: u64,
    /// Arrivals whose size or header was not what was sent.
    malformed: u64,
    /// Each sender's next sequence number: (sender, next).
    next_seq: Vec<(u32, u64)>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
    /// While set, the receiver is a slow consumer: from this instant on it reads at most one
    /// message per this interval (a token bucket: what it has read, against what the time allows).
    slow: Option<(Instant, Duration)>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            tag: 0,
            received: 0,
            on_time: 0,
            window_end: None,
            latency: stats::histogram(),
            reordered: 0,
            malformed: 0,
            next_seq: Vec::new(),
            closed: None,
            slow: None,
        }
    }

    fn arrive(&mut self, body: &[u8], message_bytes: usize, base: Instant, now: Instant) {
        if body.len() != message_bytes || body.len() < PAYLOAD_HEADER {
            self.malformed += 1;
            return;
        }
        let u32_at = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let (tag, sender, seq, stamp) = (u32_at(0), u32_at(4), u64_at(8), u64_at(16));
        match self.next_seq.iter_mut().find(|(s, _)| *s == sender) {
            Some((_, next)) if seq < *next => {
                // Out of order, or a duplicate: counted as such, not as a delivery.
                self.reordered += 1;
                return;
            }
            Some((_, next)) => *next = seq + 1,
            None => self.next_seq.push((sender, seq + 1)),
        }
        if tag == self.tag {
            self.received += 1;
            if self.window_end.is_none_or(|end| now <= end) {
                self.on_time += 1;
            }
            stats::record(&mut self.latency, now.saturating_duration_since(base + Duration::from_nanos(stamp)));
        }
    }

    /// Starts counting phase `tag` (0: a warm-up) from zero.
    fn reset(&mut self, tag: u32, window_end: Instant) {
        self.tag = tag;
        self.window_end = Some(window_end);
        self.received = 0;
        self.on_time = 0;
        self.reordered = 0;
        self.malformed = 0;
        self.latency.reset();
    }
}

type SharedInbox = Arc<Mutex<Inbox>>;

fn lock(inbox: &SharedInbox) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().expect("an inbox lock is never held across a panic")
}

// ---------------------------------------------------------------------------------------------
// NATS's text protocol over websocket messages.

/// One operation of the NATS protocol, as the server sends it.
#[derive(Debug, PartialEq, Eq)]
enum NatsOp<'a> {
    Msg(&'a [u8]),
    Ping,
    Pong,
    Ok,
    Info,
    Err(String),
}

/// Parses the first whole operation of `buf`: `Ok(None)` if it is not all there yet, else the
/// operation and the bytes it took.
fn parse_nats(buf: &[u8]) -> Result<Option<(NatsOp<'_>, usize)>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > NATS_MAX_LINE {
            return Err(format!("a protocol line longer than {NATS_MAX_LINE} bytes"));
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    let op = |s: &str| line.len() >= s.len() && line[..s.len()].eq_ignore_ascii_case(s.as_bytes());
    if op("MSG ") {
        let text = std::str::from_utf8(line).map_err(|_| "a MSG line that is not UTF-8".to_owned())?;
        let size: usize = text
            .split_ascii_whitespace()
            .last()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("a MSG line without a size: {text:?}"))?;
        if size > NATS_MAX_PAYLOAD {
            return Err(format!("a MSG of {size} bytes"));
        }
        if buf.len() < after + size + 2 {
            return Ok(None);
        }
        if &buf[after + size..after + size + 2] != b"\r\n" {
            return Err("a MSG payload not followed by CRLF".to_owned());
        }
        return Ok(Some((NatsOp::Msg(&buf[after..after + size]), after + size + 2)));
    }
    let parsed = if op("PING") {
        NatsOp::Ping
    } else if op("PONG") {
        NatsOp::Pong
    } else if op("+OK") {
        NatsOp::Ok
    } else if op("INFO ") {
        NatsOp::Info
    } else if op("-ERR") {
        NatsOp::Err(String::from_utf8_lossy(line).into_owned())
    } else {
        return Err(format!("an unknown protocol line: {:?}", String::from_utf8_lossy(line)));
    };
    Ok(Some((parsed, after)))
}

/// The bytes of a NATS stream not yet parsed: websocket messages need not end on an operation.
struct NatsStream {
    pending: Vec<u8>,
}

impl NatsStream {
    fn new() -> NatsStream {
        NatsStream { pending: Vec::new() }
    }

    /// Feeds one websocket message and calls `each` on every whole operation now available.
    fn feed(&mut self, data: &[u8], mut each: impl FnMut(NatsOp<'_>) -> Result<(), String>) -> Result<(), String> {
        let mut owned = std::mem::take(&mut self.pending);
        let buf: &[u8] = if owned.is_empty() {
            data
        } else {
            owned.extend_from_slice(data);
            &owned
        };
        let mut at = 0;
        while let Some((op, used)) = parse_nats(&buf[at..])? {
            each(op)?;
            at += used;
        }
        let rest = &buf[at..];
        let mut pending = Vec::new();
        pending.extend_from_slice(rest);
        self.pending = pending;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The servers and the connected participants.

/// The servers of one world: duet's cluster, or one nats-server.
#[allow(clippy::large_enum_variant)] // one at a time, never moved in a loop
enum Servers {
    Duet { cluster: Cluster, _database: crate::database::BenchDatabase },
    Nats { server: Server, _dir: tempfile::TempDir },
}

impl Servers {
    /// The process that relays: the edge, or nats-server.
    fn relay(&self) -> &Server {
        match self {
            Servers::Duet { cluster, .. } => &cluster.edges[0],
            Servers::Nats { server, .. } => server,
        }
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self {
            Servers::Duet { cluster, .. } => cluster.check_alive(),
            Servers::Nats { server, .. } => server.check_alive(),
        }
    }

    async fn stop(self) {
        match self {
            Servers::Duet { cluster, _database } => {
                cluster.stop().await;
                drop(_database);
            }
            Servers::Nats { server, _dir } => server.stop().await,
        }
    }
}

/// Servers running and every participant connected, each with a task reading into its inbox.
struct World {
    broker: Broker,
    servers: Servers,
    /// Every participant's writer, session by session, the host (the sender in `fanout`) first.
    writers: Vec<duet_ws::Writer>,
    inboxes: Vec<SharedInbox>,
    readers: JoinSet<()>,
    /// Index of each sender in `writers`, in the order the ticks go round.
    senders: Vec<usize>,
    /// Each sender's next sequence number.
    seqs: Vec<u64>,
    /// The session each participant is in.
    session_of: Vec<usize>,
    /// The guests of session 0 that read slowly in the slow-consumer phase.
    slow: Vec<usize>,
    base: Instant,
    next_tag: u32,
}

impl World {
    async fn start(broker: Broker, args: &Args, bins: &Binaries, plan: &Plan, base: Instant) -> anyhow::Result<World> {
        let (servers, readers) = match broker {
            Broker::Duet => start_duet(args, bins, plan).await?,
            Broker::Nats => start_nats(args, plan).await?,
        };
        let mut world = World {
            broker,
            servers,
            writers: Vec::new(),
            inboxes: Vec::new(),
            readers: JoinSet::new(),
            senders: Vec::new(),
            seqs: Vec::new(),
            session_of: Vec::new(),
            slow: Vec::new(),
            base,
            next_tag: 1,
        };
        for (i, (session, reader, stream)) in readers.into_iter().enumerate() {
            let index_in_session = world.session_of.iter().filter(|s| **s == session).count();
            if index_in_session < plan.senders_per_session() {
                world.senders.push(i);
                world.seqs.push(0);
            }
            // The last guests of session 0 are the slow ones.
            if session == 0 && index_in_session >= plan.participants - plan.slow {
                world.slow.push(i);
            }
            world.session_of.push(session);
            world.writers.push(reader.writer().clone());
            let inbox = Arc::new(Mutex::new(Inbox::new()));
            world.inboxes.push(inbox.clone());
            world.readers.spawn(read_loop(broker, reader, stream, inbox, plan.message_bytes, base));
        }
        // Round-robin over sessions first, so that consecutive ticks go to different sessions.
        let per = plan.senders_per_session();
        let mut interleaved = Vec::with_capacity(world.senders.len());
        for k in 0..per {
            for s in 0..plan.sessions {
                interleaved.push(world.senders[s * per + k]);
            }
        }
        world.senders = interleaved;
        Ok(world)
    }

    async fn stop(self) {
        let World { servers, mut readers, writers, .. } = self;
        for w in &writers {
            w.abort();
        }
        readers.abort_all();
        while readers.join_next().await.is_some() {}
        servers.stop().await;
    }

    /// Sends at `rate` messages/s for `duration`, then waits (bounded) for the arrivals; a phase
    /// not `measured` is a warm-up, whose figures nobody reads.
    async fn phase(&mut self, plan: &Plan, rate: f64, duration: Duration, measured: bool) -> anyhow::Result<Phase> {
        let tag = if measured {
            self.next_tag += 1;
            self.next_tag
        } else {
            0
        };
        let count = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        let start = Instant::now();
        let window_end = start + Duration::from_secs_f64((count - 1) as f64 / rate);
        let closed_before: Vec<bool> = self.inboxes.iter().map(|i| lock(i).closed.is_some()).collect();
        let slow_now: Vec<bool> = self.inboxes.iter().map(|i| lock(i).slow.is_some()).collect();
        for inbox in &self.inboxes {
            lock(inbox).reset(tag, window_end);
        }
        let mut ticks = drive::ticker(start, rate, count)?;
        let relay_pid = self.servers.relay().pid();
        let rss_start = relay_pid.and_then(|pid| procs::rss_of(pid).ok());
        let rss_peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
        let _sampler = relay_pid.map(|pid| {
            let peak = rss_peak.clone();
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    if let Ok(rss) = procs::rss_of(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(RSS_INTERVAL).await;
                }
            }))
        });
        let cpu_before = (self.servers.relay().cpu_time(), procs::own_cpu_time());
        let mut sent_by = vec![0u64; self.senders.len()];
        let mut send_lag = stats::histogram();
        let mut refused = 0u64;
        let mut unsendable = 0u64;
        let mut i = 0usize;
        while let Some(at) = ticks.recv().await {
            stats::record(&mut send_lag, at.elapsed());
            let k = i % self.senders.len();
            i += 1;
            let sender = self.senders[k];
            let seq = self.seqs[k];
            self.seqs[k] += 1;
            let stamp = u64::try_from((at - self.base).as_nanos()).unwrap_or(u64::MAX);
            let body = payload(plan.message_bytes, tag, sender as u32, seq, stamp);
            let frame = match self.broker {
                Broker::Duet => ClientFrame::Send { message_id: 0, to: EVERYONE, payload: body.freeze() }.encode()?,
                Broker::Nats => nats_pub(self.session_of[sender], &body),
            };
            match self.writers[sender].send(frame) {
                Ok(()) => sent_by[k] += 1,
                Err(duet_ws::SendError::Full) => refused += 1,
                Err(duet_ws::SendError::Closed) => unsendable += 1,
            }
        }
        let sent_at = Instant::now();
        let cpu_sent = (self.servers.relay().cpu_time(), procs::own_cpu_time());
        // What each receiver should hold: every message of the other senders of its session.
        let mut expected = vec![0u64; self.writers.len()];
        for (k, &sender) in self.senders.iter().enumerate() {
            let session = self.session_of[sender];
            for (r, e) in expected.iter_mut().enumerate() {
                if r != sender && self.session_of[r] == session {
                    *e += sent_by[k];
                }
            }
        }
        // Warm-ups drain too, so that no backlog of theirs reaches the next phase.
        let deadline = sent_at + DRAIN_TIMEOUT;
        loop {
            let done = self.inboxes.iter().enumerate().all(|(r, inbox)| {
                let inbox = lock(inbox);
                inbox.closed.is_some() || slow_now[r] || inbox.received >= expected[r]
            });
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let cpu_after = self.servers.relay().cpu_time();
        self.servers.check_alive()?;
        let window = sent_at - start;
        let mut phase = Phase {
            rate,
            duration,
            window,
            expected: 0,
            received: 0,
            lost: 0,
            fast_expected: 0,
            fast_received: 0,
            fast_on_time: 0,
            fast_lost: 0,
            latency: stats::histogram(),
            reordered: 0,
            malformed: 0,
            closed: Vec::new(),
            slow_closed: 0,
            refused,
            unsendable,
            send_lag: Latency::of(&send_lag),
            server_cpu: cpu_before.0.zip(cpu_after).map(|(b, a)| a.saturating_sub(b)),
            server_cpu_sending: cpu_before.0.zip(cpu_sent.0).map(|(b, a)| a.saturating_sub(b)),
            loadgen_cpu_sending: cpu_before.1.zip(cpu_sent.1).map(|(b, a)| a.saturating_sub(b)),
            rss_start,
            rss_peak: rss_start.map(|_| rss_peak.load(Ordering::Relaxed)),
        };
        for (r, inbox) in self.inboxes.iter().enumerate() {
            let inbox = lock(inbox);
            let lost = expected[r].saturating_sub(inbox.received);
            phase.expected += expected[r];
            phase.received += inbox.received;
            phase.lost += lost;
            if !slow_now[r] {
                phase.fast_expected += expected[r];
                phase.fast_received += inbox.received;
                phase.fast_on_time += inbox.on_time;
                phase.fast_lost += lost;
                phase.latency.add(&inbox.latency).context("merging latency histograms")?;
            }
            phase.reordered += inbox.reordered;
            phase.malformed += inbox.malformed;
            match &inbox.closed {
                Some(why) if !closed_before[r] => {
                    phase.closed.push((r, why.clone()));
                    phase.slow_closed += usize::from(slow_now[r]);
                }
                _ => {}
            }
        }
        Ok(phase)
    }

    /// Makes the slow guests read one message per `interval` from now on (`None`: at full speed).
    fn set_slow(&self, interval: Option<Duration>) {
        let since = Instant::now();
        for &r in &self.slow {
            lock(&self.inboxes[r]).slow = interval.map(|every| (since, every));
        }
    }
}

fn nats_subject(session: usize) -> String {
    format!("duet.bench.{session}")
}

/// A `PUB` of `body` to the session's subject, as one websocket message.
fn nats_pub(session: usize, body: &[u8]) -> Bytes {
    let head = format!("PUB {} {}\r\n", nats_subject(session), body.len());
    let mut out = BytesMut::with_capacity(head.len() + body.len() + 2);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Reads one participant's connection until it ends, counting arrivals into its inbox.
async fn read_loop(
    broker: Broker,
    mut reader: duet_ws::ClientReader,
    mut nats: NatsStream,
    inbox: SharedInbox,
    size: usize,
    base: Instant,
) {
    // A slow consumer's bucket: since when it is slow, and how many messages it read since.
    let mut paced: Option<(Instant, u64)> = None;
    let why = loop {
        let slow = lock(&inbox).slow;
        match slow {
            Some((since, every)) => {
                let read = match paced {
                    Some((s, read)) if s == since => read,
                    _ => 0,
                };
                paced = Some((since, read));
                // The next message may be read once the time allows one more than were read.
                tokio::time::sleep_until(since + every.mul_f64(read as f64)).await;
            }
            None => paced = None,
        }
        let data = match reader.next().await {
            Ok(duet_ws::Message::Binary(data) | duet_ws::Message::Text(data)) => data,
            Ok(duet_ws::Message::Close { code, reason }) => {
                break format!(
                    "closed by the server with {}: {reason}",
                    code.map_or("no code".into(), |c| c.to_string())
                )
            }
            Err(e) => break format!("connection failed: {e}"),
        };
        let now = Instant::now();
        match broker {
            Broker::Duet => match data.first() {
                Some(&kind::MESSAGE) if data.len() >= procs::MESSAGE_HEADER => {
                    lock(&inbox).arrive(&data[procs::MESSAGE_HEADER..], size, base, now);
                    if let Some((_, read)) = &mut paced {
                        *read += 1;
                    }
                }
                Some(&kind::ERROR) => break format!("error frame from the edge: {data:?}"),
                _ => {}
            },
            Broker::Nats => {
                let writer = reader.writer().clone();
                // nats-server packs what is pending into one websocket message: a slow consumer
                // is paced by the messages in it, not by websocket messages.
                let fed = nats.feed(&data, |op| match op {
                    NatsOp::Msg(body) => {
                        lock(&inbox).arrive(body, size, base, now);
                        if let Some((_, read)) = &mut paced {
                            *read += 1;
                        }
                        Ok(())
                    }
                    NatsOp::Ping => writer.send(Bytes::from_static(b"PONG\r\n")).map_err(|e| e.to_string()),
                    NatsOp::Err(line) => Err(format!("the server sent {line}")),
                    NatsOp::Pong | NatsOp::Ok | NatsOp::Info => Ok(()),
                });
                if let Err(e) = fed {
                    break e;
                }
            }
        }
    };
    lock(&inbox).closed = Some(why);
}

/// Limits lifted on the edge: the benchmark measures the relay, not the limiters.
fn duet_edge_env(plan: &Plan) -> Vec<(&'static str, String)> {
    vec![
        ("DUET_MAX_MESSAGES_PER_SECOND", "0".to_owned()),
        ("DUET_MAX_CONNECTIONS_PER_ADDRESS", "0".to_owned()),
        ("DUET_IDLE_TIMEOUT", "1h".to_owned()),
        ("DUET_MAX_PARTICIPANTS", plan.participants.to_string()),
    ]
}

/// Every participant: its session, its connection, and (NATS) what of its stream is unparsed.
type Connected = Vec<(usize, duet_ws::ClientReader, NatsStream)>;

async fn start_duet(args: &Args, bins: &Binaries, plan: &Plan) -> anyhow::Result<(Servers, Connected)> {
    let database = args.database.create().await?;
    let env = duet_edge_env(plan);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut cluster = Cluster::start(ClusterSpec {
        bins,
        pinning: &args.pinning,
        database_url: database.url(),
        edges: 1,
        startup_timeout: STARTUP_TIMEOUT,
        media_ports: false,
        edge_env: &env,
    })
    .await?;
    let client = LocatorClient::new(&cluster.locator_url());
    let mut readers = Vec::with_capacity(plan.sessions * plan.participants);
    for s in 0..plan.sessions {
        let host_req = PlacementRequest {
            options: Some(SessionOptions { require_approval: false, max_participants: Some(plan.participants as u32) }),
            ..user(&format!("h{s}"))
        };
        let host = if s == 0 {
            procs::first_session(&mut cluster, &client, &host_req).await?
        } else {
            client.create_session(&host_req).await.context("placing a session")?
        };
        let joined = procs::join_placed(&host, CLIENT_LIMITS, SETUP_TIMEOUT).await.context("the host's join")?;
        readers.push((s, joined, NatsStream::new()));
        for g in 1..plan.participants {
            let guest = client
                .join_session(&host.session_id, &user(&format!("g{s}-{g}")))
                .await
                .context("joining a session")?;
            let guest = procs::join_placed(&guest, CLIENT_LIMITS, SETUP_TIMEOUT).await.context("a guest's join")?;
            readers.push((s, guest, NatsStream::new()));
        }
    }
    cluster.check_alive()?;
    Ok((Servers::Duet { cluster, _database: database }, readers))
}

/// nats-server's configuration: its websocket listener, and its client port (unused) on a random
/// loopback port.
fn nats_config(ws_addr: SocketAddr) -> String {
    format!(
        "listen: \"127.0.0.1:-1\"\n\
         websocket {{\n  listen: \"{ws_addr}\"\n  no_tls: true\n  compression: false\n}}\n"
    )
}

async fn start_nats(args: &Args, plan: &Plan) -> anyhow::Result<(Servers, Connected)> {
    if !args.nats_server.is_file() {
        bail!(
            "{} not found: install Debian's nats-server package (`scripts/bench` does) or set {ENV_NATS_SERVER}",
            args.nats_server.display()
        );
    }
    let dir =
        tempfile::Builder::new().prefix("duet-bench-nats-").tempdir().context("creating a temporary directory")?;
    let conf = dir.path().join("nats.conf");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut attempts = 1;
    let (mut server, ws_addr) = loop {
        // The websocket port is picked free and bound by the server a moment later: another
        // process may take it meanwhile, and then the start is retried on a new one.
        let ws_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::free_port()?));
        std::fs::write(&conf, nats_config(ws_addr)).context("writing nats.conf")?;
        let mut server = Server::spawn(
            "nats-server".to_owned(),
            &args.nats_server,
            &["-c".to_owned(), conf.to_string_lossy().into_owned()],
            &[("GOMAXPROCS", "1")],
            &args.pinning.server_cpus,
            dir.path().join("nats.log"),
            ws_addr,
        )?;
        match server.wait_listening(deadline).await {
            Ok(()) => break (server, ws_addr),
            Err(_) if server.lost_port_race() && attempts < 3 => attempts += 1,
            Err(e) => return Err(e),
        }
    };
    let url = format!("ws://{ws_addr}/");
    let mut readers = Vec::with_capacity(plan.sessions * plan.participants);
    for s in 0..plan.sessions {
        for p in 0..plan.participants {
            // In `fanout` the host only sends: it does not subscribe.
            let subscribes = plan.everyone_sends || p > 0;
            let (reader, stream) = tokio::time::timeout(SETUP_TIMEOUT, nats_connect(&url, s, subscribes))
                .await
                .map_err(|_| anyhow::anyhow!("NATS connection setup took over {SETUP_TIMEOUT:?}"))??;
            readers.push((s, reader, stream));
        }
    }
    server.check_alive()?;
    Ok((Servers::Nats { server, _dir: dir }, readers))
}

/// Connects to NATS's websocket listener, sends `CONNECT` (and `SUB` to the session's subject),
/// and waits for the `PONG` that follows them: the subscription is in place.
async fn nats_connect(
    url: &str,
    session: usize,
    subscribes: bool,
) -> anyhow::Result<(duet_ws::ClientReader, NatsStream)> {
    let mut reader = duet_ws::connect(url, &[], CLIENT_LIMITS).await.context("connecting to NATS")?;
    // No headers: messages come as `MSG`, never `HMSG` (which the parser does not take).
    let mut hello = String::from(
        "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"headers\":false,\"lang\":\"rust\",\"version\":\"duet-loadgen\",\"protocol\":1}\r\n",
    );
    if subscribes {
        hello.push_str(&format!("SUB {} 1\r\n", nats_subject(session)));
    }
    hello.push_str("PING\r\n");
    reader.writer().send(Bytes::from(hello))?;
    let mut stream = NatsStream::new();
    loop {
        let data = match reader.next().await? {
            duet_ws::Message::Binary(d) | duet_ws::Message::Text(d) => d,
            duet_ws::Message::Close { code, reason } => bail!("NATS closed the connection ({code:?}): {reason}"),
        };
        let mut ponged = false;
        let writer = reader.writer().clone();
        stream
            .feed(&data, |op| match op {
                NatsOp::Pong => {
                    ponged = true;
                    Ok(())
                }
                NatsOp::Ping => writer.send(Bytes::from_static(b"PONG\r\n")).map_err(|e| e.to_string()),
                NatsOp::Err(line) => Err(format!("NATS refused the connection: {line}")),
                NatsOp::Msg(_) => Err("a message before the subscription was confirmed".to_owned()),
                NatsOp::Ok | NatsOp::Info => Ok(()),
            })
            .map_err(|e| anyhow::anyhow!(e))?;
        if ponged {
            return Ok((reader, stream));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Phases, runs and their figures.

/// What one phase measured.
#[derive(Debug, Clone)]
struct Phase {
    /// Messages/s scheduled.
    rate: f64,
    duration: Duration,
    /// From the first send to the last one.
    window: Duration,
    /// Deliveries owed to every receiver, those that arrived (each once), and what is missing.
    expected: u64,
    received: u64,
    lost: u64,
    /// The same for the receivers that were not slow consumers in this phase, and those of their
    /// deliveries that arrived before the last scheduled send.
    fast_expected: u64,
    fast_received: u64,
    fast_on_time: u64,
    fast_lost: u64,
    /// The fast receivers' latencies, from the scheduled send.
    latency: Histogram<u64>,
    /// Arrivals out of order or duplicated, and arrivals not of the size or form sent.
    reordered: u64,
    malformed: u64,
    /// Connections that ended during this phase, and why; how many of them were slow consumers.
    closed: Vec<(usize, String)>,
    slow_closed: usize,
    /// Sends refused because the connection's queue in the load generator was full, and because
    /// the connection had already closed.
    refused: u64,
    unsendable: u64,
    send_lag: Latency,
    /// The relaying server's CPU time over the whole phase, and while the sends went out.
    server_cpu: Option<Duration>,
    server_cpu_sending: Option<Duration>,
    /// The load generator's CPU time while the sends went out.
    loadgen_cpu_sending: Option<Duration>,
    rss_start: Option<u64>,
    rss_peak: Option<u64>,
}

impl Phase {
    /// Deliveries per second that arrived while the sends went on (at the fast receivers): a
    /// server falling behind shows here, not only in its latency.
    fn deliveries_per_sec(&self) -> f64 {
        self.fast_on_time as f64 / self.duration.as_secs_f64()
    }

    /// The share of what the fast receivers were owed that arrived while the sends went on.
    fn fast_on_time_share(&self) -> Option<f64> {
        (self.fast_expected > 0).then(|| self.fast_on_time as f64 / self.fast_expected as f64)
    }

    /// The relaying server's CPU time per delivery over the whole phase, microseconds.
    fn cpu_per_delivery(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.received > 0).then(|| cpu.as_secs_f64() * 1e6 / self.received as f64)
    }

    /// A CPU time taken while the sends went out, as a share of one core.
    fn share(&self, cpu: Option<Duration>) -> Option<f64> {
        cpu.map(|c| c.as_secs_f64() / self.window.as_secs_f64().max(f64::EPSILON))
    }

    /// The load generator used nearly all of its core: its own queueing may be what broke a step.
    fn loadgen_saturated(&self) -> bool {
        self.share(self.loadgen_cpu_sending).is_some_and(|c| c >= LOADGEN_SATURATED)
    }

    /// Broken, and by nothing but its p99 latency: nothing lost, reordered, refused or closed.
    fn broken_by_latency_only(&self, limit: Duration) -> bool {
        self.closed.is_empty()
            && self.fast_lost == 0
            && self.reordered == 0
            && self.malformed == 0
            && self.refused == 0
            && self.unsendable == 0
            && self.latency.value_at_quantile(0.99) > u64::try_from(limit.as_micros()).unwrap_or(u64::MAX)
    }

    /// Why this phase counts as broken, if it does.
    fn broken(&self, limit: Duration) -> Option<String> {
        let p99 = self.latency.value_at_quantile(0.99);
        if let Some((_, why)) = self.closed.first() {
            Some(format!("{} connection(s) ended ({why})", self.closed.len()))
        } else if self.fast_lost > 0 {
            Some(format!("{} of {} deliveries missing", self.fast_lost, self.fast_expected))
        } else if self.reordered > 0 || self.malformed > 0 {
            Some(format!("{} out of order or duplicated, {} malformed", self.reordered, self.malformed))
        } else if self.refused > 0 || self.unsendable > 0 {
            Some(format!(
                "{} sends refused (the connection's queue in the load generator full), {} on closed connections",
                self.refused, self.unsendable
            ))
        } else if p99 > u64::try_from(limit.as_micros()).unwrap_or(u64::MAX) {
            Some(format!("p99 {} ms above {} ms", fmt_millis(p99 as f64), fmt_millis(limit.as_micros() as f64)))
        } else {
            None
        }
    }
}

/// One ramp step: its rate, its figures, why it broke.
#[derive(Debug, Clone)]
struct Step {
    phase: Phase,
    broke: Option<String>,
}

/// What one run of one server measured.
#[derive(Debug, Clone)]
struct RunFigures {
    steps: Vec<Step>,
    /// Steps broken by their latency alone and run again.
    retried: usize,
    /// The highest rate that held, messages/s.
    capacity: f64,
    /// Why the capacity is only a lower bound, if it is: the ramp never broke, or the load
    /// generator was saturated when it broke.
    capacity_bound: Option<&'static str>,
    levels: Vec<Phase>,
    slow: Option<Phase>,
}

pub async fn run(scenario: Scenario, args: Args) -> anyhow::Result<()> {
    let plan = Plan::of(scenario, &args)?;
    let bins = Binaries::find(args.bin_dir.as_deref())?;
    let want = (plan.sessions * plan.participants) as u64 + FD_HEADROOM;
    let fd_limit = procs::raise_fd_limit(want)?;
    if fd_limit < want {
        bail!("{} participants need {want} open files and the limit is {fd_limit}", plan.sessions * plan.participants);
    }
    let provenance = Provenance::collect();
    let mut results: Vec<(RunFigures, RunFigures)> = Vec::with_capacity(plan.repetitions);
    for n in 1..=plan.repetitions {
        let mut pair = Vec::with_capacity(2);
        for broker in [Broker::Duet, Broker::Nats] {
            eprintln!(
                "==> run {n}/{}: {}, {} session(s) of {}",
                plan.repetitions,
                broker.name(),
                plan.sessions,
                plan.participants
            );
            let budget = plan.run_budget();
            let figures = tokio::time::timeout(budget, measure(broker, &args, &bins, &plan))
                .await
                .map_err(|_| anyhow::anyhow!("the {} run overran its {budget:?} budget", broker.name()))?
                .with_context(|| format!("{}, run {n}", broker.name()))?;
            pair.push(figures);
        }
        let nats = pair.pop().expect("two runs");
        let duet = pair.pop().expect("two runs");
        results.push((duet, nats));
    }
    let (section, rows) = render(&args, &plan, &provenance, &results);
    println!("\n{section}");
    if let Some(path) = &args.markdown {
        report::write_section(path, scenario.name(), &section)?;
        if plan.is_default(scenario) {
            report::write_summary(path, &rows)?;
        } else {
            eprintln!("not the scenario's default topology or message size: the summary table is left as it was");
        }
        eprintln!("wrote the {} section of {}", scenario.name(), path.display());
    }
    Ok(())
}

/// One run of one server: the ramp, the load levels, the slow consumers.
async fn measure(broker: Broker, args: &Args, bins: &Binaries, plan: &Plan) -> anyhow::Result<RunFigures> {
    let base = Instant::now();
    let fanout = plan.fanout() as f64;
    let mut world = World::start(broker, args, bins, plan, base).await?;
    world.phase(plan, plan.start_rate, plan.warmup, false).await?;
    let mut steps = Vec::new();
    let mut good: Option<f64> = None;
    let mut bad: Option<f64> = None;
    let mut rate = plan.start_rate;
    let mut retried = 0;
    for _ in 0..plan.max_steps {
        if !step(&mut world, plan, broker, rate, &mut steps, &mut retried).await? {
            bad = Some(rate);
            break;
        }
        good = Some(rate);
        rate *= plan.factor;
    }
    if let (Some(_), Some(_)) = (good, bad) {
        for _ in 0..plan.refine {
            let (Some(lo), Some(hi)) = (good, bad) else { break };
            // A broken step may leave connections closed or a backlog: fresh processes.
            world.stop().await;
            world = World::start(broker, args, bins, plan, base).await?;
            world.phase(plan, lo, plan.warmup, false).await?;
            let mid = (lo * hi).sqrt();
            if step(&mut world, plan, broker, mid, &mut steps, &mut retried).await? {
                good = Some(mid);
            } else {
                bad = Some(mid);
            }
        }
    }
    let Some(capacity) = good else {
        let why = steps.first().and_then(|s| s.broke.clone()).unwrap_or_default();
        bail!(
            "{} broke at the first rate, {} messages/s ({why}): use a lower --start-rate",
            broker.name(),
            fmt_count(plan.start_rate)
        );
    };
    let broke_saturated = steps.iter().any(|s| s.broke.is_some() && s.phase.loadgen_saturated());
    let capacity_bound = if bad.is_none() {
        Some("the ramp never broke")
    } else if broke_saturated {
        Some("the load generator's core was saturated when it broke")
    } else {
        None
    };
    world.stop().await;

    let mut world = World::start(broker, args, bins, plan, base).await?;
    world.phase(plan, capacity * LEVELS[0], plan.warmup, false).await?;
    let mut levels = Vec::with_capacity(LEVELS.len());
    for share in LEVELS {
        let phase = world.phase(plan, capacity * share, plan.duration, true).await?;
        print_level(broker, share, &phase, fanout);
        levels.push(phase);
    }
    let slow = if plan.slow > 0 {
        let rate = capacity * SLOW_LEVEL;
        // Each slow guest reads `slow_speed` of what arrives for it: one message of the host's.
        world.set_slow(Some(Duration::from_secs_f64(1.0 / (rate * plan.slow_speed))));
        let phase = world.phase(plan, rate, plan.duration, true).await?;
        world.set_slow(None);
        print_slow(broker, &phase);
        Some(phase)
    } else {
        None
    };
    world.stop().await;
    Ok(RunFigures { steps, retried, capacity, capacity_bound, levels, slow })
}

/// One ramp step at `rate`, recorded in `steps`: whether it held. A step broken by its latency
/// alone is run again once at the same rate (counted in `retried`), and holds if that one does:
/// a single stall of the shared machine (tens of milliseconds) lifts a 2 s step's p99 above the
/// limit at any rate, and must not end a ramp. Loss, reordering or a closed connection is never
/// retried.
async fn step(
    world: &mut World,
    plan: &Plan,
    broker: Broker,
    rate: f64,
    steps: &mut Vec<Step>,
    retried: &mut usize,
) -> anyhow::Result<bool> {
    let fanout = plan.fanout() as f64;
    let mut phase = world.phase(plan, rate, plan.step, true).await?;
    let mut broke = phase.broken(plan.latency_limit);
    if broke.is_some() && phase.broken_by_latency_only(plan.latency_limit) {
        print_step(broker, &phase, broke.as_deref(), fanout);
        eprintln!("{} ramp: the latency alone broke that step; running it again", broker.name());
        *retried += 1;
        phase = world.phase(plan, rate, plan.step, true).await?;
        broke = phase.broken(plan.latency_limit);
    }
    print_step(broker, &phase, broke.as_deref(), fanout);
    let held = broke.is_none();
    steps.push(Step { phase, broke });
    Ok(held)
}

fn print_step(broker: Broker, p: &Phase, broke: Option<&str>, fanout: f64) {
    eprintln!(
        "{} ramp {} msgs/s ({} deliveries/s): {} deliveries/s on time, p50 {} ms, p99 {} ms, send lag p99 {} ms, server CPU {}, load generator CPU {}{}",
        broker.name(),
        fmt_count(p.rate),
        fmt_count(p.rate * fanout),
        fmt_count(p.deliveries_per_sec()),
        fmt_millis(p.latency.value_at_quantile(0.5) as f64),
        fmt_millis(p.latency.value_at_quantile(0.99) as f64),
        fmt_millis(p.send_lag.p99 as f64),
        fmt_share(p.share(p.server_cpu_sending)),
        fmt_share(p.share(p.loadgen_cpu_sending)),
        broke.map(|b| format!(": broke, {b}")).unwrap_or_default(),
    );
}

fn print_level(broker: Broker, share: f64, p: &Phase, fanout: f64) {
    eprintln!(
        "{} at {:.0}% ({} deliveries/s offered): {} deliveries/s, {} µs server CPU each, p50 {} ms, p99 {} ms, lost {}, reordered {}",
        broker.name(),
        share * 100.0,
        fmt_count(p.rate * fanout),
        fmt_count(p.deliveries_per_sec()),
        p.cpu_per_delivery().map_or_else(|| "?".to_owned(), |c| format!("{c:.2}")),
        fmt_millis(p.latency.value_at_quantile(0.5) as f64),
        fmt_millis(p.latency.value_at_quantile(0.99) as f64),
        p.lost,
        p.reordered,
    );
}

fn print_slow(broker: Broker, p: &Phase) {
    eprintln!(
        "{} with slow readers: fast guests {} deliveries/s, lost {}, p99 {} ms; {} slow reader(s) closed; RSS {} → peak {} MiB",
        broker.name(),
        fmt_count(p.deliveries_per_sec()),
        p.fast_lost,
        fmt_millis(p.latency.value_at_quantile(0.99) as f64),
        p.slow_closed,
        p.rss_start.map_or(0, |b| b >> 20),
        p.rss_peak.map_or(0, |b| b >> 20),
    );
}

// ---------------------------------------------------------------------------------------------
// The report.

fn spread(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
    Spread::of(values)
}

fn fmt_spread(s: Option<Spread>, fmt: impl Fn(f64) -> String) -> String {
    s.map_or_else(|| "?".to_owned(), |s| s.format(fmt))
}

fn fmt_ratio(s: Option<Spread>) -> String {
    fmt_spread(s, |v| format!("{v:.2}x"))
}

fn p99(p: &Phase) -> f64 {
    p.latency.value_at_quantile(0.99) as f64
}

fn p50(p: &Phase) -> f64 {
    p.latency.value_at_quantile(0.5) as f64
}

fn render(args: &Args, plan: &Plan, p: &Provenance, results: &[(RunFigures, RunFigures)]) -> (String, Vec<SummaryRow>) {
    let fanout = plan.fanout() as f64;
    let n = results.len();
    let side = |broker: Broker| -> Vec<&RunFigures> {
        results.iter().map(|(d, nats)| if broker == Broker::Duet { d } else { nats }).collect()
    };
    let mut out = String::new();
    out.push_str(&format!("Measured {} on {} ({} CPUs), revision {}.\n\n", p.date, p.cpu_model, p.cpus, p.revision));
    out.push_str(
        "| server | capacity, deliveries/s | load | deliveries/s | server CPU per delivery (µs) | p50 (ms) | p99 (ms) | lost | out of order |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for broker in [Broker::Duet, Broker::Nats] {
        let runs = side(broker);
        let bound = if runs.iter().any(|r| r.capacity_bound.is_some()) { "≥ " } else { "" };
        let capacity = format!("{bound}{}", fmt_spread(spread(runs.iter().map(|r| r.capacity * fanout)), fmt_count));
        for (i, share) in LEVELS.iter().enumerate() {
            let level: Vec<&Phase> = runs.iter().map(|r| &r.levels[i]).collect();
            out.push_str(&format!(
                "| {} | {} | {:.0}% | {} | {} | {} | {} | {} | {} |\n",
                if i == 0 { broker.name() } else { "" },
                if i == 0 { capacity.as_str() } else { "" },
                share * 100.0,
                fmt_spread(spread(level.iter().map(|p| p.deliveries_per_sec())), fmt_count),
                fmt_spread(
                    level.iter().map(|p| p.cpu_per_delivery()).collect::<Option<Vec<f64>>>().and_then(Spread::of),
                    |v| format!("{v:.2}")
                ),
                fmt_spread(spread(level.iter().map(|p| p50(p))), fmt_millis),
                fmt_spread(spread(level.iter().map(|p| p99(p))), fmt_millis),
                level.iter().map(|p| p.lost).sum::<u64>(),
                level.iter().map(|p| p.reordered).sum::<u64>(),
            ));
        }
    }
    let capacity_ratio = spread(results.iter().map(|(d, nats)| d.capacity / nats.capacity));
    let cpu_ratio = results
        .iter()
        .map(|(d, nats)| {
            let pick = |r: &RunFigures| r.levels.get(1).and_then(Phase::cpu_per_delivery);
            Some(pick(nats)? / pick(d)?)
        })
        .collect::<Option<Vec<f64>>>()
        .and_then(Spread::of);
    let duet = side(Broker::Duet);
    let half_p99 = spread(duet.iter().map(|r| p99(&r.levels[1])));
    let lost: u64 = duet.iter().flat_map(|r| &r.levels).map(|p| p.lost).sum();
    let reordered: u64 = duet.iter().flat_map(|r| &r.levels).map(|p| p.reordered).sum();
    let bounded = |broker: Broker| side(broker).iter().filter_map(|r| r.capacity_bound).next();
    let (duet_bound, nats_bound) = (bounded(Broker::Duet), bounded(Broker::Nats));
    let ratio_kind = match (duet_bound, nats_bound) {
        (None, None) => "",
        (Some(_), None) => "at least ",
        (_, Some(_)) => "undetermined, NATS's capacity being a lower bound: ",
    };
    out.push_str(&format!(
        "\nduet/NATS capacity: **{ratio_kind}{}**; NATS's server CPU per delivery over duet's at 50%: {} (medians and \
         min–max of the per-run ratios). Figures are the median and (min–max) over {n} run{} of each server, \
         alternating. Deliveries/s count what arrived while the sends went on.\n\n",
        fmt_ratio(capacity_ratio),
        fmt_ratio(cpu_ratio),
        if n == 1 { "" } else { "s" },
    ));
    for (broker, bound) in [(Broker::Duet, duet_bound), (Broker::Nats, nats_bound)] {
        if let Some(why) = bound {
            out.push_str(&format!(
                "- {}'s capacity is a lower bound (marked ≥): {why}; the server was not shown to break.\n",
                broker.name()
            ));
        }
    }
    if duet_bound.is_some() || nats_bound.is_some() {
        out.push('\n');
    }
    let section = match plan.scenario {
        Scenario::Fanout => "#fan-out-s2-and-slow-consumers-s5",
        Scenario::Sessions => "#many-small-sessions-s3",
    };
    let row = |figure: &str, target: String, measured: String, met: String| {
        SummaryRow::new(p, section, figure, target, measured, met)
    };
    let not_checked = || "not checked (smoke run)".to_owned();
    let mut rows = Vec::new();
    let ratio_text = format!("{ratio_kind}{}", fmt_ratio(capacity_ratio));
    if plan.scenario == Scenario::Sessions {
        rows.push(row(
            "S3 200 sessions × 5, everyone sending: duet/NATS deliveries/s at capacity",
            "none set".to_owned(),
            ratio_text.clone(),
            if args.smoke { not_checked() } else { "no target".to_owned() },
        ));
    }
    if plan.scenario == Scenario::Fanout {
        let capacity_met = if args.smoke {
            not_checked()
        } else if nats_bound.is_some() {
            "undetermined: NATS's capacity is a lower bound".to_owned()
        } else if capacity_ratio.is_some_and(|r| r.median >= TARGET_CAPACITY_RATIO) {
            // duet's capacity may be a lower bound: the ratio is then at least this.
            "yes".to_owned()
        } else if duet_bound.is_some() {
            "undetermined: duet's capacity is a lower bound".to_owned()
        } else {
            format!("no: below {TARGET_CAPACITY_RATIO:.1}x")
        };
        let latency_met = if args.smoke {
            not_checked()
        } else {
            let mut misses = Vec::new();
            if half_p99.is_none_or(|s| s.median > TARGET_P99_AT_HALF as f64) {
                misses.push(format!("p99 above {} ms", fmt_millis(TARGET_P99_AT_HALF as f64)));
            }
            if lost > 0 || reordered > 0 {
                misses.push(format!("{lost} lost, {reordered} out of order"));
            }
            if misses.is_empty() {
                "yes".to_owned()
            } else {
                format!("no: {}", misses.join("; "))
            }
        };
        rows.push(row(
            "S2 fan-out 1 → 50: duet/NATS deliveries/s at capacity",
            format!("≥ {TARGET_CAPACITY_RATIO:.1}x"),
            ratio_text.clone(),
            capacity_met.clone(),
        ));
        rows.push(row(
            "S2 fan-out 1 → 50: duet's p99 at 50% of its capacity",
            format!("≤ {} ms, nothing lost or reordered", fmt_millis(TARGET_P99_AT_HALF as f64)),
            format!("{} ms, {lost} lost, {reordered} reordered", fmt_spread(half_p99, fmt_millis)),
            latency_met.clone(),
        ));
        let targets = if args.smoke {
            not_checked()
        } else if capacity_met == "yes" && latency_met == "yes" {
            "all met".to_owned()
        } else {
            format!("capacity: {capacity_met}; latency: {latency_met}")
        };
        out.push_str(&format!(
            "Targets (S2): at least {TARGET_CAPACITY_RATIO:.1}x NATS's deliveries/s, p99 at most {} ms at 50% load, \
             nothing lost or out of order: **{targets}**.\n\n",
            fmt_millis(TARGET_P99_AT_HALF as f64)
        ));
    }
    if plan.slow > 0 {
        let (text, slow_row) = render_slow(args, plan, results);
        out.push_str(&text);
        rows.push(row(
            "S5 slow consumers: fast guests' on-time share, edge memory growth",
            slow_row.0,
            slow_row.1,
            slow_row.2,
        ));
    }
    out.push_str(&format!("- Command: `{}`\n", p.command));
    out.push_str(&format!(
        "- Pinning: the servers on CPU {} (`taskset -c {}`: duet's locator and edge, or nats-server with \
         `GOMAXPROCS=1`), the load generator on CPU {}. Server CPU is the edge's (duet's locator idles) or \
         nats-server's.\n",
        args.pinning.server_cpus, args.pinning.server_cpus, args.pinning.loadgen_cpus
    ));
    let senders = if plan.everyone_sends { "every participant sends" } else { "the host sends, the guests receive" };
    out.push_str(&format!(
        "- Topology: {} session(s) of {} participants, {senders}; {} payload bytes per message, {} deliveries \
         per message. NATS: one subject per session over its websocket listener, `echo: false`.\n",
        plan.sessions,
        plan.participants,
        plan.message_bytes,
        plan.fanout(),
    ));
    out.push_str(&format!(
        "- Ramp (open loop, fresh processes, {} warm-up): {} steps from {} messages/s, ×{} each, until a step \
         loses, duplicates or reorders a message, ends a connection, cannot send, or has p99 above {} ms; {} bisection(s) on fresh \
         processes narrow the break. Capacity = the highest rate that held. Load levels: {} each at 25%, 50% \
         and 80% of it, after a {} warm-up on fresh processes. Latency runs from a message's scheduled send \
         to its arrival.\n",
        fmt_duration(plan.warmup),
        fmt_duration(plan.step),
        fmt_count(plan.start_rate),
        plan.factor,
        fmt_millis(plan.latency_limit.as_micros() as f64),
        plan.refine,
        fmt_duration(plan.duration),
        fmt_duration(plan.warmup),
    ));
    let loadgen = |broker: Broker, level: usize| {
        fmt_share(
            spread(side(broker).iter().filter_map(|r| r.levels[level].share(r.levels[level].loadgen_cpu_sending)))
                .map(|s| s.median),
        )
    };
    let break_reasons = |broker: Broker| {
        side(broker)
            .iter()
            .filter_map(|r| {
                let step = r.steps.iter().find(|s| s.broke.is_some())?;
                Some(format!(
                    "at {} deliveries/s, {}",
                    fmt_count(step.phase.rate * fanout),
                    step.broke.as_deref().unwrap_or_default()
                ))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    out.push_str(&format!(
        "- Ramp steps broken by their latency alone and run again once (all runs): {} with duet, {} with NATS.\n\
         - Load generator CPU at 50% and 80% (median; at 90% and above its own queueing adds to the latencies): \
         {} and {} with duet, {} and {} with NATS. What broke each ramp first: duet: {}; NATS: {}.\n",
        side(Broker::Duet).iter().map(|r| r.retried).sum::<usize>(),
        side(Broker::Nats).iter().map(|r| r.retried).sum::<usize>(),
        loadgen(Broker::Duet, 1),
        loadgen(Broker::Duet, 2),
        loadgen(Broker::Nats, 1),
        loadgen(Broker::Nats, 2),
        or_none(break_reasons(Broker::Duet)),
        or_none(break_reasons(Broker::Nats)),
    ));
    (out, rows)
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "nothing".to_owned()
    } else {
        s
    }
}

/// The slow-consumer table and text, and the summary row's target, measured figures and verdict.
fn render_slow(args: &Args, plan: &Plan, results: &[(RunFigures, RunFigures)]) -> (String, (String, String, String)) {
    let mut out = String::from(
        "| server | fast guests' deliveries/s, slow readers present | share of the same without | fast guests lost | fast guests' p99 (ms) | slow readers closed | server RSS growth, peak (MiB) |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|\n");
    let mut duet_share = None;
    let mut duet_growth = None;
    for broker in [Broker::Duet, Broker::Nats] {
        let runs: Vec<&RunFigures> =
            results.iter().map(|(d, nats)| if broker == Broker::Duet { d } else { nats }).collect();
        let with: Vec<&Phase> = runs.iter().filter_map(|r| r.slow.as_ref()).collect();
        let share = spread(
            runs.iter()
                .filter_map(|r| Some(r.slow.as_ref()?.fast_on_time_share()? / r.levels[2].fast_on_time_share()?)),
        );
        let growth = spread(with.iter().filter_map(|p| Some(p.rss_peak?.saturating_sub(p.rss_start?) as f64)));
        if broker == Broker::Duet {
            duet_share = share;
            duet_growth = growth;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            broker.name(),
            fmt_spread(spread(with.iter().map(|p| p.deliveries_per_sec())), fmt_count),
            fmt_spread(share, |v| format!("{:.1}%", v * 100.0)),
            with.iter().map(|p| p.fast_lost).sum::<u64>(),
            fmt_spread(spread(with.iter().map(|p| p99(p))), fmt_millis),
            fmt_spread(spread(with.iter().map(|p| p.slow_closed as f64)), |v| format!("{v:.0} of {}", plan.slow)),
            fmt_spread(growth, |v| format!("{:.1}", v / (1 << 20) as f64)),
        ));
    }
    let memory_bound = plan.slow as u64 * EDGE_MAX_QUEUED_BYTES + SLOW_RSS_SLACK;
    let target = if args.smoke {
        "not checked (smoke run)".to_owned()
    } else {
        let mut misses = Vec::new();
        match duet_share {
            Some(s) if s.median >= TARGET_FAST_SHARE => {}
            Some(_) => misses.push(format!("the fast guests kept less than {:.0}%", TARGET_FAST_SHARE * 100.0)),
            None => misses.push("not measured".to_owned()),
        }
        match duet_growth {
            Some(g) if g.max <= memory_bound as f64 => {}
            Some(_) => misses.push(format!("the edge grew by more than {} MiB", memory_bound >> 20)),
            None => misses.push("memory not measured".to_owned()),
        }
        if misses.is_empty() {
            "yes".to_owned()
        } else {
            format!("no: {}", misses.join("; "))
        }
    };
    out.push_str(&format!(
        "\nSlow consumers (S5): {} of the guests read at {:.0}% of the send rate while the host sends at {:.0}% of \
         the capacity, for {}; the share of the fast guests' deliveries that arrived while the sends went on, \
         against the same at that level without slow readers. Target: at least {:.0}%, and duet's edge growing by \
         at most {} MiB (8 MiB of queue per slow reader, plus {} MiB) at any run's peak: **{target}**. duet closes a reader with more than the edge's \
         `max_queued_bytes` (8 MiB) queued (close code 4300); nats-server one whose pending data passes its \
         `max_pending` (64 MiB).\n\n",
        plan.slow,
        plan.slow_speed * 100.0,
        SLOW_LEVEL * 100.0,
        fmt_duration(plan.duration),
        TARGET_FAST_SHARE * 100.0,
        memory_bound >> 20,
        SLOW_RSS_SLACK >> 20,
    ));
    let summary = (
        format!("≥ {:.0}%, ≤ {} MiB", TARGET_FAST_SHARE * 100.0, memory_bound >> 20),
        format!(
            "{}, {} MiB",
            fmt_spread(duet_share, |v| format!("{:.1}%", v * 100.0)),
            fmt_spread(duet_growth, |v| format!("{:.1}", v / (1 << 20) as f64))
        ),
        target.clone(),
    );
    (out, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(stream: &mut NatsStream, data: &[u8]) -> Result<Vec<String>, String> {
        let mut seen = Vec::new();
        stream.feed(data, |op| {
            seen.push(match op {
                NatsOp::Msg(body) => format!("MSG {}", String::from_utf8_lossy(body)),
                other => format!("{other:?}"),
            });
            Ok(())
        })?;
        Ok(seen)
    }

    #[test]
    fn nats_operations_split_anywhere_across_messages_parse_the_same() {
        let wire = b"INFO {\"server_id\":\"x\"}\r\nMSG duet.bench.0 1 5\r\nhello\r\nPING\r\n+OK\r\nMSG a 1 r 2\r\n\r\n\r\nPONG\r\n";
        let whole = ops(&mut NatsStream::new(), wire).unwrap();
        assert_eq!(whole, ["Info", "MSG hello", "Ping", "Ok", "MSG \r\n", "Pong"]);
        for cut in 0..wire.len() {
            let mut stream = NatsStream::new();
            let mut seen = ops(&mut stream, &wire[..cut]).unwrap();
            seen.extend(ops(&mut stream, &wire[cut..]).unwrap());
            assert_eq!(seen, whole, "cut at {cut}");
            assert!(stream.pending.is_empty());
        }
    }

    #[test]
    fn nats_garbage_is_refused_with_what_was_wrong() {
        let refuse = |data: &[u8]| ops(&mut NatsStream::new(), data).unwrap_err();
        assert!(refuse(b"HELLO\r\n").contains("unknown protocol line"));
        assert!(refuse(b"MSG a 1 x\r\n").contains("without a size"));
        assert!(refuse(b"MSG a 1 2\r\nabcd").contains("not followed by CRLF"));
        assert!(refuse(b"MSG a 1 99999999\r\n").contains("99999999 bytes"));
        assert!(refuse(&[b'x'; NATS_MAX_LINE + 1]).contains("longer than"));
        let err = ops(&mut NatsStream::new(), b"-ERR 'Slow Consumer'\r\n");
        assert_eq!(err.unwrap(), ["Err(\"-ERR 'Slow Consumer'\")"]);
    }

    #[test]
    fn an_inbox_counts_its_phase_and_notices_order() {
        let base = Instant::now();
        let mut inbox = Inbox::new();
        inbox.reset(3, base);
        let at = |tag, sender, seq| payload(64, tag, sender, seq, 0);
        inbox.arrive(&at(0, 1, 0), 64, base, base); // a warm-up's straggler: checked, not counted
        inbox.arrive(&at(3, 1, 1), 64, base, base);
        inbox.arrive(&at(3, 2, 0), 64, base, base);
        inbox.arrive(&at(3, 1, 5), 64, base, base); // a gap is loss, told by the count, not order
        inbox.arrive(&at(3, 1, 4), 64, base, base); // behind the last seen: out of order
        inbox.arrive(&at(3, 2, 0), 64, base, base); // a duplicate
        inbox.arrive(&at(3, 2, 1)[..40], 64, base, base);
        inbox.arrive(&at(3, 2, 1), 64, base, base + Duration::from_millis(1)); // after the window
                                                                               // Out-of-order and duplicated arrivals are not deliveries: they cannot hide a loss.
        assert_eq!((inbox.received, inbox.on_time, inbox.reordered, inbox.malformed), (4, 3, 2, 1));
        inbox.reset(4, base);
        assert_eq!((inbox.received, inbox.reordered, inbox.latency.len()), (0, 0, 0));
    }

    #[test]
    fn a_phase_breaks_on_loss_order_closes_and_latency() {
        let mut phase = Phase {
            rate: 100.0,
            duration: Duration::from_secs(1),
            window: Duration::from_secs(1),
            expected: 100,
            received: 100,
            lost: 0,
            fast_expected: 100,
            fast_received: 100,
            fast_on_time: 100,
            fast_lost: 0,
            latency: stats::histogram(),
            reordered: 0,
            malformed: 0,
            closed: Vec::new(),
            slow_closed: 0,
            refused: 0,
            unsendable: 0,
            send_lag: Latency { p50: 0, p99: 0, p999: 0, max: 0 },
            server_cpu: Some(Duration::from_millis(10)),
            server_cpu_sending: None,
            loadgen_cpu_sending: Some(Duration::from_millis(950)),
            rss_start: None,
            rss_peak: None,
        };
        phase.latency.record(500).unwrap();
        let limit = Duration::from_millis(1);
        assert_eq!(phase.broken(limit), None);
        assert_eq!(phase.cpu_per_delivery(), Some(100.0));
        assert!(phase.loadgen_saturated());
        assert_eq!(phase.fast_on_time_share(), Some(1.0));
        phase.latency.record(5_000).unwrap();
        phase.latency.record(5_000).unwrap();
        assert!(phase.broken(limit).unwrap().starts_with("p99 5.00 ms"));
        phase.fast_lost = 1;
        assert_eq!(phase.broken(limit).unwrap(), "1 of 100 deliveries missing");
        phase.closed.push((3, "closed by the server with 4300: slow".to_owned()));
        assert!(phase.broken(limit).unwrap().starts_with("1 connection(s) ended"));
    }

    #[test]
    fn nats_publishes_carry_the_exact_payload() {
        assert_eq!(&nats_pub(7, b"ab\r\n")[..], b"PUB duet.bench.7 4\r\nab\r\n\r\n");
    }
}
