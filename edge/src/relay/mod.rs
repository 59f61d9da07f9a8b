//! Session websockets: one task per client connection.
//!
//! The connection task reads frames and applies them to its session ([`session`]) itself, under
//! the session's lock; everything it sends goes through the connection's byte-bounded writer. The first
//! frame must be `join` (its token is verified locally, here, and never again for this
//! connection) or `resume` (checked by the session against the participant's secret) within the
//! handshake timeout. After that the connection is held to the idle timeout and the
//! messages-per-second limit.

pub mod session;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use duet_proto::close::CloseCode;
use duet_proto::session::{
    ClientFrame, EdgeFrame, LeaveReason, Participant, ParticipantId, Role, MIN_SESSION_PROTOCOL_VERSION,
    SESSION_PROTOCOL_VERSION,
};
use duet_ws::{Message, ReadError, Reader};

use crate::media::Signal;
use crate::EdgeState;
use session::SessionCmd;

type Conn<S> = Reader<S>;

/// `media_offer` and `media_answer` frames one connection may send per second (bursts of twice).
const MAX_SDP_FRAMES_PER_SECOND: u32 = 10;

/// The longest a `leave` waits for its audit entry to be committed before the connection closes
/// (only a stalled disk takes that long).
const LEAVE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves one upgraded session websocket, given its stream, until it closes. Generic over the
/// stream so tests can drive it through an in-memory pipe on paused time.
pub async fn serve<S>(state: Arc<EdgeState>, session_id: String, io: S)
where
    S: duet_ws::SplitIo,
{
    let reader = duet_ws::split(
        io,
        duet_ws::Role::Server,
        duet_ws::Limits {
            max_message_bytes: state.config.max_message_bytes,
            max_queued_bytes: state.config.max_queued_bytes,
        },
    );
    state.connections.fetch_add(1, Ordering::AcqRel);
    let span = tracing::info_span!("connection", session.id = %session_id, participant.id = tracing::field::Empty);
    let _ = tracing::Instrument::instrument(run(state.clone(), session_id, reader), span).await;
    state.connections.fetch_sub(1, Ordering::AcqRel);
}

fn close<S: duet_ws::SplitIo>(conn: &Conn<S>, code: CloseCode, detail: &str) {
    tracing::debug!(code = code.code(), detail, "closing connection");
    conn.writer().close(code.code(), code.name());
}

/// Maps a read failure to the close code the client gets (none if the peer is already gone).
fn read_failure<S: duet_ws::SplitIo>(conn: &Conn<S>, e: &ReadError) {
    match e {
        ReadError::TooLarge { .. } => close(conn, CloseCode::MessageTooLarge, "declared size over the limit"),
        ReadError::Protocol(err) => close(conn, CloseCode::MalformedFrame, &err.to_string()),
        ReadError::Idle(_) => close(conn, CloseCode::ConnectionIdle, "no frame within the idle timeout"),
        ReadError::Eof | ReadError::Io(_) => {}
    }
}

/// How a connection entered its session.
enum Entry {
    Join { participant: Participant, settings: session::Settings },
    Resume { participant_id: ParticipantId, secret: bytes::Bytes, last_seq: u64 },
}

/// Messages per second one connection may send, as a token bucket holding two seconds' worth.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl RateLimit {
    fn new(per_second: u32) -> Option<RateLimit> {
        (per_second > 0).then(|| RateLimit {
            per_second: f64::from(per_second),
            tokens: 2.0 * f64::from(per_second),
            at: tokio::time::Instant::now(),
        })
    }

    /// Takes one token; false when the bucket is empty.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(2.0 * self.per_second);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn run<S>(state: Arc<EdgeState>, session_id: String, mut conn: Conn<S>)
