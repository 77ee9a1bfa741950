//! `gracegate plan`: what gracegate would inject for a workload and what its next rollout will
//! look like, with the reasoning. Pure: a target group's timings and a rollout's shape in, a
//! [`Report`] out. [`cluster`] reads the same inputs from a live cluster.

pub mod cluster;

use std::fmt::Write as _;

use serde::Serialize;

pub use crate::audit::Severity;
use crate::binding::DelaySource;
use crate::elb::LoadBalancerKind;
use crate::facts::{MIN_DRAINS, NLB_MIN_DRAINS};
use crate::timing::{
    self, AWS_DEFAULT_DEREGISTRATION_DELAY, Evidence, MeasuredDrain, PrestopSource, Timing,
    TimingSettings,
};

/// The load balancer side of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadBalancer {
    /// The target group's name, for the reasoning.
    pub name: String,
    pub kind: LoadBalancerKind,
    pub deregistration_delay: Option<(u32, DelaySource)>,
    pub health_check_interval_seconds: u32,
    pub healthy_threshold: u32,
    pub slow_start_seconds: Option<u32>,
    pub measured: Option<MeasuredDrain>,
}

impl LoadBalancer {
    /// AWS's health-check defaults for the kind (ALB: every 15 s, 5 healthy; NLB: every 30 s,
    /// 3 healthy), when nothing else is known.
    pub fn defaults(kind: LoadBalancerKind) -> LoadBalancer {
        let (interval, healthy) = match kind {
            LoadBalancerKind::Application => (15, 5),
            LoadBalancerKind::Network | LoadBalancerKind::Gateway => (30, 3),
        };
        LoadBalancer {
            name: "the target group".into(),
            kind,
            deregistration_delay: None,
            health_check_interval_seconds: interval,
            healthy_threshold: healthy,
            slow_start_seconds: None,
            measured: None,
        }
    }

    fn evidence(&self) -> Evidence {
        let measured = self.measured.clone().filter(|m| m.count >= MIN_DRAINS);
        Evidence {
            delay: self.deregistration_delay.clone(),
            unmeasured_nlbs: timing::nlb_unmeasured(
                Some(self.kind),
                self.measured.as_ref().map_or(0, |m| m.count),
            )
            .then(|| self.name.clone())
            .into_iter()
            .collect(),
            measured,
        }
    }
}

/// A Deployment's rollout: `RollingUpdate` with these bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    pub replicas: u32,
    /// A count or a percentage of replicas, as in a Deployment (`"25%"`).
    pub max_surge: String,
    pub max_unavailable: String,
    /// Seconds from a new pod's creation to its containers serving (image pull, start).
    pub pod_start_seconds: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Risk {
    pub severity: Severity,
    pub text: String,
}

/// What `plan` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub prestop_seconds: u32,
    /// `annotation`, `deregistration-delay`, `measured-drain` or `default`.
    pub prestop_source: &'static str,
    pub termination_grace_period_seconds: i64,
    pub shutdown_budget_seconds: u32,
    pub load_balancer: LoadBalancerKind,
    /// Registration to `healthy`: the health-check interval times the healthy threshold.
    pub time_to_healthy_seconds: u32,
    pub rollout: Rollout,
    pub risks: Vec<Risk>,
    pub reasoning: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub replicas: u32,
    pub max_surge: u32,
    pub max_unavailable: u32,
    /// Pods replaced per wave.
    pub batch: u32,
    pub waves: u32,
    /// `waves × (pod start + time to healthy)`.
    pub seconds: u32,
    /// When the last old pod has finished its preStop sleep, counted from the start.
    pub last_old_pod_stops_seconds: u32,
}

/// Errors in the inputs: the plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadShape(pub String);

