//! duet locator: places new sessions on edges, signs participant tokens, and stores what must
//! last (edges, sessions, keys) in SQL.
//!
//! Layout:
//! - [`config`]: options, layering and validation.
//! - [`api`]: the public HTTP surface, one file per area, and the one JSON error shape.
//! - [`admin`]: the admin API (bearer token): edges, regions and rules, placement dry runs.
//! - [`cli`]: the admin subcommands of `duet-locator`, which call the admin API.
//! - [`link`]: the edges' websockets and the registry of links this replica holds.
//! - [`client_addr`]: the client's address, through trusted proxies.
//! - [`geo`]: a client's region: CIDR rules, GeoIP country and continent rules, default.
//! - [`selector`]: choosing an edge for a new session: filters, tiers, regions, score.
//! - [`placement`]: in-memory snapshots, reservations and batched commits around the selector.
//! - [`tokens`]: Ed25519 JWTs with the signing key kept in the database.
//! - [`ice`]: the STUN/TURN servers of placement answers, with coturn REST API credentials.
//! - [`db`]: the store (SQLite, PostgreSQL, MySQL/MariaDB) and its migrations.
//! - [`retention`]: deletes audit and metrics entries older than their retention.
//!
//! [`start`] takes already-bound listeners and a shutdown token (tests bind `127.0.0.1:0`).
//! Everything another replica must know lives in the database; memory holds only the links this
//! process happens to serve.

pub mod access;
pub mod admin;
pub mod api;
pub mod cli;
pub mod client_addr;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod drain;
pub mod geo;
pub mod health;
pub mod ice;
pub mod ids;
pub mod keys;
pub mod link;
pub mod metrics;
pub mod placement;
pub mod retention;
pub mod selector;
pub mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::LocatorConfig;
use db::Store;
use tokens::Signer;

#[derive(Debug, thiserror::Error)]
pub enum LocatorError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("database: {0}")]
    Store(#[from] db::StoreError),
    #[error("signing keys: {0}")]
    Tokens(#[from] tokens::TokenError),
    #[error("listener failed: {0}")]
    Listener(std::io::Error),
    #[error("embedded edge: {0}")]
    Edge(#[from] duet_edge::EdgeError),
    #[error("invalid configuration: {0}")]
    Config(#[from] duet_edge::config::ConfigError),
    #[error("geoip_database: {0}")]
    GeoIp(#[from] geo::GeoError),
}

/// State shared by the locator's tasks.
pub struct LocatorState {
    pub config: LocatorConfig,
    pub store: Store,
    /// The current signer; replaced when the key set changes (see [`keys`]).
    signer: std::sync::RwLock<Arc<Signer>>,
    /// The secret edges present to open a link.
    pub enrollment_secret: String,
    /// The token admins present to the admin API (compared in constant time).
    pub auth: admin::auth::Auth,
    pub access: access::Access,
    pub drain_sent: drain::Sent,
    pub links: link::Registry,
    /// Edges, rules and reservations in memory for fast placement.
    pub placer: placement::Placer,
    /// Commits placements in batches.
    pub recorder: placement::recorder::Recorder,
    /// Sends teams' presence edges their live sessions when sessions start or end.
    pub presence: api::presence::Notifier,
    /// Metrics requests update (the rest is read at scrape time).
    pub metrics: metrics::LocatorMetrics,
    /// Cancelled on shutdown: readiness turns false, links and the listener close.
    pub shutdown: CancellationToken,
    /// Every task the locator spawns, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl LocatorState {
    /// The signer to use now (cheap: an `Arc` clone).
    pub fn signer(&self) -> Arc<Signer> {
        self.signer.read().map(|s| s.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn set_signer(&self, signer: Signer) {
        let mut guard = self.signer.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Arc::new(signer);
    }
}

/// Listeners the locator serves on, bound by the caller.
pub struct Listeners {
    pub api: TcpListener,
    /// The embedded edge's listener, when the configuration asks for one.
    pub edge: Option<TcpListener>,
}

/// `GET /metrics` alone, for the public listener or a listener of its own.
fn metrics_router(state: Arc<LocatorState>, edge: Option<Arc<duet_edge::EdgeState>>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let state = state.clone();
            let edge = edge.clone();
            async move { duet_edge::metrics::response(metrics::scrape(&state, edge.as_ref()).await) }
        }),
    )
}

/// A running locator.
pub struct Locator {
    pub state: Arc<LocatorState>,
    pub local_addr: SocketAddr,
    /// The metrics listener's address, when it has its own.
    pub metrics_addr: Option<SocketAddr>,
    /// The public listener's TLS, when it serves TLS itself.
    pub tls: Option<duet_ws::tls::ServerTls>,
    /// The embedded edge of one-machine mode.
    pub edge: Option<duet_edge::Edge>,
}

impl Locator {
    /// The URL of the placement API.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", loopback_if_unspecified(self.local_addr))
    }

    /// Waits for every task after shutdown was requested, up to the shutdown timeout.
    pub async fn wait(self) {
        if let Some(edge) = self.edge {
            edge.wait().await;
        }
        self.state.tasks.close();
        let deadline = self.state.config.shutdown_timeout;
        if tokio::time::timeout(deadline, self.state.tasks.wait()).await.is_err() {
            tracing::warn!(timeout = ?deadline, "locator tasks did not stop in time");
        }
        self.state.store.close().await;
    }
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], a.port())),
        SocketAddr::V6(a) if a.ip().is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port())),
        other => other,
    }
}

