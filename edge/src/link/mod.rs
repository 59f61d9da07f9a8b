//! The edge's side of the link: one websocket to the locator, re-established with backoff.
//!
//! A link session is: connect with the enrollment secret, send `Hello` (with the sessions running
//! here, so the locator can reconcile), receive `Welcome` (token keys, cached on disk), then send
//! a heartbeat every interval and session events as they happen, and carry out commands. The
//! read side runs in its own task because fastwebsockets reads are not cancel-safe; this task
//! `select!`s over decoded messages, the heartbeat timer, queued events and shutdown.
//! Nothing a client does waits for the link: when it is down, sessions keep running.
//!
//! Outbox entries go out in sequence order in batches, with at most [`OUTBOX_WINDOW`] entries
//! sent and not yet acknowledged; each link session starts again from the last acknowledged
//! entry, so entries sent on a link that died are sent again (the locator stores each once).
//! The locator answers every heartbeat; a link that hears nothing for three heartbeat intervals
//! is dropped and dialled again, so a black-holed connection does not hold entries back.

pub mod backoff;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use duet_proto::close::CloseCode;
use duet_proto::codec;
use duet_proto::link::{
    Capacity, Command, EdgeMessage, Heartbeat, Hello, LocatorMessage, LINK_PATH, LINK_PROTOCOL_VERSION,
    LINK_VERSION_DRAINING, LINK_VERSION_END_ALL,
};
use duet_ws::{Limits, Message, Writer};
use tokio::sync::mpsc;

use crate::EdgeState;
use backoff::Backoff;

