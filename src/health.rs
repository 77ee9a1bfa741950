//! Target health → readiness gate condition. Pure: no I/O, the clock is an argument.
//!
//! * `healthy` → `True`; once `True`, never set back (as the Load Balancer Controller and GKE).
//! * any other state → `False`, reason = the ELB's reason code, message = its description;
//! * not registered yet → `False`, reason `Elb.RegistrationInProgress`;
//! * no data → `Unknown`.
//!
//! A condition is only written when status, reason or message change, and its
//! `lastTransitionTime` only moves when the status does.

use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::elb::{TargetHealth, TargetState};

pub const REASON_REGISTRATION_IN_PROGRESS: &str = "Elb.RegistrationInProgress";
pub const REASON_GATE_TIMEOUT: &str = "GateTimeout";
pub const REASON_BINDING_DELETED: &str = "TargetGroupBindingDeleted";
pub const REASON_NO_DATA: &str = "NoTargetHealth";

/// What the gate should say, before comparing with what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub status: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// What the watcher knows about one gate's target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The ELB reported on the target.
    Health(TargetHealth),
    /// The target was asked about and the ELB does not list it.
    NotRegistered,
    /// Nothing to ask the ELB yet, or nothing usable came back.
    NoData(String),
    /// The pod's binding is gone: the gate is released.
    BindingDeleted(String),
    /// The gate waited longer than `--gate-timeout`: released, fail-open.
    TimedOut { waited_seconds: u64 },
}

impl Observation {
    pub fn desired(&self) -> Desired {
        match self {
            Observation::Health(h) if h.state == TargetState::Healthy => Desired {
                status: "True",
                reason: None,
                message: None,
            },
            Observation::Health(h) if h.is_not_registered() => Desired {
                status: "False",
                reason: Some(REASON_REGISTRATION_IN_PROGRESS.into()),
                message: h.description.clone(),
            },
            Observation::Health(h) => Desired {
                status: "False",
                // An ELB state without a reason code (e.g. a bare `unavailable`) still says why.
                reason: Some(
                    h.reason
                        .clone()
                        .unwrap_or_else(|| format!("Elb.{}", h.state.as_str())),
                ),
                message: h.description.clone(),
            },
            Observation::NotRegistered => Desired {
                status: "False",
                reason: Some(REASON_REGISTRATION_IN_PROGRESS.into()),
                message: Some("Target is not registered with the target group yet".into()),
            },
            Observation::NoData(why) => Desired {
                status: "Unknown",
                reason: Some(REASON_NO_DATA.into()),
                message: Some(why.clone()),
            },
            Observation::BindingDeleted(name) => Desired {
                status: "True",
                reason: Some(REASON_BINDING_DELETED.into()),
                message: Some(format!(
                    "TargetGroupBinding {name} no longer exists; gate released"
                )),
            },
            Observation::TimedOut { waited_seconds } => Desired {
                status: "True",
                reason: Some(REASON_GATE_TIMEOUT.into()),
                message: Some(format!(
                    "no healthy report from the load balancer after {waited_seconds}s; gate released"
                )),
            },
        }
    }
}

