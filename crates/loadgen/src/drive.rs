//! The two load shapes every scenario uses.
//!
//! - **Closed loop** ([`closed_loop`]): a fixed number of keep-alive connections, each sending its
//!   next request as soon as the previous answer is read. It finds the throughput the server
//!   sustains; its latencies are not meant to be quoted, because a slow answer delays the
//!   requests behind it instead of being measured by them.
//! - **Open loop** ([`open_loop`]): requests scheduled at fixed instants whatever the answers do,
//!   each sent on a free connection (a new one when none is free, up to a bound). Latency is
//!   measured from the *scheduled* instant, so time a request spends waiting (for a connection,
//!   or because the generator ran late) is counted, not omitted ("coordinated omission").
//!
//! Both end by themselves: a phase has a duration, every request a deadline, and the drain at the
//! end of an open loop a bound. Memory is bounded by rate × request timeout in-flight requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use hyper::StatusCode;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{Connection, RequestSpec, TransportError};
use crate::stats;

/// Share of failed requests (any answer but the expected status, or no answer) above which a
/// phase fails the run: beyond it the figures describe errors, not the service.
pub const MAX_ERROR_SHARE: f64 = 0.01;
/// A request without an answer this long after its (scheduled) start counts as an error. Three
/// orders of magnitude above the latencies measured, so only a stuck server reaches it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a phase or one of its workers counted.
pub struct Tally {
    pub ok: u64,
    /// Failed requests by reason (`status 503`, `timeout`, `connection closed`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Latency of the successful requests, microseconds.
    pub latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally { ok: 0, errors: BTreeMap::new(), latency: stats::histogram() }
    }

    fn count(&mut self, outcome: Result<StatusCode, String>, expect: StatusCode, took: Duration) {
        match outcome {
            Ok(status) if status == expect => {
                self.ok += 1;
                stats::record(&mut self.latency, took);
            }
            Ok(status) => *self.errors.entry(format!("status {status}")).or_default() += 1,
            Err(reason) => *self.errors.entry(reason).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (reason, n) in other.errors {
            *self.errors.entry(reason).or_default() += n;
        }
        self.latency.add(&other.latency).expect("histograms with the same bounds");
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The outcome of one phase.
pub struct PhaseResult {
    pub tally: Tally,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Connections used: the fixed count of a closed loop, the peak of an open loop.
    pub connections: usize,
    /// Open loop: how late the generator sent each request after its scheduled instant.
    pub send_lag: Option<Histogram<u64>>,
}

impl PhaseResult {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.tally.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// `3 × status 503, 1 × timeout`, or `none`.
    pub fn error_summary(&self) -> String {
        if self.tally.errors.is_empty() {
            return "none".to_owned();
        }
        self.tally.errors.iter().map(|(reason, n)| format!("{n} × {reason}")).collect::<Vec<_>>().join(", ")
    }

    /// An error when more than [`MAX_ERROR_SHARE`] of the requests failed, or none succeeded.
    pub fn ensure_few_errors(&self, phase: &str) -> anyhow::Result<()> {
        let failed = self.tally.failed();
        let total = self.tally.ok + failed;
        if self.tally.ok == 0 || failed as f64 > total as f64 * MAX_ERROR_SHARE {
            bail!(
                "{phase}: {failed} of {total} requests failed (more than {}%): {}",
                MAX_ERROR_SHARE * 100.0,
                self.error_summary()
            );
        }
        Ok(())
    }
}

async fn timed_exchange(conn: &mut Connection, spec: &RequestSpec, deadline: Instant) -> Result<StatusCode, String> {
    match tokio::time::timeout_at(deadline, conn.exchange(spec)).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".to_owned()),
    }
}

/// `connections` connections, each looping request → answer until `duration` has passed; the
/// requests in flight then finish. Connections are opened before the clock starts.
pub async fn closed_loop(
    addr: SocketAddr,
    spec: &RequestSpec,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<PhaseResult> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(Connection::open(addr).await.with_context(|| format!("connecting to {addr}"))?);
    }
    let spec = Arc::new(spec.clone());
    let start = Instant::now();
    let until = start + duration;
    let mut workers = JoinSet::new();
    for conn in conns {
        workers.spawn(closed_worker(addr, spec.clone(), conn, until));
    }
    let mut tally = Tally::new();
    while let Some(worker) = workers.join_next().await {
        tally.merge(worker.context("closed-loop worker panicked")?);
    }
    Ok(PhaseResult { tally, elapsed: start.elapsed(), connections, send_lag: None })
}

async fn closed_worker(addr: SocketAddr, spec: Arc<RequestSpec>, conn: Connection, until: Instant) -> Tally {
    let mut tally = Tally::new();
    let mut conn = Some(conn);
    while Instant::now() < until {
        let start = Instant::now();
        let mut c = match conn.take().filter(Connection::is_open) {
            Some(c) => c,
            None => match Connection::open(addr).await {
                Ok(c) => c,
                Err(e) => {
                    tally.count(Err(e.to_string()), spec.expect, start.elapsed());
                    continue;
                }
            },
        };
        let outcome = timed_exchange(&mut c, &spec, start + REQUEST_TIMEOUT).await;
        tally.count(outcome, spec.expect, start.elapsed());
        conn = Some(c);
    }
    tally
}

