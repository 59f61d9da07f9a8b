//! A WebRTC peer built on str0m for tests and benchmarks: it joins an edge's media over a duet
//! session websocket, publishes synthetic video or audio, and counts what it receives.
//!
//! One task owns the peer's UDP socket (on 127.0.0.1), its `str0m::Rtc` and the session: it
//! answers the edge's offers, applies the edge's answers, and records `track_*` and
//! `media_closed` frames. It is cheap (no codec, no decoding), so a benchmark can run dozens on
//! the core the edge does not use. Payloads are random bytes with a VP8 frame tag (a keyframe
//! every `keyframe_every` frames); nobody decodes them.
//!
//! [`Options`] make a peer cheaper still for benchmarks: with `count_rtp_only` a subscriber counts
//! the RTP datagrams it receives and hands only STUN, DTLS and RTCP to str0m (no SRTP decryption,
//! no depacketizing), so one core of a load generator keeps up with what an edge forwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_client::{Event, Session};
use duet_proto::session::{ClientFrame, EdgeFrame, MediaCloseReason, ParticipantId, TrackSource};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// What a peer publishes.
#[derive(Debug, Clone, Copy)]
pub enum Publish {
    /// Nothing: it only subscribes.
    Nothing,
    /// Synthetic VP8 video: `fps` frames a second of `frame_bytes` each (a 1,100-byte frame is one
    /// RTP packet; larger frames are split).
    Video { fps: u32, frame_bytes: usize, keyframe_every: u32 },
    /// Opus-sized audio frames every 20 ms.
    Audio,
}

/// A remote track as announced by `track_published`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    pub track_id: u32,
    pub participant_id: ParticipantId,
    pub source: TrackSource,
    pub muted: bool,
    pub mid: String,
}

/// What the peer has seen, updated live.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub connected: AtomicBool,
    /// RTP packets received from the edge (not RTCP or STUN) and their bytes.
    pub packets_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Whole frames str0m reassembled.
    pub frames_received: AtomicU64,
    pub frames_sent: AtomicU64,
    /// RTP packets sent to the edge (what the published frames became) and their bytes.
    pub packets_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Where RTP came from (the edge's media address).
    pub rtp_source: Mutex<Option<SocketAddr>>,
    pub tracks: Mutex<BTreeMap<u32, RemoteTrack>>,
    pub closed: Mutex<Option<MediaCloseReason>>,
    /// `error` frames the edge sent (code, message).
    pub errors: Mutex<Vec<(u16, String)>>,
}

impl PeerStats {
    pub fn packets(&self) -> u64 {
        self.packets_received.load(Ordering::Relaxed)
    }

    pub fn frames(&self) -> u64 {
        self.frames_received.load(Ordering::Relaxed)
    }

    pub fn track_count(&self) -> usize {
        self.tracks.lock().unwrap().len()
    }
}

enum Cmd {
    Mute(bool),
    Leave,
    Send(ClientFrame),
}

/// How a peer treats what it receives; the default is what [`LoadPeer::start`] does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Count incoming RTP datagrams and their bytes (`packets_received`, `bytes_received`) and
    /// drop them there, without str0m: no SRTP decryption, no depacketizing, no `frames_received`,
    /// no NACKs or receiver reports. STUN, DTLS and RTCP still go to str0m, so ICE, DTLS and the
    /// edge's sender reports work. For benchmarks, where decrypting would make the load peers the
    /// bottleneck.
    pub count_rtp_only: bool,
    /// Send a session `ping` this often. The edge closes a session websocket that sends nothing
    /// for its idle timeout (90 s by default); a test is shorter, a benchmark may not be.
    pub keepalive: Option<Duration>,
}

/// A running load peer; dropping it stops its task (the session closes with it).
pub struct LoadPeer {
    pub stats: Arc<PeerStats>,
    pub local: SocketAddr,
    cmd: mpsc::UnboundedSender<Cmd>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Session>,
}

/// RTP, not RTCP (RFC 7983 first byte, RTCP packet types masked).
fn is_rtp(packet: &[u8]) -> bool {
    packet.len() >= 12 && (128..=191).contains(&packet[0]) && !(64..=95).contains(&(packet[1] & 0x7f))
}

impl LoadPeer {
    /// Opens a media connection for a joined session (protocol version 3) and starts driving it.
    pub async fn start(session: Session, publish: Publish) -> std::io::Result<LoadPeer> {
        LoadPeer::start_with(session, publish, Options::default()).await
    }

