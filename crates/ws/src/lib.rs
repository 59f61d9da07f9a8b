//! One websocket connection as duet uses it everywhere (edge sessions, the link, clients).
//!
//! fastwebsockets' `read_frame` is not cancel-safe, so a connection cannot `select!` over reading
//! and writing in one task. [`split`] therefore turns an upgraded connection into:
//! - a [`Reader`], owned by the connection's task, that yields whole messages (fragments are
//!   reassembled up to the same size limit as single frames, so a peer cannot grow memory by
//!   fragmenting), and
//! - a [`Writer`] handle to a writer task. The writer's queue is bounded in *bytes*
//!   ([`Writer::send`] fails with [`SendError::Full`] past the limit), so a peer that stops
//!   reading costs at most that much memory. Pongs count against the limit (one that does not
//!   fit is skipped); the final close and the echo of the peer's close bypass it.
//!
//! The writer task takes its whole queue at once and writes it with vectored writes: a server's
//! data frames go out as their header (formatted by fastwebsockets) and the payload as queued, with
//! no copy, up to [`GATHER`] frames per system call; it flushes once the queue is empty. Once a
//! close is queued, the writer gets [`CLOSE_LINGER`] to deliver what is left; a peer that does not
//! read by then is dropped, so a stalled peer cannot pin its queue in memory.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

pub use fastwebsockets::Role;
use tokio_util::sync::CancellationToken;

/// How long a connection may take to deliver what was queued before its close; then it is
/// dropped without further ado.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Frames written by one vectored write, at most (twice as many slices: header and payload).
pub const GATHER: usize = 32;

pub mod stream;
pub mod tls;

pub use stream::{server_stream, SplitIo, Stream};

/// An upgraded HTTP connection as hyper hands it over: the stream under TLS websockets (plain-TCP
/// ones are read and written on their `TcpStream`, see [`Stream`]).
pub type UpgradedIo = TokioIo<Upgraded>;

/// What [`connect`] and its variants answer: a client connection's reader (its writer is
/// [`Reader::writer`]).
pub type ClientReader = Reader<Stream>;

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message accepted, in bytes; a frame declaring more is refused before its payload
    /// is read.
    pub max_message_bytes: usize,
    /// Most bytes of data frames queued for the peer before [`Writer::send`] refuses more.
    pub max_queued_bytes: usize,
}

/// A whole message read from the peer.
#[derive(Debug)]
pub enum Message {
    Binary(Bytes),
    Text(Bytes),
    /// The peer closed the connection (the close has been echoed).
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// Why reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("connection closed without a close frame")]
    Eof,
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("websocket protocol error: {0}")]
    Protocol(WebSocketError),
    #[error("i/o error: {0}")]
    Io(std::io::Error),
}

impl From<WebSocketError> for ReadError {
    fn from(e: WebSocketError) -> Self {
        match e {
            WebSocketError::UnexpectedEOF => ReadError::Eof,
            WebSocketError::IoError(io) => ReadError::Io(io),
            other => ReadError::Protocol(other),
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("peer is not reading: queued bytes over the limit")]
    Full,
    #[error("connection closed")]
    Closed,
}

/// One queued frame, in the form the writer task puts on the wire.
enum Outbound {
    /// A server's data frame: its header is formatted as it is written and its payload goes out
    /// as queued, without a copy. Binary frames count against the byte budget, text ones do not.
    Frame { opcode: OpCode, payload: Bytes },
    /// A frame already whole, header and payload: everything a client sends (masked, which takes
    /// a copy anyway) and control frames. `budget` is what it counts against the byte budget;
    /// `last` ends the connection once written (a close).
    Whole { bytes: Vec<u8>, budget: usize, last: bool },
    /// Stop writing and drop the connection without a close frame.
    Abort,
}

impl Outbound {
    /// A frame of `role`'s side, whole: masked with a fresh key for a client (RFC 6455, 5.3).
    fn whole(role: Role, mut frame: Frame<'_>, budget: usize) -> Outbound {
        let last = frame.opcode == OpCode::Close;
        if role == Role::Client {
            frame.mask();
        }
        let mut bytes = Vec::new();
        let len = frame.write(&mut bytes).len();
        bytes.truncate(len);
        Outbound::Whole { bytes, budget, last }
    }

