//! The timing rule: what the load balancer needs → preStop sleep `S` → termination grace `T`.
//!
//! * `S` = pod annotation > namespace annotation > the largest of `D + 10` (`D`: the
//!   deregistration delay, from an annotation else the target group's attribute) and the
//!   measured p99 drain + margin (once [`MIN_DRAINS`](crate::facts::MIN_DRAINS) are
//!   measured) and, for a network load balancer target group with fewer than
//!   [`NLB_MIN_DRAINS`] drains measured,
//!   `nlb_prestop_seconds` (NLBs are reported to route to draining targets for ~2 minutes
//!   whatever `D` is; a few drains can raise `S` above it, not lower it) > `prestop_seconds`.
//!   Annotations and `D + 10` are capped at `max_prestop_seconds` (a typo, AWS's 300 s default);
//!   measured drains and the NLB default at `max_measured_prestop_seconds`, so the cap never
//!   cuts the evidence.
//! * `T` = max(pod's own, `S` + shutdown budget), the budget being pod annotation > namespace
//!   annotation > `shutdown_budget_seconds`.
//!
//! With D = 30 and nothing measured: S = 40, T = 70. Pure: malformed input becomes a warning,
//! never an error.

use std::collections::BTreeMap;

use crate::binding::DelaySource;
use crate::elb::LoadBalancerKind;
use crate::facts::NLB_MIN_DRAINS;

/// Every annotation gracegate reads lives under this prefix.
pub const ANNOTATION_INJECT: &str = "gracegate.io/inject";
pub const ANNOTATION_PRESTOP_SECONDS: &str = "gracegate.io/prestop-seconds";
pub const ANNOTATION_SHUTDOWN_BUDGET_SECONDS: &str = "gracegate.io/shutdown-budget-seconds";
pub const ANNOTATION_CONTAINERS: &str = "gracegate.io/containers";
/// Written by gracegate: which rule gave `S`.
pub const ANNOTATION_PRESTOP_SOURCE: &str = "gracegate.io/prestop-source";

/// Seconds the app gets after the deregistration delay to finish in-flight requests.
pub const DELAY_MARGIN_SECONDS: u32 = 10;
/// Upper bound for a shutdown budget annotation: an hour is already far beyond any sane drain.
pub const MAX_SHUTDOWN_BUDGET_SECONDS: u32 = 3600;
/// AWS's default deregistration delay, almost never what a team meant to keep.
pub const AWS_DEFAULT_DEREGISTRATION_DELAY: u32 = 300;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingSettings {
    /// `S` when neither an annotation nor the load balancer says otherwise.
    pub prestop_seconds: u32,
    /// Cap on `S` from annotations and from `D + 10`.
    pub max_prestop_seconds: u32,
    /// Cap on `S` from measured drains and from the NLB default.
    pub max_measured_prestop_seconds: u32,
    /// `S` for a pod behind a network load balancer target group with fewer than
    /// [`NLB_MIN_DRAINS`] drains measured (more measured drains still raise it); 0 turns the
    /// NLB default off.
    pub nlb_prestop_seconds: u32,
    /// Added to `S` to give `T`.
    pub shutdown_budget_seconds: u32,
    /// Added to the measured p99 drain.
    pub drain_margin_seconds: u32,
}

impl Default for TimingSettings {
    fn default() -> Self {
        TimingSettings {
            prestop_seconds: 40,
            max_prestop_seconds: 120,
            max_measured_prestop_seconds: 300,
            nlb_prestop_seconds: 135,
            shutdown_budget_seconds: 30,
            drain_margin_seconds: 5,
        }
    }
}

impl TimingSettings {
    /// Reject settings that contradict each other, naming the flags.
    pub fn check(&self) -> Result<(), String> {
        if self.prestop_seconds > self.max_prestop_seconds {
            return Err(format!(
                "--prestop-seconds {} is above --max-prestop-seconds {}",
                self.prestop_seconds, self.max_prestop_seconds
            ));
        }
        if self.max_prestop_seconds > self.max_measured_prestop_seconds {
            return Err(format!(
                "--max-prestop-seconds {} is above --max-measured-prestop-seconds {}: measured \
                 drains would be capped lower than a typo",
                self.max_prestop_seconds, self.max_measured_prestop_seconds
            ));
        }
        if self.nlb_prestop_seconds > self.max_measured_prestop_seconds {
            return Err(format!(
                "--nlb-prestop-seconds {} is above --max-measured-prestop-seconds {}",
                self.nlb_prestop_seconds, self.max_measured_prestop_seconds
            ));
        }
        Ok(())
    }

