//! The locator's side of the edges' links, and the registry of links this replica holds.
//!
//! An edge authenticates with the enrollment secret before the upgrade (401 otherwise; the
//! comparison is constant-time and the secret is never logged), then sends `Hello`. The locator
//! checks the protocol version (its own or the previous one), refuses a second live link with the
//! same edge id, records the edge, reconciles its sessions and answers `Welcome` with the token
//! keys. Heartbeats update the edge's load in the database, so any replica can place sessions.
//! A link silent for longer than the heartbeat timeout is closed; the edge's health then becomes
//! `link_lost` (failure detection decides later whether it is dead).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use duet_proto::close::{CloseCode, GOING_AWAY};
use duet_proto::codec::{self, CodecError};
use duet_proto::link::{
    Command, EdgeMessage, Heartbeat, Hello, LocatorMessage, SequencedEntry, SessionEndReason, Welcome,
    LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION,
};
use duet_proto::outbox::{MetricsEntry, OutboxEntry};
use duet_ws::{Limits, Message, Writer};
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};

use crate::api::ApiError;
use crate::db::{audit_kind, EdgeRegistration, Health, LocatorAuditEntry, StoreError};
use crate::health::END_REASON_EDGE_UNAVAILABLE;
use crate::tokens::now_ms;
use crate::LocatorState;

/// An edge must send its hello within this time after the upgrade.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Link messages are small; 16 MiB bounds an outbox batch with room to spare.
const LINK_MAX_MESSAGE: usize = 16 << 20;

/// A link held by this replica.
#[derive(Clone)]
pub struct LinkHandle {
    /// Distinguishes this link from a later one of the same edge.
    pub link_id: u64,
    /// Sends commands to the edge.
    pub writer: Writer,
    /// The link protocol version the edge speaks.
    pub protocol_version: u16,
}

/// The links this replica holds, by edge id.
#[derive(Default)]
pub struct Registry {
    links: DashMap<String, LinkHandle>,
    next_id: AtomicU64,
}

impl Registry {
    /// Registers a link unless the edge already has a live one.
    fn claim(&self, edge_id: &str, writer: Writer, protocol_version: u16) -> Option<LinkHandle> {
        use dashmap::mapref::entry::Entry;
        let link_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.links.entry(edge_id.to_owned()) {
            Entry::Occupied(mut o) => {
                // A link whose writer has finished is dead even if its task has not noticed yet.
                if o.get().writer.is_closing() {
                    let handle = LinkHandle { link_id, writer, protocol_version };
                    o.insert(handle.clone());
                    Some(handle)
                } else {
                    None
                }
            }
            Entry::Vacant(v) => {
                let handle = LinkHandle { link_id, writer, protocol_version };
                v.insert(handle.clone());
                Some(handle)
            }
        }
    }

    fn release(&self, edge_id: &str, link_id: u64) {
        self.links.remove_if(edge_id, |_, h| h.link_id == link_id);
    }

    /// A fresh command id.
    fn next_command_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The edges linked to this replica, with their links' ids.
    pub fn linked_edges(&self) -> Vec<(String, u64)> {
        self.links
            .iter()
            .filter(|e| !e.value().writer.is_closing())
            .map(|e| (e.key().clone(), e.value().link_id))
            .collect()
    }

    /// The link protocol version of the edge's live link to this replica, if it has one.
    pub fn link_version(&self, edge_id: &str) -> Option<u16> {
        self.links.get(edge_id).filter(|h| !h.writer.is_closing()).map(|h| h.protocol_version)
    }

    /// Whether this replica holds a live link of the edge.
    pub fn is_linked(&self, edge_id: &str) -> bool {
        self.links.get(edge_id).is_some_and(|h| !h.writer.is_closing())
    }

