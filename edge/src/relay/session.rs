//! One session: an actor task that owns the participant list and the session's sequence number.
//!
//! Every connection reaches its session through a [`SessionHandle`] (a bounded command sender).
//! Because one task assigns sequence numbers and writes into each participant's queue, every
//! participant sees events in sequence order. Frames are encoded once and shared by every
//! recipient. Nothing here awaits a participant: delivery is `Writer::send`, which fails fast
//! when a reader is too far behind, and that reader is removed with close code 4300.
//!
//! The actor also records the session's audit entries (started, participant joined and left,
//! ended) and its summary metrics entry in the edge's outbox; pushing never waits.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use duet_proto::close::CloseCode;
use duet_proto::link::{EdgeMessage, SessionEndReason};
use duet_proto::outbox::{AuditEvent, MetricsEntry, OutboxEntry, SessionSummary};
use duet_proto::session::{error_code, EdgeFrame, LeaveReason, Participant, ParticipantId, EVERYONE};
use duet_ws::{SendError, Writer};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::EdgeState;

/// Commands queued per session. 1024 lets every participant of a busy session have several
/// messages in flight before senders wait (which is the backpressure on senders).
pub const SESSION_QUEUE: usize = 1024;

/// Identifies one websocket connection, so a stale connection of a replaced participant cannot
/// act for the new one.
pub type ConnId = u64;

pub enum SessionCmd {
    Join {
        participant: Participant,
        conn: ConnId,
        writer: Writer,
        /// Cancelled when the session removes this connection (replaced, slow reader).
        kick: CancellationToken,
        reply: oneshot::Sender<Result<(), CloseCode>>,
    },
    Send {
        from: ParticipantId,
        conn: ConnId,
        message_id: u64,
        to: ParticipantId,
        payload: Bytes,
    },
    Leave {
        participant_id: ParticipantId,
        conn: ConnId,
        reason: LeaveReason,
        /// Answered once the leave is applied and its audit entry pushed to the outbox.
        done: Option<oneshot::Sender<()>>,
    },
    /// End the session now (a locator command or shutdown); every connection is closed with `code`.
    End {
        reason: SessionEndReason,
        code: CloseCode,
    },
}

/// How connections reach a session.
#[derive(Clone)]
pub struct SessionHandle {
    pub tx: mpsc::Sender<SessionCmd>,
    /// Distinguishes this actor from a later one with the same session id.
    pub generation: u64,
}

struct Member {
    info: Participant,
    conn: ConnId,
    writer: Writer,
    kick: CancellationToken,
}

struct Session {
    id: String,
    generation: u64,
    state: Arc<EdgeState>,
    seq: u64,
    members: BTreeMap<ParticipantId, Member>,
    started_at_ms: i64,
    /// Participants that joined over the session's life (a participant that rejoins after
    /// leaving counts again; a connection replacing a live one does not).
    joined: u32,
    messages_relayed: u64,
    bytes_relayed: u64,
}

/// Starts a session actor and returns its handle.
pub fn spawn(state: Arc<EdgeState>, id: String, generation: u64) -> SessionHandle {
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    let session = Session {
        id,
        generation,
        state,
        seq: 0,
        members: BTreeMap::new(),
        started_at_ms: crate::now_ms(),
        joined: 0,
        messages_relayed: 0,
        bytes_relayed: 0,
    };
    tokio::spawn(session.run(rx));
    SessionHandle { tx, generation }
}

