//! Locator configuration: defaults < TOML file < environment (`DUET_*`) < flags, parsed once
//! into [`LocatorConfig`] and validated. Secrets (the enrollment secret, a database URL with a
//! password, the TURN secret) come only from the environment or files and are redacted in logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use duet_edge::config::{de_duration, parse_duration, read_secret, read_toml, ConfigError, Env, LogFormat};
use serde::Deserialize;

use crate::client_addr::TrustedProxies;

pub const ENV_DATABASE_URL: &str = "DUET_DATABASE_URL";
pub const ENV_DATABASE_URL_FILE: &str = "DUET_DATABASE_URL_FILE";
pub const ENV_ENROLLMENT_SECRET: &str = duet_edge::config::ENV_ENROLLMENT_SECRET;
pub const ENV_ENROLLMENT_SECRET_FILE: &str = duet_edge::config::ENV_ENROLLMENT_SECRET_FILE;
pub const ENV_ADMIN_TOKEN: &str = "DUET_ADMIN_TOKEN";
pub const ENV_ADMIN_TOKEN_FILE: &str = "DUET_ADMIN_TOKEN_FILE";
pub const ENV_DASHBOARD_PASSWORD_HASH: &str = "DUET_DASHBOARD_PASSWORD_HASH";
pub const ENV_DASHBOARD_PASSWORD_HASH_FILE: &str = "DUET_DASHBOARD_PASSWORD_HASH_FILE";
pub const ENV_STUN_URLS: &str = "DUET_STUN_URLS";
pub const ENV_TURN_URLS: &str = "DUET_TURN_URLS";
pub const ENV_TURN_SECRET: &str = "DUET_TURN_SECRET";
pub const ENV_TURN_SECRET_FILE: &str = "DUET_TURN_SECRET_FILE";
pub const ENV_TURN_CREDENTIAL_LIFETIME: &str = "DUET_TURN_CREDENTIAL_LIFETIME";
/// Requests per second each client address may make to the public API (bursts of twice that):
/// far above what IDE plugins need (a few requests per session), far below what floods a
/// locator. Clients behind one NAT share an address; raise it, or set trusted_proxies.
pub const DEFAULT_PUBLIC_RATE_LIMIT: u32 = 50;
/// A dashboard login lasts a working day; logging out ends it at once.
pub const DEFAULT_DASHBOARD_LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Tokens live 10 minutes: long enough to connect after placement on a slow network, short
/// enough that a leaked token is soon useless. A running connection is unaffected by expiry.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Edges heartbeat every second ...
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// ... and stop being placeable after three missed heartbeats.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// A silent edge's health endpoint must answer within 1 s; probing starts this long before the
/// heartbeat timeout, so the verdict is ready when the timeout is reached.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// An edge whose link is lost but which still answers its probe keeps getting the joins of its
/// sessions for a minute: long enough to ride out a locator-side network blip or a locator
/// restart, short enough that guests do not keep landing on an edge nobody can manage.
pub const DEFAULT_LINK_GRACE: Duration = Duration::from_secs(60);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Token signing keys rotate every 30 days; a superseded key keeps verifying until every token
/// it signed has expired.
/// Clients no rule or GeoIP places land here.
pub const DEFAULT_REGION: &str = "default";
/// An edge using more than 85% of its cores is demoted: it still takes sessions when its region
/// has nothing better, but the headroom left is for the sessions it already carries.
pub const DEFAULT_PLACEMENT_CPU_LIMIT: f32 = 0.85;
/// An event loop 100 ms late is felt by users typing together; such an edge is demoted.
pub const DEFAULT_PLACEMENT_LAG_LIMIT: Duration = Duration::from_millis(100);
pub const DEFAULT_KEY_ROTATION_INTERVAL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Audit entries are kept a year: long enough for yearly reviews of who did what.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Metrics entries are kept 90 days: a quarter of usage for capacity planning, while their
/// volume (one usage entry per edge per interval) stays small.
pub const DEFAULT_METRICS_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// A retention shorter than an hour is almost surely a unit mistake (`365` is seconds).
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// TURN credentials last 12 hours: a working day of calls without the client asking again,
/// while a leaked one is useless by the next day. coturn checks the expiry when a client
/// authenticates a new allocation; an allocation kept alive by refreshes outlives it.
pub const DEFAULT_TURN_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Shorter than a minute and a slow client's first allocation may already be refused ...
pub const MIN_TURN_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(60);
/// ... longer than a week and a leaked credential is a standing relay for whoever holds it.
pub const MAX_TURN_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// HMAC-SHA1's key is at most one 64-byte block; fewer than 16 bytes is guessable.
pub const MIN_TURN_SECRET_BYTES: usize = 16;

