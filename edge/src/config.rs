//! Edge configuration: defaults < TOML file < environment (`DUET_*`) < flags, parsed once into
//! [`EdgeConfig`] and validated. Secrets (the enrollment secret) come only from the environment
//! or a file, never from a flag or the config file, and are never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Environment variable holding the enrollment secret.
pub const ENV_ENROLLMENT_SECRET: &str = "DUET_ENROLLMENT_SECRET";
/// Environment variable naming a file that holds the enrollment secret.
pub const ENV_ENROLLMENT_SECRET_FILE: &str = "DUET_ENROLLMENT_SECRET_FILE";

/// Default public listener of an edge (the embedded edge of one-machine mode uses it too).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
/// Default locator an edge links to.
pub const DEFAULT_LOCATOR_URL: &str = "http://127.0.0.1:8080";
/// Heartbeats every second: with the locator's 3 s freshness window, a dead edge stops getting
/// sessions within about three seconds, and a heartbeat is a few dozen bytes.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// 1 MiB: far above any editing operation, small enough that a burst of them stays cheap.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// 8 MiB queued for one reader: several seconds of heavy editing traffic, still bounded.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 << 20;
/// A client has 10 s from the websocket upgrade to its `join`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections get this long to close after SIGTERM (and the drain) before the process exits.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// After SIGTERM, sessions get 15 s to end by themselves before their participants are told to
/// ask the locator again: with the 10 s shutdown timeout this fits in Kubernetes' default 30 s
/// termination grace period. Deployments that can wait longer raise both (deploy/kubernetes).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// One million unacknowledged entries: about 12 days of a busy edge's audit and metrics with the
/// locator unreachable, and about 150 MB of disk.
pub const DEFAULT_OUTBOX_MAX_ENTRIES: u64 = 1_000_000;
/// A usage metrics entry every minute.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);
/// 2 MiB of recent events per session for participants that resume: minutes of editing traffic.
pub const DEFAULT_REPLAY_WINDOW_BYTES: usize = 2 << 20;
/// Events are replayable for 2 minutes, and an away guest keeps its place that long: a laptop
/// lid closed for a coffee, a Wi-Fi change, a VPN reconnecting.
pub const DEFAULT_REPLAY_WINDOW_AGE: Duration = Duration::from_secs(120);
/// An absent host keeps its session alive for 2 minutes.
pub const DEFAULT_HOST_GRACE: Duration = Duration::from_secs(120);
/// A session in which nobody sent anything for an hour ends.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// 50 participants per session: far above pair or mob programming, small enough to bound fan-out.
pub const DEFAULT_MAX_PARTICIPANTS: u32 = 50;
/// The media UDP port when `media_listen` is not set (on the public listener's IP address).
pub const DEFAULT_MEDIA_PORT: u16 = crate::media::MediaConfig::DEFAULT_PORT;
/// A connection that sends nothing, not even a ping, for 90 s is closed (clients ping every 30 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// 500 messages per second per connection (bursts of twice that), far above typing speed.
pub const DEFAULT_MAX_MESSAGES_PER_SECOND: u32 = 500;
/// 256 connections from one client address: an office behind one NAT address fits.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 256;

