//! The end of a pod's life, as the load balancer sees it. Pure.
//!
//! A terminating pod's target should be gone from the target group before the pod's preStop
//! sleep ends: while it is `healthy` the ELB certainly sends it new requests, and while it is
//! `draining` it may still (NLBs are reported to for minutes), which is the 502 at the end of
//! a rollout. The watcher follows each departing target until the ELB no longer lists it,
//! measures the controller's lag (deleted → first `draining`) and the drain (deleted → gone),
//! and warns when the sleep ended while the target was still listed.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::elb::{TargetGroup, TargetHealth, TargetId, TargetState};
use crate::inject::sleep_seconds;
use crate::objects::NamespaceObjects;
use crate::targets;

/// After this long a departure is no longer followed, whatever the ELB says.
pub const GIVE_UP_AFTER: SignedDuration = SignedDuration::from_mins(15);

/// A terminating pod's target, followed until it is deregistered.
#[derive(Clone, Debug, PartialEq)]
pub struct Departure {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub group: TargetGroup,
    pub target: TargetId,
    /// When the delete was asked for: endpoints drop the pod and the controller deregisters it.
    pub deleted_at: Timestamp,
    /// When the preStop sleep ends and the container gets SIGTERM.
    pub prestop_ends: Timestamp,
    pub draining_at: Option<Timestamp>,
    /// `TerminatedBeforeDeregistered` was reported.
    pub warned: bool,
    /// Seen `draining` after the preStop sleep ended (reported once the target is gone).
    pub draining_after_prestop: bool,
    /// Seen listed at least once: only then does "gone" measure a drain (a target already
    /// gone when first looked at, or never registered, says nothing about how long it took).
    pub seen_listed: bool,
}

/// What a departure's latest observation means.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Still on its way out.
    Continue,
    /// The preStop sleep is over and the ELB still routes new requests here.
    StillHealthyAfterPrestop { late_seconds: f64 },
    /// Gone from the target group.
    Gone(Gone),
    /// Followed for too long; stop. `draining_after_prestop`: seconds it was still listed
    /// (draining) after the sleep ended, when it was.
    GiveUp { draining_after_prestop: Option<f64> },
}

/// A departure's end.
#[derive(Clone, Debug, PartialEq)]
pub struct Gone {
    /// Deleted → gone, when it measures a drain (see [`Departure::seen_listed`]).
    pub drain_seconds: Option<f64>,
    /// Deleted → first `draining`, when it was seen draining.
    pub lag_seconds: Option<f64>,
    /// The sleep ended while it was draining: it stayed listed this much longer.
    pub draining_after_prestop: Option<f64>,
}

/// Advance a departure with the target's health (`None`: the ELB does not list it).
pub fn observe(d: &mut Departure, health: Option<&TargetHealth>, now: Timestamp) -> Step {
    let since = |t: Timestamp| now.duration_since(t).as_secs_f64().max(0.0);
    let gone = health.is_none_or(|h| h.is_not_registered() || h.state == TargetState::Unused);
    if gone {
        return Step::Gone(Gone {
            drain_seconds: d.seen_listed.then(|| since(d.deleted_at)),
            lag_seconds: d
                .draining_at
                .map(|t| t.duration_since(d.deleted_at).as_secs_f64().max(0.0)),
            draining_after_prestop: d.draining_after_prestop.then(|| since(d.prestop_ends)),
        });
    }
    d.seen_listed = true;
    let state = health.map(|h| &h.state);
    let draining = matches!(
        state,
        Some(TargetState::Draining | TargetState::UnhealthyDraining)
    );
    if draining {
        d.draining_at.get_or_insert(now);
        // One report per departure: a target already reported healthy past its sleep is not
        // reported again for draining.
        if now >= d.prestop_ends && !d.warned {
            d.draining_after_prestop = true;
        }
    }
    if now.duration_since(d.deleted_at) > GIVE_UP_AFTER {
        return Step::GiveUp {
            draining_after_prestop: d.draining_after_prestop.then(|| since(d.prestop_ends)),
        };
    }
    if state == Some(&TargetState::Healthy) && now >= d.prestop_ends && !d.warned {
        d.warned = true;
        d.draining_after_prestop = false;
        return Step::StillHealthyAfterPrestop {
            late_seconds: since(d.prestop_ends),
        };
    }
    Step::Continue
}

