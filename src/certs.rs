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
    let (ca, ca_key) = ca_params(
        service,
        namespace,
        CA_VALIDITY_DAYS.max(valid_days),
        OffsetDateTime::now_utc(),
    );
    let ca_key = ca_key?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let (cert, key) = leaf(
        &Issuer::from_params(&ca, &ca_key),
        service,
        namespace,
        valid_days,
    )?;
    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert,
        key,
    })
}

/// The CA's parameters (its subject is what a serving certificate names as issuer) and a
/// new key for it.
fn ca_params(
    service: &str,
    namespace: &str,
    valid_days: i64,
    now: OffsetDateTime,
) -> (CertificateParams, Result<KeyPair>) {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("gracegate CA for {service}.{namespace}"),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // Tolerate a little clock skew between this machine and the API server.
    ca.not_before = now - Duration::minutes(5);
    ca.not_after = now + Duration::days(valid_days);
    (ca, KeyPair::generate().map_err(Error::from))
}

/// A serving certificate for the Service's names, PEM certificate and key.
fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    service: &str,
    namespace: &str,
    valid_days: i64,
) -> Result<(String, String)> {
    let now = OffsetDateTime::now_utc();
    let names = subject_alt_names(service, namespace);
    let mut leaf = CertificateParams::new(names.clone())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[0].clone());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - Duration::minutes(5);
    leaf.not_after = now + Duration::days(valid_days);
    let leaf_key = KeyPair::generate()?;
    let cert = leaf.signed_by(&leaf_key, issuer)?;
    Ok((cert.pem(), leaf_key.serialize_pem()))
}

/// What `gracegate certs` does with the CA already in its output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaStep {
    /// Keep the CA (make one if there is none) and sign a new serving certificate with it.
    /// The caBundle does not change, so re-applying the Secret opens no window.
    Reuse,
    /// Start a CA rotation: a new CA, the old one kept as `ca-previous.crt`, a caBundle that
    /// trusts both, and the serving certificate left as it is (still valid under the bundle).
    NewCa,
    /// Finish it: the caBundle trusts the current CA only. Refused while `tls.crt` is not
    /// signed by the current CA.
    DropPreviousCa,
}

/// The previous CA during a CA rotation, still in the caBundle.
pub const PREVIOUS_CA: &str = "ca-previous.crt";

/// `gracegate certs`: apply `step` to the files in `dir`; returns what to do next.
pub fn issue(
    dir: &Path,
    service: &str,
    namespace: &str,
    valid_days: i64,
    step: CaStep,
) -> Result<String> {
    let read = |name: &str| -> Result<Option<String>> {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(dir.join(name), e)),
        }
    };
    let ca = match (read("ca.crt")?, read("ca.key")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(Error::Settings(format!(
                "{} holds only one of ca.crt and ca.key; restore the other or remove both",
                dir.display()
            )));
        }
    };
    let previous = read(PREVIOUS_CA)?;
    let names = subject_alt_names(service, namespace).join(", ");
    match (step, ca) {
        (_, None) => {
            let bundle = generate(service, namespace, valid_days)?;
            write(&bundle, dir)?;
            remove(&dir.join(PREVIOUS_CA))?;
            Ok(format!(
                "made a new CA and a serving certificate for {names} in {}: apply the Secret \
                 (tls.crt, tls.key) and the webhook configuration (ca-bundle)",
                dir.display()
            ))
        }
        (CaStep::Reuse, Some((ca_cert, ca_key))) => {
            let (cert, key) = sign_with(&ca_cert, &ca_key, service, namespace, valid_days)?;
            write_file(&dir.join("tls.crt"), cert.as_bytes(), false)?;
            write_file(&dir.join("tls.key"), key.as_bytes(), true)?;
            write_bundle(dir, &ca_cert, previous.as_deref())?;
            Ok(format!(
                "signed a new serving certificate for {names} with the CA in {}: apply the Secret \
                 (tls.crt, tls.key); the caBundle is unchanged{}",
                dir.display(),
                if previous.is_some() {
                    "; once every replica serves it, finish the CA rotation with --drop-previous-ca"
                } else {
                    ""
                }
            ))
        }
        (CaStep::NewCa, Some((old_cert, _))) => {
            if previous.is_some() {
                return Err(Error::Settings(format!(
                    "a CA rotation is already under way ({} exists): finish it with \
                     `gracegate certs` and then --drop-previous-ca",
                    dir.join(PREVIOUS_CA).display()
                )));
            }
            let bundle = generate(service, namespace, valid_days)?;
            write_file(&dir.join(PREVIOUS_CA), old_cert.as_bytes(), false)?;
            write_file(&dir.join("ca.key"), bundle.ca_key.as_bytes(), true)?;
            write_file(&dir.join("ca.crt"), bundle.ca_cert.as_bytes(), false)?;
            write_bundle(dir, &bundle.ca_cert, Some(&old_cert))?;
            Ok(format!(
                "started a CA rotation in {}: 1. apply the webhook configuration (its caBundle \
                 now trusts the old and the new CA; the serving certificate is unchanged); \
                 2. run `gracegate certs` and apply the Secret; 3. once every replica serves the \
                 new certificate, run `gracegate certs --drop-previous-ca` and apply the webhook \
                 configuration again",
                dir.display()
            ))
        }
        (CaStep::DropPreviousCa, Some((ca_cert, _))) => {
            let serving = read("tls.crt")?.unwrap_or_default();
            if !signed_by(&serving, &ca_cert) {
                return Err(Error::Settings(format!(
                    "{} is not signed by the current CA ({}): run `gracegate certs` and roll the \
                     Secret out first, or the webhook would not be trusted",
                    dir.join("tls.crt").display(),
                    dir.join("ca.crt").display()
                )));
            }
            write_bundle(dir, &ca_cert, None)?;
            remove(&dir.join(PREVIOUS_CA))?;
            Ok(format!(
                "the caBundle in {} trusts the current CA only: apply the webhook configuration",
                dir.display()
            ))
        }
    }
}

