//! One session: the participant list, the session's sequence number and its replay window, behind
//! one lock.
//!
//! Every connection reaches its session through a [`SessionHandle`] and applies its commands
//! itself, under the session's lock: the connection that read a `send` numbers it and writes it
//! into each recipient's queue in the same step, with no task in between. Because numbers are
//! assigned and queues written under one lock, every participant sees events in sequence order.
//! Frames are encoded once and shared by every recipient and by the replay window. Nothing here
//! awaits anything, so the lock is held only for one command's deliveries (microseconds; a
//! resume's replay, one queue push per missed event, is the longest): delivery is
//! `Writer::send`, which fails fast when a reader is too far behind; that reader is closed with
//! 4300 and becomes *away*, like one whose connection dropped.
//!
//! A participant holds its place while away: the host for `host_grace`, a guest for
//! `replay_window_age`. It comes back with `resume` (its secret and the last sequence number it
//! received) and gets the events it missed from the [`window`](Window), or `resync needed` when
//! the window no longer reaches back that far. The session's timers are one deadline, slept on by
//! a small timer task that takes the lock only when it fires.
//!
//! The session also records its audit entries and its summary metrics entry in the edge's outbox;
//! pushing never waits.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use duet_proto::close::CloseCode;
use duet_proto::link::{EdgeMessage, SessionEndReason};
use duet_proto::outbox::{AuditEvent, MetricsEntry, OutboxEntry, SessionSummary};
use duet_proto::session::{error_code, EdgeFrame, LeaveReason, Participant, ParticipantId, Role, EVERYONE};
use duet_ws::{SendError, Writer};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::EdgeState;

/// Identifies one websocket connection, so a stale connection of a replaced participant cannot
/// act for the new one.
pub type ConnId = u64;

/// A connection as the session sees it.
pub struct Link {
    pub id: ConnId,
    pub writer: Writer,
    /// Cancelled when the session drops this connection (replaced, slow reader, refused, ended).
    pub kick: CancellationToken,
    /// The session protocol version the connection joined or resumed with (its `welcome` says it).
    pub version: u8,
}

impl Link {
    fn close(&self, code: CloseCode) {
        self.writer.close(code.code(), code.name());
        self.kick.cancel();
    }
}

/// Session settings carried by the participants' tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Guests wait for the host's `admit`.
    pub approval: bool,
    /// The most participants at once (the edge's `max_participants` caps it).
    pub max_participants: Option<u32>,
}

/// What a connected participant (or the edge) asks of its session; see [`SessionHandle::apply`].
/// Entering a session is [`SessionHandle::join`] or [`SessionHandle::resume`].
pub enum SessionCmd {
    Send {
        from: ParticipantId,
        conn: ConnId,
        message_id: u64,
        to: ParticipantId,
        payload: Bytes,
    },
    /// The connection ended: `Left` releases the place, `Disconnected` makes the participant
    /// away, `Removed` (a protocol violation) releases it too. Applied (and its audit entry
    /// pushed to the outbox) when `apply` returns.
    Leave {
        participant_id: ParticipantId,
        conn: ConnId,
        reason: LeaveReason,
    },
    EndByHost {
        from: ParticipantId,
        conn: ConnId,
    },
    Admit {
        from: ParticipantId,
        conn: ConnId,
        participant_id: ParticipantId,
        admit: bool,
    },
    /// A media signalling frame (protocol version 3), passed to the media task if the sender is
    /// a connected, admitted member.
    Media {
        from: ParticipantId,
        conn: ConnId,
        signal: crate::media::Signal,
    },
    /// End the session now (a locator command or shutdown); every connection is closed with `code`.
    End {
        reason: SessionEndReason,
        code: CloseCode,
    },
}

/// The session has ended; nothing more is applied to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

/// How connections reach a session. Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
    /// Distinguishes this session from a later one with the same session id.
    pub generation: u64,
}

struct Shared {
    session: Mutex<Session>,
    /// Set once the session has ended (under the lock), so lookups can tell without taking it.
    ended: AtomicBool,
    /// Wakes the timer task when a command brought the next deadline forward.
    rearm: Notify,
}

impl SessionHandle {
    /// Whether the session has ended (a new one with the same id may then start, see
    /// `EdgeState::session_handle`).
    pub fn is_ended(&self) -> bool {
        self.shared.ended.load(Ordering::Acquire)
    }

    /// Enters the session with a verified token: welcomed, waiting for the host's approval, or
    /// refused with a close code. `Err(Ended)` when the session ended before the join applied.
    pub fn join(
        &self,
        participant: Participant,
        settings: Settings,
        link: Link,
    ) -> Result<Result<(), CloseCode>, Ended> {
        self.with(|s| s.join(participant, settings, link))
    }

    /// Takes a participant's place back on a new connection: `resumed` and the replay are queued
    /// on `link`, or the resume is refused with a close code.
    pub fn resume(
        &self,
        participant_id: ParticipantId,
        secret: &[u8],
        last_seq: u64,
        link: Link,
    ) -> Result<Result<(), CloseCode>, Ended> {
        self.with(|s| s.resume(participant_id, secret, last_seq, link))
    }

    /// Applies one command; it has taken effect when this returns.
    pub fn apply(&self, cmd: SessionCmd) -> Result<(), Ended> {
        let routine = matches!(cmd, SessionCmd::Send { .. });
        let mut session = self.lock()?;
        if !routine {
            session.deadline_moved = true;
        }
        let end = session.handle(cmd);
        self.settle(&mut session, end);
        Ok(())
    }

    /// Runs `f` on the session, then settles what it did.
    fn with<R>(&self, f: impl FnOnce(&mut Session) -> R) -> Result<R, Ended> {
        let mut session = self.lock()?;
        session.deadline_moved = true;
        let r = f(&mut session);
        self.settle(&mut session, None);
        Ok(r)
    }