/// duet edge: relays live session traffic between an IDE host and its guests.
///
/// Every option can also be set in the TOML file given by --config (same names, with
/// underscores) and through its DUET_ environment variable. Precedence: defaults < file <
/// environment < flags. The enrollment secret comes only from DUET_ENROLLMENT_SECRET or the file
/// named by DUET_ENROLLMENT_SECRET_FILE.
#[derive(Debug, Default, Parser)]
#[command(name = "duet-edge", version, about)]
pub struct EdgeArgs {
    #[command(subcommand)]
    pub command: Option<EdgeCommand>,
    /// TOML configuration file.
    #[arg(long, env = "DUET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it (secrets redacted) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Address of the public listener (session websockets, /livez, /readyz) [default: 127.0.0.1:8081].
    #[arg(long, env = "DUET_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Base URL clients use to reach this edge, ws:// or wss:// [default: ws://<listen>].
    #[arg(long, env = "DUET_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The locator to link to [default: http://127.0.0.1:8080].
    #[arg(long, env = "DUET_LOCATOR_URL", value_name = "URL")]
    pub locator_url: Option<String>,
    /// Extra CA certificates (PEM) trusted for an https:// or wss:// locator URL, besides the system roots.
    #[arg(long, env = "DUET_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Edge id [default: kept in <data-dir>/edge-id, generated on first start].
    #[arg(long, env = "DUET_EDGE_ID", value_name = "ID")]
    pub id: Option<String>,
    /// Region this edge serves [default: default].
    #[arg(long, env = "DUET_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// Directory for the edge id and the cached token verification keys [default: ./duet-data/edge].
    #[arg(long, env = "DUET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Interval between heartbeats to the locator, e.g. 1s, 500ms [default: 1s].
    #[arg(long, env = "DUET_HEARTBEAT_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Most client connections at once, 0 for no limit [default: 0].
    #[arg(long, env = "DUET_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u32>,
    /// Most sessions at once, 0 for no limit [default: 0].
    #[arg(long, env = "DUET_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<u32>,
    /// Largest client message in bytes; larger frames are refused with close code 4002 [default: 1048576].
    #[arg(long, env = "DUET_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Most bytes queued for one slow client before it is closed with 4300 [default: 8388608].
    #[arg(long, env = "DUET_MAX_QUEUED_BYTES", value_name = "BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Time a client has to send `join` after connecting [default: 10s].
    #[arg(long, env = "DUET_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// Time connections get to close on shutdown, after the drain [default: 10s].
    #[arg(long, env = "DUET_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// On SIGTERM the edge stops being ready, tells the locator it is draining (no new sessions)
    /// and gives running sessions this long to end by themselves; then participants are closed
    /// with 4400 (ask the locator again) and the process exits; 0 skips the wait [default: 15s].
    #[arg(long, env = "DUET_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Separate listener for GET /metrics (Prometheus text format), e.g. 0.0.0.0:9090; without it
    /// /metrics is served on the public listener [default: none].
    #[arg(long, env = "DUET_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for TLS on the public listener; with --tls-key-file the edge
    /// serves https/wss itself and reloads both files when they change [default: plain HTTP].
    #[arg(long, env = "DUET_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) matching --tls-cert-file.
    #[arg(long, env = "DUET_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Most audit and metrics entries kept in <data-dir>/outbox.sqlite while the locator has not
    /// acknowledged them; when full, metrics are dropped first and every drop is counted and
    /// audited (see docs/operations.md) [default: 1000000].
    #[arg(long, env = "DUET_OUTBOX_MAX_ENTRIES", value_name = "N")]
    pub outbox_max_entries: Option<u64>,
    /// Interval between usage metrics entries, e.g. 60s [default: 60s].
    #[arg(long, env = "DUET_METRICS_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub metrics_interval: Option<Duration>,
    /// Bytes of recent events each session keeps for participants that resume, each event
    /// counted with about 130 bytes of bookkeeping (capped at half of max_queued_bytes, so a
    /// whole replay and live traffic fit a connection's queue) [default: 2097152].
    #[arg(long, env = "DUET_REPLAY_WINDOW_BYTES", value_name = "BYTES")]
    pub replay_window_bytes: Option<usize>,
    /// How long events stay replayable, and how long an away guest keeps its place [default: 2m].
    #[arg(long, env = "DUET_REPLAY_WINDOW_AGE", value_name = "DURATION", value_parser = parse_duration)]
    pub replay_window_age: Option<Duration>,
    /// How long a session outlives its host's absence (lost connection or leave) [default: 2m].
    #[arg(long, env = "DUET_HOST_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub host_grace: Option<Duration>,
    /// A session in which nobody sends a message for this long ends (close code 4204) [default: 1h].
    #[arg(long, env = "DUET_SESSION_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub session_idle_timeout: Option<Duration>,
    /// Most participants in one session, waiting guests included (a session may ask for fewer)
    /// [default: 50].
    #[arg(long, env = "DUET_MAX_PARTICIPANTS", value_name = "N")]
    pub max_participants: Option<u32>,
    /// A connection that sends no frame at all (pings count) for this long is closed with 4301
    /// [default: 90s].
    #[arg(long, env = "DUET_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Most messages per second one connection may send, in bursts of up to twice that; more
    /// closes it with 4007; 0 for no limit [default: 500].
    #[arg(long, env = "DUET_MAX_MESSAGES_PER_SECOND", value_name = "N")]
    pub max_messages_per_second: Option<u32>,
    /// Most open websockets from one client address (more get HTTP 429); 0 for no limit [default: 256].
    #[arg(long, env = "DUET_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<u32>,
    /// Proxies (comma-separated addresses or CIDRs) whose Forwarded / X-Forwarded-For headers
    /// name the client address [default: none].
    #[arg(long, env = "DUET_TRUSTED_PROXIES", value_name = "CIDRS", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    #[command(flatten)]
    pub media: MediaArgs,
    /// Log format: text or json [default: text].
    #[arg(long, env = "DUET_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Threads that run the edge; 1 runs a single-threaded scheduler, 0 one thread per CPU the
    /// process may use (its CPU affinity and cgroup CPU limit); at most 1024 [default: 0].
    #[arg(long, env = "DUET_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
}

