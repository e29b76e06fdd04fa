//! TLS for the listener (rustls): PEM certificate and key from files, ALPN for HTTP/2 and
//! HTTP/1.1, TLS 1.2 and 1.3 only. The certificate is reloaded on SIGHUP and when its files
//! change, without dropping open connections: each handshake asks the resolver for the
//! current certificate, and connections already up keep the one they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {path}: {message}")]
    Certificate { path: PathBuf, message: String },
    #[error("cannot read the private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Hands each handshake the current certificate.
#[derive(Debug)]
pub struct CertificateStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The certificate handshakes get now; replaced whole on reload.
    current: RwLock<Arc<CertifiedKey>>,
}

fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |message: String| TlsError::Certificate {
        path: cert_path.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        message: e.to_string(),
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        message: e.to_string(),
    })?;
    Ok(CertifiedKey::new(chain, signing_key))
}

impl CertificateStore {
    pub fn open(cert_path: PathBuf, key_path: PathBuf) -> Result<Arc<Self>, TlsError> {
        let current = load(&cert_path, &key_path)?;
        Ok(Arc::new(CertificateStore {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Loads the files again; on failure the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert_path, &self.key_path)?;
        *self.current.write().expect("certificate lock") = Arc::new(fresh);
        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
        Ok(())
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let cert = std::fs::metadata(&self.cert_path).and_then(|m| m.modified()).ok()?;
        let key = std::fs::metadata(&self.key_path).and_then(|m| m.modified()).ok()?;
        Some((cert, key))
    }

    /// Reloads on SIGHUP and when the files change, until `stop` fires.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "no SIGHUP handler; certificate reloads on file change only");
                None
            }
        };
        let mut seen = self.modified();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hup => {}
                _ = tick.tick() => {
                    let now = self.modified();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                }
            }
            if let Err(error) = self.reload() {
                tracing::warn!(%error, "keeping the previous TLS certificate");
            }
        }
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate lock").clone())
    }
}

/// The rustls server configuration: TLS 1.2+, ALPN h2 then http/1.1.
pub fn server_config(store: Arc<CertificateStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
