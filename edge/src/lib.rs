//! duet edge: carries the live traffic of sessions and reports to the locator.
//!
//! Layout:
//! - [`config`]: options, layering and validation.
//! - [`relay`]: session websockets, one task per connection; each session's state behind one lock.
//! - [`link`]: the websocket to the locator (hello, heartbeats, commands), reconnecting with backoff.
//! - [`keys`]: token verification with the locator's public keys, cached on disk.
//! - [`load`]: CPU and event-loop lag sampling for heartbeats.
//! - [`media`]: WebRTC media, an SFU on one UDP port (str0m), signalled over the session websocket.
//! - [`presence`]: team presence websockets (`/v1/teams/{team}/presence`), one hub per team.
//! - [`http`]: the public listener's routes (`/v1/sessions/{id}`, `/v1/teams/{team}/presence`,
//!   `/livez`, `/readyz`, `/metrics`) and the accept loop, plain or TLS.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`outbox`]: the durable SQLite buffer of audit and metrics entries; the link sends them and
//!   deletes them only when the locator acknowledges that it committed them.
//!
//! [`run`] takes an already-bound listener and a shutdown token, so tests bind `127.0.0.1:0` and
//! the locator can embed an edge that speaks the real link protocol over loopback.
//! Running sessions never depend on the locator: tokens are verified locally and the link is
//! only for reporting and commands.

pub mod config;
pub mod http;
pub mod keys;
pub mod link;
pub mod load;
pub mod media;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod relay;
pub mod runtime;
pub mod telemetry;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use duet_proto::close::CloseCode;
use duet_proto::link::{EdgeMessage, Load, SessionEndReason};
use duet_proto::outbox::{AuditEntry, AuditEvent, MetricsEntry, OutboxEntry, UsageMetrics};
use duet_proto::session::Participant;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::EdgeConfig;
use relay::session::{self, SessionHandle};

/// Link events queued while the link is busy or down. Older session events that do not fit are
/// dropped: the next hello carries the live session list and the locator reconciles from it.
const LINK_EVENT_QUEUE: usize = 4096;

