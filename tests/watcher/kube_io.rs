//! Each Kubernetes call the watcher makes, asserted exactly, and the calls it must not make.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const INITIAL: (&str, Option<&str>, Option<&str>) = (
    "initial",
    Some("Elb.InitialHealthChecking"),
    Some("Initial health checks in progress"),
);

#[tokio::test]
async fn pending_gate_gets_the_elb_reason_in_one_exact_patch() {
    let mut s = one_pod(5, json!([])).await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, INITIAL.0, INITIAL.1, INITIAL.2);
    let now = now();
    let report = s.watcher.tick(now.clone()).await;
    assert_eq!(
        (report.pending, report.describe_calls, report.patches),
        (1, 1, 1)
    );

    let patches = s.api.patches();
    assert_eq!(patches.len(), 1);
    let p = &patches[0];
    assert_eq!(p.path, "/api/v1/namespaces/game-2048/pods/p1/status");
    assert_eq!(p.content_type, "application/strategic-merge-patch+json");
    assert_eq!(
        p.body,
        json!({
            "metadata": { "uid": "uid-p1" },
            "status": { "conditions": [{
                "type": GATE,
                "status": "False",
                "reason": "Elb.InitialHealthChecking",
                "message": "Initial health checks in progress",
                "lastTransitionTime": now,
            }] },
        })
    );
    // The ELB was asked about exactly this pod's target.
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].targets(),
        vec![("10.0.0.7".to_string(), Some(80))]
    );

    // Same health next tick, before the store has caught up with our patch: nothing sent.
    let report = s.watcher.tick(now.clone()).await;
    assert_eq!((report.describe_calls, report.patches), (1, 0));
    assert_eq!(s.api.seen().len(), 1, "{:?}", s.api.seen());
}

#[tokio::test]
async fn unchanged_condition_in_the_store_sends_nothing() {
    let current = json!([{
        "type": GATE, "status": "False", "reason": INITIAL.1, "message": INITIAL.2,
        "lastTransitionTime": "2026-11-26T12:00:00Z",
    }]);
    let mut s = one_pod(5, current).await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, INITIAL.0, INITIAL.1, INITIAL.2);
    let report = s.watcher.tick(now()).await;
    assert_eq!((report.pending, report.patches), (1, 0));
    assert!(s.api.seen().is_empty(), "{:?}", s.api.seen());
}

#[tokio::test]
async fn healthy_turns_true_keeps_nothing_else_and_records_an_event() {
    let current = json!([{
        "type": GATE, "status": "False", "reason": INITIAL.1, "message": INITIAL.2,
        "lastTransitionTime": "2026-11-26T12:00:00Z",
    }]);
    let mut s = one_pod(12, current).await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    let now = now();
    s.watcher.tick(now.clone()).await;
    let patches = s.api.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].body["status"]["conditions"],
        json!([{ "type": GATE, "status": "True", "lastTransitionTime": now }])
    );
    let events = s.api.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.method, axum::http::Method::POST);
    assert_eq!(e.path, "/apis/events.k8s.io/v1/namespaces/game-2048/events");
    assert_eq!(e.body["reason"], "TargetHealthy");
    assert_eq!(e.body["type"], "Normal");
    assert_eq!(e.body["regarding"]["uid"], "uid-p1");
    let note = e.body["note"].as_str().unwrap();
    assert!(
        note.contains("target healthy 12s after pod creation"),
        "{note}"
    );
    assert!(
        s.metrics
            .encode()
            .contains("gracegate_gate_ready_seconds_count 1")
    );
}

#[tokio::test]
async fn true_is_sticky_and_costs_no_call() {
    let done =
        json!([{ "type": GATE, "status": "True", "lastTransitionTime": "2026-11-26T12:00:00Z" }]);
    let mut s = one_pod(5, done).await;
    s.fake.set_health(
        ARN,
        "10.0.0.7",
        80,
        "unhealthy",
        Some("Target.Timeout"),
        Some("Request timed out"),
    );
    let report = s.watcher.tick(now()).await;
    assert_eq!(report, gracegate::watcher::TickReport::default());
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 0);
    assert!(s.api.seen().is_empty());
}

