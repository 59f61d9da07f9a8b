//! Team presence: who in a team is online and which of its sessions are live.
//!
//! The locator assigns each team's presence to one edge. Clients hold a websocket at
//! `/v1/teams/{team}/presence` there ([`serve`]); the edge keeps one [`Hub`] per team with its
//! members (counted per user: several IDE windows are one member) and the team's live sessions,
//! which the locator sends over the link when they change ([`EdgeState::set_team_sessions`];
//! kept per team even while nobody is connected), because a team's sessions may run on any edge. Every change sends every connection a full snapshot.
//!
//! A hub is a plain struct behind a mutex: every operation is short and never awaits, and a
//! snapshot is encoded once per change and shared by every connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use duet_proto::close::CloseCode;
use duet_proto::presence::{Member, PresenceClientFrame, PresenceFrame, PRESENCE_PROTOCOL_VERSION};
use duet_ws::{Message, ReadError, SendError, Writer};

use crate::EdgeState;

/// Most presence connections of one team on one edge. Every change sends each connection a
/// snapshot that lists every member, so the work per change grows with the team: 2,000 keeps a
/// change under a few milliseconds.
pub const MAX_CONNECTIONS_PER_TEAM: usize = 2_000;
/// Most sessions listed in a snapshot (the locator sends the newest).
pub const MAX_LISTED_SESSIONS: usize = 500;

/// One team's presence on this edge.
#[derive(Default)]
pub struct Hub {
    seq: u64,
    /// user id → (display name, open connections)
    members: BTreeMap<String, (String, u16)>,
    connections: HashMap<u64, (String, Writer)>,
    sessions: Vec<String>,
    /// Set (under the lock) when the last connection left and the hub is being dropped from the
    /// map: a connection that finds it set takes the team's next hub instead.
    retired: bool,
}

impl Hub {
    fn snapshot(&mut self) -> Option<Bytes> {
        self.seq += 1;
        let frame = PresenceFrame::Snapshot {
            seq: self.seq,
            members: self
                .members
                .iter()
                .map(|(id, (name, n))| Member { user_id: id.clone(), display_name: name.clone(), connections: *n })
                .collect(),
            sessions: self.sessions.clone(),
        };
        frame.encode().ok()
    }

    /// Sends the current snapshot to every connection; readers too far behind are closed (4300)
    /// and removed, and the others get a snapshot without them.
    fn publish(&mut self) {
        loop {
            let Some(bytes) = self.snapshot() else { return };
            let mut slow = Vec::new();
            for (id, (_, writer)) in &self.connections {
                if let Err(SendError::Full) = writer.send(bytes.clone()) {
                    writer.close(CloseCode::SlowReader.code(), CloseCode::SlowReader.name());
                    slow.push(*id);
                }
            }
            if slow.is_empty() {
                return;
            }
            for id in slow {
                self.remove(id);
            }
        }
    }

    fn remove(&mut self, conn: u64) -> bool {
        let Some((user, _)) = self.connections.remove(&conn) else { return false };
        if let Some((_, n)) = self.members.get_mut(&user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.members.remove(&user);
            }
        }
        true
    }
}

impl EdgeState {
    /// The team's hub, made (with the team's known sessions) if it has none.
    fn hub(&self, team: &str) -> Arc<Mutex<Hub>> {
        self.presence
            .entry(team.to_owned())
            .or_insert_with(|| {
                let sessions = self.team_sessions.get(team).map(|s| s.clone()).unwrap_or_default();
                Arc::new(Mutex::new(Hub { sessions, ..Hub::default() }))
            })
            .clone()
    }

    /// The locator's list of the team's live sessions (newest first). Kept whether or not the
    /// team has connections here, since the locator sends only changes.
    pub fn set_team_sessions(&self, team: &str, mut sessions: Vec<String>) {
        sessions.truncate(MAX_LISTED_SESSIONS);
        if sessions.is_empty() {
            self.team_sessions.remove(team);
        } else {
            self.team_sessions.insert(team.to_owned(), sessions.clone());
        }
        let Some(hub) = self.presence.get(team).map(|h| h.clone()) else { return };
        let mut hub = hub.lock().unwrap_or_else(|e| e.into_inner());
        if hub.sessions != sessions {
            hub.sessions = sessions;
            hub.publish();
        }
    }

    fn leave_presence(&self, team: &str, conn: u64) {
        let Some(hub) = self.presence.get(team).map(|h| h.clone()) else { return };
        let mut guard = hub.lock().unwrap_or_else(|e| e.into_inner());
        if guard.remove(conn) {
            guard.publish();
        }
        // An empty hub is dropped; the locator sends the session list again on the next request.
        // The map's lock is never taken while a hub's is held (nor the other way round).
        if guard.connections.is_empty() {
            guard.retired = true;
            drop(guard);
            self.presence.remove_if(team, |_, h| Arc::ptr_eq(h, &hub));
        }
    }
}

/// Team names as the locator accepts them (1-128 bytes, no control characters).
pub fn valid_team(team: &str) -> bool {
    !team.is_empty() && team.len() <= 128 && !team.chars().any(char::is_control) && team != "." && team != ".."
}

