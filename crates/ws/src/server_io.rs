//! [`ServerIo`]: the stream under a server's websocket, without hyper's upgrade layers where it
//! can be had.
//!
//! After an upgrade, hyper hands over the connection as an [`Upgraded`]: a boxed trait object
//! around the bytes it read past the request and the stream it was served on, which fastwebsockets
//! then wraps again for tokio. Every read and write of the websocket's life goes through those
//! layers (about 250 instructions of the edge's 10,000 or so per relayed message). For plain TCP,
//! [`server_io`] takes the `TcpStream` back out of them; bytes the client sent right behind its
//! request (a client need not wait for the `101`) are read first. Any other stream (TLS) stays
//! as it was.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::UpgradedIo;

/// A server-side websocket's stream: see the module docs.
#[derive(Debug)]
pub enum ServerIo {
    /// The TCP connection itself, and what hyper had read past the request, read first.
    Tcp { stream: TcpStream, prefix: Bytes },
    /// Any other stream, through hyper's upgrade.
    Upgraded(UpgradedIo),
}

/// The stream of `ws`, a server's websocket fresh from its upgrade (nothing read yet): its plain
/// TCP stream when it has one. It goes to [`crate::split`].
pub fn server_io(ws: WebSocket<UpgradedIo>) -> ServerIo {
    let upgraded: Upgraded = ws.into_inner().into_inner();
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            // Even empty, the buffer may be a view of hyper's whole read buffer (kilobytes that
            // an idle connection would hold for its life).
            let prefix = if parts.read_buf.is_empty() { Bytes::new() } else { Bytes::copy_from_slice(&parts.read_buf) };
            ServerIo::Tcp { stream: parts.io.into_inner(), prefix }
        }
        Err(upgraded) => ServerIo::Upgraded(TokioIo::new(upgraded)),
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Tcp { stream, prefix } => {
                if prefix.is_empty() {
                    return Pin::new(stream).poll_read(cx, buf);
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
            ServerIo::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Tcp { stream, .. } => Pin::new(stream).poll_write(cx, data),
            ServerIo::Upgraded(io) => Pin::new(io).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Tcp { stream, .. } => Pin::new(stream).poll_write_vectored(cx, bufs),
            ServerIo::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerIo::Tcp { stream, .. } => stream.is_write_vectored(),
            ServerIo::Upgraded(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Tcp { stream, .. } => Pin::new(stream).poll_flush(cx),
            ServerIo::Upgraded(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Tcp { stream, .. } => Pin::new(stream).poll_shutdown(cx),
            ServerIo::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use fastwebsockets::{Frame, OpCode, Role};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::*;

    /// One upgrade over TCP, served by hyper as the edge serves it; answers the server's websocket
    /// through [`server_io`].
    async fn serve_one(listener: TcpListener) -> ServerIo {
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
        server_io(rx.await.unwrap())
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
        assert!(matches!(&io, ServerIo::Tcp { prefix, .. } if !prefix.is_empty()), "{io:?}");
        let mut ws = WebSocket::after_handshake(io, Role::Server);
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), ws.read_frame());
        let frame = read.await.expect("the frame sent with the request was lost").unwrap();
        assert_eq!((frame.opcode, &frame.payload[..]), (OpCode::Binary, &b"hello"[..]));
        ws.write_frame(Frame::binary(fastwebsockets::Payload::Borrowed(b"back"))).await.unwrap();
        let mut client = WebSocket::after_handshake(client, Role::Client);
        let frame = client.read_frame().await.unwrap();
        assert_eq!(&frame.payload[..], b"back");
    }
}