#[tokio::test]
async fn target_not_registered_yet() {
    let mut s = one_pod(1, json!([])).await;
    s.watcher.tick(now()).await;
    let c = &s.api.patches()[0].body["status"]["conditions"][0];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Elb.RegistrationInProgress"))
    );
}

#[tokio::test]
async fn gate_timeout_releases_with_a_warning_event() {
    let mut s = setup(
        vec![pod(
            "p1",
            "10.0.0.7",
            GATE,
            Duration::from_secs(601),
            json!([]),
        )],
        cluster(0, false),
        Some(Duration::from_secs(600)),
    )
    .await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, INITIAL.0, INITIAL.1, INITIAL.2);
    let report = s.watcher.tick(now()).await;
    assert_eq!(
        report.describe_calls, 0,
        "a timed-out gate needs no ELB call"
    );
    let c = &s.api.patches()[0].body["status"]["conditions"][0];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("GateTimeout"))
    );
    let events = s.api.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].body["type"].as_str(),
            events[0].body["reason"].as_str()
        ),
        (Some("Warning"), Some("GateTimeout"))
    );
    // Counted for the GateTimeout alert (manifests/monitoring).
    assert_eq!(s.metrics.gate_timeouts.get(), 1);
}

#[tokio::test]
async fn deleted_binding_releases_its_gates() {
    let mut s = setup(
        vec![pod(
            "p1",
            "10.0.0.7",
            GATE,
            Duration::from_secs(5),
            json!([]),
        )],
        cluster(0, true),
        None,
    )
    .await;
    s.watcher.tick(now()).await;
    let c = &s.api.patches()[0].body["status"]["conditions"][0];
    assert_eq!(c["status"], "True");
    assert_eq!(
        c["message"],
        format!("TargetGroupBinding {BINDING} no longer exists; gate released")
    );
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 0);
}

#[tokio::test]
async fn aws_outage_delays_gates_and_recovers() {
    let mut s = one_pod(5, json!([])).await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    s.fake.fail_next(4, crate::fake_elb::Fault::InternalError);
    for _ in 0..2 {
        let report = s.watcher.tick(now()).await;
        assert_eq!((report.pending, report.patches), (1, 0));
    }
    assert!(
        s.api.seen().is_empty(),
        "nothing written while the ELB is down"
    );
    let report = s.watcher.tick(now()).await;
    assert_eq!(report.patches, 1);
    assert!(s.metrics.encode().contains(
        r#"gracegate_aws_requests_total{operation="DescribeTargetHealth",outcome="error"} 2"#
    ));
}

#[tokio::test]
async fn throttling_is_retried_and_counted() {
    let mut s = one_pod(5, json!([])).await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    s.fake.fail_next(2, crate::fake_elb::Fault::Throttling);
    s.watcher.tick(now()).await;
    assert!(s.api.patches().is_empty());
    assert!(
        s.metrics.encode().contains(r#"outcome="throttled"} 1"#),
        "{}",
        s.metrics.encode()
    );
    // The next tick reads the target and writes the gate.
    s.watcher.tick(now()).await;
    assert_eq!(s.api.patches().len(), 1);
}

#[tokio::test]
async fn thousand_pending_pods_over_fifty_target_groups_cost_fifty_calls() {
    let pods: Vec<_> = (0..1000)
        .map(|i| {
            let gate = format!("target-health.elbv2.k8s.aws/tgb-{}", i % 50);
            pod(
                &format!("p{i}"),
                &format!("10.0.{}.{}", i / 250, i % 250),
                &gate,
                Duration::from_secs(5),
                json!([]),
            )
        })
        .collect();
    let mut s = setup(pods, cluster(50, false), None).await;
    for n in 0..50 {
        s.fake
            .add_target_group(&format!("arn:tg/{n}"), &format!("tg-{n}"));
    }
    let report = s.watcher.tick(now()).await;
    assert_eq!((report.pending, report.describe_calls), (1000, 50));
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 50);
    for n in 0..50 {
        assert_eq!(s.fake.describe_calls_for(&format!("arn:tg/{n}")), 1);
    }
    assert_eq!(s.api.patches().len(), 1000);
    assert!(s.metrics.encode().contains("gracegate_gates_pending 1000"));
}