/// Serves one presence websocket, given its stream, until it closes.
pub async fn serve<S>(state: Arc<EdgeState>, team: String, io: S)
where
    S: duet_ws::SplitIo,
{
    let mut conn = duet_ws::split(
        io,
        duet_ws::Role::Server,
        duet_ws::Limits {
            // Presence clients send only `hello` and `ping`.
            max_message_bytes: 16 << 10,
            max_queued_bytes: state.config.max_queued_bytes,
        },
    );
    state.connections.fetch_add(1, Ordering::AcqRel);
    let span = tracing::info_span!("presence", team = %team);
    tracing::Instrument::instrument(run(state.clone(), team, &mut conn), span).await;
    state.connections.fetch_sub(1, Ordering::AcqRel);
}

fn close(writer: &Writer, code: CloseCode) {
    writer.close(code.code(), code.name());
}

async fn run<S>(state: Arc<EdgeState>, team: String, conn: &mut duet_ws::Reader<S>)
where
    S: duet_ws::SplitIo,
{
    let writer = conn.writer().clone();
    let first = tokio::select! {
        r = tokio::time::timeout(state.config.handshake_timeout, conn.next()) => r,
        _ = state.shutdown.cancelled() => return close(&writer, CloseCode::EdgeShuttingDown),
    };
    let token = match first {
        Err(_) => return close(&writer, CloseCode::HandshakeTimeout),
        Ok(Ok(Message::Binary(bytes))) => match PresenceClientFrame::decode(&bytes) {
            Ok(PresenceClientFrame::Hello { version, token }) if version == PRESENCE_PROTOCOL_VERSION => token,
            Ok(PresenceClientFrame::Hello { .. }) => return close(&writer, CloseCode::UnsupportedVersion),
            Ok(_) => return close(&writer, CloseCode::UnexpectedFrame),
            Err(e) => return close(&writer, e.close_code()),
        },
        Ok(Ok(Message::Text(_))) => return close(&writer, CloseCode::TextFrame),
        Ok(Ok(Message::Close { .. })) => return,
        Ok(Err(ReadError::TooLarge { .. })) => return close(&writer, CloseCode::MessageTooLarge),
        Ok(Err(ReadError::Protocol(_))) => return close(&writer, CloseCode::MalformedFrame),
        Ok(Err(_)) => return,
    };
    let claims = match state.keys.verify_presence(&token, &team, &state.edge_id) {
        Ok(c) => c,
        Err(refused) => {
            tracing::info!(reason = %refused, "presence refused");
            return close(&writer, refused.close_code());
        }
    };
    let conn_id = state.next_conn_id();
    loop {
        let hub = state.hub(&team);
        let joined = {
            let mut guard = hub.lock().unwrap_or_else(|e| e.into_inner());
            if guard.retired {
                // The last connection of the team left between the lookup and the lock, and the
                // hub is on its way out of the map: take the team's next one.
                None
            } else if guard.connections.len() >= MAX_CONNECTIONS_PER_TEAM {
                Some(false)
            } else {
                let entry = guard.members.entry(claims.sub.clone()).or_insert_with(|| (claims.name.clone(), 0));
                entry.1 = entry.1.saturating_add(1);
                guard.connections.insert(conn_id, (claims.sub.clone(), writer.clone()));
                guard.publish();
                Some(true)
            }
        };
        match joined {
            Some(true) => break,
            Some(false) => return close(&writer, CloseCode::EdgeFull),
            None => tokio::task::yield_now().await,
        }
    }
    tracing::debug!(user = %claims.sub, "presence connected");

    conn.set_idle_timeout(Some(state.config.idle_timeout));
    // Made once, not per frame: each registers with its notifier under a lock.
    let writer_gone = writer.closed();
    let shutdown = state.shutdown.cancelled();
    tokio::pin!(writer_gone, shutdown);
    loop {
        // The read first: the others are looked at only when no frame is ready (a peer that never
        // lets the read wait still yields them within tokio's cooperative budget).
        let next = tokio::select! {
            biased;
            next = conn.next() => next,
            () = &mut writer_gone => break,
            () = &mut shutdown => {
                close(&writer, CloseCode::EdgeShuttingDown);
                break;
            }
        };
        match next {
            Ok(Message::Binary(bytes)) => match PresenceClientFrame::decode(&bytes) {
                Ok(PresenceClientFrame::Ping { nonce }) => {
                    if let Ok(pong) = (PresenceFrame::Pong { nonce }).encode() {
                        let _ = writer.send(pong);
                    }
                }
                Ok(PresenceClientFrame::Hello { .. }) => {
                    close(&writer, CloseCode::UnexpectedFrame);
                    break;
                }
                Err(e) => {
                    close(&writer, e.close_code());
                    break;
                }
            },
            Ok(Message::Text(_)) => {
                close(&writer, CloseCode::TextFrame);
                break;
            }
            Ok(Message::Close { .. }) => break,
            Err(ReadError::Idle(_)) => {
                close(&writer, CloseCode::ConnectionIdle);
                break;
            }
            Err(ReadError::TooLarge { .. }) => {
                close(&writer, CloseCode::MessageTooLarge);
                break;
            }
            Err(_) => break,
        }
    }
    state.leave_presence(&team, conn_id);
}
