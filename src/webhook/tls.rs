//! The serving certificate: loaded at start, re-read when the files change.
//!
//! A Secret volume rotates by swapping a `..data` symlink, so file-change notifications on the
//! two paths stop firing after the first swap. Re-reading both files on a timer and comparing
//! bytes is simple and always right. A new pair is only used once it parses and the key
//! matches the certificate, so a half-written pair never replaces a good one: handshakes keep
//! using the previous config until then.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::{Error, Result};

/// The certificate and key files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    async fn read(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let cert = tokio::fs::read(&self.cert)
            .await
            .map_err(|e| Error::io(&self.cert, e))?;
        let key = tokio::fs::read(&self.key)
            .await
            .map_err(|e| Error::io(&self.key, e))?;
        Ok((cert, key))
    }
}

/// A TLS 1.2+ server config (ring provider, ALPN h2 and http/1.1) for a PEM chain and key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("certificate: no PEM certificate found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::Tls(format!("key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        // Also checks that the key belongs to the certificate.
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The live TLS config and the files it came from.
#[derive(Clone)]
pub struct Certificate {
    files: CertFiles,
    config: RustlsConfig,
}

impl Certificate {
    /// Load the files once; an error here stops start-up.
    pub async fn load(files: CertFiles) -> Result<(Certificate, Loaded)> {
        let (cert, key) = files.read().await?;
        let config = RustlsConfig::from_config(Arc::new(server_config(&cert, &key)?));
        Ok((Certificate { files, config }, Loaded { cert, key }))
    }

    pub fn rustls_config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Re-read the files every `interval` and swap the config in when they change. Runs forever.
    pub async fn watch(self, mut loaded: Loaded, interval: Duration) {
        let mut rejected: Option<Loaded> = None;
        loop {
            tokio::time::sleep(interval).await;
            let (cert, key) = match self.files.read().await {
                Ok(pair) => pair,
                Err(error) => {
                    warn!(error = %crate::report(&error), "cannot read the certificate files; keeping the current certificate");
                    continue;
                }
            };
            let candidate = Loaded { cert, key };
            if candidate == loaded || rejected.as_ref() == Some(&candidate) {
                continue;
            }
            match server_config(&candidate.cert, &candidate.key) {
                Ok(config) => {
                    self.config.reload_from_config(Arc::new(config));
                    info!(cert = %self.files.cert.display(), "certificate reloaded");
                    loaded = candidate;
                    rejected = None;
                }
                Err(error) => {
                    // Often a rotation caught half way; the next tick sees the whole pair.
                    warn!(error = %crate::report(&error), "new certificate files are not usable yet; keeping the current certificate");
                    rejected = Some(candidate);
                }
            }
        }
    }
}

/// The bytes of the pair in use.
#[derive(Clone, PartialEq, Eq)]
pub struct Loaded {
    cert: Vec<u8>,
    key: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;

    #[test]
    fn accepts_a_matching_pair() {
        let b = certs::generate("svc", "ns", 1).unwrap();
        let config = server_config(b.cert.as_bytes(), b.key.as_bytes()).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let a = certs::generate("svc", "ns", 1).unwrap();
        let b = certs::generate("svc", "ns", 1).unwrap();
        let error = server_config(a.cert.as_bytes(), b.key.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("TLS"), "{error}");
    }

    #[test]
    fn refuses_garbage() {
        let b = certs::generate("svc", "ns", 1).unwrap();
        assert!(server_config(b"", b.key.as_bytes()).is_err());
        assert!(server_config(b.cert.as_bytes(), b"not a key").is_err());
        // Half a certificate: what a reader may see mid-rotation without atomic swaps.
        let half = &b.cert.as_bytes()[..b.cert.len() / 2];
        assert!(server_config(half, b.key.as_bytes()).is_err());
    }
}
