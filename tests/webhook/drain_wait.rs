//! The drain-wait route: what `gracegate-wait` is answered (through the router with
//! `oneshot`), and on the real HTTPS listener, that parked polls sit outside `/mutate`'s
//! request timeout and in-flight cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use gracegate::metrics::Metrics;
use gracegate::release::Verdict;
use gracegate::waits::{Board, WaitKey};
use gracegate::webhook::conn::{Limits, Timeouts};
use gracegate::webhook::drain_wait;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::review_bytes;
use crate::ports::{Server, get, post, send};

const UID: &str = "5f0c2a4e-8d1b-4c7a-9e3f-1a2b3c4d5e6f";
const PATH: &str = "/drain/v1/namespaces/shop/pods/web-7d9f8-x2x9z";

fn board(max: usize) -> Arc<Board> {
    Arc::new(Board::new(max, Arc::new(Metrics::default())))
}

fn key() -> WaitKey {
    WaitKey {
        namespace: "shop".into(),
        name: "web-7d9f8-x2x9z".into(),
        uid: UID.into(),
    }
}

async fn call(board: &Arc<Board>, method: &str, uri: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = drain_wait::router(board.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let ct = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return (status, Value::Null);
    }
    assert_eq!(ct.unwrap(), "application/json", "{status}");
    (status, serde_json::from_slice(&body).unwrap())
}

fn ask_uri(uid: &str, timeout: u64) -> String {
    format!("{PATH}?uid={uid}&timeout={timeout}")
}

#[tokio::test]
async fn a_replica_that_does_not_lead_answers_503_not_leader() {
    let board = board(8);
    let (status, body) = call(&board, "GET", &ask_uri(UID, 25)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({ "reason": "not-leader" }));
}

#[tokio::test]
async fn not_yet_then_released_with_the_askers_uid() {
    let board = board(8);
    board.lead();
    let (status, body) = call(&board, "GET", &ask_uri(UID, 0)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "release": false, "uid": UID, "reason": "no-decision-yet" })
    );

    // A parked poll is answered as soon as the leader releases the pod.
    let parked = {
        let board = board.clone();
        tokio::spawn(async move { call(&board, "GET", &ask_uri(UID, 25)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!parked.is_finished());
    assert!(board.publish(&key(), Verdict::Release("targets-gone")));
    let (status, body) = tokio::time::timeout(Duration::from_secs(1), parked)
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "release": true, "uid": UID, "reason": "targets-gone" })
    );
    // Another uid at the same name is another pod: not released by this one's release.
    let other = "0d3e4f5a-0000-4000-8000-000000000000";
    let (_, body) = call(&board, "GET", &ask_uri(other, 0)).await;
    assert_eq!(body["release"], false);
    assert_eq!(body["uid"], other);
}

#[tokio::test]
async fn the_poll_is_held_for_the_asked_timeout() {
    let board = board(8);
    board.lead();
    board.publish(&key(), Verdict::NotYet("targets-draining"));
    let started = Instant::now();
    let (status, body) = call(&board, "GET", &ask_uri(UID, 1)).await;
    let held = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["release"], false);
    assert!(held >= Duration::from_secs(1), "{held:?}");
}

#[tokio::test]
async fn losing_the_lease_answers_parked_polls_not_leader() {
    let board = board(8);
    board.lead();
    let parked = {
        let board = board.clone();
        tokio::spawn(async move { call(&board, "GET", &ask_uri(UID, 25)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    board.step_down();
    let (status, body) = tokio::time::timeout(Duration::from_secs(1), parked)
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({ "reason": "not-leader" }));
}

#[tokio::test]
async fn over_max_drain_waits_is_503_busy() {
    let board = board(1);
    board.lead();
    let parked = {
        let board = board.clone();
        tokio::spawn(async move { call(&board, "GET", &ask_uri(UID, 25)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = call(&board, "GET", &ask_uri(UID, 25)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({ "reason": "busy" }));
    parked.abort();
}

#[tokio::test]
async fn bad_asks_are_400_and_other_methods_405() {
    let board = board(8);
    board.lead();
    for uri in [
        format!("{PATH}?timeout=25"),
        format!("{PATH}?uid=&timeout=25"),
        format!("{PATH}?uid=a%2F..&timeout=25"),
        format!("{PATH}?uid={UID}&timeout=soon"),
        format!("/drain/v1/namespaces/Shop/pods/web?uid={UID}"),
        format!("/drain/v1/namespaces/shop/pods/web%20x?uid={UID}"),
    ] {
        let (status, body) = call(&board, "GET", &uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["reason"], "bad-request", "{uri}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(board.asked().is_empty(), "nothing bad reaches the board");
    let (status, _) = call(&board, "POST", &ask_uri(UID, 0)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// On the real listener, with a 1 s request timeout and room for 2 requests in flight: 4
/// polls held 3 s are neither cut nor in the way of reviews.
#[tokio::test]
async fn parked_polls_sit_outside_the_review_timeout_and_in_flight_cap() {
    let timeouts = Timeouts {
        body: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let limits = Limits {
        max_in_flight: 2,
        ..Limits::default()
    };
    let server = Server::start_with("drain-wait", "127.0.0.1:0", timeouts, limits).await;
    server.running.context.waits.lead();
    let started = Instant::now();
    let mut polls = Vec::new();
    for n in 0..4 {
        let tls = server.tls(server.https("127.0.0.1"), b"http/1.1").await;
        let uri = format!("/drain/v1/namespaces/shop/pods/web-{n}?uid={UID}&timeout=3");
        polls.push(tokio::spawn(send(tls, false, get(&uri))));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.running.context.waits.open(), 4);
    for _ in 0..3 {
        let tls = server.tls(server.https("127.0.0.1"), b"http/1.1").await;
        let (status, _) = send(tls, false, post(review_bytes("create-deployment-pod.json"))).await;
        assert_eq!(status, 200, "reviews are served while polls are parked");
    }
    for poll in polls {
        let (status, body) = poll.await.unwrap();
        assert_eq!(status, 200);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["release"], false);
    }
    assert!(started.elapsed() >= Duration::from_secs(3), "held, not cut");
    server.stop().await;
}
