//! The media task: every peer's str0m state, the UDP socket and the ICE-TCP connections.
//!
//! The loop waits for the next datagram, command, TCP frame or peer timeout; feeds the input to
//! the one peer it belongs to; then polls every peer it touched until each is idle, sending its
//! datagrams and acting on its events. Events that concern other peers (media to forward, a
//! keyframe request for a publisher, a new or ended track) are collected first and applied after,
//! so no two peers are ever borrowed at once.
//!
//! Negotiation: the client offers its own tracks (`media_offer`, answered at once); the edge
//! offers the others' tracks (`media_offer` from the edge, one outstanding per peer, answered by
//! `media_answer` with its `offer_id`). A client offer that arrives while an edge offer is
//! outstanding wins: the edge forgets its offer, answers, and offers again afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use duet_proto::outbox::AuditEvent;
use duet_proto::session::{error_code, EdgeFrame, MediaCloseReason, ParticipantId, TrackSource, MAX_SDP_BYTES};
use duet_ws::Writer;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tcp::{self, TcpEvent};
use super::{AuditFn, Command, MediaStats, Signal};

/// A UDP datagram is at most this large (WebRTC keeps packets under the path MTU, ~1200 bytes).
const DATAGRAM_MAX: usize = 2048;
/// Datagrams read in one go before the touched peers are polled.
const READ_BATCH: usize = 64;
/// Keyframe requests to one publisher's track at most this often (a burst of new subscribers or
/// of lost packets asks once).
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// How often str0m reports per-stream statistics (packets lost).
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// m-lines one offer may hold: a full session's tracks (50 participants, three each) with room to
/// spare. Parsing and applying an offer costs about 50 µs per m-line, so this bounds one offer
/// to ~15 ms of the media task.
const MAX_M_LINES: usize = 300;
/// A mid is a short token (RFC 8843 recommends at most 16 characters; browsers use numbers).
const MAX_MID_BYTES: usize = 32;
/// The longest the loop sleeps without a peer timeout (no peers: only commands wake it).
const IDLE_WAKE: Duration = Duration::from_secs(5);

type PeerKey = (Arc<str>, ParticipantId);

pub struct Setup {
    pub socket: UdpSocket,
    pub tcp: Option<TcpListener>,
    pub candidates: Arc<[SocketAddr]>,
    pub tcp_port: Option<u16>,
    pub max_tracks: usize,
    pub stats: Arc<MediaStats>,
    pub audit: AuditFn,
    /// Signalling bytes queued (given back as each signal is taken).
    pub queued: Arc<AtomicUsize>,
    /// Media connections per session (read by the sessions' idle timeout).
    pub active: Arc<DashMap<Arc<str>, u32>>,
}

pub struct Engine {
    setup: Setup,
    /// One DTLS certificate for every peer (generating one per peer costs an EC key each time).
    cert: DtlsCert,
    peers: HashMap<PeerKey, Peer>,
    /// Which peer a remote address (and transport) belongs to, learnt from `Rtc::accepts`.
    by_addr: HashMap<(Protocol, SocketAddr), PeerKey>,
    sessions: HashMap<Arc<str>, SessionMedia>,
    /// Write queues of open ICE-TCP connections by remote address.
    tcp_conns: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    /// Peers touched since the last poll.
    dirty: HashSet<PeerKey>,
    /// Peers to close after this turn, with the reason.
    closing: Vec<(PeerKey, MediaCloseReason)>,
    /// `track_publish` declarations of participants that have not offered yet (the protocol lets
    /// them come first); taken by the peer their first offer creates, dropped when they leave.
    early: HashMap<PeerKey, HashMap<String, TrackSource>>,
}

/// The tracks published in one session.
#[derive(Default)]
struct SessionMedia {
    tracks: BTreeMap<u32, Track>,
    next_track_id: u32,
    peers: HashSet<ParticipantId>,
}

#[derive(Clone)]
struct Track {
    publisher: ParticipantId,
    /// The mid on the publisher's connection.
    mid: Mid,
    kind: MediaKind,
    source: TrackSource,
    muted: bool,
}

struct TrackIn {
    track_id: u32,
    mid: Mid,
    last_keyframe_request: Option<Instant>,
    /// The simulcast layer forwarded (the first one seen; none without simulcast).
    rid: Option<Rid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

struct TrackOut {
    track_id: u32,
    state: OutState,
}

impl TrackOut {
    fn mid(&self) -> Option<Mid> {
        match self.state {
            OutState::ToOpen => None,
            OutState::Negotiating(m) | OutState::Open(m) | OutState::ToStop(m) | OutState::NegotiatingStop(m) => {
                Some(m)
            }
        }
    }
}

struct Peer {
    user_id: String,
    rtc: Rtc,
    writer: Writer,
    pending: Option<(u32, SdpPendingOffer)>,
    /// The outstanding offer's SDP, sent again if the participant's websocket is replaced (the
    /// first copy may have died with the old one).
    pending_sdp: Option<String>,
    next_offer_id: u32,
    tracks_in: Vec<TrackIn>,
    tracks_out: Vec<TrackOut>,
    /// Sources declared by `track_publish` for mids (before or after their track appears).
    declared: HashMap<String, TrackSource>,
    /// Mutes declared before the track appeared.
    muted: HashMap<String, bool>,
    next_timeout: Instant,
    /// Packets counted at the last statistics report, per mid (for the loss estimate).
    stats_packets: HashMap<Mid, u64>,
    packets_in: u64,
    packets_out: u64,
    opened: Instant,
    #[cfg(any(test, feature = "test-hooks"))]
    panic_next: bool,
}

/// What one peer's events ask of the others.
enum Propagate {
    Media { from: PeerKey, data: Box<MediaData> },
    Keyframe { session: Arc<str>, publisher: ParticipantId, mid: Mid, rid: Option<Rid>, kind: KeyframeRequestKind },
    TrackAdded { session: Arc<str>, track_id: u32 },
    TrackRemoved { session: Arc<str>, track_id: u32 },
}

/// Runs `f` on one peer's state; a panic inside becomes `Err` and is counted.
fn shielded<T>(stats: &MediaStats, f: impl FnOnce() -> T) -> Result<T, ()> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        stats.peer_panics.fetch_add(1, Ordering::Relaxed);
    })
}

