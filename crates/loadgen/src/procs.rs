//! The processes a benchmark runs: the load generator's own CPU pinning, the `duet-locator` and
//! `duet-edge` binaries started under `taskset`, readiness polling and teardown.
//!
//! Guarantees: every server is a child with `kill_on_drop`, held by a [`Cluster`], so it is
//! killed however the run ends (success, error, Ctrl-C or SIGTERM dropping the run). Servers
//! listen on 127.0.0.1 only, their media UDP sockets included (an ephemeral port each unless the
//! benchmark picks one), so no two collide on the edge's default media port. Their output goes to log files in the cluster's temporary
//! directory, and the last lines are quoted when a server exits early or never becomes ready.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use hyper::StatusCode;
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::http;

/// Interval between two readiness checks of a starting server.
/// Time the locator and every edge get to answer 200 on `/readyz` (PostgreSQL migrations
/// included).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a ready cluster gets to place its first session (the edges' first heartbeats).
pub const FIRST_PLACEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between attempts at the first placement.
pub const FIRST_PLACEMENT_RETRY: Duration = Duration::from_millis(50);
/// Allowance per run for stopping the servers (and dropping the database).
pub const TEARDOWN_ALLOWANCE: Duration = Duration::from_secs(15);

const READY_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Time a killed server gets to be reaped before teardown stops waiting for it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines quoted when a server fails.
const LOG_TAIL_LINES: usize = 20;
/// Kernel clock ticks per second for `/proc` CPU times; 100 on every mainstream Linux build.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// Length of the enrollment secret generated for each cluster (the locator wants at least 16).
const SECRET_LEN: usize = 32;
/// The edge's media UDP address variable. Every server gets [`MEDIA_LISTEN_ANY`] unless its
/// start names an address: the default, port 10000 on the listen address, would make the edges
/// of one cluster (and of a duet running beside the benchmark) collide.
const ENV_MEDIA_LISTEN: &str = "DUET_MEDIA_LISTEN";
const MEDIA_LISTEN_ANY: &str = "127.0.0.1:0";

/// Which CPUs the servers and the load generator run on (`taskset` CPU lists).
#[derive(Debug, Clone, clap::Args)]
pub struct Pinning {
    /// CPUs of the locator and the edges, as a taskset CPU list.
    #[arg(long, value_name = "CPUS", default_value = "0")]
    pub server_cpus: String,
    /// CPUs of the load generator itself, as a taskset CPU list.
    #[arg(long, value_name = "CPUS", default_value = "1")]
    pub loadgen_cpus: String,
}

impl Pinning {
    /// One line for reports.
    pub fn describe(&self, edges: usize) -> String {
        let edges = if edges == 1 { "1 edge".to_owned() } else { format!("{edges} edges") };
        format!(
            "locator and {edges} on CPU {} (`taskset -c {}`), load generator on CPU {} (pins itself with `taskset -a -p -c {}`)",
            self.server_cpus, self.server_cpus, self.loadgen_cpus, self.loadgen_cpus
        )
    }
}

fn require_taskset() -> anyhow::Result<()> {
    match std::process::Command::new("taskset").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("taskset not found: install util-linux (`apt-get install util-linux`) or run `scripts/bench`")
        }
        Err(e) => bail!("cannot run taskset: {e}"),
    }
}

/// Pins this process, all its threads, to the load generator's CPUs. Called before the runtime
/// starts, so the threads it creates later inherit the mask too.
pub fn pin_self(pinning: &Pinning) -> anyhow::Result<()> {
    require_taskset()?;
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &pinning.loadgen_cpus, &pid])
        .stdout(Stdio::null())
        .output()
        .context("running taskset")?;
    if !out.status.success() {
        bail!(
            "cannot pin the load generator to CPU {} (--loadgen-cpus): {}",
            pinning.loadgen_cpus,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Raises this process's open-file limit towards `want` (the servers it starts inherit it) and
/// answers the limit now in force: `want`, or the hard limit when that is lower and raising it is
/// not permitted (raising a hard limit needs CAP_SYS_RESOURCE).
pub fn raise_fd_limit(want: u64) -> anyhow::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_none_or(|c| c >= want) {
        return Ok(now.current.unwrap_or(u64::MAX));
    }
    let raised = Rlimit { current: Some(want), maximum: now.maximum.map(|m| m.max(want)) };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(want);
    }
    let hard = now.maximum.unwrap_or(u64::MAX).min(want);
    setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: now.maximum })
        .with_context(|| format!("cannot raise the open-file limit to {hard} (now {:?})", now.current))?;
    Ok(hard)
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
pub async fn interrupted() -> &'static str {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A free port on 127.0.0.1: bound, read and released. Another process could take it before the
/// server binds it; the server then exits and the run fails with its log.
/// Starts of one server on fresh ports before a lost port race is an error.
const PORT_ATTEMPTS: u32 = 3;

pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A free UDP port on 127.0.0.1, the same way (an edge's media port).
pub fn free_udp_port() -> anyhow::Result<u16> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding udp 127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN)
}

/// The release binaries a run starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub locator: PathBuf,
    pub edge: PathBuf,
}

impl Binaries {
    /// From `dir`, or else the directory of this executable (`target/release`).
    pub fn find(dir: Option<&Path>) -> anyhow::Result<Binaries> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => {
                let exe = std::env::current_exe().context("locating this executable")?;
                exe.parent().context("this executable has no directory")?.to_path_buf()
            }
        };
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{} not found: run `cargo build --release -p duet-locator -p duet-edge` or pass --bin-dir",
                    path.display()
                )
            }
        };
        Ok(Binaries { locator: find("duet-locator")?, edge: find("duet-edge")? })
    }
}

/// The id of the `k`-th edge of a cluster (from 1): `bench-edge-<k>`.
pub fn edge_id(k: usize) -> String {
    format!("bench-edge-{k}")
}

/// One server process.
pub struct Server {
    /// For messages: `duet-locator`, `edge bench-edge-3`.
    name: String,
    child: Child,
    /// Its stdout and stderr.
    log: PathBuf,
    pub addr: SocketAddr,
    /// An edge's media UDP address, when the cluster picked it ([`ClusterSpec::media_ports`]).
    pub media_addr: Option<SocketAddr>,
}

impl Server {
    /// Starts `bin` under `taskset -c cpus`, with no `DUET_*` or `RUST_LOG` variable inherited
    /// from this environment besides those in `env`, and media on an ephemeral port unless `env`
    /// sets `DUET_MEDIA_LISTEN`. Also starts a benchmark's peer that is not duet's (its readiness:
    /// [`Server::wait_listening`]).
    pub fn spawn(
        name: String,
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        cpus: &str,
        log: PathBuf,
        addr: SocketAddr,
    ) -> anyhow::Result<Server> {
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpus).arg(bin).args(args);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("DUET_") || key == "RUST_LOG" {
                cmd.env_remove(key.as_ref());
            }
        }
        if !env.iter().any(|(key, _)| *key == ENV_MEDIA_LISTEN) {
            cmd.env(ENV_MEDIA_LISTEN, MEDIA_LISTEN_ANY);
        }
        cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {name} ({})", bin.display()))?;
        Ok(Server { name, child, log, addr, media_addr: None })
    }

    /// Polls a TCP connection to [`Server::addr`] until one is accepted, the process exits or
    /// `deadline` passes.
    pub async fn wait_listening(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            self.check_alive()?;
            let last = match tokio::net::TcpStream::connect(self.addr).await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} does not accept connections on {} in time: {last}; {}",
                    self.name,
                    self.addr,
                    self.log_tail()
                );
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        if tail.is_empty() {
            "(its log is empty)".to_owned()
        } else {
            format!("its last log lines:\n{tail}")
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// True if the process exited because its port was taken: [`free_port`] frees a port before
    /// the server binds it, and another process (often an outgoing connection's ephemeral port)
    /// may take it meanwhile. Such a start is retried on a new port.
    pub fn lost_port_race(&mut self) -> bool {
        self.exited().is_some()
            && std::fs::read_to_string(&self.log)
                .is_ok_and(|log| log.to_ascii_lowercase().contains("address already in use"))
    }

    /// An error if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.exited() {
            Some(status) => bail!("{} exited ({status}); {}", self.name, self.log_tail()),
            None => Ok(()),
        }
    }

    /// Polls `GET /readyz` until it answers 200, the process exits or `deadline` passes.
    async fn wait_ready(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            self.check_alive()?;
            let last = match http::get_status(self.addr, "/readyz").await {
                Ok(StatusCode::OK) => return Ok(()),
                Ok(status) => format!("answered {status}"),
                Err(e) => format!("{e}"),
            };
            if Instant::now() >= deadline {
                bail!("{} not ready in time: /readyz {last}; {}", self.name, self.log_tail());
            }
            tokio::time::sleep(READY_POLL_INTERVAL).await;
        }
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// User+system CPU time so far, from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.cpu_times().map(|t| t.total())
    }

    /// Its CPU time so far, in user space and in the kernel apart.
    pub fn cpu_times(&self) -> Option<CpuTimes> {
        cpu_times_of(&format!("/proc/{}/stat", self.child.id()?))
    }

    /// Kills the process and waits until it is gone.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await;
    }
}