where
    S: duet_ws::SplitIo,
{
    // ---- handshake: exactly one `join` or `resume` within the timeout ----
    let first = tokio::select! {
        r = tokio::time::timeout(state.config.handshake_timeout, conn.next()) => r,
        _ = state.shutdown.cancelled() => {
            close(&conn, CloseCode::EdgeShuttingDown, "shutdown");
            return;
        }
    };
    let frame = match first {
        Err(_) => return close(&conn, CloseCode::HandshakeTimeout, "no join in time"),
        Ok(Err(e)) => return read_failure(&conn, &e),
        Ok(Ok(Message::Close { .. })) => return,
        Ok(Ok(Message::Text(_))) => return close(&conn, CloseCode::TextFrame, "text frame"),
        Ok(Ok(Message::Binary(bytes))) => match ClientFrame::decode(&bytes) {
            Err(e) => return close(&conn, e.close_code(), &e.to_string()),
            Ok(f) => f,
        },
    };
    let supported = MIN_SESSION_PROTOCOL_VERSION..=SESSION_PROTOCOL_VERSION;
    let (entry, version) = match frame {
        ClientFrame::Join { version, token } => {
            if !supported.contains(&version) {
                return close(&conn, CloseCode::UnsupportedVersion, "version");
            }
            let claims = match state.keys.verify(&token, &session_id, &state.edge_id) {
                Ok(c) => c,
                Err(refused) => {
                    tracing::info!(reason = %refused, "join refused");
                    return close(&conn, refused.close_code(), &refused.to_string());
                }
            };
            let settings = session::Settings { approval: claims.appr, max_participants: claims.maxp };
            let participant = Participant {
                id: claims.pid,
                role: Role::parse(&claims.role).unwrap_or(Role::Guest),
                user_id: claims.sub,
                display_name: claims.name,
            };
            (Entry::Join { participant, settings }, version)
        }
        ClientFrame::Resume { version, participant_id, resume_secret, last_seq } => {
            if !supported.contains(&version) {
                return close(&conn, CloseCode::UnsupportedVersion, "version");
            }
            (Entry::Resume { participant_id, secret: resume_secret, last_seq }, version)
        }
        _ => return close(&conn, CloseCode::UnexpectedFrame, "first frame must be join or resume"),
    };
    let max = state.config.max_connections;
    if max > 0 && state.connections.load(Ordering::Acquire) > max as usize {
        return close(&conn, CloseCode::EdgeFull, "max connections");
    }
    let pid = match &entry {
        Entry::Join { participant, .. } => participant.id,
        Entry::Resume { participant_id, .. } => *participant_id,
    };
    tracing::Span::current().record("participant.id", pid);

    // ---- enter the session (it queues our welcome, or `resumed` and the replay) ----
    let conn_id = state.next_conn_id();
    // Cancelled when the session replaces or removes this connection, and with the edge's shutdown
    // (a child token): one future for the read loop to watch besides the read.
    let kick = state.shutdown.child_token();
    let link = session::Link { id: conn_id, writer: conn.writer().clone(), kick: kick.clone(), version };
    let handle = match enter_session(&state, &session_id, entry, link) {
        Ok(h) => h,
        Err(code) => return close(&conn, code, "refused"),
    };
    tracing::debug!("entered the session");

    // ---- relay until the connection ends ----
    conn.set_idle_timeout(Some(state.config.idle_timeout));
    let mut rate = RateLimit::new(state.config.max_messages_per_second);
    // Offers and answers cost the media task a parse each (milliseconds for a big one): a
    // connection gets 10 a second, in bursts of 20, whatever `max_messages_per_second` says.
    let mut sdp_rate = RateLimit::new(MAX_SDP_FRAMES_PER_SECOND).expect("non-zero");
    let leave = |reason| SessionCmd::Leave { participant_id: pid, conn: conn_id, reason };
    // Made once, not per message: each costs its token's locks to register and unregister.
    let stopped = kick.cancelled();
    tokio::pin!(stopped);
    loop {
        // The read first: `stopped` is looked at only when no frame is ready (a peer that never
        // lets the read wait still yields it within tokio's cooperative budget).
        let next = tokio::select! {
            biased;
            next = conn.next() => next,
            () = &mut stopped => {
                if state.shutdown.is_cancelled() {
                    close(&conn, CloseCode::EdgeShuttingDown, "shutdown");
                }
                return;
            }
        };
        let frame = match next {
            Ok(Message::Binary(bytes)) => match ClientFrame::decode(&bytes) {
                Ok(f) => f,
                Err(e) => {
                    close(&conn, e.close_code(), &e.to_string());
                    let _ = handle.apply(leave(LeaveReason::Removed));
                    return;
                }
            },
            Ok(Message::Text(_)) => {
                close(&conn, CloseCode::TextFrame, "text frame");
                let _ = handle.apply(leave(LeaveReason::Removed));
                return;
            }
            Ok(Message::Close { .. }) => {
                let _ = handle.apply(leave(LeaveReason::Disconnected));
                return;
            }
            Err(e) => {
                read_failure(&conn, &e);
                let reason = if matches!(e, ReadError::Eof | ReadError::Io(_) | ReadError::Idle(_)) {
                    LeaveReason::Disconnected
                } else {
                    LeaveReason::Removed
                };
                let _ = handle.apply(leave(reason));
                return;
            }
        };
        if frame.since_version() > version {
            close(&conn, CloseCode::UnknownKind, "kind not in the joined protocol version");
            let _ = handle.apply(leave(LeaveReason::Removed));
            return;
        }
        if rate.as_mut().is_some_and(|r| !r.take()) {
            close(&conn, CloseCode::TooManyMessages, "rate limit");
            let _ = handle.apply(leave(LeaveReason::Removed));
            return;
        }
        if matches!(frame, ClientFrame::MediaOffer { .. } | ClientFrame::MediaAnswer { .. }) && !sdp_rate.take() {
            let refused = EdgeFrame::Error {
                code: duet_proto::session::error_code::MEDIA_REJECTED,
                message: format!("more than {MAX_SDP_FRAMES_PER_SECOND} offers and answers a second"),
            };
            if let Ok(bytes) = refused.encode() {
                let _ = conn.writer().send(bytes);
            }
            continue;
        }
        let cmd = match frame {
            ClientFrame::Send { message_id, to, payload } => {
                SessionCmd::Send { from: pid, conn: conn_id, message_id, to, payload }
            }
            ClientFrame::Ping { nonce } => {
                if let Ok(bytes) = (EdgeFrame::Pong { nonce }).encode() {
                    let _ = conn.writer().send(bytes);
                }
                continue;
            }
            ClientFrame::EndSession => SessionCmd::EndByHost { from: pid, conn: conn_id },
            ClientFrame::Admit { participant_id, admit } => {
                SessionCmd::Admit { from: pid, conn: conn_id, participant_id, admit }
            }
            ClientFrame::Leave => {
                // The close that answers `leave` follows its audit entry onto disk, so a client
                // that saw it knows the record is kept (a group commit: a few milliseconds).
                if handle.apply(leave(LeaveReason::Left)).is_ok() {
                    if let Err(e) = tokio::time::timeout(LEAVE_FLUSH_TIMEOUT, state.outbox.flush()).await {
                        tracing::warn!(error = %e, "leave not yet on disk; closing anyway");
                    }
                }
                conn.writer().close(1000, "left");
                return;
            }
            ClientFrame::MediaOffer { sdp } => media(pid, conn_id, Signal::Offer(sdp)),
            ClientFrame::MediaAnswer { offer_id, sdp } => media(pid, conn_id, Signal::Answer { offer_id, sdp }),
            ClientFrame::MediaCandidate { candidate } => media(pid, conn_id, Signal::Candidate(candidate)),
            ClientFrame::TrackPublish { mid, source } => media(pid, conn_id, Signal::Publish { mid, source }),
            ClientFrame::TrackMute { mid, muted } => media(pid, conn_id, Signal::Mute { mid, muted }),
            ClientFrame::MediaLeave => media(pid, conn_id, Signal::Leave),
            ClientFrame::Join { .. } | ClientFrame::Resume { .. } => {
                close(&conn, CloseCode::UnexpectedFrame, "second join");
                let _ = handle.apply(leave(LeaveReason::Removed));
                return;
            }
        };
        if handle.apply(cmd).is_err() {
            return close(&conn, CloseCode::SessionEnded, "session ended");
        }
    }
}

