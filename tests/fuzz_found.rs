//! What fuzzing (fuzz/, `make fuzz`) found, kept as tests: each input here once broke a fuzz
//! target's checks or panicked.

use std::collections::BTreeMap;
use std::sync::Arc;

use gracegate::drain::{self, Step};
use gracegate::elb::{TargetHealth, TargetState};
use gracegate::facts::Records;
use gracegate::inject::Settings;
use gracegate::objects::NamespaceObjects;
use gracegate::webhook::review::review;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/{path}")).unwrap()).unwrap()
}

/// records target: a drain of 922337203885477580732.5 s read back one ULP off from what
/// gracegate wrote: serde_json's default float parser (without `float_roundtrip`, whose
/// feature change would rebuild most of the dependency tree) is not correctly rounded for 16–17
/// significant digits. Accepted: what a reader sees is within an ULP of what the leader wrote
/// (S is whole seconds), everything else is exact, and a second round trip changes nothing.
#[test]
fn records_read_back_within_an_ulp_of_what_was_written() {
    // The numbers as text, as the ConfigMap holds them: the fuzzer's, and seconds as the
    // watcher measures them (whole seconds and nanoseconds).
    let mut seconds: Vec<String> = ["922337203885477580732.5", "0.30000000000000004", "1e-7"]
        .map(String::from)
        .to_vec();
    seconds.extend((0..40).map(|n| {
        let s = 30.0 + f64::from(n) * 1.7 + f64::from(n * 7919 % 1_000_000_000) * 1e-9;
        serde_json::to_string(&s).unwrap()
    }));
    let drains: Vec<String> = seconds
        .iter()
        .map(|s| format!(r#"{{"at":"2026-11-26T12:01:00Z","drainSeconds":{s},"lagSeconds":{s}}}"#))
        .collect();
    let doc = format!(r#"{{"drains":[{}]}}"#, drains.join(","));
    let data = BTreeMap::from([("tg".to_string(), doc)]);
    let (records, errors) = Records::from_data(&data);
    assert!(errors.is_empty(), "{errors:?}");
    let (back, errors) = Records::from_data(&records.to_data());
    assert!(errors.is_empty(), "{errors:?}");
    let (before, after) = (&records.by_key["tg"], &back.by_key["tg"]);
    assert_eq!(before.drains.len(), after.drains.len());
    for (a, b) in before.drains.iter().zip(&after.drains) {
        assert_eq!(a.at, b.at);
        let ulp = a.drain_seconds.abs() * f64::EPSILON;
        assert!(
            (a.drain_seconds - b.drain_seconds).abs() <= ulp,
            "{a:?} {b:?}"
        );
    }
    let (again, _) = Records::from_data(&back.to_data());
    assert_eq!(again, back, "stable after one round trip");
}

/// A terminating pod of the recorded namespace, gated on the recorded binding.
fn terminating_pod(grace: i64, pre_stop: Value) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "game-2048", "uid": "u",
                          "deletionTimestamp": "2026-11-26T12:01:10Z",
                          "deletionGracePeriodSeconds": grace },
            "spec": {
                "readinessGates": [{ "conditionType": "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b" }],
                "containers": [{ "name": "app", "ports": [{ "name": "http", "containerPort": 80 }],
                                 "lifecycle": { "preStop": pre_stop } }],
            },
            "status": { "podIP": "10.0.0.7" },
        }))
        .unwrap(),
    )
}

fn objects() -> NamespaceObjects {
    NamespaceObjects {
        namespace: None,
        services: vec![Arc::new(
            serde_json::from_value(fixture("cluster/service.json")).unwrap(),
        )],
        bindings: vec![Arc::new(
            serde_json::from_value(fixture("cluster/targetgroupbinding.json")).unwrap(),
        )],
        ingresses: vec![],
        target_groups: Default::default(),
    }
}

const PREFIX: &str = "target-health.elbv2.k8s.aws";

/// watcher target: `deletionGracePeriodSeconds` is any int64 the API server took; subtracting
/// 9223372036854775807 s from the deletion time overflowed jiff's range and panicked the tick.
#[test]
fn a_grace_period_beyond_any_date_is_not_followed() {
    let sleep = json!({ "sleep": { "seconds": 40 } });
    for grace in [i64::MAX, i64::MIN, 400_000_000_000] {
        let pods = [terminating_pod(grace, sleep.clone())];
        assert!(drain::departures(&pods, &objects(), |_| None, PREFIX).is_empty());
    }
    // Long but representable: followed.
    let pods = [terminating_pod(86_400 * 365, sleep)];
    assert_eq!(
        drain::departures(&pods, &objects(), |_| None, PREFIX).len(),
        1
    );
}

/// watcher target: a preStop `sleep N` beyond i64 became a negative sleep (`as i64`), and one
/// beyond the last date panicked. Such a sleep never ends: no early-termination warning.
#[test]
fn a_sleep_beyond_any_date_never_ends() {
    for pre_stop in [
        json!({ "exec": { "command": ["sleep", "18446744073709551615"] } }),
        json!({ "exec": { "command": ["/bin/sh", "-c", "sleep 9223372036854775807"] } }),
        json!({ "sleep": { "seconds": i64::MAX } }),
    ] {
        let pods = [terminating_pod(70, pre_stop.clone())];
        let mut departures = drain::departures(&pods, &objects(), |_| None, PREFIX);
        assert_eq!(departures.len(), 1, "{pre_stop}");
        let d = &mut departures[0];
        assert_eq!(d.prestop_ends, Timestamp::MAX, "{pre_stop}");
        let healthy = TargetHealth {
            state: TargetState::Healthy,
            reason: None,
            description: None,
        };
        let an_hour_later = d.deleted_at + k8s_openapi::jiff::SignedDuration::from_hours(1);
        let step = drain::observe(d, Some(&healthy), an_hour_later);
        assert!(
            !matches!(step, Step::StillHealthyAfterPrestop { .. }),
            "{step:?}"
        );
    }
}

/// review target: a lone surrogate escape (`"\ud800"`) in a field gracegate does not read is
/// skipped by the pod reader; the review is answered like any other.
#[test]
fn a_lone_surrogate_in_an_unread_field_is_answered() {
    let mut request = fixture("admission/create-deployment-pod.json");
    request["request"]["object"]["spec"]["schedulerName"] = json!("SURROGATE");
    let body = serde_json::to_string(&request)
        .unwrap()
        .replace("SURROGATE", "\\ud800");
    let objects = objects();
    let reviewed =
        review(body.as_bytes(), &Settings::default(), |_| objects.clone()).expect("answered");
    assert!(reviewed.review.response.allowed);
    assert_eq!(reviewed.review.response.uid, request["request"]["uid"]);
}