/// Resident set size of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading a server's /proc status")?;
    parse_rss(&status).context("no VmRSS line in a server's /proc status")
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Aborts a background task when dropped (however the function holding it returns).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// User+system CPU time of this process so far.
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time_of("/proc/self/stat")
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    /// User, nice and system time of all CPUs: every process, ours included.
    pub busy: Duration,
    /// Time the hypervisor gave the machine's virtual CPUs to someone else.
    pub steal: Duration,
}

pub fn machine_cpu() -> Option<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line.split_ascii_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| ticks.get(i).copied();
    let secs = |t: u64| Duration::from_secs_f64(t as f64 / CLOCK_TICKS_PER_SEC);
    Some(MachineCpu { busy: secs(at(0)? + at(1)? + at(2)?), steal: secs(at(7)?) })
}

/// User+system CPU time so far of every process whose command name is `comm` (`postgres`: the
/// database server, which is not ours and not pinned). Processes that exited are not counted.
pub fn cpu_time_of_named(comm: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let stat_paths = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .map(|e| e.path().join("stat"));
    let wanted = format!("({comm})");
    stat_paths
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter(|stat| stat.split_ascii_whitespace().nth(1) == Some(wanted.as_str()))
        .filter_map(|stat| cpu_time_from_stat(&stat))
        .sum()
}

fn cpu_time_of(stat_path: &str) -> Option<Duration> {
    cpu_times_of(stat_path).map(CpuTimes::total)
}

fn cpu_times_of(stat_path: &str) -> Option<CpuTimes> {
    cpu_times_from_stat(&std::fs::read_to_string(stat_path).ok()?)
}

fn cpu_time_from_stat(stat: &str) -> Option<Duration> {
    cpu_times_from_stat(stat).map(|t| t.total())
}

/// A process's CPU time: `user` running its own code, `system` in the kernel on its behalf
/// (system calls, and the network stack's work that runs in them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was spent from `earlier` to `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }
}

fn cpu_times_from_stat(stat: &str) -> Option<CpuTimes> {
    // Fields after the parenthesised command name (which may hold spaces and parentheses);
    // utime and stime are fields 14 and 15 of the line.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let mut ticks = || -> Option<Duration> {
        let t = fields.next()?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(t as f64 / CLOCK_TICKS_PER_SEC))
    };
    Some(CpuTimes { user: ticks()?, system: ticks()? })
}

/// What a cluster is started with.
pub struct ClusterSpec<'a> {
    pub bins: &'a Binaries,
    pub pinning: &'a Pinning,
    /// `DUET_DATABASE_URL`; `None`: the locator's default SQLite file in its data directory.
    pub database_url: Option<&'a str>,
    /// Edges started with the locator, linked to it directly ([`Cluster::add_edges`] adds more).
    pub edges: usize,
    /// How long the locator and all edges have, together, to become ready.
    pub startup_timeout: Duration,
    /// Give each edge a media UDP port picked free on 127.0.0.1 and known to the benchmark
    /// ([`Server::media_addr`]); otherwise an ephemeral one that nobody needs to know.
    pub media_ports: bool,
    /// Variables every edge gets besides the cluster's own (limits a scenario lifts).
    pub edge_env: &'a [(&'a str, &'a str)],
}

/// The locator's SQLite file in its data directory when no database URL is given.
const LOCATOR_SQLITE_FILE: &str = "locator.db";

/// A locator without embedded edge, and edges linked to it, each a process. Fields drop in
/// order: the servers are killed before their directory is removed.
pub struct Cluster {
    pub locator: Server,
    pub edges: Vec<Server>,
    /// The enrollment secret the edges present.
    secret: String,
    /// Where the locator keeps its data: the spec's URL or its SQLite file.
    database_url: String,
    /// What edges added later are started with.
    edge_bin: PathBuf,
    server_cpus: String,
    /// [`ClusterSpec::media_ports`].
    media_ports: bool,
    /// [`ClusterSpec::edge_env`].
    edge_env: Vec<(String, String)>,
    /// Data directories and logs of every server.
    dir: TempDir,
}

