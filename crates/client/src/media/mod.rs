//! A WebRTC client peer for duet's media signalling (session protocol v3), so tests, the load
//! generator and the end-to-end suite can join a session's media the way a browser does without
//! a browser. Only with the `media` feature: normal builds do not compile the WebRTC stack.
//!
//! A [`MediaPeer`] speaks SDP strings and nothing else; carrying them is the caller's job:
//!
//! | peer | session frame |
//! |---|---|
//! | [`MediaPeer::new`], [`MediaPeer::publish`], [`MediaPeer::unpublish`] return an offer | `ClientFrame::MediaOffer` |
//! | [`MediaPeer::published`] names each sending transceiver's mid | `ClientFrame::TrackPublish` |
//! | `EdgeFrame::MediaAnswer` | [`MediaPeer::apply_answer`] |
//! | `EdgeFrame::MediaOffer` | [`MediaPeer::answer_offer`], its result as `ClientFrame::MediaAnswer` |
//!
//! Candidates are not trickled: every offer and answer is returned once ICE gathering has
//! completed, so it carries all of this peer's candidates (as the edge's answers carry its own).
//!
//! What it guarantees:
//! - Published tracks are send-only transceivers of their own (never a reused receiving one), so
//!   a mid means one direction, as the edge's `TrackPublished` expects.
//! - [`MediaPeer::start_sending`] writes synthetic Opus (20 ms frames) and VP8 (25 fps, a
//!   keyframe every 2 s) from one task until [`MediaPeer::stop_sending`] or [`MediaPeer::close`];
//!   dropping the peer stops it too.
//! - Every RTP packet received on any remote track is counted, in total and per receiving mid.
//! - mDNS is off: host candidates are plain IP addresses, and no multicast socket is opened.
//!
//! ```no_run
//! # async fn demo(edge_answer: String) -> Result<(), duet_client::media::MediaError> {
//! use duet_client::media::{MediaConfig, MediaPeer, Publish};
//! let (peer, offer) = MediaPeer::new(&MediaConfig::loopback(), &[Publish::Audio]).await?;
//! // send `offer` as MediaOffer and TrackPublish for each of `peer.published()`, then:
//! peer.apply_answer(&edge_answer).await?;
//! peer.wait_connected(std::time::Duration::from_secs(10)).await?;
//! peer.start_sending();
//! # Ok(()) }
//! ```

mod synthetic;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit, RtpSender, RtpTransceiver};

use crate::IceServer;

/// How long an offer or answer waits for ICE gathering. Host candidates are gathered at once;
/// the time is for STUN/TURN servers, whose answers usually arrive well within a second.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(10);
/// The media stream id of every published track (the msid's first half).
const STREAM_ID: &str = "duet";

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The remote description (the edge's offer or answer) could not be parsed or applied.
    #[error("remote sdp rejected: {0}")]
    RemoteSdp(#[source] webrtc::error::Error),
    /// An offer of ours is outstanding: the edge's offer is to be ignored (it re-offers after
    /// answering ours).
    #[error("an offer of ours is outstanding")]
    OfferOutstanding,
    #[error("ice gathering did not complete within {0:?}")]
    GatherTimeout(Duration),
    #[error("not connected within {0:?}")]
    ConnectTimeout(Duration),
    /// The connection reached a terminal state (failed or closed) while being waited for.
    #[error("connection {0}")]
    ConnectionEnded(RTCPeerConnectionState),
    #[error("no published track on mid {0:?}")]
    UnknownMid(String),
    /// The WebRTC stack lacks what it just created (a mid after an offer, a local description
    /// after setting one): a bug here or in the stack.
    #[error("webrtc state missing: {0}")]
    Missing(&'static str),
    /// The WebRTC stack refused a local operation (ours, not the remote's).
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
}

/// Where the peer binds and which ICE servers it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// As the locator's placement answer lists them.
    pub ice_servers: Vec<IceServer>,
    /// UDP sockets to bind, one per address. `0.0.0.0:0` binds one per non-loopback interface
    /// (the `webrtc` crate skips loopback when expanding a wildcard); name `127.0.0.1:0` to reach
    /// an edge on loopback.
    pub udp_bind: Vec<SocketAddr>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig { ice_servers: Vec::new(), udp_bind: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))] }
    }
}

