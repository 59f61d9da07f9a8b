//! TLS in front of duet, as in deployments (an ingress or Route terminates TLS): a test CA and a
//! TLS-terminating TCP proxy on `127.0.0.1:0` that forwards to a locator or an edge.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A certificate authority made for one test, and a server certificate for `localhost` and
/// `127.0.0.1` that it signed.
pub struct TestCa {
    pub ca_der: CertificateDer<'static>,
    /// The CA certificate as a PEM file (for `--ca-file` / `DUET_CA_FILE`).
    pub ca_pem_path: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    issuer: CertifiedIssuer<'static, KeyPair>,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "duet test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");
        let server_key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        let server = params.signed_by(&server_key, &ca).expect("server cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_pem_path = dir.path().join("ca.pem");
        std::fs::write(&ca_pem_path, ca.pem()).expect("write ca");
        TestCa {
            ca_der: ca.der().clone(),
            ca_pem_path,
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
            issuer: ca,
            _dir: dir,
        }
    }

    /// Signs a new server certificate for `localhost` and `127.0.0.1` and writes it and its key
    /// as PEM files (`cert`, `key`; replaced if they exist), as a certificate manager would;
    /// answers the certificate's DER.
    pub fn write_server_pem(&self, cert: &std::path::Path, key: &std::path::Path) -> CertificateDer<'static> {
        let key_pair = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
        let signed = params.signed_by(&key_pair, &self.issuer).expect("server cert");
        // Written beside and renamed, so a reader never sees half a file.
        for (path, text) in [(key, key_pair.serialize_pem()), (cert, signed.pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write pem");
            std::fs::rename(&tmp, path).expect("rename pem");
        }
        signed.der().clone()
    }

    /// A client configuration trusting only this CA (besides the system roots).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        duet_ws::tls::client_config(std::slice::from_ref(&self.ca_der)).expect("client config")
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server config");
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Terminates TLS on `addr` and forwards each connection to `target`. Stops when dropped.
pub struct TlsProxy {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl TlsProxy {
    pub async fn start(ca: &TestCa, target: SocketAddr) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                    _ = stopped.cancelled() => return,
                };
                let acceptor = acceptor.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut upstream) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream) => {}
                        _ = stopped.cancelled() => {}
                    }
                });
            }
        });
        TlsProxy { addr, stop }
    }

    /// `https://localhost:<port>`.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `wss://localhost:<port>`.
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}", self.addr.port())
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
