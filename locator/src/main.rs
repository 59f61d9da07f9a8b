//! `duet-locator`: parse the configuration (exit 64 if it is bad), bind, run until SIGTERM.
//! With a subcommand (`regions ...`, `edges ...`, ...) it is the admin CLI instead.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use duet_edge::config::{LogFormat, ProcessEnv};
use duet_locator::config::LocatorArgs;
use tokio_util::sync::CancellationToken;

/// Exit status for a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let mut args = LocatorArgs::parse();
    if let Some(command) = args.command.take() {
        return duet_locator::cli::run(command, &ProcessEnv);
    }
    let check_only = args.check_config;
    let resolved = args.worker_threads().and_then(|workers| args.resolve(&ProcessEnv).map(|(c, f)| (workers, c, f)));
    let (workers, config, log_format) = match resolved {
        Ok(x) => x,
        Err(e) => {
            eprintln!("duet-locator: configuration error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(path) = &config.geoip_database {
        // Checked here too so that --check-config and a bad file exit 64 before anything starts.
        if let Err(e) = duet_locator::geo::GeoIp::open(path) {
            eprintln!("duet-locator: configuration error: geoip_database: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if check_only {
        println!("configuration ok\nworker threads: {}\n{config:#?}", duet_edge::runtime::describe(workers));
        return ExitCode::SUCCESS;
    }
    duet_edge::telemetry::init(log_format);
    tracing::info!(config = ?config, worker_threads = workers, "starting duet-locator");
    duet_ws::tls::install_default_provider();
    let runtime = match duet_edge::runtime::build(workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duet-locator: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, log_format)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duet-locator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: duet_locator::LocatorConfig, log_format: LogFormat) -> anyhow::Result<()> {
    let api = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let edge = match &config.embedded_edge {
        Some(e) => Some(
            tokio::net::TcpListener::bind(e.listen)
                .await
                .with_context(|| format!("cannot listen on {} for the embedded edge", e.listen))?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let locator = duet_locator::start(config, duet_locator::Listeners { api, edge }, shutdown.clone()).await?;
    // With JSON logs, stdout carries only log lines (the listening addresses are logged).
    if log_format == LogFormat::Text {
        println!("duet locator: {} (placement API: POST {}/api/v1/sessions)", locator.url(), locator.url());
        if let Some(edge) = &locator.edge {
            println!("duet embedded edge {}: {}", edge.state.edge_id, edge.state.public_url);
        }
        println!("try it: cargo run -p duet-client --bin duet -- host   (then `duet join <session>` in another shell)");
    }
    duet_edge::telemetry::shutdown_signal().await;
    tracing::info!("shutting down: no new connections; requests in flight finish; edge links close with 1001");
    shutdown.cancel();
    locator.wait().await;
    tracing::info!("stopped");
    Ok(())
}