impl MediaConfig {
    /// One socket on 127.0.0.1, no ICE servers: for tests against a local edge.
    pub fn loopback() -> Self {
        MediaConfig { ice_servers: Vec::new(), udp_bind: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))] }
    }
}

/// A track to publish, with the codec every browser supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Publish {
    /// Opus, 48 kHz stereo (a microphone or screen audio).
    Audio,
    /// VP8, 90 kHz (a camera or screen).
    Video,
}

/// A published track and the mid of the send-only transceiver carrying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    pub mid: String,
    pub kind: Publish,
}

/// One WebRTC connection to the edge (or, in tests, to another `MediaPeer`).
pub struct MediaPeer {
    pc: Arc<dyn PeerConnection>,
    /// The published tracks in publication order; read by the sending task each tick.
    outgoing: Arc<Mutex<Vec<Arc<Outgoing>>>>,
    received: Arc<Received>,
    samples_sent: Arc<AtomicU64>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    connection: watch::Receiver<RTCPeerConnectionState>,
    /// Cancelled on close or drop: ends the sending task and the per-track receive tasks.
    shutdown: CancellationToken,
    /// The running sending task's token (a child of `shutdown`), if sending.
    sending: Mutex<Option<CancellationToken>>,
    next_track: AtomicU64,
}

/// A published track and what writing to it needs.
struct Outgoing {
    kind: Publish,
    mid: String,
    ssrc: u32,
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    paused: AtomicBool,
    frames: AtomicU64,
    /// Resolved from the sender's negotiated parameters on first write.
    payload_type: OnceLock<u8>,
}

/// RTP packets received, in total and per remote track id (a receiving transceiver's track).
#[derive(Default)]
struct Received {
    total: AtomicU64,
    by_track: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl Received {
    fn counter(&self, track_id: String) -> Arc<AtomicU64> {
        self.by_track.lock().unwrap_or_else(|e| e.into_inner()).entry(track_id).or_default().clone()
    }
}

/// The webrtc driver's callbacks: publish states to watchers and count remote tracks' packets.
struct Events {
    gathering: watch::Sender<RTCIceGatheringState>,
    connection: watch::Sender<RTCPeerConnectionState>,
    received: Arc<Received>,
    shutdown: CancellationToken,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.connection.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Callbacks run on the connection's driver: count in a task of our own.
        let counter = self.received.counter(track.track_id().await);
        let received = self.received.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = track.poll() => event,
                };
                match event {
                    Some(TrackRemoteEvent::OnRtpPacket(_)) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        received.total.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        });
    }
}

impl MediaPeer {
    /// Creates the peer connection, adds a send-only transceiver per track in `publish`, and
    /// returns the offer to send as `MediaOffer` (with all local candidates in it).
    /// [`published`](Self::published) then names each track's mid.
    ///
    /// With nothing to publish the offer has no m-line, so no transport: the connection then
    /// comes up with the first offer that adds a track, from either side.
    pub async fn new(config: &MediaConfig, publish: &[Publish]) -> Result<(MediaPeer, String), MediaError> {
        let peer = MediaPeer::build(config).await?;
        let mut added = Vec::with_capacity(publish.len());
        for &kind in publish {
            added.push(peer.add_transceiver(kind).await?);
        }
        let offer = peer.local_offer().await?;
        for pending in added {
            peer.finish_publish(pending).await?;
        }
        Ok((peer, offer))
    }

    /// Creates a peer that starts by answering `offer` (publishing nothing until it re-offers
    /// with [`publish`](Self::publish)); returns the answer. The edge never needs this: it is the
    /// other end of a peer-to-peer test, or a stand-in for the edge.
    pub async fn accept(config: &MediaConfig, offer: &str) -> Result<(MediaPeer, String), MediaError> {
        let peer = MediaPeer::build(config).await?;
        let answer = peer.answer_offer(offer).await?;
        Ok((peer, answer))
    }

