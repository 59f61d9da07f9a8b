//! [`Stream`]: the stream under a websocket, without hyper's upgrade layers where it can be
//! had, and [`SplitIo`]: how [`crate::split`] divides a stream between the reading task and the
//! writer task.
//!
//! After an upgrade, hyper hands over the connection as an [`Upgraded`]: a boxed trait object
//! around the bytes it read past the request (or the `101` response) and the stream it was served
//! on, which fastwebsockets then wraps again for tokio. Every read and write of the websocket's
//! life goes through those layers (about 250 instructions per relayed message, of the edge's
//! 10,000 or so when this was measured). For plain TCP, [`server_stream`] (a server's upgrade) and the client's handshake
//! take the `TcpStream` back out of them; bytes that hyper had read past the handshake (a client
//! need not wait for the `101`; a server may send right behind it) are read first. Any other
//! stream (TLS) stays as it was.
//!
//! A plain-TCP stream is split into tokio's owned halves, which read and write the socket
//! without a lock between them; any other stream is split by `tokio::io::split`, whose halves
//! share it under a lock (a TLS session is one state for both directions).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::UpgradedIo;

/// A stream that [`crate::split`] can divide into the half its reader reads and the half its
/// writer task writes.
pub trait SplitIo: Send + 'static {
    type Read: AsyncRead + Send + Unpin + 'static;
    type Write: AsyncWrite + Send + Unpin + 'static;

    fn split_io(self) -> (Self::Read, Self::Write);
}

/// A websocket's stream: see the module docs.
#[derive(Debug)]
pub enum Stream {
    /// The TCP connection itself, and what hyper had read past the handshake, read first.
    Tcp { stream: TcpStream, prefix: Bytes },
    /// Any other stream, through hyper's upgrade.
    Upgraded(UpgradedIo),
}

/// The stream of `ws`, a server's websocket fresh from its upgrade (nothing read yet): its plain
/// TCP stream when it has one. It goes to [`crate::split`].
pub fn server_stream(ws: WebSocket<UpgradedIo>) -> Stream {
    Stream::from_upgraded(ws.into_inner().into_inner())
}

impl Stream {
    /// The plain TCP stream under `upgraded` (with what hyper read past the handshake), if it is
    /// one; otherwise `upgraded` itself.
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> Stream {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // Even empty, the buffer may be a view of hyper's whole read buffer (kilobytes
                // that an idle connection would hold for its life).
                let prefix =
                    if parts.read_buf.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(&parts.read_buf) };
                Stream::Tcp { stream: parts.io.into_inner(), prefix }
            }
            Err(upgraded) => Stream::Upgraded(TokioIo::new(upgraded)),
        }
    }
}

impl SplitIo for Stream {
    type Read = StreamRead;
    type Write = StreamWrite;

    fn split_io(self) -> (StreamRead, StreamWrite) {
        match self {
            Stream::Tcp { stream, prefix } => {
                let (read, write) = stream.into_split();
                (StreamRead::Tcp { half: read, prefix }, StreamWrite::Tcp(TcpWrite(Some(write))))
            }
            Stream::Upgraded(io) => {
                let (read, write) = tokio::io::split(io);
                (StreamRead::Upgraded(read), StreamWrite::Upgraded(write))
            }
        }
    }
}

/// Split with `tokio::io::split` (a lock between the halves).
macro_rules! split_locked {
    ($($t:ty),*) => {$(
        impl SplitIo for $t {
            type Read = ReadHalf<$t>;
            type Write = WriteHalf<$t>;

            fn split_io(self) -> (ReadHalf<$t>, WriteHalf<$t>) {
                tokio::io::split(self)
            }
        }
    )*};
}

// An upgrade kept whole (TLS), and the in-memory pipes of tests.
split_locked!(UpgradedIo, DuplexStream);

