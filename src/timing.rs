//! The timing rule: deregistration delay `D` → preStop sleep `S` → termination grace `T`.
//!
//! * `S` = pod annotation > namespace annotation > `D + 10` capped at `max_prestop_seconds`
//!   > `prestop_seconds`.
//! * `T` = max(pod's own, `S` + shutdown budget), the budget being pod annotation > namespace
//!   annotation > `shutdown_budget_seconds`.
//!
//! With D = 30: S = 40, T = 70. Pure: malformed input becomes a warning, never an error.

use std::collections::BTreeMap;

use crate::binding::DelaySource;

/// Every annotation gracegate reads lives under this prefix.
pub const ANNOTATION_INJECT: &str = "gracegate.io/inject";
pub const ANNOTATION_PRESTOP_SECONDS: &str = "gracegate.io/prestop-seconds";
pub const ANNOTATION_SHUTDOWN_BUDGET_SECONDS: &str = "gracegate.io/shutdown-budget-seconds";
pub const ANNOTATION_CONTAINERS: &str = "gracegate.io/containers";

/// Seconds the app gets after the deregistration delay to finish in-flight requests.
pub const DELAY_MARGIN_SECONDS: u32 = 10;
/// Upper bound for a shutdown budget annotation: an hour is already far beyond any sane drain.
pub const MAX_SHUTDOWN_BUDGET_SECONDS: u32 = 3600;
/// AWS's default deregistration delay, almost never what a team meant to keep.
pub const AWS_DEFAULT_DEREGISTRATION_DELAY: u32 = 300;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingSettings {
    /// `S` when neither an annotation nor the deregistration delay says otherwise.
    pub prestop_seconds: u32,
    /// Cap on `S`, for the deregistration-delay rule and for annotations alike.
    pub max_prestop_seconds: u32,
    /// Added to `S` to give `T`.
    pub shutdown_budget_seconds: u32,
}

impl Default for TimingSettings {
    fn default() -> Self {
        TimingSettings {
            prestop_seconds: 40,
            max_prestop_seconds: 120,
            shutdown_budget_seconds: 30,
        }
    }
}

/// Where `S` came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrestopSource {
    PodAnnotation,
    NamespaceAnnotation,
    DeregistrationDelay(u32, DelaySource),
    Default,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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