/// `"25%"` of `replicas`, or a plain count. Surge rounds up and unavailability down, as the
/// Deployment controller does (`k8s.io/kubernetes/pkg/controller/deployment/util`,
/// `ResolveFenceposts`).
pub fn resolve(value: &str, replicas: u32, round_up: bool) -> Result<u32, BadShape> {
    let value = value.trim();
    match value.strip_suffix('%') {
        Some(p) => {
            let p: u32 = p.trim().parse().ok().filter(|p| *p <= 100).ok_or_else(|| {
                BadShape(format!("{value:?} is not a percentage from 0% to 100%"))
            })?;
            let exact = u64::from(replicas) * u64::from(p);
            let n = if round_up {
                exact.div_ceil(100)
            } else {
                exact / 100
            };
            Ok(n as u32)
        }
        None => value
            .parse()
            .map_err(|_| BadShape(format!("{value:?} is neither a count nor a percentage"))),
    }
}

/// Make the plan. `timing` is given when it was worked out from a pod's annotations (the
/// cluster path); otherwise the timing rule runs on the load balancer's figures alone.
pub fn plan(
    settings: &TimingSettings,
    lb: &LoadBalancer,
    shape: &Shape,
    timing: Option<Timing>,
) -> Result<Report, BadShape> {
    let timing = timing.unwrap_or_else(|| timing::timing(settings, &lb.evidence(), None, None));
    let s = timing.prestop_seconds;
    let t = timing.grace_period(None);
    let budget = timing.shutdown_budget_seconds;

    let surge = resolve(&shape.max_surge, shape.replicas, true)?;
    let mut unavailable = resolve(&shape.max_unavailable, shape.replicas, false)?;
    // Both zero would never progress; the Deployment controller then allows one unavailable.
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    let batch = (surge + unavailable).max(1);
    let waves = shape.replicas.div_ceil(batch).max(1);
    let healthy = lb
        .health_check_interval_seconds
        .saturating_mul(lb.healthy_threshold);
    let wave = shape.pod_start_seconds.saturating_add(healthy);
    let seconds = waves.saturating_mul(wave);
    let rollout = Rollout {
        replicas: shape.replicas,
        max_surge: surge,
        max_unavailable: unavailable,
        batch,
        waves,
        seconds,
        last_old_pod_stops_seconds: seconds.saturating_add(s),
    };

    let mut reasoning = Vec::new();
    reasoning.push(why_s(&timing, settings, lb));
    let prestop = match timing.prestop_source {
        PrestopSource::DrainWait => format!("drain wait's {s}s deadline"),
        _ => format!("{s}s sleep"),
    };
    reasoning.push(format!(
        "T = {t}s: the {prestop} plus a {budget}s shutdown budget for the app to finish after \
         SIGTERM (a pod's own longer grace period is kept)."
    ));
    reasoning.push(format!(
        "A new target turns healthy about {healthy}s after registration: {} health checks {}s apart \
         must pass; only then does its readiness gate turn True and the rollout move on.",
        lb.healthy_threshold, lb.health_check_interval_seconds
    ));
    if let Some(slow) = lb.slow_start_seconds.filter(|s| *s > 0) {
        reasoning.push(format!(
            "Slow start ramps a new target's share of requests over {slow}s after it turns healthy."
        ));
    }
    reasoning.push(format!(
        "The rollout replaces {batch} pod(s) at a time (maxSurge {surge} + maxUnavailable \
         {unavailable}) in {waves} wave(s) of about {wave}s ({}s to start + {healthy}s to turn \
         healthy): about {}. The last old pod stops serving {s}s after its wave, about {} from \
         the start.",
        shape.pod_start_seconds,
        human(seconds),
        human(rollout.last_old_pod_stops_seconds)
    ));

    let mut risks: Vec<Risk> = timing
        .warnings
        .iter()
        .map(|w| Risk {
            severity: if w.contains("short:") || w.contains("still routed") {
                Severity::Risk
            } else {
                Severity::Warn
            },
            text: w.trim_start_matches("gracegate: ").to_string(),
        })
        .collect();
    if unavailable >= shape.replicas {
        risks.push(Risk {
            severity: Severity::Risk,
            text: format!(
                "maxUnavailable {unavailable} with {} replica(s) lets every old pod go before a new \
                 target is healthy: nothing serves for a while; set maxUnavailable 0 and maxSurge 1",
                shape.replicas
            ),
        });
    }
    if let Some(m) = &lb.measured
        && m.count >= MIN_DRAINS
        && f64::from(s) < m.p99_seconds
        && !risks.iter().any(|r| r.text.contains("p99"))
    {
        risks.push(Risk {
            severity: Severity::Risk,
            text: format!(
                "drains take up to {:.0}s (p99 of {}), longer than the {s}s sleep",
                m.p99_seconds, m.count
            ),
        });
    }
    if healthy >= 120 {
        risks.push(Risk {
            severity: Severity::Info,
            text: format!(
                "new targets need {healthy}s to turn healthy; a shorter interval or a lower \
                 healthy threshold speeds every rollout up"
            ),
        });
    }
    risks.sort_by_key(|r| std::cmp::Reverse(r.severity));

    Ok(Report {
        prestop_seconds: s,
        prestop_source: timing.prestop_source.as_str(),
        termination_grace_period_seconds: t,
        shutdown_budget_seconds: budget,
        load_balancer: lb.kind,
        time_to_healthy_seconds: healthy,
        rollout,
        risks,
        reasoning,
    })
}