/// The departures of terminating `pods` (all of one namespace): one per pod and target.
pub fn departures(
    pods: &[std::sync::Arc<Pod>],
    objects: &NamespaceObjects,
    node: impl Fn(&str) -> Option<std::sync::Arc<Node>>,
    condition_prefix: &str,
) -> Vec<Departure> {
    let mut out: Vec<Departure> = Vec::new();
    for pod in pods {
        let Some(deletion) = pod.metadata.deletion_timestamp.as_ref() else {
            continue;
        };
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_default();
        // A grace period too long to subtract (the API server takes any int64) makes no drain
        // worth measuring: such a pod is not followed, rather than the tick failing.
        let Ok(deleted_at) = deletion.0.checked_sub(SignedDuration::from_secs(grace)) else {
            continue;
        };
        let gates = pod
            .spec
            .iter()
            .flat_map(|s| s.readiness_gates.iter().flatten());
        for gate in gates {
            let Some(parsed) = targets::parse_gate(&gate.condition_type, condition_prefix) else {
                continue;
            };
            let Some(binding) = targets::resolve(&parsed, objects) else {
                continue;
            };
            let Some(group) = binding.target_group() else {
                continue;
            };
            let Some(service) = objects.service(&binding.spec.service_ref.name) else {
                continue;
            };
            let Ok(target) = targets::target(pod, binding, service, &node) else {
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if out
                .iter()
                .any(|d| d.uid == uid && d.group == group && d.target == target)
            {
                continue;
            }
            let sleep = prestop_sleep(pod, &target);
            out.push(Departure {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                uid,
                group,
                // A sleep that ends past the last representable time never ends.
                prestop_ends: i64::try_from(sleep)
                    .ok()
                    .and_then(|s| deleted_at.checked_add(SignedDuration::from_secs(s)).ok())
                    .unwrap_or(Timestamp::MAX),
                target,
                deleted_at,
                draining_at: None,
                warned: false,
                draining_after_prestop: false,
                seen_listed: false,
            });
        }
    }
    out
}

/// The preStop sleep of the container serving `target` (by port), else the longest one.
fn prestop_sleep(pod: &Pod, target: &TargetId) -> u64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let sleep = |c: &k8s_openapi::api::core::v1::Container| {
        let handler = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())?;
        sleep_seconds(handler).or_else(|| waiter_deadline(handler))
    };
    let serving = spec.containers.iter().find(|c| {
        c.ports
            .iter()
            .flatten()
            .any(|p| p.container_port == target.port)
    });
    serving
        .and_then(sleep)
        .or_else(|| spec.containers.iter().filter_map(sleep).max())
        .unwrap_or(0)
}

/// A drain-wait preStop (`…/gracegate-wait wait … --max-seconds N`, issue 14) ends at the
/// latest after `N` seconds (the waiter's default, 300, without the flag). Released earlier, it
/// ends once the target is gone: nothing routes to it then, so only the deadline can end it
/// too early, and that is what the early-death reports must measure against.
fn waiter_deadline(handler: &k8s_openapi::api::core::v1::LifecycleHandler) -> Option<u64> {
    let command = handler.exec.as_ref()?.command.as_ref()?;
    let (program, args) = command.split_first()?;
    let file = program.rsplit('/').next();
    if file != Some("gracegate-wait") || args.first().map(String::as_str) != Some("wait") {
        return None;
    }
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--max-seconds") {
            Some("") => args.next().map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => continue,
        };
        // The waiter reads an unparseable value as its default too.
        return Some(
            value
                .and_then(|v| v.parse().ok())
                .unwrap_or(WAITER_DEFAULT_SECONDS),
        );
    }
    Some(WAITER_DEFAULT_SECONDS)
}