/// The read half of a [`Stream`].
#[derive(Debug)]
pub enum StreamRead {
    Tcp { half: OwnedReadHalf, prefix: Bytes },
    Upgraded(ReadHalf<UpgradedIo>),
}

/// The write half of a [`Stream`].
#[derive(Debug)]
pub enum StreamWrite {
    Tcp(TcpWrite),
    Upgraded(WriteHalf<UpgradedIo>),
}

/// The write half of a TCP stream that, dropped, leaves the connection as it was until its read
/// half goes too, as `tokio::io::split`'s halves do (tokio's owned half would send a FIN at once).
/// The writer task ends on an abort ("as a lost network would": no FIN), on a failed write and
/// when a close's linger runs out; in none of those should the peer see the end while the
/// connection's reader still holds the socket.
#[derive(Debug)]
pub struct TcpWrite(Option<OwnedWriteHalf>);

impl Drop for TcpWrite {
    fn drop(&mut self) {
        if let Some(half) = self.0.take() {
            half.forget();
        }
    }
}

impl TcpWrite {
    fn half(&mut self) -> io::Result<Pin<&mut OwnedWriteHalf>> {
        // `None` only inside `drop`.
        self.0.as_mut().map(Pin::new).ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl AsyncRead for StreamRead {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamRead::Tcp { half, prefix } => {
                if prefix.is_empty() {
                    return Pin::new(half).poll_read(cx, buf);
                }
                let n = prefix.len().min(buf.remaining());
                buf.put_slice(&prefix[..n]);
                prefix.advance(n);
                if prefix.is_empty() {
                    // Its copy is not kept for the connection's life.
                    *prefix = Bytes::new();
                }
                Poll::Ready(Ok(()))
            }
            StreamRead::Upgraded(half) => Pin::new(half).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for StreamWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWrite::Tcp(w) => w.half()?.poll_write(cx, data),
            StreamWrite::Upgraded(half) => Pin::new(half).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWrite::Tcp(w) => w.half()?.poll_write_vectored(cx, bufs),
            StreamWrite::Upgraded(half) => Pin::new(half).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            StreamWrite::Tcp(w) => w.0.as_ref().is_some_and(|h| h.is_write_vectored()),
            StreamWrite::Upgraded(half) => half.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWrite::Tcp(w) => w.half()?.poll_flush(cx),
            StreamWrite::Upgraded(half) => Pin::new(half).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWrite::Tcp(w) => w.half()?.poll_shutdown(cx),
            StreamWrite::Upgraded(half) => Pin::new(half).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use fastwebsockets::Role;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    const LIMITS: crate::Limits = crate::Limits { max_message_bytes: 1 << 10, max_queued_bytes: 1 << 16 };

    /// One upgrade over TCP, served by hyper as the edge serves it; answers the server's websocket
    /// through [`server_stream`].
    async fn serve_one(listener: TcpListener) -> Stream {
        let (stream, _) = listener.accept().await.unwrap();
        let (tx, rx) = oneshot::channel();
        let tx = Mutex::new(Some(tx));
        let service = hyper::service::service_fn(move |mut req| {
            let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req).unwrap();
            let tx = tx.lock().unwrap().take().unwrap();
            tokio::spawn(async move {
                let _ = tx.send(upgrade.await.unwrap());
            });
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        tokio::spawn(conn.with_upgrades());
        server_stream(rx.await.unwrap())
    }

    /// A client that sends a frame in the same write as its upgrade request: hyper has read the
    /// frame's bytes with the request, and the websocket still reads the frame, from the plain
    /// TCP stream; then the answer goes back the same way.
    #[tokio::test]
    async fn bytes_sent_behind_the_upgrade_request_are_read_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_one(listener));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes();
        // A masked binary frame "hello" (mask 0x01020304), as a client must send it.
        let mask = [1u8, 2, 3, 4];
        request.extend_from_slice(&[0x82, 0x80 | 5]);
        request.extend_from_slice(&mask);
        request.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        client.write_all(&request).await.unwrap();

        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read_exact(&mut client, &mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));

        let io = server.await.unwrap();
        assert!(matches!(&io, Stream::Tcp { prefix, .. } if !prefix.is_empty()), "{io:?}");
        let mut ws = crate::split(io, Role::Server, LIMITS);
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next());
        let message = read.await.expect("the frame sent with the request was lost").unwrap();
        assert!(matches!(&message, crate::Message::Binary(b) if &b[..] == b"hello"), "{message:?}");
        ws.writer().send(Bytes::from_static(b"back")).unwrap();
        let mut client = WebSocket::after_handshake(client, Role::Client);
        let frame = client.read_frame().await.unwrap();
        assert_eq!(&frame.payload[..], b"back");
    }

    /// A server that sends a frame in the same write as its `101`: hyper's client has read the
    /// frame's bytes with the response, and the client's plain TCP stream still reads it first;
    /// then a frame goes back on the stream's write half.
    #[tokio::test]
    async fn a_client_reads_first_what_came_behind_the_101() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                tokio::io::AsyncReadExt::read_exact(&mut peer, &mut byte).await.unwrap();
                head.push(byte[0]);
            }
            let mut answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                               Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .to_vec();
            answer.extend_from_slice(&[0x82, 5]);
            answer.extend_from_slice(b"hello");
            peer.write_all(&answer).await.unwrap();
            peer
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let req = hyper::Request::builder()
            .uri("/")
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::UPGRADE, "websocket")
            .header(hyper::header::CONNECTION, "upgrade")
            .header("Sec-WebSocket-Key", fastwebsockets::handshake::generate_key())
            .header("Sec-WebSocket-Version", "13")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let (ws, _) = fastwebsockets::handshake::client(&crate::SpawnExecutor, req, tcp).await.unwrap();
        let io = Stream::from_upgraded(ws.into_inner().into_inner());
        assert!(matches!(&io, Stream::Tcp { prefix, .. } if &prefix[..] == b"\x82\x05hello"), "{io:?}");
        let mut client = crate::split(io, Role::Client, LIMITS);
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), client.next());
        let message = read.await.expect("the frame sent with the 101 was lost").unwrap();
        assert!(matches!(&message, crate::Message::Binary(b) if &b[..] == b"hello"), "{message:?}");
        client.writer().send(Bytes::from_static(b"back")).unwrap();
        let mut peer = WebSocket::after_handshake(server.await.unwrap(), Role::Server);
        let frame = peer.read_frame().await.unwrap();
        assert_eq!(&frame.payload[..], b"back");
    }

    /// A plain-TCP writer that ends (here by an abort) leaves the socket as it was: the peer sees
    /// no end of stream, and what it sends still reaches the reader, until the reader goes too.
    #[tokio::test]
    async fn an_ended_writer_leaves_the_socket_open_until_the_reader_goes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut reader = crate::split(Stream::Tcp { stream, prefix: Bytes::new() }, Role::Server, LIMITS);
        reader.writer().abort();
        // The writer task has ended and dropped its half.
        reader.writer().closed().await;
        // On loopback a FIN would be in the peer's socket by now, readable at once.
        let mut byte = [0u8; 1];
        let read = peer.try_read(&mut byte);
        assert!(matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock), "{read:?}");
        // A masked binary frame "hi" still reaches the reader.
        let mask = [9u8, 8, 7, 6];
        let mut frame = vec![0x82, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        peer.write_all(&frame).await.unwrap();
        let message = reader.next().await.unwrap();
        assert!(matches!(&message, crate::Message::Binary(b) if &b[..] == b"hi"), "{message:?}");
        drop(reader);
        let n = tokio::io::AsyncReadExt::read(&mut peer, &mut byte).await.unwrap();
        assert_eq!(n, 0, "the peer sees the end once the reader is gone");
    }
}
