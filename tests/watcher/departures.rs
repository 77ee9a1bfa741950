//! The departure follower and the records: early deaths reported, drains measured (also after
//! the pod object is gone), and the `gracegate-target-groups` ConfigMap written exactly.

use std::path::Path;
use std::time::Duration;

use axum::http::Method;
use gracegate::cluster::{Cluster, Objects};
use gracegate::elb::TargetGroup;
use gracegate::facts::CONFIGMAP_NAME;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use crate::harness::*;

/// The clock of these tests: pods are deleted at `T0` (+ their index), ticks are at `at(s)`.
const T0: i64 = 1_800_000_000;

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(T0 + s).unwrap())
}

/// Pod `n` (IP 10.0.1.n), deleted at T0 + n with a 70 s grace period and a 40 s preStop sleep.
fn deleted(n: i64) -> Pod {
    let mut p = pod(
        &format!("old-{n}"),
        &format!("10.0.1.{n}"),
        GATE,
        Duration::from_secs(3600),
        json!([{ "type": GATE, "status": "True" }]),
    );
    p.metadata.deletion_timestamp = Some(at(n + 70));
    p.metadata.deletion_grace_period_seconds = Some(70);
    p.spec.as_mut().unwrap().containers[0].lifecycle =
        Some(serde_json::from_value(json!({ "preStop": { "sleep": { "seconds": 40 } } })).unwrap());
    p
}

fn ip(n: i64) -> String {
    format!("10.0.1.{n}")
}

fn draining(s: &Setup, n: i64) {
    s.fake.set_health(
        ARN,
        &ip(n),
        80,
        "draining",
        Some("Target.DeregistrationInProgress"),
        Some("Target deregistration is in progress"),
    );
}

fn records_setup_settings() -> gracegate::watcher::WatcherSettings {
    settings_with_records(None)
}

async fn with_records(pods: Vec<Pod>, cluster: Cluster) -> Setup {
    setup_full(pods, cluster, records_setup_settings(), elb_options()).await
}

/// What the watcher knows of the 2048 target group.
fn record(s: &Setup) -> Option<gracegate::facts::Record> {
    s.watcher
        .records()
        .get(&TargetGroup::Arn(ARN.into()))
        .cloned()
}

#[tokio::test]
async fn terminated_while_draining_is_reported_once_the_target_is_gone() {
    let mut s = setup(vec![deleted(0)], cluster(0, false), None).await;
    draining(&s, 0);
    // Within the sleep: draining in time, nothing to say.
    s.watcher.tick(at(3)).await;
    // The sleep ended at 40 s; still draining at 45 s: the load balancer may still route.
    s.watcher.tick(at(45)).await;
    assert!(s.api.events().is_empty(), "reported once the stay is known");
    s.fake.deregister(ARN, &ip(0), 80);
    let report = s.watcher.tick(at(130)).await;
    assert_eq!(report.departing, 1);

    let events = s.api.events();
    assert_eq!(events.len(), 1, "{:?}", s.api.seen());
    let e = &events[0];
    assert_eq!(e.method, Method::POST);
    assert_eq!(e.path, "/apis/events.k8s.io/v1/namespaces/game-2048/events");
    assert_eq!(e.body["type"], "Warning");
    assert_eq!(e.body["reason"], "TerminatedWhileDraining");
    assert_eq!(e.body["regarding"]["name"], "old-0");
    assert_eq!(e.body["regarding"]["uid"], "uid-old-0");
    assert_eq!(
        e.body["note"],
        "preStop sleep ended while target 10.0.1.0:80 was still draining in the load balancer, \
         which may still have sent it new requests; it stayed listed 90s longer. gracegate sizes \
         new pods' sleep from the measured drains"
    );
    let metrics = s.metrics.encode();
    for line in [
        "gracegate_terminated_while_draining_total 1",
        "gracegate_terminated_before_deregistered_total 0",
        "gracegate_deregistration_lag_seconds_sum 3.0",
        "gracegate_deregistration_seconds_sum 130.0",
        r#"gracegate_drain_seconds_sum{target_group="k8s-game2048-service2-6f5e3c2a1b"} 130.0"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    let r = record(&s).unwrap();
    assert_eq!(r.drains.len(), 1);
    assert_eq!(r.drains[0].drain_seconds, 130.0);
    assert_eq!(r.drains[0].lag_seconds, Some(3.0));
    assert_eq!(r.drains[0].at, at(130).0);
}

#[tokio::test]
async fn gone_within_the_sleep_is_quiet_and_measured() {
    let mut s = setup(vec![deleted(0)], cluster(0, false), None).await;
    draining(&s, 0);
    s.watcher.tick(at(2)).await;
    s.fake.deregister(ARN, &ip(0), 80);
    s.watcher.tick(at(33)).await;
    assert!(s.api.seen().is_empty(), "{:?}", s.api.seen());
    assert_eq!(record(&s).unwrap().drains[0].drain_seconds, 33.0);
}

#[tokio::test]
async fn a_departure_is_followed_after_its_pod_object_is_gone() {
    let mut s = setup(vec![deleted(0)], cluster(0, false), None).await;
    s.fake.set_health(ARN, &ip(0), 80, "healthy", None, None);
    s.watcher.tick(at(1)).await;
    // The pod object goes (its containers stopped early, or it was force-deleted).
    s.pods
        .writer
        .apply_watcher_event(&Event::Delete(deleted(0)));
    s.watcher.gone_pods().push(deleted(0));
    draining(&s, 0);
    let report = s.watcher.tick(at(20)).await;
    assert_eq!((report.departing, report.describe_calls), (1, 1));
    assert_eq!(
        s.fake.requests().last().unwrap().targets(),
        vec![(ip(0), Some(80))]
    );
    s.fake.deregister(ARN, &ip(0), 80);
    s.watcher.tick(at(50)).await;
    let r = record(&s).unwrap();
    assert_eq!(
        (r.drains[0].drain_seconds, r.drains[0].lag_seconds),
        (50.0, Some(20.0))
    );
    // Concluded, and its pod gone: nothing more is asked.
    let report = s.watcher.tick(at(51)).await;
    assert_eq!((report.departing, report.describe_calls), (0, 0));
}

#[tokio::test]
async fn a_pod_never_seen_terminating_is_followed_from_its_delete_event() {
    let mut s = setup(vec![], cluster(0, false), None).await;
    draining(&s, 3);
    // Deleted with no grace period: no deletionTimestamp on the last state we get.
    let mut p = deleted(3);
    p.metadata.deletion_timestamp = None;
    p.metadata.deletion_grace_period_seconds = None;
    s.watcher.gone_pods().push(p);
    let report = s.watcher.tick(at(10)).await;
    assert_eq!((report.departing, report.describe_calls), (1, 1));
    // The sleep never ran: the target still draining is reported once it is gone.
    s.fake.deregister(ARN, &ip(3), 80);
    s.watcher.tick(at(25)).await;
    let events = s.api.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["reason"], "TerminatedWhileDraining");
    // Measured from when gracegate heard of the delete.
    assert_eq!(record(&s).unwrap().drains[0].drain_seconds, 15.0);
}