/// The media options, shared by `duet-edge` and the locator (for its embedded edge).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct MediaArgs {
    /// UDP address for all WebRTC media (one port for every peer), or `off` to refuse media
    /// [default: the listen IP address (the locator: its --edge-listen), port 10000].
    #[arg(long, env = "DUET_MEDIA_LISTEN", value_name = "ADDR|off")]
    pub media_listen: Option<MediaListen>,
    /// TCP address for ICE-TCP (clients whose UDP is blocked and that have no TURN server)
    /// [default: none].
    #[arg(long, env = "DUET_MEDIA_TCP_LISTEN", value_name = "ADDR")]
    pub media_tcp_listen: Option<SocketAddr>,
    /// Address(es) put in the edge's ICE candidates, at most one IPv4 and one IPv6
    /// (comma-separated): the public address behind a 1:1 NAT, or the node address of a
    /// Kubernetes hostPort [default: the media listen address, or the default route's interface
    /// address when that is 0.0.0.0].
    #[arg(long, env = "DUET_MEDIA_ADVERTISED_ADDRESS", value_name = "IPS", value_delimiter = ',')]
    pub media_advertised_address: Option<Vec<std::net::IpAddr>>,
    /// Tracks one participant may publish at once [default: 8].
    #[arg(long, env = "DUET_MEDIA_MAX_TRACKS", value_name = "N")]
    pub media_max_tracks: Option<usize>,
}

impl MediaArgs {
    /// These values (flags, environment) over `file`'s.
    pub fn or(self, file: MediaArgs) -> MediaArgs {
        MediaArgs {
            media_listen: self.media_listen.or(file.media_listen),
            media_tcp_listen: self.media_tcp_listen.or(file.media_tcp_listen),
            media_advertised_address: self.media_advertised_address.or(file.media_advertised_address),
            media_max_tracks: self.media_max_tracks.or(file.media_max_tracks),
        }
    }

    /// The media settings: `None` for `off`; the default address is `listen_ip` with port 10000.
    pub fn config(self, listen_ip: std::net::IpAddr) -> Option<crate::media::MediaConfig> {
        let addr = match self.media_listen {
            Some(MediaListen::Off) => return None,
            Some(MediaListen::On(a)) => a,
            None => SocketAddr::new(listen_ip, DEFAULT_MEDIA_PORT),
        };
        let mut media = crate::media::MediaConfig::new(addr);
        media.tcp_listen = self.media_tcp_listen;
        media.advertised = self.media_advertised_address.unwrap_or_default();
        if let Some(n) = self.media_max_tracks {
            media.max_tracks_per_participant = n;
        }
        Some(media)
    }
}

/// `media_listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaListen {
    Off,
    On(SocketAddr),
}

impl std::str::FromStr for MediaListen {
    type Err = String;

    fn from_str(s: &str) -> Result<MediaListen, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MediaListen::Off);
        }
        s.parse::<SocketAddr>()
            .map(MediaListen::On)
            .map_err(|_| format!("{s:?} is neither an address such as 0.0.0.0:10000 nor `off`"))
    }
}

impl<'de> Deserialize<'de> for MediaListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MediaListen, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Subcommands of `duet-edge` (without one it runs the edge).
#[derive(Debug, clap::Subcommand)]
pub enum EdgeCommand {
    /// Drain a running edge and wait for it to exit: sends it SIGTERM (which starts the drain)
    /// and returns once the process is gone or the timeout passes. Made for a Kubernetes preStop
    /// hook, where the edge is process 1 of the container and the image has no shell.
    Drain {
        /// Process id of the edge.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
        /// Give up waiting after this long (the edge goes on draining), e.g. 140s; keep it below
        /// the pod's terminationGracePeriodSeconds.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
        timeout: Duration,
    },
}