    fn lock(&self) -> Result<MutexGuard<'_, Session>, Ended> {
        let session = self.shared.session.lock().unwrap_or_else(|poisoned| {
            // A panic while the lock was held (a bug): the session goes on with the state the
            // panicking command left, rather than stay half-alive with nobody able to end it.
            tracing::error!("a command panicked while applying to its session; the session goes on");
            self.shared.session.clear_poison();
            poisoned.into_inner()
        });
        if session.ended.is_some() {
            return Err(Ended);
        }
        Ok(session)
    }

    /// After a command: closes the slow readers it found, ends the session if the command ended
    /// it or left nobody, else wakes the timer if the next deadline came forward.
    fn settle(&self, session: &mut Session, end: Option<SessionEndReason>) {
        session.drain_slow();
        let end = end
            .or_else(|| (session.members.is_empty() && session.pending.is_empty()).then_some(SessionEndReason::Empty));
        if let Some(reason) = end {
            session.finish(reason);
            self.shared.ended.store(true, Ordering::Release);
            self.shared.rearm.notify_one();
            return;
        }
        if std::mem::take(&mut session.deadline_moved) && session.next_deadline() < session.armed {
            self.shared.rearm.notify_one();
        }
    }

    /// The session's timer task: sleeps until the next deadline, applies the timers, repeats;
    /// ends with the session.
    async fn run_timer(self) {
        loop {
            let deadline = match self.lock() {
                Ok(mut session) => {
                    session.armed = session.next_deadline();
                    session.armed
                }
                Err(Ended) => return,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shared.rearm.notified() => continue,
            }
            let Ok(mut session) = self.lock() else { return };
            let end = session.on_timer();
            self.settle(&mut session, end);
        }
    }
}

struct Member {
    info: Participant,
    secret: [u8; 32],
    /// `None` while away.
    link: Option<Link>,
    /// When the connection was lost (away members only).
    away_since: Option<Instant>,
    /// The highest `message_id` sequenced for this participant: a `send` with an id at or below
    /// it is a re-send and is acknowledged without being relayed again.
    last_message_id: u64,
    /// The seqs its messages still in the replay window got, for the acks of re-sends.
    sent: SentIds,
    /// The session's seq before this participant's join: a resume never replays anything older.
    joined_after: u64,
}

struct Pending {
    info: Participant,
    link: Link,
}

/// One sequenced event, kept for replay.
struct Event {
    seq: u64,
    at: Instant,
    /// Recipient (`EVERYONE` for all).
    to: ParticipantId,
    /// Who must not get it (the sender or the subject), 0 for nobody.
    skip: ParticipantId,
    frame: Bytes,
}

impl Event {
    fn for_participant(&self, p: ParticipantId) -> bool {
        (self.to == EVERYONE || self.to == p) && self.skip != p
    }

    /// What it counts against the window's bytes: its frame and [`EVENT_OVERHEAD`].
    fn cost(&self) -> usize {
        self.frame.len() + EVENT_OVERHEAD
    }
}

/// What an event holds beyond its frame's bytes: its slot in the window, the headers of the
/// frame's shared allocation (the buffer's and its reference count's) and, for a message, its
/// sender's re-send record ([`SentIds`]). Counted, so that `replay_window_bytes` bounds a
/// session's memory even when its events are a few bytes each.
const EVENT_OVERHEAD: usize = std::mem::size_of::<Event>() + 64;

/// The replay window: the latest sequenced events, bounded by bytes and age.
struct Window {
    events: VecDeque<Event>,
    /// The events' [costs](Event::cost).
    bytes: usize,
    /// The highest sequence number evicted (0: nothing yet).
    evicted_through: u64,
    max_bytes: usize,
    max_age: Duration,
}

impl Window {
    /// Keeps `event`, evicting the oldest while over the byte limit; `evicted` sees each one.
    fn push(&mut self, event: Event, mut evicted: impl FnMut(&Event)) {
        self.bytes += event.cost();
        self.events.push_back(event);
        while self.bytes > self.max_bytes {
            self.evict_one(&mut evicted);
        }
    }

    fn evict_one(&mut self, evicted: &mut impl FnMut(&Event)) {
        if let Some(e) = self.events.pop_front() {
            self.bytes -= e.cost();
            self.evicted_through = e.seq;
            evicted(&e);
        }
    }

    /// Evicts what is older than the age limit; `evicted` sees each one.
    fn prune(&mut self, now: Instant, mut evicted: impl FnMut(&Event)) {
        while self.events.front().is_some_and(|e| now.duration_since(e.at) > self.max_age) {
            self.evict_one(&mut evicted);
        }
    }
}

/// One participant's `(message_id, seq)` pairs, oldest first, for its messages still in the
/// replay window (trimmed as the window evicts them). Both rise together (a `send` is sequenced
/// only with an id above the last), so a re-send's seq is a binary search away, whatever else the
/// window holds: a participant re-sending ids the window no longer has costs a few comparisons,
/// not a scan of the window.
#[derive(Default)]
struct SentIds(VecDeque<(u64, u64)>);

impl SentIds {
    /// Records that `message_id` got `seq`, forgetting what the window evicted (through
    /// `evicted_through`).
    fn record(&mut self, message_id: u64, seq: u64, evicted_through: u64) {
        self.0.push_back((message_id, seq));
        // A message bigger than the window evicted itself as it was kept.
        self.forget_through(evicted_through);
    }

    /// The seq `message_id` got, if the window still holds it (the window's evictions trim the
    /// pairs, see [`forget_sent`]).
    fn seq_of(&self, message_id: u64) -> Option<u64> {
        let i = self.0.binary_search_by_key(&message_id, |&(id, _)| id).ok()?;
        Some(self.0[i].1)
    }