    /// Sends a command to one edge, if this replica holds its link. False when it does not.
    pub fn send_to(&self, edge_id: &str, command: &Command) -> bool {
        let Some(h) = self.links.get(edge_id).map(|h| h.value().clone()) else { return false };
        let id = self.next_command_id();
        match codec::encode_locator(&LocatorMessage::Command { id, command: command.clone() }) {
            Ok(bytes) => h.writer.send(bytes.into()).is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "could not encode command");
                false
            }
        }
    }

    /// Sends a command to every edge linked to this replica.
    pub fn broadcast(&self, command: &Command) {
        let handles: Vec<LinkHandle> = self.links.iter().map(|e| e.value().clone()).collect();
        for h in handles {
            let id = self.next_command_id();
            match codec::encode_locator(&LocatorMessage::Command { id, command: command.clone() }) {
                Ok(bytes) => {
                    let _ = h.writer.send(bytes.into());
                }
                Err(e) => tracing::error!(error = %e, "could not encode command"),
            }
        }
    }
}

fn authorized(state: &LocatorState, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else { return false };
    let Some(presented) = value.as_bytes().strip_prefix(b"Bearer ") else { return false };
    bool::from(presented.ct_eq(state.enrollment_secret.as_bytes()))
}

/// `GET /link/v1`: authenticate, then upgrade.
pub async fn accept(State(state): State<Arc<LocatorState>>, mut req: Request) -> Response {
    if !authorized(&state, req.headers()) {
        tracing::warn!("link refused: missing or wrong enrollment secret");
        return ApiError::Unauthorized("missing or wrong enrollment secret".into()).into_response();
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return ApiError::BadRequest("expected a websocket upgrade".into()).into_response();
    }
    if state.shutdown.is_cancelled() {
        return ApiError::NotReady.into_response();
    }
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => return ApiError::BadRequest(format!("websocket upgrade failed: {e}")).into_response(),
    };
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        match upgrade.await {
            Ok(ws) => serve(state, ws).await,
            Err(e) => tracing::debug!(error = %e, "link upgrade did not complete"),
        }
    });
    response.map(Body::new)
}

fn refuse(writer: &Writer, code: CloseCode, reason: &str) {
    tracing::warn!(code = code.code(), reason, "link refused");
    if let Ok(bytes) = codec::encode_locator(&LocatorMessage::Refused { code: code.code(), reason: reason.to_owned() })
    {
        let _ = writer.send(bytes.into());
    }
    writer.close(code.code(), code.name());
}

fn check_hello(hello: &Hello) -> Result<(), String> {
    let name_ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    };
    if !name_ok(&hello.edge_id, 128) {
        return Err(format!("invalid edge id {:?}", hello.edge_id));
    }
    if !name_ok(&hello.region, 64) {
        return Err(format!("invalid region {:?}", hello.region));
    }
    if !(hello.public_url.starts_with("ws://") || hello.public_url.starts_with("wss://"))
        || hello.public_url.len() > 1024
    {
        return Err(format!("invalid public url {:?}", hello.public_url));
    }
    if hello.build.len() > 256 || hello.live_sessions.len() > 1_000_000 {
        return Err("oversized hello".into());
    }
    Ok(())
}