    /// [`LoadPeer::start`] with `options` (a benchmark's cheaper subscribers).
    pub async fn start_with(session: Session, publish: Publish, options: Options) -> std::io::Result<LoadPeer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let stats = Arc::new(PeerStats::default());
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(session, socket, publish, options, stats.clone(), cmd_rx, stop_rx));
        Ok(LoadPeer { stats, local, cmd, stop, task })
    }

    /// Mutes or unmutes the published track (`track_mute`).
    pub fn mute(&self, muted: bool) {
        let _ = self.cmd.send(Cmd::Mute(muted));
    }

    /// Ends the media connection (`media_leave`); the session stays.
    pub fn leave_media(&self) {
        let _ = self.cmd.send(Cmd::Leave);
    }

    /// Sends any client frame on the session (tests of refusals).
    pub fn send(&self, frame: ClientFrame) {
        let _ = self.cmd.send(Cmd::Send(frame));
    }

    /// Stops the peer and gives its session back (still joined).
    pub async fn stop(self) -> Session {
        let _ = self.stop.send(true);
        self.task.await.expect("load peer task")
    }
}

struct Driver {
    rtc: Rtc,
    session: Session,
    stats: Arc<PeerStats>,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    publish_mid: Option<Mid>,
    publish: Publish,
    options: Options,
    frame_no: u64,
    started: Instant,
}

async fn run(
    session: Session,
    socket: UdpSocket,
    publish: Publish,
    options: Options,
    stats: Arc<PeerStats>,
    mut cmd: mpsc::UnboundedReceiver<Cmd>,
    mut stop: watch::Receiver<bool>,
) -> Session {
    let local = socket.local_addr().expect("bound");
    let mut rtc = RtcConfig::new().build(Instant::now());
    if let Ok(c) = Candidate::host(local, "udp") {
        rtc.add_local_candidate(c);
    }
    let mut api = rtc.sdp_api();
    let (kind, dir) = match publish {
        Publish::Nothing => (MediaKind::Audio, Direction::RecvOnly),
        Publish::Video { .. } => (MediaKind::Video, Direction::SendOnly),
        Publish::Audio => (MediaKind::Audio, Direction::SendOnly),
    };
    let mid = api.add_media(kind, dir, Some("load".into()), Some("load".into()), None);
    let (offer, pending) = api.apply().expect("an offer with one m-line");
    let mut d = Driver {
        rtc,
        session,
        stats,
        local,
        pending: Some(pending),
        publish_mid: (!matches!(publish, Publish::Nothing)).then_some(mid),
        publish,
        options,
        frame_no: 0,
        started: Instant::now(),
    };
    if let Some(mid) = d.publish_mid {
        let source = if matches!(publish, Publish::Audio) { TrackSource::Microphone } else { TrackSource::Camera };
        d.send(ClientFrame::TrackPublish { mid: mid.to_string(), source });
    }
    d.send(ClientFrame::MediaOffer { sdp: offer.to_sdp_string() });

    let period = match publish {
        Publish::Video { fps, .. } => Duration::from_secs(1) / fps.max(1),
        Publish::Audio => Duration::from_millis(20),
        Publish::Nothing => Duration::from_secs(3600),
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // An hour when off: the branch below is disabled then, but the interval still needs a period.
    let mut keepalive = tokio::time::interval(options.keepalive.unwrap_or(Duration::from_secs(3600)));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pings = 0u64;
    let mut buf = vec![0u8; 2048];
    let mut next_timeout = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ev = d.session.recv() => match ev {
                Some(Event::Frame(frame)) => d.frame(frame),
                Some(Event::Closed { .. }) | None => break,
            },
            c = cmd.recv() => match c {
                Some(Cmd::Mute(muted)) => {
                    if let Some(mid) = d.publish_mid {
                        d.send(ClientFrame::TrackMute { mid: mid.to_string(), muted });
                    }
                }
                Some(Cmd::Leave) => d.send(ClientFrame::MediaLeave),
                Some(Cmd::Send(frame)) => d.send(frame),
                None => {}
            },
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    d.receive(from, &buf[..n]);
                    while let Ok((n, from)) = socket.try_recv_from(&mut buf) {
                        d.receive(from, &buf[..n]);
                    }
                }
            }
            _ = ticker.tick() => d.send_frame(),
            _ = keepalive.tick(), if options.keepalive.is_some() => {
                pings += 1;
                d.send(ClientFrame::Ping { nonce: pings });
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_timeout)) => {
                let _ = d.rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
        match d.poll(&socket) {
            Some(t) => next_timeout = t,
            None => break,
        }
    }
    d.rtc.disconnect();
    d.session
}