/// The condition to write for `gate`, or `None` when nothing must be written: the gate is
/// already `True` (sticky), or status, reason and message are unchanged.
pub fn update(
    gate: &str,
    current: Option<&PodCondition>,
    desired: &Desired,
    now: &Time,
) -> Option<PodCondition> {
    if let Some(current) = current {
        if current.status == "True" {
            return None;
        }
        if current.status == desired.status
            && current.reason == desired.reason
            && current.message == desired.message
        {
            return None;
        }
    }
    let last_transition_time = match current {
        Some(c) if c.status == desired.status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    Some(PodCondition {
        type_: gate.to_string(),
        status: desired.status.to_string(),
        reason: desired.reason.clone(),
        message: desired.message.clone(),
        last_transition_time,
        last_probe_time: None,
        observed_generation: None,
    })
}

/// The strategic-merge patch for `pods/status` carrying only `condition`. The UID makes it
/// a precondition: a pod deleted and re-created under the same name is not patched.
pub fn status_patch(uid: &str, condition: &PodCondition) -> Value {
    json!({
        "metadata": { "uid": uid },
        "status": { "conditions": [condition] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn health(state: &str, reason: Option<&str>, description: Option<&str>) -> Observation {
        Observation::Health(TargetHealth {
            state: TargetState::from_wire(state),
            reason: reason.map(String::from),
            description: description.map(String::from),
        })
    }

    fn time(s: &str) -> Time {
        serde_json::from_value(json!(s)).unwrap()
    }

    #[rstest]
    #[case::healthy(health("healthy", None, None), "True", None, None)]
    #[case::initial(
        health(
            "initial",
            Some("Elb.InitialHealthChecking"),
            Some("Initial health checks in progress")
        ),
        "False",
        Some("Elb.InitialHealthChecking"),
        Some("Initial health checks in progress")
    )]
    #[case::registering(
        health(
            "initial",
            Some("Elb.RegistrationInProgress"),
            Some("Target registration is in progress")
        ),
        "False",
        Some("Elb.RegistrationInProgress"),
        Some("Target registration is in progress")
    )]
    #[case::unhealthy(
        health(
            "unhealthy",
            Some("Target.ResponseCodeMismatch"),
            Some("Health checks failed with these codes: [502]")
        ),
        "False",
        Some("Target.ResponseCodeMismatch"),
        Some("Health checks failed with these codes: [502]")
    )]
    #[case::draining(
        health(
            "draining",
            Some("Target.DeregistrationInProgress"),
            Some("Target deregistration is in progress")
        ),
        "False",
        Some("Target.DeregistrationInProgress"),
        Some("Target deregistration is in progress")
    )]
    #[case::not_registered(
        health(
            "unused",
            Some("Target.NotRegistered"),
            Some("Target is not registered to the target group")
        ),
        "False",
        Some("Elb.RegistrationInProgress"),
        Some("Target is not registered to the target group")
    )]
    #[case::not_in_use(
        health(
            "unused",
            Some("Target.NotInUse"),
            Some("Target group is not configured to receive traffic from the load balancer")
        ),
        "False",
        Some("Target.NotInUse"),
        Some("Target group is not configured to receive traffic from the load balancer")
    )]
    #[case::unavailable_without_reason(
        health("unavailable", None, None),
        "False",
        Some("Elb.unavailable"),
        None
    )]
    #[case::absent(
        Observation::NotRegistered,
        "False",
        Some("Elb.RegistrationInProgress"),
        Some("Target is not registered with the target group yet")
    )]
    #[case::no_data(Observation::NoData("TargetGroupBinding has no target group ARN yet".into()), "Unknown", Some("NoTargetHealth"), Some("TargetGroupBinding has no target group ARN yet"))]
    #[case::binding_deleted(Observation::BindingDeleted("tgb".into()), "True", Some("TargetGroupBindingDeleted"), Some("TargetGroupBinding tgb no longer exists; gate released"))]
    #[case::timed_out(Observation::TimedOut { waited_seconds: 600 }, "True", Some("GateTimeout"), Some("no healthy report from the load balancer after 600s; gate released"))]
    fn observation_to_condition(
        #[case] observation: Observation,
        #[case] status: &str,
        #[case] reason: Option<&str>,
        #[case] message: Option<&str>,
    ) {
        let desired = observation.desired();
        assert_eq!(desired.status, status);
        assert_eq!(desired.reason.as_deref(), reason);
        assert_eq!(desired.message.as_deref(), message);
    }

    const GATE: &str = "target-health.elbv2.k8s.aws/tgb";

    fn condition(
        status: &str,
        reason: Option<&str>,
        message: Option<&str>,
        ltt: &str,
    ) -> PodCondition {
        PodCondition {
            type_: GATE.into(),
            status: status.into(),
            reason: reason.map(String::from),
            message: message.map(String::from),
            last_transition_time: Some(time(ltt)),
            ..PodCondition::default()
        }
    }

    const T0: &str = "2026-11-26T12:00:00Z";
    const NOW: &str = "2026-11-26T12:00:30Z";

    #[rstest]
    // First write: the transition is now.
    #[case::first(None, health("initial", Some("Elb.InitialHealthChecking"), Some("m")), Some(("False", NOW)))]
    // Same status, reason and message: nothing to write.
    #[case::unchanged(
        Some(condition("False", Some("Elb.InitialHealthChecking"), Some("m"), T0)),
        health("initial", Some("Elb.InitialHealthChecking"), Some("m")),
        None
    )]
    // Reason changes, status does not: written, but lastTransitionTime stays.
    #[case::reason_changes(Some(condition("False", Some("Elb.RegistrationInProgress"), Some("m"), T0)),
        health("initial", Some("Elb.InitialHealthChecking"), Some("m")), Some(("False", T0)))]
    #[case::message_changes(Some(condition("False", Some("Target.Timeout"), Some("a"), T0)),
        health("unhealthy", Some("Target.Timeout"), Some("b")), Some(("False", T0)))]
    #[case::turns_true(Some(condition("False", Some("Elb.InitialHealthChecking"), Some("m"), T0)),
        health("healthy", None, None), Some(("True", NOW)))]
    #[case::unknown_to_false(Some(condition("Unknown", Some("NoTargetHealth"), Some("x"), T0)),
        Observation::NotRegistered, Some(("False", NOW)))]
    // True is sticky: a later unhealthy or draining report never sets it back.
    #[case::sticky_true_unhealthy(
        Some(condition("True", None, None, T0)),
        health("unhealthy", Some("Target.Timeout"), Some("m")),
        None
    )]
    #[case::sticky_true_draining(
        Some(condition("True", None, None, T0)),
        health("draining", Some("Target.DeregistrationInProgress"), None),
        None
    )]
    #[case::sticky_true_no_data(Some(condition("True", None, None, T0)), Observation::NoData("x".into()), None)]
    #[case::timeout(Some(condition("False", Some("Elb.InitialHealthChecking"), Some("m"), T0)),
        Observation::TimedOut { waited_seconds: 600 }, Some(("True", NOW)))]
    fn condition_updates(
        #[case] current: Option<PodCondition>,
        #[case] observation: Observation,
        #[case] expected: Option<(&str, &str)>,
    ) {
        let got = update(GATE, current.as_ref(), &observation.desired(), &time(NOW));
        match (got, expected) {
            (None, None) => {}
            (Some(c), Some((status, ltt))) => {
                assert_eq!(c.type_, GATE);
                assert_eq!(c.status, status);
                assert_eq!(c.last_transition_time, Some(time(ltt)));
                let desired = observation.desired();
                assert_eq!((c.reason, c.message), (desired.reason, desired.message));
            }
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn patch_carries_only_our_condition_and_the_uid() {
        let c = condition("True", None, None, NOW);
        assert_eq!(
            status_patch("uid-1", &c),
            json!({
                "metadata": { "uid": "uid-1" },
                "status": { "conditions": [{
                    "type": GATE, "status": "True", "lastTransitionTime": NOW,
                }] },
            })
        );
    }
}
