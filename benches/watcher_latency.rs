//! 1,000 pending pods over 50 target groups, against the fake ELBv2 endpoint (real SDK) and
//! a mock API server: each target turns healthy at a random time; measured is the time from
//! "the fake says healthy" to "the status patch is sent", the DescribeTargetHealth calls per
//! tick against the number of target groups with pending pods, and the calls per second once
//! everything is healthy.
//!
//! The watcher is driven through `Watcher::tick` on the same 1 s cadence `Watcher::run`
//! keeps, so each tick's report can be read; a task plays the pod watch, applying each
//! patched condition to the store 50 ms after it was sent.
//!
//!     cargo bench --bench watcher_latency

#[path = "../tests/support/fake_elb.rs"]
mod fake_elb;
#[allow(dead_code)]
#[path = "../tests/watcher/harness.rs"]
mod harness;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kube::runtime::watcher::Event;
use serde_json::json;
use tokio::time::Instant;

use harness::*;

const PODS: usize = 1000;
const GROUPS: usize = 50;
const SPREAD: Duration = Duration::from_secs(10);

/// A small deterministic generator (xorshift), so every run schedules the same times.
fn schedule(seed: u64) -> Vec<Duration> {
    let mut x = seed;
    (0..PODS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(1000 + x % SPREAD.as_millis() as u64)
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    // As the tests run it (no client-side limit to speak of), then with the default token
    // bucket (20 calls/s, burst 40), which is what a cluster gets.
    scenario("token bucket 1000/s", elb_options()).await;
    let defaults = gracegate::aws::ElbOptions {
        rate_per_second: 20.0,
        burst: 40,
        ..elb_options()
    };
    scenario("default token bucket, 20/s burst 40", defaults).await;
}

async fn scenario(label: &str, options: gracegate::aws::ElbOptions) {
    let name = |i: usize| format!("p{i}");
    let ip = |i: usize| format!("10.0.{}.{}", i / 250, i % 250);
    let gate = |i: usize| format!("target-health.elbv2.k8s.aws/tgb-{}", i % GROUPS);
    let pods: Vec<_> = (0..PODS)
        .map(|i| {
            pod(
                &name(i),
                &ip(i),
                &gate(i),
                Duration::from_secs(1),
                json!([]),
            )
        })
        .collect();
    let Setup {
        fake,
        api,
        mut pods,
        mut watcher,
        ..
    } = setup_with(pods, cluster(GROUPS, false), None, options).await;
    for g in 0..GROUPS {
        fake.add_target_group(&format!("arn:tg/{g}"), &format!("tg-{g}"));
    }
    for i in 0..PODS {
        fake.set_health(
            &format!("arn:tg/{}", i % GROUPS),
            &ip(i),
            80,
            "initial",
            Some("Elb.InitialHealthChecking"),
            Some("Initial health checks in progress"),
        );
    }

    // Targets turn healthy at their scheduled times.
    let start = Instant::now();
    let times = schedule(0x9E37_79B9_7F4A_7C15);
    let healthy_at: HashMap<String, Instant> =
        (0..PODS).map(|i| (name(i), start + times[i])).collect();
    let handle = fake.handle();
    let mut order: Vec<usize> = (0..PODS).collect();
    order.sort_by_key(|&i| times[i]);
    let flips = tokio::spawn({
        async move {
            for i in order {
                tokio::time::sleep_until(start + times[i]).await;
                handle.set_health(
                    &format!("arn:tg/{}", i % GROUPS),
                    &ip(i),
                    80,
                    "healthy",
                    None,
                    None,
                );
            }
        }
    });

    // The ticks, and the pod watch catching up with each patch.
    let mut true_in_store: BTreeSet<String> = BTreeSet::new();
    let mut applied = 0;
    let mut ticks: Vec<(usize, usize)> = Vec::new(); // (groups with pending pods, describe calls)
    let mut healthy_since: Option<Instant> = None;
    let mut calls_when_healthy = 0;
    let mut last = Instant::now();
    loop {
        let seen = api.patches();
        // Apply in order, only those old enough: keep `applied` at the first too-young one.
        while applied < seen.len() && seen[applied].at + Duration::from_millis(50) <= Instant::now()
        {
            let p = &seen[applied];
            let pod_name = p.path.rsplit('/').nth(1).unwrap();
            let i: usize = pod_name[1..].parse().unwrap();
            let condition = p.body["status"]["conditions"][0].clone();
            if condition["status"] == "True" {
                true_in_store.insert(pod_name.to_string());
            }
            let mut updated = pod(
                pod_name,
                &ip(i),
                &gate(i),
                Duration::from_secs(1),
                json!([condition]),
            );
            updated.metadata.resource_version = Some(applied.to_string());
            pods.writer.apply_watcher_event(&Event::Apply(updated));
            applied += 1;
        }
        let pending_groups: BTreeSet<usize> = (0..PODS)
            .filter(|i| !true_in_store.contains(&name(*i)))
            .map(|i| i % GROUPS)
            .collect();
        let before = fake.calls("DescribeTargetHealth");
        let report = watcher.tick(now()).await;
        let calls = fake.calls("DescribeTargetHealth") - before;
        if report.pending > 0 || !pending_groups.is_empty() {
            ticks.push((pending_groups.len(), report.describe_calls));
        } else {
            let since = *healthy_since.get_or_insert(Instant::now());
            calls_when_healthy += calls;
            if since.elapsed() >= Duration::from_secs(5) {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "did not settle");
        last += Duration::from_secs(1);
        tokio::time::sleep_until(last).await;
    }
    flips.await.unwrap();

    let mut latencies: Vec<Duration> = api
        .patches()
        .iter()
        .filter(|p| p.body["status"]["conditions"][0]["status"] == "True")
        .map(|p| p.at - healthy_at[p.path.rsplit('/').nth(1).unwrap()])
        .collect();
    latencies.sort();
    assert_eq!(latencies.len(), PODS, "every gate turned True once");
    let exact = ticks
        .iter()
        .filter(|(groups, calls)| groups == calls)
        .count();
    let over = ticks
        .iter()
        .filter(|(groups, calls)| calls > groups)
        .count();
    println!(
        "\nwatcher latency ({label}): {PODS} pods over {GROUPS} target groups, healthy times spread over {SPREAD:?}"
    );
    println!("| measure | value |\n|---|---|");
    for (label, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        println!(
            "| healthy → patch {label} | {:.0} ms |",
            percentile(&latencies, p).as_secs_f64() * 1e3
        );
    }
    println!(
        "| healthy → patch max | {:.0} ms |",
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("| ticks with pending pods | {} |", ticks.len());
    println!("| ticks where Describe calls = target groups with pending pods | {exact} |");
    println!("| ticks with more calls than target groups with pending pods | {over} |");
    println!(
        "| most calls in one tick | {} |",
        ticks.iter().map(|t| t.1).max().unwrap_or(0)
    );
    println!("| Describe calls in 5 s with everything healthy | {calls_when_healthy} |");
    println!(
        "| status patches sent | {} (for {PODS} pods: initial False + True) |",
        api.patches().len()
    );
    for (groups, calls) in &ticks {
        if groups != calls {
            println!("  tick: {groups} target groups pending per the store, {calls} calls");
        }
    }
}