    /// A data frame of `role`'s side carrying `payload`. `budget` is what the caller added to the
    /// byte budget for it: a server's frame gives it back as [`Outbound::budget`] works it out
    /// (a binary frame's payload, nothing for text).
    fn data(role: Role, opcode: OpCode, payload: Bytes, budget: usize) -> Outbound {
        debug_assert_eq!(budget, if opcode == OpCode::Binary { payload.len() } else { 0 });
        match role {
            Role::Server => Outbound::Frame { opcode, payload },
            Role::Client => Outbound::whole(role, Frame::new(true, opcode, None, Payload::Borrowed(&payload)), budget),
        }
    }

    /// Bytes it puts on the wire.
    fn wire_len(&self) -> usize {
        match self {
            Outbound::Frame { payload, .. } => unmasked_head_len(payload.len()) + payload.len(),
            Outbound::Whole { bytes, .. } => bytes.len(),
            Outbound::Abort => 0,
        }
    }

    /// Bytes it counts against the byte budget.
    fn budget(&self) -> usize {
        match self {
            Outbound::Frame { opcode: OpCode::Binary, payload } => payload.len(),
            Outbound::Frame { .. } | Outbound::Abort => 0,
            Outbound::Whole { budget, .. } => *budget,
        }
    }
}

/// The length of an unmasked frame header for a payload of `len` bytes (RFC 6455, 5.2), as
/// fastwebsockets' `Frame::fmt_head` formats it.
fn unmasked_head_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len < 65_536 {
        4
    } else {
        10
    }
}

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEAD: usize = 14;

/// What a connection's writers and its writer task share. One allocation per connection: a
/// plain queue under a lock rather than a channel, whose blocks would cost an idle connection
/// more than a kilobyte ([idle scale](../../../docs/benchmarks.md#idle-scale-s4)).
struct Shared {
    queue: Mutex<Queue>,
    /// Which side of the connection this is: a client masks what it sends.
    role: Role,
    /// Wakes [`Writer::closed`] when the writer task has ended.
    gone: Notify,
    /// Bytes of data frames queued and not yet written; the writer subtracts what it writes.
    queued: AtomicUsize,
    /// Set once a close has been queued: nothing is accepted after it.
    closing: AtomicBool,
    /// Live [`Writer`] handles: when the last is dropped, the writer task writes what is queued
    /// and ends, dropping the connection.
    handles: AtomicUsize,
}

struct Queue {
    items: VecDeque<Outbound>,
    /// The writer task, while it waits for something to write: whoever queues takes and wakes it
    /// (under the lock it takes anyway, so a wake-up costs no synchronisation of its own).
    waiting: Option<Waker>,
    /// The writer task has ended: nothing is accepted any more.
    ended: bool,
    /// Every [`Writer`] handle is gone: nothing more can be queued.
    orphaned: bool,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while holding the lock (pushes and swaps); a poisoned queue is still whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `out` for the writer task, unless it has ended.
    fn push(&self, out: Outbound) -> Result<(), SendError> {
        let mut queue = self.queue();
        if queue.ended {
            return Err(SendError::Closed);
        }
        queue.items.push_back(out);
        let waiting = queue.waiting.take();
        drop(queue);
        if let Some(writer) = waiting {
            writer.wake();
        }
        Ok(())
    }
}

/// Marks the writer task's end however it ends (done, linger over, runtime shut down): later
/// sends fail with [`SendError::Closed`], what was queued is dropped, [`Writer::closed`] resolves.
struct EndOnDrop(Arc<Shared>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let (dropped, waiting) = {
            let mut queue = self.0.queue();
            queue.ended = true;
            (std::mem::take(&mut queue.items), queue.waiting.take())
        };
        drop((dropped, waiting));
        self.0.gone.notify_waiters();
    }
}

/// Handle to a connection's writer task. Cheap to clone; all clones share one byte budget.
pub struct Writer {
    shared: Arc<Shared>,
    /// Cancelled when a close is queued; the writer's linger timer starts then.
    close_requested: CancellationToken,
    limit: usize,
}

impl Clone for Writer {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::AcqRel);
        Writer { shared: self.shared.clone(), close_requested: self.close_requested.clone(), limit: self.limit }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waiting = {
                let mut queue = self.shared.queue();
                queue.orphaned = true;
                queue.waiting.take()
            };
            if let Some(writer) = waiting {
                writer.wake();
            }
        }
    }
}