async fn serve(state: Arc<LocatorState>, ws: fastwebsockets::WebSocket<duet_ws::UpgradedIo>) {
    let limits = Limits { max_message_bytes: LINK_MAX_MESSAGE, max_queued_bytes: LINK_MAX_MESSAGE * 2 };
    let mut reader = duet_ws::split(duet_ws::server_stream(ws), duet_ws::Role::Server, limits);
    let writer = reader.writer().clone();

    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next()).await;
    let hello = match first {
        Err(_) => return refuse(&writer, CloseCode::LinkHandshakeTimeout, "no hello in time"),
        Ok(Ok(Message::Binary(bytes))) => {
            match codec::decode_hello(&bytes, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION) {
                Ok(h) => h,
                Err(e @ CodecError::UnsupportedVersion { .. }) => {
                    return refuse(&writer, CloseCode::LinkUnsupportedVersion, &e.to_string())
                }
                Err(e) => return refuse(&writer, CloseCode::LinkMalformed, &e.to_string()),
            }
        }
        Ok(Ok(_)) => return refuse(&writer, CloseCode::LinkMalformed, "first message must be a binary hello"),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "link closed before hello");
            return;
        }
    };
    if let Err(reason) = check_hello(&hello) {
        return refuse(&writer, CloseCode::LinkMalformed, &reason);
    }
    let edge_id = hello.edge_id.clone();
    let Some(handle) = state.links.claim(&edge_id, writer.clone(), hello.protocol_version) else {
        return refuse(&writer, CloseCode::LinkDuplicateEdge, &format!("edge id {edge_id} already has a live link"));
    };
    let span = tracing::info_span!("link", edge.id = %edge_id);
    let epoch = tracing::Instrument::instrument(run(state.clone(), hello, reader, writer), span).await;
    state.links.release(&edge_id, handle.link_id);
    // Only this link's loss, and only from `up`: an edge already judged unavailable stays so,
    // and one that registered again over a newer link is not touched.
    if let Some(epoch) = epoch {
        let lost = state.store.change_edge_health(&edge_id, &[Health::Up], Health::LinkLost, epoch, None, now_ms());
        if let Err(e) = lost.await {
            tracing::warn!(edge.id = %edge_id, error = %e, "could not record link loss");
        }
    }
    refresh_placement(&state).await;
    tracing::info!(edge.id = %edge_id, "link down");
}

/// Serves a registered link until it ends; answers its epoch once the edge was recorded.
async fn run(state: Arc<LocatorState>, hello: Hello, reader: duet_ws::ClientReader, writer: Writer) -> Option<u64> {
    let now = now_ms();
    let registration = EdgeRegistration {
        id: hello.edge_id.clone(),
        region: hello.region.clone(),
        public_url: hello.public_url.clone(),
        build: hello.build.clone(),
        max_connections: hello.capacity.max_connections,
        max_sessions: hello.capacity.max_sessions,
        load: hello.load,
        outbox_id: hello.outbox_id,
    };
    let was_unavailable =
        matches!(state.store.edge(&hello.edge_id).await, Ok(Some(e)) if e.health == Health::Unavailable);
    let epoch = match state.store.upsert_edge(&registration, now).await {
        Ok(epoch) => epoch,
        Err(e) => {
            tracing::error!(error = %e, "could not record edge; closing link");
            writer.close(CloseCode::Internal.code(), CloseCode::Internal.name());
            return None;
        }
    };
    serve_registered(state, hello, reader, writer, epoch, was_unavailable).await;
    Some(epoch)
}

