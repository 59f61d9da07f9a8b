//! Rust client library for duet: ask the locator for a session, then speak the session protocol
//! with the edge. Tests, benchmarks and the `duet` terminal client use it; plugin authors can too.
//!
//! ```no_run
//! # async fn demo() -> Result<(), duet_client::ClientError> {
//! use duet_client::{LocatorClient, PlacementRequest, Event};
//! let locator = LocatorClient::new("http://127.0.0.1:8080");
//! let placed = locator.create_session(&PlacementRequest::default()).await?;
//! let mut host = duet_client::connect(&placed.edge.url, &placed.token).await?;
//! host.send(0, 1, b"hello".to_vec())?;
//! while let Some(event) = host.recv().await {
//!     if let Event::Frame(frame) = event { println!("{frame:?}"); }
//! }
//! # Ok(()) }
//! ```
//!
//! A [`Session`] reads in its own task and hands decoded frames over a bounded channel, so
//! [`Session::recv`] is cancel-safe and can sit in a `select!` beside anything else.

#[cfg(feature = "media")]
pub mod media;

use std::time::Duration;

use bytes::Bytes;
use duet_proto::presence::{PresenceClientFrame, PresenceFrame, PRESENCE_PROTOCOL_VERSION};
use duet_proto::session::{ClientFrame, EdgeFrame, Participant, ParticipantId, SESSION_PROTOCOL_VERSION};
use duet_ws::{Limits, Message, Writer};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How long to wait for `welcome` after sending `join` (or for `resumed` after `resume`).
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a guest of a session that needs approval waits for the host's decision.
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(600);
/// Decoded frames buffered between the reader task and the application.
const EVENT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("locator request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("locator answered {status}: {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error(transparent)]
    Connect(#[from] duet_ws::ConnectError),
    #[error("the edge closed the connection: {code:?} {reason}")]
    Closed { code: Option<u16>, reason: String },
    #[error("no welcome within {0:?}")]
    WelcomeTimeout(Duration),
    #[error("unexpected frame from the edge: {0}")]
    Unexpected(String),
    #[error("message could not be encoded: {0}")]
    Encode(#[from] duet_proto::session::EncodeError),
    #[error("send queue full or connection closed: {0}")]
    Send(#[from] duet_ws::SendError),
}

/// The optional body of the placement endpoints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlacementRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Session options (create only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<SessionOptions>,
}

/// What a host chooses for its session at creation.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SessionOptions {
    /// Guests wait for the host's `admit`.
    pub require_approval: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
}

/// The locator's answer: where to connect and with which token.
#[derive(Debug, Clone, Deserialize)]
pub struct Placement {
    pub session_id: String,
    pub participant_id: u32,
    pub role: String,
    pub edge: PlacedEdge,
    pub token: String,
    pub expires_at: String,
    /// STUN and TURN servers for WebRTC media (empty when the locator has none configured).
    #[serde(default)]
    pub ice_servers: Vec<IceServer>,
}

/// An ICE server of a placement answer, shaped like the browser's `RTCIceServer`: TURN entries
/// carry this participant's username and credential, STUN entries neither.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// The locator's answer to a presence request.
#[derive(Debug, Clone, Deserialize)]
pub struct PresencePlacement {
    pub team: String,
    pub edge: PlacedEdge,
    pub token: String,
    pub expires_at: String,
}

/// A team presence connection: snapshots of who is online and which sessions are live.
pub struct Presence {
    writer: Writer,
    frames: mpsc::Receiver<Result<PresenceFrame, Event>>,
}

impl Presence {
    /// The next frame; `Err` carries the close when the connection ended.
    pub async fn recv(&mut self) -> Option<Result<PresenceFrame, Event>> {
        self.frames.recv().await
    }

    pub fn ping(&self, nonce: u64) -> Result<(), ClientError> {
        Ok(self.writer.send(PresenceClientFrame::Ping { nonce }.encode()?)?)
    }

    pub fn close(&self) {
        self.writer.close(1000, "bye");
    }
}

/// Opens a presence websocket at `url` (from [`LocatorClient::presence`]) and says hello.
pub async fn connect_presence(url: &str, token: &str) -> Result<Presence, ClientError> {
    let mut reader = duet_ws::connect(url, &[], client_limits()).await?;
    let writer = reader.writer().clone();
    let hello = PresenceClientFrame::Hello { version: PRESENCE_PROTOCOL_VERSION, token: token.to_owned() };
    writer.send(hello.encode()?)?;
    let (tx, frames) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(async move {
        loop {
            let item = match reader.next().await {
                Ok(Message::Binary(b)) => match PresenceFrame::decode(&b) {
                    Ok(f) => Ok(f),
                    Err(e) => Err(Event::Closed { code: None, reason: format!("undecodable frame: {e}") }),
                },
                Ok(Message::Text(_)) => Err(Event::Closed { code: None, reason: "text frame".into() }),
                Ok(Message::Close { code, reason }) => Err(Event::Closed { code, reason }),
                Err(e) => Err(Event::Closed { code: None, reason: e.to_string() }),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Presence { writer, frames })
}

#[derive(Debug, Clone, Deserialize)]
pub struct PlacedEdge {
    pub id: String,
    pub region: String,
    pub url: String,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: ApiErrorInner,
}

#[derive(Deserialize)]
struct ApiErrorInner {
    code: String,
    message: String,
}

/// Talks to the locator's placement API.
#[derive(Clone)]
pub struct LocatorClient {
    base: String,
    http: reqwest::Client,
    /// A client key (`duetck_...`) or an OpenID Connect ID token, sent as a bearer credential
    /// when the locator admits clients by `keys` or `oidc`.
    credential: Option<String>,
}

impl LocatorClient {
    /// A client for `http://` or `https://` locator URLs (system roots for TLS).
    pub fn new(base_url: &str) -> Self {
        Self::with_ca_certs(base_url, &[]).unwrap_or_else(|_| LocatorClient {
            base: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            credential: None,
        })
    }

    /// A client that also trusts `certs` (DER) for `https://` locator URLs.
    pub fn with_ca_certs(base_url: &str, certs: &[Vec<u8>]) -> Result<Self, ClientError> {
        duet_ws::tls::install_default_provider();
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        for der in certs {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(der)?);
        }
        Ok(LocatorClient { base: base_url.trim_end_matches('/').to_owned(), http: builder.build()?, credential: None })
    }

    /// Sends `credential` (a team's client key, or an ID token from the operator's OpenID
    /// provider) with every request, as `Authorization: Bearer`.
    pub fn with_credential(mut self, credential: impl Into<String>) -> Self {
        self.credential = Some(credential.into());
        self
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(c) => req.bearer_auth(c),
            None => req,
        }
    }

    pub async fn create_session(&self, req: &PlacementRequest) -> Result<Placement, ClientError> {
        self.post(&format!("{}/api/v1/sessions", self.base), req).await
    }

    pub async fn join_session(&self, session_id: &str, req: &PlacementRequest) -> Result<Placement, ClientError> {
        self.post(&format!("{}/api/v1/sessions/{session_id}/join", self.base), req).await
    }

    /// Where `team`'s presence is served and a token for it (`user`: the user's id and name).
    pub async fn presence(&self, team: &str, user: Option<&User>) -> Result<PresencePlacement, ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/teams/", self.base))
            .map_err(|e| ClientError::Unexpected(format!("locator url: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| ClientError::Unexpected("locator url cannot have a path".into()))?
            .pop_if_empty()
            .push(team)
            .push("presence");
        if let Some(u) = user {
            url.query_pairs_mut().append_pair("user", &u.id).append_pair("name", &u.name);
        }
        answer(self.authorized(self.http.get(url)).send().await?).await
    }

    async fn post(&self, url: &str, req: &PlacementRequest) -> Result<Placement, ClientError> {
        answer(self.authorized(self.http.post(url).json(req)).send().await?).await
    }
}

/// A locator answer: the JSON body on success, else [`ClientError::Api`] from the error body.
async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp.json().await?);
    }
    let body = resp.bytes().await?;
    let (code, message) = match serde_json::from_slice::<ApiErrorBody>(&body) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => ("unknown".into(), String::from_utf8_lossy(&body).into_owned()),
    };
    Err(ClientError::Api { status: status.as_u16(), code, message })
}