/// duet locator: places sessions on edges, signs participant tokens, and stores what must last.
///
/// With no options it runs the one-machine mode: the locator on 127.0.0.1:8080, an embedded
/// edge on 127.0.0.1:8081, SQLite under ./duet-data. Every option can also be set in the TOML
/// file given by --config (same names, with underscores) and through its DUET_ environment
/// variable; precedence is defaults < file < environment < flags. Secrets come only from the
/// environment or files: DUET_DATABASE_URL / DUET_DATABASE_URL_FILE,
/// DUET_ENROLLMENT_SECRET / DUET_ENROLLMENT_SECRET_FILE and DUET_TURN_SECRET /
/// DUET_TURN_SECRET_FILE.
#[derive(Debug, Default, Parser)]
#[command(name = "duet-locator", version, about)]
pub struct LocatorArgs {
    /// TOML configuration file.
    #[arg(long, env = "DUET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print it (secrets redacted) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Address of the public listener (placement API, edge links, /livez, /readyz) [default: 127.0.0.1:8080].
    #[arg(long, env = "DUET_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database, the generated enrollment secret and the embedded edge [default: ./duet-data].
    #[arg(long, env = "DUET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Lifetime of participant tokens, e.g. 10m [default: 10m].
    #[arg(long, env = "DUET_TOKEN_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub token_ttl: Option<Duration>,
    /// Age at which the token signing key is replaced by a new one, e.g. 30d [default: 30d].
    #[arg(long, env = "DUET_KEY_ROTATION_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub key_rotation_interval: Option<Duration>,
    /// Heartbeat interval asked of edges [default: 1s].
    #[arg(long, env = "DUET_HEARTBEAT_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// An edge without a heartbeat for this long gets no new sessions, and is marked unavailable
    /// (its sessions ended) if its health probe fails too [default: 3s].
    #[arg(long, env = "DUET_HEARTBEAT_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,
    /// Time a silent edge's health endpoint (GET /livez) has to answer; must be shorter than
    /// heartbeat_timeout [default: 1s].
    #[arg(long, env = "DUET_PROBE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub probe_timeout: Option<Duration>,
    /// How long joins of an edge's sessions still go to it after its link was lost while it
    /// answers its health probe [default: 60s].
    #[arg(long, env = "DUET_LINK_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub link_grace: Option<Duration>,
    /// Run an edge inside the locator process (true/false) [default: true].
    #[arg(long, env = "DUET_EMBEDDED_EDGE", value_name = "BOOL")]
    pub embedded_edge: Option<bool>,
    /// Listener of the embedded edge [default: 127.0.0.1:8081].
    #[arg(long, env = "DUET_EDGE_LISTEN", value_name = "ADDR")]
    pub edge_listen: Option<SocketAddr>,
    /// Public ws:// or wss:// URL of the embedded edge [default: ws://<edge-listen>].
    #[arg(long, env = "DUET_EDGE_PUBLIC_URL", value_name = "URL")]
    pub edge_public_url: Option<String>,
    /// Region of the embedded edge [default: default].
    #[arg(long, env = "DUET_EDGE_REGION", value_name = "REGION")]
    pub edge_region: Option<String>,
    /// The embedded edge's WebRTC media (`--media-*`, as on duet-edge).
    #[command(flatten)]
    pub media: duet_edge::config::MediaArgs,
    /// Time connections get to close on shutdown [default: 10s].
    #[arg(long, env = "DUET_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Region of clients that no CIDR rule, country or continent rule places [default: default].
    #[arg(long, env = "DUET_DEFAULT_REGION", value_name = "REGION")]
    pub default_region: Option<String>,
    /// MaxMind GeoIP2/GeoLite2 Country or City database (.mmdb) for placing clients by address.
    #[arg(long, env = "DUET_GEOIP_DATABASE", value_name = "FILE")]
    pub geoip_database: Option<PathBuf>,
    /// Proxies whose X-Forwarded-For / Forwarded headers are believed: comma-separated CIDRs or
    /// addresses, e.g. 10.0.0.0/8,fd00::/8 [default: none].
    #[arg(long, env = "DUET_TRUSTED_PROXIES", value_name = "CIDRS")]
    pub trusted_proxies: Option<String>,
    /// CPU share (0.0-1.0 of an edge's cores) above which an edge is demoted [default: 0.85].
    #[arg(long, env = "DUET_PLACEMENT_CPU_LIMIT", value_name = "SHARE")]
    pub placement_cpu_limit: Option<f32>,
    /// Event-loop lag above which an edge is demoted [default: 100ms].
    #[arg(long, env = "DUET_PLACEMENT_LAG_LIMIT", value_name = "DURATION", value_parser = parse_duration)]
    pub placement_lag_limit: Option<Duration>,
    /// Age after which audit entries are deleted, e.g. 365d; 0 keeps them forever [default: 365d].
    #[arg(long, env = "DUET_AUDIT_RETENTION", value_name = "DURATION", value_parser = parse_duration)]
    pub audit_retention: Option<Duration>,
    /// Age after which metrics entries are deleted, e.g. 90d; 0 keeps them forever [default: 90d].
    #[arg(long, env = "DUET_METRICS_RETENTION", value_name = "DURATION", value_parser = parse_duration)]
    pub metrics_retention: Option<Duration>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "DUET_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Threads that run the locator and its embedded edge; 1 runs a single-threaded scheduler,
    /// 0 one thread per CPU the process may use (its CPU affinity and cgroup CPU limit); at most
    /// 1024 [default: 0].
    #[arg(long, env = "DUET_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// The URL browsers use to reach this locator, e.g. https://duet.example.com, when a proxy in
    /// front rewrites Host: the dashboard accepts changes only from this origin and marks its
    /// cookie Secure for https [default: the Host of each request].
    #[arg(long, env = "DUET_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Who may start and join sessions: open (anyone who reaches the listener), or keys
    /// (per-team client keys), oidc (OpenID Connect ID tokens), or keys,oidc [default: open,
    /// allowed only when listen is a loopback address].
    #[arg(long, env = "DUET_CLIENT_AUTH", value_name = "MODES")]
    pub client_auth: Option<String>,
    /// Issuer of the ID tokens clients present (client_auth oidc), e.g. https://sso.example.com/realms/dev.
    #[arg(long, env = "DUET_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// The audience ID tokens must name (the client id registered for duet at the provider).
    #[arg(long, env = "DUET_OIDC_AUDIENCE", value_name = "AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// The provider's JWKS URL [default: the jwks_uri of <issuer>/.well-known/openid-configuration].
    #[arg(long, env = "DUET_OIDC_JWKS_URL", value_name = "URL")]
    pub oidc_jwks_url: Option<String>,
    /// Claim listing the user's teams (e.g. groups); when set, users reach only those teams.
    #[arg(long, env = "DUET_OIDC_TEAM_CLAIM", value_name = "CLAIM")]
    pub oidc_team_claim: Option<String>,
    /// Claim holding the user's display name [default: name].
    #[arg(long, env = "DUET_OIDC_NAME_CLAIM", value_name = "CLAIM")]
    pub oidc_name_claim: Option<String>,
    /// Requests per second per client address on the public API, bursts of twice that; 0 is
    /// unlimited [default: 50].
    #[arg(long, env = "DUET_PUBLIC_RATE_LIMIT", value_name = "N")]
    pub public_rate_limit: Option<u32>,
    /// Username for dashboard logins with a password (admin scope); needs
    /// DUET_DASHBOARD_PASSWORD_HASH or DUET_DASHBOARD_PASSWORD_HASH_FILE, an Argon2 hash made with
    /// `duet-locator hash-password` [default: none; the dashboard then takes admin tokens only].
    #[arg(long, env = "DUET_DASHBOARD_USER", value_name = "NAME")]
    pub dashboard_user: Option<String>,
    /// How long a dashboard login lasts, e.g. 8h [default: 12h].
    #[arg(long, env = "DUET_DASHBOARD_LOGIN_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub dashboard_login_ttl: Option<Duration>,
    /// Separate listener for GET /metrics (Prometheus text format), e.g. 0.0.0.0:9090; without it
    /// /metrics is served on the public listener [default: none].
    #[arg(long, env = "DUET_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for TLS on the public listener (and the embedded edge's); with
    /// --tls-key-file the locator serves https itself and reloads both files when they change
    /// [default: plain HTTP].
    #[arg(long, env = "DUET_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) matching --tls-cert-file.
    #[arg(long, env = "DUET_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted, besides the system roots, when the locator calls out
    /// over https: edges' health endpoints and the OIDC issuer [default: none].
    #[arg(long, env = "DUET_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// STUN servers for WebRTC media, given to clients in every placement answer: comma-separated
    /// stun: or stuns: URLs, e.g. stun:stun.example.com:3478 [default: none].
    #[arg(long, env = ENV_STUN_URLS, value_name = "URLS")]
    pub stun_urls: Option<String>,
    /// TURN servers (coturn with use-auth-secret) for WebRTC media: comma-separated turn: or
    /// turns: URLs, e.g. turn:turn.example.com:3478?transport=tcp; needs DUET_TURN_SECRET or
    /// DUET_TURN_SECRET_FILE, coturn's static-auth-secret [default: none].
    #[arg(long, env = ENV_TURN_URLS, value_name = "URLS")]
    pub turn_urls: Option<String>,
    /// How long the TURN credentials minted for each placement answer are accepted, 1m to 7d
    /// [default: 12h].
    #[arg(long, env = ENV_TURN_CREDENTIAL_LIFETIME, value_name = "DURATION", value_parser = parse_duration)]
    pub turn_credential_lifetime: Option<Duration>,
    /// Admin commands: they call the admin API of a running locator instead of starting one.
    #[command(subcommand)]
    pub command: Option<crate::cli::Command>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocatorFile {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_duration")]
    pub token_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub key_rotation_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub heartbeat_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub heartbeat_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub probe_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub link_grace: Option<Duration>,
    pub embedded_edge: Option<bool>,
    pub edge_listen: Option<SocketAddr>,
    pub edge_public_url: Option<String>,
    pub edge_region: Option<String>,
    pub media_listen: Option<duet_edge::config::MediaListen>,
    pub media_tcp_listen: Option<SocketAddr>,
    pub media_advertised_address: Option<Vec<std::net::IpAddr>>,
    pub media_max_tracks: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    pub shutdown_timeout: Option<Duration>,
    pub default_region: Option<String>,
    pub geoip_database: Option<PathBuf>,
    pub trusted_proxies: Option<Vec<String>>,
    pub placement_cpu_limit: Option<f32>,
    #[serde(default, deserialize_with = "de_duration")]
    pub placement_lag_limit: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub audit_retention: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    pub metrics_retention: Option<Duration>,
    pub log_format: Option<LogFormat>,
    pub worker_threads: Option<usize>,
    pub dashboard_user: Option<String>,
    #[serde(default, deserialize_with = "de_duration")]
    pub dashboard_login_ttl: Option<Duration>,
    pub public_url: Option<String>,
    pub client_auth: Option<String>,
    pub oidc_issuer: Option<String>,
    pub oidc_audience: Option<String>,
    pub oidc_jwks_url: Option<String>,
    pub oidc_team_claim: Option<String>,
    pub oidc_name_claim: Option<String>,
    pub public_rate_limit: Option<u32>,
    pub metrics_listen: Option<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub stun_urls: Option<Vec<String>>,
    pub turn_urls: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_duration")]
    pub turn_credential_lifetime: Option<Duration>,
}

/// Settings of the edge embedded in one-machine mode.
#[derive(Debug, Clone)]
pub struct EmbeddedEdge {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub region: String,
    /// Its WebRTC media (`None`: off).
    pub media: Option<duet_edge::media::MediaConfig>,
}

/// The validated configuration the locator runs with.
#[derive(Clone)]
pub struct LocatorConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: SQLite at `<data_dir>/locator.db`.
    pub database_url: Option<String>,
    /// `None`: generated once and kept in `<data_dir>/enrollment-secret`.
    pub enrollment_secret: Option<String>,
    pub token_ttl: Duration,
    pub key_rotation_interval: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub probe_timeout: Duration,
    pub link_grace: Duration,
    pub embedded_edge: Option<EmbeddedEdge>,
    pub shutdown_timeout: Duration,
    /// `None`: generated once and kept in `<data_dir>/admin-token`.
    pub admin_token: Option<String>,
    pub default_region: String,
    pub geoip_database: Option<PathBuf>,
    pub trusted_proxies: TrustedProxies,
    pub placement_cpu_limit: f32,
    pub placement_lag_limit: Duration,
    /// Entries older than this are deleted ([`crate::retention`]); zero keeps them forever.
    pub audit_retention: Duration,
    pub metrics_retention: Duration,
    /// Username and Argon2 password hash (PHC string) for dashboard logins with a password.
    pub dashboard_login: Option<(String, String)>,
    pub dashboard_login_ttl: Duration,
    /// The URL browsers reach this locator at, when a proxy rewrites `Host`.
    pub public_url: Option<String>,
    /// How clients are admitted to the public API ([`crate::access`]).
    pub client_auth: Vec<crate::access::Mode>,
    pub oidc: Option<crate::access::OidcConfig>,
    pub public_rate_limit: u32,
    /// `None`: /metrics is served on the public listener.
    pub metrics_listen: Option<SocketAddr>,
    /// `None`: plain HTTP on the public listener.
    pub tls: Option<duet_ws::tls::TlsFiles>,
    /// Extra trusted CA certificates (PEM) for outgoing https calls.
    pub ca_file: Option<PathBuf>,
    /// STUN URLs given to clients in placement answers ([`crate::ice`]); empty: no STUN entry.
    pub stun_urls: Vec<String>,
    /// TURN URLs given to clients with a fresh credential; empty: no TURN entry.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`, which TURN credentials are minted with; required with
    /// `turn_urls`.
    pub turn_secret: Option<String>,
    pub turn_credential_lifetime: Duration,
}

