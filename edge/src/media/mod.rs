//! WebRTC media: the edge as an SFU on one UDP port (and optionally ICE-TCP on one TCP port).
//!
//! Each participant that publishes or subscribes holds one WebRTC connection to the edge; the edge
//! forwards every published track to the other participants of the same session who have a media
//! connection (no transcoding), passes their keyframe requests back to the publisher, and maps
//! payload types and SSRCs per subscriber (str0m does both when a frame is written on the
//! subscriber's own transceiver). Signalling rides on the session websocket (`media_*` and
//! `track_*` frames, protocol version 3); the session checks membership and passes them here.
//!
//! One task ([`engine`]) owns the UDP socket, the ICE-TCP connections' write halves and every
//! peer's sans-IO state (a `str0m::Rtc`): all peers share the port, which is what containers and
//! OpenShift services can expose. Every call into one peer's state runs under `catch_unwind`, so a
//! panic there closes that peer (`media_closed` reason 2) and nothing else.
//!
//! Why str0m, and what was measured, is in `docs/media.md`.

mod engine;
mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use duet_proto::outbox::AuditEvent;
use duet_proto::session::{ParticipantId, TrackSource};
use duet_ws::Writer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bytes of signalling queued for the media task at most (each frame counts its SDP plus
/// [`SIGNAL_OVERHEAD`]). 8 MiB holds a burst of offers from every participant of a full edge;
/// beyond it a frame is refused with `error` 7 (the client may send it again), so a session
/// never waits for the media task and a flood cannot grow the queue.
const MAX_QUEUED_SIGNAL_BYTES: usize = 8 << 20;
/// What one queued signal costs besides its SDP.
const SIGNAL_OVERHEAD: usize = 512;

/// Media settings of an edge.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The UDP address all peers' media uses (default `0.0.0.0:10000`).
    pub listen: SocketAddr,
    /// The TCP address for ICE-TCP (passive candidates), or none.
    pub tcp_listen: Option<SocketAddr>,
    /// Addresses put in the edge's ICE candidates, at most one per IP family (1:1 NAT: the public
    /// address). Empty: the listen address, or when that is unspecified the address of the
    /// interface the default route leaves through.
    pub advertised: Vec<IpAddr>,
    /// Tracks one participant may publish at once (more are refused with `error` 7).
    pub max_tracks_per_participant: usize,
}

impl MediaConfig {
    pub const DEFAULT_PORT: u16 = 10000;
    pub const DEFAULT_MAX_TRACKS: usize = 8;

    pub fn new(listen: SocketAddr) -> MediaConfig {
        MediaConfig {
            listen,
            tcp_listen: None,
            advertised: Vec::new(),
            max_tracks_per_participant: Self::DEFAULT_MAX_TRACKS,
        }
    }
}

/// Counters and gauges of the media task, read by `/metrics` and the benchmark.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// Media connections open now.
    pub peers: AtomicU64,
    /// Published tracks now.
    pub tracks: AtomicU64,
    /// RTP packets received from publishers and their bytes (UDP and ICE-TCP).
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// RTP packets sent to subscribers (forwarded media, retransmissions included) and bytes.
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Packets the publishers' streams lost on the way to the edge (from receiver statistics).
    pub packets_lost: AtomicU64,
    /// Datagrams that no peer accepted (stray traffic, or packets of a closed peer).
    pub unmatched: AtomicU64,
    /// Datagrams dropped because the socket's send buffer was full.
    pub send_dropped: AtomicU64,
    /// Media connections opened and closed since start.
    pub peers_opened: AtomicU64,
    pub peers_closed: AtomicU64,
    /// Panics caught inside one peer's state (the peer was closed).
    pub peer_panics: AtomicU64,
}

impl MediaStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A signalling frame from a participant, already checked by its session.
#[derive(Debug)]
pub enum Signal {
    Offer(String),
    Answer { offer_id: u32, sdp: String },
    Candidate(String),
    Publish { mid: String, source: TrackSource },
    Mute { mid: String, muted: bool },
    Leave,
}

/// Why a signalling frame was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalRefused {
    /// The media task is far behind: the client may send it again.
    Busy,
    /// The media task is gone (it failed): media is unavailable on this edge.
    Down,
}

/// Records a media audit entry: event, session, participant, user id, detail.
pub type AuditFn = Arc<dyn Fn(AuditEvent, &str, ParticipantId, &str, String) + Send + Sync>;

enum Command {
    Signal {
        session: Arc<str>,
        participant: ParticipantId,
        user_id: String,
        writer: Writer,
        signal: Signal,
        /// Its share of the queue bound, given back when the task takes it.
        cost: usize,
    },
    /// The participant's websocket changed (resume or a second join): signalling goes there now.
    Writer {
        session: Arc<str>,
        participant: ParticipantId,
        writer: Writer,
    },
    /// The participant left the session (its media connection goes too).
    ParticipantGone {
        session: Arc<str>,
        participant: ParticipantId,
    },
    SessionEnded {
        session: Arc<str>,
    },
    /// Test hook: panic inside this participant's peer state on its next input.
    #[cfg(any(test, feature = "test-hooks"))]
    PanicIn {
        session: Arc<str>,
        participant: ParticipantId,
    },
}

/// Why the media task could not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot bind the media UDP port {addr}: {source}")]
    BindUdp { addr: SocketAddr, source: std::io::Error },
    #[error("cannot bind the ICE-TCP port {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create the DTLS certificate: {0}")]
    Certificate(String),
}