impl Session {
    async fn run(mut self, mut rx: mpsc::Receiver<SessionCmd>) {
        tracing::info!(session.id = %self.id, "session opened");
        self.state.link_event(EdgeMessage::SessionOpened { session_id: self.id.clone() });
        self.state.audit(AuditEvent::SessionStarted, Some(&self.id), None, String::new());
        let mut end_reason = SessionEndReason::Empty;
        while let Some(cmd) = rx.recv().await {
            match cmd {
                SessionCmd::Join { participant, conn, writer, kick, reply } => {
                    let result = self.join(participant, conn, writer, kick);
                    let _ = reply.send(result);
                }
                SessionCmd::Send { from, conn, message_id, to, payload } => {
                    self.relay(from, conn, message_id, to, payload);
                }
                SessionCmd::Leave { participant_id, conn, reason, done } => {
                    if self.members.get(&participant_id).is_some_and(|m| m.conn == conn) {
                        self.remove(participant_id, reason);
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                SessionCmd::End { reason, code } => {
                    for (_, m) in std::mem::take(&mut self.members) {
                        m.writer.close(code.code(), code.name());
                        m.kick.cancel();
                        let detail = format!("session ended ({})", reason.as_str());
                        self.state.audit(AuditEvent::ParticipantLeft, Some(&self.id), Some(&m.info), detail);
                    }
                    end_reason = reason;
                }
            }
            if self.members.is_empty() {
                break;
            }
        }
        // Refuse joins that were queued behind the end: they get `session ended`.
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            if let SessionCmd::Join { reply, writer, .. } = cmd {
                let _ = reply.send(Err(CloseCode::SessionEnded));
                drop(writer);
            }
        }
        let now = crate::now_ms();
        self.state.audit(AuditEvent::SessionEnded, Some(&self.id), None, end_reason.as_str().to_owned());
        self.state.outbox.push(OutboxEntry::Metrics(MetricsEntry::SessionSummary(SessionSummary {
            at_ms: now,
            session_id: self.id.clone(),
            started_at_ms: self.started_at_ms,
            participants: self.joined,
            messages_relayed: self.messages_relayed,
            bytes_relayed: self.bytes_relayed,
            end_reason: end_reason.as_str().to_owned(),
        })));
        self.state.session_ended(&self.id, self.generation, end_reason);
        tracing::info!(session.id = %self.id, reason = end_reason.as_str(), "session ended");
    }

    fn join(
        &mut self,
        participant: Participant,
        conn: ConnId,
        writer: Writer,
        kick: CancellationToken,
    ) -> Result<(), CloseCode> {
        let id = participant.id;
        let replacing = self.members.remove(&id);
        if let Some(old) = &replacing {
            old.writer.close(CloseCode::Replaced.code(), CloseCode::Replaced.name());
            old.kick.cancel();
        }
        let mut participants: Vec<Participant> = self.members.values().map(|m| m.info.clone()).collect();
        participants.push(participant.clone());
        participants.sort_by_key(|p| p.id);
        let welcome = EdgeFrame::Welcome {
            version: duet_proto::session::SESSION_PROTOCOL_VERSION,
            participant_id: id,
            seq: self.seq,
            resume_secret: Bytes::from(rand::random::<[u8; 32]>().to_vec()),
            participants,
        };
        let bytes = welcome.encode().map_err(|_| CloseCode::Internal)?;
        writer.send(bytes).map_err(|_| CloseCode::SlowReader)?;
        let detail = match (&replacing, participant.role) {
            (Some(_), _) => "reconnected (replaced its earlier connection)",
            (None, duet_proto::session::Role::Host) => "host",
            (None, duet_proto::session::Role::Guest) => "guest",
        };
        self.state.audit(AuditEvent::ParticipantJoined, Some(&self.id), Some(&participant), detail.to_owned());
        self.members.insert(id, Member { info: participant.clone(), conn, writer, kick });
        if replacing.is_none() {
            self.joined = self.joined.saturating_add(1);
            self.seq += 1;
            let frame = EdgeFrame::ParticipantJoined { seq: self.seq, participant };
            self.broadcast(frame, Some(id));
        }
        Ok(())
    }

    fn relay(&mut self, from: ParticipantId, conn: ConnId, message_id: u64, to: ParticipantId, payload: Bytes) {
        // A stale connection of a replaced participant cannot speak for it.
        if self.members.get(&from).is_none_or(|m| m.conn != conn) {
            return;
        }
        if to == from {
            let err = EdgeFrame::Error {
                code: error_code::SELF_ADDRESSED,
                message: "a message cannot be addressed to its sender".into(),
            };
            self.deliver_one(from, err);
            return;
        }
        if to != EVERYONE && !self.members.contains_key(&to) {
            let err = EdgeFrame::Error {
                code: error_code::UNKNOWN_PARTICIPANT,
                message: format!("participant {to} is not in the session"),
            };
            self.deliver_one(from, err);
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let recipients = if to == EVERYONE { self.members.len().saturating_sub(1) } else { 1 } as u64;
        let bytes = payload.len() as u64 * recipients;
        self.messages_relayed += 1;
        self.bytes_relayed += bytes;
        self.state.count_relayed(1, bytes);
        let frame = EdgeFrame::Message { seq, from, to, payload };
        if to == EVERYONE {
            self.broadcast(frame, Some(from));
        } else {
            self.deliver_one(to, frame);
        }
        if message_id != 0 {
            self.deliver_one(from, EdgeFrame::Ack { message_id, seq });
        }
    }

    /// Sends to everyone but `except`; readers that are too far behind are removed.
    fn broadcast(&mut self, frame: EdgeFrame, except: Option<ParticipantId>) {
        let Ok(bytes) = frame.encode() else { return };
        let mut slow = Vec::new();
        for (id, m) in &self.members {
            if Some(*id) == except {
                continue;
            }
            if let Err(SendError::Full) = m.writer.send(bytes.clone()) {
                slow.push(*id);
            }
        }
        self.remove_slow(slow);
    }

    fn deliver_one(&mut self, to: ParticipantId, frame: EdgeFrame) {
        let Ok(bytes) = frame.encode() else { return };
        if let Some(m) = self.members.get(&to) {
            if let Err(SendError::Full) = m.writer.send(bytes) {
                self.remove_slow(vec![to]);
            }
        }
    }

    fn remove_slow(&mut self, mut slow: Vec<ParticipantId>) {
        // Removing one participant notifies the others, which can reveal more slow readers.
        while let Some(id) = slow.pop() {
            if let Some(m) = self.members.remove(&id) {
                tracing::warn!(session.id = %self.id, participant.id = id, queued = m.writer.queued_bytes(), "slow reader removed");
                m.writer.close(CloseCode::SlowReader.code(), CloseCode::SlowReader.name());
                m.kick.cancel();
                let detail = "removed (slow reader)".to_owned();
                self.state.audit(AuditEvent::ParticipantLeft, Some(&self.id), Some(&m.info), detail);
                self.seq += 1;
                let Ok(bytes) =
                    (EdgeFrame::ParticipantLeft { seq: self.seq, participant_id: id, reason: LeaveReason::Removed })
                        .encode()
                else {
                    continue;
                };
                for (other, m) in &self.members {
                    if let Err(SendError::Full) = m.writer.send(bytes.clone()) {
                        if !slow.contains(other) {
                            slow.push(*other);
                        }
                    }
                }
            }
        }
    }

    fn remove(&mut self, id: ParticipantId, reason: LeaveReason) {
        if let Some(m) = self.members.remove(&id) {
            let detail = match reason {
                LeaveReason::Left => "left",
                LeaveReason::Disconnected => "disconnected",
                LeaveReason::Removed => "removed",
            };
            self.state.audit(AuditEvent::ParticipantLeft, Some(&self.id), Some(&m.info), detail.to_owned());
            self.seq += 1;
            self.broadcast(EdgeFrame::ParticipantLeft { seq: self.seq, participant_id: id, reason }, None);
        }
    }
}
