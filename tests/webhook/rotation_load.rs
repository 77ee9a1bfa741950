//! Certificates under load: the serving certificate rotated 20 times while reviews arrive at
//! 500/s from a real TLS client: 50/s on new connections (a handshake each) and the rest on
//! connections kept alive across rotations. Not one review may fail. Loopback only, about 4 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gracegate::certs::{self, Bundle};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::common::{review, review_bytes};
use crate::tls::{serve, temp_dir};

const ROTATIONS: usize = 20;
/// Reviews per second, in all.
const RATE: u64 = 500;
/// Workers that each keep one connection alive.
const KEPT_ALIVE: u64 = 30;
/// Reviews per second on new connections: a handshake each, with whichever certificate is
/// current.
const FRESH_RATE: u64 = 50;
/// Time between one rotation being served and the next being written.
const BETWEEN_ROTATIONS: Duration = Duration::from_millis(120);

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client trusting only `cas`; `reuse: false` opens a connection for every request.
fn client(cas: &[&Bundle], reuse: bool) -> HttpsClient {
    let connector = crate::common::https_connector(crate::common::roots_of(cas));
    let mut builder = Client::builder(TokioExecutor::new());
    if !reuse {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(connector)
}

/// Post the recorded review; `Ok` only for a 200 answer to that review with its patch.
async fn post(client: &HttpsClient, url: &str, body: Bytes, uid: &Value) -> Result<(), String> {
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != 200 {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let answer: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let response = &answer["response"];
    if &response["uid"] != uid || response["allowed"] != true || response["patch"].is_null() {
        return Err(format!("wrong answer: {answer}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rotations_under_500_reviews_per_second_fail_none() {
    let dir = temp_dir("rotation-load");
    let bundles: Vec<Bundle> = (0..=ROTATIONS)
        .map(|_| certs::generate("gracegate", "gracegate-system", 1).unwrap())
        .collect();
    certs::write(&bundles[0], &dir).unwrap();
    let running = serve(&dir).await;
    let url = format!("https://127.0.0.1:{}/mutate", running.addr.port());
    let body = Bytes::from(review_bytes("create-deployment-pod.json"));
    let uid = review("create-deployment-pod.json")["request"]["uid"].clone();

    // The load: KEPT_ALIVE workers on one kept-alive connection each, and one that opens a
    // new connection (a new handshake) for every review; each sends at its share of RATE.
    let done = Arc::new(AtomicBool::new(false));
    let all: Vec<&Bundle> = bundles.iter().collect();
    let mut workers = JoinSet::new();
    for worker in 0..=KEPT_ALIVE {
        let fresh = worker == KEPT_ALIVE;
        let (rate, client) = if fresh {
            (FRESH_RATE, client(&all, false))
        } else {
            ((RATE - FRESH_RATE) / KEPT_ALIVE, client(&all, true))
        };
        let (done, url, body, uid) = (done.clone(), url.clone(), body.clone(), uid.clone());
        workers.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let (mut sent, mut failures) = (0u64, Vec::new());
            while !done.load(Ordering::Acquire) {
                tick.tick().await;
                let answered = tokio::time::timeout(
                    Duration::from_secs(5),
                    post(&client, &url, body.clone(), &uid),
                )
                .await
                .unwrap_or_else(|_| Err("no answer within 5 s".into()));
                if let Err(e) = answered {
                    failures.push(format!(
                        "{}: {e}",
                        if fresh {
                            "new connection"
                        } else {
                            "kept alive"
                        }
                    ));
                }
                sent += 1;
            }
            (sent, failures)
        });
    }
    let start = Instant::now();

    let began = Instant::now();
    for (i, bundle) in bundles.iter().enumerate().skip(1) {
        tokio::time::sleep(BETWEEN_ROTATIONS).await;
        certs::write(bundle, &dir).unwrap();
        // Served once a new connection that trusts only the new CA gets through.
        let only_new = client(&[bundle], false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = post(&only_new, &url, body.clone(), &uid).await {
            assert!(
                Instant::now() < deadline,
                "rotation {i} was never served: {e}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("rotation {i} served at {:?}", began.elapsed());
        let previous = client(&[&bundles[i - 1]], false);
        assert!(
            post(&previous, &url, body.clone(), &uid).await.is_err(),
            "rotation {i}: the previous certificate is still served"
        );
    }
    tokio::time::sleep(BETWEEN_ROTATIONS).await;
    done.store(true, Ordering::Release);
    let elapsed = start.elapsed();
    let (mut sent, mut failures) = (0, Vec::new());
    while let Some(worker) = workers.join_next().await {
        let (n, mut f) = worker.unwrap();
        sent += n;
        failures.append(&mut f);
    }

    let rate = sent as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{sent} reviews in {elapsed:.1?} ({rate:.0}/s), {ROTATIONS} rotations, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {sent} reviews failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // The workers are paced at RATE; a debug build on a busy 2-core machine gets 300–500/s
    // through (each review is a real TLS request and a real review). Far less means the load
    // did not happen.
    assert!(
        rate >= RATE as f64 * 0.5 && sent >= 1000,
        "only {sent} reviews in {elapsed:?}"
    );
    running.shutdown(Duration::ZERO).await;
    std::fs::remove_dir_all(dir).unwrap();
}
