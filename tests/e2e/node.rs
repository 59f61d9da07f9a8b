//! The independent Node.js client (tests/node, written from docs/protocol.md alone) hosts and
//! joins a session against a real locator and edge: the proof that the protocol documentation
//! is enough to implement a client.

use std::path::Path;
use std::time::Duration;

use duet_testkit::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_written_from_the_docs_hosts_and_joins() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    assert!(
        dir.join("node_modules/ws").exists(),
        "tests/node has no node_modules: run `npm ci` there (scripts/test does)"
    );
    let cluster = Cluster::start().await;
    let run = tokio::process::Command::new("node")
        .arg("host-and-join.mjs")
        .arg(cluster.url())
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(60), run).await.expect("node client finished").expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node client failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("node client: ok"), "{stdout}");
    cluster.shutdown().await;
}
