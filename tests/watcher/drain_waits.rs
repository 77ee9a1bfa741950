//! The leader's side of drain waits: the watcher describes the asked-about pods' targets in
//! its round (through the real SDK, against the fake ELBv2) and publishes its verdicts to
//! the board the parked asks wait on.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use gracegate::release::Verdict;
use gracegate::waits::{Answer, Board, WaitKey};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use crate::fake_elb::Fault;
use crate::harness::*;

/// Pods are deleted at `T0`; ticks are at `at(s)`.
const T0: i64 = 1_800_000_000;
const SETTLE: SignedDuration = SignedDuration::from_secs(2);

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(T0 + s).unwrap())
}

/// Pod `name` (IP `ip`), deleted at T0 with a 330 s grace period, preStop drain wait;
/// `conditions` as given (its gate True: its target was registered).
fn waiting_pod(name: &str, ip: &str, conditions: Value) -> Pod {
    let mut p = pod(name, ip, GATE, Duration::from_secs(3600), conditions);
    p.metadata.deletion_timestamp = Some(at(330));
    p.metadata.deletion_grace_period_seconds = Some(330);
    p.spec.as_mut().unwrap().containers[0].lifecycle = Some(
        serde_json::from_value(json!({ "preStop": { "exec": { "command": [
            "/.gracegate/gracegate-wait", "wait", "--max-seconds", "300"
        ] } } }))
        .unwrap(),
    );
    p
}

fn registered(name: &str, ip: &str) -> Pod {
    waiting_pod(name, ip, json!([{ "type": GATE, "status": "True" }]))
}

fn key(name: &str) -> WaitKey {
    WaitKey {
        namespace: NS.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
    }
}

async fn with_board(pods: Vec<Pod>) -> (Setup, Arc<Board>) {
    let mut s = setup(pods, cluster(0, false), None).await;
    let board = Arc::new(Board::new(64, s.metrics.clone()));
    s.watcher = s.watcher.with_drain_waits(board.clone(), SETTLE);
    (s, board)
}

/// A parked ask, as the route makes it.
fn park(board: &Arc<Board>, name: &str) -> tokio::task::JoinHandle<Answer> {
    let (board, key) = (board.clone(), key(name));
    tokio::spawn(async move { board.ask(key, Duration::from_secs(25)).await })
}

/// The verdict an ask gets now (a poll that holds for no time).
async fn verdict(board: &Board, name: &str) -> Answer {
    board.ask(key(name), Duration::ZERO).await
}

async fn parked() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn draining(s: &Setup, ip: &str) {
    s.fake.set_health(
        ARN,
        ip,
        80,
        "draining",
        Some("Target.DeregistrationInProgress"),
        None,
    );
}

fn not_yet(reason: &'static str) -> Answer {
    Answer::Verdict(Verdict::NotYet(reason))
}