impl Cluster {
    /// Starts the locator, waits until it is ready, starts the edges and waits until each is
    /// ready (registered with the locator and holding its token keys).
    pub async fn start(spec: ClusterSpec<'_>) -> anyhow::Result<Cluster> {
        let deadline = Instant::now() + spec.startup_timeout;
        let dir = tempfile::Builder::new().prefix("duet-bench-").tempdir().context("creating a temporary directory")?;
        let secret = random_secret();
        let data_dir = dir.path().join("locator");
        let data_dir_str = data_dir.to_string_lossy().into_owned();
        let mut attempts = 1;
        let locator = loop {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
            let listen = addr.to_string();
            let mut env = vec![
                ("DUET_EMBEDDED_EDGE", "false"),
                ("DUET_LISTEN", listen.as_str()),
                ("DUET_DATA_DIR", data_dir_str.as_str()),
                ("DUET_ENROLLMENT_SECRET", secret.as_str()),
                ("DUET_LOG", "warn"),
                // Every request comes from 127.0.0.1: the per-address limit would measure itself.
                ("DUET_PUBLIC_RATE_LIMIT", "0"),
            ];
            if let Some(url) = spec.database_url {
                env.push(("DUET_DATABASE_URL", url));
            }
            let mut locator = Server::spawn(
                "duet-locator".to_owned(),
                &spec.bins.locator,
                &[],
                &env,
                &spec.pinning.server_cpus,
                dir.path().join("locator.log"),
                addr,
            )?;
            match locator.wait_ready(deadline).await {
                Ok(()) => break locator,
                Err(_) if locator.lost_port_race() && attempts < PORT_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e),
            }
        };

