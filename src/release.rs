//! Drain wait: may a terminating pod stop now? Pure.
//!
//! An opted-in pod's preStop runs `gracegate-wait`, which asks the leader in a long poll
//! (issue 14). The leader answers from what it has seen of the pod's targets since it began
//! to lead: a pod may stop once it is terminating and every target it had in every gated
//! target group has been unlisted (or `unused`) for the settle time, or at once when a
//! target never was registered. Anything the leader cannot vouch for (a describe that failed
//! or was throttled, a target group not described since this replica began to lead) is
//! *not yet*: the waiter's own deadline is the fallback, never an early stop.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::elb::{TargetGroup, TargetHealth, TargetId, TargetState};

/// `--drain-settle-seconds`' default: how long a target must stay unlisted before its pod may
/// stop. DescribeTargetHealth is read from the control plane; the nodes of the load balancer
/// learn of a deregistration a moment later, and the describes of the settle time (one a
/// tick) must all agree the target is gone.
pub const DEFAULT_SETTLE: SignedDuration = SignedDuration::from_secs(2);

/// What the leader knows of one target of a departing pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Look {
    /// Its target group has not been described since this replica began to lead.
    NotDescribed,
    /// The last describe of its target group failed (an error, throttling).
    Failing,
    /// Listed, in this state.
    Listed(TargetState),
    /// Not listed (or `unused`) in every describe since `since`.
    Unlisted { since: Timestamp },
}

/// One target of a departing pod and what is known of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetLook {
    pub group: TargetGroup,
    pub target: TargetId,
    pub look: Look,
    /// The target was registered once: the pod's gate for its target group turned True
    /// (only a healthy target does that), or this leader saw it listed.
    pub registered: bool,
}

impl TargetLook {
    /// A target not described yet; `registered` from the pod's gate condition.
    pub fn new(group: TargetGroup, target: TargetId, registered: bool) -> TargetLook {
        TargetLook {
            group,
            target,
            look: Look::NotDescribed,
            registered,
        }
    }

    /// Fold in a describe of its target group that answered: `None` when the target is not
    /// listed. A target seen unlisted keeps its first unlisted time until it is listed again.
    pub fn observe(&mut self, health: Option<&TargetHealth>, now: Timestamp) {
        let gone = health.is_none_or(|h| h.is_not_registered() || h.state == TargetState::Unused);
        self.look = match (health, &self.look) {
            (Some(h), _) if !gone => {
                self.registered = true;
                Look::Listed(h.state.clone())
            }
            (_, Look::Unlisted { since }) => Look::Unlisted { since: *since },
            _ => Look::Unlisted { since: now },
        };
    }

    /// A describe of its target group failed: what was seen before no longer holds (the
    /// target may have come back meanwhile), so settling starts over after the next answer.
    pub fn failed(&mut self) {
        self.look = Look::Failing;
    }
}

/// A pod a waiter asks about, as the leader knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departing {
    /// The pod has a deletion timestamp (or is already gone from the cluster).
    pub terminating: bool,
    /// Every target the pod has in a gated target group.
    pub targets: Vec<TargetLook>,
}

/// The answer for a waiter: its reason is a short kebab-case word the waiter logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Release(&'static str),
    NotYet(&'static str),
}

impl Verdict {
    pub fn is_release(self) -> bool {
        matches!(self, Verdict::Release(_))
    }

    pub fn reason(self) -> &'static str {
        match self {
            Verdict::Release(r) | Verdict::NotYet(r) => r,
        }
    }
}

/// Why not yet, the most uncertain first: what is unknown outranks what is known to be listed.
const NOT_YET: [&str; 5] = [
    "describe-failing",
    "not-described-yet",
    "targets-registered",
    "targets-draining",
    "settling",
];