impl Driver {
    fn send(&self, frame: ClientFrame) {
        let _ = self.session.sender().send_raw(frame.encode().expect("encodable"));
    }

    fn frame(&mut self, frame: EdgeFrame) {
        match frame {
            EdgeFrame::MediaAnswer { sdp } => {
                if let (Some(pending), Ok(answer)) = (self.pending.take(), SdpAnswer::from_sdp_string(&sdp)) {
                    let _ = self.rtc.sdp_api().accept_answer(pending, answer);
                }
            }
            EdgeFrame::MediaOffer { offer_id, sdp } => {
                if self.pending.is_some() {
                    return; // our own offer is outstanding: the edge offers again after answering
                }
                let Ok(offer) = SdpOffer::from_sdp_string(&sdp) else { return };
                if let Ok(answer) = self.rtc.sdp_api().accept_offer(offer) {
                    self.send(ClientFrame::MediaAnswer { offer_id, sdp: answer.to_sdp_string() });
                }
            }
            EdgeFrame::TrackPublished { track_id, participant_id, source, muted, mid } => {
                let t = RemoteTrack { track_id, participant_id, source, muted, mid };
                self.stats.tracks.lock().unwrap().insert(track_id, t);
            }
            EdgeFrame::TrackUnpublished { track_id } => {
                self.stats.tracks.lock().unwrap().remove(&track_id);
            }
            EdgeFrame::TrackMuted { track_id, muted } => {
                if let Some(t) = self.stats.tracks.lock().unwrap().get_mut(&track_id) {
                    t.muted = muted;
                }
            }
            EdgeFrame::MediaClosed { reason } => {
                *self.stats.closed.lock().unwrap() = Some(reason);
            }
            EdgeFrame::Error { code, message } => self.stats.errors.lock().unwrap().push((code, message)),
            _ => {}
        }
    }

    fn receive(&mut self, from: SocketAddr, data: &[u8]) {
        if is_rtp(data) {
            self.stats.packets_received.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_received.fetch_add(data.len() as u64, Ordering::Relaxed);
            *self.stats.rtp_source.lock().unwrap() = Some(from);
            if self.options.count_rtp_only {
                return;
            }
        }
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(
            Instant::now(),
            Receive { proto: Protocol::Udp, source: from, destination: self.local, contents },
        );
        let _ = self.rtc.handle_input(input);
    }

    fn send_frame(&mut self) {
        let Some(mid) = self.publish_mid else { return };
        if !self.stats.connected.load(Ordering::Relaxed) {
            return;
        }
        let (bytes, clock, codec, key) = match self.publish {
            Publish::Video { frame_bytes, keyframe_every, .. } => {
                let key = self.frame_no.is_multiple_of(u64::from(keyframe_every.max(1)));
                (frame_bytes.max(16), Frequency::NINETY_KHZ, Codec::Vp8, key)
            }
            Publish::Audio => (120, Frequency::FORTY_EIGHT_KHZ, Codec::Opus, false),
            Publish::Nothing => return,
        };
        let Some(writer) = self.rtc.writer(mid) else { return };
        let Some(pt) = writer.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt()) else { return };
        let mut payload = vec![0u8; bytes];
        rand::fill(&mut payload[..]);
        // VP8 frame tag: bit 0 clear marks a keyframe; version 0, shown.
        payload[0] = if key { 0x10 } else { 0x11 };
        let elapsed = self.started.elapsed();
        let time = MediaTime::new((elapsed.as_micros() as u64) * u64::from(clock.get()) / 1_000_000, clock);
        if writer.write(pt, Instant::now(), time, payload).is_ok() {
            self.frame_no += 1;
            self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what str0m wants sent and handles its events; the next timeout, or `None` when the
    /// peer is dead.
    fn poll(&mut self, socket: &UdpSocket) -> Option<Instant> {
        loop {
            if !self.rtc.is_alive() {
                return None;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Some(t),
                Ok(Output::Transmit(t)) => {
                    if is_rtp(&t.contents) {
                        self.stats.packets_sent.fetch_add(1, Ordering::Relaxed);
                        self.stats.bytes_sent.fetch_add(t.contents.len() as u64, Ordering::Relaxed);
                    }
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(e)) => match e {
                    RtcEvent::Connected => self.stats.connected.store(true, Ordering::Relaxed),
                    RtcEvent::MediaData(_) => {
                        self.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                    }
                    RtcEvent::KeyframeRequest(_) => self.frame_no = 0,
                    _ => {}
                },
                Err(_) => return None,
            }
        }
    }
}
