//! Static-certificate rotation without a gap, as a cluster sees it: the API server trusts
//! whatever the caBundle holds at that moment (applied at once), while a replica sees a new
//! Secret only after the kubelet syncs it (here 300 ms later) plus its reload interval.
//! A client that trusts exactly the current `ca-bundle` file keeps posting reviews on fresh
//! connections through serving-certificate and CA rotations: none may fail. The old way (a
//! new CA on every run) is run last, to show the client notices a gap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use gracegate::certs::{self, CaStep};
use gracegate::inject::Settings;
use gracegate::webhook::server::{Options, start};
use gracegate::webhook::tls::CertFiles;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::common::{context, review_bytes};

const KUBELET_SYNC: Duration = Duration::from_millis(300);

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gracegate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The kubelet updating the Secret volume: the serving pair, as one atomic swap each.
fn sync_secret(out: &Path, secret: &Path) {
    for name in ["tls.key", "tls.crt"] {
        let tmp = secret.join(format!("{name}.new"));
        std::fs::copy(out.join(name), &tmp).unwrap();
        std::fs::rename(&tmp, secret.join(name)).unwrap();
    }
}

/// A review posted on a new connection by a client trusting exactly `ca-bundle` now.
async fn post_trusting_bundle(out: &Path, port: u16) -> Result<(), String> {
    let encoded = std::fs::read_to_string(out.join("ca-bundle")).map_err(|e| e.to_string())?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(ca.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let connector = crate::common::https_connector(roots);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::post(format!("https://127.0.0.1:{port}/mutate"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review_bytes(
            "create-deployment-pod.json",
        ))))
        .unwrap();
    match client.request(request).await {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(format!("{e:?}")),
    }
}

#[tokio::test]
async fn rotating_static_certificates_leaves_no_gap() {
    let out = temp_dir("rotation-out"); // what `gracegate certs --out` writes
    let secret = temp_dir("rotation-secret"); // what the replica's volume holds
    let issue = |step| certs::issue(&out, "gracegate", "gracegate-system", 1, step).unwrap();
    issue(CaStep::Reuse);
    sync_secret(&out, &secret);
    let options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        cert: CertFiles {
            cert: secret.join("tls.crt"),
            key: secret.join("tls.key"),
        },
        cert_reload: Duration::from_millis(100),
        timeouts: Default::default(),
        limits: Default::default(),
    };
    let running = start(options, context(Settings::default())).await.unwrap();
    let port = running.addr.port();

    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (out, sent, failed, stop) = (out.clone(), sent.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Acquire) {
                if let Err(e) = post_trusting_bundle(&out, port).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                    errors.push(e);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            errors
        })
    };
    // The kubelet's sync, then a few reload intervals.
    let roll_out = || async {
        tokio::time::sleep(KUBELET_SYNC).await;
        sync_secret(&out, &secret);
        tokio::time::sleep(Duration::from_millis(400)).await;
    };

    // A new serving certificate from the same CA: the caBundle never changes.
    issue(CaStep::Reuse);
    roll_out().await;
    // A CA rotation in the documented order: bundle with both, serving certificate, drop.
    issue(CaStep::NewCa);
    tokio::time::sleep(KUBELET_SYNC).await; // the webhook configuration applied
    issue(CaStep::Reuse);
    roll_out().await;
    issue(CaStep::DropPreviousCa);
    tokio::time::sleep(KUBELET_SYNC).await;
    let before_old_way = sent.load(Ordering::Relaxed);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "rotation opened a gap");

    // The old way: a new CA and its certificate at once; the API server trusts only the new CA
    // while the replica still serves the old certificate until the kubelet syncs.
    certs::write(
        &certs::generate("gracegate", "gracegate-system", 1).unwrap(),
        &out,
    )
    .unwrap();
    roll_out().await;
    stop.store(true, Ordering::Release);
    let errors = client.await.unwrap();
    let sent = sent.load(Ordering::Relaxed);
    assert!(before_old_way > 20, "only {before_old_way} reviews sent");
    assert!(
        failed.load(Ordering::Relaxed) > 0,
        "the client did not notice the old way's gap ({sent} sent)"
    );
    assert!(
        errors
            .iter()
            .all(|e| e.contains("Certificate") || e.contains("certificate")),
        "{errors:?}"
    );

    running.shutdown(Duration::ZERO).await;
    std::fs::remove_dir_all(out).unwrap();
    std::fs::remove_dir_all(secret).unwrap();
}
