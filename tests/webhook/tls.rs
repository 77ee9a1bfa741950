//! A real HTTPS server on 127.0.0.1 with an rcgen certificate, a client that trusts only that
//! CA, certificate rotation with no failed request, and graceful shutdown.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gracegate::certs::{self, Bundle};
use gracegate::inject::Settings;
use gracegate::webhook::server::{Options, Running, start};
use gracegate::webhook::tls::CertFiles;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::{Answer, context, review, review_bytes};

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client (with its own connection pool) that trusts only the given CAs.
fn client(cas: &[&Bundle]) -> HttpsClient {
    let connector = crate::common::https_connector(crate::common::roots_of(cas));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn post_review(client: &HttpsClient, running: &Running) -> Result<(u16, Vec<u8>), String> {
    let request = hyper::Request::post(format!("https://127.0.0.1:{}/mutate", running.addr.port()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review_bytes(
            "create-deployment-pod.json",
        ))))
        .unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}

async fn get_admin(running: &Running, path: &str) -> u16 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("http://127.0.0.1:{}{path}", running.admin_addr.port());
    client
        .get(uri.parse().unwrap())
        .await
        .unwrap()
        .status()
        .as_u16()
}

pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gracegate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Both ports on free loopback ports, the certificate in `dir`, checked every 50 ms.
fn options(dir: &Path) -> Options {
    Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        cert: CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        cert_reload: Duration::from_millis(50),
        timeouts: Default::default(),
        limits: Default::default(),
    }
}

pub(crate) async fn serve(dir: &Path) -> Running {
    let mut context = context(Settings::default());
    context.health = Arc::default(); // the server itself must mark the certificate loaded
    start(options(dir), context).await.unwrap()
}

#[tokio::test]
async fn serves_reviews_over_tls_and_picks_up_a_new_certificate() {
    let dir = temp_dir("tls");
    let first = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    certs::write(&first, &dir).unwrap();
    let running = serve(&dir).await;
    assert_eq!(get_admin(&running, "/readyz").await, 200);
    assert_eq!(get_admin(&running, "/livez").await, 200);

    let (status, body) = post_review(&client(&[&first]), &running).await.unwrap();
    assert_eq!(status, 200);
    let answer = Answer::parse(&review("create-deployment-pod.json"), &body);
    assert!(answer.patch().is_some());

    // A client that trusts another CA is refused: the server really presents `first`.
    let stranger = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    assert!(post_review(&client(&[&stranger]), &running).await.is_err());

    // Rotate, while a client that trusts both CAs keeps posting: no request may fail.
    let second = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let steady = {
        let (failures, done) = (failures.clone(), done.clone());
        let both = client(&[&first, &second]);
        let addr = running.addr;
        tokio::spawn(async move {
            let mut sent = 0;
            while !done.load(Ordering::Acquire) {
                let request =
                    hyper::Request::post(format!("https://127.0.0.1:{}/mutate", addr.port()))
                        .body(Full::new(Bytes::from(review_bytes(
                            "create-deployment-pod.json",
                        ))))
                        .unwrap();
                match both.request(request).await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sent += 1;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    certs::write(&second, &dir).unwrap();

    // A new connection sees the new certificate within a few reload periods.
    let mut rotated = false;
    for _ in 0..100 {
        if post_review(&client(&[&second]), &running).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rotated, "the new certificate was never served");
    assert!(
        post_review(&client(&[&first]), &running).await.is_err(),
        "old certificate still served"
    );

    done.store(true, Ordering::Release);
    let sent = steady.await.unwrap();
    assert!(sent > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during rotation"
    );

    running.shutdown(Duration::ZERO).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_old_one() {
    let dir = temp_dir("broken");
    let first = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    certs::write(&first, &dir).unwrap();
    let running = serve(&dir).await;
    // A key that does not belong to the certificate, as seen mid-rotation.
    let other = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    std::fs::write(dir.join("tls.key"), &other.key).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = post_review(&client(&[&first]), &running).await.unwrap();
    assert_eq!(status, 200);
    running.shutdown(Duration::ZERO).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn missing_certificate_stops_start_up() {
    let dir = temp_dir("missing");
    let result = start(options(&dir), context(Settings::default())).await;
    let error = result.err().expect("start-up must fail").to_string();
    assert!(error.contains("tls.crt"), "{error}");
}

#[tokio::test]
async fn shutdown_turns_readiness_off_first_and_finishes_in_flight_work() {
    let dir = temp_dir("shutdown");
    let bundle = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    certs::write(&bundle, &dir).unwrap();
    let running = serve(&dir).await;
    let (addr, admin) = (running.addr, running.admin_addr);
    let context = running.context.clone();
    let stopping = tokio::spawn(running.shutdown(Duration::from_millis(500)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not ready any more, but still serving during the delay.
    assert!(!context.is_ready());
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let readyz = client
        .get(format!("http://{admin}/readyz").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let tls = self::client(&[&bundle]);
    let request = hyper::Request::post(format!("https://127.0.0.1:{}/mutate", addr.port()))
        .body(Full::new(Bytes::from(review_bytes(
            "create-deployment-pod.json",
        ))))
        .unwrap();
    assert_eq!(tls.request(request).await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .unwrap()
        .unwrap();
    // The port is closed afterwards.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    std::fs::remove_dir_all(dir).unwrap();
}