impl Writer {
    /// Queues a binary message, or refuses it when the peer already has too much waiting.
    pub fn send(&self, data: Bytes) -> Result<(), SendError> {
        let shared = &self.shared;
        if shared.closing.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let len = data.len();
        let before = shared.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.limit && before > 0 {
            shared.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(SendError::Full);
        }
        shared.push(Outbound::data(shared.role, OpCode::Binary, data, len)).inspect_err(|_| {
            shared.queued.fetch_sub(len, Ordering::AcqRel);
        })
    }

    /// Queues a text message (outside the byte budget; for tests of peers that must refuse it).
    pub fn send_text(&self, data: Bytes) -> Result<(), SendError> {
        self.shared.push(Outbound::data(self.shared.role, OpCode::Text, data, 0))
    }

    /// Queues a close frame after everything already queued; later sends are refused.
    pub fn close(&self, code: u16, reason: &str) {
        if !self.shared.closing.swap(true, Ordering::AcqRel) {
            let _ = self.shared.push(Outbound::whole(self.shared.role, Frame::close(code, reason.as_bytes()), 0));
        }
        self.close_requested.cancel();
    }

    /// Drops the connection without a close frame once what is queued before it is written (as a
    /// lost network would; for tests). The peer sees the end only when the reader is dropped too.
    pub fn abort(&self) {
        self.shared.closing.store(true, Ordering::Release);
        let _ = self.shared.push(Outbound::Abort);
    }

    /// Bytes queued for the peer and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Resolves when the writer task has ended (after a close, or the peer went away).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        async move {
            loop {
                let gone = shared.gone.notified();
                tokio::pin!(gone);
                // Registered before the check, so an end between the two is not missed.
                gone.as_mut().enable();
                if shared.queue().ended {
                    return;
                }
                gone.await;
            }
        }
    }
}