#[tokio::test]
async fn a_target_already_gone_when_first_asked_measures_nothing() {
    // A new leader finds a pod whose target left minutes ago: "deleted → gone" would be
    // wrong by those minutes.
    let mut s = setup(vec![deleted(0)], cluster(0, false), None).await;
    s.watcher.tick(at(300)).await;
    assert!(record(&s).is_none());
    assert!(
        s.metrics
            .encode()
            .contains("gracegate_deregistration_seconds_count 0")
    );
}

/// The single server-side apply of the records ConfigMap, checked exactly.
fn assert_apply(seen: &Seen) -> Value {
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(
        seen.path,
        format!("/api/v1/namespaces/{OWN_NS}/configmaps/{CONFIGMAP_NAME}")
    );
    let mut query: Vec<&str> = seen.query.split('&').filter(|q| !q.is_empty()).collect();
    query.sort();
    assert_eq!(query, vec!["fieldManager=gracegate", "force=true"]);
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(seen.body["apiVersion"], "v1");
    assert_eq!(seen.body["kind"], "ConfigMap");
    assert_eq!(seen.body["metadata"]["name"], CONFIGMAP_NAME);
    assert_eq!(seen.body["metadata"]["namespace"], OWN_NS);
    let data = seen.body["data"].as_object().unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec!["k8s-game2048-service2-6f5e3c2a1b.0123456789abcdef"]
    );
    serde_json::from_str(data.values().next().unwrap().as_str().unwrap()).unwrap()
}

/// Pod `n` drains in `seconds`: draining at its first look, gone at the second.
async fn drain(s: &mut Setup, n: i64, seconds: i64) -> gracegate::watcher::TickReport {
    s.pods.writer.apply_watcher_event(&Event::Apply(deleted(n)));
    draining(s, n);
    s.watcher.tick(at(n + 1)).await;
    s.fake.deregister(ARN, &ip(n), 80);
    s.watcher.tick(at(n + seconds)).await
}

