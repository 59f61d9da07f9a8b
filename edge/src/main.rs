//! `duet-edge`: parse the configuration (exit 64 if it is bad), then run until SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use duet_edge::config::{EdgeArgs, ProcessEnv};
use tokio_util::sync::CancellationToken;

/// Exit status for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = EdgeArgs::parse();
    let check_only = args.check_config;
    let resolved = args.listen_addr().and_then(|listen| args.resolve(&ProcessEnv).map(|(c, f)| (listen, c, f)));
    let (listen, config, log_format) = match resolved {
        Ok(x) => x,
        Err(e) => {
            eprintln!("duet-edge: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        println!("configuration ok\nlisten: {listen}\n{config:#?}");
        return ExitCode::SUCCESS;
    }
    duet_edge::telemetry::init(log_format);
    tracing::info!(config = ?config, %listen, "starting duet-edge");
    duet_ws::tls::install_default_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duet-edge: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(listen, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(listen: std::net::SocketAddr, config: duet_edge::EdgeConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let shutdown = CancellationToken::new();
    let edge = duet_edge::start(config, listener, shutdown.clone()).await?;
    println!("duet-edge {} serving sessions at {}", edge.state.edge_id, edge.state.public_url);
    duet_edge::telemetry::shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    edge.wait().await;
    Ok(())
}