/// What a connected participant receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Frame(EdgeFrame),
    /// The connection ended; `code` is the close code if the edge sent one.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

/// The `welcome` a participant got (or, after [`resume`], what it resumed).
#[derive(Debug, Clone)]
pub struct Welcome {
    pub participant_id: ParticipantId,
    /// The session's latest sequence number: before this participant's join, or after a resume
    /// the last one replayed.
    pub seq: u64,
    pub resume_secret: Bytes,
    /// Everyone holding a place (empty after a resume: the replayed events tell what changed).
    pub participants: Vec<Participant>,
    pub away: Vec<ParticipantId>,
    /// The guest waited for the host's approval before this welcome.
    pub waited: bool,
    /// After a resume: how many events were replayed.
    pub replayed: Option<u32>,
}

/// A joined participant's connection.
pub struct Session {
    pub welcome: Welcome,
    writer: Writer,
    events: mpsc::Receiver<Event>,
    /// The highest seq handed to the application by [`Session::recv`].
    last_seq: u64,
    /// Dropped with the session: its reader task then ends and the connection goes away.
    _abort: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Cloneable sending half of a [`Session`], for sending from another task.
#[derive(Clone)]
pub struct SessionSender {
    writer: Writer,
}

impl SessionSender {
    /// Sends `payload` to `to` (0: everyone else), tagged with `message_id` (0: no ack wanted).
    pub fn send(&self, to: ParticipantId, message_id: u64, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        let frame = ClientFrame::Send { message_id, to, payload: payload.into() }.encode()?;
        Ok(self.writer.send(frame)?)
    }