/// The read side of a connection.
pub struct Reader<S: SplitIo> {
    inner: fastwebsockets::WebSocketRead<S::Read>,
    writer: Writer,
    max_message_bytes: usize,
    /// A fragmented message being reassembled: its opcode and bytes so far.
    partial: Option<(OpCode, BytesMut)>,
    /// Longest wait for the next frame (any frame, pings included) before [`ReadError::Idle`].
    idle_timeout: Option<Duration>,
    /// Its timer, made by the first read: one per connection. A read does not move it (that costs
    /// a compare and swap per frame): when it fires, it is moved to the current read's deadline
    /// if that is later, so a busy connection's timer fires about once per timeout.
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: SplitIo> Reader<S> {
    /// Reads the next whole message. Pings are answered by the writer without showing up here.
    pub async fn next(&mut self) -> Result<Message, ReadError> {
        loop {
            // Borrowed, not cloned: a clone per frame read costs two counted handles.
            let writer = &self.writer;
            let mut obligated = |frame: Frame<'_>| {
                let opcode = frame.opcode;
                let out = Outbound::whole(writer.shared.role, frame, 0);
                // A writer that is already gone (the peer stopped reading, or we closed) cannot
                // answer; that must not hide the frame, above all a close and its code.
                let _ = writer.shared.push(out);
                if opcode == OpCode::Close {
                    writer.shared.closing.store(true, Ordering::Release);
                    writer.close_requested.cancel();
                }
                std::future::ready(Ok::<(), SendError>(()))
            };
            let read = self.inner.read_frame(&mut obligated);
            // A timeout too long to express is no timeout.
            let deadline = self.idle_timeout.and_then(|idle| tokio::time::Instant::now().checked_add(idle));
            let result = match (self.idle_timeout, deadline) {
                (Some(idle), Some(deadline)) => {
                    let timer = self.idle_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if timer.deadline() > deadline {
                        // The timeout was shortened.
                        timer.as_mut().reset(deadline);
                    }
                    let mut read = std::pin::pin!(read);
                    loop {
                        tokio::select! {
                            biased;
                            r = &mut read => break r,
                            () = timer.as_mut() => {
                                if timer.deadline() < deadline {
                                    // Set for an earlier read: moved to this one's deadline.
                                    timer.as_mut().reset(deadline);
                                    continue;
                                }
                                // Cancelling a read mid-frame loses the frame; fine, the
                                // connection ends.
                                return Err(ReadError::Idle(idle));
                            }
                        }
                    }
                }
                _ => read.await,
            };
            let frame = match result {
                Ok(frame) => frame,
                Err(WebSocketError::FrameTooLarge) => {
                    return Err(ReadError::TooLarge { limit: self.max_message_bytes })
                }
                Err(e) => return Err(e.into()),
            };
            match frame.opcode {
                OpCode::Close => {
                    let payload: &[u8] = &frame.payload;
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = payload.get(2..).map(|r| String::from_utf8_lossy(r).into_owned()).unwrap_or_default();
                    return Ok(Message::Close { code, reason });
                }
                OpCode::Ping => {
                    // Answered here, not by fastwebsockets, so that every ping restarts the idle
                    // timer. The pong counts against the byte budget and is skipped when the
                    // peer is not reading (RFC 6455 allows answering only the latest ping), so
                    // a ping flood cannot grow the queue.
                    let len = frame.payload.len().max(1);
                    let writer = &self.writer;
                    let shared = &writer.shared;
                    if shared.queued.load(Ordering::Acquire) + len <= writer.limit {
                        shared.queued.fetch_add(len, Ordering::AcqRel);
                        let pong = Frame::pong(Payload::Borrowed(&frame.payload));
                        if shared.push(Outbound::whole(shared.role, pong, len)).is_err() {
                            shared.queued.fetch_sub(len, Ordering::AcqRel);
                        }
                    }
                    continue;
                }
                OpCode::Pong => continue,
                OpCode::Binary | OpCode::Text => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(WebSocketError::InvalidFragment));
                    }
                    let bytes = payload_bytes(frame.payload);
                    if frame.fin {
                        return Ok(whole(frame.opcode, bytes));
                    }
                    self.partial = Some((frame.opcode, BytesMut::from(&bytes[..])));
                }
                OpCode::Continuation => {
                    let Some((opcode, mut buf)) = self.partial.take() else {
                        return Err(ReadError::Protocol(WebSocketError::InvalidContinuationFrame));
                    };
                    if buf.len() + frame.payload.len() > self.max_message_bytes {
                        return Err(ReadError::TooLarge { limit: self.max_message_bytes });
                    }
                    buf.extend_from_slice(&frame.payload);
                    if frame.fin {
                        return Ok(whole(opcode, buf.freeze()));
                    }
                    self.partial = Some((opcode, buf));
                }
            }
        }
    }

    /// Ends the connection with [`ReadError::Idle`] when no frame at all (data, ping, pong)
    /// arrives for `idle` (`None`: wait forever, the default).
    pub fn set_idle_timeout(&mut self, idle: Option<Duration>) {
        self.idle_timeout = idle;
    }

    /// The writer of the same connection.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }
}

fn whole(opcode: OpCode, bytes: Bytes) -> Message {
    if opcode == OpCode::Text {
        Message::Text(bytes)
    } else {
        Message::Binary(bytes)
    }
}

fn payload_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(b) => b.freeze(),
        other => Bytes::from(Vec::<u8>::from(other)),
    }
}

/// Splits the stream of a websocket fresh from its handshake (nothing read from it yet) into a
/// [`Reader`] and a [`Writer`] whose task is spawned here. `role` is the side this end plays.
pub fn split<S: SplitIo>(io: S, role: Role, limits: Limits) -> Reader<S> {
    let (read, write) = io.split_io();
    // fastwebsockets reads; the writer task below writes (its write half is not used).
    let (mut read, _) = fastwebsockets::after_handshake_split(read, tokio::io::sink(), role);
    // The limit is inclusive; fastwebsockets refuses `len >= max`.
    read.set_max_message_size(limits.max_message_bytes.saturating_add(1));
    read.set_auto_close(true);
    // Pings are answered by `Reader::next` (see there).
    read.set_auto_pong(false);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue { items: VecDeque::new(), waiting: None, ended: false, orphaned: false }),
        role,
        gone: Notify::new(),
        queued: AtomicUsize::new(0),
        closing: AtomicBool::new(false),
        handles: AtomicUsize::new(1),
    });
    let writer =
        Writer { shared: shared.clone(), close_requested: CancellationToken::new(), limit: limits.max_queued_bytes };
    let linger = writer.close_requested.clone();
    tokio::spawn(async move {
        let end = EndOnDrop(shared);
        let linger_over = async move {
            linger.cancelled().await;
            tokio::time::sleep(CLOSE_LINGER).await;
        };
        tokio::select! {
            _ = write_loop(write, &end.0) => {}
            _ = linger_over => tracing::debug!("peer did not take its last frames in time; dropped"),
        }
    });
    Reader {
        inner: read,
        writer,
        max_message_bytes: limits.max_message_bytes,
        partial: None,
        idle_timeout: None,
        idle_timer: None,
    }
}