impl std::fmt::Debug for LocatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocatorConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(crate::db::redact_url))
            .field("enrollment_secret", &self.enrollment_secret.as_ref().map(|_| "<redacted>"))
            .field("token_ttl", &self.token_ttl)
            .field("key_rotation_interval", &self.key_rotation_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("probe_timeout", &self.probe_timeout)
            .field("link_grace", &self.link_grace)
            .field("embedded_edge", &self.embedded_edge)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("default_region", &self.default_region)
            .field("geoip_database", &self.geoip_database)
            .field("trusted_proxies", &self.trusted_proxies.nets())
            .field("placement_cpu_limit", &self.placement_cpu_limit)
            .field("placement_lag_limit", &self.placement_lag_limit)
            .field("audit_retention", &self.audit_retention)
            .field("metrics_retention", &self.metrics_retention)
            .field("dashboard_user", &self.dashboard_login.as_ref().map(|(user, _)| user))
            .field("dashboard_login_ttl", &self.dashboard_login_ttl)
            .field("public_url", &self.public_url)
            .field("client_auth", &self.client_auth)
            .field("oidc", &self.oidc)
            .field("public_rate_limit", &self.public_rate_limit)
            .field("metrics_listen", &self.metrics_listen)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("stun_urls", &self.stun_urls)
            .field("turn_urls", &self.turn_urls)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<redacted>"))
            .field("turn_credential_lifetime", &self.turn_credential_lifetime)
            .finish()
    }
}

