//! TLS with rustls and the aws-lc-rs provider.
//!
//! Clients (`wss://`, `https://`) trust the system's roots and optionally extra CA certificates
//! from a PEM file (on-premises deployments often run their own CA).
//!
//! Servers usually speak plain HTTP behind whatever terminates TLS in front of them (an ingress,
//! a Route, a reverse proxy). For hosts without one, [`TlsFiles`] and [`ServerTls`] serve TLS in
//! process from a certificate chain and key in PEM files, and [`ServerTls::watch`] reloads them
//! when they change (cert-manager and ACME clients renew certificates in place), without a
//! restart and without dropping connections: each handshake takes the current pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
pub use rustls::ClientConfig;
pub use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("CA file {0} holds no certificate")]
    EmptyCaFile(PathBuf),
    #[error("cannot read certificate file {path}: {reason}")]
    CertFile { path: PathBuf, reason: String },
    #[error("certificate file {0} holds no certificate")]
    EmptyCertFile(PathBuf),
    #[error("cannot read key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("key {key} does not belong to certificate {cert}: {reason}")]
    KeyMismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs aws-lc-rs as the process-wide rustls provider (the binaries and the test kit call
/// this first; a second call is harmless).
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Reads every certificate in a PEM file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::CaFile { path: path.into(), reason: e.to_string() })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::CaFile { path: path.into(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::EmptyCaFile(path.into()));
    }
    Ok(certs)
}

/// A client configuration trusting the system roots plus `extra` certificates.
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "skipping unreadable system certificate");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    for cert in extra {
        roots.add(cert.clone())?;
    }
    tracing::debug!(system = added, extra = extra.len(), "tls roots loaded");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The system-roots configuration, built once.
pub fn default_client_config() -> Result<Arc<ClientConfig>, TlsError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let c = client_config(&[])?;
    Ok(CONFIG.get_or_init(|| c).clone())
}

/// How often [`ServerTls::watch`] looks at the certificate and key files: renewals happen days
/// before expiry, so ten seconds is prompt, and two `stat` calls per period cost nothing.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// A certificate chain and its private key, in PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Both files or neither; one without the other is a configuration mistake.
    pub fn pair(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, String> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err("tls_cert_file is set but tls_key_file is not; set both or neither".into()),
            (None, Some(_)) => Err("tls_key_file is set but tls_cert_file is not; set both or neither".into()),
        }
    }

    /// Reads and checks the pair: the chain is not empty and the key matches its first
    /// certificate.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let cert_err = |reason: String| TlsError::CertFile { path: self.cert.clone(), reason };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| cert_err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::EmptyCertFile(self.cert.clone()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| TlsError::KeyFile { path: self.key.clone(), reason: e.to_string() })?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::KeyMismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(certified))
    }

    /// What changes when either file is replaced or rewritten (`None` if one is unreadable).
    fn stamp(&self) -> Stamp {
        let one = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        Some([one(&self.cert)?, one(&self.key)?])
    }
}

type Stamp = Option<[(SystemTime, u64); 2]>;

/// The certificate a TLS listener presents, swapped in place on reload, and the files' stamp
/// when it was read (taken before reading, so a change during the read is seen next time).
#[derive(Debug)]
struct Current(RwLock<(Arc<CertifiedKey>, Stamp)>);

impl Current {
    fn key(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    fn stamp(&self) -> Stamp {
        self.0.read().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

/// A server's TLS: its rustls configuration and the files it reloads from.
#[derive(Debug, Clone)]
pub struct ServerTls {
    files: TlsFiles,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
}

impl ServerTls {
    /// Loads the files and builds a configuration offering HTTP/1.1 (websockets need it).
    pub fn new(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let stamp = files.stamp();
        let current = Arc::new(Current(RwLock::new((files.load()?, stamp))));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { files, current, config: Arc::new(config) })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Loads the files again now; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = self.files.stamp();
        let fresh = self.files.load()?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = (fresh, stamp);
        Ok(())
    }

    /// The end-entity certificate presented now (DER), for tests and logs.
    pub fn current_cert(&self) -> CertificateDer<'static> {
        self.current.key().cert[0].clone()
    }

    /// Reloads the pair whenever either file's modification time or size changes, until
    /// `stop`. A pair that fails to load (a half-written file, a key for another certificate) is
    /// logged and retried at the next change or check; the listener keeps the last good pair.
    pub async fn watch(self, every: Duration, stop: CancellationToken) {
        let mut failed = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            if self.files.stamp() == self.current.stamp() {
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    failed = false;
                    tracing::info!(cert = %self.files.cert.display(), "tls certificate reloaded");
                }
                Err(e) => {
                    if !failed {
                        tracing::warn!(error = %e, "tls certificate not reloaded; keeping the current one");
                    }
                    failed = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` written as PEM files; answers its DER.
    fn write_pair(cert: &Path, key: &Path) -> CertificateDer<'static> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        std::fs::write(key, made.signing_key.serialize_pem()).expect("write key");
        std::fs::write(cert, made.cert.pem()).expect("write cert");
        made.cert.der().clone()
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") }
    }

    #[test]
    fn pairs_are_both_or_neither() {
        assert_eq!(TlsFiles::pair(None, None), Ok(None));
        assert!(TlsFiles::pair(Some("c".into()), None).unwrap_err().contains("tls_key_file"));
        assert!(TlsFiles::pair(None, Some("k".into())).unwrap_err().contains("tls_cert_file"));
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert!(matches!(f.load(), Err(TlsError::CertFile { .. })), "missing files");
        write_pair(&f.cert, &f.key);
        std::fs::write(&f.cert, "not a certificate\n").unwrap();
        assert!(matches!(f.load(), Err(TlsError::EmptyCertFile(_))));
        write_pair(&f.cert, &f.key);
        std::fs::write(&f.key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        assert!(f.load().is_err(), "garbage key");
        // A valid key of another certificate.
        let other = dir.path().join("other.key");
        write_pair(&dir.path().join("other.crt"), &other);
        std::fs::copy(&other, &f.key).unwrap();
        let err = f.load().unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("tls.key"), "{err}");
    }

    #[tokio::test]
    async fn a_renewed_pair_is_picked_up_and_a_broken_one_is_not() {
        install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let first = write_pair(&f.cert, &f.key);
        let tls = ServerTls::new(f.clone()).unwrap();
        assert_eq!(tls.current_cert(), first);

        let stop = CancellationToken::new();
        let watcher = tokio::spawn(tls.clone().watch(Duration::from_millis(20), stop.clone()));
        let second = write_pair(&f.cert, &f.key);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tls.current_cert() != second {
            assert!(tokio::time::Instant::now() < deadline, "the renewed certificate was not loaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // A half-written renewal is refused and the listener keeps the last good pair.
        std::fs::write(&f.cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.current_cert(), second);
        // Once the renewal is complete, the watcher (which keeps retrying) takes it.
        let third = write_pair(&f.cert, &f.key);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tls.current_cert() != third {
            assert!(tokio::time::Instant::now() < deadline, "the completed renewal was not loaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        watcher.await.unwrap();
    }
}