async fn serve_registered(
    state: Arc<LocatorState>,
    hello: Hello,
    mut reader: duet_ws::ClientReader,
    writer: Writer,
    epoch: u64,
    was_unavailable: bool,
) {
    let now = now_ms();
    if was_unavailable {
        let entry = LocatorAuditEntry {
            at_ms: now,
            kind: audit_kind::EDGE_RECOVERED.into(),
            edge_id: Some(hello.edge_id.clone()),
            session_id: None,
            actor: "locator".into(),
            detail: format!("registered again after being unavailable (link epoch {epoch})"),
        };
        if let Err(e) = state.store.insert_audit(&entry).await {
            tracing::warn!(error = %e, "could not record the edge's recovery");
        }
    }
    let stale = reconcile(&state, &hello, epoch).await;
    refresh_placement(&state).await;
    let welcome = Welcome {
        protocol_version: hello.protocol_version,
        locator_build: format!("duet-locator {}", env!("CARGO_PKG_VERSION")),
        keys: state.signer().verifying_keys(),
        heartbeat_interval_ms: u32::try_from(state.config.heartbeat_interval.as_millis()).unwrap_or(u32::MAX),
        link_epoch: epoch,
    };
    if send(&writer, &LocatorMessage::Welcome(welcome)).is_err() {
        return;
    }
    // Sessions the edge runs that the locator has ended for good or never placed there.
    for session_id in stale {
        let command = Command::EndSession { session_id, reason: SessionEndReason::Ended };
        let id = state.links.next_command_id();
        if send(&writer, &LocatorMessage::Command { id, command }).is_err() {
            return;
        }
    }
    tracing::info!(region = %hello.region, url = %hello.public_url, version = hello.protocol_version, epoch, "link up");

    let link =
        Arc::new(LinkContext { state: state.clone(), edge_id: hello.edge_id.clone(), epoch, writer: writer.clone() });
    let (heartbeat_tx, heartbeat_rx) = watch::channel(None);
    let (events_tx, events_rx) = mpsc::channel(SESSION_EVENT_QUEUE);
    let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
    let queued = Arc::new(Queued::default());
    let _heartbeats = AbortOnDrop(tokio::spawn(store_heartbeats(link.clone(), heartbeat_rx)));
    let _events = AbortOnDrop(tokio::spawn(store_session_events(link.clone(), events_rx)));
    let _outbox = AbortOnDrop(tokio::spawn(commit_outbox(link.clone(), hello.outbox_id, outbox_rx, queued.clone())));

    // A read that times out ends the link: the edge missed its heartbeats (reads are not
    // cancel-safe, but the connection is dropped right after).
    let silence = state.config.heartbeat_timeout;
    let mut last_seq = 0u64;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(silence, reader.next()) => r,
            _ = state.shutdown.cancelled() => {
                writer.close(GOING_AWAY, "locator shutting down");
                return;
            }
        };
        let msg = match next {
            Err(_) => {
                tracing::warn!(timeout = ?silence, "no heartbeat in time; closing link");
                writer.close(CloseCode::LinkHeartbeatTimeout.code(), CloseCode::LinkHeartbeatTimeout.name());
                return;
            }
            Ok(Ok(Message::Binary(bytes))) => match codec::decode_edge(&bytes) {
                Ok(m) => (m, bytes.len()),
                Err(e) => return refuse(&writer, CloseCode::LinkMalformed, &e.to_string()),
            },
            Ok(Ok(Message::Text(_))) => return refuse(&writer, CloseCode::LinkMalformed, "text frame"),
            Ok(Ok(Message::Close { .. })) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "link read failed");
                return;
            }
        };
        let (msg, frame_bytes) = msg;
        match msg {
            EdgeMessage::Heartbeat(hb) => {
                heartbeat_tx.send_replace(Some((hb, now_ms())));
                if send(&writer, &LocatorMessage::HeartbeatAck).is_err() {
                    return;
                }
            }
            EdgeMessage::SessionOpened { session_id } => {
                if check_session_id(&session_id).is_err() {
                    return refuse(&writer, CloseCode::LinkMalformed, "invalid session id in session event");
                }
                queue_event(&events_tx, SessionEvent::Opened(session_id));
            }
            EdgeMessage::SessionClosed { session_id, reason } => {
                if check_session_id(&session_id).is_err() {
                    return refuse(&writer, CloseCode::LinkMalformed, "invalid session id in session event");
                }
                queue_event(&events_tx, SessionEvent::Closed(session_id, reason));
            }
            EdgeMessage::CommandAck { id } => tracing::debug!(command.id = id, "command carried out"),
            EdgeMessage::Outbox { entries } => {
                if let Err(reason) = check_outbox(&entries, last_seq) {
                    return refuse(&writer, CloseCode::LinkMalformed, &reason);
                }
                last_seq = entries.last().map_or(last_seq, |e| e.seq);
                let n = entries.len();
                // A well-behaved edge has at most its window (20,000 entries, a few MB)
                // unacknowledged; more entries or bytes waiting for commit is a violation.
                let over_entries = queued.entries.fetch_add(n, Ordering::AcqRel) + n > MAX_QUEUED_OUTBOX_ENTRIES;
                let over_bytes =
                    queued.bytes.fetch_add(frame_bytes, Ordering::AcqRel) + frame_bytes > MAX_QUEUED_OUTBOX_BYTES;
                if over_entries || over_bytes {
                    return refuse(&writer, CloseCode::LinkMalformed, "outbox entries sent beyond the window");
                }
                let entries = entries.into_iter().map(sanitize_entry).collect();
                if outbox_tx.send((entries, frame_bytes)).is_err() {
                    return;
                }
            }
            EdgeMessage::Draining { remaining_ms } => {
                tracing::info!(remaining_ms, "edge is stopping: no new sessions go to it");
                if let Err(e) = state.store.mark_edge_stopping(&hello.edge_id, epoch, now_ms()).await {
                    tracing::warn!(error = %e, "could not record that the edge is stopping");
                }
                refresh_placement(&state).await;
            }
            EdgeMessage::Hello(_) => return refuse(&writer, CloseCode::LinkMalformed, "second hello"),
        }
    }
}

