//! Faults: an API server that refuses status patches, a pod watch that fails and relists,
//! an ELB that is down, and pods churning by the thousand.

use std::sync::Arc;
use std::time::Duration;

use gracegate::watcher::{GonePods, apply_gated_pods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector;
use kube::runtime::watcher::{Error as WatchError, Event};
use rstest::rstest;
use serde_json::json;
use tokio::sync::Notify;

use crate::fake_elb::Fault;
use crate::harness::*;

fn after(start: &Time, millis: i64) -> Time {
    Time(start.0 + SignedDuration::from_millis(millis))
}

fn status_patches(s: &Setup) -> usize {
    s.api
        .seen()
        .iter()
        .filter(|r| r.path.ends_with("/status"))
        .count()
}

/// A status patch refused (conflict with another writer, invalid, throttled, broken): retried
/// with backoff (1 s, 2 s, 4 s … at most 30 s), never every tick, and written once the API
/// server answers again.
#[rstest]
#[case::throttled(429)]
#[case::internal_error(500)]
#[case::unavailable(503)]
#[case::invalid(422)]
#[tokio::test]
async fn refused_status_patches_back_off_and_recover(#[case] code: u16) {
    let mut s = one_pod(5, json!([])).await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    s.api.fail_path("/status", code);
    let t0 = now();
    let mut attempts = Vec::new();
    for millis in [0, 500, 1000, 1500, 2000, 2999, 3000, 6999] {
        s.watcher.tick(after(&t0, millis)).await;
        attempts.push(status_patches(&s));
    }
    // Tried at 0, 1 s, 3 s, then due at 7 s.
    assert_eq!(attempts, vec![1, 1, 2, 2, 2, 2, 3, 3]);
    assert!(s.api.events().is_empty());
    s.api.fail_path("/status", 0);
    let report = s.watcher.tick(after(&t0, 7000)).await;
    assert_eq!(report.patches, 1);
    assert_eq!(status_patches(&s), 4);
    assert_eq!(s.api.events().len(), 1, "TargetHealthy once written");
    // Written: nothing more to do.
    s.watcher.tick(after(&t0, 8000)).await;
    assert_eq!(status_patches(&s), 4);
}

/// A pod deleted between the look and the patch (404), or replaced by one of the same name
/// (409 on the UID precondition): nothing to retry.
#[rstest]
#[case::gone(404)]
#[case::replaced(409)]
#[tokio::test]
async fn a_vanished_pod_is_not_retried(#[case] code: u16) {
    let mut s = one_pod(5, json!([])).await;
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    s.api.fail_path("/status", code);
    let t0 = now();
    s.watcher.tick(t0.clone()).await;
    s.watcher.tick(after(&t0, 1000)).await;
    assert_eq!(status_patches(&s), 1, "settled, not retried");
}

/// The ELB down for many ticks: one call per target group per tick (no retry storm beyond
/// the SDK's attempts), gates kept pending, written within one tick of the ELB's return.
#[tokio::test]
async fn an_elb_outage_delays_gates_and_loses_none() {
    let pods: Vec<Pod> = (0..20)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.0.0.{i}"),
                GATE,
                Duration::from_secs(5),
                json!([]),
            )
        })
        .collect();
    let mut s = setup(pods, cluster(0, false), None).await;
    for i in 0..20 {
        s.fake
            .set_health(ARN, &format!("10.0.0.{i}"), 80, "healthy", None, None);
    }
    // Down for 10 ticks (2 attempts each, as the harness's SDK retry allows).
    s.fake.fail_next(20, Fault::ServiceUnavailable);
    for _ in 0..10 {
        let report = s.watcher.tick(now()).await;
        assert_eq!(
            (report.pending, report.describe_calls, report.patches),
            (20, 1, 0)
        );
    }
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 20);
    assert!(s.api.seen().is_empty());
    // Back: every gate in the next tick.
    let report = s.watcher.tick(now()).await;
    assert_eq!(report.patches, 20);
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 21);
}

