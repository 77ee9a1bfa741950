//! Checks on how many replicas stay up: PodDisruptionBudgets and the rollout strategy.
//! `no-pdb`, `pdb-allows-all`, `rollout-no-healthy-target`.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

use super::{Check, Ctx, RolloutShape, Severity, selector_matches};

impl Ctx<'_> {
    /// PodDisruptionBudgets and the rollout strategy.
    pub(super) fn availability(&mut self) {
        let w = self.workload;
        let Some(replicas) = w.replicas else { return };
        if w.kind != "DaemonSet" {
            let pdbs: Vec<&PodDisruptionBudget> = (self.inventory.pdbs.iter())
                .filter(|p| p.metadata.namespace.as_deref() == Some(w.namespace.as_str()))
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|s| selector_matches(s, &w.template_labels))
                })
                .collect();
            if pdbs.is_empty() {
                self.add(
                    Severity::Warn,
                    Check::NoPdb,
                    "no PodDisruptionBudget selects its pods: a node drain may evict every replica at once"
                        .to_string(),
                    format!(
                        "kubectl -n {} create poddisruptionbudget {} --selector={} --max-unavailable=1",
                        w.namespace,
                        w.name,
                        selector_string(&w.template_labels)
                    ),
                );
            }
            for pdb in pdbs {
                let spec = pdb.spec.as_ref();
                let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
                let all = match (
                    spec.and_then(|s| s.max_unavailable.as_ref()),
                    spec.and_then(|s| s.min_available.as_ref()),
                ) {
                    (Some(max), _) => replicas > 0 && scaled(max, replicas, false) >= replicas,
                    (None, Some(min)) => scaled(min, replicas, true) <= 0,
                    (None, None) => false,
                };
                if all {
                    self.add(
                        Severity::Warn,
                        Check::PdbAllowsAll,
                        format!(
                            "PodDisruptionBudget {pdb_name} lets all {replicas} replicas be evicted at once"
                        ),
                        format!(
                            "kubectl -n {} patch pdb {pdb_name} --type merge -p '{{\"spec\":{{\"minAvailable\":null,\"maxUnavailable\":1}}}}'",
                            w.namespace
                        ),
                    );
                }
            }
        }
        let fix_strategy = |kind: &str| match kind {
            "StatefulSet" => {
                "run at least 2 replicas (a StatefulSet replaces each pod in place)".to_string()
            }
            "DaemonSet" => {
                "set spec.updateStrategy.rollingUpdate.maxSurge: 1 (and maxUnavailable: 0)"
                    .to_string()
            }
            _ => format!(
                "kubectl -n {} patch {} {} --type merge -p '{{\"spec\":{{\"strategy\":{{\"type\":\"RollingUpdate\",\"rollingUpdate\":{{\"maxUnavailable\":0,\"maxSurge\":1}}}}}}}}'",
                w.namespace,
                kind.to_ascii_lowercase(),
                w.name
            ),
        };
        match &w.rollout {
            RolloutShape::Recreate if replicas > 0 => self.add(
                Severity::Risk,
                Check::RolloutNoHealthyTarget,
                "strategy Recreate stops every pod before new ones start: the target group has no \
                 healthy target during each rollout"
                    .to_string(),
                fix_strategy(w.kind),
            ),
            RolloutShape::Rolling {
                max_unavailable,
                max_surge,
            } if replicas > 0 => {
                let surge = scaled(max_surge, replicas, true);
                let mut unavailable = scaled(max_unavailable, replicas, false);
                // As the Deployment controller's ResolveFenceposts: both 0 means 1 unavailable.
                if surge == 0 && unavailable == 0 {
                    unavailable = 1;
                }
                if replicas - unavailable <= 0 {
                    self.add(
                        Severity::Risk,
                        Check::RolloutNoHealthyTarget,
                        format!(
                            "{replicas} replica(s) with maxUnavailable {}: a rollout may stop every old \
                             pod before a new one is healthy in the target group",
                            int_or_string(max_unavailable)
                        ),
                        fix_strategy(w.kind),
                    );
                }
            }
            _ => {}
        }
    }
}

pub(super) fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// An absolute number or a percentage of `total`, rounded up or down (as the controllers
/// do: surge and minAvailable up, maxUnavailable down). A malformed value counts as 0.
pub(super) fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let Some(p) = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<i64>().ok())
            else {
                return 0;
            };
            let x = p * i64::from(total);
            let r = if round_up { (x + 99) / 100 } else { x / 100 };
            i32::try_from(r).unwrap_or(i32::MAX)
        }
    }
}

pub(super) fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "pod-template-hash")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