/// The TOML file's shape: the same options as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    pub listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub locator_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub id: Option<String>,
    pub region: Option<String>,
    pub data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_duration")]
    pub heartbeat_interval: Option<Duration>,
    pub max_connections: Option<u32>,
    pub max_sessions: Option<u32>,
    pub max_message_bytes: Option<usize>,
    pub max_queued_bytes: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    pub handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_timeout: Option<Duration>,
    pub metrics_listen: Option<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub outbox_max_entries: Option<u64>,
    #[serde(default, deserialize_with = "de_duration")]
    pub metrics_interval: Option<Duration>,
    pub replay_window_bytes: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    pub replay_window_age: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub host_grace: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub session_idle_timeout: Option<Duration>,
    pub max_participants: Option<u32>,
    #[serde(default, deserialize_with = "de_duration")]
    pub idle_timeout: Option<Duration>,
    pub max_messages_per_second: Option<u32>,
    pub max_connections_per_address: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub media_listen: Option<MediaListen>,
    pub media_tcp_listen: Option<SocketAddr>,
    pub media_advertised_address: Option<Vec<std::net::IpAddr>>,
    pub media_max_tracks: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub worker_threads: Option<usize>,
}

impl EdgeFile {
    /// The file's media options (TOML cannot flatten them: the file refuses unknown keys).
    fn media_args(&self) -> MediaArgs {
        MediaArgs {
            media_listen: self.media_listen,
            media_tcp_listen: self.media_tcp_listen,
            media_advertised_address: self.media_advertised_address.clone(),
            media_max_tracks: self.media_max_tracks,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The validated configuration an edge runs with.
#[derive(Clone)]
pub struct EdgeConfig {
    /// `None`: read or create `<data_dir>/edge-id`.
    pub id: Option<String>,
    pub region: String,
    /// `None`: `ws://` and the listener's bound address.
    pub public_url: Option<String>,
    pub locator_url: String,
    /// Extra trusted CA certificates (PEM) for a TLS locator URL.
    pub ca_file: Option<PathBuf>,
    pub enrollment_secret: String,
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub max_connections: u32,
    pub max_sessions: u32,
    pub max_message_bytes: usize,
    pub max_queued_bytes: usize,
    pub handshake_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub drain_timeout: Duration,
    /// `None`: /metrics is served on the public listener (unless `serve_metrics` is off).
    pub metrics_listen: Option<SocketAddr>,
    /// False when an embedder serves this edge's metrics on its own page (the locator's
    /// embedded edge).
    pub serve_metrics: bool,
    /// `None`: plain HTTP on the public listener.
    pub tls: Option<duet_ws::tls::TlsFiles>,
    pub outbox_max_entries: u64,
    pub metrics_interval: Duration,
    pub replay_window_bytes: usize,
    pub replay_window_age: Duration,
    pub host_grace: Duration,
    pub session_idle_timeout: Duration,
    pub max_participants: u32,
    pub idle_timeout: Duration,
    /// 0: no limit.
    pub max_messages_per_second: u32,
    /// 0: no limit.
    pub max_connections_per_address: u32,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// WebRTC media; `None`: media frames are refused with `error` 6.
    pub media: Option<crate::media::MediaConfig>,
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("id", &self.id)
            .field("region", &self.region)
            .field("public_url", &self.public_url)
            .field("locator_url", &self.locator_url)
            .field("ca_file", &self.ca_file)
            .field("enrollment_secret", &"<redacted>")
            .field("data_dir", &self.data_dir)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_connections", &self.max_connections)
            .field("max_sessions", &self.max_sessions)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("metrics_listen", &self.metrics_listen)
            .field("tls", &self.tls)
            .field("outbox_max_entries", &self.outbox_max_entries)
            .field("metrics_interval", &self.metrics_interval)
            .field("replay_window_bytes", &self.replay_window_bytes)
            .field("replay_window_age", &self.replay_window_age)
            .field("host_grace", &self.host_grace)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("max_participants", &self.max_participants)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_messages_per_second", &self.max_messages_per_second)
            .field("max_connections_per_address", &self.max_connections_per_address)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("media", &self.media)
            .finish()
    }
}

impl EdgeConfig {
    /// A configuration with every default, for the given locator and secret (tests, embedding).
    pub fn new(locator_url: impl Into<String>, enrollment_secret: impl Into<String>, data_dir: PathBuf) -> Self {
        EdgeConfig {
            id: None,
            region: "default".into(),
            public_url: None,
            locator_url: locator_url.into(),
            ca_file: None,
            enrollment_secret: enrollment_secret.into(),
            data_dir,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            max_connections: 0,
            max_sessions: 0,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            metrics_listen: None,
            serve_metrics: true,
            tls: None,
            outbox_max_entries: DEFAULT_OUTBOX_MAX_ENTRIES,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            replay_window_bytes: DEFAULT_REPLAY_WINDOW_BYTES,
            replay_window_age: DEFAULT_REPLAY_WINDOW_AGE,
            host_grace: DEFAULT_HOST_GRACE,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            max_participants: DEFAULT_MAX_PARTICIPANTS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_messages_per_second: DEFAULT_MAX_MESSAGES_PER_SECOND,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            trusted_proxies: Vec::new(),
            // Port 0 here: tests and embedders run many edges on one machine. The binaries put
            // the default port (10000) on their listen address instead, in `resolve`.
            media: Some(crate::media::MediaConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))),
        }
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.id {
            validate_name("id", id, 128)?;
        }
        validate_name("region", &self.region, 64)?;
        if let Some(url) = &self.public_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(ConfigError::Invalid {
                    option: "public_url",
                    reason: format!("{url:?} must start with ws:// or wss://"),
                });
            }
        }
        if duet_ws::WsUrl::parse(&self.locator_url).is_err() {
            return Err(ConfigError::Invalid {
                option: "locator_url",
                reason: format!("{:?} must be an http://, https://, ws:// or wss:// URL with a host", self.locator_url),
            });
        }
        if let Some(path) = &self.ca_file {
            duet_ws::tls::read_pem_certs(path)
                .map_err(|e| ConfigError::Invalid { option: "ca_file", reason: e.to_string() })?;
        }
        if self.enrollment_secret.len() < 16 {
            return Err(ConfigError::Invalid {
                option: "enrollment_secret",
                reason: "must be at least 16 characters".into(),
            });
        }
        if self.heartbeat_interval < Duration::from_millis(50) || self.heartbeat_interval > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                option: "heartbeat_interval",
                reason: "must be between 50ms and 60s".into(),
            });
        }
        if self.max_message_bytes < 1024 || self.max_message_bytes > 64 << 20 {
            return Err(ConfigError::Invalid {
                option: "max_message_bytes",
                reason: "must be between 1024 and 67108864".into(),
            });
        }
        if self.max_queued_bytes < self.max_message_bytes {
            return Err(ConfigError::Invalid {
                option: "max_queued_bytes",
                reason: "must be at least max_message_bytes".into(),
            });
        }
        if self.drain_timeout > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Invalid { option: "drain_timeout", reason: "must be at most 24h".into() });
        }
        if let Some(tls) = &self.tls {
            tls.load().map_err(|e| ConfigError::Invalid { option: "tls_cert_file", reason: e.to_string() })?;
            if let Some(url) = &self.public_url {
                if url.starts_with("ws://") {
                    return Err(ConfigError::Invalid {
                        option: "public_url",
                        reason: format!("{url:?} is ws:// but the listener serves TLS: use wss://"),
                    });
                }
            }
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid { option: "handshake_timeout", reason: "must be above zero".into() });
        }
        if !(1_000..=100_000_000).contains(&self.outbox_max_entries) {
            return Err(ConfigError::Invalid {
                option: "outbox_max_entries",
                reason: "must be between 1000 and 100000000".into(),
            });
        }
        if self.metrics_interval < Duration::from_secs(1) || self.metrics_interval > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid {
                option: "metrics_interval",
                reason: "must be between 1s and 1h".into(),
            });
        }
        if self.replay_window_bytes > 1 << 30 {
            return Err(ConfigError::Invalid {
                option: "replay_window_bytes",
                reason: "must be at most 1073741824 (1 GiB)".into(),
            });
        }
        let durations = [
            ("replay_window_age", self.replay_window_age, Duration::from_secs(1), Duration::from_secs(24 * 3600)),
            ("host_grace", self.host_grace, Duration::from_secs(1), Duration::from_secs(24 * 3600)),
            (
                "session_idle_timeout",
                self.session_idle_timeout,
                Duration::from_secs(1),
                Duration::from_secs(30 * 86400),
            ),
            ("idle_timeout", self.idle_timeout, Duration::from_secs(1), Duration::from_secs(24 * 3600)),
        ];
        for (option, value, min, max) in durations {
            if value < min || value > max {
                return Err(ConfigError::Invalid {
                    option,
                    reason: format!("must be between {min:?} and {max:?}, not {value:?}"),
                });
            }
        }
        if let Some(media) = &self.media {
            validate_media(media)?;
        }
        if !(2..=10_000).contains(&self.max_participants) {
            return Err(ConfigError::Invalid {
                option: "max_participants",
                reason: "must be between 2 and 10000".into(),
            });
        }
        Ok(())
    }
}