/// The pod watch fails and relists (as after `410 Gone`): the cache holds what the relist
/// holds, a pod missing from it is treated as deleted, and the consumer keeps going.
#[tokio::test]
async fn a_failed_watch_relists() {
    let (store, writer) = reflector::store::<Pod>();
    let gone = GonePods::default();
    let p = |name: &str| pod(name, "10.0.0.7", GATE, Duration::from_secs(5), json!([]));
    let mut plain = p("plain");
    plain.spec.as_mut().unwrap().readiness_gates = None;
    let events = futures::stream::iter(vec![
        Ok(Event::Init),
        Ok(Event::InitApply(p("a"))),
        Ok(Event::InitApply(plain.clone())),
        Ok(Event::InitDone),
        Err(WatchError::WatchError(Box::new(
            serde_json::from_value(json!({
                "status": "Failure", "message": "too old resource version",
                "reason": "Expired", "code": 410,
            }))
            .unwrap(),
        ))),
        Ok(Event::Init),
        Ok(Event::InitApply(p("b"))),
        Ok(Event::InitDone),
        Ok(Event::Delete(p("b"))),
        Ok(Event::Delete(plain)),
    ]);
    apply_gated_pods(
        events,
        writer,
        "target-health.elbv2.k8s.aws".into(),
        Arc::new(Notify::new()),
        gone.clone(),
    )
    .await;
    assert!(store.is_empty(), "{:?}", store.state());
    let gone: Vec<String> = gone
        .take()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        gone,
        vec!["b"],
        "only gated pods are followed after their delete"
    );
}

/// 10,000 pods come and go in waves of 1,000: what the watcher remembers per pod stays
/// bounded by one wave and drops to nothing once they are gone.
#[tokio::test]
async fn bookkeeping_stays_bounded_while_ten_thousand_pods_churn() {
    let mut s = setup(vec![], cluster(0, false), None).await;
    let t0 = Timestamp::now();
    let at = |secs: i64| Time(t0 + SignedDuration::from_secs(secs));
    let mut most = 0;
    for wave in 0..10 {
        let base = wave * 100;
        let pods: Vec<Pod> = (0..1000)
            .map(|i| {
                let mut p = pod(
                    &format!("w{wave}-{i}"),
                    &format!("10.{wave}.{}.{}", i / 250, i % 250),
                    GATE,
                    Duration::from_secs(60),
                    json!([{ "type": GATE, "status": "True" }]),
                );
                p.metadata.deletion_timestamp = Some(at(base + 30));
                p.metadata.deletion_grace_period_seconds = Some(30);
                p
            })
            .collect();
        for p in &pods {
            s.pods.writer.apply_watcher_event(&Event::Apply(p.clone()));
            let ip = p.status.as_ref().unwrap().pod_ip.clone().unwrap();
            s.fake.set_health(ARN, &ip, 80, "draining", None, None);
        }
        s.watcher.tick(at(base + 1)).await;
        most = most.max(s.watcher.remembered());
        for p in &pods {
            let ip = p.status.as_ref().unwrap().pod_ip.clone().unwrap();
            s.fake.deregister(ARN, &ip, 80);
        }
        s.watcher.tick(at(base + 20)).await;
        most = most.max(s.watcher.remembered());
        for p in pods {
            s.pods.writer.apply_watcher_event(&Event::Delete(p.clone()));
            s.watcher.gone_pods().push(p);
        }
        s.watcher.tick(at(base + 40)).await;
        most = most.max(s.watcher.remembered());
    }
    assert!(most <= 1000, "at most one wave remembered, was {most}");
    assert_eq!(s.watcher.remembered(), 0);
    assert!(s.pods.store.is_empty());
    let drains: usize = s
        .watcher
        .records()
        .by_key
        .values()
        .map(|r| r.drains.len())
        .sum();
    assert_eq!(drains, 50, "the record keeps only the newest 50");
}

/// Pod `p1` gated by `gate`, its target in initial health checks, on a cluster whose objects
/// the test can delete and recreate.
async fn initial_p1(
    gate: &str,
) -> (
    Setup,
    gracegate::cluster::Writers,
    gracegate::cluster::Objects,
) {
    let (cluster, writers, objects) = cluster_with_writers(0);
    let s = setup(
        vec![pod(
            "p1",
            "10.0.0.7",
            gate,
            Duration::from_secs(5),
            json!([]),
        )],
        cluster,
        None,
    )
    .await;
    s.fake.set_health(
        ARN,
        "10.0.0.7",
        80,
        "initial",
        Some("Elb.InitialHealthChecking"),
        None,
    );
    (s, writers, objects)
}

