//! duet's load generator: benchmark scenarios that run the real release binaries as processes on
//! loopback and measure them from outside, the way clients see them.
//!
//! # Layout
//!
//! - [`placement`]: the `placement` scenario (`POST /api/v1/sessions` throughput and latency).
//! - [`outbox`]: the `outbox` scenario (an edge's buffered audit entries delivered after a link
//!   outage: how soon, and each exactly once).
//! - [`media`]: the `media` scenario (one publisher's video forwarded by an edge to N
//!   subscribers: packets per second, and CPU per packet and per megabit).
//! - [`echo`]: the `echo` scenario (S1: duet relaying A → edge → B against fastwebsockets' own
//!   echo server example, messages per second and latency).
//! - [`failover`]: the `failover` scenario (an edge killed with `kill -9`: how soon the locator
//!   judges it unavailable, and that the other edge's sessions notice nothing).
//! - [`fanout`]: the `fanout` and `sessions` scenarios (S2 with S5, and S3: messages relayed to
//!   everyone else in a session, duet against nats-server's websocket listener, open-loop ramp to
//!   the capacity, then 25/50/80% of it; slow consumers).
//! - [`idle`]: the `idle` scenario (S4: 50,000 idle participants joined to one edge, its memory
//!   per connection and handshakes per second).
//! - [`instructions`]: the `instructions` scenario (the edge's instructions per relayed message,
//!   counted by callgrind: a regression figure free of timing noise).
//! - [`procs`]: CPU pinning, free ports, the locator and edge processes and their teardown.
//! - [`database`]: the database each run gets (a SQLite file, or a fresh PostgreSQL database).
//! - [`http`]: a minimal HTTP/1.1 keep-alive client on hyper's connection API.
//! - [`drive`]: the load shapes every scenario uses: closed loop and open loop.
//! - [`stats`]: histograms, medians and the formatting of figures.
//! - [`report`]: the machine description and the generated sections of `docs/benchmarks.md`.
//!
//! Pinning: the load generator pins itself (all its threads) to its own CPUs with
//! `taskset -a -p` before its runtime starts, and starts the servers under `taskset -c`, so that
//! the two never compete for a core. The runtime is single-threaded, since one core is what it
//! gets; the open loop adds one mostly sleeping thread that times the sends.

mod database;
mod drive;
mod echo;
mod failover;
mod fanout;
mod http;
mod idle;
mod instructions;
mod media;
mod outbox;
mod placement;
mod procs;
mod report;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status after SIGINT or SIGTERM, as a shell reports a process killed by SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

/// duet load generator: runs the real duet binaries on loopback and measures them.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Placements per second and latency of `POST /api/v1/sessions` with edges registered.
    Placement(placement::Args),
    /// Delivery of the audit entries an edge buffered during a link outage, once the link is back.
    Outbox(outbox::Args),
    /// Video packets an edge forwards per second (SRTP on) from one publisher to N subscribers,
    /// and the edge's CPU per forwarded packet and megabit.
    Media(media::Args),
    /// Messages per second duet relays between the two participants of 100 sessions, against
    /// fastwebsockets' echo server example on the same core (S1, the echo floor).
    Echo(echo::Args),
    /// How soon the locator judges an edge killed with `kill -9` unavailable (and sends no more
    /// sessions there), while the other edge's sessions go on.
    Failover(failover::Args),
    /// One host's messages relayed to 50 guests, against nats-server over websockets: open-loop
    /// ramp to the capacity, then 25/50/80% of it, then 5 slow guests (S2 fan-out, S5 slow
    /// consumers).
    Fanout(fanout::Args),
    /// 200 sessions of 5, everyone sending 256-byte messages, against nats-server over websockets
    /// (S3, many small sessions).
    Sessions(fanout::Args),
    /// Memory per idle participant of an edge holding 50,000 of them, and handshakes per second
    /// (S4, idle scale).
    Idle(idle::Args),
    /// The edge's instructions per relayed message, counted by callgrind (a regression figure
    /// that does not depend on the machine's speed or load).
    Instructions(instructions::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let pinning = match &cli.scenario {
        Scenario::Placement(args) => args.pinning.clone(),
        Scenario::Outbox(args) => args.pinning.clone(),
        Scenario::Media(args) => args.pinning.clone(),
        Scenario::Echo(args) => args.pinning.clone(),
        Scenario::Failover(args) => args.pinning.clone(),
        Scenario::Fanout(args) | Scenario::Sessions(args) => args.pinning.clone(),
        Scenario::Idle(args) => args.pinning.clone(),
        Scenario::Instructions(args) => args.pinning.clone(),
    };
    if let Err(e) = procs::pin_self(&pinning) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let run = async {
            match cli.scenario {
                Scenario::Placement(args) => placement::run(args).await,
                Scenario::Outbox(args) => outbox::run(args).await,
                Scenario::Media(args) => media::run(args).await,
                Scenario::Echo(args) => echo::run(args).await,
                Scenario::Failover(args) => failover::run(args).await,
                Scenario::Fanout(args) => fanout::run(fanout::Scenario::Fanout, args).await,
                Scenario::Sessions(args) => fanout::run(fanout::Scenario::Sessions, args).await,
                Scenario::Idle(args) => idle::run(args).await,
                Scenario::Instructions(args) => instructions::run(args).await,
            }
        };
        tokio::select! {
            result = run => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            // Leaving `run` unfinished drops it: the process guards kill the servers and the
            // database guard drops the benchmark database.
            signal = procs::interrupted() => {
                eprintln!("interrupted by {signal}: stopping the servers");
                ExitCode::from(EXIT_INTERRUPTED)
            }
        }
    })
}