#[tokio::test]
async fn records_are_applied_at_most_every_ten_seconds_and_only_when_changed() {
    let mut s = with_records(vec![], cluster(0, false)).await;
    let report = drain(&mut s, 0, 30).await;
    assert!(report.records_written);
    let writes = s.api.configmap_writes();
    assert_eq!(writes.len(), 1, "{:?}", s.api.seen());
    let doc = assert_apply(&writes[0]);
    assert_eq!(doc["targetGroupArn"], ARN);
    assert_eq!(doc["drains"][0]["drainSeconds"], 30.0);
    assert_eq!(doc["drains"][0]["lagSeconds"], 1.0);
    assert_eq!(doc["drains"][0]["at"], "2027-01-15T08:00:30Z");
    assert_eq!(doc["drain"]["count"], 1);
    assert_eq!(doc["updatedAt"], "2027-01-15T08:00:30Z");

    // A second drain 4 s later: changed, but within 10 s of the last write.
    let report = drain(&mut s, 2, 32).await; // gone at 34 s
    assert!(!report.records_written);
    assert_eq!(s.api.configmap_writes().len(), 1);
    assert_eq!(
        report.next_due,
        Some(Duration::from_secs(6)),
        "the loop comes back for the write"
    );
    // Due at 40 s: written with both drains.
    let report = s.watcher.tick(at(40)).await;
    assert!(report.records_written);
    let writes = s.api.configmap_writes();
    assert_eq!(writes.len(), 2);
    let doc = assert_apply(&writes[1]);
    assert_eq!(doc["drains"].as_array().unwrap().len(), 2);
    assert_eq!(doc["drain"]["max"], 32.0);
    // Nothing changed since: no write, and nothing due.
    let report = s.watcher.tick(at(80)).await;
    assert!(!report.records_written);
    assert_eq!(report.next_due, None);
    assert_eq!(s.api.configmap_writes().len(), 2);
}

#[tokio::test]
async fn five_drains_make_a_measured_p99_the_webhook_reads() {
    let mut s = with_records(vec![], cluster(0, false)).await;
    for (n, seconds) in [(0, 20), (1, 35), (2, 61), (3, 40), (4, 50)] {
        drain(&mut s, n * 20, seconds).await;
    }
    let r = record(&s).unwrap();
    assert_eq!(r.measured_p99(), Some(61.0));
    // The webhook of this replica sees it at once, without waiting for the ConfigMap.
    let served = s
        .watcher
        .records()
        .get(&TargetGroup::Name(
            "k8s-game2048-service2-6f5e3c2a1b".into(),
        ))
        .and_then(|r| r.measured_p99());
    assert_eq!(served, Some(61.0));
}

#[tokio::test]
async fn a_new_leader_starts_from_the_configmap() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster");
    let mut objects = Objects::load_dir(&dir).unwrap();
    let earlier: Vec<Value> = (0..5)
        .map(|n| json!({ "at": format!("2027-01-15T07:0{n}:00Z"), "drainSeconds": 100 + n, "lagSeconds": 2 }))
        .collect();
    let record = json!({ "targetGroupArn": ARN, "drains": earlier, "factsAt": "2027-01-15T07:00:00Z",
                         "facts": { "protocol": "TCP", "loadBalancer": "network", "deregistrationDelaySeconds": 60 } });
    let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": { "name": CONFIGMAP_NAME, "namespace": OWN_NS },
                     "data": { "k8s-game2048-service2-6f5e3c2a1b.0123456789abcdef": record.to_string() } });
    objects
        .add_text(Path::new("cm.json"), &cm.to_string())
        .unwrap();
    let mut s = with_records(vec![], Cluster::from_objects(objects)).await;
    // Nothing to do: the records are read, nothing is written.
    let report = s.watcher.tick(at(0)).await;
    assert!(!report.records_written);
    assert_eq!(record_of(&s).measured_p99(), Some(104.0));
    // One more drain: written on top of the five.
    drain(&mut s, 10, 30).await;
    let writes = s.api.configmap_writes();
    assert_eq!(writes.len(), 1);
    let doc = assert_apply(&writes[0]);
    assert_eq!(doc["drains"].as_array().unwrap().len(), 6);
    assert_eq!(doc["facts"]["loadBalancer"], "network");
    assert_eq!(doc["facts"]["deregistrationDelaySeconds"], 60);
}

fn record_of(s: &Setup) -> gracegate::facts::Record {
    record(s).unwrap()
}

#[tokio::test]
async fn a_failed_write_is_retried_after_the_interval() {
    let mut s = with_records(vec![], cluster(0, false)).await;
    s.api.fail_path("/configmaps/", 500);
    let report = drain(&mut s, 0, 30).await;
    assert!(!report.records_written);
    assert_eq!(s.api.configmap_writes().len(), 1, "tried once");
    s.api.fail_path("/configmaps/", 0);
    assert!(
        !s.watcher.tick(at(35)).await.records_written,
        "not before 10 s"
    );
    assert!(s.watcher.tick(at(40)).await.records_written);
    assert_eq!(s.api.configmap_writes().len(), 2);
}