/// The writer task: takes the whole queue (one lock per burst), writes it with vectored writes,
/// and flushes once the queue is empty (a TLS stream may still hold records when its socket would
/// block); an idle connection holds no buffer.
async fn write_loop<W: AsyncWrite + Unpin>(mut io: W, shared: &Shared) {
    let mut batch = VecDeque::new();
    let mut unflushed = false;
    loop {
        let orphaned = {
            let mut queue = shared.queue();
            std::mem::swap(&mut queue.items, &mut batch);
            queue.orphaned
        };
        if batch.is_empty() {
            if unflushed {
                if io.flush().await.is_err() {
                    return;
                }
                unflushed = false;
                continue;
            }
            if orphaned {
                // Nobody can queue anything more: the connection is dropped.
                return;
            }
            std::future::poll_fn(|cx| {
                let mut queue = shared.queue();
                if !queue.items.is_empty() || queue.orphaned {
                    return Poll::Ready(());
                }
                if !queue.waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    queue.waiting = Some(cx.waker().clone());
                }
                Poll::Pending
            })
            .await;
            continue;
        }
        // Bytes of the front frame already written.
        let mut sent = 0;
        while let Some(front) = batch.front() {
            if matches!(front, Outbound::Abort) {
                // What was queued before it is written (and flushed, for a TLS stream's last
                // records); the connection goes without a close.
                let _ = io.flush().await;
                return;
            }
            let written = match std::future::poll_fn(|cx| poll_gather(&mut io, cx, &batch, sent)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Frames written whole leave the batch (and the byte budget); a partial one stays.
            let mut left = sent + written;
            let mut budget = 0;
            let mut last = false;
            while let Some(front) = batch.front() {
                let len = front.wire_len();
                if left < len || matches!(front, Outbound::Abort) {
                    break;
                }
                left -= len;
                budget += front.budget();
                last |= matches!(front, Outbound::Whole { last: true, .. });
                batch.pop_front();
                if last {
                    break;
                }
            }
            sent = left;
            if budget > 0 {
                shared.queued.fetch_sub(budget, Ordering::AcqRel);
            }
            if last {
                let _ = io.flush().await;
                return;
            }
        }
        unflushed = true;
        if batch.capacity() > BATCH_CAPACITY_KEPT {
            // A burst's worth of slots is not kept for an idle connection.
            batch = VecDeque::new();
        }
    }
}

/// One vectored write of up to [`GATHER`] frames from the front of `batch`, of which the first
/// `sent` bytes are already written. Headers and slices live on the stack, not in the writer's
/// future (an idle connection's memory).
fn poll_gather<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    batch: &VecDeque<Outbound>,
    sent: usize,
) -> Poll<std::io::Result<usize>> {
    let mut heads = [[0u8; MAX_HEAD]; GATHER];
    let mut slices = [IoSlice::new(&[]); 2 * GATHER];
    let mut count = 0;
    let mut skip = sent;
    for (head, out) in heads.iter_mut().zip(batch) {
        let parts: [&[u8]; 2] = match out {
            Outbound::Frame { opcode, payload } => {
                let len = Frame::new(true, *opcode, None, Payload::Borrowed(payload)).fmt_head(head);
                [&head[..len], payload]
            }
            Outbound::Whole { bytes, .. } => [bytes, &[]],
            Outbound::Abort => break,
        };
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices[count] = IoSlice::new(&part[skip..]);
            skip = 0;
            count += 1;
        }
        if matches!(out, Outbound::Whole { last: true, .. }) {
            // Nothing after a close is written.
            break;
        }
    }
    if count == 0 {
        return Poll::Ready(Ok(0));
    }
    Pin::new(io).poll_write_vectored(cx, &slices[..count])
}