/// Entries one link may have queued for commit; the edge's window is 20,000, so more is a
/// protocol violation, not load.
const MAX_QUEUED_OUTBOX_ENTRIES: usize = 40_000;
/// Bytes (as received) one link may have queued for commit, whatever the entry count.
const MAX_QUEUED_OUTBOX_BYTES: usize = 64 << 20;

/// Outbox entries received on a link and not yet committed.
#[derive(Default)]
struct Queued {
    entries: AtomicUsize,
    bytes: AtomicUsize,
}
/// Most outbox entries in one `Outbox` message.
const MAX_OUTBOX_BATCH: usize = 10_000;
/// Most entries committed in one transaction (several queued batches merged). SQLite has one
/// connection, which placements wait for: 2,000 entries hold it about 11 ms; PostgreSQL and
/// MySQL commit on a connection of their own, where larger transactions drain a backlog faster.
const MAX_COMMIT_ENTRIES_SQLITE: usize = 2_000;
const MAX_COMMIT_ENTRIES: usize = 10_000;
/// Session events waiting for the database; beyond that they are dropped and the next hello's
/// reconciliation repairs the sessions table.
const SESSION_EVENT_QUEUE: usize = 4096;
/// Retries of a failed database write back off from 100 ms to 5 s.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What a link's helper tasks share.
struct LinkContext {
    state: Arc<LocatorState>,
    edge_id: String,
    /// This link's epoch: its session events apply only while it is the edge's newest.
    epoch: u64,
    writer: Writer,
}

enum SessionEvent {
    Opened(String),
    Closed(String, SessionEndReason),
}

fn send(writer: &Writer, msg: &LocatorMessage) -> Result<(), ()> {
    match codec::encode_locator(msg) {
        Ok(bytes) => writer.send(bytes.into()).map_err(|_| ()),
        Err(e) => {
            tracing::error!(error = %e, "could not encode link message");
            Err(())
        }
    }
}

fn check_session_id(id: &str) -> Result<(), ()> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(())
    } else {
        Err(())
    }
}

fn queue_event(tx: &mpsc::Sender<SessionEvent>, event: SessionEvent) {
    if tx.try_send(event).is_err() {
        tracing::warn!("session event queue full; the next hello reconciles sessions");
    }
}

/// Outbox batches must be non-empty, bounded, and in rising sequence order across the link.
fn check_outbox(entries: &[SequencedEntry], last_seq: u64) -> Result<(), String> {
    if entries.is_empty() || entries.len() > MAX_OUTBOX_BATCH {
        return Err(format!("outbox batch of {} entries (1 to {MAX_OUTBOX_BATCH} allowed)", entries.len()));
    }
    let mut prev = last_seq;
    for e in entries {
        if e.seq == 0 || e.seq <= prev {
            return Err(format!("outbox sequence number {} after {prev}", e.seq));
        }
        prev = e.seq;
    }
    Ok(())
}

/// Cuts free-text fields to what the audit table holds, on a character boundary.
fn sanitize_entry(mut e: SequencedEntry) -> SequencedEntry {
    fn cut(s: &mut String, max: usize) {
        if s.len() > max {
            let mut at = max;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            s.truncate(at);
            s.shrink_to_fit();
        }
    }
    match &mut e.entry {
        OutboxEntry::Audit(a) => {
            cut(&mut a.detail, 4096);
            if let Some(s) = &mut a.session_id {
                cut(s, 64);
            }
            if let Some(u) = &mut a.user_id {
                cut(u, 256);
            }
        }
        OutboxEntry::Metrics(MetricsEntry::SessionSummary(m)) => {
            cut(&mut m.session_id, 64);
            cut(&mut m.end_reason, 64);
        }
        OutboxEntry::Metrics(MetricsEntry::Usage(_)) => {}
    }
    e
}

