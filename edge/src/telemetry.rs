//! Logging setup shared by both binaries: lowercase messages with structured fields, as text on
//! stderr for people, or JSON lines on stdout for log collectors (`DUET_LOG_FORMAT=json`; then
//! stdout carries nothing else, so every line parses). `DUET_LOG` (or `RUST_LOG`) filters, e.g.
//! `DUET_LOG=duet_edge=debug`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = std::env::var("DUET_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.with_writer(std::io::stderr).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_writer(std::io::stdout).try_init(),
    };
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
