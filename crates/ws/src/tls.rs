//! TLS for client connections (`wss://`, `https://`): rustls with the aws-lc-rs provider, the
//! system's trusted roots, and optionally extra CA certificates from a PEM file (on-premises
//! deployments often run their own CA). duet's servers speak plain HTTP; TLS is terminated in
//! front of them (an ingress, a Route, a reverse proxy).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("CA file {0} holds no certificate")]
    EmptyCaFile(PathBuf),
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
