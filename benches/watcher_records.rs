//! What learning the target groups costs: the facts calls per target group and hour, and the
//! `gracegate-target-groups` ConfigMap writes during a 1,000-pod rollout.
//!
//! 1,000 gated pods over 50 target groups (fake ELBv2 through the real SDK, mock API server),
//! driven through `Watcher::tick` on a simulated clock (the time each tick is given):
//!
//! 1. steady state for an hour: ticks only when the loop would wake (`TickReport::next_due`);
//!    counted are the DescribeTargetGroups / DescribeTargetGroupAttributes calls;
//! 2. a rollout replacing all 1,000 pods, two deleted per second; each target drains for
//!    20–80 s (deterministic pseudo-random) and then leaves its target group; each pod object
//!    goes 40 s after its deletion (its preStop sleep). Ticks every second; counted are the
//!    ConfigMap writes and their size.
//!
//!     cargo bench --bench watcher_records

#[path = "../tests/support/fake_elb.rs"]
mod fake_elb;
#[allow(dead_code)]
#[path = "../tests/watcher/harness.rs"]
mod harness;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;
use serde_json::json;

use harness::*;

const PODS: i64 = 1000;
const GROUPS: i64 = 50;
const T0: i64 = 1_800_000_000;

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(T0 + s).unwrap())
}

fn ip(i: i64) -> String {
    format!("10.1.{}.{}", i / 250, i % 250)
}

fn arn(i: i64) -> String {
    format!("arn:tg/{}", i % GROUPS)
}

fn gated(i: i64) -> k8s_openapi::api::core::v1::Pod {
    let gate = format!("target-health.elbv2.k8s.aws/tgb-{}", i % GROUPS);
    pod(
        &format!("p{i}"),
        &ip(i),
        &gate,
        Duration::from_secs(3600),
        json!([{ "type": gate, "status": "True" }]),
    )
}

/// 20–80 s, the same every run (xorshift).
fn drain_seconds(i: i64) -> i64 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    20 + (x % 61) as i64
}

#[tokio::main]
async fn main() {
    let pods: Vec<_> = (0..PODS).map(gated).collect();
    let mut s = setup_full(
        pods,
        cluster(GROUPS as usize, false),
        settings_with_records(Some(Duration::from_secs(600))),
        elb_options(),
    )
    .await;
    for g in 0..GROUPS {
        s.fake.add_target_group(&arn(g), &format!("tgb-{g}"));
    }
    for i in 0..PODS {
        s.fake
            .set_health(&arn(i), &ip(i), 80, "healthy", None, None);
    }

    // 1. An hour of steady state, waking only when the loop would.
    let mut now = 0;
    let mut ticks = 0;
    while now <= 3600 {
        let report = s.watcher.tick(at(now)).await;
        ticks += 1;
        let next = report.next_due.map_or(3600, |d| d.as_secs().max(1) as i64);
        now += next;
    }
    let facts_calls = s.fake.calls("DescribeTargetGroups");
    let attribute_calls = s.fake.calls("DescribeTargetGroupAttributes");
    println!("## steady state, 1 h, {GROUPS} target groups, facts refresh 10 min");
    println!(
        "| ticks | DescribeTargetGroups | DescribeTargetGroupAttributes | per target group and hour | DescribeTargetHealth |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {ticks} | {facts_calls} | {attribute_calls} | {:.1} | {} |",
        (facts_calls + attribute_calls) as f64 / GROUPS as f64,
        s.fake.calls("DescribeTargetHealth")
    );
    let writes_before = s.api.configmap_writes().len();

    // 2. The rollout: pod i deleted at start + i/2, with a 70 s grace period and 40 s sleep.
    let start = 4000;
    let mut deleted = vec![false; PODS as usize];
    let mut object_gone = vec![false; PODS as usize];
    let mut target_gone = vec![false; PODS as usize];
    let mut max_departing = 0;
    let mut now = start;
    loop {
        for i in 0..PODS {
            let deletion = start + i / 2;
            let u = i as usize;
            if !deleted[u] && now >= deletion {
                deleted[u] = true;
                let mut p = gated(i);
                p.metadata.deletion_timestamp = Some(at(deletion + 70));
                p.metadata.deletion_grace_period_seconds = Some(70);
                p.spec.as_mut().unwrap().containers[0].lifecycle = Some(
                    serde_json::from_value(json!({ "preStop": { "sleep": { "seconds": 40 } } }))
                        .unwrap(),
                );
                p.metadata.resource_version = Some("2".into());
                s.pods.writer.apply_watcher_event(&Event::Apply(p));
                s.fake.set_health(
                    &arn(i),
                    &ip(i),
                    80,
                    "draining",
                    Some("Target.DeregistrationInProgress"),
                    None,
                );
            }
            if deleted[u] && !target_gone[u] && now >= deletion + drain_seconds(i) {
                target_gone[u] = true;
                s.fake.deregister(&arn(i), &ip(i), 80);
            }
            if deleted[u] && !object_gone[u] && now >= deletion + 40 {
                object_gone[u] = true;
                let p = gated(i);
                s.pods.writer.apply_watcher_event(&Event::Delete(p.clone()));
                s.watcher.gone_pods().push(p);
            }
        }
        let report = s.watcher.tick(at(now)).await;
        max_departing = max_departing.max(report.departing);
        if target_gone.iter().all(|g| *g) && report.departing == 0 && report.next_due.is_none() {
            break;
        }
        now += 1;
    }
    let writes: Vec<_> = s.api.configmap_writes()[writes_before..].to_vec();
    let bytes: Vec<usize> = writes
        .iter()
        .map(|w| serde_json::to_vec(&w.body).unwrap().len())
        .collect();
    let drains: usize = s
        .watcher
        .records()
        .by_key
        .values()
        .map(|r| r.drains.len())
        .sum();
    println!();
    println!(
        "## rollout of {PODS} pods over {GROUPS} target groups, 2 deleted per second, drains 20–80 s"
    );
    println!(
        "| rollout seconds | drains measured (kept) | max departing | ConfigMap writes | writes per minute | last write bytes | bytes written |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {:.1} | {} | {} |",
        now - start,
        drains,
        max_departing,
        writes.len(),
        writes.len() as f64 / ((now - start) as f64 / 60.0),
        bytes.last().copied().unwrap_or(0),
        bytes.iter().sum::<usize>()
    );
}