/// May `pod` stop at `now`, its targets unlisted for at least `settle`?
pub fn decide(pod: &Departing, now: Timestamp, settle: SignedDuration) -> Verdict {
    if !pod.terminating {
        return Verdict::NotYet("not-terminating");
    }
    if pod.targets.is_empty() {
        return Verdict::Release("no-targets");
    }
    let mut worst: Option<usize> = None;
    let mut all_never_registered = true;
    for t in &pod.targets {
        let why = match &t.look {
            Look::Failing => Some(0),
            Look::NotDescribed => Some(1),
            Look::Listed(TargetState::Draining | TargetState::UnhealthyDraining) => Some(3),
            Look::Listed(_) => Some(2),
            // Never registered: nothing can route to it, no settling needed.
            Look::Unlisted { .. } if !t.registered => None,
            Look::Unlisted { since } => {
                all_never_registered = false;
                (now.duration_since(*since) < settle).then_some(4)
            }
        };
        if let Some(why) = why {
            worst = Some(worst.map_or(why, |w| w.min(why)));
        }
    }
    match worst {
        Some(why) => Verdict::NotYet(NOT_YET[why]),
        None if all_never_registered => Verdict::Release("never-registered"),
        None => Verdict::Release("targets-gone"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn target(n: u8) -> TargetLook {
        TargetLook::new(
            TargetGroup::Arn(format!("arn:tg/{n}")),
            TargetId {
                id: format!("10.0.0.{n}"),
                port: 80,
            },
            true,
        )
    }

    fn health(state: &str) -> TargetHealth {
        TargetHealth {
            state: TargetState::from_wire(state),
            reason: (state == "unused").then(|| "Target.NotRegistered".into()),
            description: None,
        }
    }

    /// One look at a target: a state (`"-"`: not listed, `"err"`: the describe failed) at a
    /// second.
    fn replay(t: &mut TargetLook, looks: &[(i64, &str)]) {
        for &(s, state) in looks {
            match state {
                "err" => t.failed(),
                "-" => t.observe(None, at(s)),
                state => t.observe(Some(&health(state)), at(s)),
            }
        }
    }

    /// One target, registered per the gate, looked at as given; the verdict at `now`.
    #[rstest]
    #[case::not_described(true, &[], 10, Verdict::NotYet("not-described-yet"))]
    #[case::healthy(true, &[(1, "healthy")], 10, Verdict::NotYet("targets-registered"))]
    #[case::draining(true, &[(1, "draining")], 10, Verdict::NotYet("targets-draining"))]
    #[case::unhealthy_draining(true, &[(1, "unhealthy.draining")], 10, Verdict::NotYet("targets-draining"))]
    #[case::gone_not_settled(true, &[(1, "draining"), (9, "-")], 10, Verdict::NotYet("settling"))]
    #[case::gone_and_settled(true, &[(1, "draining"), (8, "-"), (10, "-")], 10, Verdict::Release("targets-gone"))]
    #[case::unused_counts_as_gone(true, &[(1, "draining"), (8, "unused")], 10, Verdict::Release("targets-gone"))]
    #[case::settled_after_exactly_settle(true, &[(8, "-")], 10, Verdict::Release("targets-gone"))]
    #[case::failing_after_gone(true, &[(1, "-"), (5, "err")], 10, Verdict::NotYet("describe-failing"))]
    #[case::settle_starts_over_after_a_failure(true, &[(1, "-"), (5, "err"), (9, "-")], 10, Verdict::NotYet("settling"))]
    #[case::listed_again_starts_over(true, &[(1, "-"), (5, "draining"), (9, "-")], 10, Verdict::NotYet("settling"))]
    #[case::never_registered_released_at_once(false, &[(10, "-")], 10, Verdict::Release("never-registered"))]
    #[case::never_registered_but_not_described(false, &[], 10, Verdict::NotYet("not-described-yet"))]
    #[case::never_registered_but_failing(false, &[(1, "err")], 10, Verdict::NotYet("describe-failing"))]
    #[case::gate_never_true_but_seen_listed(false, &[(1, "initial"), (9, "-")], 10, Verdict::NotYet("settling"))]
    #[case::gate_never_true_seen_listed_settled(false, &[(1, "initial"), (7, "-")], 10, Verdict::Release("targets-gone"))]
    fn one_target(
        #[case] registered: bool,
        #[case] looks: &[(i64, &str)],
        #[case] now: i64,
        #[case] expected: Verdict,
    ) {
        let mut t = target(1);
        t.registered = registered;
        replay(&mut t, looks);
        let pod = Departing {
            terminating: true,
            targets: vec![t],
        };
        assert_eq!(decide(&pod, at(now), DEFAULT_SETTLE), expected);
    }

    /// Two targets (two target groups); every one must be gone, the most uncertain wins.
    #[rstest]
    #[case::both_gone(&[(1, "-")], &[(2, "-")], Verdict::Release("targets-gone"))]
    #[case::one_still_draining(&[(1, "-")], &[(2, "draining")], Verdict::NotYet("targets-draining"))]
    #[case::one_failing_outranks_draining(&[(1, "err")], &[(2, "draining")], Verdict::NotYet("describe-failing"))]
    #[case::one_not_described(&[(1, "-")], &[], Verdict::NotYet("not-described-yet"))]
    #[case::registered_outranks_draining(&[(1, "healthy")], &[(2, "draining")], Verdict::NotYet("targets-registered"))]
    fn two_targets(
        #[case] first: &[(i64, &str)],
        #[case] second: &[(i64, &str)],
        #[case] expected: Verdict,
    ) {
        let (mut a, mut b) = (target(1), target(2));
        replay(&mut a, first);
        replay(&mut b, second);
        let pod = Departing {
            terminating: true,
            targets: vec![a, b],
        };
        assert_eq!(decide(&pod, at(10), DEFAULT_SETTLE), expected);
    }

    #[rstest]
    #[case::not_terminating(false, 0, Verdict::NotYet("not-terminating"))]
    #[case::no_targets(true, 0, Verdict::Release("no-targets"))]
    #[case::not_terminating_even_with_gone_targets(false, 1, Verdict::NotYet("not-terminating"))]
    fn the_pod(#[case] terminating: bool, #[case] targets: u8, #[case] expected: Verdict) {
        let mut targets: Vec<TargetLook> = (1..=targets).map(target).collect();
        for t in &mut targets {
            t.observe(None, at(0));
        }
        let pod = Departing {
            terminating,
            targets,
        };
        assert_eq!(decide(&pod, at(100), DEFAULT_SETTLE), expected);
    }

    #[test]
    fn a_longer_settle_holds_longer() {
        let mut t = target(1);
        t.observe(None, at(0));
        let pod = Departing {
            terminating: true,
            targets: vec![t],
        };
        let settle = SignedDuration::from_secs(30);
        assert_eq!(decide(&pod, at(29), settle), Verdict::NotYet("settling"));
        assert_eq!(
            decide(&pod, at(30), settle),
            Verdict::Release("targets-gone")
        );
        // No settle: the first unlisted look releases.
        assert_eq!(
            decide(&pod, at(0), SignedDuration::ZERO),
            Verdict::Release("targets-gone")
        );
    }

    #[test]
    fn a_clock_that_steps_back_does_not_release() {
        let mut t = target(1);
        t.observe(None, at(10));
        let pod = Departing {
            terminating: true,
            targets: vec![t],
        };
        assert_eq!(
            decide(&pod, at(5), DEFAULT_SETTLE),
            Verdict::NotYet("settling")
        );
    }
}
