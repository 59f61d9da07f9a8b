//! The locator's side of the edges' links, and the registry of links this replica holds.
//!
//! An edge authenticates with the enrollment secret before the upgrade (401 otherwise; the
//! comparison is constant-time and the secret is never logged), then sends `Hello`. The locator
//! checks the protocol version (its own or the previous one), refuses a second live link with the
//! same edge id, records the edge, reconciles its sessions and answers `Welcome` with the token
//! keys. Heartbeats update the edge's load in the database, so any replica can place sessions.
//! A link silent for longer than the heartbeat timeout is closed; the edge's health then becomes
//! `link_lost` (failure detection decides later whether it is dead).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use duet_proto::close::CloseCode;
use duet_proto::codec::{self, CodecError};
use duet_proto::link::{
    Command, EdgeMessage, Hello, LocatorMessage, Welcome, LINK_MIN_PROTOCOL_VERSION, LINK_PROTOCOL_VERSION,
};
use duet_ws::{Limits, Message, Writer};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::db::{EdgeRegistration, Health};
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
}

/// The links this replica holds, by edge id.
#[derive(Default)]
pub struct Registry {
    links: DashMap<String, LinkHandle>,
    next_id: AtomicU64,
}

impl Registry {
    /// Registers a link unless the edge already has a live one.
    fn claim(&self, edge_id: &str, writer: Writer) -> Option<LinkHandle> {
        use dashmap::mapref::entry::Entry;
        let link_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.links.entry(edge_id.to_owned()) {
            Entry::Occupied(mut o) => {
                // A link whose writer has finished is dead even if its task has not noticed yet.
                if o.get().writer.is_closing() {
                    let handle = LinkHandle { link_id, writer };
                    o.insert(handle.clone());
                    Some(handle)
                } else {
                    None
                }
            }
            Entry::Vacant(v) => {
                let handle = LinkHandle { link_id, writer };
                v.insert(handle.clone());
                Some(handle)
            }
        }
    }

    fn release(&self, edge_id: &str, link_id: u64) {
        self.links.remove_if(edge_id, |_, h| h.link_id == link_id);
    }