fn why_s(timing: &Timing, settings: &TimingSettings, lb: &LoadBalancer) -> String {
    let s = timing.prestop_seconds;
    let mut why = match &timing.prestop_source {
        PrestopSource::PodAnnotation | PrestopSource::NamespaceAnnotation => format!(
            "S = {s}s, set by the gracegate.io/prestop-seconds annotation, which beats every \
             other rule."
        ),
        PrestopSource::DeregistrationDelay(d, from) => format!(
            "S = {s}s from the deregistration delay D = {d}s ({from}): the load balancer keeps \
             the old target draining for D, and the pod serves 10s more."
        ),
        PrestopSource::MeasuredDrain(m) => format!(
            "S = {s}s from the measured drain: targets of {} stayed listed up to {:.0}s after \
             their pod's deletion (p99 of {} drains), plus a {}s margin.",
            m.target_group, m.p99_seconds, m.count, settings.drain_margin_seconds
        ),
        PrestopSource::NlbDefault => format!(
            "S = {s}s, the NLB default (--nlb-prestop-seconds): NLBs are reported to keep routing \
             new connections to a draining target for about 2 minutes whatever D is, and fewer \
             than {NLB_MIN_DRAINS} drains are measured here."
        ),
        PrestopSource::Default => format!(
            "S = {s}s, the default (--prestop-seconds): nothing says how long this target group \
             drains."
        ),
        PrestopSource::DrainWait => format!(
            "Drain wait: the pod stops when its target leaves, at most S = {s}s \
             (--drain-wait-max-seconds)."
        ),
    };
    match timing.prestop_source {
        PrestopSource::DeregistrationDelay(..) if s == settings.max_prestop_seconds => {
            let _ = write!(why, " Capped at --max-prestop-seconds {s}.");
        }
        PrestopSource::MeasuredDrain(_) | PrestopSource::NlbDefault
            if s == settings.max_measured_prestop_seconds =>
        {
            let _ = write!(why, " Capped at --max-measured-prestop-seconds {s}.");
        }
        _ => {}
    }
    if timing.prestop_source == PrestopSource::NlbDefault {
        why.push_str(
            " From 5 drains measured S follows them when they need more, and from 20 also \
             when they need less; the gracegate.io/prestop-seconds annotation sets it now.",
        );
    } else if timing::nlb_unmeasured(Some(lb.kind), lb.measured.as_ref().map_or(0, |m| m.count)) {
        why.push_str(
            " NLBs are reported to keep routing new connections to a draining target for about 2 \
             minutes whatever D is; from 20 drains measured S follows them alone.",
        );
    }
    if lb
        .deregistration_delay
        .as_ref()
        .is_some_and(|(d, _)| *d == AWS_DEFAULT_DEREGISTRATION_DELAY)
    {
        why.push_str(" D is the AWS default of 300s: most services need far less.");
    }
    why
}

/// `2m40s`, `45s`, `1h2m`.
pub fn human(seconds: u32) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

