//! The floors for the webhook load benchmark: the least any admission webhook must do over
//! the same stack (axum + axum-server + rustls with ring, TLS 1.2+, tokio). gracegate's
//! throughput is reported as a ratio to them, measured in the same run.
//!
//! * `bare` (the default): TLS and HTTP, no work. The body is read whole and the answer is
//!   `allowed: true` with the request's uid, found by a byte search, not a JSON parse.
//! * `json`: the body parsed into a `serde_json::Value` for the uid, as a webhook that reads
//!   its reviews generically does (the floor of the first releases).
//!
//!     floor LISTEN_ADDR CERT_PEM KEY_PEM [bare|json]

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

/// The uid of a review, found without parsing it: the first `"uid":"…"` is the request's
/// (the API server writes `request.uid` before the object, whose own uid a CREATE lacks).
fn uid(body: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"uid\":\"";
    let Some(at) = body.windows(KEY.len()).position(|w| w == KEY) else {
        return b"";
    };
    let rest = &body[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(0);
    &rest[..end]
}

async fn bare(body: Bytes) -> Response {
    let uid = uid(&body);
    let mut answer = Vec::with_capacity(112 + uid.len());
    answer.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":""#,
    );
    answer.extend_from_slice(uid);
    answer.extend_from_slice(br#"","allowed":true}}"#);
    ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

async fn parsed(body: Bytes) -> Response {
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
    let (listen, cert, key, mode) = match args.as_slice() {
        [_, listen, cert, key] => (listen, cert, key, "bare"),
        [_, listen, cert, key, mode] if mode == "bare" || mode == "json" => {
            (listen, cert, key, mode.as_str())
        }
        _ => {
            eprintln!("usage: floor LISTEN_ADDR CERT_PEM KEY_PEM [bare|json]");
            std::process::exit(2);
        }
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
    let route = if mode == "json" {
        post(parsed)
    } else {
        post(bare)
    };
    let app = Router::new()
        .route("/mutate", route)
        .layer(DefaultBodyLimit::max(3 * 1024 * 1024));
    eprintln!("floor ({mode}) serving on https://{listen}/mutate");
    axum_server::bind_rustls(
        listen.parse::<std::net::SocketAddr>().unwrap(),
        RustlsConfig::from_config(Arc::new(config)),
    )
    .serve(app.into_make_service())
    .await
    .unwrap();
}