/// `gracegate-wait`'s deadline without `--max-seconds` (waiter/README.md).
const WAITER_DEFAULT_SECONDS: u64 = 300;

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn departure() -> Departure {
        Departure {
            namespace: "ns".into(),
            pod: "p".into(),
            uid: "u".into(),
            group: TargetGroup::Arn("arn".into()),
            target: TargetId {
                id: "10.0.0.7".into(),
                port: 80,
            },
            deleted_at: at(0),
            prestop_ends: at(40),
            draining_at: None,
            warned: false,
            draining_after_prestop: false,
            seen_listed: false,
        }
    }

    fn health(state: &str, reason: Option<&str>) -> Option<TargetHealth> {
        Some(TargetHealth {
            state: TargetState::from_wire(state),
            reason: reason.map(String::from),
            description: None,
        })
    }

    fn gone(drain: Option<f64>, lag: Option<f64>, after: Option<f64>) -> Step {
        Step::Gone(Gone {
            drain_seconds: drain,
            lag_seconds: lag,
            draining_after_prestop: after,
        })
    }

    const DRAINING: &str = "draining";

    /// A departure observed at each `(second, state)` in turn (`None`: not listed); the steps.
    #[rstest]
    #[case::draining_then_gone_in_time(&[(5, Some(DRAINING)), (35, None)], vec![Step::Continue, gone(Some(35.0), Some(5.0), None)])]
    #[case::healthy_during_the_sleep(&[(39, Some("healthy"))], vec![Step::Continue])]
    #[case::healthy_after_the_sleep(&[(42, Some("healthy"))], vec![Step::StillHealthyAfterPrestop { late_seconds: 2.0 }])]
    #[case::healthy_reported_once_then_draining_is_not_reported_again(
        &[(41, Some("healthy")), (42, Some("healthy")), (43, Some(DRAINING)), (60, None)],
        vec![Step::StillHealthyAfterPrestop { late_seconds: 1.0 }, Step::Continue, Step::Continue, gone(Some(60.0), Some(43.0), None)])]
    #[case::draining_past_the_sleep(&[(3, Some(DRAINING)), (45, Some(DRAINING)), (130, None)], vec![Step::Continue, Step::Continue, gone(Some(130.0), Some(3.0), Some(90.0))])]
    #[case::draining_seen_only_after_the_sleep(&[(50, Some(DRAINING)), (70, None)], vec![Step::Continue, gone(Some(70.0), Some(50.0), Some(30.0))])]
    #[case::gone_at_first_look_measures_nothing(&[(35, None)], vec![gone(None, None, None)])]
    #[case::never_registered(&[(2, Some("unused"))], vec![gone(None, None, None)])]
    #[case::listed_then_unused(&[(2, Some("healthy")), (31, Some("unused"))], vec![Step::Continue, gone(Some(31.0), None, None)])]
    #[case::followed_too_long(&[(5, Some(DRAINING)), (901, Some(DRAINING))], vec![Step::Continue, Step::GiveUp { draining_after_prestop: Some(861.0) }])]
    #[case::followed_too_long_within_the_sleep(&[(901, Some("healthy"))], vec![Step::GiveUp { draining_after_prestop: None }])]
    fn steps(#[case] looks: &[(i64, Option<&str>)], #[case] expected: Vec<Step>) {
        let mut d = departure();
        let got: Vec<Step> = looks
            .iter()
            .map(|(s, state)| {
                let h = state
                    .and_then(|st| health(st, (st == "unused").then_some("Target.NotRegistered")));
                observe(&mut d, h.as_ref(), at(*s))
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[rstest]
    #[case::flag_then_value(&["/.gracegate/gracegate-wait", "wait", "--url", "https://g", "--max-seconds", "120"], Some(120))]
    #[case::flag_equals_value(&["/.gracegate/gracegate-wait", "wait", "--max-seconds=90"], Some(90))]
    #[case::no_flag_is_the_default(&["/.gracegate/gracegate-wait", "wait", "--url", "https://g"], Some(300))]
    #[case::unparseable_is_the_default(&["gracegate-wait", "wait", "--max-seconds", "soon"], Some(300))]
    #[case::install_is_no_wait(&["/.gracegate/gracegate-wait", "install", "/x"], None)]
    #[case::another_program(&["/bin/my-gracegate-wait", "wait", "--max-seconds", "5"], None)]
    #[case::a_shell(&["/bin/sh", "-c", "gracegate-wait wait --max-seconds 5"], None)]
    fn a_drain_wait_prestop_ends_by_its_deadline(
        #[case] command: &[&str],
        #[case] expected: Option<u64>,
    ) {
        let handler: k8s_openapi::api::core::v1::LifecycleHandler =
            serde_json::from_value(serde_json::json!({ "exec": { "command": command } })).unwrap();
        assert_eq!(waiter_deadline(&handler), expected);
    }

    #[test]
    fn the_first_draining_sighting_is_kept() {
        let mut d = departure();
        observe(&mut d, health("healthy", None).as_ref(), at(1));
        observe(&mut d, health(DRAINING, None).as_ref(), at(3));
        observe(&mut d, health(DRAINING, None).as_ref(), at(4));
        assert_eq!(d.draining_at, Some(at(3)));
    }

    #[test]
    fn departures_of_terminating_pods() {
        let objects = NamespaceObjects {
            namespace: None,
            services: vec![std::sync::Arc::new(
                serde_json::from_str(include_str!("../tests/fixtures/cluster/service.json"))
                    .unwrap(),
            )],
            bindings: vec![std::sync::Arc::new(
                serde_json::from_str(include_str!(
                    "../tests/fixtures/cluster/targetgroupbinding.json"
                ))
                .unwrap(),
            )],
            ingresses: vec![],
            target_groups: Default::default(),
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "game-2048", "uid": "u",
                          "deletionTimestamp": "2026-11-26T12:01:10Z", "deletionGracePeriodSeconds": 70 },
            "spec": {
                "readinessGates": [{ "conditionType": "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b" }],
                "containers": [
                    { "name": "app", "ports": [{ "name": "http", "containerPort": 80 }],
                      "lifecycle": { "preStop": { "sleep": { "seconds": 40 } } } },
                    { "name": "sidecar", "lifecycle": { "preStop": { "sleep": { "seconds": 5 } } } },
                ],
            },
            "status": { "podIP": "10.0.0.7" },
        }))
        .unwrap();
        let live = {
            let mut p = pod.clone();
            p.metadata.deletion_timestamp = None;
            p
        };
        let pods = vec![std::sync::Arc::new(pod), std::sync::Arc::new(live)];
        let got = departures(&pods, &objects, |_| None, "target-health.elbv2.k8s.aws");
        assert_eq!(got.len(), 1);
        let d = &got[0];
        assert_eq!(
            d.target,
            TargetId {
                id: "10.0.0.7".into(),
                port: 80
            }
        );
        assert_eq!(d.deleted_at.to_string(), "2026-11-26T12:00:00Z");
        // The serving container's sleep, not the sidecar's.
        assert_eq!(d.prestop_ends.to_string(), "2026-11-26T12:00:40Z");
    }
}