/// A pod deleted `ago` with a 70 s grace period and a 40 s preStop sleep.
fn terminating(name: &str, ago: Duration) -> k8s_openapi::api::core::v1::Pod {
    let mut p = pod(
        name,
        "10.0.0.7",
        GATE,
        Duration::from_secs(3600),
        json!([{ "type": GATE, "status": "True" }]),
    );
    let requested = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::try_from(ago).unwrap();
    p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        requested + k8s_openapi::jiff::SignedDuration::from_secs(70),
    ));
    p.metadata.deletion_grace_period_seconds = Some(70);
    p.spec.as_mut().unwrap().containers[0].lifecycle =
        Some(k8s_openapi::api::core::v1::Lifecycle {
            pre_stop: Some(k8s_openapi::api::core::v1::LifecycleHandler {
                sleep: Some(k8s_openapi::api::core::v1::SleepAction { seconds: 40 }),
                ..Default::default()
            }),
            ..Default::default()
        });
    p
}

#[tokio::test]
async fn target_still_healthy_after_the_prestop_sleep_is_a_warning() {
    let mut s = setup(
        vec![terminating("old", Duration::from_secs(45))],
        cluster(0, false),
        None,
    )
    .await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    let report = s.watcher.tick(now()).await;
    assert_eq!(
        (report.pending, report.departing, report.describe_calls),
        (0, 1, 1)
    );
    assert_eq!(
        s.fake.requests()[0].targets(),
        vec![("10.0.0.7".to_string(), Some(80))]
    );
    let events = s.api.events();
    assert_eq!(events.len(), 1, "{:?}", s.api.seen());
    assert_eq!(events[0].body["type"], "Warning");
    assert_eq!(events[0].body["reason"], "TerminatedBeforeDeregistered");
    assert!(
        s.metrics
            .encode()
            .contains("gracegate_terminated_before_deregistered_total 1")
    );
    assert!(
        s.api.patches().is_empty(),
        "a terminating pod's gate is never written"
    );

    // Warned once; then draining, then gone: the deregistration time is measured.
    s.watcher.tick(now()).await;
    s.fake.set_health(
        ARN,
        "10.0.0.7",
        80,
        "draining",
        Some("Target.DeregistrationInProgress"),
        None,
    );
    s.watcher.tick(now()).await;
    assert_eq!(s.api.events().len(), 1);
    s.fake.deregister(ARN, "10.0.0.7", 80);
    let report = s.watcher.tick(now()).await;
    assert_eq!(report.departing, 1, "counted before this tick's answer");
    assert!(
        s.metrics
            .encode()
            .contains("gracegate_deregistration_seconds_count 1")
    );
    // Still in the store (sleeping out its grace period): not followed again.
    let report = s.watcher.tick(now()).await;
    assert_eq!((report.departing, report.describe_calls), (0, 0));
    assert!(
        s.metrics
            .encode()
            .contains("gracegate_deregistration_seconds_count 1")
    );
    let calls = s.fake.calls("DescribeTargetHealth");
    s.pods
        .writer
        .apply_watcher_event(&kube::runtime::watcher::Event::Delete(terminating(
            "old",
            Duration::from_secs(45),
        )));
    let report = s.watcher.tick(now()).await;
    assert_eq!((report.departing, report.describe_calls), (0, 0));
    assert_eq!(s.fake.calls("DescribeTargetHealth"), calls);
}

#[tokio::test]
async fn draining_in_time_is_quiet() {
    let mut s = setup(
        vec![terminating("old", Duration::from_secs(10))],
        cluster(0, false),
        None,
    )
    .await;
    s.fake.set_health(
        ARN,
        "10.0.0.7",
        80,
        "draining",
        Some("Target.DeregistrationInProgress"),
        None,
    );
    s.watcher.tick(now()).await;
    assert!(s.api.seen().is_empty());
    assert!(
        s.metrics
            .encode()
            .contains("gracegate_terminated_before_deregistered_total 0")
    );
}