/// Checks media settings (shared with the locator's embedded edge).
pub fn validate_media(media: &crate::media::MediaConfig) -> Result<(), ConfigError> {
    if !(1..=64).contains(&media.max_tracks_per_participant) {
        return Err(ConfigError::Invalid { option: "media_max_tracks", reason: "must be between 1 and 64".into() });
    }
    let v4 = media.advertised.iter().filter(|a| a.is_ipv4()).count();
    let v6 = media.advertised.iter().filter(|a| a.is_ipv6()).count();
    if v4 > 1 || v6 > 1 {
        return Err(ConfigError::Invalid {
            option: "media_advertised_address",
            reason: "give at most one IPv4 and one IPv6 address".into(),
        });
    }
    if let Some(a) = media.advertised.iter().find(|a| a.is_unspecified() || a.is_multicast()) {
        return Err(ConfigError::Invalid {
            option: "media_advertised_address",
            reason: format!("{a} cannot be reached by clients"),
        });
    }
    Ok(())
}

/// Checks a region name (shared with the locator's embedded edge).
pub fn validate_region(region: &str) -> Result<(), ConfigError> {
    validate_name("region", region, 64)
}

pub(crate) fn validate_name(option: &'static str, value: &str, max: usize) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            option,
            reason: format!("{value:?} must be 1-{max} characters of letters, digits, '-', '_' or '.'"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("invalid {option}: {reason}")]
    Invalid { option: &'static str, reason: String },
    #[error("missing {0}")]
    Missing(&'static str),
}

/// Where settings that no flag may carry (secrets) come from; tests pass a map, `main` the
/// process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }
}

/// Reads a secret from `ENV` or the file named by `ENV_FILE` (trailing newline trimmed).
pub fn read_secret(env: &dyn Env, var: &str, file_var: &str) -> Result<Option<String>, ConfigError> {
    if let Some(v) = env.var(var) {
        return Ok(Some(v));
    }
    if let Some(path) = env.var(file_var) {
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile { path, source })?;
        return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(None)
}

/// Reads and parses a TOML file into `T`.
pub fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.into(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile { path: path.into(), message: e.to_string() })
}

