//! First review on a fresh connection, with and without `TCP_NODELAY` on the server's socket.
//!
//! Both servers are gracegate's router behind axum-server + rustls on 127.0.0.1, in this
//! process; they differ only in the acceptor: `DefaultAcceptor` (what gracegate had: Nagle
//! on) or `webhook::conn::TcpAcceptor` (`TCP_NODELAY`, what it has now). The client opens a
//! new TCP connection for every sample (`TCP_NODELAY` on, as Go's and curl's are), does the
//! TLS handshake offering h2 or http/1.1, and posts the small recorded review once; measured:
//! the review's round trip after the handshake, and connect → answer. Variants alternate.
//!
//!     cargo bench --bench first_review [-- SAMPLES]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use gracegate::certs;
use gracegate::cluster::{Cluster, Objects};
use gracegate::inject::Settings;
use gracegate::metrics::Metrics;
use gracegate::webhook::conn::{ConnectionCap, Limits, TcpAcceptor};
use gracegate::webhook::{Context, Health, router, tls::server_config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

fn context() -> Context {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cluster");
    let health = Health::default();
    health
        .tls_loaded
        .store(true, std::sync::atomic::Ordering::Release);
    let metrics = Arc::new(Metrics::default());
    Context {
        settings: Arc::new(Settings::default()),
        cluster: Cluster::from_objects(Objects::load_dir(std::path::Path::new(dir)).unwrap()),
        waits: Arc::new(gracegate::waits::Board::new(
            gracegate::waits::DEFAULT_MAX_WAITS,
            metrics.clone(),
        )),
        metrics,
        health: Arc::new(health),
    }
}

async fn serve(config: RustlsConfig, nodelay: bool) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(context()).into_make_service();
    let server = axum_server::from_tcp(listener).unwrap();
    if nodelay {
        let tls = RustlsAcceptor::new(config).acceptor(TcpAcceptor {
            idle: Duration::from_secs(60),
            cap: ConnectionCap::new(Limits::default().max_connections, None),
        });
        tokio::spawn(server.acceptor(tls).serve(app));
    } else {
        let tls = RustlsAcceptor::new(config).acceptor(DefaultAcceptor);
        tokio::spawn(server.acceptor(tls).serve(app));
    }
    addr
}

/// (review after the handshake, connect → answer)
async fn sample(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    h2: bool,
    body: &Bytes,
) -> (Duration, Duration) {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut config = (**client).clone();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let request = hyper::Request::post("/mutate")
        .header("host", "gracegate")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    let io = TokioIo::new(tls);
    let review_start = Instant::now();
    let response = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(request).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(request).await.unwrap()
    };
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    (review_start.elapsed(), start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    rustls::crypto::ring::default_provider()
        .install_default()
        .unwrap();
    let samples: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let bundle = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    let config = RustlsConfig::from_config(Arc::new(
        server_config(bundle.cert.as_bytes(), bundle.key.as_bytes()).unwrap(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(bundle.ca_cert.as_bytes()).unwrap())
        .unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let before = serve(config.clone(), false).await;
    let after = serve(config, true).await;
    let body = Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/admission/create-deployment-pod.json"
        ))
        .unwrap(),
    );
    println!(
        "| protocol | server socket | samples | review p50 | review p99 | connect → answer p50 | connect → answer p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for h2 in [false, true] {
        let mut results = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        for _ in 0..samples {
            for (i, addr) in [before, after].into_iter().enumerate() {
                let (review, total) = sample(addr, &client, h2, &body).await;
                results[i].0.push(review);
                results[i].1.push(total);
            }
        }
        for (i, name) in ["Nagle (before)", "TCP_NODELAY (after)"]
            .into_iter()
            .enumerate()
        {
            let (review, total) = &mut results[i];
            review.sort();
            total.sort();
            println!(
                "| {} | {name} | {samples} | {} | {} | {} | {} |",
                if h2 { "HTTP/2" } else { "HTTP/1.1" },
                ms(percentile(review, 0.5)),
                ms(percentile(review, 0.99)),
                ms(percentile(total, 0.5)),
                ms(percentile(total, 0.99)),
            );
        }
    }
}