    /// Sends a command to every edge linked to this replica.
    pub fn broadcast(&self, command: &Command) {
        let handles: Vec<LinkHandle> = self.links.iter().map(|e| e.value().clone()).collect();
        for h in handles {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
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
        return ApiError::Unauthorized.into_response();
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
    let mut reader = duet_ws::split(duet_ws::rebuffer(ws, duet_ws::Role::Server), limits);
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
    let Some(handle) = state.links.claim(&edge_id, writer.clone()) else {
        return refuse(&writer, CloseCode::LinkDuplicateEdge, &format!("edge id {edge_id} already has a live link"));
    };
    let span = tracing::info_span!("link", edge.id = %edge_id);
    let _ = tracing::Instrument::instrument(run(state.clone(), hello, reader, writer), span).await;
    state.links.release(&edge_id, handle.link_id);
    if let Err(e) = state.store.set_edge_health(&edge_id, Health::LinkLost, now_ms()).await {
        tracing::warn!(edge.id = %edge_id, error = %e, "could not record link loss");
    }
    refresh_placement(&state).await;
    tracing::info!(edge.id = %edge_id, "link down");
}

async fn run(
    state: Arc<LocatorState>,
    hello: Hello,
    mut reader: duet_ws::Reader<tokio::io::BufWriter<duet_ws::UpgradedIo>>,
    writer: Writer,
) {
    let now = now_ms();
    let registration = EdgeRegistration {
        id: hello.edge_id.clone(),
        region: hello.region.clone(),
        public_url: hello.public_url.clone(),
        build: hello.build.clone(),
        max_connections: hello.capacity.max_connections,
        max_sessions: hello.capacity.max_sessions,
        load: hello.load,
    };
    if let Err(e) = state.store.upsert_edge(&registration, now).await {
        tracing::error!(error = %e, "could not record edge; closing link");
        writer.close(CloseCode::Internal.code(), CloseCode::Internal.name());
        return;
    }
    reconcile(&state, &hello).await;
    refresh_placement(&state).await;
    let welcome = Welcome {
        protocol_version: hello.protocol_version,
        locator_build: format!("duet-locator {}", env!("CARGO_PKG_VERSION")),
        keys: state.signer().verifying_keys(),
        heartbeat_interval_ms: u32::try_from(state.config.heartbeat_interval.as_millis()).unwrap_or(u32::MAX),
        link_epoch: 0,
    };
    match codec::encode_locator(&LocatorMessage::Welcome(welcome)) {
        Ok(bytes) => {
            if writer.send(bytes.into()).is_err() {
                return;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not encode welcome");
            return;
        }
    }
    tracing::info!(region = %hello.region, url = %hello.public_url, version = hello.protocol_version, "link up");

    // A read that times out ends the link: the edge missed its heartbeats (reads are not
    // cancel-safe, but the connection is dropped right after).
    let silence = state.config.heartbeat_timeout;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(silence, reader.next()) => r,
            _ = state.shutdown.cancelled() => {
                writer.close(CloseCode::LinkLocatorShuttingDown.code(), CloseCode::LinkLocatorShuttingDown.name());
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
                Ok(m) => m,
                Err(e) => return refuse(&writer, CloseCode::LinkMalformed, &e.to_string()),
            },
            Ok(Ok(Message::Text(_))) => return refuse(&writer, CloseCode::LinkMalformed, "text frame"),
            Ok(Ok(Message::Close { .. })) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "link read failed");
                return;
            }
        };
        let now = now_ms();
        let result = match msg {
            EdgeMessage::Heartbeat(hb) => {
                let stored = state.store.record_heartbeat(&hello.edge_id, &hb.load, now).await.map(|_| ());
                if stored.is_ok() {
                    state.placer.note_heartbeat(&hello.edge_id, &hb.load, now);
                }
                stored
            }
            EdgeMessage::SessionOpened { session_id } => {
                state.store.mark_session_started(&session_id, now).await.map(|_| ())
            }
            EdgeMessage::SessionClosed { session_id, reason } => {
                state.store.mark_session_ended(&session_id, reason.as_str(), now).await.map(|_| ())
            }
            EdgeMessage::CommandAck { id } => {
                tracing::debug!(command.id = id, "command carried out");
                Ok(())
            }
            EdgeMessage::Outbox { entries } => {
                // Not acknowledged: the edge keeps them until a locator stores them.
                tracing::debug!(count = entries.len(), "outbox entries not stored by this locator version");
                Ok(())
            }
            EdgeMessage::Hello(_) => return refuse(&writer, CloseCode::LinkMalformed, "second hello"),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not store link message");
        }
    }
}

/// Placement sees a registration or a link loss at once rather than at its next refresh.
async fn refresh_placement(state: &LocatorState) {
    if let Err(e) = state.placer.refresh_edges(&state.store).await {
        tracing::warn!(error = %e, "could not refresh edges for placement");
    }
}

/// After a (re)registration: sessions the edge runs are started; sessions the database thinks
/// run there but the edge does not know ended while the link was down.
async fn reconcile(state: &LocatorState, hello: &Hello) {
    let now = now_ms();
    let live: std::collections::HashSet<&str> = hello.live_sessions.iter().map(String::as_str).collect();
    match state.store.live_sessions_on(&hello.edge_id).await {
        Ok(sessions) => {
            for s in sessions {
                if s.started_at.is_some() && !live.contains(s.id.as_str()) {
                    if let Err(e) = state.store.mark_session_ended(&s.id, "ended_while_unlinked", now).await {
                        tracing::warn!(session.id = %s.id, error = %e, "could not reconcile session");
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not reconcile sessions"),
    }
    for id in &hello.live_sessions {
        let _ = state.store.mark_session_started(id, now).await;
    }
}