    /// Forgets the pairs of events the window no longer holds (seqs up to `evicted_through`).
    fn forget_through(&mut self, evicted_through: u64) {
        while self.0.front().is_some_and(|&(_, seq)| seq <= evicted_through) {
            self.0.pop_front();
        }
        if self.0.is_empty() && self.0.capacity() > 0 {
            // An idle participant keeps no slots.
            self.0 = VecDeque::new();
        }
    }
}

/// An event the window evicted takes its sender's `(message_id, seq)` pair with it (a sender's
/// pairs are evicted oldest first, as the window's events are).
fn forget_sent(members: &mut BTreeMap<ParticipantId, Member>, evicted: &Event) {
    if evicted.skip != 0 {
        if let Some(m) = members.get_mut(&evicted.skip) {
            m.sent.forget_through(evicted.seq);
        }
    }
}

struct Session {
    id: String,
    generation: u64,
    state: Arc<EdgeState>,
    seq: u64,
    members: BTreeMap<ParticipantId, Member>,
    pending: BTreeMap<ParticipantId, Pending>,
    settings: Settings,
    /// Settings come from the first token, then from the host's.
    configured: bool,
    window: Window,
    /// Readers found too far behind, closed and made away by [`Session::drain_slow`] once the
    /// current command is done (a worklist, so a cascade of slow readers never recurses).
    slow: Vec<ParticipantId>,
    /// Since when the host has had no connection (it starts absent).
    host_absent_since: Option<Instant>,
    last_activity: Instant,
    started_at_ms: i64,
    /// Participants that joined over the session's life (a participant that rejoins after
    /// leaving counts again; a resume or a replaced connection does not).
    joined: u32,
    messages_relayed: u64,
    bytes_relayed: u64,
    /// The deadline the timer task sleeps until.
    armed: Instant,
    /// Something the last command did may have brought the next deadline forward (a routine
    /// `send` does not, unless it started the replay window or made a slow reader away).
    deadline_moved: bool,
    /// Why the session ended, once it has.
    ended: Option<SessionEndReason>,
}

/// Starts a session (and its timer task) and returns its handle.
pub fn spawn(state: Arc<EdgeState>, id: String, generation: u64) -> SessionHandle {
    let now = Instant::now();
    let window = Window {
        events: VecDeque::new(),
        bytes: 0,
        evicted_through: 0,
        // A whole replay must fit the resuming connection's queue, with room for live traffic.
        max_bytes: state.config.replay_window_bytes.min(state.config.max_queued_bytes / 2),
        max_age: state.config.replay_window_age,
    };
    tracing::info!(session.id = %id, "session opened");
    state.link_event(EdgeMessage::SessionOpened { session_id: id.clone() });
    state.audit(AuditEvent::SessionStarted, Some(&id), None, String::new());
    let session = Session {
        id,
        generation,
        state,
        seq: 0,
        members: BTreeMap::new(),
        pending: BTreeMap::new(),
        settings: Settings::default(),
        configured: false,
        window,
        slow: Vec::new(),
        host_absent_since: Some(now),
        last_activity: now,
        started_at_ms: crate::now_ms(),
        joined: 0,
        messages_relayed: 0,
        bytes_relayed: 0,
        armed: now,
        deadline_moved: false,
        ended: None,
    };
    let shared = Arc::new(Shared { session: Mutex::new(session), ended: AtomicBool::new(false), rearm: Notify::new() });
    let handle = SessionHandle { shared, generation };
    tokio::spawn(handle.clone().run_timer());
    handle
}

impl Session {
    /// Ends the session: records its end and summary, tells the media task and the edge.
    fn finish(&mut self, reason: SessionEndReason) {
        self.ended = Some(reason);
        // Connections may hold the handle a moment longer; the replay window is not needed.
        self.window.events = VecDeque::new();
        let now = crate::now_ms();
        self.state.audit(AuditEvent::SessionEnded, Some(&self.id), None, reason.as_str().to_owned());
        self.state.outbox.push(OutboxEntry::Metrics(MetricsEntry::SessionSummary(SessionSummary {
            at_ms: now,
            session_id: self.id.clone(),
            started_at_ms: self.started_at_ms,
            participants: self.joined,
            messages_relayed: self.messages_relayed,
            bytes_relayed: self.bytes_relayed,
            end_reason: reason.as_str().to_owned(),
        })));
        if let Some(media) = &self.state.media {
            media.session_ended(self.id.as_str().into());
        }
        self.state.session_ended(&self.id, self.generation, reason);
        tracing::info!(session.id = %self.id, reason = reason.as_str(), "session ended");
    }

    /// Applies one command; `Some` ends the session.
    fn handle(&mut self, cmd: SessionCmd) -> Option<SessionEndReason> {
        match cmd {
            SessionCmd::Send { from, conn, message_id, to, payload } => {
                self.relay(from, conn, message_id, to, payload);
            }
            SessionCmd::Leave { participant_id, conn, reason } => {
                self.leave(participant_id, conn, reason);
            }
            SessionCmd::EndByHost { from, conn } => {
                self.refuse_waiting(from, conn, "only the host can end the session");
                if self.is_connected(from, conn) {
                    if self.members[&from].info.role == Role::Host {
                        self.end(SessionEndReason::EndedByHost, CloseCode::EndedByHost);
                        return Some(SessionEndReason::EndedByHost);
                    }
                    self.error(from, error_code::NOT_HOST, "only the host can end the session");
                }
            }
            SessionCmd::Admit { from, conn, participant_id, admit } => {
                self.refuse_waiting(from, conn, "only the host can admit guests");
                if self.is_connected(from, conn) {
                    self.admit(from, participant_id, admit);
                }
            }
            SessionCmd::Media { from, conn, signal } => self.media(from, conn, signal),
            SessionCmd::End { reason, code } => {
                self.end(reason, code);
                return Some(reason);
            }
        }
        None
    }