/// How long an ended session's id is remembered so that late joins get `session ended` (longer
/// than any token lifetime the locator should be configured with).
const ENDED_MEMORY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("listener failed: {0}")]
    Listener(std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("tls: {0}")]
    Tls(#[from] duet_ws::tls::TlsError),
    #[error("outbox: {0}")]
    Outbox(#[from] outbox::OutboxError),
    #[error("media: {0}")]
    Media(#[from] media::MediaError),
}

/// State shared by every task of one edge.
pub struct EdgeState {
    pub config: EdgeConfig,
    pub edge_id: String,
    /// The URL clients use to reach this edge (the configured one or `ws://<bound address>`).
    pub public_url: String,
    pub keys: keys::KeyStore,
    /// TLS settings for a `https://`/`wss://` locator URL (`None`: the system roots).
    link_tls: Option<Arc<rustls::ClientConfig>>,
    /// Running sessions by id.
    sessions: DashMap<String, SessionHandle>,
    /// Team presence hubs by team name.
    presence: DashMap<String, Arc<std::sync::Mutex<presence::Hub>>>,
    /// The live sessions of each team whose presence is served here, as the locator last sent.
    team_sessions: DashMap<String, Vec<String>>,
    /// Ended session ids and when they ended (Unix ms), so late joins are refused.
    ended: DashMap<String, i64>,
    next_generation: AtomicU64,
    next_conn: AtomicU64,
    /// Open client websockets (counted from upgrade to close).
    pub connections: AtomicUsize,
    /// Open client websockets per client address (for `max_connections_per_address`).
    per_address: DashMap<std::net::IpAddr, u32>,
    /// Proxies whose forwarding headers name the client address.
    trusted_proxies: duet_netaddr::TrustedProxies,
    /// Events for the locator; the link task drains it.
    link_tx: mpsc::Sender<EdgeMessage>,
    /// True while the link to the locator is up.
    pub linked: AtomicBool,
    /// True once the edge has registered with a locator (it stays true when the link drops).
    pub registered: AtomicBool,
    /// Link connection attempts since start (successful or not).
    pub link_attempts: AtomicU64,
    /// Registrations since start (successful link handshakes).
    pub link_connects: AtomicU64,
    /// Cancelled when the edge starts draining (SIGTERM): not ready, the locator is told, running
    /// sessions continue until they end or the drain deadline passes.
    pub draining: CancellationToken,
    /// When the drain's wait ends (Unix ms; 0 while not draining).
    drain_deadline_ms: std::sync::atomic::AtomicI64,
    /// Woken whenever a session ends, so a drain notices the last one at once.
    session_gone: tokio::sync::Notify,
    pub load: load::LoadSampler,
    /// Audit and metrics entries waiting for the locator's acknowledgement.
    pub outbox: outbox::Outbox,
    /// Client messages relayed and payload bytes delivered since start.
    relayed_messages: AtomicU64,
    relayed_bytes: AtomicU64,
    /// What the last usage entry covered up to: (Unix ms, messages, bytes).
    usage_mark: std::sync::Mutex<(i64, u64, u64)>,
    /// Cancelled on shutdown; every connection watches it.
    pub shutdown: CancellationToken,
    /// The media task (`None` when media is off).
    pub media: Option<media::Media>,
}

impl EdgeState {
    fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The handle of a running session, or a new session if this id has never run here.
    fn session_handle(self: &Arc<Self>, session_id: &str) -> Result<SessionHandle, CloseCode> {
        if self.ended.contains_key(session_id) {
            return Err(CloseCode::SessionEnded);
        }
        if let Some(h) = self.sessions.get(session_id) {
            if !h.is_ended() {
                return Ok(h.clone());
            }
        }
        let max = self.config.max_sessions as usize;
        if max > 0 && self.sessions.len() >= max {
            return Err(CloseCode::EdgeFull);
        }
        let entry = self.sessions.entry(session_id.to_owned());
        let handle = match entry {
            dashmap::mapref::entry::Entry::Occupied(mut o) => {
                if o.get().is_ended() {
                    let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                    o.insert(session::spawn(self.clone(), session_id.to_owned(), generation));
                }
                o.get().clone()
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
                v.insert(session::spawn(self.clone(), session_id.to_owned(), generation)).clone()
            }
        };
        Ok(handle)
    }

    /// The handle of a running session, for `resume` (which never starts a session).
    fn existing_session(&self, session_id: &str) -> Result<SessionHandle, CloseCode> {
        if self.ended.contains_key(session_id) {
            return Err(CloseCode::SessionEnded);
        }
        match self.sessions.get(session_id) {
            Some(h) if !h.is_ended() => Ok(h.clone()),
            _ => Err(CloseCode::ResumeRefused),
        }
    }

    /// Called by a session as it ends.
    fn session_ended(&self, session_id: &str, generation: u64, reason: SessionEndReason) {
        let now = now_ms();
        // Pruning walks the whole map, so it runs once per 1024 ended sessions, not every time.
        if self.ended.len() % 1024 == 1023 {
            self.ended.retain(|_, at| now - *at < ENDED_MEMORY_MS);
        }
        self.ended.insert(session_id.to_owned(), now);
        self.sessions.remove_if(session_id, |_, h| h.generation == generation);
        self.session_gone.notify_waiters();
        self.link_event(EdgeMessage::SessionClosed { session_id: session_id.to_owned(), reason });
    }

    /// Queues an event for the locator without waiting.
    pub fn link_event(&self, msg: EdgeMessage) {
        if self.link_tx.try_send(msg).is_err() {
            tracing::debug!("link event queue full; the next hello reconciles sessions");
        }
    }

    /// Ids of the sessions running here.
    pub fn live_sessions(&self) -> Vec<String> {
        self.sessions.iter().map(|e| e.key().clone()).collect()
    }

    /// Ends a session on a locator command.
    pub fn end_session(&self, session_id: &str, reason: SessionEndReason) {
        let handle = self.sessions.get(session_id).map(|h| h.clone());
        if let Some(h) = handle {
            let _ = h.apply(session::SessionCmd::End { reason, code: CloseCode::SessionEnded });
        }
    }

    /// Ends every session (shutdown): participants are closed with `code`.
    pub fn end_all_sessions(&self, reason: SessionEndReason, code: CloseCode) {
        let handles: Vec<SessionHandle> = self.sessions.iter().map(|e| e.value().clone()).collect();
        for h in handles {
            let _ = h.apply(session::SessionCmd::End { reason, code });
        }
    }

    pub fn current_load(&self) -> Load {
        let (cpu, loop_lag_ms) = self.load.read();
        Load {
            cpu,
            loop_lag_ms,
            connections: u32::try_from(self.connections.load(Ordering::Acquire)).unwrap_or(u32::MAX),
            sessions: u32::try_from(self.sessions.len()).unwrap_or(u32::MAX),
        }
    }

    /// Records an audit entry in the outbox (never waits).
    pub fn audit(
        &self,
        event: AuditEvent,
        session_id: Option<&str>,
        participant: Option<&Participant>,
        detail: String,
    ) {
        self.outbox.push(OutboxEntry::Audit(AuditEntry {
            at_ms: now_ms(),
            event,
            session_id: session_id.map(str::to_owned),
            participant_id: participant.map(|p| p.id),
            user_id: participant.map(|p| p.user_id.clone()),
            detail,
        }));
    }

    /// Counts relayed traffic for the usage metrics.
    pub fn count_relayed(&self, messages: u64, bytes: u64) {
        self.relayed_messages.fetch_add(messages, Ordering::Relaxed);
        self.relayed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records a usage entry for the time since the previous one.
    pub fn report_usage(&self) {
        let now = now_ms();
        let messages = self.relayed_messages.load(Ordering::Relaxed);
        let bytes = self.relayed_bytes.load(Ordering::Relaxed);
        let mut mark = self.usage_mark.lock().unwrap_or_else(|e| e.into_inner());
        let (since, m0, b0) = *mark;
        *mark = (now, messages, bytes);
        drop(mark);
        let load = self.current_load();
        self.outbox.push(OutboxEntry::Metrics(MetricsEntry::Usage(UsageMetrics {
            at_ms: now,
            interval_ms: u32::try_from(now.saturating_sub(since).max(0)).unwrap_or(u32::MAX),
            connections: load.connections,
            sessions: load.sessions,
            messages_relayed: messages.wrapping_sub(m0),
            bytes_relayed: bytes.wrapping_sub(b0),
        })));
    }

    /// Ready once registered with a locator (so tokens can be verified with current keys), and
    /// until a drain or shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.registered.load(Ordering::Acquire)
            && !self.keys.is_empty()
            && !self.draining.is_cancelled()
            && !self.shutdown.is_cancelled()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Milliseconds left until the drain's deadline (0 when not draining or past it).
    pub fn drain_remaining_ms(&self) -> u64 {
        let deadline = self.drain_deadline_ms.load(Ordering::Acquire);
        if deadline == 0 {
            return 0;
        }
        u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0)
    }

    /// Drains: readiness turns off, the locator is told (the link sends it, again after every
    /// reconnect), and this waits until every session has ended by itself, the drain timeout
    /// passes or shutdown is requested. It does not stop the edge: the caller cancels shutdown
    /// next, which closes the remaining participants with 4400. A second call only waits.
    pub async fn drain(&self) {
        let timeout = self.config.drain_timeout;
        if !self.draining.is_cancelled() {
            let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
            self.drain_deadline_ms.store(now_ms().saturating_add(ms), Ordering::Release);
            self.draining.cancel();
            tracing::info!(sessions = self.sessions.len(), timeout = ?timeout, "draining: new sessions go to other edges");
            self.audit(AuditEvent::EdgeStopping, None, None, format!("draining for up to {} s", timeout.as_secs()));
        }
        // From the stored deadline, so a second call keeps the first one's.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(self.drain_remaining_ms());
        loop {
            let gone = self.session_gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.sessions.is_empty() {
                tracing::info!("drained: no session is left");
                return;
            }
            tokio::select! {
                _ = gone => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::info!(sessions = self.sessions.len(), "drain timeout: ending the remaining sessions");
                    return;
                }
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

/// Records a usage metrics entry every `metrics_interval` (the last, partial one at shutdown).
async fn report_usage(state: Arc<EdgeState>) {
    let mut tick = tokio::time::interval(state.config.metrics_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => state.report_usage(),
            _ = state.shutdown.cancelled() => return,
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Reads `<data_dir>/edge-id`, or writes a new random id there.
fn resolve_edge_id(config: &EdgeConfig) -> Result<String, EdgeError> {
    if let Some(id) = &config.id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join("edge-id");
    let dir_err = |source| EdgeError::DataDir { path: path.display().to_string(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        _ => {
            let suffix: String = (0..8)
                .map(|_| char::from(b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random_range(0..36)]))
                .collect();
            let id = format!("edge-{suffix}");
            std::fs::write(&path, format!("{id}\n")).map_err(dir_err)?;
            Ok(id)
        }
    }
}

fn ensure_dir(dir: &Path) -> Result<(), EdgeError> {
    std::fs::create_dir_all(dir).map_err(|source| EdgeError::DataDir { path: dir.display().to_string(), source })
}

/// A running edge, as returned by [`start`].
pub struct Edge {
    pub state: Arc<EdgeState>,
    pub local_addr: std::net::SocketAddr,
    /// The metrics listener's address, when it has its own.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The public listener's TLS, when it serves TLS itself.
    pub tls: Option<duet_ws::tls::ServerTls>,
    tasks: TaskTracker,
}

impl Edge {
    /// What SIGTERM does: drain (see [`EdgeState::drain`]), then shut down.
    pub async fn drain_and_stop(&self) {
        self.state.drain().await;
        self.state.shutdown.cancel();
    }

    /// Waits for every task after shutdown was requested, up to the shutdown timeout.
    pub async fn wait(self) {
        self.tasks.close();
        let deadline = self.state.config.shutdown_timeout;
        if tokio::time::timeout(deadline, self.tasks.wait()).await.is_err() {
            tracing::warn!(timeout = ?deadline, "edge tasks did not stop in time");
        }
    }
}

/// Starts an edge on an already-bound listener. Cancel `shutdown` to stop it, then
/// [`Edge::wait`].
pub async fn start(config: EdgeConfig, listener: TcpListener, shutdown: CancellationToken) -> Result<Edge, EdgeError> {
    config.validate()?;
    ensure_dir(&config.data_dir)?;
    let edge_id = resolve_edge_id(&config)?;
    let local_addr = listener.local_addr().map_err(EdgeError::Listener)?;
    let tls = config.tls.clone().map(duet_ws::tls::ServerTls::new).transpose()?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("{scheme}://{local_addr}"));
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(EdgeError::Listener)?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr().map_err(EdgeError::Listener)?),
        None => None,
    };
    let keys = keys::KeyStore::load(config.data_dir.join("keys.json"));
    let link_tls = match &config.ca_file {
        Some(path) => Some(duet_ws::tls::client_config(&duet_ws::tls::read_pem_certs(path)?)?),
        None => None,
    };
    let (outbox, outbox_writer) =
        outbox::Outbox::open(&config.data_dir.join("outbox.sqlite"), config.outbox_max_entries).await?;
    let (link_tx, link_rx) = mpsc::channel(LINK_EVENT_QUEUE);
    let tasks = TaskTracker::new();
    let media = match &config.media {
        Some(media_config) => {
            let media_outbox = outbox.clone();
            let audit: media::AuditFn = Arc::new(move |event, session, participant, user_id, detail| {
                media_outbox.push(OutboxEntry::Audit(AuditEntry {
                    at_ms: now_ms(),
                    event,
                    session_id: Some(session.to_owned()),
                    participant_id: Some(participant),
                    user_id: Some(user_id.to_owned()),
                    detail,
                }));
            });
            Some(media::Media::start(media_config, audit, shutdown.clone(), &tasks).await?)
        }
        None => None,
    };
    let config_trusted = config.trusted_proxies.clone();
    let state = Arc::new(EdgeState {
        config,
        edge_id,
        public_url,
        keys,
        link_tls,
        sessions: DashMap::new(),
        presence: DashMap::new(),
        team_sessions: DashMap::new(),
        ended: DashMap::new(),
        next_generation: AtomicU64::new(1),
        next_conn: AtomicU64::new(1),
        connections: AtomicUsize::new(0),
        per_address: DashMap::new(),
        trusted_proxies: duet_netaddr::TrustedProxies::new(config_trusted),
        link_tx,
        linked: AtomicBool::new(false),
        registered: AtomicBool::new(false),
        link_attempts: AtomicU64::new(0),
        link_connects: AtomicU64::new(0),
        draining: CancellationToken::new(),
        drain_deadline_ms: std::sync::atomic::AtomicI64::new(0),
        session_gone: tokio::sync::Notify::new(),
        load: load::LoadSampler::default(),
        outbox,
        relayed_messages: AtomicU64::new(0),
        relayed_bytes: AtomicU64::new(0),
        usage_mark: std::sync::Mutex::new((now_ms(), 0, 0)),
        shutdown: shutdown.clone(),
        media,
    });
    tracing::info!(edge.id = %state.edge_id, addr = %local_addr, url = %state.public_url, region = %state.config.region, "edge listening");
    let build = format!("duet-edge {}, outbox {}", env!("CARGO_PKG_VERSION"), state.outbox.outbox_id());
    state.audit(AuditEvent::EdgeStarted, None, None, build);
    tasks.spawn(load::run(state.clone()));
    tasks.spawn(report_usage(state.clone()));
    // The outbox writer outlives the sessions, so their last entries are written before exit.
    let outbox_stop = CancellationToken::new();
    tasks.spawn(outbox_writer.run(outbox_stop.clone()));
    let ending = state.clone();
    tasks.spawn(async move {
        ending.shutdown.cancelled().await;
        if !ending.is_draining() {
            ending.audit(AuditEvent::EdgeStopping, None, None, String::new());
        }
        ending.end_all_sessions(SessionEndReason::EdgeShutdown, CloseCode::EdgeShuttingDown);
        let deadline = tokio::time::Instant::now() + ending.config.shutdown_timeout / 2;
        while !ending.sessions.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        ending.report_usage();
        outbox_stop.cancel();
    });
    tasks.spawn(link::run(state.clone(), link_rx));
    if let Some(tls) = &tls {
        tasks.spawn(tls.clone().watch(duet_ws::tls::RELOAD_CHECK_INTERVAL, shutdown.clone()));
    }
    if let Some(metrics) = metrics_listener.filter(|_| state.config.serve_metrics) {
        let app = http::metrics_router(state.clone());
        let timeout = state.config.handshake_timeout;
        tasks.spawn(http::serve_app(metrics, None, app, timeout, shutdown.clone(), tasks.clone()));
        tracing::info!(addr = ?metrics_addr, "metrics listening");
    }
    tasks.spawn(http::serve(state.clone(), listener, tls.clone(), tasks.clone()));
    Ok(Edge { state, local_addr, metrics_addr, tls, tasks })
}