    /// The cap on `S` from `source`.
    fn cap(&self, source: &PrestopSource) -> u32 {
        match source {
            PrestopSource::MeasuredDrain(_) | PrestopSource::NlbDefault => {
                self.max_measured_prestop_seconds
            }
            _ => self.max_prestop_seconds,
        }
    }
}

/// The measured p99 drain of the slowest target group serving a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredDrain {
    pub p99_seconds: f64,
    /// Drains measured.
    pub count: usize,
    pub target_group: String,
}

/// What the load balancer side says about a pod's target groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    /// The largest `D` among them, and where it was read.
    pub delay: Option<(u32, DelaySource)>,
    /// The largest p99 among those with at least [`MIN_DRAINS`](crate::facts::MIN_DRAINS)
    /// drains measured.
    pub measured: Option<MeasuredDrain>,
    /// Network load balancer target groups with fewer than [`NLB_MIN_DRAINS`] drains measured:
    /// too few to bring `S` below the NLB default (see [`nlb_unmeasured`]).
    pub unmeasured_nlbs: Vec<String>,
}

/// Whether a target group of `kind` with `drains` measured still gets the NLB default: a network
/// load balancer with fewer than [`NLB_MIN_DRAINS`] drains. The one place the webhook, `plan`
/// and `audit` ask.
pub fn nlb_unmeasured(kind: Option<LoadBalancerKind>, drains: usize) -> bool {
    kind == Some(LoadBalancerKind::Network) && drains < NLB_MIN_DRAINS
}

/// Where `S` came from.
#[derive(Clone, Debug, PartialEq)]
pub enum PrestopSource {
    PodAnnotation,
    NamespaceAnnotation,
    DeregistrationDelay(u32, DelaySource),
    MeasuredDrain(MeasuredDrain),
    /// `--nlb-prestop-seconds`: a network load balancer with too few drains measured.
    NlbDefault,
    Default,
    /// `--drain-wait-max-seconds`: the drain wait's deadline (see [`crate::inject::waiter`]).
    DrainWait,
}

impl PrestopSource {
    /// The value of the `gracegate.io/prestop-source` annotation.
    pub fn as_str(&self) -> &'static str {
        match self {
            PrestopSource::PodAnnotation | PrestopSource::NamespaceAnnotation => "annotation",
            PrestopSource::DeregistrationDelay(..) => "deregistration-delay",
            PrestopSource::MeasuredDrain(_) => "measured-drain",
            PrestopSource::NlbDefault => "nlb-default",
            PrestopSource::Default => "default",
            PrestopSource::DrainWait => "drain-wait",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// `S`; 0 means "inject no preStop".
    pub prestop_seconds: u32,
    pub prestop_source: PrestopSource,
    pub shutdown_budget_seconds: u32,
    pub warnings: Vec<String>,
}

impl Timing {
    /// `T` for a pod whose own grace period is `own` (`None`: the API default, 30 s).
    /// Never lower than what the pod asked for.
    pub fn grace_period(&self, own: Option<i64>) -> i64 {
        let needed = i64::from(self.prestop_seconds) + i64::from(self.shutdown_budget_seconds);
        own.unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS).max(needed)
    }
}

/// The API server's default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// `S` from the load balancer's side alone: the largest of `D + 10`, the measured p99 +
/// margin and the NLB default, uncapped, with its source; `None` when none applies.
/// Ties go to the delay, then to the measurement.
pub fn wanted_prestop(
    settings: &TimingSettings,
    evidence: &Evidence,
) -> Option<(u32, PrestopSource)> {
    candidates(settings, evidence).reduce(|best, c| if c.0 > best.0 { c } else { best })
}