/// Apply the timing rule. `delay` is the largest deregistration delay among the pod's target
/// groups, when one is known.
pub fn timing(
    settings: &TimingSettings,
    delay: Option<(u32, DelaySource)>,
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
    let (prestop_seconds, prestop_source) = match (pod_s.value, ns_s.value, delay) {
        (Some(s), _, _) => (s, PrestopSource::PodAnnotation),
        (None, Some(s), _) => (s, PrestopSource::NamespaceAnnotation),
        (None, None, Some((d, source))) => {
            let wanted = d.saturating_add(DELAY_MARGIN_SECONDS);
            if wanted > max {
                let default_hint = if d == AWS_DEFAULT_DEREGISTRATION_DELAY {
                    " (the AWS default: set deregistration_delay.timeout_seconds)"
                } else {
                    ""
                };
                warnings.push(format!(
                    "gracegate: deregistration delay {d}s from {source}{default_hint} needs a \
                     {wanted}s preStop sleep; capped at {max}s, so requests may fail at the end of a rollout"
                ));
            }
            (
                wanted.min(max),
                PrestopSource::DeregistrationDelay(d, source),
            )
        }
        (None, None, None) => (settings.prestop_seconds, PrestopSource::Default),
    };
    for bad in [pod_s.invalid, ns_s.invalid].into_iter().flatten() {
        warnings.push(format!("{bad}; using {prestop_seconds}s"));
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
mod tests {
    use super::*;
    use rstest::rstest;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ingress(d: u32) -> Option<(u32, DelaySource)> {
        Some((d, DelaySource::Ingress("ingress-2048".into())))
    }

    #[rstest]
    // The seed's numbers: D = 30 → S = 40, T = 70.
    #[case::seed(ingress(30), &[], &[], Some(30), 40, 70, 0)]
    // AWS default delay: S capped at 120, and the user is told.
    #[case::aws_default_capped(ingress(300), &[], &[], Some(30), 120, 150, 1)]
    #[case::no_delay_known(None, &[], &[], Some(30), 40, 70, 0)]
    #[case::short_delay(ingress(0), &[], &[], Some(30), 10, 40, 0)]
    #[case::exactly_at_cap(ingress(110), &[], &[], Some(30), 120, 150, 0)]
    #[case::pod_annotation_wins(ingress(30), &[("gracegate.io/prestop-seconds", "25")], &[("gracegate.io/prestop-seconds", "60")], Some(10), 25, 55, 0)]
    #[case::namespace_annotation(ingress(30), &[], &[("gracegate.io/prestop-seconds", "60")], Some(30), 60, 90, 0)]
    #[case::zero_means_no_prestop(ingress(30), &[("gracegate.io/prestop-seconds", "0")], &[], Some(30), 0, 30, 0)]
    #[case::grace_never_lowered(ingress(30), &[], &[], Some(600), 40, 600, 0)]
    #[case::grace_defaulted(ingress(30), &[], &[], None, 40, 70, 0)]
    #[case::budget_from_pod(None, &[("gracegate.io/shutdown-budget-seconds", "5")], &[("gracegate.io/shutdown-budget-seconds", "50")], Some(30), 40, 45, 0)]
    #[case::budget_from_namespace(None, &[], &[("gracegate.io/shutdown-budget-seconds", "50")], Some(30), 40, 90, 0)]
    #[case::bad_pod_annotation_falls_to_namespace(None, &[("gracegate.io/prestop-seconds", "abc")], &[("gracegate.io/prestop-seconds", "20")], Some(30), 20, 50, 1)]
    #[case::negative(ingress(30), &[("gracegate.io/prestop-seconds", "-5")], &[], Some(30), 40, 70, 1)]
    #[case::over_cap(ingress(30), &[("gracegate.io/prestop-seconds", "99999")], &[], Some(30), 40, 70, 1)]
    #[case::empty(None, &[("gracegate.io/prestop-seconds", "")], &[], Some(30), 40, 70, 1)]
    #[case::bad_budget(None, &[("gracegate.io/shutdown-budget-seconds", "1h")], &[], Some(30), 40, 70, 1)]
    #[case::both_bad(None, &[("gracegate.io/prestop-seconds", "x")], &[("gracegate.io/prestop-seconds", "y")], Some(30), 40, 70, 2)]
    fn timing_rule(
        #[case] delay: Option<(u32, DelaySource)>,
        #[case] pod: &[(&str, &str)],
        #[case] namespace: &[(&str, &str)],
        #[case] own_grace: Option<i64>,
        #[case] s: u32,
        #[case] t: i64,
        #[case] warnings: usize,
    ) {
        let pod = annotations(pod);
        let namespace = annotations(namespace);
        let got = timing(
            &TimingSettings::default(),
            delay,
            Some(&pod),
            Some(&namespace),
        );
        assert_eq!(got.prestop_seconds, s, "S");
        assert_eq!(got.grace_period(own_grace), t, "T");
        assert_eq!(got.warnings.len(), warnings, "{:?}", got.warnings);
    }

    #[test]
    fn warnings_name_the_annotation_and_the_fallback() {
        let pod = annotations(&[("gracegate.io/prestop-seconds", "abc")]);
        let got = timing(&TimingSettings::default(), ingress(30), Some(&pod), None);
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
    fn aws_default_delay_is_called_out() {
        let got = timing(&TimingSettings::default(), ingress(300), None, None);
        assert_eq!(got.warnings.len(), 1);
        assert!(
            got.warnings[0].contains("the AWS default"),
            "{}",
            got.warnings[0]
        );
        assert!(
            got.warnings[0].contains("capped at 120s"),
            "{}",
            got.warnings[0]
        );
    }

    #[test]
    fn settings_move_the_defaults() {
        let settings = TimingSettings {
            prestop_seconds: 15,
            max_prestop_seconds: 30,
            shutdown_budget_seconds: 5,
        };
        let got = timing(&settings, None, None, None);
        assert_eq!((got.prestop_seconds, got.grace_period(Some(1))), (15, 20));
        let got = timing(&settings, ingress(60), None, None);
        assert_eq!(got.prestop_seconds, 30);
    }
}