    fn media(&mut self, from: ParticipantId, conn: ConnId, signal: crate::media::Signal) {
        if self.pending.get(&from).is_some_and(|p| p.link.id == conn) {
            let message = "no media before the host admits you";
            let err = EdgeFrame::Error { code: error_code::MEDIA_UNAVAILABLE, message: message.into() };
            if let Ok(bytes) = err.encode() {
                let _ = self.pending[&from].link.writer.send(bytes);
            }
            return;
        }
        if !self.is_connected(from, conn) {
            return;
        }
        let Some(media) = &self.state.media else {
            return self.error(from, error_code::MEDIA_UNAVAILABLE, "media is off on this edge");
        };
        let m = &self.members[&from];
        let writer = m.link.as_ref().expect("connected").writer.clone();
        match media.signal(self.id.as_str().into(), from, m.info.user_id.clone(), writer, signal) {
            Ok(()) => {}
            Err(crate::media::SignalRefused::Busy) => {
                self.error(from, error_code::MEDIA_REJECTED, "the edge's media is busy: send it again")
            }
            Err(crate::media::SignalRefused::Down) => {
                self.error(from, error_code::MEDIA_UNAVAILABLE, "media failed on this edge")
            }
        }
    }

    /// Points the participant's media signalling at its current connection (after a resume or a
    /// second join; the media connection itself does not depend on the websocket).
    fn media_writer_changed(&self, id: ParticipantId) {
        if let (Some(media), Some(link)) = (&self.state.media, self.members.get(&id).and_then(|m| m.link.as_ref())) {
            if link.version >= duet_proto::session::MEDIA_PROTOCOL_VERSION {
                media.writer_changed(self.id.as_str().into(), id, link.writer.clone());
            } else {
                // Back with a version without media: its media connection ends (it could not
                // be told anything about it).
                media.participant_gone(self.id.as_str().into(), id);
            }
        }
    }

    /// Answers a host-only command from a guest still waiting for approval with `error` 3.
    fn refuse_waiting(&self, from: ParticipantId, conn: ConnId, message: &str) {
        if let Some(p) = self.pending.get(&from).filter(|p| p.link.id == conn) {
            let err = EdgeFrame::Error { code: error_code::NOT_HOST, message: message.to_owned() };
            if let Ok(bytes) = err.encode() {
                let _ = p.link.writer.send(bytes);
            }
        }
    }

    /// The next moment a timer matters: the idle timeout, the host's grace, an away guest's.
    fn next_deadline(&self) -> Instant {
        let config = &self.state.config;
        let mut deadline = self.last_activity + config.session_idle_timeout;
        if let Some(since) = self.host_absent_since {
            deadline = deadline.min(since + config.host_grace);
        }
        for m in self.members.values() {
            if let (Some(since), Role::Guest) = (m.away_since, m.info.role) {
                deadline = deadline.min(since + config.replay_window_age);
            }
        }
        if let Some(front) = self.window.events.front() {
            deadline = deadline.min(front.at + self.window.max_age + Duration::from_millis(1));
        }
        deadline
    }

