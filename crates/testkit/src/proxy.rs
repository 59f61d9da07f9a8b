//! A TCP proxy on loopback that puts network faults between two duet processes (an edge and its
//! locator, a locator and its database): a partition where packets vanish ([`FaultProxy::blackhole`]),
//! every connection dropped at once ([`FaultProxy::cut`]), and the peer moving to a new port
//! ([`FaultProxy::retarget`]).
//!
//! Guarantees:
//! - while black-holed, no byte crosses in either direction and no connection is closed by the
//!   proxy (no FIN, no RST), including bytes a copy loop was in the middle of writing; a FIN or
//!   RST from either peer is not passed on either;
//! - new connections accepted while black-holed complete the TCP handshake with the proxy (the
//!   kernel does that) but are never dialled to the target: the target sees nothing;
//! - [`FaultProxy::heal`] closes every connection that lived through the partition, because the
//!   bytes swallowed meanwhile are lost and a TCP stream cannot resume after losing bytes;
//!   connections made after `heal` are forwarded normally;
//! - [`FaultProxy::blackhole_downstream`] swallows only what the target sends back (an edge's
//!   messages reach the locator, the locator's answers vanish), which holds a sent batch
//!   unacknowledged for as long as a test needs;
//! - dropping the proxy stops the listener and every connection task.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Bytes copied per read in each direction: large enough for a websocket frame burst, small
/// enough that a proxy with many connections stays light.
const BUFFER_SIZE: usize = 16 * 1024;

/// Partition bits: client-to-target bytes swallowed, target-to-client bytes swallowed.
const UPSTREAM: u8 = 1;
const DOWNSTREAM: u8 = 2;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A fault-injecting TCP proxy listening on `127.0.0.1:<random port>`. See the module docs for
/// what each fault does to existing and new connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The accept loop; aborted on drop, which closes the listener.
    accept: AbortHandle,
}

struct Shared {
    /// Target, mode and live connections. Locked only for short sections, never across `.await`.
    state: Mutex<State>,
    /// Mirrors `State::blackholed` so copy loops notice a partition even while blocked in a write.
    blackholed: watch::Sender<u8>,
}

struct State {
    target: SocketAddr,
    /// Which directions are swallowed ([`UPSTREAM`], [`DOWNSTREAM`] bits).
    blackholed: u8,
    /// Tasks of live connections by id, to abort them on heal, cut and drop. Each task removes
    /// its own entry when it ends (see [`Registration`]).
    connections: HashMap<u64, AbortHandle>,
    next_id: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Aborts every live connection task; dropping a task closes both of its sockets.
    fn close_all(&self) {
        let tasks: Vec<AbortHandle> = self.lock().connections.drain().map(|(_, task)| task).collect();
        for task in tasks {
            task.abort();
        }
    }
}

