//! The TLS client: rustls with ring, TLS 1.2 and 1.3, trusting only the CA bundle the webhook
//! handed over.
//!
//! No system roots: the application image's CA store (if it has one) says nothing about
//! gracegate's in-cluster certificate, and trusting it would let any publicly trusted
//! certificate for the URL's name release pods.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

#[derive(Clone, Debug, PartialEq)]
pub enum CaError {
    /// The PEM does not parse (a broken line, bad base64).
    Pem(String),
    /// No CERTIFICATE block, or none that is a usable trust anchor.
    NoCertificate,
    /// The ring provider refused TLS 1.2/1.3 (cannot happen with this build's features).
    Config(String),
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaError::Pem(why) => write!(f, "the CA bundle is not valid PEM: {why}"),
            CaError::NoCertificate => f.write_str("the CA bundle holds no usable CA certificate"),
            CaError::Config(why) => write!(f, "TLS setup failed: {why}"),
        }
    }
}

/// The roots of a PEM bundle: every CERTIFICATE block that parses as a trust anchor; other
/// blocks (a key pasted by mistake) are skipped. At least one is needed.
pub fn roots(pem: &[u8]) -> Result<RootCertStore, CaError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Pem(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(CaError::NoCertificate);
    }
    Ok(roots)
}

/// A client config for gracegate's listener: ALPN http/1.1 only (the waiter speaks HTTP/1.1;
/// gracegate's listener also offers h2, which a client that does not offer it never gets).
pub fn client_config(pem: &[u8]) -> Result<Arc<ClientConfig>, CaError> {
    let roots = roots(pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| CaError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_bundle_of_several_cas() {
        let bundle = format!("{}\n{}", ca_pem(), ca_pem());
        assert_eq!(roots(bundle.as_bytes()).unwrap().len(), 2);
        assert!(client_config(bundle.as_bytes()).is_ok());
    }

    #[test]
    fn bad_bundles_are_errors() {
        assert_eq!(roots(b"").unwrap_err(), CaError::NoCertificate);
        assert_eq!(
            roots(b"not pem at all").unwrap_err(),
            CaError::NoCertificate
        );
        let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert_eq!(
            roots(key_only.as_bytes()).unwrap_err(),
            CaError::NoCertificate
        );
        let not_a_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            roots(not_a_cert.as_bytes()).unwrap_err(),
            CaError::NoCertificate
        );
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(roots(broken.as_bytes()), Err(CaError::Pem(_))));
        let unterminated = ca_pem().replace("-----END CERTIFICATE-----", "");
        assert!(roots(unterminated.as_bytes()).is_err());
    }
}