    fn on_timer(&mut self) -> Option<SessionEndReason> {
        let now = Instant::now();
        let config = &self.state.config;
        let members = &mut self.members;
        self.window.prune(now, |e| forget_sent(members, e));
        // A call with audio or video but no messages is not idle.
        if self.state.media.as_ref().is_some_and(|m| m.session_has_media(&self.id)) {
            self.last_activity = now;
        }
        if now >= self.last_activity + config.session_idle_timeout {
            self.end(SessionEndReason::Idle, CloseCode::SessionIdle);
            return Some(SessionEndReason::Idle);
        }
        if self.host_absent_since.is_some_and(|since| now >= since + config.host_grace) {
            self.end(SessionEndReason::HostGone, CloseCode::HostGone);
            return Some(SessionEndReason::HostGone);
        }
        let grace = config.replay_window_age;
        let expired: Vec<ParticipantId> = self
            .members
            .iter()
            .filter(|(_, m)| m.info.role == Role::Guest && m.away_since.is_some_and(|since| now >= since + grace))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.release(id, LeaveReason::Disconnected, "did not resume in time");
        }
        None
    }

    fn is_connected(&self, id: ParticipantId, conn: ConnId) -> bool {
        self.members.get(&id).and_then(|m| m.link.as_ref()).is_some_and(|l| l.id == conn)
    }

    fn max_participants(&self) -> usize {
        let edge = self.state.config.max_participants as usize;
        match self.settings.max_participants {
            Some(n) => edge.min(n as usize),
            None => edge,
        }
    }

    fn join(&mut self, participant: Participant, settings: Settings, link: Link) -> Result<(), CloseCode> {
        if participant.role == Role::Host || !self.configured {
            self.settings = settings;
            self.configured = true;
        }
        let id = participant.id;
        if self.members.contains_key(&id) {
            return self.rejoin(participant, link);
        }
        if let Some(old) = self.pending.remove(&id) {
            // A waiting guest connected again: the new connection waits instead.
            old.link.close(CloseCode::Replaced);
        } else if self.members.len() + self.pending.len() >= self.max_participants() {
            let detail = format!("session full ({} participants)", self.max_participants());
            self.state.audit(AuditEvent::ParticipantRefused, Some(&self.id), Some(&participant), detail);
            return Err(CloseCode::SessionFull);
        }
        if self.settings.approval && participant.role == Role::Guest {
            link.writer.send(encode(&EdgeFrame::Waiting)?).map_err(|_| CloseCode::SlowReader)?;
            self.state.audit(AuditEvent::AdmissionRequested, Some(&self.id), Some(&participant), String::new());
            if let Some(host) = self.connected_host() {
                self.deliver_one(host, &EdgeFrame::JoinRequest { participant: participant.clone() });
            }
            self.pending.insert(id, Pending { info: participant, link });
            return Ok(());
        }
        self.admit_member(participant, link)
    }

    /// A participant that holds a place joined again with a token: its new connection replaces
    /// the old one (closed with 4201) and it gets a fresh welcome.
    fn rejoin(&mut self, participant: Participant, link: Link) -> Result<(), CloseCode> {
        let id = participant.id;
        let secret = self.members[&id].secret;
        let welcome = welcome_frame(link.version, id, self.seq, &secret, &self.members);
        link.writer.send(welcome).map_err(|_| CloseCode::SlowReader)?;
        let m = self.members.get_mut(&id).expect("checked by the caller");
        if let Some(old) = m.link.replace(link) {
            old.close(CloseCode::Replaced);
        }
        let was_away = m.away_since.take().is_some();
        let info = m.info.clone();
        self.media_writer_changed(id);
        self.state.audit(
            AuditEvent::ParticipantJoined,
            Some(&self.id),
            Some(&info),
            "joined again (replaced its earlier connection)".to_owned(),
        );
        if was_away {
            self.came_back(id);
        } else if info.role == Role::Host {
            // A new connection of a connected host: it has not seen the pending requests.
            self.send_join_requests(id);
        }
        Ok(())
    }

    fn admit_member(&mut self, participant: Participant, link: Link) -> Result<(), CloseCode> {
        let id = participant.id;
        let secret: [u8; 32] = rand::random();
        let member = Member {
            info: participant.clone(),
            secret,
            link: None,
            away_since: None,
            last_message_id: 0,
            sent: SentIds::default(),
            joined_after: self.seq,
        };
        self.members.insert(id, member);
        let welcome = welcome_frame(link.version, id, self.seq, &secret, &self.members);
        if link.writer.send(welcome).is_err() {
            self.members.remove(&id);
            return Err(CloseCode::SlowReader);
        }
        self.members.get_mut(&id).expect("just inserted").link = Some(link);
        let detail = participant.role.as_str().to_owned();
        self.state.audit(AuditEvent::ParticipantJoined, Some(&self.id), Some(&participant), detail);
        self.joined = self.joined.saturating_add(1);
        let host = participant.role == Role::Host;
        if host {
            self.host_absent_since = None;
        }
        self.sequence(EdgeFrame::ParticipantJoined { seq: self.seq + 1, participant }, EVERYONE, id, Instant::now());
        if host {
            self.send_join_requests(id);
        }
        Ok(())
    }

    fn resume(&mut self, id: ParticipantId, secret: &[u8], last_seq: u64, link: Link) -> Result<(), CloseCode> {
        let Some(m) = self.members.get(&id) else { return Err(CloseCode::ResumeRefused) };
        if !bool::from(m.secret.ct_eq(secret)) || last_seq > self.seq {
            return Err(CloseCode::ResumeRefused);
        }
        // Nothing from before the participant's own join, whatever `last_seq` says.
        let last_seq = last_seq.max(m.joined_after);
        let members = &mut self.members;
        self.window.prune(Instant::now(), |e| forget_sent(members, e));
        if last_seq < self.window.evicted_through {
            tracing::info!(session.id = %self.id, participant.id = id, last_seq, evicted_through = self.window.evicted_through, "resume outside the replay window");
            return Err(CloseCode::ResyncNeeded);
        }
        let missed: Vec<Bytes> = self
            .window
            .events
            .iter()
            .filter(|e| e.seq > last_seq && e.for_participant(id))
            .map(|e| e.frame.clone())
            .collect();
        let resumed = encode(&EdgeFrame::Resumed { seq: self.seq, replayed: missed.len() as u32 })?;
        link.writer.send(resumed).map_err(|_| CloseCode::SlowReader)?;
        for frame in &missed {
            link.writer.send(frame.clone()).map_err(|_| CloseCode::SlowReader)?;
        }
        let m = self.members.get_mut(&id).expect("checked above");
        if let Some(old) = m.link.replace(link) {
            old.close(CloseCode::Replaced);
        }
        let was_away = m.away_since.take().is_some();
        let info = m.info.clone();
        self.media_writer_changed(id);
        let detail = format!("resumed after seq {last_seq}, {} events replayed", missed.len());
        self.state.audit(AuditEvent::ParticipantResumed, Some(&self.id), Some(&info), detail);
        if was_away {
            self.came_back(id);
        } else if info.role == Role::Host {
            self.send_join_requests(id);
        }
        Ok(())
    }

    /// Tells the others that `id` is connected again.
    fn came_back(&mut self, id: ParticipantId) {
        let host = self.members[&id].info.role == Role::Host;
        if host {
            self.host_absent_since = None;
        }
        self.sequence(
            EdgeFrame::ParticipantBack { seq: self.seq + 1, participant_id: id },
            EVERYONE,
            id,
            Instant::now(),
        );
        if host {
            self.send_join_requests(id);
        }
    }

    fn connected_host(&self) -> Option<ParticipantId> {
        self.members.iter().find(|(_, m)| m.info.role == Role::Host && m.link.is_some()).map(|(id, _)| *id)
    }

    /// Sends the host every pending join request (when it connects).
    fn send_join_requests(&mut self, host: ParticipantId) {
        let requests: Vec<EdgeFrame> =
            self.pending.values().map(|p| EdgeFrame::JoinRequest { participant: p.info.clone() }).collect();
        for frame in requests {
            self.deliver_one(host, &frame);
        }
    }

    fn admit(&mut self, host: ParticipantId, id: ParticipantId, admit: bool) {
        if self.members[&host].info.role != Role::Host {
            return self.error(host, error_code::NOT_HOST, "only the host can admit guests");
        }
        let Some(p) = self.pending.remove(&id) else {
            return self.error(host, error_code::NOT_WAITING, &format!("participant {id} is not waiting"));
        };
        if admit {
            self.state.audit(AuditEvent::ParticipantAdmitted, Some(&self.id), Some(&p.info), String::new());
            let link_for_refusal = (p.link.writer.clone(), p.link.kick.clone());
            if let Err(code) = self.admit_member(p.info, p.link) {
                link_for_refusal.0.close(code.code(), code.name());
                link_for_refusal.1.cancel();
            }
        } else {
            self.state.audit(AuditEvent::ParticipantRefused, Some(&self.id), Some(&p.info), "by the host".into());
            p.link.close(CloseCode::NotAdmitted);
        }
    }

    fn leave(&mut self, id: ParticipantId, conn: ConnId, reason: LeaveReason) {
        if self.pending.get(&id).is_some_and(|p| p.link.id == conn) {
            let p = self.pending.remove(&id).expect("checked");
            let detail = "left before being admitted".to_owned();
            self.state.audit(AuditEvent::ParticipantLeft, Some(&self.id), Some(&p.info), detail);
            return;
        }
        if !self.is_connected(id, conn) {
            return;
        }
        match reason {
            LeaveReason::Disconnected => self.go_away(id, "connection lost"),
            LeaveReason::Left => self.release(id, LeaveReason::Left, "left"),
            LeaveReason::Removed => self.release(id, LeaveReason::Removed, "removed (protocol error)"),
        }
    }

    /// `id`'s connection is gone; it keeps its place and may resume.
    fn go_away(&mut self, id: ParticipantId, why: &str) {
        let Some(m) = self.members.get_mut(&id) else { return };
        if let Some(link) = m.link.take() {
            link.kick.cancel();
        }
        m.away_since = Some(Instant::now());
        self.deadline_moved = true;
        let info = m.info.clone();
        if info.role == Role::Host {
            self.host_absent_since = Some(Instant::now());
        }
        self.state.audit(AuditEvent::ParticipantAway, Some(&self.id), Some(&info), why.to_owned());
        self.sequence(
            EdgeFrame::ParticipantAway { seq: self.seq + 1, participant_id: id },
            EVERYONE,
            id,
            Instant::now(),
        );
    }

    /// `id` gives up its place.
    fn release(&mut self, id: ParticipantId, reason: LeaveReason, detail: &str) {
        let Some(m) = self.members.remove(&id) else { return };
        if let Some(media) = &self.state.media {
            media.participant_gone(self.id.as_str().into(), id);
        }
        if let Some(link) = &m.link {
            link.kick.cancel();
        }
        if m.info.role == Role::Host && self.host_absent_since.is_none() {
            self.host_absent_since = Some(Instant::now());
        }
        self.state.audit(AuditEvent::ParticipantLeft, Some(&self.id), Some(&m.info), detail.to_owned());
        let frame = EdgeFrame::ParticipantLeft { seq: self.seq + 1, participant_id: id, reason };
        self.sequence(frame, EVERYONE, 0, Instant::now());
    }

    fn end(&mut self, reason: SessionEndReason, code: CloseCode) {
        let detail = format!("session ended ({})", reason.as_str());
        for (_, m) in std::mem::take(&mut self.members) {
            if let Some(link) = &m.link {
                link.close(code);
            }
            self.state.audit(AuditEvent::ParticipantLeft, Some(&self.id), Some(&m.info), detail.clone());
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            p.link.close(CloseCode::NotAdmitted);
        }
    }

    fn relay(&mut self, from: ParticipantId, conn: ConnId, message_id: u64, to: ParticipantId, payload: Bytes) {
        if !self.is_connected(from, conn) {
            if self.pending.get(&from).is_some_and(|p| p.link.id == conn) {
                let err = EdgeFrame::Error {
                    code: error_code::NOT_ADMITTED,
                    message: "waiting for the host's approval".into(),
                };
                if let Ok(bytes) = err.encode() {
                    let _ = self.pending[&from].link.writer.send(bytes);
                }
            }
            // Otherwise a stale connection of a replaced participant: it cannot speak for it.
            return;
        }
        if message_id != 0 && message_id <= self.members[&from].last_message_id {
            // A re-send after a resume: acknowledged with the seq it got the first time (0: no
            // longer known).
            let seq = self.members.get(&from).and_then(|m| m.sent.seq_of(message_id)).unwrap_or(0);
            self.deliver_one(from, &EdgeFrame::Ack { message_id, seq });
            return;
        }
        if to == from {
            return self.error(from, error_code::SELF_ADDRESSED, "a message cannot be addressed to its sender");
        }
        if to != EVERYONE && !self.members.contains_key(&to) {
            return self.error(
                from,
                error_code::UNKNOWN_PARTICIPANT,
                &format!("participant {to} is not in the session"),
            );
        }
        let now = Instant::now();
        self.last_activity = now;
        let recipients = if to == EVERYONE { self.members.len().saturating_sub(1) } else { 1 } as u64;
        let bytes = payload.len() as u64 * recipients;
        self.messages_relayed += 1;
        self.bytes_relayed += bytes;
        self.state.count_relayed(1, bytes);
        let seq = self.seq + 1;
        self.sequence(EdgeFrame::Message { seq, from, to, payload }, to, from, now);
        if message_id != 0 && self.seq == seq {
            let evicted_through = self.window.evicted_through;
            if let Some(m) = self.members.get_mut(&from) {
                m.last_message_id = message_id;
                m.sent.record(message_id, seq, evicted_through);
            }
            self.deliver_one(from, &EdgeFrame::Ack { message_id, seq });
        }
    }

    fn error(&mut self, to: ParticipantId, code: u16, message: &str) {
        self.deliver_one(to, &EdgeFrame::Error { code, message: message.to_owned() });
    }

    /// Gives `frame` (whose seq must be `self.seq + 1`) its number, keeps it for replay and
    /// delivers it to every connected recipient; readers too far behind become away.
    /// `at` is the event's time for the window's age limit (a `send` passes the instant it already
    /// read, one clock read per message less).
    fn sequence(&mut self, frame: EdgeFrame, to: ParticipantId, skip: ParticipantId, at: Instant) {
        let Ok(bytes) = frame.encode() else { return };
        self.seq += 1;
        if self.window.events.is_empty() {
            // The window's age limit is a deadline now.
            self.deadline_moved = true;
        }
        let event = Event { seq: self.seq, at, to, skip, frame: bytes.clone() };
        let members = &mut self.members;
        self.window.push(event, |e| forget_sent(members, e));
        let mut slow = Vec::new();
        if to == EVERYONE {
            for (id, m) in &self.members {
                if *id == skip {
                    continue;
                }
                if let Some(link) = &m.link {
                    if let Err(SendError::Full) = link.writer.send(bytes.clone()) {
                        close_slow(link);
                        slow.push(*id);
                    }
                }
            }
        } else if let Some(link) = self.members.get(&to).and_then(|m| m.link.as_ref()) {
            if let Err(SendError::Full) = link.writer.send(bytes) {
                close_slow(link);
                slow.push(to);
            }
        }
        self.slow.extend(slow);
    }

    /// Sends an unsequenced frame (ack, error, join request) to one connected participant.
    fn deliver_one(&mut self, to: ParticipantId, frame: &EdgeFrame) {
        let Ok(bytes) = frame.encode() else { return };
        if let Some(link) = self.members.get(&to).and_then(|m| m.link.as_ref()) {
            if let Err(SendError::Full) = link.writer.send(bytes) {
                close_slow(link);
                self.slow.push(to);
            }
        }
    }

    /// Closes every reader found too far behind with 4300; each becomes away and may resume.
    /// Telling the others can find more slow readers, which join the worklist.
    fn drain_slow(&mut self) {
        while let Some(id) = self.slow.pop() {
            let Some(link) = self.members.get(&id).and_then(|m| m.link.as_ref()) else { continue };
            tracing::warn!(session.id = %self.id, participant.id = id, queued = link.writer.queued_bytes(), "slow reader closed");
            self.go_away(id, "slow reader (closed with 4300)");
        }
    }
}