/// The database URL: the configured one or SQLite in the data directory.
pub fn database_url(config: &LocatorConfig) -> String {
    config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", config.data_dir.join("locator.db").display()))
}

/// The enrollment secret: configured, or generated once into `<data_dir>/enrollment-secret`
/// (mode 0600) so separate `duet-edge` processes on the machine can use it.
fn enrollment_secret(config: &LocatorConfig) -> Result<String, LocatorError> {
    if let Some(s) = &config.enrollment_secret {
        return Ok(s.clone());
    }
    let path = config.data_dir.join("enrollment-secret");
    let err = |source| LocatorError::DataDir { path: path.clone(), source };
    if let Ok(text) = std::fs::read_to_string(&path) {
        let s = text.trim().to_owned();
        if s.len() >= 16 {
            return Ok(s);
        }
    }
    let secret = ids::random_id(40);
    write_private(&path, &secret).map_err(err)?;
    tracing::info!(path = %path.display(), "generated an enrollment secret");
    Ok(secret)
}

/// The admin token: configured, or generated once into `<data_dir>/admin-token` (mode 0600),
/// where the admin CLI on the same machine finds it.
fn admin_token(config: &LocatorConfig) -> Result<String, LocatorError> {
    if let Some(t) = &config.admin_token {
        return Ok(t.clone());
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim().to_owned();
        if t.len() >= 16 {
            return Ok(t);
        }
    }
    let token = ids::random_id(40);
    write_private(&path, &token).map_err(|source| LocatorError::DataDir { path: path.clone(), source })?;
    tracing::info!(path = %path.display(), "generated an admin token");
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, format!("{text}\n"))
    }
}

