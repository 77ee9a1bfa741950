//! Checks on the load balancer side of each binding serving the workload:
//! `deregistration-delay-default`, `deregistration-delay-over-cap`,
//! `nlb-drain-longer-than-prestop`, `instance-targets-cluster-policy`, `binding-name-too-long`.

use super::{Check, Ctx, Severity};
use crate::binding::{self, TargetType};
use crate::elb::LoadBalancerKind;
use crate::inject::{self, MAX_CONDITION_NAME_LENGTH};
use crate::timing::AWS_DEFAULT_DEREGISTRATION_DELAY;

impl Ctx<'_> {
    /// Checks on each binding serving the workload.
    pub(super) fn binding_checks(&mut self, served: &inject::Served<'_>, s: u32) {
        let binding = served.binding;
        let name = binding.metadata.name.clone().unwrap_or_default();
        let record = binding
            .target_group()
            .and_then(|g| self.inventory.target_groups.get(&g));
        let max = self.settings.inject.timing.max_prestop_seconds;

        let delay = binding::deregistration_delay(
            binding,
            served.service,
            self.objects.ingresses.iter().map(|i| i.as_ref()),
        )
        .map(|(d, source)| (d, source.to_string()))
        .or_else(|| {
            record
                .and_then(|r| r.deregistration_delay())
                .map(|d| (d, "the target group's attributes".to_string()))
        });
        if let Some((d, source)) = delay {
            let needed = d.saturating_add(crate::timing::DELAY_MARGIN_SECONDS);
            if d == AWS_DEFAULT_DEREGISTRATION_DELAY {
                let cost = if needed > max {
                    format!(
                        "pods would need a {needed}s preStop, over the {max}s cap, so they may stop \
                         while their target is still draining"
                    )
                } else {
                    format!("every replaced pod waits {needed}s to stop")
                };
                self.add(
                    Severity::Warn,
                    Check::DeregistrationDelayDefault,
                    format!(
                        "TargetGroupBinding {name}: deregistration delay is the AWS default of 300s \
                         ({source}), rarely what was meant: {cost}"
                    ),
                    delay_fix(served),
                );
            } else if needed > max {
                self.add(
                    Severity::Warn,
                    Check::DeregistrationDelayOverCap,
                    format!(
                        "TargetGroupBinding {name}: deregistration delay {d}s ({source}) needs a {needed}s \
                         preStop, over the {max}s cap (--max-prestop-seconds): the pod may stop while its \
                         target is still draining"
                    ),
                    format!(
                        "{} or raise --max-prestop-seconds to {needed}",
                        delay_fix(served)
                    ),
                );
            }
        }

        if let Some(r) = record
            && r.load_balancer() == Some(LoadBalancerKind::Network)
            && let Some(p99) = r.measured_p99()
            && p99 > f64::from(s)
        {
            self.add(
                Severity::Risk,
                Check::NlbDrainLongerThanPrestop,
                format!(
                    "TargetGroupBinding {name}: a network load balancer whose targets took up to {p99:.0}s \
                     (p99) to leave after their pod's deletion, longer than the {s}s preStop: new \
                     connections still reach pods that have stopped"
                ),
                format!(
                    "set the annotation {}: \"{}\" in spec.template.metadata.annotations (raise \
                     --max-measured-prestop-seconds if that is over the cap)",
                    crate::timing::ANNOTATION_PRESTOP_SECONDS,
                    (p99.ceil() as u64) + 5
                ),
            );
        }

        if binding.target_type() == Some(TargetType::Instance)
            && !binding::is_traffic_policy_local(served.service)
        {
            let svc = served.service.metadata.name.clone().unwrap_or_default();
            self.add(
                Severity::Warn,
                Check::InstanceTargetsClusterPolicy,
                format!(
                    "TargetGroupBinding {name} has instance targets behind Service {svc} with \
                     externalTrafficPolicy Cluster: a node's health says nothing about one pod, so no \
                     readiness gate is possible and new pods count as Ready before the load balancer \
                     checks them"
                ),
                format!(
                    "kubectl -n {} patch service {svc} -p '{{\"spec\":{{\"externalTrafficPolicy\":\"Local\"}}}}' \
                     (or use ip targets: alb.ingress.kubernetes.io/target-type: ip / \
                     service.beta.kubernetes.io/aws-load-balancer-nlb-target-type: ip)",
                    self.ns()
                ),
            );
        }

        if name.len() > MAX_CONDITION_NAME_LENGTH {
            self.add(
                Severity::Warn,
                Check::BindingNameTooLong,
                format!(
                    "TargetGroupBinding {name} has a {}-character name: a readiness gate's name part \
                     may have at most {MAX_CONDITION_NAME_LENGTH}, so its pods get no gate",
                    name.len()
                ),
                format!(
                    "recreate the TargetGroupBinding with a name of at most {MAX_CONDITION_NAME_LENGTH} characters"
                ),
            );
        }
    }
}

pub(super) fn delay_fix(served: &inject::Served<'_>) -> String {
    let svc = served.service.metadata.name.as_deref().unwrap_or_default();
    format!(
        "set deregistration_delay.timeout_seconds (e.g. 30) in {} on the Ingress, or {} on Service {svc}",
        binding::ALB_TARGET_GROUP_ATTRIBUTES,
        binding::NLB_TARGET_GROUP_ATTRIBUTES
    )
}