/// A serving certificate for `service.namespace` signed by the CA in `ca_cert`/`ca_key`.
fn sign_with(
    ca_cert: &str,
    ca_key: &str,
    service: &str,
    namespace: &str,
    valid_days: i64,
) -> Result<(String, String)> {
    let key = KeyPair::from_pem(ca_key)?;
    // rcgen reads no certificate back without x509-parser; the CA's parameters are rebuilt
    // as `generate` made them, and the result is checked against ca.crt below.
    let (ca, _) = ca_params(
        service,
        namespace,
        CA_VALIDITY_DAYS,
        OffsetDateTime::now_utc(),
    );
    let (cert, leaf_key) = leaf(
        &Issuer::from_params(&ca, &key),
        service,
        namespace,
        valid_days,
    )?;
    if !signed_by(&cert, ca_cert) {
        return Err(Error::Settings(format!(
            "the CA in ca.crt/ca.key was not made by `gracegate certs` for {service}.{namespace}, \
             or its key does not match: use --new-ca"
        )));
    }
    Ok((cert, leaf_key))
}

/// Whether the PEM certificate `cert` chains to the PEM CA `ca` (and is valid now).
pub fn signed_by(cert: &str, ca: &str) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    let (Ok(cert), Ok(ca)) = (
        CertificateDer::from_pem_slice(cert.as_bytes()),
        CertificateDer::from_pem_slice(ca.as_bytes()),
    ) else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca).is_err() {
        return false;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build()
    else {
        return false;
    };
    // `localhost` is in every certificate `gracegate certs` makes.
    verifier
        .verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from("localhost").expect("a valid name"),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

/// `ca-bundle`: the current CA, and the previous one during a CA rotation.
fn write_bundle(dir: &Path, ca: &str, previous: Option<&str>) -> Result<()> {
    let pem = format!("{ca}{}", previous.unwrap_or_default());
    let encoded = base64::engine::general_purpose::STANDARD.encode(pem);
    write_file(&dir.join("ca-bundle"), encoded.as_bytes(), false)
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
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

    fn bundle_cas(dir: &Path) -> Vec<String> {
        let encoded = std::fs::read_to_string(dir.join("ca-bundle")).unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let pem = String::from_utf8(pem).unwrap();
        pem.split_inclusive("-----END CERTIFICATE-----\n")
            .map(String::from)
            .collect()
    }

    fn file(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn rotation_keeps_the_ca_until_asked_and_then_trusts_both() {
        let dir = std::env::temp_dir().join(format!("gracegate-issue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let issue = |step| issue(&dir, "svc", "ns", 30, step);

        issue(CaStep::Reuse).unwrap(); // nothing there: a CA and a serving certificate
        let ca = file(&dir, "ca.crt");
        let first = file(&dir, "tls.crt");
        assert!(signed_by(&first, &ca));
        assert_eq!(bundle_cas(&dir), vec![ca.clone()]);

        // Re-running keeps the CA: a new serving certificate, the same caBundle.
        issue(CaStep::Reuse).unwrap();
        assert_eq!(file(&dir, "ca.crt"), ca);
        let second = file(&dir, "tls.crt");
        assert_ne!(second, first);
        assert!(signed_by(&second, &ca), "signed by the kept CA");
        assert_eq!(bundle_cas(&dir), vec![ca.clone()]);

        // Finishing a rotation that was never started changes nothing.
        issue(CaStep::DropPreviousCa).unwrap();
        assert_eq!(bundle_cas(&dir), vec![ca.clone()]);

        // A CA rotation: both CAs trusted, the serving certificate untouched.
        issue(CaStep::NewCa).unwrap();
        let new_ca = file(&dir, "ca.crt");
        assert_ne!(new_ca, ca);
        assert_eq!(file(&dir, "tls.crt"), second);
        assert_eq!(bundle_cas(&dir), vec![new_ca.clone(), ca.clone()]);
        assert!(issue(CaStep::NewCa).is_err(), "one rotation at a time");
        let refused = issue(CaStep::DropPreviousCa).unwrap_err().to_string();
        assert!(
            refused.contains("not signed by the current CA"),
            "{refused}"
        );

        issue(CaStep::Reuse).unwrap();
        assert!(signed_by(&file(&dir, "tls.crt"), &new_ca));
        assert_eq!(bundle_cas(&dir).len(), 2, "still both until dropped");
        issue(CaStep::DropPreviousCa).unwrap();
        assert_eq!(bundle_cas(&dir), vec![new_ca]);
        assert!(!dir.join(PREVIOUS_CA).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_ca_made_for_another_service_is_refused() {
        let dir = std::env::temp_dir().join(format!("gracegate-foreign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        issue(&dir, "svc", "ns", 30, CaStep::Reuse).unwrap();
        let error = issue(&dir, "other", "ns", 30, CaStep::Reuse).unwrap_err();
        assert!(error.to_string().contains("--new-ca"), "{error}");
        std::fs::remove_file(dir.join("ca.key")).unwrap();
        let error = issue(&dir, "svc", "ns", 30, CaStep::Reuse).unwrap_err();
        assert!(error.to_string().contains("only one of"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
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