#[tokio::test]
async fn released_once_the_target_is_gone_and_settled_and_not_before() {
    let (mut s, board) = with_board(vec![registered("old", "10.0.1.1")]).await;
    draining(&s, "10.0.1.1");
    let ask = park(&board, "old");
    parked().await;

    let report = s.watcher.tick(at(3)).await;
    assert_eq!(report.waiting, 1);
    // The departure follower and the waits ask about the same target: one call.
    assert_eq!(report.describe_calls, 1);
    assert_eq!(s.fake.describe_calls_for(ARN), 1);
    assert_eq!(verdict(&board, "old").await, not_yet("targets-draining"));

    s.fake.deregister(ARN, "10.0.1.1", 80);
    s.watcher.tick(at(10)).await;
    s.watcher.tick(at(11)).await;
    assert_eq!(verdict(&board, "old").await, not_yet("settling"));
    assert!(!ask.is_finished(), "parked while settling");
    assert!(
        s.api
            .events()
            .iter()
            .all(|e| e.body["reason"] != "DrainReleased")
    );

    let report = s.watcher.tick(at(12)).await;
    assert_eq!(report.waiting, 0);
    let answer = tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .expect("the parked ask is answered at once")
        .unwrap();
    assert_eq!(answer, Answer::Verdict(Verdict::Release("targets-gone")));
    // Another container's waiter, later: released without waiting.
    assert_eq!(
        verdict(&board, "old").await,
        Answer::Verdict(Verdict::Release("targets-gone"))
    );

    let events: Vec<_> = s
        .api
        .events()
        .into_iter()
        .filter(|e| e.body["reason"] == "DrainReleased")
        .collect();
    assert_eq!(events.len(), 1, "{:?}", s.api.events());
    let e = &events[0];
    assert_eq!(e.method, Method::POST);
    assert_eq!(e.content_type, "application/json");
    assert_eq!(e.path, "/apis/events.k8s.io/v1/namespaces/game-2048/events");
    assert_eq!(e.body["type"], "Normal");
    assert_eq!(e.body["regarding"]["name"], "old");
    assert_eq!(e.body["regarding"]["uid"], "uid-old");
    assert_eq!(
        e.body["note"],
        "released 12s after its deletion: targets-gone (its targets left every target group)"
    );
    let metrics = s.metrics.encode();
    for line in [
        "gracegate_drain_wait_seconds_sum 12.0",
        "gracegate_drain_wait_seconds_count 1",
        r#"gracegate_drain_waits_total{outcome="released"} 1"#,
        r#"gracegate_drain_waits_total{outcome="deadline"} 0"#,
        "gracegate_drain_waits_open 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // Released: its target is no longer described for the wait (the departure ended too).
    s.fake.reset_counts();
    s.watcher.tick(at(20)).await;
    assert_eq!(s.fake.describe_calls_for(ARN), 0);
}

#[tokio::test]
async fn never_released_while_describe_fails() {
    let (mut s, board) = with_board(vec![registered("old", "10.0.1.1")]).await;
    s.fake.deregister(ARN, "10.0.1.1", 80);
    // Gone at the first look, then throttled and failing for minutes.
    s.watcher.tick(at(1)).await;
    assert_eq!(verdict(&board, "old").await, not_yet("no-decision-yet"));
    let ask = park(&board, "old");
    parked().await;
    for (i, fault) in [
        Fault::Throttling,
        Fault::InternalError,
        Fault::ServiceUnavailable,
    ]
    .into_iter()
    .cycle()
    .take(6)
    .enumerate()
    {
        // Every attempt of the SDK fails (two per call here).
        s.fake.fail_next(2, fault);
        s.watcher.tick(at(10 + 30 * i as i64)).await;
        assert_eq!(verdict(&board, "old").await, not_yet("describe-failing"));
    }
    assert!(!ask.is_finished());
    // Readable again: gone, but the settle time starts over from this look.
    s.watcher.tick(at(200)).await;
    assert_eq!(verdict(&board, "old").await, not_yet("settling"));
    s.watcher.tick(at(202)).await;
    assert_eq!(
        ask.await.unwrap(),
        Answer::Verdict(Verdict::Release("targets-gone"))
    );
}

#[tokio::test]
async fn a_pod_whose_target_never_registered_is_released_at_the_first_look() {
    // No gate condition True: the target never was healthy, and the ELB does not list it.
    let (mut s, board) = with_board(vec![waiting_pod("new", "10.0.1.2", json!([]))]).await;
    let ask = park(&board, "new");
    parked().await;
    s.watcher.tick(at(1)).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), ask)
            .await
            .unwrap()
            .unwrap(),
        Answer::Verdict(Verdict::Release("never-registered"))
    );
    assert_eq!(s.fake.describe_calls_for(ARN), 1, "released on a describe");
}

#[tokio::test]
async fn a_pod_that_is_not_terminating_or_not_known_is_not_released() {
    let mut live = registered("live", "10.0.1.3");
    live.metadata.deletion_timestamp = None;
    let (mut s, board) = with_board(vec![live]).await;
    // The ELB does not list it: still, the pod is not terminating.
    s.watcher.tick(at(1)).await;
    let _ = verdict(&board, "live").await;
    let _ = verdict(&board, "nobody").await;
    let other_uid = WaitKey {
        uid: "uid-of-another-pod".into(),
        ..key("live")
    };
    let _ = board.ask(other_uid.clone(), Duration::ZERO).await;
    for t in [2, 30, 300] {
        s.watcher.tick(at(t)).await;
    }
    assert_eq!(verdict(&board, "live").await, not_yet("not-terminating"));
    assert_eq!(verdict(&board, "nobody").await, not_yet("pod-not-found"));
    assert_eq!(
        board.ask(other_uid, Duration::ZERO).await,
        not_yet("uid-mismatch")
    );
}