/// Slots of the writer's batch kept between bursts.
const BATCH_CAPACITY_KEPT: usize = 64;

/// Spawns hyper's connection tasks on tokio (fastwebsockets' client handshake needs one).
struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

/// Why a client connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid websocket url {url}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("could not connect to {addr}: {source}")]
    Tcp { addr: String, source: std::io::Error },
    #[error("websocket handshake failed: {0}")]
    Handshake(WebSocketError),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("tls handshake with {host} failed: {source}")]
    TlsHandshake { host: String, source: std::io::Error },
}

/// A parsed `ws://`, `wss://`, `http://` or `https://` URL.
#[derive(Debug, Clone)]
pub struct WsUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl WsUrl {
    pub fn parse(url: &str) -> Result<WsUrl, ConnectError> {
        let bad = |reason| ConnectError::InvalidUrl { url: url.to_owned(), reason };
        let (tls, rest) = if let Some(r) = url.strip_prefix("ws://").or_else(|| url.strip_prefix("http://")) {
            (false, r)
        } else if let Some(r) = url.strip_prefix("wss://").or_else(|| url.strip_prefix("https://")) {
            (true, r)
        } else {
            return Err(bad("must start with ws://, wss://, http:// or https://"));
        };
        let default_port = if tls { 443 } else { 80 };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(port) => (h.to_owned(), port),
                Err(_) => return Err(bad("invalid port")),
            },
            _ => (authority.to_owned(), default_port),
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("missing host"));
        }
        Ok(WsUrl { tls, host, port, path: path.to_owned() })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Opens a client websocket to `url`, with extra request headers (e.g. authorization). `wss://`
/// URLs are verified against the system's trusted roots.
pub async fn connect(url: &str, headers: &[(&str, &str)], limits: Limits) -> Result<ClientReader, ConnectError> {
    connect_with(url, headers, limits, None).await
}

/// Like [`connect`], with the TLS configuration to use for `wss://` (`None`: system roots).
pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
    limits: Limits,
    tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<ClientReader, ConnectError> {
    let parsed = WsUrl::parse(url)?;
    let addr = parsed.authority();
    let tcp = TcpStream::connect(&addr).await.map_err(|source| ConnectError::Tcp { addr: addr.clone(), source })?;
    let _ = tcp.set_nodelay(true);
    if !parsed.tls {
        return handshake(url, &parsed, &addr, headers, limits, tcp).await;
    }
    let config = match tls_config {
        Some(c) => c,
        None => tls::default_client_config()?,
    };
    let name = parsed.host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let server_name = rustls_pki_types::ServerName::try_from(name.clone())
        .map_err(|_| ConnectError::InvalidUrl { url: url.to_owned(), reason: "invalid TLS server name" })?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|source| ConnectError::TlsHandshake { host: name, source })?;
    handshake(url, &parsed, &addr, headers, limits, stream).await
}

/// Like [`connect`] for a plain `ws://` URL whose host is an IP address, from a chosen local
/// address (a load generator spreading its connections over several source addresses, since one
/// source address reaches one server port from at most the ephemeral port range).
pub async fn connect_from(
    url: &str,
    local: std::net::IpAddr,
    headers: &[(&str, &str)],
    limits: Limits,
) -> Result<ClientReader, ConnectError> {
    let parsed = WsUrl::parse(url)?;
    if parsed.tls {
        return Err(ConnectError::InvalidUrl { url: url.to_owned(), reason: "connect_from speaks ws:// only" });
    }
    let addr = parsed.authority();
    let host = parsed.host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().map_err(|_| ConnectError::InvalidUrl {
        url: url.to_owned(),
        reason: "connect_from needs an IP address host",
    })?;
    let tcp_err = |source| ConnectError::Tcp { addr: addr.clone(), source };
    let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(tcp_err)?;
    // Many connections from one source address: its ports in TIME_WAIT from an earlier run may be
    // bound again (the 4-tuple decides at connect).
    socket.set_reuseaddr(true).map_err(tcp_err)?;
    socket.bind(std::net::SocketAddr::new(local, 0)).map_err(tcp_err)?;
    let tcp = socket.connect(std::net::SocketAddr::new(ip, parsed.port)).await.map_err(tcp_err)?;
    let _ = tcp.set_nodelay(true);
    handshake(url, &parsed, &addr, headers, limits, tcp).await
}