/// The conditions written for pod `p1`, in order: (status, reason).
fn written(s: &Setup) -> Vec<(String, String)> {
    s.api
        .patches()
        .iter()
        .filter(|p| p.path.ends_with("/pods/p1/status"))
        .map(|p| {
            let c = &p.body["status"]["conditions"][0];
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The Service behind the binding deleted mid-rollout and recreated: the gate says it has no
/// data while it is gone, and turns True from the load balancer once it is back.
#[tokio::test]
async fn a_service_deleted_and_recreated_mid_rollout() {
    let (mut s, mut writers, objects) = initial_p1(GATE).await;
    s.watcher.tick(now()).await;
    let service = objects.services[0].clone();
    writers
        .services
        .apply_watcher_event(&Event::Delete(service.clone()));
    s.watcher.tick(now()).await;
    writers.services.apply_watcher_event(&Event::Apply(service));
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    s.watcher.tick(now()).await;
    assert_eq!(
        written(&s),
        vec![
            ("False".into(), "Elb.InitialHealthChecking".into()),
            ("Unknown".into(), "NoTargetHealth".into()),
            ("True".into(), "".into()),
        ]
    );
}

/// The binding deleted mid-rollout: its gates are released (a rollout must not wait for a
/// binding that is gone); recreated, new pods are gated by it again, and the released gate
/// stays True.
#[tokio::test]
async fn a_binding_deleted_and_recreated_mid_rollout() {
    let (cluster, mut writers, objects) = cluster_with_writers(0);
    let mut s = setup(
        vec![pod(
            "p1",
            "10.0.0.7",
            GATE,
            Duration::from_secs(5),
            json!([]),
        )],
        cluster,
        None,
    )
    .await;
    let binding = objects.bindings[0].clone();
    writers
        .bindings
        .apply_watcher_event(&Event::Delete(binding.clone()));
    let report = s.watcher.tick(now()).await;
    assert_eq!((report.describe_calls, report.patches), (0, 1));
    assert_eq!(
        written(&s),
        vec![("True".into(), "TargetGroupBindingDeleted".into())]
    );
    writers.bindings.apply_watcher_event(&Event::Apply(binding));
    let mut released = pod(
        "p1",
        "10.0.0.7",
        GATE,
        Duration::from_secs(5),
        json!([{ "type": GATE, "status": "True", "reason": "TargetGroupBindingDeleted" }]),
    );
    released.metadata.resource_version = Some("2".into());
    s.pods.writer.apply_watcher_event(&Event::Apply(released));
    s.pods.writer.apply_watcher_event(&Event::Apply(pod(
        "p2",
        "10.0.0.8",
        GATE,
        Duration::from_secs(1),
        json!([]),
    )));
    s.fake
        .set_health(ARN, "10.0.0.8", 80, "healthy", None, None);
    let report = s.watcher.tick(now()).await;
    assert_eq!(
        (report.pending, report.describe_calls, report.patches),
        (1, 1, 1)
    );
    assert_eq!(written(&s).len(), 1, "p1 is not written again");
}

/// A status patch the API server never answers is given up after its timeout and retried with
/// backoff; the tick is not held up for longer than that.
#[tokio::test(start_paused = true)]
async fn a_hung_status_patch_is_given_up_and_retried() {
    // No binding: the gate settles without the ELB, so the clock can be paused.
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
    s.api.fail_path("/status", 1);
    let started = tokio::time::Instant::now();
    let t0 = now();
    let report = s.watcher.tick(t0.clone()).await;
    assert_eq!(report.patches, 0);
    assert_eq!(
        started.elapsed(),
        gracegate::watcher::gates::PATCH_TIMEOUT,
        "the tick waited exactly the patch timeout"
    );
    s.api.fail_path("/status", 0);
    // Backing off for a second after the failure.
    assert_eq!(s.watcher.tick(after(&t0, 500)).await.patches, 0);
    assert_eq!(s.watcher.tick(after(&t0, 1000)).await.patches, 1);
    assert_eq!(status_patches(&s), 2);
}

/// A v1 ALB ingress controller's legacy gate resolves through its Ingress: the Ingress deleted
/// mid-rollout releases the gate like a deleted binding (a rollout must not wait on it), and it
/// stays True once the Ingress is back.
#[tokio::test]
async fn an_ingress_deleted_and_recreated_mid_rollout() {
    const LEGACY: &str = "target-health.alb.ingress.k8s.aws/ingress-2048_service-2048_80";
    let (mut s, mut writers, objects) = initial_p1(LEGACY).await;
    s.watcher.tick(now()).await;
    let ingress = objects.ingresses[0].clone();
    writers
        .ingresses
        .apply_watcher_event(&Event::Delete(ingress.clone()));
    let report = s.watcher.tick(now()).await;
    assert_eq!(report.describe_calls, 0, "nothing to ask the ELB about");
    writers
        .ingresses
        .apply_watcher_event(&Event::Apply(ingress));
    s.fake
        .set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    s.watcher.tick(now()).await;
    let statuses: Vec<String> = written(&s).into_iter().map(|(status, _)| status).collect();
    assert_eq!(
        statuses,
        vec!["False", "True"],
        "released once, never set back"
    );
}
