//! Real processes: the README's run command (`duet-locator` with its defaults, on free ports)
//! and two `duet` terminal clients chatting through it.

use std::process::Stdio;
use std::time::Duration;

use duet_testkit::{binary, wait_until};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// Reads lines until one contains `needle`; returns it.
async fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> String {
    let found = tokio::time::timeout(LINE_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        Ok(None) => panic!("process exited before printing {needle:?}"),
        Err(_) => panic!("no line with {needle:?} within {LINE_TIMEOUT:?}"),
    }
}

/// Starts a process with piped stdin and stdout (stderr goes to the test's), killed on drop;
/// answers it and its stdout's lines.
pub(crate) fn spawn(cmd: &mut Command) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn exits_ok(mut child: Child, what: &str) {
    let status = tokio::time::timeout(LINE_TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit"))
        .unwrap();
    assert!(status.success(), "{what} exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_run_command_and_two_terminal_clients() {
    duet_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // The README's command with its defaults, except the ports (tests bind free ones).
    let (locator, mut locator_out) = spawn(
        duet_testkit::command("duet-locator")
            .current_dir(dir.path())
            .env("DUET_LISTEN", "127.0.0.1:0")
            .env("DUET_EDGE_LISTEN", "127.0.0.1:0")
            .env("DUET_LOG", "warn"),
    );
    let first = line_with(&mut locator_out, "duet locator: ").await;
    let url = first.split_whitespace().nth(2).expect("url on the first line").to_owned();
    let edge_line = line_with(&mut locator_out, "duet embedded edge").await;
    let edge_url = edge_line.split_whitespace().last().unwrap().replace("ws://", "http://");
    assert!(dir.path().join("duet-data/locator.db").exists(), "SQLite under ./duet-data");
    let http = reqwest::Client::new();
    wait_until("the embedded edge is ready", LINE_TIMEOUT, || {
        let http = http.clone();
        let edge_url = edge_url.clone();
        async move { matches!(http.get(format!("{edge_url}/readyz")).send().await, Ok(r) if r.status().is_success()) }
    })
    .await;
    assert!(http.get(format!("{url}/readyz")).send().await.unwrap().status().is_success());

    let duet = binary("duet");
    let (mut host, mut host_out) = spawn(Command::new(&duet).args(["--locator", &url, "--name", "Ada", "host"]));
    let join_line = line_with(&mut host_out, "duet join ").await;
    let session = join_line.split_whitespace().last().unwrap().to_owned();
    line_with(&mut host_out, "joined as participant 1").await;

    let (mut guest, mut guest_out) =
        spawn(Command::new(&duet).args(["--locator", &url, "--name", "Bo", "join", &session]));
    line_with(&mut guest_out, "joined as participant 2; here: Ada").await;
    line_with(&mut host_out, "* Bo joined").await;

    let mut host_in = host.stdin.take().unwrap();
    host_in.write_all(b"hello from ada\n").await.unwrap();
    line_with(&mut guest_out, "Ada: hello from ada").await;
    let mut guest_in = guest.stdin.take().unwrap();
    guest_in.write_all(b"hi ada, bo here\n").await.unwrap();
    line_with(&mut host_out, "Bo: hi ada, bo here").await;

    // End of input leaves the session.
    drop(guest_in);
    exits_ok(guest, "guest").await;
    line_with(&mut host_out, "* Bo left").await;
    drop(host_in);
    exits_ok(host, "host").await;

    // SIGTERM stops the locator cleanly.
    let pid = locator.id().unwrap().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(status.success());
    exits_ok(locator, "locator").await;
}

/// `--check-config` validates and exits; a bad value exits 64 with a precise message.
#[tokio::test]
async fn check_config_and_bad_config() {
    let ok = duet_testkit::command("duet-locator")
        .arg("--check-config")
        .env("DUET_DATA_DIR", "/nonexistent/x")
        .output()
        .await
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration ok"));
    // The runtime's size: one thread runs the single-threaded scheduler, for both binaries.
    for binary in ["duet-locator", "duet-edge"] {
        let ok = duet_testkit::command(binary)
            .args(["--check-config", "--worker-threads", "1"])
            .env("DUET_ENROLLMENT_SECRET", duet_testkit::TEST_SECRET)
            .env("DUET_DATA_DIR", "/nonexistent/x")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&ok.stdout);
        assert!(ok.status.success(), "{binary}: {}", String::from_utf8_lossy(&ok.stderr));
        assert!(stdout.contains("worker threads: 1 (current-thread scheduler)"), "{binary}: {stdout}");
    }
    let bad = duet_testkit::command("duet-locator").args(["--token-ttl", "1s"]).output().await.unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("token_ttl"), "{}", String::from_utf8_lossy(&bad.stderr));
    for (args, env, needle) in [
        (vec!["--check-config"], ("DUET_GEOIP_DATABASE", "/nonexistent/geo.mmdb"), "/nonexistent/geo.mmdb"),
        (vec!["--check-config"], ("DUET_TRUSTED_PROXIES", "10.0.0.0/8,bogus"), "bogus"),
        (vec!["--check-config", "--placement-cpu-limit", "1.5"], ("X", ""), "placement_cpu_limit"),
        (vec!["--check-config"], ("DUET_WORKER_THREADS", "2000"), "invalid worker_threads: 2000 is more than 1024"),
        (vec!["--check-config", "--default-region", "eu west"], ("X", ""), "default_region"),
        (vec!["--check-config", "--tls-cert-file", "/etc/hostname"], ("X", ""), "tls_key_file is not"),
        (
            vec!["--check-config", "--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", "/nonexistent/tls.key"],
            ("X", ""),
            "cannot read certificate file /nonexistent/tls.crt",
        ),
        (
            vec!["--check-config", "--tls-cert-file", "/etc/hostname"],
            ("DUET_TLS_KEY_FILE", "/etc/hostname"),
            "holds no certificate",
        ),
        (vec!["--check-config"], ("DUET_CA_FILE", "/etc/hostname"), "ca_file"),
        (
            vec!["--check-config", "--turn-urls", "turn:127.0.0.1:3478?transport=tcp"],
            ("X", ""),
            "invalid turn_secret: turn_urls needs DUET_TURN_SECRET or DUET_TURN_SECRET_FILE",
        ),
        (
            vec!["--check-config"],
            ("DUET_STUN_URLS", "stun:stun.example.com,https://stun.example.com"),
            "invalid stun_urls: \"https://stun.example.com\" must start with stun: or stuns:",
        ),
        (
            vec!["--check-config", "--turn-urls", "turn:127.0.0.1:3478"],
            ("DUET_TURN_SECRET", "too-short"),
            "invalid turn_secret: must be at least 16 bytes",
        ),
    ] {
        let bad = duet_testkit::command("duet-locator").args(&args).env(env.0, env.1).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(64), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let bad = duet_testkit::command("duet-locator").env("DUET_METRICS_LISTEN", "everywhere").output().await.unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap rejects unparsable values");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--metrics-listen"));
    let bad = duet_testkit::command("duet-edge")
        .env_remove("DUET_ENROLLMENT_SECRET")
        .env_remove("DUET_ENROLLMENT_SECRET_FILE")
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("enrollment secret"));
    for (args, needle) in [
        (vec!["--check-config", "--drain-timeout", "2d"], "drain_timeout"),
        (vec!["--check-config", "--tls-key-file", "/etc/hostname"], "tls_cert_file is not"),
        (
            vec!["--check-config", "--tls-cert-file", "/nonexistent/a.crt", "--tls-key-file", "/nonexistent/a.key"],
            "/nonexistent/a.crt",
        ),
        (vec!["--check-config", "--media-advertised-address", "0.0.0.0"], "0.0.0.0 cannot be reached by clients"),
        (vec!["--check-config", "--media-max-tracks", "100"], "invalid media_max_tracks"),
        (vec!["--check-config", "--worker-threads", "5000"], "invalid worker_threads: 5000 is more than 1024"),
    ] {
        let bad = duet_testkit::command("duet-edge")
            .args(&args)
            .env("DUET_ENROLLMENT_SECRET", duet_testkit::TEST_SECRET)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // A media port already taken stops the edge at start with the address in the message.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let bad = duet_testkit::command("duet-edge")
        .args(["--listen", "127.0.0.1:0", "--data-dir", data.path().to_str().unwrap()])
        .env("DUET_ENROLLMENT_SECRET", duet_testkit::TEST_SECRET)
        .env("DUET_MEDIA_LISTEN", &port)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_ne!(bad.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("cannot bind the media UDP port {port}")), "{stderr}");
    for pid in ["0", "-1"] {
        let drain = duet_testkit::command("duet-edge").args(["drain", &format!("--pid={pid}")]).output().await.unwrap();
        assert_eq!(drain.status.code(), Some(2), "pid {pid} is refused: {}", String::from_utf8_lossy(&drain.stderr));
    }
    // A process that is not an edge is never signalled (this test survives).
    let me = std::process::id().to_string();
    let drain = duet_testkit::command("duet-edge").args(["drain", "--pid", &me]).output().await.unwrap();
    assert_eq!(drain.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&drain.stderr).contains("not duet-edge"),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    let bad = duet_testkit::command("duet-edge").args(["--heartbeat-interval", "often"]).output().await.unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap rejects unparsable values");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid duration"));
    let help = duet_testkit::command("duet-locator").arg("--help").output().await.unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--listen",
        "--data-dir",
        "--token-ttl",
        "--embedded-edge",
        "--edge-listen",
        "--check-config",
        "DUET_DATABASE_URL",
        "--geoip-database",
        "--trusted-proxies",
        "--default-region",
        "--metrics-listen",
        "--tls-cert-file",
        "--stun-urls",
        "--turn-urls",
        "DUET_TURN_SECRET",
        "regions",
        "edges",
    ] {
        assert!(help.contains(option), "--help does not mention {option}");
    }
}

