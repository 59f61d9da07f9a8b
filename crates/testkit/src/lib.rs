//! Boots real duet processes-in-a-task for tests and benchmarks: a locator on `127.0.0.1:0` with
//! a fresh database, and any number of edges on `127.0.0.1:0` linked to it over real websockets.
//! Also: fresh databases for each SQL dialect, condition waits (never fixed sleeps), and paths of
//! the built binaries for tests that run them as processes.

pub mod media;
pub mod private_pg;
pub mod proxy;
pub mod scripted_edge;
pub mod tls;

pub use scripted_edge::ScriptedEdge;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use duet_client::LocatorClient;
use duet_edge::{Edge, EdgeConfig};
use duet_locator::db::{Dialect, Health};
use duet_locator::{Listeners, Locator, LocatorConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The enrollment secret test clusters use.
pub const TEST_SECRET: &str = "test-enrollment-secret-0123456789";
/// The admin token test clusters use.
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Names the directory of MaxMind's test databases (`GeoIP2-Country-Test.mmdb`, ...).
pub const ENV_GEOIP_TESTDATA: &str = "DUET_GEOIP_TESTDATA";

/// A MaxMind test database: from `DUET_GEOIP_TESTDATA`, else the first `shared/testdata/geoip`
/// beside the checkout or one of its parents. Panics with the variable to set when missing.
pub fn geoip_test_database(name: &str) -> PathBuf {
    let dir = std::env::var_os(ENV_GEOIP_TESTDATA).map(PathBuf::from).or_else(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        workspace.ancestors().map(|a| a.join("shared/testdata/geoip")).find(|d| d.is_dir())
    });
    let path = dir.map(|d| d.join(name));
    match path {
        Some(p) if p.is_file() => p,
        _ => panic!("MaxMind test database {name} not found: set {ENV_GEOIP_TESTDATA} to its directory"),
    }
}