/// Everything `duet-edge` runs with, from one reading of its flags, environment and file.
#[derive(Debug)]
pub struct Resolved {
    pub config: EdgeConfig,
    pub log_format: LogFormat,
    /// The listener address (bound by `main`, not part of [`EdgeConfig`]).
    pub listen: SocketAddr,
    /// The runtime's worker threads (see [`crate::runtime::worker_threads`]).
    pub worker_threads: usize,
}

impl EdgeArgs {
    /// Merges flags/environment over the file over defaults, and validates. The file is read
    /// once, here.
    pub fn resolve(self, env: &dyn Env) -> Result<Resolved, ConfigError> {
        let file: EdgeFile = read_toml(self.config.as_deref())?;
        let listen = self.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let worker_threads = crate::runtime::worker_threads(self.worker_threads.or(file.worker_threads).unwrap_or(0))?;
        let file_media = file.media_args();
        let data_dir = self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./duet-data/edge"));
        let secret = read_secret(env, ENV_ENROLLMENT_SECRET, ENV_ENROLLMENT_SECRET_FILE)?.ok_or(
            ConfigError::Missing("enrollment secret: set DUET_ENROLLMENT_SECRET or DUET_ENROLLMENT_SECRET_FILE"),
        )?;
        let locator_url = self.locator_url.or(file.locator_url).unwrap_or_else(|| DEFAULT_LOCATOR_URL.into());
        let mut config = EdgeConfig::new(locator_url, secret, data_dir);
        config.id = self.id.or(file.id);
        config.ca_file = self.ca_file.or(file.ca_file);
        config.region = self.region.or(file.region).unwrap_or(config.region);
        config.public_url = self.public_url.or(file.public_url);
        if let Some(v) = self.heartbeat_interval.or(file.heartbeat_interval) {
            config.heartbeat_interval = v;
        }
        if let Some(v) = self.max_connections.or(file.max_connections) {
            config.max_connections = v;
        }
        if let Some(v) = self.max_sessions.or(file.max_sessions) {
            config.max_sessions = v;
        }
        if let Some(v) = self.max_message_bytes.or(file.max_message_bytes) {
            config.max_message_bytes = v;
        }
        if let Some(v) = self.max_queued_bytes.or(file.max_queued_bytes) {
            config.max_queued_bytes = v;
        }
        if let Some(v) = self.handshake_timeout.or(file.handshake_timeout) {
            config.handshake_timeout = v;
        }
        if let Some(v) = self.shutdown_timeout.or(file.shutdown_timeout) {
            config.shutdown_timeout = v;
        }
        if let Some(v) = self.drain_timeout.or(file.drain_timeout) {
            config.drain_timeout = v;
        }
        config.metrics_listen = self.metrics_listen.or(file.metrics_listen);
        config.tls = duet_ws::tls::TlsFiles::pair(
            self.tls_cert_file.or(file.tls_cert_file),
            self.tls_key_file.or(file.tls_key_file),
        )
        .map_err(|reason| ConfigError::Invalid { option: "tls_key_file", reason })?;
        if let Some(v) = self.outbox_max_entries.or(file.outbox_max_entries) {
            config.outbox_max_entries = v;
        }
        if let Some(v) = self.metrics_interval.or(file.metrics_interval) {
            config.metrics_interval = v;
        }
        if let Some(v) = self.replay_window_bytes.or(file.replay_window_bytes) {
            config.replay_window_bytes = v;
        }
        if let Some(v) = self.replay_window_age.or(file.replay_window_age) {
            config.replay_window_age = v;
        }
        if let Some(v) = self.host_grace.or(file.host_grace) {
            config.host_grace = v;
        }
        if let Some(v) = self.session_idle_timeout.or(file.session_idle_timeout) {
            config.session_idle_timeout = v;
        }
        if let Some(v) = self.max_participants.or(file.max_participants) {
            config.max_participants = v;
        }
        if let Some(v) = self.idle_timeout.or(file.idle_timeout) {
            config.idle_timeout = v;
        }
        if let Some(v) = self.max_messages_per_second.or(file.max_messages_per_second) {
            config.max_messages_per_second = v;
        }
        if let Some(v) = self.max_connections_per_address.or(file.max_connections_per_address) {
            config.max_connections_per_address = v;
        }
        config.media = self.media.or(file_media).config(listen.ip());
        if let Some(list) = self.trusted_proxies.or(file.trusted_proxies) {
            config.trusted_proxies = parse_trusted_proxies(&list)?;
        }
        config.validate()?;
        let log_format = self.log_format.or(file.log_format).unwrap_or_default();
        Ok(Resolved { config, log_format, listen, worker_threads })
    }
}

