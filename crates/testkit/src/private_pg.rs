//! A PostgreSQL server owned by one test, so a fault test can crash and restart its database
//! without breaking the shared server other tests use (`DUET_TEST_POSTGRES_URL`).
//!
//! [`PrivatePostgres::start`] runs `initdb` into a fresh temporary directory and starts `postgres`
//! directly as a child process on a free loopback port, with trust authentication for user
//! `postgres`. It returns once the server answers a real query and proves to be ours (it reports
//! our data directory). When the tests run as root, which `initdb` and `postgres` refuse, both run
//! as the `postgres` OS user (through `setpriv`, else `runuser`) in a directory owned by it.
//!
//! Guarantees: [`PrivatePostgres::stop_immediate`] is a crash as far as clients can tell (SIGQUIT,
//! immediate shutdown, no checkpoint) and returns once the server and its backends are gone;
//! [`PrivatePostgres::start_again`] comes back on the same port with the same data (after crash
//! recovery); dropping the value kills the server and removes the directory.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tempfile::TempDir;

/// Names a directory holding `initdb` and `postgres`, overriding the search of the usual places.
pub const ENV_PG_BIN: &str = "DUET_TEST_PG_BIN";

/// How long `postgres` may take to accept connections. A start takes well under a second on an
/// idle machine; 30 s leaves room for a loaded CI runner and crash recovery.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one readiness probe (connect + query), so a half-started server cannot hang it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server may take to exit after a signal before we escalate to SIGKILL (and, after
/// SIGKILL, before we give up). In an immediate shutdown the postmaster itself SIGKILLs backends
/// that ignore SIGQUIT after 5 s, so 10 s covers it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between readiness probes and exit checks.
const POLL: Duration = Duration::from_millis(50);
/// Free ports tried: another process may take the port we picked before `postgres` binds it.
const PORT_ATTEMPTS: usize = 5;
/// Server log lines quoted in errors.
const LOG_TAIL_LINES: usize = 40;
/// The OS user that runs the server when we are root, and the database superuser.
const PG_USER: &str = "postgres";

/// A private PostgreSQL server; see the module docs.
pub struct PrivatePostgres {
    bin: PathBuf,
    port: u16,
    /// How to run the server's programs as [`PG_USER`] when we are root; `None` runs them as us.
    run_as: Option<RunAs>,
    /// The running postmaster; `None` between `stop_immediate` and `start_again`.
    server: Option<Server>,
    /// Holds `data/` (the cluster), the Unix socket and `postgres.log`; removed on drop.
    dir: TempDir,
}

/// [`PG_USER`]'s ids and the tool that switches to them.
struct RunAs {
    uid: u32,
    gid: u32,
    via: SwitchUser,
}

enum SwitchUser {
    /// `setpriv` execs the program, so our child is the postmaster itself.
    Setpriv(PathBuf),
    /// `runuser` forks and waits: our child is `runuser`, the postmaster its child.
    Runuser(PathBuf),
}

struct Server {
    /// Our direct child: the postmaster, or `runuser` around it.
    child: Child,
    /// The postmaster's pid (from `postmaster.pid`), which receives the signals.
    pid: u32,
}

enum LaunchError {
    /// Someone else bound the port first; another port may work.
    PortInUse,
    Failed(String),
}

