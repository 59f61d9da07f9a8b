//! Locator configuration: defaults < TOML file < environment (`DUET_*`) < flags, parsed once
//! into [`LocatorConfig`] and validated. Secrets (the enrollment secret, a database URL with a
//! password) come only from the environment or files and are redacted in logs.

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

/// duet locator: places sessions on edges, signs participant tokens, and stores what must last.
///
/// With no options it runs the one-machine mode: the locator on 127.0.0.1:8080, an embedded
/// edge on 127.0.0.1:8081, SQLite under ./duet-data. Every option can also be set in the TOML
/// file given by --config (same names, with underscores) and through its DUET_ environment
/// variable; precedence is defaults < file < environment < flags. Secrets come only from the
/// environment or files: DUET_DATABASE_URL / DUET_DATABASE_URL_FILE and
/// DUET_ENROLLMENT_SECRET / DUET_ENROLLMENT_SECRET_FILE.
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
}

/// Settings of the edge embedded in one-machine mode.
#[derive(Debug, Clone)]
pub struct EmbeddedEdge {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub region: String,
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
        if let Some(edge) = &self.embedded_edge {
            duet_edge::config::validate_region(&edge.region)?;
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
        Ok(())
    }
}

impl LocatorArgs {
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
        if self.embedded_edge.or(file.embedded_edge).unwrap_or(true) {
            config.embedded_edge = Some(EmbeddedEdge {
                listen: self
                    .edge_listen
                    .or(file.edge_listen)
                    .unwrap_or_else(|| duet_edge::config::DEFAULT_LISTEN.parse().expect("valid default")),
                public_url: self.edge_public_url.or(file.edge_public_url),
                region: self.edge_region.or(file.edge_region).unwrap_or_else(|| "default".into()),
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
}
