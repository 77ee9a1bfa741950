//! The end of a pod's life, as the load balancer sees it. Pure.
//!
//! A terminating pod's target should leave `healthy` (start `draining`) before the pod's
//! preStop sleep ends: otherwise the ELB still sends new requests to a process that is
//! shutting down, which is the 502 at the end of a rollout. The watcher tracks each departing
//! target until the ELB no longer lists it, measures how long deregistration took, and
//! warns when the sleep was too short.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::aws::TargetId;
use crate::health::{TargetHealth, TargetState};
use crate::inject::{NamespaceObjects, sleep_seconds};
use crate::targets::{self, TargetGroup};

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
    pub warned: bool,
}

/// What a departure's latest observation means.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Still on its way out.
    Continue,
    /// The preStop sleep is over and the ELB still routes new requests here.
    StillHealthyAfterPrestop { late_seconds: f64 },
    /// Gone from the target group, this long after the delete.
    Deregistered { seconds: f64 },
    /// Followed for too long; stop.
    GiveUp,
}

/// Advance a departure with the target's health (`None`: the ELB does not list it).
pub fn observe(d: &mut Departure, health: Option<&TargetHealth>, now: Timestamp) -> Step {
    let gone = health.is_none_or(|h| h.is_not_registered() || h.state == TargetState::Unused);
    if gone {
        let seconds = now.duration_since(d.deleted_at).as_secs_f64().max(0.0);
        return Step::Deregistered { seconds };
    }
    if now.duration_since(d.deleted_at) > GIVE_UP_AFTER {
        return Step::GiveUp;
    }
    let state = health.map(|h| &h.state);
    if matches!(
        state,
        Some(TargetState::Draining | TargetState::UnhealthyDraining)
    ) {
        d.draining_at.get_or_insert(now);
    }
    if state == Some(&TargetState::Healthy) && now > d.prestop_ends && !d.warned {
        d.warned = true;
        let late_seconds = now.duration_since(d.prestop_ends).as_secs_f64();
        return Step::StillHealthyAfterPrestop { late_seconds };
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
        let deleted_at = deletion.0 - SignedDuration::from_secs(grace);
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
            let Some(group) = TargetGroup::of(binding) else {
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
                prestop_ends: deleted_at + SignedDuration::from_secs(sleep as i64),
                target,
                deleted_at,
                draining_at: None,
                warned: false,
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
        c.lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(sleep_seconds)
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
        }
    }

    fn health(state: &str, reason: Option<&str>) -> Option<TargetHealth> {
        Some(TargetHealth {
            state: TargetState::from_wire(state),
            reason: reason.map(String::from),
            description: None,
        })
    }

    #[rstest]
    #[case::draining_in_time(
        health("draining", Some("Target.DeregistrationInProgress")),
        5,
        Step::Continue
    )]
    #[case::healthy_during_the_sleep(health("healthy", None), 39, Step::Continue)]
    #[case::healthy_after_the_sleep(health("healthy", None), 42, Step::StillHealthyAfterPrestop { late_seconds: 2.0 })]
    #[case::gone(None, 35, Step::Deregistered { seconds: 35.0 })]
    #[case::not_registered(health("unused", Some("Target.NotRegistered")), 31, Step::Deregistered { seconds: 31.0 })]
    #[case::followed_too_long(health("draining", None), 901, Step::GiveUp)]
    fn steps(#[case] h: Option<TargetHealth>, #[case] now: i64, #[case] expected: Step) {
        let mut d = departure();
        assert_eq!(observe(&mut d, h.as_ref(), at(now)), expected);
    }

    #[test]
    fn warns_once_and_remembers_draining() {
        let mut d = departure();
        assert!(matches!(
            observe(&mut d, health("healthy", None).as_ref(), at(41)),
            Step::StillHealthyAfterPrestop { .. }
        ));
        assert_eq!(
            observe(&mut d, health("healthy", None).as_ref(), at(42)),
            Step::Continue
        );
        assert_eq!(
            observe(&mut d, health("draining", None).as_ref(), at(43)),
            Step::Continue
        );
        assert_eq!(d.draining_at, Some(at(43)));
        assert_eq!(
            observe(&mut d, health("draining", None).as_ref(), at(44)),
            Step::Continue
        );
        assert_eq!(
            d.draining_at,
            Some(at(43)),
            "the first draining sighting is kept"
        );
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