/// A separate `duet-edge` process joins a running locator with the enrollment secret the
/// locator generated in its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_edge_process_joins_the_locator() {
    let dir = tempfile::tempdir().unwrap();
    let (locator, mut locator_out) = spawn(
        duet_testkit::command("duet-locator")
            .current_dir(dir.path())
            .env("DUET_LISTEN", "127.0.0.1:0")
            .env("DUET_EMBEDDED_EDGE", "false")
            .env("DUET_LOG", "warn"),
    );
    let first = line_with(&mut locator_out, "duet locator: ").await;
    let url = first.split_whitespace().nth(2).unwrap().to_owned();
    let secret_file = dir.path().join("duet-data/enrollment-secret");
    assert!(secret_file.exists());
    let (edge, mut edge_out) = spawn(
        duet_testkit::command("duet-edge")
            .current_dir(dir.path())
            .env("DUET_LOCATOR_URL", &url)
            .env("DUET_LISTEN", "127.0.0.1:0")
            .env("DUET_REGION", "eu")
            .env("DUET_ENROLLMENT_SECRET_FILE", &secret_file)
            .env("DUET_LOG", "warn"),
    );
    line_with(&mut edge_out, "serving sessions at ws://127.0.0.1:").await;
    let client = duet_client::LocatorClient::new(&url);
    wait_until("a session can be placed on the edge", LINE_TIMEOUT, || {
        let client = client.clone();
        async move { client.create_session(&Default::default()).await.is_ok() }
    })
    .await;
    let placed = client.create_session(&Default::default()).await.unwrap();
    assert_eq!(placed.edge.region, "eu");
    let s = duet_client::connect(&placed.edge.url, &placed.token).await.unwrap();
    assert_eq!(s.welcome.participant_id, 1);
    for child in [edge, locator] {
        let pid = child.id().unwrap().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        exits_ok(child, "process").await;
    }
}

