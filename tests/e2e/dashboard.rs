//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core runs `tests/browser/dashboard.mjs` against a real locator with two edges:
//! login with a token and with a password, edges, suspend/resume/drain with their audit entries,
//! a change made through the CLI appearing on the open page, a region rule edited, CSRF and
//! cross-site refusals, logout. Needs `npm ci` in tests/browser and `cargo build --bins` (the
//! README's test command does both).

use std::path::Path;
use std::time::Duration;

use duet_testkit::{binary, Cluster, ClusterOptions, TEST_ADMIN_TOKEN};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_chromium() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/browser has no node_modules: run `npm ci` there (scripts/test does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: install Debian's chromium (scripts/test does)");
    let hash = duet_locator::dashboard::hash_password(PASSWORD).unwrap();
    let options = ClusterOptions {
        tweak_locator: Some(Box::new(move |c| c.dashboard_login = Some(("ada".into(), hash)))),
        ..Default::default()
    };
    let mut cluster = Cluster::start_with(options).await;
    cluster.add_edge(|_| {}).await;
    cluster.add_edge(|_| {}).await;
    let run = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&dir)
        .env("DUET_LOCATOR_URL", cluster.url())
        .env("DUET_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
        .env("DUET_DASHBOARD_USER", "ada")
        .env("DUET_DASHBOARD_PASSWORD", PASSWORD)
        .env("DUET_LOCATOR_BIN", binary("duet-locator"))
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(150), run).await.expect("browser test finished").expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("dashboard test: ok"), "{stdout}");
    cluster.shutdown().await;
}