/// Every load-balancer rule that applies, uncapped.
fn candidates(
    settings: &TimingSettings,
    evidence: &Evidence,
) -> impl Iterator<Item = (u32, PrestopSource)> {
    let from_delay = evidence.delay.as_ref().map(|(d, source)| {
        (
            d.saturating_add(DELAY_MARGIN_SECONDS),
            PrestopSource::DeregistrationDelay(*d, source.clone()),
        )
    });
    let from_drains = evidence.measured.as_ref().map(|m| {
        (
            seconds_up(m.p99_seconds).saturating_add(settings.drain_margin_seconds),
            PrestopSource::MeasuredDrain(m.clone()),
        )
    });
    let nlb_default = (!evidence.unmeasured_nlbs.is_empty() && settings.nlb_prestop_seconds > 0)
        .then_some((settings.nlb_prestop_seconds, PrestopSource::NlbDefault));
    [from_delay, from_drains, nlb_default].into_iter().flatten()
}

/// Whole seconds, rounded up; odd values (NaN, negative, huge) stay within `u32`.
fn seconds_up(s: f64) -> u32 {
    if s.is_finite() && s > 0.0 {
        s.ceil().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// Apply the timing rule.
pub fn timing(
    settings: &TimingSettings,
    evidence: &Evidence,
    pod_annotations: Option<&BTreeMap<String, String>>,
    namespace_annotations: Option<&BTreeMap<String, String>>,
) -> Timing {
    let mut warnings = Vec::new();
    let max = settings.max_prestop_seconds;

    let pod_s = annotation_seconds(pod_annotations, ANNOTATION_PRESTOP_SECONDS, max, "pod");
    let ns_s = annotation_seconds(
        namespace_annotations,
        ANNOTATION_PRESTOP_SECONDS,
        max,
        "namespace",
    );
    let (prestop_seconds, prestop_source) = match (pod_s.value, ns_s.value) {
        (Some(s), _) => (s, PrestopSource::PodAnnotation),
        (None, Some(s)) => (s, PrestopSource::NamespaceAnnotation),
        (None, None) => {
            // Each rule under its own cap, then the largest: a capped `D = 300` does not
            // hide the NLB default.
            let capped = candidates(settings, evidence)
                .map(|(wanted, source)| (wanted.min(settings.cap(&source)), source))
                .reduce(|best, c| if c.0 > best.0 { c } else { best });
            match capped {
                Some((s, source)) => {
                    if let Some((wanted, cut)) = wanted_prestop(settings, evidence)
                        && wanted > s
                    {
                        let (cap, flag) = match cut {
                            PrestopSource::MeasuredDrain(_) | PrestopSource::NlbDefault => (
                                settings.max_measured_prestop_seconds,
                                "--max-measured-prestop-seconds",
                            ),
                            _ => (max, "--max-prestop-seconds"),
                        };
                        warnings.push(format!(
                            "gracegate: {} needs a {wanted}s preStop; capped at {cap}s ({flag}), \
                             {}s short: requests may fail at the end of a rollout",
                            describe(&cut),
                            wanted - s
                        ));
                    }
                    if s > max {
                        warnings.push(format!(
                            "gracegate: S = {s}s from {}, over --max-prestop-seconds {max}: each \
                             replaced pod lingers {s}s before it stops, so rollouts take longer",
                            describe(&source)
                        ));
                    }
                    (s, source)
                }
                None => (settings.prestop_seconds, PrestopSource::Default),
            }
        }
    };
    for bad in [pod_s.invalid, ns_s.invalid].into_iter().flatten() {
        warnings.push(format!("{bad}; using {prestop_seconds}s"));
    }
    if let Some((d, source)) = &evidence.delay
        && *d == AWS_DEFAULT_DEREGISTRATION_DELAY
        && !matches!(
            prestop_source,
            PrestopSource::PodAnnotation | PrestopSource::NamespaceAnnotation
        )
    {
        warnings.push(format!(
            "gracegate: deregistration delay {d}s from {source} is the AWS default: old targets \
             stay draining 5 minutes; set deregistration_delay.timeout_seconds"
        ));
    }
    if let Some(m) = &evidence.measured
        && matches!(
            prestop_source,
            PrestopSource::PodAnnotation | PrestopSource::NamespaceAnnotation
        )
        && f64::from(prestop_seconds) < m.p99_seconds
    {
        warnings.push(format!(
            "gracegate: {} annotation {ANNOTATION_PRESTOP_SECONDS}={prestop_seconds} is below the \
             {:.0}s p99 drain of target group {} ({} drains): pods stop while still routed",
            if prestop_source == PrestopSource::PodAnnotation {
                "pod"
            } else {
                "namespace"
            },
            m.p99_seconds,
            m.target_group,
            m.count
        ));
    }
    if !evidence.unmeasured_nlbs.is_empty() && prestop_seconds > 0 {
        let more = match evidence.unmeasured_nlbs.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        if prestop_source == PrestopSource::NlbDefault {
            warnings.push(format!(
                "gracegate: NLB target group {}{more} has under {NLB_MIN_DRAINS} drains measured and \
                 NLBs are reported to route to draining targets ~2 min: S = {prestop_seconds}s \
                 until measured drains take over; to go lower set {ANNOTATION_PRESTOP_SECONDS}",
                evidence.unmeasured_nlbs[0]
            ));
        } else {
            warnings.push(format!(
                "gracegate: NLB target group {}{more} has under {NLB_MIN_DRAINS} drains measured; NLBs \
                 are reported to route to draining targets ~2 min whatever the delay. gracegate \
                 measures drains and sizes S from them",
                evidence.unmeasured_nlbs[0]
            ));
        }
    }

    let pod_b = annotation_seconds(
        pod_annotations,
        ANNOTATION_SHUTDOWN_BUDGET_SECONDS,
        MAX_SHUTDOWN_BUDGET_SECONDS,
        "pod",
    );
    let ns_b = annotation_seconds(
        namespace_annotations,
        ANNOTATION_SHUTDOWN_BUDGET_SECONDS,
        MAX_SHUTDOWN_BUDGET_SECONDS,
        "namespace",
    );
    let shutdown_budget_seconds = pod_b
        .value
        .or(ns_b.value)
        .unwrap_or(settings.shutdown_budget_seconds);
    for bad in [pod_b.invalid, ns_b.invalid].into_iter().flatten() {
        warnings.push(format!("{bad}; using {shutdown_budget_seconds}s"));
    }

    Timing {
        prestop_seconds,
        prestop_source,
        shutdown_budget_seconds,
        warnings,
    }
}

/// "deregistration delay 300s from Ingress x" / "the 130s p99 drain measured on …".
pub fn describe(source: &PrestopSource) -> String {
    match source {
        PrestopSource::DeregistrationDelay(d, from) => {
            format!("deregistration delay {d}s from {from}")
        }
        PrestopSource::MeasuredDrain(m) => format!(
            "the {:.0}s p99 drain of target group {} ({} drains)",
            m.p99_seconds, m.target_group, m.count
        ),
        PrestopSource::NlbDefault => "the NLB default (--nlb-prestop-seconds)".into(),
        _ => "the load balancer".into(),
    }
}

struct AnnotationSeconds {
    value: Option<u32>,
    /// Why a present value was ignored.
    invalid: Option<String>,
}

fn annotation_seconds(
    annotations: Option<&BTreeMap<String, String>>,
    key: &str,
    max: u32,
    scope: &str,
) -> AnnotationSeconds {
    let Some(raw) = annotations.and_then(|a| a.get(key)) else {
        return AnnotationSeconds {
            value: None,
            invalid: None,
        };
    };
    match raw.trim().parse::<u32>() {
        Ok(n) if n <= max => AnnotationSeconds {
            value: Some(n),
            invalid: None,
        },
        _ => AnnotationSeconds {
            value: None,
            invalid: Some(format!(
                "gracegate: {scope} annotation {key}={raw:?} is not a number of seconds from 0 to {max}, ignored"
            )),
        },
    }
}

#[cfg(test)]
#[allow(clippy::too_many_arguments)] // rstest tables: one argument per column
mod tests {
    use super::*;
    use crate::facts::MIN_DRAINS;
    use rstest::rstest;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `D` from the 2048 Ingress, a measured p99 over `count` drains, NLB groups unmeasured.
    fn evidence(delay: Option<u32>, measured: Option<(f64, usize)>, nlb: bool) -> Evidence {
        Evidence {
            delay: delay.map(|d| (d, DelaySource::Ingress("ingress-2048".into()))),
            measured: measured.map(|(p99_seconds, count)| MeasuredDrain {
                p99_seconds,
                count,
                target_group: "k8s-game2048".into(),
            }),
            unmeasured_nlbs: if nlb { vec!["k8s-nlb".into()] } else { vec![] },
        }
    }

    const POD_S: (&str, &str) = ("gracegate.io/prestop-seconds", "25");

    #[rstest]
    // The seed's numbers: D = 30 → S = 40, T = 70.
    #[case::seed(Some(30), None, false, &[], &[], Some(30), 40, 70, "deregistration-delay", 0)]
    // AWS default delay: S capped at 120, and the user is told twice (default, cap).
    #[case::aws_default_capped(Some(300), None, false, &[], &[], Some(30), 120, 150, "deregistration-delay", 2)]
    #[case::no_delay_known(None, None, false, &[], &[], Some(30), 40, 70, "default", 0)]
    #[case::short_delay(Some(0), None, false, &[], &[], Some(30), 10, 40, "deregistration-delay", 0)]
    #[case::exactly_at_cap(Some(110), None, false, &[], &[], Some(30), 120, 150, "deregistration-delay", 0)]
    // Measured drains: p99 + margin 5, rounded up, when larger than D + 10.
    #[case::measured_beats_delay(Some(30), Some((61.2, 5)), false, &[], &[], Some(30), 67, 97, "measured-drain", 0)]
    #[case::delay_beats_measured(Some(60), Some((20.0, 50)), false, &[], &[], Some(30), 70, 100, "deregistration-delay", 0)]
    #[case::tie_goes_to_the_delay(Some(30), Some((35.0, 9)), false, &[], &[], Some(30), 40, 70, "deregistration-delay", 0)]
    #[case::measured_without_delay(None, Some((12.0, 7)), false, &[], &[], Some(30), 17, 47, "measured-drain", 0)]
    // Measured drains are not cut at --max-prestop-seconds, only at 300; over 120 a warning.
    #[case::measured_over_120(None, Some((130.0, 20)), false, &[], &[], Some(30), 135, 165, "measured-drain", 1)]
    #[case::measured_up_to_300(None, Some((400.0, 20)), false, &[], &[], Some(30), 300, 330, "measured-drain", 2)]
    // An NLB still learning: the NLB default, a warning that says why, one that it lingers.
    #[case::nlb_unmeasured(Some(30), None, true, &[], &[], Some(30), 135, 165, "nlb-default", 2)]
    #[case::nlb_unmeasured_short_delay(Some(5), None, true, &[], &[], Some(30), 135, 165, "nlb-default", 2)]
    #[case::nlb_unmeasured_no_delay(None, None, true, &[], &[], Some(30), 135, 165, "nlb-default", 2)]
    // A capped AWS default delay does not hide the NLB default.
    #[case::nlb_unmeasured_aws_default(Some(300), None, true, &[], &[], Some(30), 135, 165, "nlb-default", 4)]
    // An NLB with 5 to 19 drains: they raise S above the default, never lower it.
    #[case::nlb_few_drains_below_default(Some(5), Some((40.0, 10)), true, &[], &[], Some(30), 135, 165, "nlb-default", 2)]
    #[case::nlb_few_drains_above_default(Some(5), Some((160.0, 10)), true, &[], &[], Some(30), 165, 195, "measured-drain", 2)]
    // An NLB with 20 drains (no longer unmeasured): they rule, below or above the default.
    #[case::nlb_measured_below_default(Some(5), Some((40.0, 20)), false, &[], &[], Some(30), 45, 75, "measured-drain", 0)]
    #[case::nlb_measured_above_default(Some(5), Some((160.0, 20)), false, &[], &[], Some(30), 165, 195, "measured-drain", 1)]
    // One NLB measured, another not yet: the larger.
    #[case::nlb_one_measured_one_not(Some(5), Some((40.0, 5)), true, &[], &[], Some(30), 135, 165, "nlb-default", 2)]
    // An annotation takes the NLB's S lower; the NLB warning stays.
    #[case::nlb_annotation_lower(Some(5), None, true, &[POD_S], &[], Some(30), 25, 55, "annotation", 1)]
    // Annotations are still capped at --max-prestop-seconds.
    #[case::annotation_still_capped(None, None, false, &[("gracegate.io/prestop-seconds", "150")], &[], Some(30), 40, 70, "default", 1)]
    #[case::nlb_unmeasured_no_prestop(None, None, true, &[("gracegate.io/prestop-seconds", "0")], &[], Some(30), 0, 30, "annotation", 0)]
    #[case::pod_annotation_wins(Some(30), None, false, &[POD_S], &[("gracegate.io/prestop-seconds", "60")], Some(10), 25, 55, "annotation", 0)]
    #[case::annotation_below_measured(Some(30), Some((70.0, 5)), false, &[POD_S], &[], Some(10), 25, 55, "annotation", 1)]
    #[case::annotation_above_measured(Some(30), Some((20.0, 5)), false, &[POD_S], &[], Some(10), 25, 55, "annotation", 0)]
    #[case::annotation_hides_default_delay(Some(300), None, false, &[POD_S], &[], Some(10), 25, 55, "annotation", 0)]
    #[case::namespace_annotation(Some(30), None, false, &[], &[("gracegate.io/prestop-seconds", "60")], Some(30), 60, 90, "annotation", 0)]
    #[case::zero_means_no_prestop(Some(30), None, false, &[("gracegate.io/prestop-seconds", "0")], &[], Some(30), 0, 30, "annotation", 0)]
    #[case::grace_never_lowered(Some(30), None, false, &[], &[], Some(600), 40, 600, "deregistration-delay", 0)]
    #[case::grace_defaulted(Some(30), None, false, &[], &[], None, 40, 70, "deregistration-delay", 0)]
    #[case::budget_from_pod(None, None, false, &[("gracegate.io/shutdown-budget-seconds", "5")], &[("gracegate.io/shutdown-budget-seconds", "50")], Some(30), 40, 45, "default", 0)]
    #[case::budget_from_namespace(None, None, false, &[], &[("gracegate.io/shutdown-budget-seconds", "50")], Some(30), 40, 90, "default", 0)]
    #[case::bad_pod_annotation_falls_to_namespace(None, None, false, &[("gracegate.io/prestop-seconds", "abc")], &[("gracegate.io/prestop-seconds", "20")], Some(30), 20, 50, "annotation", 1)]
    #[case::bad_annotation_falls_to_measured(None, Some((50.0, 5)), false, &[("gracegate.io/prestop-seconds", "abc")], &[], Some(30), 55, 85, "measured-drain", 1)]
    #[case::negative(Some(30), None, false, &[("gracegate.io/prestop-seconds", "-5")], &[], Some(30), 40, 70, "deregistration-delay", 1)]
    #[case::over_cap(Some(30), None, false, &[("gracegate.io/prestop-seconds", "99999")], &[], Some(30), 40, 70, "deregistration-delay", 1)]
    #[case::empty(None, None, false, &[("gracegate.io/prestop-seconds", "")], &[], Some(30), 40, 70, "default", 1)]
    #[case::bad_budget(None, None, false, &[("gracegate.io/shutdown-budget-seconds", "1h")], &[], Some(30), 40, 70, "default", 1)]
    #[case::both_bad(None, None, false, &[("gracegate.io/prestop-seconds", "x")], &[("gracegate.io/prestop-seconds", "y")], Some(30), 40, 70, "default", 2)]
    #[allow(clippy::too_many_arguments)]
    fn timing_rule(
        #[case] delay: Option<u32>,
        #[case] measured: Option<(f64, usize)>,
        #[case] nlb: bool,
        #[case] pod: &[(&str, &str)],
        #[case] namespace: &[(&str, &str)],
        #[case] own_grace: Option<i64>,
        #[case] s: u32,
        #[case] t: i64,
        #[case] source: &str,
        #[case] warnings: usize,
    ) {
        let pod = annotations(pod);
        let namespace = annotations(namespace);
        let got = timing(
            &TimingSettings::default(),
            &evidence(delay, measured, nlb),
            Some(&pod),
            Some(&namespace),
        );
        assert_eq!(got.prestop_seconds, s, "S");
        assert_eq!(got.grace_period(own_grace), t, "T");
        assert_eq!(got.prestop_source.as_str(), source, "source");
        assert_eq!(got.warnings.len(), warnings, "{:?}", got.warnings);
    }

    #[rstest]
    #[case::nlb_nothing_measured(Some(LoadBalancerKind::Network), 0, true)]
    #[case::nlb_few_drains(Some(LoadBalancerKind::Network), MIN_DRAINS, true)]
    #[case::nlb_one_short(Some(LoadBalancerKind::Network), NLB_MIN_DRAINS - 1, true)]
    #[case::nlb_enough(Some(LoadBalancerKind::Network), NLB_MIN_DRAINS, false)]
    #[case::alb(Some(LoadBalancerKind::Application), 0, false)]
    #[case::kind_unknown(None, 0, false)]
    fn the_nlb_default_holds_until_twenty_drains(
        #[case] kind: Option<LoadBalancerKind>,
        #[case] drains: usize,
        #[case] unmeasured: bool,
    ) {
        assert_eq!(nlb_unmeasured(kind, drains), unmeasured);
    }

    #[test]
    fn warnings_name_the_annotation_and_the_fallback() {
        let pod = annotations(&[("gracegate.io/prestop-seconds", "abc")]);
        let got = timing(
            &TimingSettings::default(),
            &evidence(Some(30), None, false),
            Some(&pod),
            None,
        );
        assert_eq!(
            got.warnings,
            vec![
                "gracegate: pod annotation gracegate.io/prestop-seconds=\"abc\" is not a number \
                 of seconds from 0 to 120, ignored; using 40s"
            ]
        );
        assert!(matches!(
            got.prestop_source,
            PrestopSource::DeregistrationDelay(30, _)
        ));
    }

    #[test]
    fn warnings_say_what_and_by_how_much() {
        let got = timing(
            &TimingSettings::default(),
            &evidence(Some(300), None, false),
            None,
            None,
        );
        assert_eq!(
            got.warnings,
            vec![
                "gracegate: deregistration delay 300s from Ingress ingress-2048 needs a 310s \
                 preStop; capped at 120s (--max-prestop-seconds), 190s short: requests may fail \
                 at the end of a rollout",
                "gracegate: deregistration delay 300s from Ingress ingress-2048 is the AWS \
                 default: old targets stay draining 5 minutes; set \
                 deregistration_delay.timeout_seconds",
            ]
        );
        let got = timing(
            &TimingSettings::default(),
            &evidence(None, Some((180.4, 12)), false),
            None,
            None,
        );
        assert_eq!(
            got.warnings,
            vec![
                "gracegate: S = 186s from the 180s p99 drain of target group k8s-game2048 (12 \
                 drains), over --max-prestop-seconds 120: each replaced pod lingers 186s before \
                 it stops, so rollouts take longer"
            ]
        );
        let pod = annotations(&[POD_S]);
        let mut e = evidence(None, Some((70.0, 5)), true);
        e.unmeasured_nlbs.push("k8s-other".into());
        let got = timing(&TimingSettings::default(), &e, Some(&pod), None);
        assert_eq!(
            got.warnings,
            vec![
                "gracegate: pod annotation gracegate.io/prestop-seconds=25 is below the 70s p99 \
                 drain of target group k8s-game2048 (5 drains): pods stop while still routed",
                "gracegate: NLB target group k8s-nlb and 1 more has under 20 drains measured; \
                 NLBs are reported to route to draining targets ~2 min whatever the delay. \
                 gracegate measures drains and sizes S from them",
            ]
        );
    }

    /// The API server truncates a warning past 256 characters; with names at their longest
    /// (a 253-character Ingress would not fit any sentence) a 63-character one still does.
    #[test]
    fn warnings_fit_the_api_servers_limit() {
        let long = "x".repeat(63);
        let e = Evidence {
            delay: Some((300, DelaySource::Ingress(long.clone()))),
            measured: Some(MeasuredDrain {
                p99_seconds: 999.0,
                count: 50,
                target_group: "y".repeat(32),
            }),
            unmeasured_nlbs: vec!["z".repeat(32), "w".repeat(32)],
        };
        let pod = annotations(&[POD_S]);
        for pod in [None, Some(&pod)] {
            for w in timing(&TimingSettings::default(), &e, pod, None).warnings {
                assert!(w.len() <= 256, "{} characters: {w}", w.len());
            }
        }
    }

    #[test]
    fn odd_measurements_do_not_overflow() {
        for p99 in [f64::NAN, -3.0, f64::INFINITY, 1e300] {
            let got = timing(
                &TimingSettings::default(),
                &evidence(None, Some((p99, 50)), false),
                None,
                None,
            );
            assert!(got.prestop_seconds <= 300, "{p99}: {}", got.prestop_seconds);
        }
    }

    #[test]
    fn settings_move_the_defaults() {
        let settings = TimingSettings {
            prestop_seconds: 15,
            max_prestop_seconds: 30,
            shutdown_budget_seconds: 5,
            drain_margin_seconds: 1,
            ..TimingSettings::default()
        };
        let got = timing(&settings, &Evidence::default(), None, None);
        assert_eq!((got.prestop_seconds, got.grace_period(Some(1))), (15, 20));
        let got = timing(&settings, &evidence(Some(60), None, false), None, None);
        assert_eq!(got.prestop_seconds, 30);
        let got = timing(
            &settings,
            &evidence(None, Some((20.0, 5)), false),
            None,
            None,
        );
        assert_eq!(got.prestop_seconds, 21, "the margin is a setting");
    }

    #[test]
    fn nlb_warning_says_why_and_how_to_go_lower() {
        let got = timing(
            &TimingSettings::default(),
            &evidence(Some(5), None, true),
            None,
            None,
        );
        assert_eq!(got.prestop_source, PrestopSource::NlbDefault);
        assert_eq!(
            got.warnings,
            vec![
                "gracegate: S = 135s from the NLB default (--nlb-prestop-seconds), over \
                 --max-prestop-seconds 120: each replaced pod lingers 135s before it stops, so \
                 rollouts take longer",
                "gracegate: NLB target group k8s-nlb has under 20 drains measured and NLBs are \
                 reported to route to draining targets ~2 min: S = 135s until measured drains \
                 take over; to go lower set gracegate.io/prestop-seconds",
            ]
        );
    }

    #[rstest]
    #[case::off(0, 300, Some(5), 15, "deregistration-delay")]
    #[case::lower(60, 300, Some(5), 60, "nlb-default")]
    #[case::delay_larger(60, 300, Some(90), 100, "deregistration-delay")]
    #[case::capped_by_measured_cap(200, 200, None, 200, "nlb-default")]
    fn nlb_default_is_a_setting(
        #[case] nlb: u32,
        #[case] max_measured: u32,
        #[case] delay: Option<u32>,
        #[case] s: u32,
        #[case] source: &str,
    ) {
        let settings = TimingSettings {
            nlb_prestop_seconds: nlb,
            max_measured_prestop_seconds: max_measured,
            ..TimingSettings::default()
        };
        settings.check().unwrap();
        let got = timing(&settings, &evidence(delay, None, true), None, None);
        assert_eq!(got.prestop_seconds, s);
        assert_eq!(got.prestop_source.as_str(), source);
    }

    #[rstest]
    #[case::defaults(40, 120, 300, 135, None)]
    #[case::prestop_over_cap(
        130,
        120,
        300,
        135,
        Some("--prestop-seconds 130 is above --max-prestop-seconds 120")
    )]
    #[case::cap_over_measured_cap(
        40,
        200,
        150,
        135,
        Some("--max-prestop-seconds 200 is above --max-measured-prestop-seconds 150")
    )]
    #[case::nlb_over_measured_cap(
        40,
        120,
        130,
        135,
        Some("--nlb-prestop-seconds 135 is above --max-measured-prestop-seconds 130")
    )]
    #[case::nlb_off(40, 120, 120, 0, None)]
    fn check_rejects_contradicting_flags(
        #[case] prestop: u32,
        #[case] max: u32,
        #[case] max_measured: u32,
        #[case] nlb: u32,
        #[case] error: Option<&str>,
    ) {
        let settings = TimingSettings {
            prestop_seconds: prestop,
            max_prestop_seconds: max,
            max_measured_prestop_seconds: max_measured,
            nlb_prestop_seconds: nlb,
            ..TimingSettings::default()
        };
        match (settings.check(), error) {
            (Ok(()), None) => {}
            (Err(e), Some(want)) => assert!(e.starts_with(want), "{e}"),
            (got, want) => panic!("{got:?}, wanted {want:?}"),
        }
    }
}