/// Runs `duet-locator <args>` as the admin CLI against `url` with `token`; answers (exit code,
/// stdout, stderr).
async fn admin_cli(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = duet_testkit::command("duet-locator")
        .args(args)
        .args(["--url", url])
        .env("DUET_ADMIN_TOKEN", token)
        .env_remove("DUET_ADMIN_TOKEN_FILE")
        .env_remove("DUET_LOCATOR_URL")
        .output()
        .await
        .expect("run the admin cli");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_manages_regions_and_edges() {
    let cluster = duet_testkit::Cluster::start().await;
    let url = cluster.url();
    let token = duet_testkit::TEST_ADMIN_TOKEN;
    let cli = |args: &'static [&'static str]| admin_cli(&url, token, args);

    let (code, out, err) = cli(&["regions", "add-cidr", "10.20.0.0/16", "eu"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = cli(&["regions", "add-country", "se", "eu"]).await;
    assert_eq!(code, 0);
    let (code, _, _) = cli(&["regions", "fallback", "eu", "default"]).await;
    assert_eq!(code, 0);
    let (code, out, _) = cli(&["regions", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("10.20.0.0/16") && out.contains("SE"), "{out}");
    let table_line = out.lines().find(|l| l.contains("10.20.0.0/16")).unwrap();
    assert!(table_line.contains("cidr") && table_line.contains("eu"), "{table_line}");

    let (code, out, _) = cli(&["regions", "list", "--json"]).await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["rules"].as_array().unwrap().len(), 2);
    let eu = json["regions"].as_array().unwrap().iter().find(|r| r["name"] == "eu").unwrap().clone();
    assert_eq!(eu["fallback"], serde_json::json!(["default"]));

    // Errors: a clear message and a non-zero exit, and nothing changes.
    let (code, _, err) = cli(&["regions", "add-cidr", "10.20.0.1/16", "eu"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("10.20.0.0/16"), "says what was meant: {err}");
    let (code, _, err) = cli(&["regions", "add-cidr", "10.20.0.0/16", "us"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("conflict"), "{err}");
    let (code, _, err) = admin_cli(&url, "wrong-token-wrong-token", &["edges", "list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = admin_cli("http://127.0.0.1:9", token, &["edges", "list"]).await;
    assert_eq!(code, 69, "unreachable locator: {err}");

    // Edges: suspend shows in the list, resume undoes it.
    let (code, out, _) = cli(&["edges", "suspend", "edge-0"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("suspended"), "{out}");
    let (_, out, _) = cli(&["edges", "list", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["edges"][0]["admin_state"], "suspended");
    let (code, _, _) = cli(&["edges", "resume", "edge-0"]).await;
    assert_eq!(code, 0);
    let (code, _, _) = cli(&["edges", "suspend", "no-such-edge"]).await;
    assert_eq!(code, 1);
    let (code, out, _) = cli(&["regions", "set-edge", "edge-0", "eu"]).await;
    assert_eq!(code, 0, "{out}");

    // A dry run from the CLI: an office address lands on edge-0, now in eu.
    let (code, out, _) = cli(&["placement", "explain", "10.20.1.2"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("edge-0") && out.contains("eu"), "{out}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_manages_tokens_sessions_audit_usage_and_drain() {
    let cluster = duet_testkit::Cluster::start().await;
    let url = cluster.url();
    let root = duet_testkit::TEST_ADMIN_TOKEN;
    let (placed, _host) = crate::support::host(&cluster, "Ada").await;

    // Tokens: made by root, printed once, used by name, revoked.
    let (code, out, err) =
        admin_cli(&url, root, &["tokens", "create", "ops", "--scope", "admin", "--expires-in", "1h"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let ops = out.lines().next().unwrap().to_owned();
    assert!(ops.starts_with("duet_") && out.contains("shown only now"), "{out}");
    let (code, _, err) = admin_cli(&url, root, &["tokens", "create", "ops", "--scope", "read"]).await;
    assert!(code == 1 && err.contains("conflict"), "{err}");
    let (code, _, err) = admin_cli(&url, root, &["tokens", "create", "x", "--scope", "owner"]).await;
    assert_eq!(code, 2, "clap refuses an unknown scope: {err}");
    let (code, out, _) = admin_cli(&url, &ops, &["edges", "drain", "edge-0", "--deadline", "1h"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("draining") && out.contains("remaining sessions end at"), "{out}");
    let (code, out, _) = admin_cli(&url, &ops, &["edges", "resume", "edge-0"]).await;
    assert!(code == 0 && out.contains("active"), "{out}");
    let (code, out, _) = admin_cli(&url, root, &["tokens", "list", "--json"]).await;
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = listed["tokens"][0]["id"].as_str().unwrap().to_owned();
    let (code, out, _) = admin_cli(&url, root, &["tokens", "list"]).await;
    assert!(code == 0 && out.contains("ops") && out.contains("token:root"), "{out}");

    // Audit: the admin's actions under its name, filtered.
    let (code, out, _) = admin_cli(&url, root, &["audit", "tail", "--actor", "token:ops"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("edge_draining") && out.contains("edge_resumed"), "{out}");
    assert!(!out.contains("token_created"), "created by token:root, not token:ops: {out}");
    let (code, out, _) = admin_cli(&url, root, &["audit", "tail", "--kind", "token_created", "--json"]).await;
    assert_eq!(code, 0);
    let entries: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{out}");

    let (code, _, _) = admin_cli(&url, root, &["tokens", "revoke", &id]).await;
    assert_eq!(code, 0);
    let (code, _, err) = admin_cli(&url, &ops, &["edges", "list"]).await;
    assert!(code == 1 && err.contains("revoked"), "{err}");

    // Sessions and usage.
    let (code, out, _) = admin_cli(&url, root, &["sessions", "list", "--state", "live"]).await;
    assert!(code == 0 && out.contains(&placed.session_id), "{out}");
    let (code, out, _) = admin_cli(&url, root, &["sessions", "show", &placed.session_id]).await;
    assert!(code == 0 && out.contains("host") && out.contains("Ada"), "{out}");
    let (code, out, _) = admin_cli(&url, root, &["sessions", "placement", &placed.session_id]).await;
    assert!(code == 0 && out.contains("edge-0"), "{out}");
    let (code, out, _) = admin_cli(&url, root, &["usage", "--since", "10m"]).await;
    assert!(code == 0 && out.contains("USERS"), "{out}");
    let (code, out, _) = admin_cli(&url, root, &["metrics", "tail", "--kind", "usage", "--json"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(serde_json::from_str::<serde_json::Value>(&out).unwrap().is_array(), "{out}");
    let (code, out, err) = admin_cli(&url, root, &["client-keys", "create", "red", "laptops"]).await;
    assert!(code == 0 && out.starts_with("duetck_"), "{out}{err}");
    let (code, out, _) = admin_cli(&url, root, &["client-keys", "list", "--team", "red"]).await;
    assert!(code == 0 && out.contains("laptops"), "{out}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn hash_password_reads_stdin_and_refuses_short_passwords() {
    use tokio::io::AsyncWriteExt;
    for (input, ok) in [("correct horse battery\n", true), ("short\n", false)] {
        let mut child = duet_testkit::command("duet-locator")
            .arg("hash-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
        let out = child.wait_with_output().await.unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        if ok {
            assert!(out.status.success() && stdout.starts_with("$argon2id$"), "{stdout}");
            assert!(duet_locator::dashboard::validate_login("ada", stdout.trim()).is_ok());
        } else {
            assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