    async fn build(config: &MediaConfig) -> Result<MediaPeer, MediaError> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_default_codecs()?;
        // RTCP receiver/sender reports and NACK handling, as a browser would send the edge.
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let settings = SettingEngineBuilder::new().with_multicast_dns_mode(MulticastDnsMode::Disabled).build();
        let ice_servers = config
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();

        let (gathering_tx, gathering) = watch::channel(RTCIceGatheringState::New);
        let (connection_tx, connection) = watch::channel(RTCPeerConnectionState::New);
        let received = Arc::new(Received::default());
        let shutdown = CancellationToken::new();
        let events = Events {
            gathering: gathering_tx,
            connection: connection_tx,
            received: received.clone(),
            shutdown: shutdown.clone(),
        };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::default().with_ice_servers(ice_servers).build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(Arc::new(events))
            .with_udp_addrs(config.udp_bind.clone())
            .build()
            .await?;
        Ok(MediaPeer {
            pc: Arc::new(pc),
            outgoing: Arc::default(),
            received,
            samples_sent: Arc::default(),
            gathering,
            connection,
            shutdown,
            sending: Mutex::new(None),
            next_track: AtomicU64::new(0),
        })
    }

    /// Applies the answer to our latest offer (`EdgeFrame::MediaAnswer`).
    pub async fn apply_answer(&self, sdp: &str) -> Result<(), MediaError> {
        let answer = RTCSessionDescription::answer(sdp.to_owned()).map_err(MediaError::RemoteSdp)?;
        self.pc.set_remote_description(answer).await.map_err(MediaError::RemoteSdp)
    }

    /// Answers a remote offer (`EdgeFrame::MediaOffer`) and returns the answer for
    /// `ClientFrame::MediaAnswer`. Fails with [`MediaError::OfferOutstanding`], changing nothing,
    /// while an offer of ours awaits its answer: the edge's offer is then to be ignored.
    pub async fn answer_offer(&self, sdp: &str) -> Result<String, MediaError> {
        if self.has_outstanding_offer().await {
            return Err(MediaError::OfferOutstanding);
        }
        let offer = RTCSessionDescription::offer(sdp.to_owned()).map_err(MediaError::RemoteSdp)?;
        self.pc.set_remote_description(offer).await.map_err(MediaError::RemoteSdp)?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.local_sdp().await
    }

    /// Whether an offer of ours is waiting for its answer (signalling state `have-local-offer`).
    pub async fn has_outstanding_offer(&self) -> bool {
        self.pc.pending_local_description().await.is_some()
    }

    /// Adds a track and returns the re-offer announcing it; its mid is then in
    /// [`published`](Self::published). If sending, samples start flowing on it too.
    pub async fn publish(&self, kind: Publish) -> Result<String, MediaError> {
        let pending = self.add_transceiver(kind).await?;
        let offer = self.local_offer().await?;
        self.finish_publish(pending).await?;
        Ok(offer)
    }

    /// Stops sending the track on `mid` and returns the re-offer that makes its transceiver
    /// inactive.
    pub async fn unpublish(&self, mid: &str) -> Result<String, MediaError> {
        let out = {
            let mut outgoing = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
            let at =
                outgoing.iter().position(|o| o.mid == mid).ok_or_else(|| MediaError::UnknownMid(mid.to_owned()))?;
            outgoing.remove(at)
        };
        self.pc.remove_track(&out.sender).await?;
        self.local_offer().await
    }

    /// The published tracks and their mids, in publication order.
    pub fn published(&self) -> Vec<PublishedTrack> {
        self.outgoing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|o| PublishedTrack { mid: o.mid.clone(), kind: o.kind })
            .collect()
    }

    /// Pauses (a local mute: no samples, so no RTP) or resumes the track on `mid`. The edge is
    /// told separately, with `ClientFrame::TrackMute`.
    pub fn set_paused(&self, mid: &str, paused: bool) -> Result<(), MediaError> {
        let outgoing = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
        let out = outgoing.iter().find(|o| o.mid == mid).ok_or_else(|| MediaError::UnknownMid(mid.to_owned()))?;
        out.paused.store(paused, Ordering::Relaxed);
        Ok(())
    }

    /// Starts writing synthetic samples to every published track (Opus every 20 ms, VP8 every
    /// 40 ms) until [`stop_sending`](Self::stop_sending) or close. Idempotent. Samples written
    /// before the connection is up are dropped by the stack.
    pub fn start_sending(&self) {
        let mut sending = self.sending.lock().unwrap_or_else(|e| e.into_inner());
        if sending.is_some() {
            return;
        }
        let stop = self.shutdown.child_token();
        *sending = Some(stop.clone());
        tokio::spawn(write_samples(self.outgoing.clone(), self.samples_sent.clone(), stop));
    }

    /// Stops the task started by [`start_sending`](Self::start_sending).
    pub fn stop_sending(&self) {
        if let Some(stop) = self.sending.lock().unwrap_or_else(|e| e.into_inner()).take() {
            stop.cancel();
        }
    }

    /// Samples (encoded frames) handed to the stack without error so far.
    pub fn samples_sent(&self) -> u64 {
        self.samples_sent.load(Ordering::Relaxed)
    }

    /// RTP packets received so far on all remote tracks.
    pub fn packets_received(&self) -> u64 {
        self.received.total.load(Ordering::Relaxed)
    }

    /// RTP packets received so far on the receiving transceiver `mid` (0 if none arrived).
    pub async fn packets_received_on(&self, mid: &str) -> u64 {
        for transceiver in self.pc.get_transceivers().await {
            if transceiver.mid().await.ok().flatten().as_deref() != Some(mid) {
                continue;
            }
            let Ok(Some(receiver)) = transceiver.receiver().await else { return 0 };
            let track_id = receiver.track().track_id().await;
            let by_track = self.received.by_track.lock().unwrap_or_else(|e| e.into_inner());
            return by_track.get(&track_id).map_or(0, |c| c.load(Ordering::Relaxed));
        }
        0
    }

    /// The current connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.connection.borrow()
    }

    /// Waits until the connection is up (ICE and DTLS done), at most `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), MediaError> {
        let mut connection = self.connection.clone();
        let reached = tokio::time::timeout(
            within,
            connection.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .map_err(|_| MediaError::ConnectTimeout(within))?
        .map(|s| *s)
        // The sender lives in the driver's handler; it is gone only once the connection is.
        .unwrap_or(RTCPeerConnectionState::Closed);
        match reached {
            RTCPeerConnectionState::Connected => Ok(()),
            other => Err(MediaError::ConnectionEnded(other)),
        }
    }

    /// The remote address of the selected ICE candidate pair: with an edge, its media port.
    pub async fn selected_remote(&self) -> Option<SocketAddr> {
        for transceiver in self.pc.get_transceivers().await {
            let transport = match transceiver.receiver().await {
                Ok(Some(receiver)) => receiver.transport().await,
                _ => match transceiver.sender().await {
                    Ok(Some(sender)) => sender.transport().await,
                    _ => continue,
                },
            };
            let Ok(Some(dtls)) = transport else { continue };
            if let Ok(Some(pair)) = dtls.ice_transport().get_selected_candidate_pair().await {
                let remote = pair.remote();
                let ip: IpAddr = remote.address.parse().ok()?;
                return Some(SocketAddr::new(ip, remote.port));
            }
        }
        None
    }

    /// Stops sending and receiving and closes the connection (DTLS close_notify to the remote).
    pub async fn close(self) {
        self.shutdown.cancel();
        // Only fails if the core cannot close; the driver is stopped either way.
        let _ = self.pc.close().await;
    }

    async fn add_transceiver(&self, kind: Publish) -> Result<PendingTrack, MediaError> {
        let n = self.next_track.fetch_add(1, Ordering::Relaxed);
        let ssrc = rand::random::<u32>();
        let (codec_kind, codec, name) = match kind {
            Publish::Audio => (
                RtpCodecKind::Audio,
                RTCRtpCodec {
                    mime_type: MIME_TYPE_OPUS.to_owned(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                    rtcp_feedback: vec![],
                },
                "audio",
            ),
            Publish::Video => (
                RtpCodecKind::Video,
                RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                "video",
            ),
        };
        let encoding = RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            active: true,
            codec,
            ..Default::default()
        };
        let track_id = format!("{name}-{n}");
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(STREAM_ID.to_owned(), track_id.clone(), track_id, codec_kind, vec![encoding]),
        )?);
        // A transceiver of its own, send-only: `add_track` would reuse a receiving transceiver
        // of the same kind that the edge created, mixing two participants' media on one mid.
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![STREAM_ID.to_owned()],
            send_encodings: vec![],
        };
        let transceiver = self.pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init)).await?;
        Ok(PendingTrack { kind, ssrc, track, transceiver })
    }

    /// Records a track added by `add_transceiver` once the offer (which assigns mids) is set.
    async fn finish_publish(&self, pending: PendingTrack) -> Result<(), MediaError> {
        let mid = pending.transceiver.mid().await?.ok_or(MediaError::Missing("mid of a published transceiver"))?;
        let sender =
            pending.transceiver.sender().await?.ok_or(MediaError::Missing("sender of a published transceiver"))?;
        self.outgoing.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::new(Outgoing {
            kind: pending.kind,
            mid,
            ssrc: pending.ssrc,
            track: pending.track,
            sender,
            paused: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            payload_type: OnceLock::new(),
        }));
        Ok(())
    }

    async fn local_offer(&self) -> Result<String, MediaError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.local_sdp().await
    }

    /// The local description once gathering is complete, so it carries every candidate.
    async fn local_sdp(&self) -> Result<String, MediaError> {
        let mut gathering = self.gathering.clone();
        tokio::time::timeout(GATHER_TIMEOUT, gathering.wait_for(|s| *s == RTCIceGatheringState::Complete))
            .await
            .map_err(|_| MediaError::GatherTimeout(GATHER_TIMEOUT))?
            .map_err(|_| MediaError::ConnectionEnded(RTCPeerConnectionState::Closed))?;
        let local = self.pc.local_description().await.ok_or(MediaError::Missing("local description"))?;
        Ok(local.sdp)
    }
}

