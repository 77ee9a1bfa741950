//! A rollout lab, simulated: pure, deterministic, seeded. Five replicas behind a network load
//! balancer that keeps routing new connections to a draining target 100–130 s after
//! deregistration (`D` = 5), 20 requests/s spread over every routed target, one pod replaced
//! every 30 s. A request routed to a pod whose preStop has ended is lost. `S` for each rollout
//! comes from gracegate's own timing rule, fed what the watcher would know by then.

use gracegate::binding::DelaySource;
use gracegate::binding::{TargetGroupBinding, origin_kind};
use gracegate::elb::LoadBalancerKind;
use gracegate::facts::MIN_DRAINS;
use gracegate::timing::{Evidence, MeasuredDrain, TimingSettings, timing};
use k8s_openapi::api::core::v1::Service;

const REPLICAS: u64 = 5;
const RATE: u64 = 20;
const STEP: u64 = 30;
const D: u32 = 5;

/// A small LCG: the same routing times on every run.
struct Lcg(u64);
impl Lcg {
    fn routed_for(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        100 + (self.0 >> 33) % 31
    }
}

/// Requests lost in one rollout where every old pod sleeps `s`; the routing times seen.
fn rollout(s: u64, rng: &mut Lcg) -> (u64, Vec<u64>) {
    // Old pod i deregisters at i * STEP; it stays routed for r_i and serves until + s.
    let old: Vec<(u64, u64)> = (0..REPLICAS)
        .map(|i| (i * STEP, rng.routed_for()))
        .collect();
    let end = REPLICAS * STEP + 200;
    let mut lost = 0;
    for t in 0..end {
        // Targets routed at second t: the new pods started so far (one per step, healthy at
        // once), the old ones not yet replaced, and the draining ones still routed.
        let new = (t / STEP + 1).min(REPLICAS);
        let routed: Vec<bool> = old
            .iter()
            .filter(|(at, r)| t < at + r)
            .map(|(at, _)| t >= at + s) // true: routed but stopped
            .collect();
        let targets = new + routed.len() as u64;
        let stopped = routed.iter().filter(|&&x| x).count() as u64;
        // Even spread, in whole requests over the second.
        lost += RATE * stopped / targets;
    }
    (lost, old.iter().map(|(_, r)| *r).collect())
}

/// Losses per rollout over `rollouts`, `S` from the rule with `settings`; `kind_known`: the
/// first rollout's pods already know they are behind an NLB.
fn lab(settings: &TimingSettings, kind_known: bool, rollouts: usize) -> Vec<u64> {
    let mut rng = Lcg(17);
    let mut drains: Vec<u64> = Vec::new();
    let mut facts_read = false;
    let mut out = Vec::new();
    for _ in 0..rollouts {
        let measured = (drains.len() >= MIN_DRAINS).then(|| {
            let mut d = drains.clone();
            d.sort();
            MeasuredDrain {
                p99_seconds: d[(d.len() * 99).div_ceil(100) - 1] as f64,
                count: d.len(),
                target_group: "k8s-nlb".into(),
            }
        });
        let nlb = facts_read || kind_known;
        let evidence = Evidence {
            delay: Some((D, DelaySource::TargetGroup("k8s-nlb".into()))),
            unmeasured_nlbs: if nlb && measured.is_none() {
                vec!["k8s-nlb".into()]
            } else {
                vec![]
            },
            measured,
        };
        let s = timing(settings, &evidence, None, None).prestop_seconds;
        let (lost, routed) = rollout(u64::from(s), &mut rng);
        out.push(lost);
        drains.extend(routed);
        facts_read = true;
    }
    out
}

/// The binding the AWS Load Balancer Controller creates for a Service: its labels say NLB.
fn labelled_binding_is_an_nlb() -> bool {
    let binding: TargetGroupBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "elbv2.k8s.aws/v1beta1", "kind": "TargetGroupBinding",
        "metadata": { "name": "k8s-web-web-0123456789", "namespace": "web",
                      "labels": { "service.k8s.aws/stack-namespace": "web",
                                  "service.k8s.aws/stack-name": "web" } },
        "spec": { "serviceRef": { "name": "web", "port": 80 },
                  "targetGroupARN": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/k8s-nlb/0123456789abcdef" },
    }))
    .unwrap();
    origin_kind(&binding, &Service::default()) == Some(LoadBalancerKind::Network)
}

/// The rule before the NLB default: no NLB default, drains cut at 120.
fn old_rule() -> TimingSettings {
    TimingSettings {
        nlb_prestop_seconds: 0,
        max_measured_prestop_seconds: 120,
        ..TimingSettings::default()
    }
}

// Measured: old rule [1067, 22, 0, 10]; labelled [0, 2, 0, 0]; unlabelled [1067, 2, 0, 0]
// (of ~7,000 requests a rollout). From the second rollout on `S` follows the p99 of the drains
// measured so far + 5 s: five samples of 100–130 s can undershoot the slowest later target by a
// second or two, hence the 2.
#[test]
fn a_labelled_nlb_loses_nothing_in_its_first_rollout() {
    let before = lab(&old_rule(), false, 4);
    assert!(before[0] > 1000, "old rule: {before:?}");
    assert!(labelled_binding_is_an_nlb());
    let labelled = lab(&TimingSettings::default(), true, 4);
    assert_eq!(labelled[0], 0, "{labelled:?}");
    for (new, old) in labelled.iter().zip(&before).skip(1) {
        assert!(
            new <= old && *new < 10,
            "labelled {labelled:?}, before {before:?}"
        );
    }
}

#[test]
fn an_unlabelled_nlb_loses_at_most_its_first_rollout() {
    let before = lab(&old_rule(), false, 4);
    let unlabelled = lab(&TimingSettings::default(), false, 4);
    assert!(
        unlabelled[0] > 1000,
        "the first rollout slept D + 10: {unlabelled:?}"
    );
    for (new, old) in unlabelled.iter().zip(&before).skip(1) {
        assert!(
            new <= old && *new < 10,
            "unlabelled {unlabelled:?}, before {before:?}"
        );
    }
}

#[test]
fn the_lab_is_deterministic() {
    assert_eq!(lab(&old_rule(), false, 4), vec![1067, 22, 0, 10]);
    assert_eq!(lab(&TimingSettings::default(), true, 4), vec![0, 2, 0, 0]);
    assert_eq!(
        lab(&TimingSettings::default(), false, 4),
        vec![1067, 2, 0, 0]
    );
}