async fn handshake<S>(
    url: &str,
    parsed: &WsUrl,
    addr: &str,
    headers: &[(&str, &str)],
    limits: Limits,
    stream: S,
) -> Result<ClientReader, ConnectError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut req = hyper::Request::builder()
        .method("GET")
        .uri(&parsed.path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::UPGRADE, "websocket")
        .header(hyper::header::CONNECTION, "upgrade")
        .header("Sec-WebSocket-Key", fastwebsockets::handshake::generate_key())
        .header("Sec-WebSocket-Version", "13");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|_| ConnectError::InvalidUrl { url: url.to_owned(), reason: "invalid header" })?;
    let (ws, _resp) =
        fastwebsockets::handshake::client(&SpawnExecutor, req, stream).await.map_err(ConnectError::Handshake)?;
    Ok(split(Stream::from_upgraded(ws.into_inner().into_inner()), Role::Client, limits))
}

#[cfg(test)]
mod tests {
    use fastwebsockets::WebSocket;

    use super::*;

    #[test]
    fn parses_urls() {
        let u = WsUrl::parse("ws://127.0.0.1:8081/v1/sessions/abc").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8081, "/v1/sessions/abc"));
        let u = WsUrl::parse("http://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("localhost", 80, "/"));
        let u = WsUrl::parse("ws://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9));
        let u = WsUrl::parse("wss://edge.example.com/v1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "edge.example.com", 443));
        assert!(!WsUrl::parse("ws://h").unwrap().tls);
        assert!(WsUrl::parse("ftp://x").is_err());
        assert!(WsUrl::parse("ws://:80").is_err());
        assert!(WsUrl::parse("ws://h:99999").is_err());
    }

    /// Websocket pings restart the idle timer (they are answered by `Reader::next` itself), and
    /// a peer that floods pings without reading never gets more than the byte budget of pongs
    /// queued. Paused time, in-memory pipe.
    #[tokio::test(start_paused = true)]
    async fn pings_keep_a_connection_alive_and_pongs_are_bounded() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let limits = Limits { max_message_bytes: 1024, max_queued_bytes: 200 };
        let mut server = split(server_io, Role::Server, limits);
        server.set_idle_timeout(Some(Duration::from_secs(1)));
        let mut client = WebSocket::after_handshake(client_io, Role::Client);
        client.set_auto_pong(false);
        let reading = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let r = server.next().await;
            (r, started.elapsed(), server)
        });
        // Five pings 600 ms apart: each within the 1 s idle timeout of the one before.
        for i in 0..5u8 {
            client.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Owned(vec![i; 100]))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let (result, elapsed, server) = reading.await.unwrap();
        assert!(matches!(result, Err(ReadError::Idle(_))), "{result:?}");
        assert!(elapsed >= Duration::from_millis(3400), "closed after {elapsed:?} despite the pings");
        // One timeout after the last ping (at 2.4 s), not later: the timer set by an earlier
        // read was moved, not left to run a second period.
        assert!(elapsed < Duration::from_millis(3500), "closed late, after {elapsed:?}");
        // Every pong was written (the client did not read them, but the pipe holds them).
        assert_eq!(server.writer().queued_bytes(), 0);
        // A flood of pings: only as many pongs as fit the 200-byte budget are ever queued.
        let (client_io, server_io) = tokio::io::duplex(64);
        let mut server = split(server_io, Role::Server, limits);
        let budget = server.writer().clone();
        let mut client = WebSocket::after_handshake(client_io, Role::Client);
        let flood = tokio::spawn(async move {
            for _ in 0..1_000 {
                if client.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Owned(vec![7; 100]))).await.is_err()
                {
                    break;
                }
            }
            client
        });
        let reader = tokio::spawn(async move {
            let _ = server.next().await;
        });
        let _client = flood.await.unwrap();
        assert!(budget.queued_bytes() <= 200, "{} bytes of pongs queued", budget.queued_bytes());
        assert!(budget.queued_bytes() > 0, "the unread pongs are queued up to the budget");
        reader.abort();
    }

    /// Frames of every header size (7-bit, 16-bit and 64-bit lengths) cross a pipe too narrow for
    /// any of the larger ones, so every vectored write is cut short somewhere (in a header, in a
    /// payload, between frames): both directions arrive whole and in order, the client's masked,
    /// and a close queued behind them arrives last, with its code.
    #[tokio::test]
    async fn frames_of_every_header_size_survive_short_writes() {
        let (client_io, server_io) = tokio::io::duplex(61);
        let limits = Limits { max_message_bytes: 1 << 17, max_queued_bytes: 1 << 20 };
        let mut server = split(server_io, Role::Server, limits);
        let mut client = split(client_io, Role::Client, limits);
        let sizes = [0, 1, 125, 126, 127, 1024, 65_535, 65_536, 70_000, 3];
        let payload = |i: usize, len: usize| Bytes::from((0..len).map(|b| (b * 7 + i) as u8).collect::<Vec<u8>>());
        for (i, len) in sizes.iter().enumerate() {
            server.writer().send(payload(i, *len)).unwrap();
            client.writer().send(payload(i + 100, *len)).unwrap();
        }
        server.writer().send_text(Bytes::from_static(b"text")).unwrap();
        server.writer().close(4321, "done");
        let reading = tokio::spawn(async move {
            for (i, len) in sizes.iter().enumerate() {
                match server.next().await {
                    Ok(Message::Binary(b)) => assert_eq!(b, payload(i + 100, *len), "client frame {i}"),
                    other => panic!("client frame {i}: {other:?}"),
                }
            }
            server
        });
        for (i, len) in sizes.iter().enumerate() {
            match client.next().await {
                Ok(Message::Binary(b)) => assert_eq!(b, payload(i, *len), "server frame {i}"),
                other => panic!("server frame {i}: {other:?}"),
            }
        }
        assert!(matches!(client.next().await, Ok(Message::Text(t)) if &t[..] == b"text"));
        match client.next().await {
            Ok(Message::Close { code, reason }) => assert_eq!((code, reason.as_str()), (Some(4321), "done")),
            other => panic!("expected the close, got {other:?}"),
        }
        let server = tokio::time::timeout(Duration::from_secs(10), reading).await.expect("read in time").unwrap();
        assert_eq!(server.writer().queued_bytes(), 0, "every written frame left the byte budget");
    }

    /// An abort drops the connection without a close, once what was queued before it is written.
    #[tokio::test]
    async fn an_abort_comes_after_what_was_queued() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let limits = Limits { max_message_bytes: 1024, max_queued_bytes: 1 << 20 };
        let server = split(server_io, Role::Server, limits);
        let mut client = split(client_io, Role::Client, limits);
        for i in 0..3u8 {
            server.writer().send(Bytes::from(vec![i; 300])).unwrap();
        }
        server.writer().abort();
        drop(server);
        for i in 0..3u8 {
            assert!(matches!(client.next().await, Ok(Message::Binary(b)) if b[..] == [i; 300][..]), "frame {i}");
        }
        assert!(matches!(client.next().await, Err(ReadError::Eof)));
    }

    /// The writer delivers a burst in order; when the last handle goes, what was queued is still
    /// written and then the connection ends (the peer reads everything, then the end); after the
    /// writer task has ended, sends are refused and `closed` resolves.
    #[tokio::test]
    async fn the_writer_ends_when_its_last_handle_goes() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let limits = Limits { max_message_bytes: 1024, max_queued_bytes: 1 << 20 };
        let server = split(server_io, Role::Server, limits);
        let mut client = split(client_io, Role::Client, limits);
        let writer = server.writer().clone();
        for i in 0..100u8 {
            writer.send(Bytes::from(vec![i; 10])).unwrap();
        }
        let closed = writer.closed();
        let shared = writer.shared.clone();
        drop(writer);
        drop(server);
        for i in 0..100u8 {
            match client.next().await {
                Ok(Message::Binary(b)) => assert_eq!(&b[..], &[i; 10][..]),
                other => panic!("message {i}: {other:?}"),
            }
        }
        assert!(matches!(client.next().await, Err(ReadError::Eof)), "the connection ended");
        tokio::time::timeout(Duration::from_secs(10), closed).await.expect("closed resolved");
        assert!(
            shared.push(Outbound::Frame { opcode: OpCode::Binary, payload: Bytes::from_static(b"late") }).is_err(),
            "refused once ended"
        );
    }
}