/// RTP (not RTCP, STUN or DTLS): RFC 7983's first-byte range 128..=191, and a second byte outside
/// RTCP's packet types 192..=223 (with the marker bit masked, 64..=95).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && (128..=191).contains(&packet[0]) && !(64..=95).contains(&(packet[1] & 0x7f))
}

fn send_frame(writer: &Writer, frame: &EdgeFrame) {
    match frame.encode() {
        Ok(bytes) => {
            let _ = writer.send(bytes);
        }
        Err(e) => tracing::warn!(error = %e, "media frame not encodable"),
    }
}

fn send_error(writer: &Writer, code: u16, message: &str) {
    send_frame(writer, &EdgeFrame::Error { code, message: message.to_owned() });
}

impl Engine {
    pub fn new(setup: Setup) -> Result<Engine, String> {
        let provider = str0m::crypto::from_feature_flags();
        let cert =
            provider.dtls_provider.generate_certificate().ok_or_else(|| "no certificate generated".to_owned())?;
        Ok(Engine {
            setup,
            cert,
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            sessions: HashMap::new(),
            tcp_conns: HashMap::new(),
            dirty: HashSet::new(),
            closing: Vec::new(),
            early: HashMap::new(),
        })
    }

    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        let (tcp_tx, mut tcp_rx) = mpsc::channel::<TcpEvent>(1024);
        if let Some(listener) = self.setup.tcp.take() {
            tasks.spawn(tcp::accept(listener, tcp_tx.clone(), shutdown.clone(), tasks.clone()));
        }
        drop(tcp_tx);
        let mut tcp_open = self.setup.tcp_port.is_some();
        let mut buf = vec![0u8; DATAGRAM_MAX];
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                r = self.setup.socket.recv_from(&mut buf) => {
                    match r {
                        Ok((n, from)) => self.datagram(Protocol::Udp, from, &buf[..n]),
                        Err(e) => tracing::debug!(error = %e, "media socket read failed"),
                    }
                    for _ in 1..READ_BATCH {
                        match self.setup.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => self.datagram(Protocol::Udp, from, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                ev = tcp_rx.recv(), if tcp_open => match ev {
                    Some(TcpEvent::Opened { from, tx }) => { self.tcp_conns.insert(from, tx); }
                    Some(TcpEvent::Packet { from, data }) => self.datagram(Protocol::Tcp, from, &data),
                    Some(TcpEvent::Closed { from }) => {
                        self.tcp_conns.remove(&from);
                        self.by_addr.remove(&(Protocol::Tcp, from));
                    }
                    None => tcp_open = false,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            self.timeouts();
            self.flush();
        }
        let keys: Vec<PeerKey> = self.peers.keys().cloned().collect();
        for key in keys {
            self.close_peer(&key, MediaCloseReason::Stopped);
        }
        self.flush();
    }

    fn next_deadline(&self) -> Instant {
        let idle = Instant::now() + IDLE_WAKE;
        self.peers.values().map(|p| p.next_timeout).min().map_or(idle, |t| t.min(idle))
    }

    /// Drives every peer whose timer is due.
    fn timeouts(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerKey> =
            self.peers.iter().filter(|(_, p)| p.next_timeout <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            self.input(&key, Input::Timeout(now));
        }
    }

    fn datagram(&mut self, proto: Protocol, from: SocketAddr, data: &[u8]) {
        let Ok(contents) = data.try_into() else {
            self.setup.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let destination = self.local_for(proto, from);
        let input = Input::Receive(Instant::now(), Receive { proto, source: from, destination, contents });
        let stats = &self.setup.stats;
        let accepts = |p: &Peer| shielded(stats, || p.rtc.accepts(&input)).unwrap_or(false);
        let key = match self.by_addr.get(&(proto, from)) {
            Some(k) if self.peers.get(k).is_some_and(accepts) => Some(k.clone()),
            _ => self.peers.iter().find(|(_, p)| accepts(p)).map(|(k, _)| k.clone()),
        };
        let Some(key) = key else {
            self.setup.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.by_addr.insert((proto, from), key.clone());
        if is_rtp(data) {
            self.setup.stats.packets_in.fetch_add(1, Ordering::Relaxed);
            self.setup.stats.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
            if let Some(p) = self.peers.get_mut(&key) {
                p.packets_in += 1;
            }
        }
        self.input(&key, input);
    }

    /// The local candidate address a packet from `from` arrived at: the advertised address of
    /// its family (the socket may be bound to the unspecified address).
    fn local_for(&self, proto: Protocol, from: SocketAddr) -> SocketAddr {
        let port = match proto {
            Protocol::Udp => self.setup.candidates.first().map_or(0, SocketAddr::port),
            _ => self.setup.tcp_port.unwrap_or(0),
        };
        let ip = self
            .setup
            .candidates
            .iter()
            .find(|c| c.is_ipv4() == from.is_ipv4())
            .or(self.setup.candidates.first())
            .map(SocketAddr::ip)
            .unwrap_or(from.ip());
        SocketAddr::new(ip, port)
    }

    fn input(&mut self, key: &PeerKey, input: Input) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        let stats = &self.setup.stats;
        #[cfg(any(test, feature = "test-hooks"))]
        let boom = std::mem::take(&mut peer.panic_next);
        let r = shielded(stats, || {
            #[cfg(any(test, feature = "test-hooks"))]
            if boom {
                panic!("test hook: a panic inside one peer's state");
            }
            peer.rtc.handle_input(input)
        });
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(session.id = %key.0, participant.id = key.1, error = %e, "media input refused");
            }
            Err(()) => {
                tracing::error!(session.id = %key.0, participant.id = key.1, "media peer panicked; closing it");
                self.closing.push((key.clone(), MediaCloseReason::Failed));
                return;
            }
        }
        self.dirty.insert(key.clone());
    }

    /// Polls touched peers until idle, applies what their events ask of others (which touches
    /// those), and closes peers marked for closing; repeats until nothing is left.
    fn flush(&mut self) {
        for _ in 0..16 {
            if self.dirty.is_empty() && self.closing.is_empty() {
                return;
            }
            let mut propagate = Vec::new();
            let dirty: Vec<PeerKey> = self.dirty.drain().collect();
            for key in dirty {
                self.negotiate(&key);
                self.poll(&key, &mut propagate);
            }
            for p in propagate {
                self.apply(p);
            }
            let closing = std::mem::take(&mut self.closing);
            for (key, reason) in closing {
                self.close_peer(&key, reason);
            }
        }
    }

    fn poll(&mut self, key: &PeerKey, propagate: &mut Vec<Propagate>) {
        loop {
            let Some(peer) = self.peers.get_mut(key) else { return };
            if !peer.rtc.is_alive() {
                self.closing.push((key.clone(), MediaCloseReason::Disconnected));
                return;
            }
            let out = match shielded(&self.setup.stats, || peer.rtc.poll_output()) {
                Ok(Ok(out)) => out,
                Ok(Err(e)) => {
                    tracing::info!(session.id = %key.0, participant.id = key.1, error = %e, "media peer failed");
                    self.closing.push((key.clone(), MediaCloseReason::Failed));
                    return;
                }
                Err(()) => {
                    tracing::error!(session.id = %key.0, participant.id = key.1, "media peer panicked; closing it");
                    self.closing.push((key.clone(), MediaCloseReason::Failed));
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    peer.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    if is_rtp(&t.contents) {
                        peer.packets_out += 1;
                        self.setup.stats.packets_out.fetch_add(1, Ordering::Relaxed);
                        self.setup.stats.bytes_out.fetch_add(t.contents.len() as u64, Ordering::Relaxed);
                    }
                    self.transmit(t.proto, t.destination, &t.contents);
                }
                Output::Event(e) => self.event(key, e, propagate),
            }
        }
    }

    fn transmit(&self, proto: Protocol, to: SocketAddr, contents: &[u8]) {
        match proto {
            Protocol::Udp => {
                if self.setup.socket.try_send_to(contents, to).is_err() {
                    self.setup.stats.send_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                let sent =
                    self.tcp_conns.get(&to).is_some_and(|tx| tx.try_send(Bytes::copy_from_slice(contents)).is_ok());
                if !sent {
                    self.setup.stats.send_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn event(&mut self, key: &PeerKey, event: Event, propagate: &mut Vec<Propagate>) {
        match event {
            Event::Connected => {
                if let Some(p) = self.peers.get(key) {
                    (self.setup.audit)(AuditEvent::MediaConnected, &key.0, key.1, &p.user_id, String::new());
                }
            }
            // The client closed DTLS (`RTCPeerConnection.close()`): it left, it was not lost.
            Event::Closed => self.closing.push((key.clone(), MediaCloseReason::Left)),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.closing.push((key.clone(), MediaCloseReason::Disconnected));
            }
            Event::MediaAdded(added) if added.direction.is_receiving() => {
                self.track_in(key, added.mid, added.kind, propagate);
            }
            Event::MediaChanged(changed) => {
                let publishing = self
                    .peers
                    .get(key)
                    .and_then(|p| p.tracks_in.iter().find(|t| t.mid == changed.mid))
                    .map(|t| t.track_id);
                match (publishing, changed.direction.is_receiving()) {
                    (Some(track_id), false) => self.track_gone(key, track_id, propagate),
                    (None, true) => {
                        let kind = self.peers.get_mut(key).and_then(|p| p.rtc.media(changed.mid).map(|m| m.kind()));
                        if let Some(kind) = kind {
                            self.track_in(key, changed.mid, kind, propagate);
                        }
                    }
                    _ => {}
                }
            }
            Event::MediaData(data) => {
                let Some(peer) = self.peers.get_mut(key) else { return };
                let Some(track) = peer.tracks_in.iter_mut().find(|t| t.mid == data.mid) else { return };
                if track.rid.is_none() && data.rid.is_some() {
                    track.rid = data.rid;
                }
                if data.rid != track.rid {
                    return;
                }
                if !data.contiguous {
                    let (mid, rid) = (track.mid, track.rid);
                    request_keyframe(&mut peer.tracks_in, &mut peer.rtc, mid, rid, KeyframeRequestKind::Pli);
                }
                propagate.push(Propagate::Media { from: key.clone(), data: Box::new(data) });
            }
            Event::KeyframeRequest(req) => {
                let Some(peer) = self.peers.get(key) else { return };
                let Some(track_id) = peer.tracks_out.iter().find(|t| t.mid() == Some(req.mid)).map(|t| t.track_id)
                else {
                    return;
                };
                let Some(track) = self.sessions.get(&key.0).and_then(|s| s.tracks.get(&track_id)) else { return };
                propagate.push(Propagate::Keyframe {
                    session: key.0.clone(),
                    publisher: track.publisher,
                    mid: track.mid,
                    rid: None,
                    kind: req.kind,
                });
            }
            Event::MediaIngressStats(s) => {
                let Some(peer) = self.peers.get_mut(key) else { return };
                let before = peer.stats_packets.insert(s.mid, s.packets).unwrap_or(0);
                if let Some(loss) = s.loss {
                    let received = s.packets.saturating_sub(before) as f64;
                    let fraction = f64::from(loss).clamp(0.0, 0.99);
                    let lost = (received * fraction / (1.0 - fraction)).round() as u64;
                    self.setup.stats.packets_lost.fetch_add(lost, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }

    /// The peer now receives media on `mid`: a new published track (unless over the limit).
    fn track_in(&mut self, key: &PeerKey, mid: Mid, kind: MediaKind, propagate: &mut Vec<Propagate>) {
        let max = self.setup.max_tracks;
        let Some(peer) = self.peers.get_mut(key) else { return };
        if peer.tracks_in.iter().any(|t| t.mid == mid) {
            return;
        }
        if peer.tracks_in.len() >= max {
            send_error(&peer.writer, error_code::MEDIA_REJECTED, &format!("more than {max} published tracks"));
            return;
        }
        let session = self.sessions.entry(key.0.clone()).or_default();
        session.next_track_id += 1;
        let track_id = session.next_track_id;
        let default = if kind == MediaKind::Audio { TrackSource::Microphone } else { TrackSource::Camera };
        let source = peer.declared.get(&mid.to_string()).copied().unwrap_or(default);
        let muted = peer.muted.get(&mid.to_string()).copied().unwrap_or(false);
        session.tracks.insert(track_id, Track { publisher: key.1, mid, kind, source, muted });
        peer.tracks_in.push(TrackIn { track_id, mid, last_keyframe_request: None, rid: None });
        self.setup.stats.tracks.fetch_add(1, Ordering::Relaxed);
        let detail = format!("track {track_id}: {} ({kind})", source.as_str());
        (self.setup.audit)(AuditEvent::TrackPublished, &key.0, key.1, &peer.user_id, detail);
        propagate.push(Propagate::TrackAdded { session: key.0.clone(), track_id });
    }

    fn track_gone(&mut self, key: &PeerKey, track_id: u32, propagate: &mut Vec<Propagate>) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        peer.tracks_in.retain(|t| t.track_id != track_id);
        if let Some(session) = self.sessions.get_mut(&key.0) {
            if let Some(track) = session.tracks.remove(&track_id) {
                self.setup.stats.tracks.fetch_sub(1, Ordering::Relaxed);
                let detail = format!("track {track_id}: {}", track.source.as_str());
                (self.setup.audit)(AuditEvent::TrackUnpublished, &key.0, key.1, &peer.user_id, detail);
            }
        }
        propagate.push(Propagate::TrackRemoved { session: key.0.clone(), track_id });
    }

    fn apply(&mut self, p: Propagate) {
        match p {
            Propagate::Media { from, data } => self.forward(&from, &data),
            Propagate::Keyframe { session, publisher, mid, rid, kind } => {
                let key = (session, publisher);
                if let Some(peer) = self.peers.get_mut(&key) {
                    let rid = peer.tracks_in.iter().find(|t| t.mid == mid).and_then(|t| t.rid).or(rid);
                    request_keyframe(&mut peer.tracks_in, &mut peer.rtc, mid, rid, kind);
                    self.dirty.insert(key);
                }
            }
            Propagate::TrackAdded { session, track_id } => {
                let Some(s) = self.sessions.get(&session) else { return };
                let Some(track) = s.tracks.get(&track_id) else { return };
                let subscribers: Vec<ParticipantId> =
                    s.peers.iter().copied().filter(|p| *p != track.publisher).collect();
                for pid in subscribers {
                    let key = (session.clone(), pid);
                    if let Some(peer) = self.peers.get_mut(&key) {
                        peer.tracks_out.push(TrackOut { track_id, state: OutState::ToOpen });
                        self.dirty.insert(key);
                    }
                }
            }
            Propagate::TrackRemoved { session, track_id } => {
                let Some(s) = self.sessions.get(&session) else { return };
                let members: Vec<ParticipantId> = s.peers.iter().copied().collect();
                for pid in members {
                    let key = (session.clone(), pid);
                    let Some(peer) = self.peers.get_mut(&key) else { continue };
                    let Some(i) = peer.tracks_out.iter().position(|t| t.track_id == track_id) else { continue };
                    match peer.tracks_out[i].state {
                        OutState::ToOpen => {
                            peer.tracks_out.remove(i);
                        }
                        OutState::Negotiating(m) | OutState::Open(m) => {
                            send_frame(&peer.writer, &EdgeFrame::TrackUnpublished { track_id });
                            peer.tracks_out[i].state = OutState::ToStop(m);
                        }
                        OutState::ToStop(_) | OutState::NegotiatingStop(_) => {}
                    }
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// Writes one publisher frame on every subscriber's open transceiver for that track.
    fn forward(&mut self, from: &PeerKey, data: &MediaData) {
        let Some(track_id) =
            self.peers.get(from).and_then(|p| p.tracks_in.iter().find(|t| t.mid == data.mid)).map(|t| t.track_id)
        else {
            return;
        };
        let Some(session) = self.sessions.get(&from.0) else { return };
        let subscribers: Vec<ParticipantId> = session.peers.iter().copied().filter(|p| *p != from.1).collect();
        for pid in subscribers {
            let key = (from.0.clone(), pid);
            let Some(peer) = self.peers.get_mut(&key) else { continue };
            let Some(mid) = peer.tracks_out.iter().find(|t| t.track_id == track_id).and_then(|t| {
                if let OutState::Open(m) = t.state {
                    Some(m)
                } else {
                    None
                }
            }) else {
                continue;
            };
            let written = shielded(&self.setup.stats, || {
                let Some(writer) = peer.rtc.writer(mid) else { return Ok(()) };
                let Some(pt) = writer.match_params(data.params) else { return Ok(()) };
                writer.write(pt, data.network_time, data.time, data.data.clone())
            });
            match written {
                Ok(Ok(())) => {
                    self.dirty.insert(key);
                }
                Ok(Err(e)) => {
                    tracing::debug!(session.id = %key.0, participant.id = pid, error = %e, "media write refused");
                }
                Err(()) => self.closing.push((key, MediaCloseReason::Failed)),
            }
        }
    }

    /// Sends the edge's offer for queued track changes, unless one is already outstanding.
    fn negotiate(&mut self, key: &PeerKey) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        if peer.pending.is_some() {
            return;
        }
        if !peer.tracks_out.iter().any(|t| matches!(t.state, OutState::ToOpen | OutState::ToStop(_))) {
            return;
        }
        let Some(session) = self.sessions.get(&key.0) else { return };
        let mut announce = Vec::new();
        let publishing: HashSet<Mid> = peer.tracks_in.iter().map(|t| t.mid).collect();
        let offered = shielded(&self.setup.stats, || {
            let mut change = peer.rtc.sdp_api();
            for t in &mut peer.tracks_out {
                match t.state {
                    OutState::ToOpen => {
                        let Some(track) = session.tracks.get(&t.track_id) else { continue };
                        let mid = change.add_media(
                            track.kind,
                            Direction::SendOnly,
                            Some(format!("p{}", track.publisher)),
                            Some(format!("t{}", t.track_id)),
                            None,
                        );
                        t.state = OutState::Negotiating(mid);
                        announce.push(EdgeFrame::TrackPublished {
                            track_id: t.track_id,
                            participant_id: track.publisher,
                            source: track.source,
                            muted: track.muted,
                            mid: mid.to_string(),
                        });
                    }
                    OutState::ToStop(mid) => {
                        // A browser may publish on a transceiver the edge added (`addTrack`
                        // reuses it): then only the edge's sending half stops.
                        if publishing.contains(&mid) {
                            change.set_direction(mid, Direction::RecvOnly);
                        } else {
                            change.stop_media(mid);
                        }
                        t.state = OutState::NegotiatingStop(mid);
                    }
                    _ => {}
                }
            }
            change.apply().map(|(offer, pending)| (offer.to_sdp_string(), pending))
        });
        match offered {
            Ok(Some((sdp, _))) if sdp.len() > MAX_SDP_BYTES => {
                // Too many m-lines for one offer (str0m never recycles stopped ones): this
                // connection cannot take more changes; the client may open a fresh one.
                tracing::warn!(session.id = %key.0, participant.id = key.1, bytes = sdp.len(), "media offer too large");
                self.closing.push((key.clone(), MediaCloseReason::Failed));
            }
            Ok(Some((sdp, pending))) => {
                peer.next_offer_id += 1;
                let offer_id = peer.next_offer_id;
                peer.pending = Some((offer_id, pending));
                for frame in &announce {
                    send_frame(&peer.writer, frame);
                }
                send_frame(&peer.writer, &EdgeFrame::MediaOffer { offer_id, sdp: sdp.clone() });
                peer.pending_sdp = Some(sdp);
            }
            Ok(None) => {
                // Nothing left to negotiate: stops the session had already applied.
                peer.tracks_out.retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
            }
            Err(()) => self.closing.push((key.clone(), MediaCloseReason::Failed)),
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Signal { session, participant, user_id, writer, signal, cost } => {
                self.setup.queued.fetch_sub(cost, Ordering::AcqRel);
                self.signal((session, participant), user_id, writer, signal)
            }
            Command::Writer { session, participant, writer } => self.writer_changed(&(session, participant), writer),
            Command::ParticipantGone { session, participant } => {
                let key = (session, participant);
                self.early.remove(&key);
                self.close_peer(&key, MediaCloseReason::Stopped);
            }
            Command::SessionEnded { session } => {
                let members: Vec<ParticipantId> =
                    self.sessions.get(&session).map(|s| s.peers.iter().copied().collect()).unwrap_or_default();
                for pid in members {
                    self.close_peer(&(session.clone(), pid), MediaCloseReason::Stopped);
                }
                self.sessions.remove(&session);
                self.early.retain(|(s, _), _| *s != session);
            }
            #[cfg(any(test, feature = "test-hooks"))]
            Command::PanicIn { session, participant } => {
                if let Some(p) = self.peers.get_mut(&(session, participant)) {
                    p.panic_next = true;
                }
            }
        }
    }

    fn new_peer(&self, user_id: String, writer: Writer) -> Peer {
        let mut rtc = RtcConfig::new()
            .set_dtls_cert(self.cert.clone())
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(Instant::now());
        for addr in self.setup.candidates.iter() {
            if let Ok(c) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(c);
            }
            if let Some(port) = self.setup.tcp_port {
                let tcp =
                    Candidate::builder().tcp().host(SocketAddr::new(addr.ip(), port)).tcptype(TcpType::Passive).build();
                if let Ok(c) = tcp {
                    rtc.add_local_candidate(c);
                }
            }
        }
        Peer {
            user_id,
            rtc,
            writer,
            pending: None,
            pending_sdp: None,
            next_offer_id: 0,
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            declared: HashMap::new(),
            muted: HashMap::new(),
            next_timeout: Instant::now(),
            stats_packets: HashMap::new(),
            packets_in: 0,
            packets_out: 0,
            opened: Instant::now(),
            #[cfg(any(test, feature = "test-hooks"))]
            panic_next: false,
        }
    }

    fn signal(&mut self, key: PeerKey, user_id: String, writer: Writer, signal: Signal) {
        match signal {
            Signal::Offer(sdp) => self.offer(key, user_id, writer, &sdp),
            Signal::Answer { offer_id, sdp } => {
                let Some(peer) = self.peers.get_mut(&key) else {
                    return send_error(
                        &writer,
                        error_code::UNKNOWN_TRACK,
                        "no media connection: send media_offer first",
                    );
                };
                peer.writer = writer;
                let Some((pending_id, _)) = &peer.pending else {
                    tracing::debug!(offer_id, "media answer without an outstanding offer ignored");
                    return;
                };
                if *pending_id != offer_id {
                    tracing::debug!(offer_id, pending = *pending_id, "stale media answer ignored");
                    return;
                }
                let answer = match shielded(&self.setup.stats, || SdpAnswer::from_sdp_string(&sdp)) {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => return send_error(&peer.writer, error_code::MEDIA_REJECTED, &format!("answer: {e}")),
                    Err(()) => return send_error(&peer.writer, error_code::MEDIA_REJECTED, "answer: unparsable"),
                };
                let (_, pending) = peer.pending.take().expect("checked above");
                match shielded(&self.setup.stats, || peer.rtc.sdp_api().accept_answer(pending, answer)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        send_error(&peer.writer, error_code::MEDIA_REJECTED, &format!("answer: {e}"));
                        // The offer is gone either way: queue its changes again.
                        for t in &mut peer.tracks_out {
                            match t.state {
                                OutState::Negotiating(_) => t.state = OutState::ToOpen,
                                OutState::NegotiatingStop(m) => t.state = OutState::ToStop(m),
                                _ => {}
                            }
                        }
                        self.dirty.insert(key);
                        return;
                    }
                    Err(()) => return self.closing.push((key, MediaCloseReason::Failed)),
                }
                let mut opened = Vec::new();
                for t in &mut peer.tracks_out {
                    if let OutState::Negotiating(m) = t.state {
                        t.state = OutState::Open(m);
                        opened.push(t.track_id);
                    }
                }
                peer.tracks_out.retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
                self.dirty.insert(key.clone());
                // A new subscriber needs a keyframe to start decoding.
                for track_id in opened {
                    if let Some(track) = self.sessions.get(&key.0).and_then(|s| s.tracks.get(&track_id)).cloned() {
                        if track.kind == MediaKind::Video {
                            self.apply(Propagate::Keyframe {
                                session: key.0.clone(),
                                publisher: track.publisher,
                                mid: track.mid,
                                rid: None,
                                kind: KeyframeRequestKind::Pli,
                            });
                        }
                    }
                }
            }
            Signal::Candidate(candidate) => {
                let Some(peer) = self.peers.get_mut(&key) else {
                    return send_error(
                        &writer,
                        error_code::UNKNOWN_TRACK,
                        "no media connection: send media_offer first",
                    );
                };
                let line = candidate.trim();
                if line.is_empty() {
                    return;
                }
                let line = line.strip_prefix("a=").unwrap_or(line);
                let parsed =
                    shielded(&self.setup.stats, || Candidate::from_sdp_string(line).map_err(|e| e.to_string()));
                match parsed.unwrap_or_else(|()| Err("unparsable".into())) {
                    Ok(c) => {
                        if shielded(&self.setup.stats, || peer.rtc.add_remote_candidate(c)).is_err() {
                            return self.closing.push((key, MediaCloseReason::Failed));
                        }
                        self.dirty.insert(key);
                    }
                    Err(e) => send_error(&peer.writer, error_code::MEDIA_REJECTED, &format!("candidate: {e}")),
                }
            }
            Signal::Publish { mid, .. } | Signal::Mute { mid, .. } if mid.len() > MAX_MID_BYTES => {
                send_error(&writer, error_code::MEDIA_REJECTED, &format!("mid longer than {MAX_MID_BYTES} bytes"))
            }
            Signal::Publish { mid, source } => {
                let Some(peer) = self.peers.get_mut(&key) else {
                    // Before the first offer: kept for the peer that offer creates.
                    let declared = self.early.entry(key).or_default();
                    if declared.len() >= 2 * self.setup.max_tracks && !declared.contains_key(&mid) {
                        return send_error(
                            &writer,
                            error_code::MEDIA_REJECTED,
                            "too many track_publish before media_offer",
                        );
                    }
                    declared.insert(mid, source);
                    return;
                };
                if peer.declared.len() >= 2 * self.setup.max_tracks && !peer.declared.contains_key(&mid) {
                    return send_error(&peer.writer, error_code::MEDIA_REJECTED, "too many track_publish");
                }
                peer.declared.insert(mid.clone(), source);
                let Some(track_id) = peer.tracks_in.iter().find(|t| t.mid.to_string() == mid).map(|t| t.track_id)
                else {
                    return; // applied when the track appears
                };
                let Some(track) = self.sessions.get_mut(&key.0).and_then(|s| s.tracks.get_mut(&track_id)) else {
                    return;
                };
                if track.source == source {
                    return;
                }
                track.source = source;
                let track = track.clone();
                self.announce_again(&key.0, track_id, &track);
            }
            Signal::Mute { mid, muted } => {
                let Some(peer) = self.peers.get_mut(&key) else {
                    return send_error(
                        &writer,
                        error_code::UNKNOWN_TRACK,
                        "no media connection: send media_offer first",
                    );
                };
                let Some(track_id) = peer.tracks_in.iter().find(|t| t.mid.to_string() == mid).map(|t| t.track_id)
                else {
                    return send_error(
                        &peer.writer,
                        error_code::UNKNOWN_TRACK,
                        &format!("no published track on mid {mid}"),
                    );
                };
                peer.muted.insert(mid.clone(), muted);
                let Some(track) = self.sessions.get_mut(&key.0).and_then(|s| s.tracks.get_mut(&track_id)) else {
                    return;
                };
                track.muted = muted;
                let members: Vec<ParticipantId> =
                    self.sessions.get(&key.0).map(|s| s.peers.iter().copied().collect()).unwrap_or_default();
                for pid in members {
                    if let Some(p) = self.peers.get(&(key.0.clone(), pid)) {
                        if p.tracks_out.iter().any(|t| t.track_id == track_id && t.mid().is_some()) {
                            send_frame(&p.writer, &EdgeFrame::TrackMuted { track_id, muted });
                        }
                    }
                }
            }
            Signal::Leave => {
                if self.peers.contains_key(&key) {
                    self.close_peer(&key, MediaCloseReason::Left);
                }
            }
        }
    }

    /// A new websocket for the participant: what the old one may have lost is sent again (every
    /// announced track, then the outstanding offer with its id).
    fn writer_changed(&mut self, key: &PeerKey, writer: Writer) {
        let Some(peer) = self.peers.get_mut(key) else { return };
        peer.writer = writer;
        let Some(session) = self.sessions.get(&key.0) else { return };
        for t in &peer.tracks_out {
            let mid = match t.state {
                OutState::Negotiating(m) | OutState::Open(m) => m,
                _ => continue,
            };
            let Some(track) = session.tracks.get(&t.track_id) else { continue };
            let frame = EdgeFrame::TrackPublished {
                track_id: t.track_id,
                participant_id: track.publisher,
                source: track.source,
                muted: track.muted,
                mid: mid.to_string(),
            };
            send_frame(&peer.writer, &frame);
        }
        if let (Some((offer_id, _)), Some(sdp)) = (&peer.pending, &peer.pending_sdp) {
            send_frame(&peer.writer, &EdgeFrame::MediaOffer { offer_id: *offer_id, sdp: sdp.clone() });
        }
    }

    /// Tells subscribers that already know a track about a changed source.
    fn announce_again(&self, session: &Arc<str>, track_id: u32, track: &Track) {
        let Some(s) = self.sessions.get(session) else { return };
        for pid in &s.peers {
            let Some(p) = self.peers.get(&(session.clone(), *pid)) else { continue };
            let Some(mid) = p.tracks_out.iter().find(|t| t.track_id == track_id).and_then(TrackOut::mid) else {
                continue;
            };
            send_frame(
                &p.writer,
                &EdgeFrame::TrackPublished {
                    track_id,
                    participant_id: track.publisher,
                    source: track.source,
                    muted: track.muted,
                    mid: mid.to_string(),
                },
            );
        }
    }

    fn offer(&mut self, key: PeerKey, user_id: String, writer: Writer, sdp: &str) {
        let m_lines = sdp.matches("\nm=").count();
        if m_lines > MAX_M_LINES {
            let message = format!("offer: {m_lines} m-lines, at most {MAX_M_LINES}");
            return send_error(&writer, error_code::MEDIA_REJECTED, &message);
        }
        let offer = match shielded(&self.setup.stats, || SdpOffer::from_sdp_string(sdp)) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return send_error(&writer, error_code::MEDIA_REJECTED, &format!("offer: {e}")),
            Err(()) => return send_error(&writer, error_code::MEDIA_REJECTED, "offer: unparsable"),
        };
        let fresh = !self.peers.contains_key(&key);
        if fresh {
            let mut peer = self.new_peer(user_id, writer.clone());
            peer.declared = self.early.remove(&key).unwrap_or_default();
            self.peers.insert(key.clone(), peer);
        }
        let peer = self.peers.get_mut(&key).expect("inserted above");
        peer.writer = writer;
        // A client offer wins over the edge's outstanding one: forget it and offer again later.
        if peer.pending.take().is_some() {
            for t in &mut peer.tracks_out {
                match t.state {
                    OutState::Negotiating(_) => t.state = OutState::ToOpen,
                    OutState::NegotiatingStop(m) => t.state = OutState::ToStop(m),
                    _ => {}
                }
            }
        }
        match shielded(&self.setup.stats, || peer.rtc.sdp_api().accept_offer(offer)) {
            Ok(Ok(answer)) => {
                send_frame(&peer.writer, &EdgeFrame::MediaAnswer { sdp: answer.to_sdp_string() });
            }
            Ok(Err(e)) => {
                send_error(&peer.writer, error_code::MEDIA_REJECTED, &format!("offer: {e}"));
                if fresh {
                    self.peers.remove(&key);
                }
                return;
            }
            Err(()) => {
                if fresh {
                    self.setup.stats.peers_opened.fetch_add(1, Ordering::Relaxed);
                    self.setup.stats.peers.fetch_add(1, Ordering::Relaxed);
                    self.sessions.entry(key.0.clone()).or_default().peers.insert(key.1);
                    *self.setup.active.entry(key.0.clone()).or_insert(0) += 1;
                }
                return self.closing.push((key, MediaCloseReason::Failed));
            }
        }
        if fresh {
            self.setup.stats.peers_opened.fetch_add(1, Ordering::Relaxed);
            self.setup.stats.peers.fetch_add(1, Ordering::Relaxed);
            let session = self.sessions.entry(key.0.clone()).or_default();
            session.peers.insert(key.1);
            *self.setup.active.entry(key.0.clone()).or_insert(0) += 1;
            // Subscribe the newcomer to everything already published in the session.
            let existing: Vec<u32> =
                session.tracks.iter().filter(|(_, t)| t.publisher != key.1).map(|(id, _)| *id).collect();
            let peer = self.peers.get_mut(&key).expect("inserted above");
            for track_id in existing {
                peer.tracks_out.push(TrackOut { track_id, state: OutState::ToOpen });
            }
        }
        self.dirty.insert(key);
    }

    fn close_peer(&mut self, key: &PeerKey, reason: MediaCloseReason) {
        let Some(mut peer) = self.peers.remove(key) else { return };
        let _ = shielded(&self.setup.stats, || peer.rtc.disconnect());
        self.by_addr.retain(|_, k| k != key);
        self.setup.stats.peers.fetch_sub(1, Ordering::Relaxed);
        self.setup.stats.peers_closed.fetch_add(1, Ordering::Relaxed);
        send_frame(&peer.writer, &EdgeFrame::MediaClosed { reason });
        let mut propagate = Vec::new();
        for t in &peer.tracks_in {
            if let Some(session) = self.sessions.get_mut(&key.0) {
                if let Some(track) = session.tracks.remove(&t.track_id) {
                    self.setup.stats.tracks.fetch_sub(1, Ordering::Relaxed);
                    let detail = format!("track {}: {}", t.track_id, track.source.as_str());
                    (self.setup.audit)(AuditEvent::TrackUnpublished, &key.0, key.1, &peer.user_id, detail);
                }
            }
            propagate.push(Propagate::TrackRemoved { session: key.0.clone(), track_id: t.track_id });
        }
        if let Some(mut n) = self.setup.active.get_mut(&key.0) {
            *n = n.saturating_sub(1);
        }
        self.setup.active.remove_if(&key.0, |_, n| *n == 0);
        if let Some(session) = self.sessions.get_mut(&key.0) {
            session.peers.remove(&key.1);
            if session.peers.is_empty() && session.tracks.is_empty() {
                self.sessions.remove(&key.0);
            }
        }
        let detail = format!(
            "{}; {} s; {} packets in, {} out",
            reason.as_str(),
            peer.opened.elapsed().as_secs(),
            peer.packets_in,
            peer.packets_out
        );
        (self.setup.audit)(AuditEvent::MediaClosed, &key.0, key.1, &peer.user_id, detail);
        self.dirty.remove(key);
        for p in propagate {
            self.apply(p);
        }
    }
}

fn request_keyframe(tracks: &mut [TrackIn], rtc: &mut Rtc, mid: Mid, rid: Option<Rid>, kind: KeyframeRequestKind) {
    let Some(track) = tracks.iter_mut().find(|t| t.mid == mid) else { return };
    let now = Instant::now();
    if track.last_keyframe_request.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
        return;
    }
    track.last_keyframe_request = Some(now);
    // Inside one peer's state: a panic here must not end the media task.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(mut writer) = rtc.writer(mid) {
            let _ = writer.request_keyframe(rid, kind);
        }
    }));
}