        let database_url = match spec.database_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", data_dir.join(LOCATOR_SQLITE_FILE).display()),
        };
        let mut cluster = Cluster {
            locator,
            edges: Vec::with_capacity(spec.edges),
            secret,
            database_url,
            edge_bin: spec.bins.edge.clone(),
            server_cpus: spec.pinning.server_cpus.clone(),
            media_ports: spec.media_ports,
            edge_env: spec.edge_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            dir,
        };
        let locator_url = cluster.locator_url();
        cluster.add_edges(spec.edges, &locator_url, deadline).await?;
        Ok(cluster)
    }

    /// `http://<the locator's address>`.
    pub fn locator_url(&self) -> String {
        format!("http://{}", self.locator.addr)
    }

    /// The locator's database: what `ClusterSpec::database_url` named, or its SQLite file.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// Starts `n` more edges (`bench-edge-<k>`, numbered on from the existing ones) that link to
    /// the locator at `locator_url` (the locator itself, or a proxy in front of it), and waits
    /// until each is ready or `deadline` passes.
    pub async fn add_edges(&mut self, n: usize, locator_url: &str, deadline: Instant) -> anyhow::Result<()> {
        let first = self.edges.len() + 1;
        for k in first..first + n {
            let edge = self.spawn_edge(k, locator_url)?;
            self.edges.push(edge);
        }
        for k in first..first + n {
            let mut attempts = 1;
            loop {
                let edge = &mut self.edges[k - 1];
                match edge.wait_ready(deadline).await {
                    Ok(()) => break,
                    Err(_) if edge.lost_port_race() && attempts < PORT_ATTEMPTS => {
                        attempts += 1;
                        self.edges[k - 1] = self.spawn_edge(k, locator_url)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.locator.check_alive()
    }

    /// Starts edge number `k` on a free port.
    fn spawn_edge(&self, k: usize, locator_url: &str) -> anyhow::Result<Server> {
        let id = edge_id(k);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let args = [
            "--locator-url".to_owned(),
            locator_url.to_owned(),
            "--listen".to_owned(),
            addr.to_string(),
            "--id".to_owned(),
            id.clone(),
            "--data-dir".to_owned(),
            self.dir.path().join(format!("edge-{k}")).to_string_lossy().into_owned(),
        ];
        let media_addr =
            self.media_ports.then(free_udp_port).transpose()?.map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        let media_listen = media_addr.map(|a| a.to_string());
        let mut env = vec![("DUET_ENROLLMENT_SECRET", self.secret.as_str()), ("DUET_LOG", "warn")];
        if let Some(listen) = &media_listen {
            env.push((ENV_MEDIA_LISTEN, listen.as_str()));
        }
        env.extend(self.edge_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let log = self.dir.path().join(format!("edge-{k}.log"));
        let mut edge = Server::spawn(format!("edge {id}"), &self.edge_bin, &args, &env, &self.server_cpus, log, addr)?;
        edge.media_addr = media_addr;
        Ok(edge)
    }

    /// An error naming the first server that has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.locator.check_alive()?;
        self.edges.iter_mut().try_for_each(Server::check_alive)
    }

    /// CPU time used so far by the locator and by all edges together.
    pub fn cpu_times(&self) -> (Option<Duration>, Option<Duration>) {
        let edges = self.edges.iter().map(Server::cpu_time).sum::<Option<Duration>>();
        (self.locator.cpu_time(), edges)
    }

    /// Kills every server and waits until they are gone.
    pub async fn stop(self) {
        let Cluster { locator, edges, .. } = self;
        for edge in edges {
            edge.stop().await;
        }
        locator.stop().await;
    }
}

/// A placement request for the user `name` (id and display name alike).
pub fn user(name: &str) -> duet_client::PlacementRequest {
    duet_client::PlacementRequest {
        user: Some(duet_client::User { id: name.to_owned(), name: name.to_owned() }),
        ..Default::default()
    }
}

/// A relayed `message` frame's header: kind, seq (u64), from and to (u32), payload length (u32).
pub const MESSAGE_HEADER: usize = 21;

/// Connects a placed participant to its edge, sends `join` and reads until `welcome` (past any
/// other frame), within `timeout` for each read.
pub async fn join_placed(
    placed: &duet_client::Placement,
    limits: duet_ws::Limits,
    timeout: Duration,
) -> anyhow::Result<duet_ws::ClientReader> {
    use duet_proto::session::{kind, ClientFrame, SESSION_PROTOCOL_VERSION};
    let mut reader = duet_ws::connect(&placed.edge.url, &[], limits).await?;
    let join = ClientFrame::Join { version: SESSION_PROTOCOL_VERSION, token: placed.token.clone() };
    reader.writer().send(join.encode()?)?;
    loop {
        match tokio::time::timeout(timeout, reader.next()).await {
            Err(_) => bail!("no welcome within {timeout:?}"),
            Ok(Ok(duet_ws::Message::Binary(frame))) if frame.first() == Some(&kind::WELCOME) => return Ok(reader),
            Ok(Ok(duet_ws::Message::Binary(_))) => {}
            Ok(Ok(other)) => bail!("the edge answered the join with {other:?}"),
            Ok(Err(e)) => bail!("the connection failed before welcome: {e}"),
        }
    }
}

/// Retries creating a session until the locator places it: the edges are ready before the
/// locator has necessarily taken their first heartbeat into account.
pub async fn first_session(
    cluster: &mut Cluster,
    client: &duet_client::LocatorClient,
    req: &duet_client::PlacementRequest,
) -> anyhow::Result<duet_client::Placement> {
    let deadline = Instant::now() + FIRST_PLACEMENT_TIMEOUT;
    loop {
        cluster.check_alive()?;
        match client.create_session(req).await {
            Ok(placed) => return Ok(placed),
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "no placement succeeded within {FIRST_PLACEMENT_TIMEOUT:?} of readiness: the last one failed: {e}"
                )
            }
            Err(_) => tokio::time::sleep(FIRST_PLACEMENT_RETRY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_resident_set_from_proc_status() {
        let status = "Name:\tduet-edge\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_rss(status), Some(2048 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_user_and_system_time_from_proc_stat() {
        // A command name with a space and a parenthesis; utime 250 ticks, stime 75.
        let stat = "4242 (duet (edge) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        let t = cpu_times_from_stat(stat).unwrap();
        assert_eq!(t, CpuTimes { user: Duration::from_millis(2_500), system: Duration::from_millis(750) });
        assert_eq!(cpu_time_from_stat(stat), Some(Duration::from_millis(3_250)));
        let later = CpuTimes { user: Duration::from_millis(3_000), system: Duration::from_millis(1_000) };
        assert_eq!(later.since(t), CpuTimes { user: Duration::from_millis(500), system: Duration::from_millis(250) });
        assert_eq!(cpu_times_from_stat("4242 (edge) S 1 2"), None);
        assert_eq!(cpu_times_from_stat("no parenthesis"), None);
    }
}