/// Parses proxy addresses or CIDRs (`10.0.0.1`, `10.0.0.0/8`, `::1`); host bits must be zero.
pub fn parse_trusted_proxies(list: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let net = match item.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => match item.parse::<std::net::IpAddr>() {
                Ok(ip) => ipnet::IpNet::from(ip),
                Err(_) => {
                    return Err(ConfigError::Invalid {
                        option: "trusted_proxies",
                        reason: format!("{item:?} is neither an IP address nor a CIDR"),
                    })
                }
            },
        };
        if net.trunc() != net {
            return Err(ConfigError::Invalid {
                option: "trusted_proxies",
                reason: format!("{item:?} has host bits set; did you mean {}?", net.trunc()),
            });
        }
        out.push(net);
    }
    Ok(out)
}

/// Parses `500ms`, `10s`, `2m`, `1h`, `30d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 10s, 2m, 1h, 30d"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86400)),
        other => return Err(format!("invalid duration unit {other:?} in {s:?}: use ms, s, m, h or d")),
    };
    Ok(d)
}

/// serde helper: a duration written as a string (`"10s"`).
pub fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn layering_flags_over_env_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        std::fs::write(&file, "region = \"eu\"\nmax_sessions = 5\nheartbeat_interval = \"2s\"\n").unwrap();
        let args =
            EdgeArgs::try_parse_from(["duet-edge", "--config", file.to_str().unwrap(), "--max-sessions", "7"]).unwrap();
        let env = [(ENV_ENROLLMENT_SECRET, "0123456789abcdef0123")];
        let config = args.resolve(&env).unwrap().config;
        assert_eq!(config.region, "eu");
        assert_eq!(config.max_sessions, 7);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bad_values_get_precise_errors() {
        let env = [(ENV_ENROLLMENT_SECRET, "0123456789abcdef0123")];
        let err = EdgeArgs::try_parse_from(["duet-edge", "--region", "eu west"]).unwrap().resolve(&env).unwrap_err();
        assert!(err.to_string().contains("invalid region"), "{err}");
        let err = EdgeArgs::try_parse_from(["duet-edge"]).unwrap().resolve(&[("X", "y")]).unwrap_err();
        assert!(err.to_string().contains("enrollment secret"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        std::fs::write(&file, "regoin = \"eu\"\n").unwrap();
        let err = EdgeArgs::try_parse_from(["duet-edge", "--config", file.to_str().unwrap()])
            .unwrap()
            .resolve(&env)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(EdgeArgs::try_parse_from(["duet-edge", "--heartbeat-interval", "fast"]).is_err());
        let err =
            EdgeArgs::try_parse_from(["duet-edge", "--outbox-max-entries", "10"]).unwrap().resolve(&env).unwrap_err();
        assert!(err.to_string().contains("outbox_max_entries"), "{err}");
        let err =
            EdgeArgs::try_parse_from(["duet-edge", "--metrics-interval", "2h"]).unwrap().resolve(&env).unwrap_err();
        assert!(err.to_string().contains("metrics_interval"), "{err}");
        assert!(EdgeArgs::try_parse_from(["duet-edge", "--outbox-max-entries", "-1"]).is_err());
        let err = EdgeArgs::try_parse_from(["duet-edge", "--media-listen", "everywhere"]).unwrap_err();
        assert!(err.to_string().contains("neither an address"), "{err}");
        let two = ["duet-edge", "--media-advertised-address", "192.0.2.1,192.0.2.2"];
        let err = EdgeArgs::try_parse_from(two).unwrap().resolve(&env).unwrap_err();
        assert!(err.to_string().contains("media_advertised_address"), "{err}");
        let any = ["duet-edge", "--media-advertised-address", "0.0.0.0"];
        let err = EdgeArgs::try_parse_from(any).unwrap().resolve(&env).unwrap_err();
        assert!(err.to_string().contains("cannot be reached"), "{err}");
        let err =
            EdgeArgs::try_parse_from(["duet-edge", "--media-max-tracks", "0"]).unwrap().resolve(&env).unwrap_err();
        assert!(err.to_string().contains("media_max_tracks"), "{err}");
    }

    /// `worker_threads`: the flag over the file, 0 (the default) for the CPUs available.
    #[test]
    fn worker_threads_come_from_the_flag_or_the_file() {
        let env = [(ENV_ENROLLMENT_SECRET, "0123456789abcdef0123")];
        let workers = |args: &[&str]| EdgeArgs::try_parse_from(args).unwrap().resolve(&env).map(|r| r.worker_threads);
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(workers(&["duet-edge"]).unwrap(), cpus);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        std::fs::write(&file, "worker_threads = 3\nlisten = \"127.0.0.1:9100\"\n").unwrap();
        let path = file.to_str().unwrap();
        let resolved = EdgeArgs::try_parse_from(["duet-edge", "--config", path]).unwrap().resolve(&env).unwrap();
        assert_eq!((resolved.worker_threads, resolved.listen.to_string().as_str()), (3, "127.0.0.1:9100"));
        assert_eq!(workers(&["duet-edge", "--config", path, "--worker-threads", "1"]).unwrap(), 1);
        std::fs::write(&file, "worker_threads = 4096\n").unwrap();
        let err = workers(&["duet-edge", "--config", path]).unwrap_err();
        assert!(err.to_string().contains("invalid worker_threads: 4096 is more than 1024"), "{err}");
        assert!(EdgeArgs::try_parse_from(["duet-edge", "--worker-threads", "-1"]).is_err());
    }

    #[test]
    fn media_defaults_to_port_10000_on_the_listen_address_and_can_be_off() {
        let env = [(ENV_ENROLLMENT_SECRET, "0123456789abcdef0123")];
        let config =
            EdgeArgs::try_parse_from(["duet-edge", "--listen", "0.0.0.0:9000"]).unwrap().resolve(&env).unwrap().config;
        assert_eq!(config.media.unwrap().listen.to_string(), "0.0.0.0:10000");
        let resolved = EdgeArgs::try_parse_from(["duet-edge"]).unwrap().resolve(&env).unwrap();
        assert_eq!(resolved.listen.to_string(), DEFAULT_LISTEN);
        let config = resolved.config;
        assert_eq!(config.media.unwrap().listen.to_string(), "127.0.0.1:10000");
        let args = ["duet-edge", "--media-listen", "off"];
        let config = EdgeArgs::try_parse_from(args).unwrap().resolve(&env).unwrap().config;
        assert!(config.media.is_none());
        let args =
            ["duet-edge", "--media-listen", "0.0.0.0:5000", "--media-advertised-address", "203.0.113.7,2001:db8::7"];
        let config = EdgeArgs::try_parse_from(args).unwrap().resolve(&env).unwrap().config;
        let media = config.media.unwrap();
        assert_eq!(media.listen.port(), 5000);
        assert_eq!(media.advertised.len(), 2);
    }
}