/// The handle the rest of the edge uses to reach the media task.
#[derive(Clone)]
pub struct Media {
    /// Every command, in the order the sessions sent them (a leave never overtakes the offer
    /// before it). Signalling is bounded by [`MAX_QUEUED_SIGNAL_BYTES`]; the rest (leaves, ends,
    /// reconnects) by the sessions' own events.
    tx: mpsc::UnboundedSender<Command>,
    /// Signalling bytes queued now.
    queued: Arc<AtomicUsize>,
    /// Media connections per session, for the sessions' idle timeout (media is activity).
    active: Arc<DashMap<Arc<str>, u32>>,
    pub stats: Arc<MediaStats>,
    /// The bound UDP address (its port is the one in the candidates).
    pub udp_addr: SocketAddr,
    /// The bound ICE-TCP address, if enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// The addresses the candidates advertise (with `udp_addr`'s port).
    pub candidates: Arc<[SocketAddr]>,
}

impl Media {
    /// Binds the ports and starts the media task on `tasks`; it stops on `shutdown`, closing every
    /// peer.
    pub async fn start(
        config: &MediaConfig,
        audit: AuditFn,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Media, MediaError> {
        let socket = tokio::net::UdpSocket::bind(config.listen)
            .await
            .map_err(|source| MediaError::BindUdp { addr: config.listen, source })?;
        let udp_addr = socket.local_addr().map_err(|source| MediaError::BindUdp { addr: config.listen, source })?;
        let advertised = advertised_addresses(config, udp_addr);
        let tcp = match config.tcp_listen {
            Some(addr) => {
                let listener =
                    tokio::net::TcpListener::bind(addr).await.map_err(|source| MediaError::BindTcp { addr, source })?;
                Some(listener)
            }
            None => None,
        };
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let stats = Arc::new(MediaStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(DashMap::new());
        let candidates: Arc<[SocketAddr]> =
            advertised.iter().map(|ip| SocketAddr::new(*ip, udp_addr.port())).collect::<Vec<_>>().into();
        let engine = engine::Engine::new(engine::Setup {
            socket,
            tcp,
            candidates: candidates.clone(),
            tcp_port: tcp_addr.map(|a| a.port()),
            max_tracks: config.max_tracks_per_participant,
            stats: stats.clone(),
            audit,
            queued: queued.clone(),
            active: active.clone(),
        })
        .map_err(MediaError::Certificate)?;
        tasks.spawn(engine.run(rx, shutdown, tasks.clone()));
        tracing::info!(udp = %udp_addr, tcp = ?tcp_addr, candidates = ?candidates, "media listening");
        Ok(Media { tx, queued, active, stats, udp_addr, tcp_addr, candidates })
    }

    /// Queues a signalling frame.
    pub fn signal(
        &self,
        session: Arc<str>,
        participant: ParticipantId,
        user_id: String,
        writer: Writer,
        signal: Signal,
    ) -> Result<(), SignalRefused> {
        let cost = SIGNAL_OVERHEAD
            + match &signal {
                Signal::Offer(sdp) | Signal::Answer { sdp, .. } => sdp.len(),
                Signal::Candidate(c) => c.len(),
                Signal::Publish { mid, .. } | Signal::Mute { mid, .. } => mid.len(),
                Signal::Leave => 0,
            };
        if self.queued.fetch_add(cost, Ordering::AcqRel) + cost > MAX_QUEUED_SIGNAL_BYTES {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            return Err(SignalRefused::Busy);
        }
        let cmd = Command::Signal { session, participant, user_id, writer, signal, cost };
        if self.tx.send(cmd).is_err() {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            return Err(SignalRefused::Down);
        }
        Ok(())
    }

    /// Whether the session has a media connection now (media counts as activity).
    pub fn session_has_media(&self, session: &str) -> bool {
        self.active.get(session).is_some_and(|n| *n > 0)
    }

    pub fn writer_changed(&self, session: Arc<str>, participant: ParticipantId, writer: Writer) {
        let _ = self.tx.send(Command::Writer { session, participant, writer });
    }

    pub fn participant_gone(&self, session: Arc<str>, participant: ParticipantId) {
        let _ = self.tx.send(Command::ParticipantGone { session, participant });
    }

    pub fn session_ended(&self, session: Arc<str>) {
        let _ = self.tx.send(Command::SessionEnded { session });
    }

    /// Makes the participant's peer state panic on its next input (tests of panic isolation).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn panic_in(&self, session: Arc<str>, participant: ParticipantId) {
        let _ = self.tx.send(Command::PanicIn { session, participant });
    }
}

/// The candidate addresses: the configured ones (at most one per family, which
/// `config::validate_media` checks), else the bound address, else the address the default route
/// leaves from (found by connecting a UDP socket, which sends nothing), else loopback.
fn advertised_addresses(config: &MediaConfig, bound: SocketAddr) -> Vec<IpAddr> {
    if !config.advertised.is_empty() {
        return config.advertised.clone();
    }
    if !bound.ip().is_unspecified() {
        return vec![bound.ip()];
    }
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect("192.0.2.1:9")?;
        s.local_addr()
    });
    match probe {
        Ok(addr) if !addr.ip().is_unspecified() => vec![addr.ip()],
        _ => vec![IpAddr::from([127, 0, 0, 1])],
    }
}