impl LocatorConfig {
    /// Defaults for a locator with no embedded edge (tests and embedding set what they need).
    pub fn new(data_dir: PathBuf) -> Self {
        LocatorConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            data_dir,
            database_url: None,
            enrollment_secret: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            key_rotation_interval: DEFAULT_KEY_ROTATION_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            link_grace: DEFAULT_LINK_GRACE,
            embedded_edge: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            admin_token: None,
            default_region: DEFAULT_REGION.into(),
            geoip_database: None,
            trusted_proxies: TrustedProxies::default(),
            placement_cpu_limit: DEFAULT_PLACEMENT_CPU_LIMIT,
            placement_lag_limit: DEFAULT_PLACEMENT_LAG_LIMIT,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            metrics_retention: DEFAULT_METRICS_RETENTION,
            dashboard_login: None,
            dashboard_login_ttl: DEFAULT_DASHBOARD_LOGIN_TTL,
            public_url: None,
            client_auth: vec![crate::access::Mode::Open],
            oidc: None,
            public_rate_limit: DEFAULT_PUBLIC_RATE_LIMIT,
            metrics_listen: None,
            tls: None,
            ca_file: None,
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_credential_lifetime: DEFAULT_TURN_CREDENTIAL_LIFETIME,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            if crate::db::Dialect::from_url(url).is_none() {
                return Err(ConfigError::Invalid {
                    option: "database_url",
                    reason: format!("{} must start with sqlite:, postgres: or mysql:", crate::db::redact_url(url)),
                });
            }
        }
        if let Some(s) = &self.enrollment_secret {
            if s.len() < 16 {
                return Err(ConfigError::Invalid {
                    option: "enrollment_secret",
                    reason: "must be at least 16 characters".into(),
                });
            }
        }
        if self.token_ttl < Duration::from_secs(10) || self.token_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Invalid { option: "token_ttl", reason: "must be between 10s and 24h".into() });
        }
        if self.heartbeat_interval < Duration::from_millis(50) || self.heartbeat_interval > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                option: "heartbeat_interval",
                reason: "must be between 50ms and 60s".into(),
            });
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(ConfigError::Invalid {
                option: "heartbeat_timeout",
                reason: "must be longer than heartbeat_interval".into(),
            });
        }
        if self.probe_timeout < Duration::from_millis(10) || self.probe_timeout >= self.heartbeat_timeout {
            return Err(ConfigError::Invalid {
                option: "probe_timeout",
                reason: "must be at least 10ms and shorter than heartbeat_timeout".into(),
            });
        }
        if let Some(tls) = &self.tls {
            tls.load().map_err(|e| ConfigError::Invalid { option: "tls_cert_file", reason: e.to_string() })?;
            if let Some(url) = self.embedded_edge.as_ref().and_then(|e| e.public_url.as_deref()) {
                if !url.starts_with("wss://") {
                    return Err(ConfigError::Invalid {
                        option: "edge_public_url",
                        reason: format!("{url:?}: with TLS on, the embedded edge serves wss://"),
                    });
                }
            }
        }
        if let Some(path) = &self.ca_file {
            duet_ws::tls::read_pem_certs(path)
                .map_err(|e| ConfigError::Invalid { option: "ca_file", reason: e.to_string() })?;
        }
        if self.link_grace > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Invalid { option: "link_grace", reason: "must be at most 24h".into() });
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 16 {
                return Err(ConfigError::Invalid {
                    option: "admin_token",
                    reason: "must be at least 16 characters".into(),
                });
            }
        }
        crate::geo::validate_region_name(&self.default_region)
            .map_err(|e| ConfigError::Invalid { option: "default_region", reason: e.to_string() })?;
        if !(self.placement_cpu_limit > 0.0 && self.placement_cpu_limit <= 1.0) {
            return Err(ConfigError::Invalid {
                option: "placement_cpu_limit",
                reason: format!("{} must be a share of the cores, above 0 and at most 1", self.placement_cpu_limit),
            });
        }
        if self.placement_lag_limit < Duration::from_millis(1) {
            return Err(ConfigError::Invalid { option: "placement_lag_limit", reason: "must be at least 1ms".into() });
        }
        for (option, retention) in
            [("audit_retention", self.audit_retention), ("metrics_retention", self.metrics_retention)]
        {
            if !retention.is_zero() && retention < MIN_RETENTION {
                return Err(ConfigError::Invalid {
                    option,
                    reason: format!("{retention:?} is too short: use at least 1h, or 0 to keep entries forever"),
                });
            }
        }
        if let Some((user, hash)) = &self.dashboard_login {
            crate::dashboard::validate_login(user, hash)
                .map_err(|reason| ConfigError::Invalid { option: "dashboard_user", reason })?;
        }
        if self.dashboard_login_ttl < Duration::from_secs(60)
            || self.dashboard_login_ttl > Duration::from_secs(30 * 86_400)
        {
            return Err(ConfigError::Invalid {
                option: "dashboard_login_ttl",
                reason: "must be between 1m and 30d".into(),
            });
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid {
                    option: "public_url",
                    reason: format!("{url:?} must be an http:// or https:// URL"),
                });
            }
        }
        if self.client_auth.contains(&crate::access::Mode::Oidc) {
            let Some(oidc) = &self.oidc else {
                return Err(ConfigError::Invalid {
                    option: "client_auth",
                    reason: "oidc needs oidc_issuer and oidc_audience".into(),
                });
            };
            for (option, url) in [("oidc_issuer", Some(&oidc.issuer)), ("oidc_jwks_url", oidc.jwks_url.as_ref())] {
                let Some(url) = url else { continue };
                // Whoever serves the keys decides who logs in: only TLS, or this machine.
                let loopback = ["http://127.0.0.1", "http://[::1]", "http://localhost"]
                    .iter()
                    .any(|p| url.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/'])));
                if !(url.starts_with("https://") || loopback) {
                    return Err(ConfigError::Invalid {
                        option,
                        reason: format!("{url:?} must be an https:// URL (http:// only on loopback)"),
                    });
                }
            }
            if oidc.audience.is_empty() {
                return Err(ConfigError::Invalid { option: "oidc_audience", reason: "must not be empty".into() });
            }
        }
        if let Some(edge) = &self.embedded_edge {
            duet_edge::config::validate_region(&edge.region)?;
            if let Some(media) = &edge.media {
                duet_edge::config::validate_media(media)?;
            }
            if let Some(url) = &edge.public_url {
                if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                    return Err(ConfigError::Invalid {
                        option: "edge_public_url",
                        reason: format!("{url:?} must start with ws:// or wss://"),
                    });
                }
            }
            if edge.listen == self.listen && edge.listen.port() != 0 {
                return Err(ConfigError::Invalid { option: "edge_listen", reason: "must differ from listen".into() });
            }
        }
        self.validate_ice()
    }

    /// The STUN and TURN options ([`crate::ice`]).
    fn validate_ice(&self) -> Result<(), ConfigError> {
        for url in &self.stun_urls {
            crate::ice::check_stun_url(url).map_err(|reason| ConfigError::Invalid { option: "stun_urls", reason })?;
        }
        for url in &self.turn_urls {
            crate::ice::check_turn_url(url).map_err(|reason| ConfigError::Invalid { option: "turn_urls", reason })?;
        }
        match &self.turn_secret {
            None if !self.turn_urls.is_empty() => {
                return Err(ConfigError::Invalid {
                    option: "turn_secret",
                    reason: format!(
                        "turn_urls needs {ENV_TURN_SECRET} or {ENV_TURN_SECRET_FILE} \
                         (the TURN server's static-auth-secret)"
                    ),
                })
            }
            Some(secret) if secret.len() < MIN_TURN_SECRET_BYTES => {
                return Err(ConfigError::Invalid {
                    option: "turn_secret",
                    reason: format!("must be at least {MIN_TURN_SECRET_BYTES} bytes"),
                })
            }
            _ => {}
        }
        if !(MIN_TURN_CREDENTIAL_LIFETIME..=MAX_TURN_CREDENTIAL_LIFETIME).contains(&self.turn_credential_lifetime) {
            return Err(ConfigError::Invalid {
                option: "turn_credential_lifetime",
                reason: format!("{:?} must be between 1m and 7d", self.turn_credential_lifetime),
            });
        }
        Ok(())
    }
}