/// Installs the aws-lc-rs TLS provider and a test log subscriber, once (filter logs with
/// `DUET_TEST_LOG`, e.g. `debug`).
pub fn init_tracing() {
    duet_ws::tls::install_default_provider();
    let filter = std::env::var("DUET_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the store records `edge_id` with `health` (registration, link loss, ...).
pub async fn wait_for_edge_health(store: &duet_locator::db::Store, edge_id: &str, health: Health, timeout: Duration) {
    wait_until(&format!("edge {edge_id} {}", health.as_str()), timeout, || {
        let store = store.clone();
        let edge_id = edge_id.to_owned();
        async move { matches!(store.edge(&edge_id).await, Ok(Some(e)) if e.health == health) }
    })
    .await;
}

/// Environment variables naming the PostgreSQL and MySQL servers for tests.
pub const ENV_TEST_POSTGRES_URL: &str = "DUET_TEST_POSTGRES_URL";
pub const ENV_TEST_MYSQL_URL: &str = "DUET_TEST_MYSQL_URL";

/// A database created for one test (a file for SQLite, a new database on the server otherwise).
pub struct TestDb {
    pub url: String,
    pub dialect: Dialect,
    /// For server databases: the admin URL and the database name, to drop it afterwards.
    server: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database of `dialect`, or `None` when that server is not configured and this is
    /// not CI. In CI (`CI=true`) a missing server fails the test loudly.
    pub async fn fresh(dialect: Dialect) -> Option<TestDb> {
        match dialect {
            Dialect::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("duet.db").display());
                Some(TestDb { url, dialect, server: None, _dir: Some(dir) })
            }
            Dialect::Postgres | Dialect::Mysql => {
                let var = if dialect == Dialect::Postgres { ENV_TEST_POSTGRES_URL } else { ENV_TEST_MYSQL_URL };
                let Some(admin_url) = std::env::var(var).ok().filter(|v| !v.is_empty()) else {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("{var} is not set: in CI the {} storage tests must run", dialect.name());
                    }
                    eprintln!("skipping {} storage test: {var} is not set", dialect.name());
                    return None;
                };
                let name = format!("duet_t_{}", duet_locator::ids::random_id(12));
                let admin = duet_locator::db::Store::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach {} at {var}: {e}", dialect.name()));
                admin.execute_raw(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                admin.close().await;
                let url = replace_db_name(&admin_url, &name);
                Some(TestDb { url, dialect, server: Some((admin_url, name)), _dir: None })
            }
        }
    }

    /// Drops a server database (SQLite files go with their temp dir).
    pub async fn drop_db(self) {
        if let Some((admin_url, name)) = &self.server {
            if let Ok(admin) = duet_locator::db::Store::connect(admin_url).await {
                let force = if self.dialect == Dialect::Postgres { " WITH (FORCE)" } else { "" };
                let _ = admin.execute_raw(&format!("DROP DATABASE IF EXISTS {name}{force}")).await;
                admin.close().await;
            }
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A locator with edges, all in this process, all on loopback with real sockets.
pub struct Cluster {
    pub locator: Locator,
    pub edges: Vec<Edge>,
    /// Cancelling it stops the locator; each edge has its own child token.
    pub shutdown: CancellationToken,
    edge_tokens: Vec<CancellationToken>,
    pub dir: tempfile::TempDir,
}

/// Adjusts a locator's configuration before it starts.
pub type LocatorTweak = Box<dyn FnOnce(&mut LocatorConfig) + Send>;

/// How to start a [`Cluster`].
#[derive(Default)]
pub struct ClusterOptions {
    /// `None`: SQLite in the cluster's temp dir.
    pub database_url: Option<String>,
    pub tweak_locator: Option<LocatorTweak>,
}

impl Cluster {
    /// A locator on SQLite and one edge, registered and ready.
    pub async fn start() -> Cluster {
        let mut c = Cluster::start_with(ClusterOptions::default()).await;
        c.add_edge(|_| {}).await;
        c
    }

    /// A locator with no edge yet.
    pub async fn start_with(options: ClusterOptions) -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = LocatorConfig::new(dir.path().join("locator"));
        config.database_url = options.database_url;
        config.enrollment_secret = Some(TEST_SECRET.into());
        config.admin_token = Some(TEST_ADMIN_TOKEN.into());
        config.shutdown_timeout = Duration::from_secs(5);
        // Tests place hundreds of sessions from 127.0.0.1 at once; the rate-limit test sets one.
        config.public_rate_limit = 0;
        if let Some(tweak) = options.tweak_locator {
            tweak(&mut config);
        }
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind locator");
        let shutdown = CancellationToken::new();
        let locator =
            duet_locator::start(config, Listeners { api, edge: None }, shutdown.clone()).await.expect("locator starts");
        Cluster { locator, edges: Vec::new(), shutdown, edge_tokens: Vec::new(), dir }
    }

    /// A default edge configuration pointing at this cluster's locator.
    pub fn edge_config(&self, index: usize) -> EdgeConfig {
        let mut config = EdgeConfig::new(self.url(), TEST_SECRET, self.dir.path().join(format!("edge-{index}")));
        config.id = Some(format!("edge-{index}"));
        config.shutdown_timeout = Duration::from_secs(5);
        config
    }

    /// Starts an edge (tweaked by `tweak`) and waits until the locator has it up.
    pub async fn add_edge(&mut self, tweak: impl FnOnce(&mut EdgeConfig)) -> &Edge {
        let mut config = self.edge_config(self.edges.len());
        tweak(&mut config);
        let id = config.id.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind edge");
        let token = self.shutdown.child_token();
        let edge = duet_edge::start(config, listener, token.clone()).await.expect("edge starts");
        let edge_id = id.unwrap_or_else(|| edge.state.edge_id.clone());
        wait_for_edge_health(&self.locator.state.store, &edge_id, Health::Up, Duration::from_secs(15)).await;
        let state = edge.state.clone();
        wait_until("edge has verification keys", Duration::from_secs(15), || {
            let ready = state.is_ready();
            async move { ready }
        })
        .await;
        self.edges.push(edge);
        self.edge_tokens.push(token);
        self.edges.last().expect("just pushed")
    }

    /// The locator's base URL.
    pub fn url(&self) -> String {
        self.locator.url()
    }

    pub fn client(&self) -> LocatorClient {
        LocatorClient::new(&self.url())
    }

    /// Stops one edge (its tasks end; the slot stays so indexes do not move).
    pub fn stop_edge(&self, index: usize) {
        self.edge_tokens[index].cancel();
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for edge in self.edges {
            edge.wait().await;
        }
        self.locator.wait().await;
    }
}

/// A command running one of this workspace's binaries (see [`binary`]) with its media on a port
/// the OS picks: tests run many edges at once, and the default media port (10000) would collide.
pub fn command(name: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(binary(name));
    c.env("DUET_MEDIA_LISTEN", "127.0.0.1:0");
    c
}

/// Path of a binary built by `cargo build` in this workspace (tests that run real processes).
/// Panics with the command to run when it has not been built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test binary> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built: run `cargo build --workspace --bins` first", path.display());
    path
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_names() {
        assert_eq!(super::replace_db_name("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::replace_db_name("mysql://root@h:3306/test?ssl-mode=disabled", "x"),
            "mysql://root@h:3306/x?ssl-mode=disabled"
        );
        assert_eq!(super::replace_db_name("mysql://root@h:3306", "x"), "mysql://root@h:3306/x");
    }
}