/// Connecting (TCP, TLS and the websocket upgrade) must finish within this time: an attempt
/// made during a partition would otherwise wait on TCP retransmissions long after the network
/// is back.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The locator must answer the hello within this time.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Link messages are small; 16 MiB bounds a key list or an outbox batch with room to spare.
const LINK_MAX_MESSAGE: usize = 16 << 20;
/// A link that stayed up this long counts as working: the next drop retries quickly.
const STABLE_LINK: Duration = Duration::from_secs(10);
/// Most outbox entries in one `Outbox` message, and about the most bytes.
const OUTBOX_BATCH_ENTRIES: usize = 2_000;
const OUTBOX_BATCH_BYTES: usize = 1 << 20;
/// Most outbox entries sent and not yet acknowledged: twice the locator's largest commit, so the
/// next commit's entries are already there when one finishes.
const OUTBOX_WINDOW: u64 = 20_000;
/// A link that hears nothing from the locator for this many heartbeat intervals is dropped.
const SILENT_INTERVALS: u32 = 3;

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connect failed: {0}")]
    Connect(#[from] duet_ws::ConnectError),
    #[error("connect did not finish within {0:?}")]
    ConnectTimeout(Duration),
    #[error("locator refused the link: {code} {reason}")]
    Refused { code: u16, reason: String },
    #[error("no welcome from the locator in time")]
    WelcomeTimeout,
    #[error("link closed by the locator (code {code:?}: {reason})")]
    Closed { code: Option<u16>, reason: String },
    #[error("link read failed: {0}")]
    Read(#[from] duet_ws::ReadError),
    #[error("undecodable message from the locator: {0}")]
    Codec(#[from] codec::CodecError),
    #[error("link write queue full or closed")]
    Write,
    #[error("the locator acknowledged outbox entry {up_to}, beyond the last one sent ({sent})")]
    AckBeyondSent { up_to: u64, sent: u64 },
    #[error("outbox: {0}")]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error("nothing heard from the locator for {0:?}")]
    Silent(Duration),
}

/// Runs the link until shutdown.
pub async fn run(state: Arc<EdgeState>, mut events: mpsc::Receiver<EdgeMessage>) {
    let mut backoff = Backoff::default();
    // The version offered in the hello: this build's, or the one before it once a locator of
    // the previous release refused this one (4600). Version 3's hello has the same layout;
    // what version 4 adds (`Draining`) is then not sent.
    let mut version = LINK_PROTOCOL_VERSION;
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        let started = tokio::time::Instant::now();
        state.link_attempts.fetch_add(1, Ordering::Relaxed);
        let result = link_once(&state, &mut events, version).await;
        state.linked.store(false, Ordering::Release);
        match result {
            Ok(()) => return,
            Err(LinkError::Refused { code, .. })
                if code == CloseCode::LinkUnsupportedVersion.code() && version == LINK_PROTOCOL_VERSION =>
            {
                version = LINK_VERSION_END_ALL;
                tracing::warn!(version, "the locator refused link version {LINK_PROTOCOL_VERSION}; offering {version} (upgrade the locator)");
            }
            Err(e) => {
                if started.elapsed() >= STABLE_LINK {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                match &e {
                    LinkError::Refused { .. } => tracing::error!(error = %e, retry_in = ?delay, "link refused"),
                    _ => tracing::warn!(error = %e, retry_in = ?delay, "link down"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = state.shutdown.cancelled() => return,
                }
            }
        }
    }
}

fn link_url(locator_url: &str) -> String {
    format!("{}{}", locator_url.trim_end_matches('/'), LINK_PATH)
}

fn send(writer: &Writer, msg: &EdgeMessage) -> Result<(), LinkError> {
    let bytes = codec::encode_edge(msg).map_err(|_| LinkError::Write)?;
    writer.send(bytes.into()).map_err(|_| LinkError::Write)
}

/// One link session; `Ok` only when it ended because of shutdown.
async fn link_once(
    state: &Arc<EdgeState>,
    events: &mut mpsc::Receiver<EdgeMessage>,
    version: u16,
) -> Result<(), LinkError> {
    let auth = format!("Bearer {}", state.config.enrollment_secret);
    let limits = Limits { max_message_bytes: LINK_MAX_MESSAGE, max_queued_bytes: LINK_MAX_MESSAGE * 2 };
    let url = link_url(&state.config.locator_url);
    let headers = [("authorization", auth.as_str())];
    let connecting = duet_ws::connect_with(&url, &headers, limits, state.link_tls.clone());
    let mut reader = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected?,
        Err(_) => return Err(LinkError::ConnectTimeout(CONNECT_TIMEOUT)),
    };
    let writer = reader.writer().clone();

    let hello = Hello {
        protocol_version: version,
        edge_id: state.edge_id.clone(),
        region: state.config.region.clone(),
        public_url: state.public_url.clone(),
        capacity: Capacity { max_connections: state.config.max_connections, max_sessions: state.config.max_sessions },
        build: format!("duet-edge {}", env!("CARGO_PKG_VERSION")),
        live_sessions: state.live_sessions(),
        load: state.current_load(),
        outbox_id: state.outbox.outbox_id(),
    };
    send(&writer, &EdgeMessage::Hello(hello))?;

    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, reader.next()).await {
        Err(_) => return Err(LinkError::WelcomeTimeout),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(Message::Binary(b))) => match codec::decode_locator(&b)? {
            LocatorMessage::Welcome(w) => w,
            LocatorMessage::Refused { code, reason } => return Err(LinkError::Refused { code, reason }),
            _ => {
                writer.close(CloseCode::LinkMalformed.code(), "expected welcome");
                return Err(LinkError::Closed { code: None, reason: "expected welcome".into() });
            }
        },
        Ok(Ok(Message::Close { code, reason })) => return Err(LinkError::Closed { code, reason }),
        Ok(Ok(Message::Text(_))) => return Err(LinkError::Closed { code: None, reason: "text frame".into() }),
    };
    if let Err(e) = state.keys.replace(&welcome.keys) {
        tracing::warn!(error = %e, "could not cache verification keys on disk");
    }
    state.linked.store(true, Ordering::Release);
    state.registered.store(true, Ordering::Release);
    state.link_connects.fetch_add(1, Ordering::Relaxed);
    tracing::info!(edge.id = %state.edge_id, locator = %state.config.locator_url, version = welcome.protocol_version, epoch = welcome.link_epoch, keys = welcome.keys.len(), "link up");

    // Reads happen in their own task (not cancel-safe); decoded messages come back on a channel.
    let (in_tx, mut incoming) = mpsc::channel::<Result<LocatorMessage, LinkError>>(64);
    let read_task = tokio::spawn(async move {
        loop {
            let item = match reader.next().await {
                Ok(Message::Binary(b)) => codec::decode_locator(&b).map_err(LinkError::from),
                Ok(Message::Close { code, reason }) => Err(LinkError::Closed { code, reason }),
                Ok(Message::Text(_)) => Err(LinkError::Closed { code: None, reason: "text frame".into() }),
                Err(e) => Err(e.into()),
            };
            let stop = item.is_err();
            if in_tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let _abort_reader = AbortOnDrop(read_task);

    // The locator closes links that stay silent past its heartbeat timeout, so its announced
    // interval wins when it is shorter than ours.
    let mut interval = state.config.heartbeat_interval;
    if welcome.heartbeat_interval_ms > 0 {
        interval = interval.min(Duration::from_millis(welcome.heartbeat_interval_ms.into()));
    }
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silent_after = interval * SILENT_INTERVALS;
    let mut last_heard = tokio::time::Instant::now();
    let mut sender = OutboxSender::new(state.outbox.acked());
    let mut written = state.outbox.written();
    let mut writer_running = true;
    sender.pump(state, &writer).await?;
    // A locator that predates `Draining` would refuse the link over it; such a locator learns
    // that the edge is gone only from the link closing.
    let mut drain_told = welcome.protocol_version < LINK_VERSION_DRAINING;
    // Set once shutdown is requested: the link stays up until the outbox's last entries (the
    // sessions' ends, `edge_stopping`, the last usage) are acknowledged, or the deadline.
    let mut flush_deadline: Option<tokio::time::Instant> = None;
    loop {
        if flush_deadline.is_some() && !writer_running && sender.acked >= *state.outbox.written().borrow() {
            return close_for_shutdown(&writer, events).await;
        }
        tokio::select! {
            _ = state.draining.cancelled(), if !drain_told => {
                drain_told = true;
                send(&writer, &EdgeMessage::Draining { remaining_ms: state.drain_remaining_ms() })?;
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silent_after {
                    return Err(LinkError::Silent(silent_after));
                }
                let hb = Heartbeat { load: state.current_load(), outbox: state.outbox.status() };
                send(&writer, &EdgeMessage::Heartbeat(hb))?;
            }
            Some(event) = events.recv() => send(&writer, &event)?,
            changed = written.changed(), if writer_running => {
                // An error means the outbox writer stopped (shutdown): what is left waits on disk.
                writer_running = changed.is_ok();
                sender.pump(state, &writer).await?;
            }
            msg = incoming.recv() => match msg {
                Some(Ok(LocatorMessage::OutboxAck { up_to })) => {
                    last_heard = tokio::time::Instant::now();
                    sender.acked(state, up_to).await?;
                    sender.pump(state, &writer).await?;
                }
                Some(Ok(msg)) => {
                    last_heard = tokio::time::Instant::now();
                    handle(state, &writer, msg).await?;
                }
                Some(Err(e)) => return Err(e),
                None => return Err(LinkError::Closed { code: None, reason: "reader ended".into() }),
            },
            _ = state.shutdown.cancelled(), if flush_deadline.is_none() => {
                // Three quarters of the shutdown timeout, so the link closes (and says why)
                // before the edge stops waiting for its tasks.
                flush_deadline = Some(tokio::time::Instant::now() + state.config.shutdown_timeout * 3 / 4);
            }
            _ = sleep_until_opt(flush_deadline) => {
                tracing::warn!("outbox not fully acknowledged at shutdown; the rest is sent after the next start");
                return close_for_shutdown(&writer, events).await;
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends the session events still queued (the last sessions' ends), then closes.
async fn close_for_shutdown(writer: &Writer, events: &mut mpsc::Receiver<EdgeMessage>) -> Result<(), LinkError> {
    while let Ok(event) = events.try_recv() {
        send(writer, &event)?;
    }
    writer.close(1000, "edge shutting down");
    // Give the close frame a moment to leave; the process is stopping anyway.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.closed()).await;
    Ok(())
}

/// What of the outbox this link session has sent and had acknowledged.
struct OutboxSender {
    /// Highest sequence number acknowledged by the locator.
    acked: u64,
    /// Highest sequence number sent on this link.
    sent: u64,
}

impl OutboxSender {
    fn new(acked: u64) -> Self {
        OutboxSender { acked, sent: acked }
    }

    /// Sends what is written and not yet sent, as far as the window allows.
    async fn pump(&mut self, state: &EdgeState, writer: &Writer) -> Result<(), LinkError> {
        let written = *state.outbox.written().borrow();
        while self.sent < written && self.sent - self.acked < OUTBOX_WINDOW {
            let room = usize::try_from(OUTBOX_WINDOW - (self.sent - self.acked)).unwrap_or(usize::MAX);
            let entries =
                state.outbox.read_after(self.sent, room.min(OUTBOX_BATCH_ENTRIES), OUTBOX_BATCH_BYTES).await?;
            let Some(last) = entries.last().map(|e| e.seq) else { break };
            send(writer, &EdgeMessage::Outbox { entries })?;
            self.sent = last;
        }
        Ok(())
    }

    async fn acked(&mut self, state: &EdgeState, up_to: u64) -> Result<(), LinkError> {
        if up_to > self.sent {
            return Err(LinkError::AckBeyondSent { up_to, sent: self.sent });
        }
        if up_to > self.acked {
            state.outbox.ack(up_to).await?;
            self.acked = up_to;
        }
        Ok(())
    }
}

async fn handle(state: &Arc<EdgeState>, writer: &Writer, msg: LocatorMessage) -> Result<(), LinkError> {
    match msg {
        LocatorMessage::Command { id, command } => {
            match command {
                Command::UpdateKeys { keys } => {
                    if let Err(e) = state.keys.replace(&keys) {
                        tracing::warn!(error = %e, "could not cache verification keys on disk");
                    }
                }
                Command::EndSession { session_id, reason } => state.end_session(&session_id, reason),
                Command::EndAllSessions { reason } => {
                    tracing::info!(reason = reason.as_str(), "the locator ends every session here");
                    state.end_all_sessions(reason, duet_proto::close::CloseCode::EdgeShuttingDown)
                }
                Command::TeamSessions { team, sessions } => state.set_team_sessions(&team, sessions),
            }
            send(writer, &EdgeMessage::CommandAck { id })
        }
        // Acknowledgements are handled by the link loop, which owns the outbox sender.
        LocatorMessage::HeartbeatAck | LocatorMessage::OutboxAck { .. } => Ok(()),
        LocatorMessage::Welcome(_) | LocatorMessage::Refused { .. } => {
            writer.close(CloseCode::LinkMalformed.code(), "unexpected message");
            Err(LinkError::Closed { code: Some(CloseCode::LinkMalformed.code()), reason: "unexpected welcome".into() })
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