/// Parameters of an open-loop phase.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    pub duration: Duration,
    /// Connections opened before the clock starts.
    pub initial_connections: usize,
    /// Most connections at once; a request finding all of them busy waits (and the wait counts
    /// in its latency).
    pub max_connections: usize,
}

/// Idle keep-alive connections, and permits bounding how many are in use.
struct Pool {
    addr: SocketAddr,
    /// Connections not in use. A std mutex: held only to push or pop, never across an await.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection in use, at most `max_connections`.
    permits: Semaphore,
    /// Connections open now and at most so far.
    counts: Mutex<ConnectionCounts>,
}

#[derive(Default)]
struct ConnectionCounts {
    open: usize,
    peak: usize,
}

impl Pool {
    fn opened(&self, delta: isize) {
        let mut counts = self.counts.lock().expect("pool counters");
        counts.open = counts.open.saturating_add_signed(delta);
        counts.peak = counts.peak.max(counts.open);
    }

    /// A free connection, or a new one when none is idle. The caller holds a permit, so at
    /// most `max_connections` exist.
    async fn checkout(&self) -> Result<Connection, TransportError> {
        loop {
            let idle = self.idle.lock().expect("idle connections").pop();
            match idle {
                Some(c) if c.is_open() => return Ok(c),
                Some(_) => self.opened(-1),
                None => break,
            }
        }
        let conn = Connection::open(self.addr).await?;
        self.opened(1);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        self.idle.lock().expect("idle connections").push(conn);
    }
}

/// Sends `rate` requests per second at fixed instants for `duration`, then waits (bounded) for
/// the answers. Latency runs from each request's scheduled instant.
pub async fn open_loop(addr: SocketAddr, spec: &RequestSpec, params: OpenLoop) -> anyhow::Result<PhaseResult> {
    if !(params.rate.is_finite() && params.rate > 0.0) {
        bail!("open-loop rate must be positive, not {}", params.rate);
    }
    let pool = Arc::new(Pool {
        addr,
        idle: Mutex::new(Vec::new()),
        permits: Semaphore::new(params.max_connections),
        counts: Mutex::default(),
    });
    for _ in 0..params.initial_connections.min(params.max_connections) {
        pool.give_back(Connection::open(addr).await.with_context(|| format!("connecting to {addr}"))?);
        pool.opened(1);
    }
    let spec = Arc::new(spec.clone());
    let tally = Arc::new(Mutex::new(Tally::new()));
    let mut send_lag = stats::histogram();
    let mut requests = JoinSet::new();
    let count = (params.rate * params.duration.as_secs_f64()).round() as u64;
    let start = Instant::now();
    let mut ticks = ticker(start, params.rate, count)?;
    while let Some(at) = ticks.recv().await {
        stats::record(&mut send_lag, at.elapsed());
        requests.spawn(scheduled_request(pool.clone(), spec.clone(), tally.clone(), at));
        while requests.try_join_next().is_some() {}
    }
    // Every request ends by its own deadline; this bound only guards against a bug.
    let drained = tokio::time::timeout(REQUEST_TIMEOUT * 2, async { while requests.join_next().await.is_some() {} });
    drained.await.context("open loop: requests still running long after their deadline")?;
    let elapsed = start.elapsed();
    let tally = std::mem::replace(&mut *tally.lock().expect("tally"), Tally::new());
    let connections = pool.counts.lock().expect("pool counters").peak;
    Ok(PhaseResult { tally, elapsed, connections, send_lag: Some(send_lag) })
}

/// The send instants `start + i / rate` for `i` in `0..count`, each delivered when it comes.
///
/// A thread of its own sleeps to each instant: the runtime's timer has millisecond granularity,
/// which at thousands of requests per second would send them in bursts up to a millisecond late,
/// while a thread's sleep wakes within tens of microseconds. Spinning until each instant would be
/// more precise on an idle core, but takes the core from whatever else the kernel puts there (a
/// PostgreSQL server the benchmark does not pin), which raised PostgreSQL latencies several-fold.
/// How late each send still is gets recorded as the phase's send lag. The channel is unbounded
/// but holds at most `count` instants, and only if the runtime stalls.
pub fn ticker(start: Instant, rate: f64, count: u64) -> anyhow::Result<UnboundedReceiver<Instant>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let start = start.into_std();
    std::thread::Builder::new()
        .name("open-loop-ticker".to_owned())
        .spawn(move || {
            for i in 0..count {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                let now = std::time::Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if tx.send(Instant::from_std(at)).is_err() {
                    return;
                }
            }
        })
        .context("starting the open-loop ticker thread")?;
    Ok(rx)
}

async fn scheduled_request(pool: Arc<Pool>, spec: Arc<RequestSpec>, tally: Arc<Mutex<Tally>>, at: Instant) {
    let deadline = at + REQUEST_TIMEOUT;
    let outcome = tokio::time::timeout_at(deadline, async {
        let _permit = pool.permits.acquire().await.expect("the pool's semaphore is never closed");
        let mut conn = pool.checkout().await.map_err(|e| e.to_string())?;
        let outcome = timed_exchange(&mut conn, &spec, deadline).await;
        if outcome.is_ok() && conn.is_open() {
            pool.give_back(conn);
        } else {
            pool.opened(-1);
        }
        outcome
    })
    .await
    .unwrap_or_else(|_| Err("timeout".to_owned()));
    let took = at.elapsed();
    tally.lock().expect("tally").count(outcome, spec.expect, took);
}
