//! `duet-edge`: parse the configuration (exit 64 if it is bad), then run until SIGTERM, which
//! drains the edge before it exits. `duet-edge drain` asks a running edge to do that.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use duet_edge::config::{EdgeArgs, EdgeCommand, LogFormat, ProcessEnv, Resolved};
use tokio_util::sync::CancellationToken;

/// Exit status for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let mut args = EdgeArgs::parse();
    if let Some(EdgeCommand::Drain { pid, timeout }) = args.command.take() {
        return drain_command(pid, timeout);
    }
    let check_only = args.check_config;
    let Resolved { config, log_format, listen, worker_threads: workers } = match args.resolve(&ProcessEnv) {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("duet-edge: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        println!(
            "configuration ok\nlisten: {listen}\nworker threads: {}\n{config:#?}",
            duet_edge::runtime::describe(workers)
        );
        return ExitCode::SUCCESS;
    }
    duet_edge::telemetry::init(log_format);
    tracing::info!(config = ?config, %listen, worker_threads = workers, "starting duet-edge");
    duet_ws::tls::install_default_provider();
    let runtime = match duet_edge::runtime::build(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duet-edge: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(listen, config, log_format)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(listen: std::net::SocketAddr, config: duet_edge::EdgeConfig, log_format: LogFormat) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let shutdown = CancellationToken::new();
    let edge = duet_edge::start(config, listener, shutdown.clone()).await?;
    if log_format == LogFormat::Text {
        println!("duet-edge {} serving sessions at {}", edge.state.edge_id, edge.state.public_url);
    }
    duet_edge::telemetry::shutdown_signal().await;
    tracing::info!("stop requested: draining (a second SIGTERM or Ctrl-C stops at once)");
    tokio::select! {
        _ = edge.drain_and_stop() => {}
        _ = duet_edge::telemetry::shutdown_signal() => tracing::info!("second stop request: stopping now"),
    }
    shutdown.cancel();
    edge.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// `duet-edge drain`: SIGTERM to `pid`, then wait until it is gone.
fn drain_command(pid: i32, timeout: std::time::Duration) -> ExitCode {
    let Some(target) = rustix::process::Pid::from_raw(pid) else {
        eprintln!("duet-edge drain: invalid process id {pid}");
        return ExitCode::from(EXIT_CONFIG);
    };
    // Only ever a duet edge: a wrong --pid must not stop something else.
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        if comm.trim_end() != "duet-edge" {
            eprintln!("duet-edge drain: process {pid} is {:?}, not duet-edge; nothing signalled", comm.trim_end());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = rustix::process::kill_process(target, rustix::process::Signal::TERM) {
        eprintln!("duet-edge drain: cannot signal process {pid}: {e}");
        return ExitCode::FAILURE;
    }
    let deadline = std::time::Instant::now() + timeout;
    // Signal 0 checks that the process exists; a zombie still does until it is reaped, which
    // for process 1 of a container never matters (the container ends with it).
    while rustix::process::test_kill_process(target).is_ok() {
        if std::time::Instant::now() >= deadline {
            eprintln!("duet-edge drain: process {pid} still running after {timeout:?}; it goes on draining");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ExitCode::SUCCESS
}