impl LocatorArgs {
    /// The runtime's worker threads after merging (see [`duet_edge::runtime::worker_threads`]).
    pub fn worker_threads(&self) -> Result<usize, ConfigError> {
        let configured = match self.worker_threads {
            Some(n) => n,
            None => read_toml::<LocatorFile>(self.config.as_deref())?.worker_threads.unwrap_or(0),
        };
        duet_edge::runtime::worker_threads(configured)
    }

    pub fn resolve(self, env: &dyn Env) -> Result<(LocatorConfig, LogFormat), ConfigError> {
        let file: LocatorFile = read_toml(self.config.as_deref())?;
        let mut config =
            LocatorConfig::new(self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./duet-data")));
        if let Some(v) = self.listen.or(file.listen) {
            config.listen = v;
        }
        config.database_url = read_secret(env, ENV_DATABASE_URL, ENV_DATABASE_URL_FILE)?;
        config.enrollment_secret = read_secret(env, ENV_ENROLLMENT_SECRET, ENV_ENROLLMENT_SECRET_FILE)?;
        config.admin_token = read_secret(env, ENV_ADMIN_TOKEN, ENV_ADMIN_TOKEN_FILE)?;
        let password_hash = read_secret(env, ENV_DASHBOARD_PASSWORD_HASH, ENV_DASHBOARD_PASSWORD_HASH_FILE)?;
        config.dashboard_login = match (self.dashboard_user.or(file.dashboard_user), password_hash) {
            (Some(user), Some(hash)) => Some((user, hash)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    option: "dashboard_user",
                    reason: format!("needs {ENV_DASHBOARD_PASSWORD_HASH} or {ENV_DASHBOARD_PASSWORD_HASH_FILE}"),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    option: "dashboard_user",
                    reason: format!("{ENV_DASHBOARD_PASSWORD_HASH} is set but no dashboard_user is"),
                })
            }
        };
        if let Some(v) = self.dashboard_login_ttl.or(file.dashboard_login_ttl) {
            config.dashboard_login_ttl = v;
        }
        config.public_url = self.public_url.or(file.public_url);
        config.client_auth = match self.client_auth.or(file.client_auth) {
            Some(list) => crate::access::Mode::parse_list(&list)
                .map_err(|reason| ConfigError::Invalid { option: "client_auth", reason })?,
            None if config.listen.ip().is_loopback() => vec![crate::access::Mode::Open],
            None => {
                return Err(ConfigError::Invalid {
                    option: "client_auth",
                    reason: format!(
                        "listen {} is not a loopback address: choose who may start sessions explicitly \
                         (open, keys, oidc or keys,oidc)",
                        config.listen
                    ),
                })
            }
        };
        let issuer = self.oidc_issuer.or(file.oidc_issuer);
        let audience = self.oidc_audience.or(file.oidc_audience);
        if let (Some(issuer), Some(audience)) = (issuer, audience) {
            config.oidc = Some(crate::access::OidcConfig {
                issuer,
                audience,
                jwks_url: self.oidc_jwks_url.or(file.oidc_jwks_url),
                team_claim: self.oidc_team_claim.or(file.oidc_team_claim),
                name_claim: self.oidc_name_claim.or(file.oidc_name_claim).unwrap_or_else(|| "name".into()),
            });
        }
        if let Some(v) = self.public_rate_limit.or(file.public_rate_limit) {
            config.public_rate_limit = v;
        }
        if let Some(v) = self.default_region.or(file.default_region) {
            config.default_region = v;
        }
        config.geoip_database = self.geoip_database.or(file.geoip_database);
        let proxies = self.trusted_proxies.or(file.trusted_proxies.map(|list| list.join(",")));
        if let Some(list) = proxies {
            config.trusted_proxies = TrustedProxies::parse_list(&list)
                .map_err(|reason| ConfigError::Invalid { option: "trusted_proxies", reason })?;
        }
        if let Some(v) = self.placement_cpu_limit.or(file.placement_cpu_limit) {
            config.placement_cpu_limit = v;
        }
        if let Some(v) = self.placement_lag_limit.or(file.placement_lag_limit) {
            config.placement_lag_limit = v;
        }
        if let Some(v) = self.audit_retention.or(file.audit_retention) {
            config.audit_retention = v;
        }
        if let Some(v) = self.metrics_retention.or(file.metrics_retention) {
            config.metrics_retention = v;
        }
        if let Some(v) = self.token_ttl.or(file.token_ttl) {
            config.token_ttl = v;
        }
        if let Some(v) = self.key_rotation_interval.or(file.key_rotation_interval) {
            config.key_rotation_interval = v;
        }
        if let Some(v) = self.heartbeat_interval.or(file.heartbeat_interval) {
            config.heartbeat_interval = v;
        }
        if let Some(v) = self.heartbeat_timeout.or(file.heartbeat_timeout) {
            config.heartbeat_timeout = v;
        }
        if let Some(v) = self.probe_timeout.or(file.probe_timeout) {
            config.probe_timeout = v;
        }
        if let Some(v) = self.link_grace.or(file.link_grace) {
            config.link_grace = v;
        }
        if let Some(v) = self.shutdown_timeout.or(file.shutdown_timeout) {
            config.shutdown_timeout = v;
        }
        config.metrics_listen = self.metrics_listen.or(file.metrics_listen);
        config.tls = duet_ws::tls::TlsFiles::pair(
            self.tls_cert_file.or(file.tls_cert_file),
            self.tls_key_file.or(file.tls_key_file),
        )
        .map_err(|reason| ConfigError::Invalid { option: "tls_key_file", reason })?;
        config.ca_file = self.ca_file.or(file.ca_file);
        if let Some(list) = self.stun_urls.or(file.stun_urls.map(|list| list.join(","))) {
            config.stun_urls = crate::ice::parse_url_list(&list);
        }
        if let Some(list) = self.turn_urls.or(file.turn_urls.map(|list| list.join(","))) {
            config.turn_urls = crate::ice::parse_url_list(&list);
        }
        config.turn_secret = read_secret(env, ENV_TURN_SECRET, ENV_TURN_SECRET_FILE)?;
        if let Some(v) = self.turn_credential_lifetime.or(file.turn_credential_lifetime) {
            config.turn_credential_lifetime = v;
        }
        if self.embedded_edge.or(file.embedded_edge).unwrap_or(true) {
            let listen = self
                .edge_listen
                .or(file.edge_listen)
                .unwrap_or_else(|| duet_edge::config::DEFAULT_LISTEN.parse().expect("valid default"));
            let file_media = duet_edge::config::MediaArgs {
                media_listen: file.media_listen,
                media_tcp_listen: file.media_tcp_listen,
                media_advertised_address: file.media_advertised_address.clone(),
                media_max_tracks: file.media_max_tracks,
            };
            let media = self.media.clone().or(file_media).config(listen.ip());
            config.embedded_edge = Some(EmbeddedEdge {
                listen,
                public_url: self.edge_public_url.or(file.edge_public_url),
                region: self.edge_region.or(file.edge_region).unwrap_or_else(|| "default".into()),
                media,
            });
        }
        config.validate()?;
        Ok((config, self.log_format.or(file.log_format).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_one_machine_mode() {
        let (config, _) = LocatorArgs::try_parse_from(["duet-locator"]).unwrap().resolve(&[("X", "")]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.embedded_edge.unwrap().listen.to_string(), "127.0.0.1:8081");
        assert!(config.database_url.is_none());
    }

    #[test]
    fn secrets_are_redacted_and_validated() {
        let env =
            [(ENV_DATABASE_URL, "postgres://u:hunter22@db/duet"), (ENV_ENROLLMENT_SECRET, "s3cr3t-s3cr3t-s3cr3t")];
        let (config, _) = LocatorArgs::try_parse_from(["duet-locator"]).unwrap().resolve(&env).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter22") && !shown.contains("s3cr3t"), "{shown}");
        let err = LocatorArgs::try_parse_from(["duet-locator"])
            .unwrap()
            .resolve(&[(ENV_DATABASE_URL, "redis://x")])
            .unwrap_err();
        assert!(err.to_string().contains("database_url"), "{err}");
        let err = LocatorArgs::try_parse_from(["duet-locator", "--token-ttl", "1s"])
            .unwrap()
            .resolve(&[("X", "")])
            .unwrap_err();
        assert!(err.to_string().contains("token_ttl"), "{err}");
    }

    #[test]
    fn client_auth_must_be_chosen_off_loopback() {
        use crate::access::Mode;
        let resolve = |args: &[&str]| {
            let mut argv = vec!["duet-locator"];
            argv.extend_from_slice(args);
            LocatorArgs::try_parse_from(argv).unwrap().resolve(&[("X", "")])
        };
        assert_eq!(resolve(&[]).unwrap().0.client_auth, [Mode::Open], "loopback: open by default");
        let err = resolve(&["--listen", "0.0.0.0:8080", "--edge-listen", "0.0.0.0:8081"]).unwrap_err();
        assert!(err.to_string().contains("client_auth"), "{err}");
        let (config, _) =
            resolve(&["--listen", "0.0.0.0:8080", "--edge-listen", "0.0.0.0:8081", "--client-auth", "keys"]).unwrap();
        assert_eq!(config.client_auth, [Mode::Keys]);
        let err = resolve(&["--client-auth", "oidc"]).unwrap_err();
        assert!(err.to_string().contains("oidc_issuer"), "{err}");
        let (config, _) = resolve(&[
            "--client-auth",
            "keys,oidc",
            "--oidc-issuer",
            "https://sso.example.com",
            "--oidc-audience",
            "duet",
        ])
        .unwrap();
        assert_eq!(config.oidc.unwrap().name_claim, "name");
        let err = resolve(&["--client-auth", "open,keys"]).unwrap_err();
        assert!(err.to_string().contains("cannot be combined"), "{err}");
    }

    #[test]
    fn retention_options() {
        let resolve = |args: &[&str]| {
            let mut argv = vec!["duet-locator"];
            argv.extend_from_slice(args);
            LocatorArgs::try_parse_from(argv).unwrap().resolve(&[("X", "")])
        };
        let (config, _) = resolve(&[]).unwrap();
        assert_eq!(
            (config.audit_retention, config.metrics_retention),
            (DEFAULT_AUDIT_RETENTION, DEFAULT_METRICS_RETENTION)
        );
        let (config, _) = resolve(&["--audit-retention", "0", "--metrics-retention", "30d"]).unwrap();
        assert_eq!(
            (config.audit_retention, config.metrics_retention),
            (Duration::ZERO, Duration::from_secs(30 * 86_400))
        );
        // A bare number is seconds: `365` meant days, and would empty the audit log.
        let err = resolve(&["--audit-retention", "365"]).unwrap_err();
        assert!(err.to_string().contains("audit_retention"), "{err}");
    }

    #[test]
    fn ice_options() {
        let resolve = |args: &[&str], env: &[(&str, &str); 1]| {
            let mut argv = vec!["duet-locator"];
            argv.extend_from_slice(args);
            LocatorArgs::try_parse_from(argv).unwrap().resolve(env)
        };
        let none = [("X", "")];
        let secret = [(ENV_TURN_SECRET, "coturn-static-auth-secret")];
        let (config, _) = resolve(&[], &none).unwrap();
        assert!(config.stun_urls.is_empty() && config.turn_urls.is_empty() && config.turn_secret.is_none());
        assert_eq!(config.turn_credential_lifetime, DEFAULT_TURN_CREDENTIAL_LIFETIME);
        let (config, _) = resolve(
            &[
                "--stun-urls",
                "stun:a.example.com, stuns:b.example.com:5349",
                "--turn-urls",
                "turn:127.0.0.1:3478?transport=tcp",
                "--turn-credential-lifetime",
                "1h",
            ],
            &secret,
        )
        .unwrap();
        assert_eq!(config.stun_urls, ["stun:a.example.com", "stuns:b.example.com:5349"]);
        assert_eq!(config.turn_urls, ["turn:127.0.0.1:3478?transport=tcp"]);
        assert_eq!(config.turn_credential_lifetime, Duration::from_secs(3600));
        let shown = format!("{config:?}");
        assert!(!shown.contains("coturn-static") && shown.contains("turn_secret"), "{shown}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("locator.toml");
        std::fs::write(&file, "turn_urls = [\"turns:turn.example.com:443\"]\nturn_credential_lifetime = \"2d\"\n")
            .unwrap();
        let secret_file = dir.path().join("turn-secret");
        std::fs::write(&secret_file, "from-a-file-0123456789\n").unwrap();
        let file_arg = file.to_str().unwrap();
        let (config, _) =
            resolve(&["--config", file_arg], &[(ENV_TURN_SECRET_FILE, secret_file.to_str().unwrap())]).unwrap();
        assert_eq!(config.turn_urls, ["turns:turn.example.com:443"]);
        assert_eq!(config.turn_secret.as_deref(), Some("from-a-file-0123456789"));
        assert_eq!(config.turn_credential_lifetime, Duration::from_secs(2 * 86_400));

        for (args, env, needle) in [
            (
                &["--turn-urls", "turn:127.0.0.1:3478"][..],
                none,
                "invalid turn_secret: turn_urls needs DUET_TURN_SECRET",
            ),
            (&["--turn-urls", "turn:x"][..], [(ENV_TURN_SECRET, "short")], "invalid turn_secret: must be at least 16"),
            (&["--stun-urls", "stun:a,https://b"][..], none, "invalid stun_urls: \"https://b\" must start with stun:"),
            (&["--turn-urls", "stun:a"][..], secret, "invalid turn_urls: \"stun:a\" must start with turn:"),
            (&["--turn-credential-lifetime", "30s"][..], none, "invalid turn_credential_lifetime"),
            (&["--turn-credential-lifetime", "8d"][..], none, "invalid turn_credential_lifetime"),
        ] {
            let err = resolve(args, &env).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
