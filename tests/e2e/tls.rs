//! TLS in front of duet, as deployed: the edge links to an `https://` locator and clients reach
//! it at a `wss://` URL, both through TLS-terminating proxies with a private CA.

use std::time::Duration;

use duet_locator::db::Health;
use duet_proto::session::{EdgeFrame, EVERYONE};
use duet_testkit::tls::{TestCa, TlsProxy};
use duet_testkit::{wait_for_edge_health, Cluster, ClusterOptions};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_links_work_through_tls_with_a_private_ca() {
    let cluster = Cluster::start_with(ClusterOptions::default()).await;
    let ca = TestCa::new();
    let locator_proxy = TlsProxy::start(&ca, cluster.locator.local_addr).await;

    let edge_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge_proxy = TlsProxy::start(&ca, edge_listener.local_addr().unwrap()).await;
    let mut config = cluster.edge_config(0);
    config.locator_url = locator_proxy.https_url();
    config.ca_file = Some(ca.ca_pem_path.clone());
    config.public_url = Some(edge_proxy.wss_url());
    let token = cluster.shutdown.child_token();
    let edge = duet_edge::start(config, edge_listener, token.clone()).await.unwrap();
    wait_for_edge_health(&cluster.locator.state.store, "edge-0", Health::Up, Duration::from_secs(15)).await;

    let locator = duet_client::LocatorClient::with_ca_certs(&locator_proxy.https_url(), &[ca.ca_der.to_vec()]).unwrap();
    let placed = locator.create_session(&user("Ada")).await.unwrap();
    assert!(placed.edge.url.starts_with("wss://localhost:"), "{}", placed.edge.url);

    // Without the private CA the edge's certificate is not trusted.
    let untrusted = duet_client::connect(&placed.edge.url, &placed.token).await;
    assert!(matches!(untrusted, Err(duet_client::ClientError::Connect(duet_ws::ConnectError::TlsHandshake { .. }))));

    let tls = Some(ca.client_config());
    let host = duet_client::connect_with_tls(&placed.edge.url, &placed.token, tls.clone()).await.unwrap();
    let joined = locator.join_session(&placed.session_id, &user("Bo")).await.unwrap();
    let mut guest = duet_client::connect_with_tls(&joined.edge.url, &joined.token, tls).await.unwrap();
    host.send(EVERYONE, 1, &b"over tls"[..]).unwrap();
    match next_frame(&mut guest).await {
        EdgeFrame::Message { payload, .. } => assert_eq!(&payload[..], b"over tls"),
        other => panic!("{other:?}"),
    }
    token.cancel();
    edge.wait().await;
    cluster.shutdown().await;
}