impl Report {
    /// The plain-text form.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let r = &self.rollout;
        let _ = writeln!(
            out,
            "preStop sleep (S)                {}s  ({})",
            self.prestop_seconds, self.prestop_source
        );
        let _ = writeln!(
            out,
            "terminationGracePeriodSeconds    {}s  (S + {}s shutdown budget)",
            self.termination_grace_period_seconds, self.shutdown_budget_seconds
        );
        let _ = writeln!(
            out,
            "new target healthy after         {}s  ({} load balancer)",
            self.time_to_healthy_seconds, self.load_balancer
        );
        let _ = writeln!(
            out,
            "rollout                          {}  ({} wave(s) of {} pod(s); last old pod stops after {})",
            human(r.seconds),
            r.waves,
            r.batch,
            human(r.last_old_pod_stops_seconds)
        );
        out.push_str("\nRisks:\n");
        if self.risks.is_empty() {
            out.push_str("  none found\n");
        }
        for risk in &self.risks {
            let _ = writeln!(out, "  {:<5} {}", risk.severity.as_str(), risk.text);
        }
        out.push_str("\nWhy:\n");
        for line in &self.reasoning {
            let _ = writeln!(out, "  - {line}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn shape(replicas: u32, surge: &str, unavailable: &str) -> Shape {
        Shape {
            replicas,
            max_surge: surge.into(),
            max_unavailable: unavailable.into(),
            pod_start_seconds: 10,
        }
    }

    fn alb(d: Option<u32>) -> LoadBalancer {
        LoadBalancer {
            deregistration_delay: d.map(|d| (d, DelaySource::TargetGroup("web".into()))),
            ..LoadBalancer::defaults(LoadBalancerKind::Application)
        }
    }

    fn measured(p99: f64, count: usize) -> Option<MeasuredDrain> {
        Some(MeasuredDrain {
            p99_seconds: p99,
            count,
            target_group: "web".into(),
        })
    }

    #[rstest]
    #[case("25%", 10, true, 3)]
    #[case("25%", 10, false, 2)]
    #[case("0%", 10, true, 0)]
    #[case("100%", 3, false, 3)]
    #[case("2", 10, true, 2)]
    #[case(" 1 ", 10, false, 1)]
    fn fenceposts(#[case] v: &str, #[case] n: u32, #[case] up: bool, #[case] expected: u32) {
        assert_eq!(resolve(v, n, up), Ok(expected));
    }

    #[rstest]
    #[case("-1")]
    #[case("101%")]
    #[case("x%")]
    #[case("")]
    fn bad_fenceposts(#[case] v: &str) {
        assert!(resolve(v, 10, true).is_err());
    }

    /// S, its source, T, time to healthy, waves, rollout seconds, the risks' severities.
    #[rstest]
    // The seed: D = 30 → S = 40, T = 70; ALB defaults: 15 s × 5 = 75 s to healthy; 4 replicas
    // 25%/25% → 1 + 1 per wave, 2 waves of 85 s.
    #[case::seed(alb(Some(30)), shape(4, "25%", "25%"), (40, "deregistration-delay", 70, 75, 2, 170), vec![])]
    #[case::default_delay(alb(Some(300)), shape(4, "25%", "25%"), (120, "deregistration-delay", 150, 75, 2, 170), vec![Severity::Risk, Severity::Warn])]
    #[case::nothing_known(alb(None), shape(3, "1", "0"), (40, "default", 70, 75, 3, 255), vec![])]
    #[case::measured(LoadBalancer { measured: measured(61.2, 12), ..alb(Some(30)) }, shape(2, "1", "0"), (67, "measured-drain", 97, 75, 2, 170), vec![])]
    #[case::too_few_measured(LoadBalancer { measured: measured(61.2, 4), ..alb(Some(30)) }, shape(2, "1", "0"), (40, "deregistration-delay", 70, 75, 2, 170), vec![])]
    #[case::nlb_learning(LoadBalancer { deregistration_delay: Some((30, DelaySource::TargetGroup("nlb".into()))), ..LoadBalancer::defaults(LoadBalancerKind::Network) }, shape(2, "1", "0"), (135, "nlb-default", 165, 90, 2, 200), vec![Severity::Warn, Severity::Warn])]
    // `gracegate plan --load-balancer network --deregistration-delay 5`, nothing measured.
    #[case::nlb_short_delay_learning(LoadBalancer { deregistration_delay: Some((5, DelaySource::TargetGroup("nlb".into()))), ..LoadBalancer::defaults(LoadBalancerKind::Network) }, shape(2, "1", "0"), (135, "nlb-default", 165, 90, 2, 200), vec![Severity::Warn, Severity::Warn])]
    // 5 to 19 NLB drains measured raise S above the NLB default, never lower it.
    #[case::nlb_few_measured_lower(LoadBalancer { measured: measured(40.0, 10), ..LoadBalancer::defaults(LoadBalancerKind::Network) }, shape(2, "1", "0"), (135, "nlb-default", 165, 90, 2, 200), vec![Severity::Warn, Severity::Warn])]
    #[case::nlb_few_measured_higher(LoadBalancer { measured: measured(160.0, 10), ..LoadBalancer::defaults(LoadBalancerKind::Network) }, shape(2, "1", "0"), (165, "measured-drain", 195, 90, 2, 200), vec![Severity::Warn, Severity::Warn])]
    // From 20 measured NLB drains rule, lower or higher than the NLB default.
    #[case::nlb_measured_lower(LoadBalancer { measured: measured(40.0, 20), ..LoadBalancer::defaults(LoadBalancerKind::Network) }, shape(2, "1", "0"), (45, "measured-drain", 75, 90, 2, 200), vec![])]
    #[case::nlb_measured_higher(LoadBalancer { measured: measured(129.0, 20), ..LoadBalancer::defaults(LoadBalancerKind::Network) }, shape(2, "1", "0"), (134, "measured-drain", 164, 90, 2, 200), vec![Severity::Warn])]
    #[case::one_replica_all_unavailable(alb(Some(30)), shape(1, "0", "1"), (40, "deregistration-delay", 70, 75, 1, 85), vec![Severity::Risk])]
    #[case::both_zero_means_one(alb(Some(30)), shape(2, "0", "0"), (40, "deregistration-delay", 70, 75, 2, 170), vec![])]
    #[case::slow_health_checks(LoadBalancer { health_check_interval_seconds: 30, healthy_threshold: 10, ..alb(Some(30)) }, shape(1, "1", "0"), (40, "deregistration-delay", 70, 300, 1, 310), vec![Severity::Info])]
    fn plans(
        #[case] lb: LoadBalancer,
        #[case] shape: Shape,
        #[case] expected: (u32, &str, i64, u32, u32, u32),
        #[case] severities: Vec<Severity>,
    ) {
        let r = plan(&TimingSettings::default(), &lb, &shape, None).unwrap();
        assert_eq!(
            (
                r.prestop_seconds,
                r.prestop_source,
                r.termination_grace_period_seconds,
                r.time_to_healthy_seconds,
                r.rollout.waves,
                r.rollout.seconds
            ),
            expected,
            "{r:#?}"
        );
        assert_eq!(
            r.risks.iter().map(|r| r.severity).collect::<Vec<_>>(),
            severities,
            "{:#?}",
            r.risks
        );
        assert_eq!(
            r.rollout.last_old_pod_stops_seconds,
            r.rollout.seconds + r.prestop_seconds
        );
        assert!(r.reasoning.len() >= 4);
    }

    #[test]
    fn bad_shape_is_an_error() {
        let err = plan(
            &TimingSettings::default(),
            &alb(None),
            &shape(3, "lots", "0"),
            None,
        )
        .unwrap_err();
        assert_eq!(err.0, "\"lots\" is neither a count nor a percentage");
    }

    #[rstest]
    #[case(0, "0s")]
    #[case(45, "45s")]
    #[case(120, "2m")]
    #[case(160, "2m40s")]
    #[case(3720, "1h2m")]
    fn human_durations(#[case] s: u32, #[case] expected: &str) {
        assert_eq!(human(s), expected);
    }
}