impl FaultProxy {
    /// Starts a proxy to `target` on `127.0.0.1:0`, forwarding.
    pub async fn start(target: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (blackholed, _) = watch::channel(0);
        let state = State { target, blackholed: 0, connections: HashMap::new(), next_id: 0 };
        let shared = Arc::new(Shared { state: Mutex::new(state), blackholed });
        let accept = tokio::spawn(accept_loop(listener, shared.clone())).abort_handle();
        Ok(FaultProxy { addr, shared, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, to hand to a client or an edge in place of the target's URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where new connections go.
    pub fn target(&self) -> SocketAddr {
        self.shared.lock().target
    }

    /// Sends new connections to `target` (e.g. a locator restarted on another port). Existing
    /// connections keep their current peer.
    pub fn retarget(&self, target: SocketAddr) {
        self.shared.lock().target = target;
    }

    /// Starts a partition: from now on every byte in both directions, on existing and new
    /// connections, is swallowed; nothing is closed. Takes effect at once, even mid-write.
    pub fn blackhole(&self) {
        let mut state = self.shared.lock();
        state.blackholed = UPSTREAM | DOWNSTREAM;
        self.shared.blackholed.send_replace(state.blackholed);
    }

    /// Starts a one-way partition: bytes from the target to clients are swallowed, on existing
    /// and new connections; bytes to the target still pass. [`FaultProxy::blackhole`] widens it
    /// to both directions, [`FaultProxy::heal`] ends it.
    pub fn blackhole_downstream(&self) {
        let mut state = self.shared.lock();
        state.blackholed |= DOWNSTREAM;
        self.shared.blackholed.send_replace(state.blackholed);
    }

    /// Whether the proxy swallows anything.
    pub fn is_blackholed(&self) -> bool {
        self.shared.lock().blackholed != 0
    }

    /// Ends a partition: closes every connection that lived through it (their swallowed bytes are
    /// lost, so those streams cannot resume) and forwards new connections again. A no-op when not
    /// black-holed.
    pub fn heal(&self) {
        let tasks: Vec<AbortHandle> = {
            let mut state = self.shared.lock();
            if state.blackholed == 0 {
                return;
            }
            state.blackholed = 0;
            self.shared.blackholed.send_replace(0);
            state.connections.drain().map(|(_, task)| task).collect()
        };
        for task in tasks {
            task.abort();
        }
    }

    /// Closes every current connection on both sides (FIN, or RST where unread data is pending)
    /// and keeps accepting new ones. The sockets close as soon as the runtime drops the aborted
    /// tasks, right after this returns.
    pub fn cut(&self) {
        self.shared.close_all();
    }

    /// Live proxied connections (accepted and not yet closed).
    pub fn connections(&self) -> usize {
        self.shared.lock().connections.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.close_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Spawn and register under the lock so that heal and cut see every connection accepted
        // before them, and a task that ends at once cannot deregister before it is registered.
        let mut state = shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        let registration = Registration { shared: shared.clone(), id };
        let partition = shared.blackholed.subscribe();
        let task = tokio::spawn(serve(client, state.target, state.blackholed, partition, registration));
        state.connections.insert(id, task.abort_handle());
    }
}

/// Removes a connection from the live set when its task ends or is aborted.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock().connections.remove(&self.id);
    }
}

/// One proxied connection. Accepted during a partition, it is never dialled to the target.
async fn serve(
    client: TcpStream,
    target: SocketAddr,
    born_blackholed: u8,
    partition: watch::Receiver<u8>,
    _registration: Registration,
) {
    if born_blackholed & UPSTREAM != 0 {
        return swallow(client).await;
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        return; // the client sees the connection close, as if the target refused it
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // Each direction ends on EOF (half-closing the other side, as the peer did); an error in
    // either tears the whole connection down.
    let _ = tokio::try_join!(
        pump(client_read, upstream_write, partition.clone(), UPSTREAM),
        pump(upstream_read, client_write, partition, DOWNSTREAM),
    );
}

/// Copies `src` to `dst` until EOF (then shuts down `dst`'s write side) or an error. Once the
/// proxy is black-holed it swallows everything `src` sends and never returns: the connection
/// then ends only by heal, cut or drop.
async fn pump(
    mut src: impl AsyncRead + Unpin,
    mut dst: impl AsyncWrite + Unpin,
    mut partition: watch::Receiver<u8>,
    direction: u8,
) -> io::Result<()> {
    let mut buf = vec![0; BUFFER_SIZE];
    loop {
        let read = src.read(&mut buf).await;
        if *partition.borrow() & direction != 0 {
            break;
        }
        let n = read?;
        if n == 0 {
            dst.shutdown().await?;
            return Ok(());
        }
        tokio::select! {
            written = dst.write_all(&buf[..n]) => written?,
            () = partitioned(&mut partition, direction) => break,
        }
    }
    swallow(src).await
}

/// Resolves when the proxy becomes black-holed (never if the proxy is gone: its drop aborts us).
async fn partitioned(partition: &mut watch::Receiver<u8>, direction: u8) {
    let proxy_gone = partition.wait_for(|blackholed| *blackholed & direction != 0).await.is_err();
    if proxy_gone {
        std::future::pending::<()>().await;
    }
}

/// Reads and discards forever, holding the socket open even after the peer's FIN or RST.
async fn swallow<T>(mut src: impl AsyncRead + Unpin) -> T {
    let mut buf = vec![0; BUFFER_SIZE];
    loop {
        match src.read(&mut buf).await {
            Ok(0) | Err(_) => return std::future::pending().await,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio::time::timeout;

    /// How long a test waits to conclude that nothing arrives. Real time: absence cannot be
    /// observed with paused time, and loopback delivers in microseconds, so 200 ms is ample.
    const SILENCE: Duration = Duration::from_millis(200);
    /// Bound on things that should happen at once (a close, a delivery).
    const PROMPT: Duration = Duration::from_secs(5);

    /// A target server that hands each accepted connection to the test.
    async fn target() -> (SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if tx.send(stream).is_err() {
                    break;
                }
            }
        });
        (addr, rx)
    }

    async fn accepted(rx: &mut mpsc::UnboundedReceiver<TcpStream>) -> TcpStream {
        timeout(PROMPT, rx.recv()).await.expect("target accepts a connection").unwrap()
    }

    async fn send(stream: &mut TcpStream, bytes: &[u8]) {
        stream.write_all(bytes).await.unwrap();
    }

    async fn receive(stream: &mut TcpStream, expected: &[u8]) {
        let mut buf = vec![0; expected.len()];
        timeout(PROMPT, stream.read_exact(&mut buf)).await.expect("bytes arrive").unwrap();
        assert_eq!(buf, expected);
    }

    /// Nothing arrives, and the stream is not closed (a close would end the read at once).
    async fn silent(stream: &mut TcpStream) {
        let mut buf = [0; 64];
        if let Ok(read) = timeout(SILENCE, stream.read(&mut buf)).await {
            panic!("expected silence, read {read:?}");
        }
    }

    async fn closed(stream: &mut TcpStream) {
        let mut buf = [0; 64];
        match timeout(PROMPT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {}
            other => panic!("expected the connection closed, got {other:?}"),
        }
    }

    async fn connections_settle(proxy: &FaultProxy, n: usize) {
        crate::wait_until(&format!("{n} proxied connections"), PROMPT, || {
            let count = proxy.connections();
            async move { count == n }
        })
        .await;
    }

    #[tokio::test]
    async fn forwards_both_ways_and_half_closes() {
        let (addr, mut accepts) = target().await;
        let proxy = FaultProxy::start(addr).await.unwrap();
        assert_eq!(proxy.http_url(), format!("http://127.0.0.1:{}", proxy.addr().port()));
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut server = accepted(&mut accepts).await;
        send(&mut client, b"ping").await;
        receive(&mut server, b"ping").await;
        send(&mut server, b"pong").await;
        receive(&mut client, b"pong").await;
        assert_eq!(proxy.connections(), 1);

        client.shutdown().await.unwrap();
        closed(&mut server).await;
        send(&mut server, b"after half-close").await;
        receive(&mut client, b"after half-close").await;
        drop(server);
        closed(&mut client).await;
        connections_settle(&proxy, 0).await;
    }

    #[tokio::test]
    async fn blackhole_swallows_both_ways_without_closing_and_heal_closes_the_survivors() {
        let (addr, mut accepts) = target().await;
        let proxy = FaultProxy::start(addr).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut server = accepted(&mut accepts).await;
        send(&mut client, b"a").await;
        receive(&mut server, b"a").await;

        proxy.blackhole();
        assert!(proxy.is_blackholed());
        send(&mut client, b"lost upstream").await;
        send(&mut server, b"lost downstream").await;
        // A connection made during the partition reaches the proxy but never the target.
        let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
        send(&mut late, b"lost too").await;
        let no_accept = async {
            assert!(timeout(SILENCE, accepts.recv()).await.is_err(), "the target saw a connection");
        };
        tokio::join!(silent(&mut client), silent(&mut server), silent(&mut late), no_accept);
        assert_eq!(proxy.connections(), 2);

        proxy.heal();
        assert!(!proxy.is_blackholed());
        closed(&mut client).await;
        closed(&mut late).await;
        closed(&mut server).await;
        connections_settle(&proxy, 0).await;

        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut server = accepted(&mut accepts).await;
        send(&mut client, b"healed").await;
        receive(&mut server, b"healed").await;
        send(&mut server, b"both ways").await;
        receive(&mut client, b"both ways").await;
    }

    #[tokio::test]
    async fn blackhole_downstream_passes_requests_and_swallows_answers() {
        let (addr, mut accepts) = target().await;
        let proxy = FaultProxy::start(addr).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut server = accepted(&mut accepts).await;
        proxy.blackhole_downstream();
        assert!(proxy.is_blackholed());
        send(&mut client, b"request").await;
        receive(&mut server, b"request").await;
        send(&mut server, b"lost answer").await;
        silent(&mut client).await;
        // New connections are dialled and one-way too.
        let mut late = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut late_server = accepted(&mut accepts).await;
        send(&mut late, b"late").await;
        receive(&mut late_server, b"late").await;
        send(&mut late_server, b"lost").await;
        silent(&mut late).await;

        proxy.heal();
        closed(&mut client).await;
        closed(&mut late).await;
        connections_settle(&proxy, 0).await;
    }

    #[tokio::test]
    async fn blackhole_interrupts_a_write_the_peer_is_not_reading() {
        let (addr, mut accepts) = target().await;
        let proxy = FaultProxy::start(addr).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut server = accepted(&mut accepts).await;
        // Far more than loopback socket buffers hold: with the client not reading, the server
        // stalls once the proxy is blocked writing to the client.
        let flood = vec![7u8; 32 * 1024 * 1024];
        let stalled = timeout(SILENCE, server.write_all(&flood)).await.is_err();
        assert!(stalled, "the server's writes should stall while the client does not read");

        proxy.blackhole();
        // The proxy drops its blocked write and swallows: the server writes freely again.
        timeout(PROMPT, server.write_all(&flood)).await.expect("writes into the void do not stall").unwrap();
        // The client gets only what was in flight before the partition, then silence, no close.
        let mut received = 0;
        let mut buf = vec![0; BUFFER_SIZE];
        while let Ok(read) = timeout(SILENCE, client.read(&mut buf)).await {
            let n = read.unwrap();
            assert_ne!(n, 0, "the black-holed connection was closed");
            received += n;
        }
        assert!(received < flood.len(), "received {received} bytes: the partition leaked");
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn cut_closes_every_connection_and_keeps_accepting() {
        let (addr, mut accepts) = target().await;
        let proxy = FaultProxy::start(addr).await.unwrap();
        let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut first_server = accepted(&mut accepts).await;
        let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut second_server = accepted(&mut accepts).await;
        assert_eq!(proxy.connections(), 2);

        proxy.cut();
        closed(&mut first).await;
        closed(&mut first_server).await;
        closed(&mut second).await;
        closed(&mut second_server).await;
        connections_settle(&proxy, 0).await;

        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut server = accepted(&mut accepts).await;
        send(&mut client, b"again").await;
        receive(&mut server, b"again").await;
    }

    #[tokio::test]
    async fn retarget_moves_new_connections_only() {
        let (old_addr, mut old_accepts) = target().await;
        let (new_addr, mut new_accepts) = target().await;
        let proxy = FaultProxy::start(old_addr).await.unwrap();
        let mut old_client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut old_server = accepted(&mut old_accepts).await;

        proxy.retarget(new_addr);
        assert_eq!(proxy.target(), new_addr);
        let mut new_client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut new_server = accepted(&mut new_accepts).await;
        send(&mut new_client, b"new").await;
        receive(&mut new_server, b"new").await;
        send(&mut old_client, b"old").await;
        receive(&mut old_server, b"old").await;
    }

    #[tokio::test]
    async fn drop_closes_the_listener_and_the_connections() {
        let (addr, mut accepts) = target().await;
        let proxy = FaultProxy::start(addr).await.unwrap();
        let proxy_addr = proxy.addr();
        let mut client = TcpStream::connect(proxy_addr).await.unwrap();
        let mut server = accepted(&mut accepts).await;
        drop(proxy);
        closed(&mut client).await;
        closed(&mut server).await;
        crate::wait_until(
            "the listener to close",
            PROMPT,
            || async move { TcpStream::connect(proxy_addr).await.is_err() },
        )
        .await;
    }
}
