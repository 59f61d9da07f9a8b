//! ICE-TCP (RFC 6544, passive side): one TCP port, each connection carrying RFC 4571 frames (a
//! `u16` big-endian length, then one STUN, DTLS, RTP or RTCP packet).
//!
//! A task per connection reads frames and hands them to the media task with the connection's
//! address; the media task writes back through the connection's bounded queue. A connection that
//! sends nothing for [`IDLE`] is closed (ICE consent checks arrive every few seconds), at most
//! [`MAX_CONNECTIONS`] are open, and a frame can never exceed 64 KiB, so memory stays bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A connection that sends no frame for this long is closed: ICE consent freshness sends a check
/// every 5 s or so, so only dead or stray connections reach it.
const IDLE: Duration = Duration::from_secs(30);
/// Open ICE-TCP connections at most (each holds a 64 KiB read buffer at worst).
const MAX_CONNECTIONS: usize = 1024;
/// Frames queued for one connection's writer before more are dropped (as UDP would drop them).
const WRITE_QUEUE: usize = 256;

pub enum TcpEvent {
    Opened { from: SocketAddr, tx: mpsc::Sender<Bytes> },
    Packet { from: SocketAddr, data: Vec<u8> },
    Closed { from: SocketAddr },
}

/// Accepts connections until `shutdown`.
pub async fn accept(
    listener: TcpListener,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "ice-tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::debug!(%from, "ice-tcp connection refused: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let events = events.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            connection(stream, from, events, shutdown).await;
            drop(permit);
        });
    }
}

async fn connection(stream: TcpStream, from: SocketAddr, events: mpsc::Sender<TcpEvent>, shutdown: CancellationToken) {
    let (mut read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    if events.send(TcpEvent::Opened { from, tx }).await.is_err() {
        return;
    }
    let writer = async move {
        while let Some(frame) = rx.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else { continue };
            let mut out = Vec::with_capacity(2 + frame.len());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&frame);
            if write.write_all(&out).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        let mut len = [0u8; 2];
        loop {
            match tokio::time::timeout(IDLE, read.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let n = u16::from_be_bytes(len) as usize;
            let mut data = vec![0u8; n];
            match tokio::time::timeout(IDLE, read.read_exact(&mut data)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            if events.send(TcpEvent::Packet { from, data }).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = shutdown.cancelled() => {}
    }
    let _ = events.send(TcpEvent::Closed { from }).await;
}