impl PrivatePostgres {
    /// Creates a cluster in a new temporary directory and starts a server for it.
    pub async fn start() -> Result<PrivatePostgres, String> {
        let bin = bin_dir().ok_or_else(|| {
            format!("no PostgreSQL binaries (initdb, postgres) found: install PostgreSQL or set {ENV_PG_BIN}")
        })?;
        let run_as = if id(&[]).await? == 0 { Some(RunAs::find().await?) } else { None };
        let dir = tempfile::Builder::new()
            .prefix("duet-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a directory for postgres: {e}"))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
                .map_err(|e| format!("cannot give {} to {PG_USER}: {e}", dir.path().display()))?;
        }
        let mut pg = PrivatePostgres { bin, port: 0, run_as, server: None, dir };
        pg.initdb().await?;
        for attempt in 1..=PORT_ATTEMPTS {
            pg.port = free_port()?;
            match pg.launch().await {
                Ok(()) => return Ok(pg),
                Err(LaunchError::PortInUse) if attempt < PORT_ATTEMPTS => continue,
                Err(LaunchError::PortInUse) => {
                    return Err(format!("no free port after {PORT_ATTEMPTS} attempts:\n{}", pg.log_tail()))
                }
                Err(LaunchError::Failed(e)) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// For tests: a started server, or `None` (with the reason printed) when this machine has no
    /// PostgreSQL binaries and this is not CI. In CI (`CI` set) a missing PostgreSQL fails
    /// loudly, as does any failure to start.
    pub async fn start_or_skip() -> Option<PrivatePostgres> {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        if bin_dir().is_none() && !ci {
            eprintln!(
                "skipping private PostgreSQL test: no initdb/postgres found (install PostgreSQL or set {ENV_PG_BIN})"
            );
            return None;
        }
        match PrivatePostgres::start().await {
            Ok(pg) => Some(pg),
            Err(e) => panic!("private PostgreSQL did not start: {e}"),
        }
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication, no password).
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's output, across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read(self.log_path()).unwrap_or_default();
        tail(&String::from_utf8_lossy(&log))
    }

    /// Crashes the server as clients see it: SIGQUIT to the postmaster (immediate shutdown, no
    /// checkpoint; open connections are dropped), then waits until it has exited. A no-op when
    /// already stopped.
    pub async fn stop_immediate(&mut self) -> Result<(), String> {
        match self.server.take() {
            Some(mut server) => server.stop("QUIT").await,
            None => Ok(()),
        }
    }

    /// Starts the server again on the same directory and port (running crash recovery after
    /// [`PrivatePostgres::stop_immediate`]) and waits until it serves queries.
    pub async fn start_again(&mut self) -> Result<(), String> {
        if self.server.is_some() {
            return Err("private PostgreSQL is already running".into());
        }
        match self.launch().await {
            Ok(()) => Ok(()),
            Err(LaunchError::PortInUse) => {
                Err(format!("port {} was taken while postgres was down:\n{}", self.port, self.log_tail()))
            }
            Err(LaunchError::Failed(e)) => Err(e),
        }
    }

    /// A command running `program` from the PostgreSQL binaries as the right OS user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            None => Command::new(program),
            Some(RunAs { uid, gid, via: SwitchUser::Setpriv(setpriv) }) => {
                let mut c = Command::new(setpriv);
                c.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).args(["--init-groups", "--"]);
                c.arg(program);
                c
            }
            Some(RunAs { via: SwitchUser::Runuser(runuser), .. }) => {
                let mut c = Command::new(runuser);
                c.args(["-u", PG_USER, "--"]).arg(program);
                c
            }
        };
        // Our working directory may not be readable by the `postgres` user.
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    async fn initdb(&self) -> Result<(), String> {
        let mut command = self.command("initdb");
        command.arg("-D").arg(self.data_dir()).args([
            "-U",
            PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]);
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.bin.join("initdb").display()))?;
        if !output.status.success() {
            return Err(format!(
                "initdb failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(())
    }

    /// Starts `postgres` on `self.port` and waits until it serves queries.
    async fn launch(&mut self) -> Result<(), LaunchError> {
        let log_path = self.log_path();
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LaunchError::Failed(format!("cannot open {}: {e}", log_path.display())))?;
        let stdout = log.try_clone().map_err(|e| LaunchError::Failed(format!("cannot share the log: {e}")))?;
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            .stdout(stdout)
            .stderr(log);
        let child = command
            .spawn()
            .map_err(|e| LaunchError::Failed(format!("cannot run {}: {e}", self.bin.join("postgres").display())))?;
        let mut server = Server { pid: child.id(), child };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = fs::read(&log_path).unwrap_or_default();
                let log = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
                if log.contains("could not bind") {
                    return Err(LaunchError::PortInUse);
                }
                return Err(LaunchError::Failed(format!(
                    "postgres exited ({status}) before accepting connections:\n{}",
                    tail(&log)
                )));
            }
            if self.serves_us().await {
                break;
            }
            if Instant::now() >= deadline {
                let _ = server.stop("KILL").await;
                return Err(LaunchError::Failed(format!(
                    "postgres did not accept connections on port {} within {READY_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log_tail()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        if let Some(pid) = self.postmaster_pid() {
            server.pid = pid;
        }
        self.server = Some(server);
        Ok(())
    }

    /// Whether the server on our port answers a query and is ours (reports our data directory),
    /// not another one that took the port.
    async fn serves_us(&self) -> bool {
        let probe = async {
            let mut conn = PgConnection::connect(&self.url()).await.ok()?;
            let data_dir: String =
                sqlx::query_scalar("SELECT current_setting('data_directory')").fetch_one(&mut conn).await.ok()?;
            let _ = conn.close().await;
            Some(data_dir)
        };
        let Ok(Some(reported)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await else {
            return false;
        };
        let ours = self.data_dir();
        Path::new(&reported) == ours || fs::canonicalize(&reported).ok() == fs::canonicalize(&ours).ok()
    }

    /// The postmaster's pid, from the first line of `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<u32> {
        let contents = fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        contents.lines().next()?.trim().parse().ok()
    }
}

impl Drop for PrivatePostgres {
    /// Kills the server (SIGQUIT, then SIGKILL after [`STOP_TIMEOUT`]), blocking until it has
    /// exited; the directory is removed afterwards, when `dir` drops.
    fn drop(&mut self) {
        let Some(mut server) = self.server.take() else { return };
        let _ = Command::new("kill").arg("-QUIT").arg(server.pid.to_string()).status();
        if !server.exited_within_blocking(STOP_TIMEOUT) {
            server.kill_now();
            server.exited_within_blocking(STOP_TIMEOUT);
        }
    }
}

impl Server {
    /// Sends `signal` to the postmaster and waits for it to exit, escalating to SIGKILL after
    /// [`STOP_TIMEOUT`].
    async fn stop(&mut self, signal: &str) -> Result<(), String> {
        let sent =
            tokio::process::Command::new("kill").arg(format!("-{signal}")).arg(self.pid.to_string()).status().await;
        if !matches!(sent, Ok(status) if status.success()) {
            // Already gone, or `kill` missing: the wait below tells which.
            self.kill_now();
        }
        if self.exited_within(STOP_TIMEOUT).await.is_some() {
            return Ok(());
        }
        self.kill_now();
        match self.exited_within(STOP_TIMEOUT).await {
            Some(_) => Err(format!("postgres ignored SIG{signal} for {STOP_TIMEOUT:?} and was killed")),
            None => Err(format!("postgres (pid {}) survived SIGKILL for {STOP_TIMEOUT:?}", self.pid)),
        }
    }

    /// SIGKILL to the postmaster and to our direct child (they differ under `runuser`).
    fn kill_now(&mut self) {
        let _ = Command::new("kill").arg("-KILL").arg(self.pid.to_string()).status();
        let _ = self.child.kill();
    }

    async fn exited_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// For `Drop`, which cannot await.
    fn exited_within_blocking(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl RunAs {
    /// How to become [`PG_USER`]: `setpriv` when installed, else `runuser` (both util-linux).
    async fn find() -> Result<RunAs, String> {
        let via = match (find_in_path("setpriv"), find_in_path("runuser")) {
            (Some(setpriv), _) => SwitchUser::Setpriv(setpriv),
            (None, Some(runuser)) => SwitchUser::Runuser(runuser),
            (None, None) => {
                return Err(format!(
                    "running as root: PostgreSQL must run as {PG_USER}, but neither setpriv nor runuser is installed"
                ))
            }
        };
        Ok(RunAs { uid: id(&["-u", PG_USER]).await?, gid: id(&["-g", PG_USER]).await?, via })
    }
}

/// The directory holding `initdb` and `postgres`: [`ENV_PG_BIN`] when set, else the newest
/// version in the Debian/Ubuntu (`/usr/lib/postgresql/N/bin`) or PGDG RPM (`/usr/pgsql-N/bin`)
/// layout, else `PATH`, else `/usr/local/pgsql/bin`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV_PG_BIN).filter(|v| !v.is_empty()) {
        // Trusted as given: a wrong setting must fail loudly, not skip.
        return Some(PathBuf::from(dir));
    }
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = fs::read_dir(parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let version = name.to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|v| v.parse().ok());
            if let Some(version) = version {
                versioned.push((version, entry.path().join("bin")));
            }
        }
    }
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let path_dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    versioned
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(path_dirs)
        .chain([PathBuf::from("/usr/local/pgsql/bin")])
        .find(|dir| has_tools(dir))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `id <args>` as a number: our uid with no arguments, `-u user` / `-g user` for a user's ids.
async fn id(args: &[&str]) -> Result<u32, String> {
    let output =
        tokio::process::Command::new("id").args(args).output().await.map_err(|e| format!("cannot run id: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let text = if args.is_empty() { text.split_once("uid=").map_or("", |(_, rest)| rest) } else { &text };
    let digits: String = text.trim().chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .map_err(|_| format!("`id {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
}

/// A port nobody listens on right now (it may be taken again before we use it: callers retry).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_an_immediate_shutdown_and_restarts_with_its_data() {
        let Some(mut pg) = PrivatePostgres::start_or_skip().await else { return };
        assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port()));
        let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
        sqlx::query("CREATE TABLE kept (id INT PRIMARY KEY, note TEXT NOT NULL)").execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO kept VALUES (1, 'committed before the crash')").execute(&mut conn).await.unwrap();
        let port = pg.port();

        pg.stop_immediate().await.unwrap();
        assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err(), "the open connection survived");
        assert!(PgConnection::connect(&pg.url()).await.is_err(), "a new connection was accepted");
        pg.stop_immediate().await.unwrap(); // idempotent

        pg.start_again().await.unwrap_or_else(|e| panic!("restart: {e}"));
        assert_eq!(pg.port(), port);
        assert!(pg.start_again().await.is_err(), "a second start while running");
        let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
        let note: String = sqlx::query_scalar("SELECT note FROM kept WHERE id = 1").fetch_one(&mut conn).await.unwrap();
        assert_eq!(note, "committed before the crash");
    }

    #[tokio::test]
    async fn drop_kills_the_server_and_removes_its_directory() {
        let Some(pg) = PrivatePostgres::start_or_skip().await else { return };
        let dir = pg.dir.path().to_owned();
        let pid = pg.server.as_ref().map(|s| s.pid).expect("running");
        let url = pg.url();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(pg);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "postmaster {pid} still running");
        assert!(PgConnection::connect(&url).await.is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let tail = tail(&log);
        assert!(tail.starts_with(&format!("line {}", 100 - LOG_TAIL_LINES)));
        assert!(tail.ends_with("line 99"));
    }
}