fn media(from: ParticipantId, conn: session::ConnId, signal: Signal) -> SessionCmd {
    SessionCmd::Media { from, conn, signal }
}

/// Finds (or, for a join, starts) the session and enters it. A join retries once if the session
/// it found ended between lookup and join.
fn enter_session(
    state: &Arc<EdgeState>,
    session_id: &str,
    entry: Entry,
    link: session::Link,
) -> Result<session::SessionHandle, CloseCode> {
    match entry {
        Entry::Resume { participant_id, secret, last_seq } => {
            let handle = state.existing_session(session_id)?;
            match handle.resume(participant_id, &secret, last_seq, link) {
                Ok(Ok(())) => Ok(handle),
                Ok(Err(code)) => Err(code),
                Err(session::Ended) => Err(CloseCode::SessionEnded),
            }
        }
        Entry::Join { participant, settings } => {
            for _ in 0..2 {
                let handle = state.session_handle(session_id)?;
                let link = session::Link {
                    id: link.id,
                    writer: link.writer.clone(),
                    kick: link.kick.clone(),
                    version: link.version,
                };
                match handle.join(participant.clone(), settings, link) {
                    Ok(Ok(())) => return Ok(handle),
                    Ok(Err(code)) => return Err(code),
                    Err(session::Ended) => continue,
                }
            }
            Err(CloseCode::SessionEnded)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use duet_proto::close::CloseCode;
    use duet_ws::{Limits, Message, Role};
    use tokio_util::sync::CancellationToken;

    /// The handshake timeout on paused time: a client that never sends `join` is closed with
    /// 4004 exactly when the configured timeout has passed, not before. The connection runs
    /// through an in-memory pipe, so no real time or socket is involved. The edge starts on real
    /// time (its outbox opens a SQLite file on a worker thread, which paused time would race with
    /// its pool's timeouts) and the clock is paused once its first entry is on disk.
    #[tokio::test]
    async fn silent_clients_are_closed_at_the_handshake_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // No locator listens here; the edge keeps retrying its link, which does not matter.
        let mut config = crate::EdgeConfig::new("http://127.0.0.1:9", "0123456789abcdef0123", dir.path().into());
        config.handshake_timeout = Duration::from_secs(10);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let edge = crate::start(config, listener, shutdown.clone()).await.unwrap();
        edge.state.outbox.flush().await.unwrap();
        tokio::time::pause();

        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let state = edge.state.clone();
        tokio::spawn(super::serve(state, "s_paused".into(), server_io));
        let limits = Limits { max_message_bytes: 1 << 16, max_queued_bytes: 1 << 16 };
        let mut client = duet_ws::split(client_io, Role::Client, limits);

        let started = tokio::time::Instant::now();
        let message = client.next().await.unwrap();
        let waited = started.elapsed();
        match message {
            Message::Close { code, .. } => assert_eq!(code, Some(CloseCode::HandshakeTimeout.code())),
            other => panic!("expected a close, got {other:?}"),
        }
        assert!(waited >= Duration::from_secs(10), "closed early, after {waited:?}");
        assert!(waited < Duration::from_secs(11), "closed late, after {waited:?}");
        shutdown.cancel();
        edge.wait().await;
    }
}