async fn backoff(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(RETRY_MAX);
}

/// Stores the newest heartbeat; a slow or absent database never holds up the link's reads.
async fn store_heartbeats(link: Arc<LinkContext>, mut rx: watch::Receiver<Option<(Heartbeat, i64)>>) {
    while rx.changed().await.is_ok() {
        let Some((hb, at)) = *rx.borrow_and_update() else { continue };
        if let Err(e) = link.state.store.record_heartbeat(&link.edge_id, &hb.load, &hb.outbox, at).await {
            tracing::warn!(error = %e, "could not store heartbeat");
            continue;
        }
        link.state.placer.note_heartbeat(&link.edge_id, &hb.load, at);
        let health = link.state.placer.edges().iter().find(|e| e.id == link.edge_id).map(|e| e.health);
        match health {
            // Failure detection saw the edge silent but alive; it is talking again.
            Some(Health::LinkLost) => {
                let up = link.state.store.change_edge_health(
                    &link.edge_id,
                    &[Health::LinkLost],
                    Health::Up,
                    link.epoch,
                    None,
                    at,
                );
                if let Err(e) = up.await {
                    tracing::warn!(error = %e, "could not record the edge as up");
                }
                refresh_placement(&link.state).await;
            }
            // It was declared dead and its sessions ended while this link hung: make it register
            // again, so reconciliation restores the sessions it still runs.
            Some(Health::Unavailable) => {
                tracing::warn!("heartbeat from an edge marked unavailable; asking it to register again");
                link.writer.close(CloseCode::LinkHeartbeatTimeout.code(), CloseCode::LinkHeartbeatTimeout.name());
                return;
            }
            _ => {}
        }
    }
}

/// Applies session events in order, retrying while the database is away.
async fn store_session_events(link: Arc<LinkContext>, mut rx: mpsc::Receiver<SessionEvent>) {
    let store = &link.state.store;
    while let Some(event) = rx.recv().await {
        let mut delay = RETRY_MIN;
        loop {
            let now = now_ms();
            let result = match &event {
                SessionEvent::Opened(id) => store.mark_session_started_fenced(id, &link.edge_id, link.epoch, now).await,
                SessionEvent::Closed(id, reason) => {
                    store.mark_session_ended_fenced(id, &link.edge_id, link.epoch, reason.as_str(), now).await
                }
            };
            match result {
                Ok(applied) => {
                    if applied {
                        link.state.presence.changed();
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "could not store session event");
                    backoff(&mut delay).await;
                }
            }
        }
    }
}