/// Starts the locator (and its embedded edge, if configured) on already-bound listeners.
pub async fn start(
    config: LocatorConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<Locator, LocatorError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| LocatorError::DataDir { path: config.data_dir.clone(), source })?;
    let url = database_url(&config);
    let store = Store::open(&url).await?;
    tracing::info!(database = %db::redact_url(&url), dialect = store.dialect().name(), "database ready");
    let signer = Signer::load_or_create(&store, config.token_ttl).await?;
    let secret = enrollment_secret(&config)?;
    let auth = admin::auth::Auth::new(&admin_token(&config)?);
    let access = access::Access::new(
        config.client_auth.clone(),
        config.oidc.clone(),
        config.public_rate_limit,
        config.ca_file.as_deref(),
    )
    .map_err(|reason| duet_edge::config::ConfigError::Invalid { option: "client_auth", reason })?;
    tracing::info!(
        client_auth = ?config.client_auth.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "clients are admitted by these modes"
    );
    let geoip = match &config.geoip_database {
        Some(path) => {
            let db = geo::GeoIp::open(path)?;
            tracing::info!(path = %path.display(), database_type = db.database_type(), "geoip database loaded");
            Some(Arc::new(db))
        }
        None => None,
    };
    let limits = selector::Limits {
        heartbeat_timeout: config.heartbeat_timeout,
        cpu_limit: config.placement_cpu_limit,
        lag_limit: config.placement_lag_limit,
    };
    // Reservations hold for two heartbeat intervals and fade over two more (see
    // placement::reservations for the reasoning).
    let hold = config.heartbeat_interval * 2;
    let placer = placement::Placer::new(limits, config.default_region.clone(), geoip, hold, hold);
    placer.refresh_edges(&store).await?;
    placer.refresh_rules(&store).await?;
    let local_addr = listeners.api.local_addr().map_err(LocatorError::Listener)?;
    let tls = config.tls.clone().map(duet_ws::tls::ServerTls::new).transpose().map_err(duet_edge::EdgeError::from)?;
    let tasks = TaskTracker::new();
    // Placements are committed until the last request in flight has its answer: the recorder
    // stops only after the HTTP connections have finished (see below).
    let recorder_stop = CancellationToken::new();
    let recorder = placement::recorder::Recorder::start(store.clone(), &tasks, recorder_stop.clone());
    let state = Arc::new(LocatorState {
        config: config.clone(),
        store,
        signer: std::sync::RwLock::new(Arc::new(signer)),
        enrollment_secret: secret.clone(),
        auth,
        access,
        drain_sent: drain::Sent::default(),
        links: link::Registry::default(),
        placer,
        recorder,
        presence: api::presence::Notifier::default(),
        metrics: metrics::LocatorMetrics::default(),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    });
    tasks.spawn(keys::run(state.clone()));
    tasks.spawn(placement::run(state.clone()));
    tasks.spawn(retention::run(state.clone()));
    tasks.spawn(health::run(state.clone()));
    tasks.spawn(drain::run(state.clone()));
    tasks.spawn(api::presence::run_sync(state.clone()));
    // On shutdown the listeners stop accepting at once; connections finish the request in
    // flight and close; then the recorder commits what is queued and stops. Edge links (upgraded
    // connections) close themselves with 1001 going away.
    let http = TaskTracker::new();
    let header_timeout = duet_edge::config::DEFAULT_HANDSHAKE_TIMEOUT;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(LocatorError::Listener)?),
        None => None,
    };
    let metrics_addr =
        metrics_listener.as_ref().map(TcpListener::local_addr).transpose().map_err(LocatorError::Listener)?;

    // The embedded edge starts first (its link retries until the listeners serve), so that the
    // metrics pages can include it. With TLS on the public listener it links over a plain
    // loopback listener that serves only the link endpoint: it is in the same process, and the
    // certificate need not name 127.0.0.1.
    let mut link_listener = None;
    let edge = match (&config.embedded_edge, listeners.edge) {
        (Some(embedded), Some(listener)) => {
            let link_addr = if tls.is_some() {
                let l = TcpListener::bind("127.0.0.1:0").await.map_err(LocatorError::Listener)?;
                let addr = l.local_addr().map_err(LocatorError::Listener)?;
                link_listener = Some(l);
                addr
            } else {
                loopback_if_unspecified(local_addr)
            };
            let mut edge_config =
                duet_edge::EdgeConfig::new(format!("http://{link_addr}"), secret, config.data_dir.join("edge"));
            edge_config.region = embedded.region.clone();
            edge_config.media = embedded.media.clone();
            edge_config.public_url = embedded.public_url.clone();
            edge_config.heartbeat_interval = config.heartbeat_interval;
            edge_config.shutdown_timeout = config.shutdown_timeout;
            edge_config.tls = config.tls.clone();
            // The locator's metrics page carries the embedded edge's; the edge serves none.
            edge_config.metrics_listen = None;
            edge_config.serve_metrics = false;
            Some(duet_edge::start(edge_config, listener, shutdown.child_token()).await?)
        }
        _ => None,
    };
    let edge_state = edge.as_ref().map(|e| e.state.clone());
    if let Some(listener) = link_listener {
        let app = axum::Router::new()
            .route(duet_proto::link::LINK_PATH, axum::routing::get(link::accept))
            .with_state(state.clone());
        http.spawn(duet_edge::http::serve_app(listener, None, app, header_timeout, shutdown.clone(), http.clone()));
    }
    let app = api::router(state.clone());
    let public_app = match &metrics_listener {
        None => app.merge(metrics_router(state.clone(), edge_state.clone())),
        Some(_) => app,
    };
    http.spawn(duet_edge::http::serve_app(
        listeners.api,
        tls.clone(),
        public_app,
        header_timeout,
        shutdown.clone(),
        http.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let app = metrics_router(state.clone(), edge_state);
        http.spawn(duet_edge::http::serve_app(listener, None, app, header_timeout, shutdown.clone(), http.clone()));
        tracing::info!(addr = ?metrics_addr, "metrics listening");
    }
    if let Some(tls) = &tls {
        tasks.spawn(tls.clone().watch(duet_ws::tls::RELOAD_CHECK_INTERVAL, shutdown.clone()));
    }
    let stopping = shutdown.clone();
    let http_done = http.clone();
    tasks.spawn(async move {
        stopping.cancelled().await;
        http_done.close();
        http_done.wait().await;
        recorder_stop.cancel();
    });
    tracing::info!(addr = %local_addr, tls = tls.is_some(), "locator listening");
    Ok(Locator { state, local_addr, metrics_addr, tls, edge })
}