/// Closes a reader whose queue is full at once (4300), so that nothing sequenced later reaches it
/// before the close: what it received stays a prefix of its stream, which a resume continues.
fn close_slow(link: &Link) {
    link.writer.close(CloseCode::SlowReader.code(), CloseCode::SlowReader.name());
}

fn encode(frame: &EdgeFrame) -> Result<Bytes, CloseCode> {
    frame.encode().map_err(|_| CloseCode::Internal)
}

/// `welcome` for `id`: every member (away ones listed in `away`) and the session's latest seq.
fn welcome_frame(
    version: u8,
    id: ParticipantId,
    seq: u64,
    secret: &[u8; 32],
    members: &BTreeMap<ParticipantId, Member>,
) -> Bytes {
    let frame = EdgeFrame::Welcome {
        version,
        participant_id: id,
        seq,
        resume_secret: Bytes::copy_from_slice(secret),
        participants: members.values().map(|m| m.info.clone()).collect(),
        away: members.iter().filter(|(p, m)| **p != id && m.link.is_none()).map(|(p, _)| *p).collect(),
    };
    frame.encode().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use duet_ws::{Limits, Message};

    const LIMITS: Limits = Limits { max_message_bytes: 1 << 16, max_queued_bytes: 1 << 20 };

    /// A connection to `session` through an in-memory pipe: its link, and the client's reader.
    fn pipe(id: ConnId) -> (Link, duet_ws::Reader<tokio::io::DuplexStream>) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = duet_ws::split(server_io, duet_ws::Role::Server, LIMITS);
        let client = duet_ws::split(client_io, duet_ws::Role::Client, LIMITS);
        let link = Link {
            id,
            writer: server.writer().clone(),
            kick: CancellationToken::new(),
            version: duet_proto::session::SESSION_PROTOCOL_VERSION,
        };
        // The server side's reader is not needed (the session only writes); keep it open.
        tokio::spawn(async move {
            let mut server = server;
            while server.next().await.is_ok() {}
        });
        (link, client)
    }

    async fn next_frame(client: &mut duet_ws::Reader<tokio::io::DuplexStream>) -> EdgeFrame {
        match client.next().await.expect("a frame") {
            Message::Binary(bytes) => EdgeFrame::decode(&bytes).expect("a valid frame"),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn participant(id: ParticipantId, role: Role) -> Participant {
        Participant { id, role, user_id: format!("u{id}"), display_name: format!("p{id}") }
    }

    /// A guest whose connection drops is released exactly when its grace (`replay_window_age`)
    /// is over, although the session's timer was asleep until the idle timeout, an hour later:
    /// going away brings the deadline forward and wakes the timer. On paused time, through
    /// in-memory pipes.
    #[tokio::test]
    async fn an_away_guest_is_released_when_its_grace_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::EdgeConfig::new("http://127.0.0.1:9", "0123456789abcdef0123", dir.path().into());
        config.replay_window_age = Duration::from_secs(2);
        config.session_idle_timeout = Duration::from_secs(3600);
        config.host_grace = Duration::from_secs(3600);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let edge = crate::start(config, listener, shutdown.clone()).await.unwrap();
        edge.state.outbox.flush().await.unwrap();
        tokio::time::pause();

        let session = spawn(edge.state.clone(), "s_grace".into(), 1);
        let (host_link, mut host) = pipe(1);
        session.join(participant(1, Role::Host), Settings::default(), host_link).unwrap().unwrap();
        assert!(matches!(next_frame(&mut host).await, EdgeFrame::Welcome { .. }));
        let (guest_link, _guest) = pipe(2);
        session.join(participant(2, Role::Guest), Settings::default(), guest_link).unwrap().unwrap();
        assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantJoined { .. }));
        // Once the window's events are older than its age they are pruned, and the timer sleeps
        // until the idle timeout, an hour away.
        tokio::time::sleep(Duration::from_secs(4)).await;

        session.apply(SessionCmd::Leave { participant_id: 2, conn: 2, reason: LeaveReason::Disconnected }).unwrap();
        let away_at = Instant::now();
        assert!(matches!(next_frame(&mut host).await, EdgeFrame::ParticipantAway { participant_id: 2, .. }));
        let released = tokio::time::timeout(Duration::from_secs(60), next_frame(&mut host)).await;
        match released.expect("the guest released within a minute") {
            EdgeFrame::ParticipantLeft { participant_id: 2, reason: LeaveReason::Disconnected, .. } => {}
            other => panic!("expected the guest's release, got {other:?}"),
        }
        let waited = away_at.elapsed();
        assert!(waited >= Duration::from_secs(2), "released early, after {waited:?}");
        assert!(waited < Duration::from_secs(3), "released late, after {waited:?}");

        // The host leaving ends the session; it is gone for good.
        session.apply(SessionCmd::Leave { participant_id: 1, conn: 1, reason: LeaveReason::Left }).unwrap();
        assert!(session.is_ended());
        assert_eq!(
            session.apply(SessionCmd::End { reason: SessionEndReason::Empty, code: CloseCode::SessionEnded }),
            Err(Ended)
        );
        shutdown.cancel();
        edge.wait().await;
    }

    fn event(seq: u64, to: ParticipantId, skip: ParticipantId, len: usize) -> Event {
        Event { seq, at: Instant::now(), to, skip, frame: Bytes::from(vec![0u8; len]) }
    }

    /// The window forgets by size and by age (on paused time), and remembers what it evicted, so
    /// a resume from before it is told to resync.
    #[tokio::test(start_paused = true)]
    async fn the_window_is_bounded_by_bytes_and_age() {
        let cost = |len: usize| len + EVENT_OVERHEAD;
        let mut w = Window {
            events: VecDeque::new(),
            bytes: 0,
            evicted_through: 0,
            max_bytes: 10 * cost(100),
            max_age: Duration::from_secs(60),
        };
        for seq in 1..=10 {
            w.push(event(seq, EVERYONE, 1, 100), |_| {});
        }
        assert_eq!((w.events.len(), w.bytes, w.evicted_through), (10, 10 * cost(100), 0));
        // A bigger event evicts as many of the oldest as it takes to fit.
        let mut gone = Vec::new();
        w.push(event(11, EVERYONE, 1, 250), |e| gone.push(e.seq));
        let evicted = cost(250).div_ceil(cost(100));
        assert_eq!(gone, (1..=evicted as u64).collect::<Vec<_>>(), "the oldest, in order");
        assert_eq!(
            (w.events.len(), w.bytes, w.evicted_through),
            (11 - evicted, (10 - evicted) * cost(100) + cost(250), evicted as u64)
        );

        w.max_bytes = usize::MAX;
        tokio::time::advance(Duration::from_secs(30)).await;
        w.push(event(12, 2, 1, 10), |_| {});
        w.prune(Instant::now(), |_| {});
        assert_eq!(w.evicted_through, evicted as u64, "nothing is 60 s old yet");
        tokio::time::advance(Duration::from_secs(31)).await;
        w.prune(Instant::now(), |_| {});
        assert_eq!((w.events.len(), w.evicted_through, w.bytes), (1, 11, cost(10)), "only the younger event is left");
        assert!(w.events[0].for_participant(2));
        assert!(!w.events[0].for_participant(1), "the sender's own message is not replayed to it");
        assert!(!w.events[0].for_participant(3), "a direct message is only for its recipient");
    }

    /// Tiny events count their bookkeeping too: the window's bytes bound its memory.
    #[test]
    fn a_window_of_tiny_events_holds_no_more_than_its_bytes() {
        let max_bytes = 64 << 10;
        let mut w = Window {
            events: VecDeque::new(),
            bytes: 0,
            evicted_through: 0,
            max_bytes,
            max_age: Duration::from_secs(60),
        };
        for seq in 1..=10_000 {
            w.push(event(seq, EVERYONE, 1, 1), |_| {});
        }
        assert!(w.bytes <= max_bytes);
        assert_eq!(w.events.len(), max_bytes / (1 + EVENT_OVERHEAD));
        assert!(w.events.len() * std::mem::size_of::<Event>() < max_bytes);
    }

    /// A re-send's seq comes from its sender's own ids, forgotten as the window evicts them.
    #[test]
    fn a_resend_finds_its_seq_until_the_window_evicts_it() {
        let mut sent = SentIds::default();
        // Ids 1, 2, 4 and 7 sequenced between other participants' events.
        for (id, seq) in [(1, 3), (2, 5), (4, 9), (7, 20)] {
            sent.record(id, seq, 0);
        }
        assert_eq!(sent.seq_of(4), Some(9));
        assert_eq!(sent.seq_of(7), Some(20));
        assert_eq!(sent.seq_of(3), None, "an id that was never sequenced");
        // The window evicts through seq 5.
        sent.forget_through(5);
        assert_eq!(sent.seq_of(2), None, "seq 5 was evicted");
        assert_eq!(sent.seq_of(1), None, "forgotten with it");
        assert_eq!(sent.seq_of(4), Some(9));
        sent.record(8, 21, 20);
        assert_eq!(sent.0.len(), 1, "what the window evicted is not kept");
        sent.record(9, 22, 22);
        assert_eq!(sent.seq_of(8), None, "a message that evicted itself is not kept either");
        assert_eq!(sent.0.capacity(), 0, "an emptied record holds no slots");
    }
}
