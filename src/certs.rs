//! `gracegate certs`: a CA and a serving certificate for the webhook, with the `caBundle` that
//! the MutatingWebhookConfiguration needs. For clusters without cert-manager, and for local runs.

use std::path::Path;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::{Error, Result};

/// How long the CA is valid: long, since rotating it means re-registering the webhook.
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// PEM-encoded CA and serving certificate.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

impl Bundle {
    /// `caBundle` for a webhook configuration: the CA's PEM, base64-encoded on one line.
    pub fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_cert)
    }
}

/// The names the serving certificate is valid for: the in-cluster Service names, and
/// loopback for local runs.
pub fn subject_alt_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "127.0.0.1".to_string(),
        "localhost".to_string(),
    ]
}

/// A fresh ECDSA P-256 CA, and a serving certificate it signs, valid for `valid_days`.
pub fn generate(service: &str, namespace: &str, valid_days: i64) -> Result<Bundle> {
    let now = OffsetDateTime::now_utc();
    // Tolerate a little clock skew between this machine and the API server.
    let not_before = now - Duration::minutes(5);

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("gracegate CA for {service}.{namespace}"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(CA_VALIDITY_DAYS.max(valid_days));
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let names = subject_alt_names(service, namespace);
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[0].clone());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = not_before;
    leaf.not_after = now + Duration::days(valid_days);
    let leaf_key = KeyPair::generate()?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: leaf_cert.pem(),
        key: leaf_key.serialize_pem(),
    })
}

/// Write `ca.crt`, `ca.key`, `tls.crt`, `tls.key` and `ca-bundle` into `dir` (created if
/// missing). Keys are readable by the owner only.
pub fn write(bundle: &Bundle, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let files = [
        ("ca.crt", bundle.ca_cert.as_str(), false),
        ("ca.key", bundle.ca_key.as_str(), true),
        ("tls.crt", bundle.cert.as_str(), false),
        ("tls.key", bundle.key.as_str(), true),
    ];
    for (name, content, secret) in files {
        write_file(&dir.join(name), content.as_bytes(), secret)?;
    }
    write_file(&dir.join("ca-bundle"), bundle.ca_bundle().as_bytes(), false)
}

/// Write through a temporary file and a rename, so a server re-reading the file never sees
/// half of it.
fn write_file(path: &Path, content: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(content).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_decodes_to_the_ca() {
        let bundle = generate("gracegate", "gracegate-system", 30).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle.ca_bundle())
            .unwrap();
        assert_eq!(decoded, bundle.ca_cert.as_bytes());
        assert!(bundle.key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn writes_every_file_with_private_keys_private() {
        let dir = std::env::temp_dir().join(format!("gracegate-certs-{}", std::process::id()));
        let bundle = generate("svc", "ns", 30).unwrap();
        write(&bundle, &dir).unwrap();
        for name in ["ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle"] {
            assert!(dir.join(name).is_file(), "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("tls.crt")).unwrap(),
            bundle.cert
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("tls.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
