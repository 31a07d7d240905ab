//! `wss://`: TLS on accepted connections, through rustls (feature `tls`).
//!
//! The TLS handshake runs in the connection's own task, bounded by the
//! request-head timeout, so a client that stalls it holds up nobody else.

use std::io;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A rustls server configuration, as taken by
/// [`Application::listen_tls`](crate::Application::listen_tls).
pub type TlsConfig = Arc<rustls::ServerConfig>;

/// Builds a server configuration from a PEM certificate chain and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1), advertising `http/1.1` over ALPN.
///
/// ```no_run
/// # fn load() -> std::io::Result<()> {
/// let config = squall::tls_config_from_pem(
///     &std::fs::read("cert.pem")?,
///     &std::fs::read("key.pem")?,
/// )?;
/// # Ok(()) }
/// ```
pub fn tls_config_from_pem(cert_chain: &[u8], private_key: &[u8]) -> io::Result<TlsConfig> {
    let invalid = |what: &str, error: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {error}"))
    };
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate chain", &e))?;
    if certs.is_empty() {
        return Err(invalid("certificate chain", &"no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(private_key).map_err(|e| invalid("private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