#[tokio::test]
async fn a_pod_deleted_from_the_cluster_is_still_released_from_its_targets() {
    let pod = registered("old", "10.0.1.1");
    let (mut s, board) = with_board(vec![pod.clone()]).await;
    draining(&s, "10.0.1.1");
    let _ = verdict(&board, "old").await;
    s.watcher.tick(at(3)).await;
    // The pod object goes (force-deleted); its waiter still asks.
    s.pods
        .writer
        .apply_watcher_event(&Event::Delete(pod.clone()));
    s.watcher.gone_pods().push(pod);
    s.watcher.tick(at(5)).await;
    assert_eq!(verdict(&board, "old").await, not_yet("targets-draining"));
    s.fake.deregister(ARN, "10.0.1.1", 80);
    s.watcher.tick(at(20)).await;
    s.watcher.tick(at(22)).await;
    assert_eq!(
        verdict(&board, "old").await,
        Answer::Verdict(Verdict::Release("targets-gone"))
    );
}

#[tokio::test]
async fn handover_the_old_leader_answers_not_leader_and_the_new_one_starts_from_its_own_looks() {
    let pod = registered("old", "10.0.1.1");
    let (mut s, board) = with_board(vec![pod.clone()]).await;
    draining(&s, "10.0.1.1");
    s.watcher.tick(at(3)).await;
    let ask = park(&board, "old");
    parked().await;
    assert_eq!(board.open(), 1);

    // The Lease is lost: the watcher task is aborted, which drops the watcher.
    drop(s.watcher);
    let answer = tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .expect("answered at once")
        .unwrap();
    assert_eq!(answer, Answer::NotLeader);
    assert_eq!(verdict(&board, "old").await, Answer::NotLeader);

    // Another replica leads, with a board of its own; the target left meanwhile.
    let (mut next, next_board) = with_board(vec![pod]).await;
    let ask = park(&next_board, "old");
    parked().await;
    // Before its first describe: not yet, whatever the earlier leader saw.
    assert_eq!(
        verdict(&next_board, "old").await,
        not_yet("no-decision-yet")
    );
    next.fake.fail_next(2, Fault::Throttling);
    next.watcher.tick(at(40)).await;
    assert_eq!(
        verdict(&next_board, "old").await,
        not_yet("describe-failing")
    );
    // Its first look says gone: it settles before releasing, as any leader does.
    next.watcher.tick(at(41)).await;
    assert_eq!(verdict(&next_board, "old").await, not_yet("settling"));
    assert!(!ask.is_finished());
    next.watcher.tick(at(43)).await;
    assert_eq!(
        ask.await.unwrap(),
        Answer::Verdict(Verdict::Release("targets-gone"))
    );
}

#[tokio::test]
async fn a_drain_wait_prestop_is_not_an_early_death_before_its_deadline() {
    let (mut s, board) = with_board(vec![registered("old", "10.0.1.1")]).await;
    let _ = verdict(&board, "old").await;
    // The controller's lag: still healthy seconds after the deletion, then draining for long.
    s.fake
        .set_health(ARN, "10.0.1.1", 80, "healthy", None, None);
    s.watcher.tick(at(2)).await;
    draining(&s, "10.0.1.1");
    s.watcher.tick(at(200)).await;
    s.fake.deregister(ARN, "10.0.1.1", 80);
    s.watcher.tick(at(250)).await;
    let reasons: Vec<Value> = s
        .api
        .events()
        .iter()
        .map(|e| e.body["reason"].clone())
        .collect();
    assert!(
        !reasons.contains(&json!("TerminatedBeforeDeregistered"))
            && !reasons.contains(&json!("TerminatedWhileDraining")),
        "the waiter's deadline (300 s) had not passed: {reasons:?}"
    );
    // Past the deadline it is one, as for a sleep.
    let (mut s, _board) = with_board(vec![registered("late", "10.0.1.2")]).await;
    s.fake
        .set_health(ARN, "10.0.1.2", 80, "healthy", None, None);
    s.watcher.tick(at(301)).await;
    let reasons: Vec<Value> = s
        .api
        .events()
        .iter()
        .map(|e| e.body["reason"].clone())
        .collect();
    assert_eq!(reasons, vec![json!("TerminatedBeforeDeregistered")]);
}
