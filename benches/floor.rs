//! The floor for the webhook load benchmark: the least any admission webhook must do over
//! the same stack (axum + axum-server + rustls with ring, TLS 1.2+, tokio). It parses the
//! body as JSON and answers `allowed: true` with the request's uid. gracegate's throughput is
//! reported as a ratio to this, measured in the same run.
//!
//!     floor LISTEN_ADDR CERT_PEM KEY_PEM

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

async fn mutate(body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let uid = review["request"]["uid"].as_str().unwrap_or_default();
    axum::Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": { "uid": uid, "allowed": true },
    }))
    .into_response()
}

#[tokio::main]
async fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("provider");
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, cert, key] = args.as_slice() else {
        eprintln!("usage: floor LISTEN_ADDR CERT_PEM KEY_PEM");
        std::process::exit(2);
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        rustls::pki_types::CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect(),
        rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap(),
    )
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let app = Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(3 * 1024 * 1024));
    eprintln!("floor serving on https://{listen}/mutate");
    axum_server::bind_rustls(
        listen.parse::<std::net::SocketAddr>().unwrap(),
        RustlsConfig::from_config(Arc::new(config)),
    )
    .serve(app.into_make_service())
    .await
    .unwrap();
}