/// Commits outbox batches in arrival order, merging what is queued into one transaction, and
/// acknowledges each commit. A failed commit is retried (the edge keeps the entries meanwhile);
/// an entry that arrives twice is stored once.
async fn commit_outbox(
    link: Arc<LinkContext>,
    outbox_id: u64,
    mut rx: mpsc::UnboundedReceiver<(Vec<SequencedEntry>, usize)>,
    queued: Arc<Queued>,
) {
    let max_commit = match link.state.store.dialect() {
        crate::db::Dialect::Sqlite => MAX_COMMIT_ENTRIES_SQLITE,
        _ => MAX_COMMIT_ENTRIES,
    };
    while let Some((mut batch, mut bytes)) = rx.recv().await {
        while batch.len() < max_commit {
            match rx.try_recv() {
                Ok((more, more_bytes)) => {
                    batch.extend(more);
                    bytes += more_bytes;
                }
                Err(_) => break,
            }
        }
        let Some(up_to) = batch.last().map(|e| e.seq) else { continue };
        let mut delay = RETRY_MIN;
        loop {
            match link.state.store.store_outbox(&link.edge_id, outbox_id, &batch, now_ms()).await {
                Ok(stored) => {
                    tracing::debug!(entries = batch.len(), stored, up_to, "outbox entries committed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, entries = batch.len(), retry_in = ?delay, "could not store outbox entries");
                    backoff(&mut delay).await;
                }
            }
        }
        queued.entries.fetch_sub(batch.len(), Ordering::AcqRel);
        queued.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if send(&link.writer, &LocatorMessage::OutboxAck { up_to }).is_err() {
            return;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Placement sees a registration or a link loss at once rather than at its next refresh.
async fn refresh_placement(state: &LocatorState) {
    if let Err(e) = state.placer.refresh_edges(&state.store).await {
        tracing::warn!(error = %e, "could not refresh edges for placement");
    }
}

/// After a (re)registration, with this link's epoch:
/// - sessions the database has running on this edge that the edge no longer holds are ended;
/// - sessions the edge still runs that the locator ended because the edge was unavailable are
///   restored (the edge was alive after all);
/// - sessions the edge runs that the locator ended for another reason, never placed, or placed
///   elsewhere are returned: the edge is told to end them, since a stale edge must not override
///   the locator's newer decision.
///
/// Every write is fenced by the epoch, so a newer link of the same edge wins over this one.
async fn reconcile(state: &LocatorState, hello: &Hello, epoch: u64) -> Vec<String> {
    let now = now_ms();
    let edge_id = &hello.edge_id;
    let live: std::collections::HashSet<&str> = hello.live_sessions.iter().map(String::as_str).collect();
    // One query for the sessions the database has running here: the common case (the edge
    // runs what the database says) needs nothing more, however many sessions there are.
    let known: std::collections::HashMap<String, crate::db::SessionRecord> =
        match state.store.live_sessions_on(edge_id).await {
            Ok(sessions) => sessions.into_iter().map(|s| (s.id.clone(), s)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not reconcile sessions");
                return Vec::new();
            }
        };
    for s in known.values() {
        if s.started_at.is_some() && !live.contains(s.id.as_str()) {
            match state.store.mark_session_ended_fenced(&s.id, edge_id, epoch, "ended_while_unlinked", now).await {
                Ok(true) => tracing::info!(session.id = %s.id, "session ended while the link was down"),
                Ok(false) => {}
                Err(e) => tracing::warn!(session.id = %s.id, error = %e, "could not reconcile session"),
            }
        }
    }
    let mut stale = Vec::new();
    for id in &hello.live_sessions {
        let result = match known.get(id) {
            Some(s) if s.started_at.is_some() => Ok(()),
            Some(_) => state.store.mark_session_started_fenced(id, edge_id, epoch, now).await.map(|_| ()),
            // Not running here as far as the database knows: ended, elsewhere, or unknown.
            None => match state.store.session(id).await {
                Ok(Some(s))
                    if s.edge_id == *edge_id && s.end_reason.as_deref() == Some(END_REASON_EDGE_UNAVAILABLE) =>
                {
                    restore(state, id, edge_id, epoch, now).await
                }
                Ok(_) => {
                    tracing::info!(session.id = %id, "edge runs a session the locator does not place there; ending it");
                    stale.push(id.clone());
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::warn!(session.id = %id, error = %e, "could not reconcile session");
        }
    }
    stale
}

async fn restore(state: &LocatorState, id: &str, edge_id: &str, epoch: u64, now: i64) -> Result<(), StoreError> {
    if state.store.restore_session(id, edge_id, epoch, now).await? {
        state.presence.changed();
        tracing::info!(session.id = %id, "session restored: its edge came back");
        let entry = LocatorAuditEntry {
            at_ms: now,
            kind: audit_kind::SESSION_RESTORED.into(),
            edge_id: Some(edge_id.to_owned()),
            session_id: Some(id.to_owned()),
            actor: "locator".into(),
            detail: "the edge came back and still runs it".into(),
        };
        state.store.insert_audit(&entry).await?;
    }
    Ok(())
}