impl Drop for MediaPeer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A track added to the connection whose mid is not known until the next local offer.
struct PendingTrack {
    kind: Publish,
    ssrc: u32,
    track: Arc<TrackLocalStaticSample>,
    transceiver: Arc<dyn RtpTransceiver>,
}

/// The sending task: every 20 ms an Opus frame to each audio track, every other tick a VP8
/// frame to each video track, skipping paused ones.
async fn write_samples(outgoing: Arc<Mutex<Vec<Arc<Outgoing>>>>, sent: Arc<AtomicU64>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(synthetic::AUDIO_FRAME);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let video_due = tick.is_multiple_of(2);
        tick += 1;
        let tracks: Vec<Arc<Outgoing>> = outgoing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for out in tracks {
            if out.paused.load(Ordering::Relaxed) || (out.kind == Publish::Video && !video_due) {
                continue;
            }
            let Some(payload_type) = payload_type(&out).await else { continue };
            let (data, duration) = match out.kind {
                Publish::Audio => (synthetic::opus_silence(), synthetic::AUDIO_FRAME),
                Publish::Video => {
                    (synthetic::vp8_frame(out.frames.fetch_add(1, Ordering::Relaxed)), synthetic::VIDEO_FRAME)
                }
            };
            let sample = Sample { data, duration, ..Sample::new(Instant::now()) };
            if out.track.sample_writer(out.ssrc, payload_type).write_sample(&sample).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The track's negotiated payload type, once negotiation has given it one.
async fn payload_type(out: &Outgoing) -> Option<u8> {
    if let Some(pt) = out.payload_type.get() {
        return Some(*pt);
    }
    let params = out.sender.get_parameters().await.ok()?;
    let pt = params.rtp_parameters.codecs.first()?.payload_type;
    Some(*out.payload_type.get_or_init(|| pt))
}