    pub fn ping(&self, nonce: u64) -> Result<(), ClientError> {
        Ok(self.writer.send(ClientFrame::Ping { nonce }.encode()?)?)
    }

    /// Leaves the session on purpose; the edge then closes the connection.
    pub fn leave(&self) -> Result<(), ClientError> {
        Ok(self.writer.send(ClientFrame::Leave.encode()?)?)
    }

    /// (Host) ends the session for everyone.
    pub fn end_session(&self) -> Result<(), ClientError> {
        Ok(self.writer.send(ClientFrame::EndSession.encode()?)?)
    }

    /// (Host) admits or refuses a guest waiting for approval.
    pub fn admit(&self, participant_id: ParticipantId, admit: bool) -> Result<(), ClientError> {
        Ok(self.writer.send(ClientFrame::Admit { participant_id, admit }.encode()?)?)
    }

    /// Sends a text message, which the edge must refuse (for protocol tests).
    pub fn send_text(&self, text: &str) -> Result<(), ClientError> {
        Ok(self.writer.send_text(Bytes::copy_from_slice(text.as_bytes()))?)
    }

    /// Sends raw bytes as one binary message (for protocol tests).
    pub fn send_raw(&self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        Ok(self.writer.send(bytes.into())?)
    }
}

impl Session {
    pub fn sender(&self) -> SessionSender {
        SessionSender { writer: self.writer.clone() }
    }

    pub fn send(&self, to: ParticipantId, message_id: u64, payload: impl Into<Bytes>) -> Result<(), ClientError> {
        self.sender().send(to, message_id, payload)
    }

    pub fn ping(&self, nonce: u64) -> Result<(), ClientError> {
        self.sender().ping(nonce)
    }

    pub fn leave(&self) -> Result<(), ClientError> {
        self.sender().leave()
    }

    /// The highest sequence number this session has handed out through [`Session::recv`]
    /// (events and acks): what [`resume`] needs. Frames received but not yet read do not count,
    /// so a resume replays them.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Drops the connection without a close frame, as a lost network would (for tests).
    pub fn abort(self) {
        self.writer.abort();
    }

    /// The next event; `None` after the connection has ended and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.events.recv().await;
        if let Some(Event::Frame(f)) = &event {
            if let Some(seq) = sequence_number(f) {
                self.last_seq = self.last_seq.max(seq);
            }
        }
        event
    }

    /// Closes the connection without `leave` (as a dropped network would, but cleanly).
    pub fn close(&self) {
        self.writer.close(1000, "bye");
    }
}

/// Client-side limits: generous, the edge enforces its own.
fn client_limits() -> Limits {
    Limits { max_message_bytes: 64 << 20, max_queued_bytes: 256 << 20 }
}

