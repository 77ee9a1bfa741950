//! The real loop in one process: mock API server + fake ELBv2 + `Watcher::run`.

use std::time::Duration;

use kube::runtime::watcher::Event;
use serde_json::json;
use tokio::time::Instant;

use crate::harness::*;

#[tokio::test]
async fn pending_pod_turns_true_within_one_and_a_half_seconds_of_healthy() {
    let s = setup(vec![], cluster(0, false), None).await;
    let Setup {
        fake,
        api,
        mut pods,
        wake,
        watcher,
        ..
    } = s;
    fake.set_health(
        ARN,
        "10.0.0.7",
        80,
        "initial",
        Some("Elb.InitialHealthChecking"),
        Some("Initial health checks in progress"),
    );
    let loop_task = tokio::spawn(watcher.run());

    // Nothing pending: the loop makes no calls at all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.calls("DescribeTargetHealth"), 0);

    // A pod appears: its event wakes the loop at once.
    let appeared = Instant::now();
    pods.writer.apply_watcher_event(&Event::Apply(pod(
        "p1",
        "10.0.0.7",
        GATE,
        Duration::ZERO,
        json!([]),
    )));
    wake.notify_one();
    let first = wait_for(&api, |p| {
        p.body["status"]["conditions"][0]["status"] == "False"
    })
    .await;
    assert!(
        first.at - appeared < Duration::from_millis(500),
        "first patch after {:?}",
        first.at - appeared
    );

    // The ELB turns healthy: True follows within 1.5 s.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let healthy = Instant::now();
    fake.set_health(ARN, "10.0.0.7", 80, "healthy", None, None);
    let done = wait_for(&api, |p| {
        p.body["status"]["conditions"][0]["status"] == "True"
    })
    .await;
    let latency = done.at - healthy;
    assert!(
        latency <= Duration::from_millis(1500),
        "healthy → patch took {latency:?}"
    );

    // The store catches up; with nothing pending the loop goes quiet.
    let mut updated = pod(
        "p1",
        "10.0.0.7",
        GATE,
        Duration::ZERO,
        json!([{ "type": GATE, "status": "True" }]),
    );
    updated.metadata.resource_version = Some("2".into());
    pods.writer.apply_watcher_event(&Event::Apply(updated));
    wake.notify_one();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let calls = fake.calls("DescribeTargetHealth");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.calls("DescribeTargetHealth"),
        calls,
        "calls while nothing is pending"
    );
    loop_task.abort();
}

async fn wait_for(api: &MockApi, pred: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = api.patches().into_iter().find(|p| pred(p)) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "no such patch; saw {:?}",
            api.seen()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
