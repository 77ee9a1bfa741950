//! The facts refresher in the loop: facts of gated target groups only, each at most every
//! refresh, through the same calls as target health, into the records.

use std::time::Duration;

use gracegate::elb::{HealthCheck, LoadBalancerKind, TargetGroup};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::harness::*;

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + s).unwrap())
}

/// A pod of the 2048 Deployment whose gate is already True: gated, nothing pending.
fn ready(name: &str, ip: &str) -> k8s_openapi::api::core::v1::Pod {
    pod(
        name,
        ip,
        GATE,
        Duration::from_secs(600),
        json!([{ "type": GATE, "status": "True" }]),
    )
}

async fn refreshing(pods: Vec<k8s_openapi::api::core::v1::Pod>, extra_bindings: usize) -> Setup {
    setup_full(
        pods,
        cluster(extra_bindings, false),
        settings_with_records(Some(Duration::from_secs(600))),
        elb_options(),
    )
    .await
}

#[tokio::test]
async fn facts_of_gated_target_groups_only_and_at_most_every_refresh() {
    // Two more bindings (target groups arn:tg/0 and arn:tg/1) serve no gated pod.
    let mut s = refreshing(vec![ready("p1", "10.0.0.7"), ready("p2", "10.0.0.8")], 2).await;
    s.fake.make_network(ARN);
    s.fake.set_deregistration_delay(ARN, 60);
    let report = s.watcher.tick(at(0)).await;
    assert_eq!(
        (report.pending, report.describe_calls, report.facts_calls),
        (0, 0, 1),
        "nothing pending, one gated target group"
    );
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 0);
    assert_eq!(s.fake.calls("DescribeTargetGroups"), 1);
    assert_eq!(s.fake.calls("DescribeTargetGroupAttributes"), 1);
    assert_eq!(
        s.fake.requests()[0].list("TargetGroupArns"),
        vec![ARN.to_string()]
    );
    let record = s
        .watcher
        .records()
        .get(&TargetGroup::Arn(ARN.into()))
        .cloned()
        .unwrap();
    let facts = record.facts.unwrap();
    assert_eq!(facts.load_balancer, Some(LoadBalancerKind::Network));
    assert_eq!(facts.deregistration_delay_seconds, Some(60));
    assert_eq!(
        facts.health_check,
        HealthCheck {
            interval_seconds: Some(30),
            timeout_seconds: Some(10),
            healthy_threshold: Some(3),
            unhealthy_threshold: Some(3),
        }
    );
    assert_eq!(record.facts_at, Some(at(0).0));
    // Written to the ConfigMap with the facts, and the loop knows when to come back.
    assert!(report.records_written);
    assert_eq!(report.next_due, Some(Duration::from_secs(600)));

    // Within the refresh: no calls at all.
    let report = s.watcher.tick(at(599)).await;
    assert_eq!(report.facts_calls, 0);
    assert_eq!(s.fake.calls("DescribeTargetGroups"), 1);
    // Due again; unchanged facts are not written again.
    let report = s.watcher.tick(at(600)).await;
    assert_eq!(report.facts_calls, 1);
    assert_eq!(s.fake.calls("DescribeTargetGroups"), 2);
    assert!(!report.records_written, "only the time changed");
    assert_eq!(s.api.configmap_writes().len(), 1);
}

#[tokio::test]
async fn nothing_gated_costs_nothing() {
    let mut s = refreshing(vec![], 2).await;
    let report = s.watcher.tick(at(0)).await;
    assert_eq!(report, gracegate::watcher::TickReport::default());
    assert!(s.fake.requests().is_empty());
    assert!(s.api.seen().is_empty());
}

#[tokio::test]
async fn facts_queue_behind_target_health_in_one_round() {
    let pending = pod("new", "10.0.0.9", GATE, Duration::from_secs(5), json!([]));
    let mut s = refreshing(vec![pending], 0).await;
    s.fake.set_health(
        ARN,
        "10.0.0.9",
        80,
        "initial",
        Some("Elb.InitialHealthChecking"),
        None,
    );
    let report = s.watcher.tick(at(0)).await;
    assert_eq!(
        (report.describe_calls, report.facts_calls, report.patches),
        (1, 1, 1)
    );
    // Made in that order: the health call took its turn in the bucket first.
    let actions: Vec<String> = s.fake.requests().iter().map(|r| r.action.clone()).collect();
    assert_eq!(actions[0], "DescribeTargetHealth", "{actions:?}");
}

#[tokio::test]
async fn a_target_group_that_cannot_be_read_is_retried_in_a_minute() {
    // The binding tgb-0 points at arn:tg/0, which the load balancer does not know.
    let mut p = ready("p1", "10.0.0.7");
    p.spec.as_mut().unwrap().readiness_gates =
        Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
            condition_type: "target-health.elbv2.k8s.aws/tgb-0".into(),
        }]);
    p.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(
            json!({ "type": "target-health.elbv2.k8s.aws/tgb-0", "status": "True" }),
        )
        .unwrap(),
    ]);
    let mut s = refreshing(vec![p], 1).await;
    let report = s.watcher.tick(at(0)).await;
    assert_eq!(report.facts_calls, 1);
    assert!(
        s.watcher.records().is_empty(),
        "nothing learnt, nothing written"
    );
    assert!(s.api.seen().is_empty());
    assert_eq!(s.watcher.tick(at(59)).await.facts_calls, 0);
    assert_eq!(s.watcher.tick(at(60)).await.facts_calls, 1);
}
