use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use gracegate::cluster::{Cluster, Objects};
use gracegate::inject::Settings;
use gracegate::metrics::Metrics;
use gracegate::webhook::{Context, Health, router};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn review_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("admission").join(name)).unwrap()
}

pub fn review(name: &str) -> Value {
    serde_json::from_slice(&review_bytes(name)).unwrap()
}

/// The recorded 2048 game namespace: Namespace, Service, TargetGroupBinding, Ingress.
pub fn cluster() -> Cluster {
    Cluster::from_objects(Objects::load_dir(&fixtures().join("cluster")).unwrap())
}

pub fn context(settings: Settings) -> Context {
    let health = Health::default();
    health
        .tls_loaded
        .store(true, std::sync::atomic::Ordering::Release);
    let metrics = Arc::new(Metrics::default());
    Context {
        settings: Arc::new(settings),
        cluster: cluster(),
        waits: Arc::new(gracegate::waits::Board::new(
            gracegate::waits::DEFAULT_MAX_WAITS,
            metrics.clone(),
        )),
        metrics,
        health: Arc::new(health),
    }
}

/// POST a body to `/mutate` through the real router.
pub async fn post(context: &Context, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
    let request = Request::post("/mutate")
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let response = router(context.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

/// The response part of an answered review, checked against the request it answers.
pub struct Answer {
    pub response: Value,
}

impl Answer {
    pub fn parse(request: &Value, body: &[u8]) -> Answer {
        let review: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let response = review["response"].clone();
        assert_eq!(response["uid"], request["request"]["uid"], "uid echoed");
        assert_eq!(response["allowed"], true, "gracegate never denies");
        Answer { response }
    }

    /// The JSONPatch, if any.
    pub fn patch(&self) -> Option<json_patch::Patch> {
        let encoded = self.response.get("patch")?.as_str()?;
        assert_eq!(self.response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    pub fn warnings(&self) -> Vec<String> {
        self.response
            .get("warnings")
            .and_then(Value::as_array)
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

/// An HTTP/1.1 HTTPS connector (ring, TLS 1.2+) that trusts only `roots`: a client as
/// strict as the API server, which trusts only the webhook configuration's caBundle.
pub fn https_connector(
    roots: rustls::RootCertStore,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build()
}

/// A root store holding the CA of each bundle.
pub fn roots_of(cas: &[&gracegate::certs::Bundle]) -> rustls::RootCertStore {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(CertificateDer::from_pem_slice(ca.ca_cert.as_bytes()).unwrap())
            .unwrap();
    }
    roots
}