/// Opens a websocket to `edge_url` and returns it before any frame is sent (for protocol tests).
pub async fn open_raw(edge_url: &str) -> Result<(SessionSender, mpsc::Receiver<Result<Bytes, Event>>), ClientError> {
    let mut reader = duet_ws::connect(edge_url, &[], client_limits()).await?;
    let writer = reader.writer().clone();
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(async move {
        loop {
            let item = match reader.next().await {
                Ok(Message::Binary(b)) => Ok(b),
                Ok(Message::Text(b)) => Ok(b),
                Ok(Message::Close { code, reason }) => Err(Event::Closed { code, reason }),
                Err(e) => Err(Event::Closed { code: None, reason: e.to_string() }),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Ok((SessionSender { writer }, rx))
}

/// Connects to a session on its edge: sends `join` with `token` and waits for `welcome` (a guest
/// of a session that needs approval waits up to [`ADMISSION_TIMEOUT`] for the host's decision).
/// `wss://` URLs are verified against the system roots.
pub async fn connect(edge_url: &str, token: &str) -> Result<Session, ClientError> {
    connect_with_tls(edge_url, token, None).await
}

/// Like [`connect`], with a TLS configuration for `wss://` URLs (see `duet_ws::tls`).
pub async fn connect_with_tls(
    edge_url: &str,
    token: &str,
    tls: Option<std::sync::Arc<duet_ws::tls::ClientConfig>>,
) -> Result<Session, ClientError> {
    let join = ClientFrame::Join { version: SESSION_PROTOCOL_VERSION, token: token.to_owned() };
    enter(edge_url, join, tls).await
}

/// Reconnects a participant whose connection was lost: sends `resume` with the secret from its
/// welcome and the last sequence number it received ([`Session::last_seq`]). The events it missed
/// arrive first, then live traffic. Refusals are [`ClientError::Closed`] with 4105 (resync
/// needed: join again with a token) or 4106 (no such place).
pub async fn resume(
    edge_url: &str,
    participant_id: ParticipantId,
    resume_secret: Bytes,
    last_seq: u64,
) -> Result<Session, ClientError> {
    let frame = ClientFrame::Resume { version: SESSION_PROTOCOL_VERSION, participant_id, resume_secret, last_seq };
    enter(edge_url, frame, None).await
}

/// Sends the first frame and waits for `welcome` (after `waiting`, if any) or `resumed`.
async fn enter(
    edge_url: &str,
    first: ClientFrame,
    tls: Option<std::sync::Arc<duet_ws::tls::ClientConfig>>,
) -> Result<Session, ClientError> {
    let mut reader = duet_ws::connect_with(edge_url, &[], client_limits(), tls).await?;
    let writer = reader.writer().clone();
    let (resume_pid, resume_secret, resume_from) = match &first {
        ClientFrame::Resume { participant_id, resume_secret, last_seq, .. } => {
            (*participant_id, resume_secret.clone(), *last_seq)
        }
        _ => (0, Bytes::new(), 0),
    };
    writer.send(first.encode()?)?;
    let mut waited = false;
    let welcome = loop {
        let timeout = if waited { ADMISSION_TIMEOUT } else { WELCOME_TIMEOUT };
        let next =
            tokio::time::timeout(timeout, reader.next()).await.map_err(|_| ClientError::WelcomeTimeout(timeout))?;
        match next {
            Ok(Message::Binary(b)) => match EdgeFrame::decode(&b) {
                Ok(EdgeFrame::Welcome { participant_id, seq, resume_secret, participants, away, .. }) => {
                    break Welcome { participant_id, seq, resume_secret, participants, away, waited, replayed: None };
                }
                Ok(EdgeFrame::Resumed { seq, replayed }) => {
                    break Welcome {
                        participant_id: resume_pid,
                        seq,
                        resume_secret: resume_secret.clone(),
                        participants: Vec::new(),
                        away: Vec::new(),
                        waited,
                        replayed: Some(replayed),
                    };
                }
                Ok(EdgeFrame::Waiting) if !waited => waited = true,
                Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
                Err(e) => return Err(ClientError::Unexpected(e.to_string())),
            },
            Ok(Message::Close { code, reason }) => return Err(ClientError::Closed { code, reason }),
            Ok(Message::Text(_)) => return Err(ClientError::Unexpected("text frame".into())),
            Err(e) => return Err(ClientError::Closed { code: None, reason: e.to_string() }),
        }
    };
    let last_seq = if welcome.replayed.is_some() { resume_from } else { welcome.seq };
    let (tx, events) = mpsc::channel(EVENT_QUEUE);
    let (abort, mut aborted) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = reader.next() => next,
                // `abort`, or the `Session` was dropped: drop the read half too, so the
                // connection really goes away.
                _ = &mut aborted => return,
            };
            let event = match next {
                Ok(Message::Binary(b)) => match EdgeFrame::decode(&b) {
                    Ok(f) => Event::Frame(f),
                    Err(e) => Event::Closed { code: None, reason: format!("undecodable frame: {e}") },
                },
                Ok(Message::Text(_)) => Event::Closed { code: None, reason: "text frame".into() },
                Ok(Message::Close { code, reason }) => Event::Closed { code, reason },
                Err(e) => Event::Closed { code: None, reason: e.to_string() },
            };
            let end = matches!(event, Event::Closed { .. });
            if tx.send(event).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Session { welcome, writer, events, last_seq, _abort: Some(abort) })
}

/// The sequence number a frame carries, if any (`ack` counts: everything before it was delivered).
pub fn sequence_number(frame: &EdgeFrame) -> Option<u64> {
    match frame {
        EdgeFrame::ParticipantJoined { seq, .. }
        | EdgeFrame::ParticipantLeft { seq, .. }
        | EdgeFrame::ParticipantAway { seq, .. }
        | EdgeFrame::ParticipantBack { seq, .. }
        | EdgeFrame::Message { seq, .. }
        | EdgeFrame::Ack { seq, .. } => Some(*seq),
        _ => None,
    }
}
