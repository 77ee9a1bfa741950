//! Every workload in the inventory, whatever its kind (Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, Argo Rollout, bare Pod), reduced to what the checks read.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::Inventory;
use crate::inject::PodView;

/// A workload, whatever its kind, reduced to what the checks read.
#[derive(Clone, Debug)]
pub(super) struct Workload {
    pub(super) kind: &'static str,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) uid: Option<String>,
    /// `metadata` + `spec` of the pod template (or of the bare pod).
    pub(super) template: PodView<'static>,
    pub(super) template_labels: BTreeMap<String, String>,
    /// Desired pods; `None` for bare pods.
    pub(super) replicas: Option<i32>,
    pub(super) rollout: RolloutShape,
}

/// How a workload replaces its pods.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum RolloutShape {
    /// Rolling: at most `max_unavailable` pods below `replicas`, `max_surge` above.
    Rolling {
        max_unavailable: IntOrString,
        max_surge: IntOrString,
    },
    /// Every old pod stops before any new one starts.
    Recreate,
    /// Not replaced by a rollout (bare pods, bare ReplicaSets, OnDelete, blue-green).
    None,
}

/// Every workload in the inventory, whatever its kind. ReplicaSets and pods that a controller
/// owns are audited through their owner.
pub(super) fn workloads(inventory: &Inventory) -> Vec<Workload> {
    let mut out = Vec::new();
    let make = |kind: &'static str,
                meta: &kube::api::ObjectMeta,
                template: Option<&PodTemplateSpec>,
                replicas: Option<i32>,
                rollout: RolloutShape| {
        let namespace = meta.namespace.clone().unwrap_or_default();
        let template_labels = template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        Workload {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
            template: template_view(template, &namespace),
            namespace,
            template_labels,
            replicas,
            rollout,
        }
    };
    for d in &inventory.deployments {
        let spec = Some(&d.spec);
        let strategy = spec.and_then(|s| s.strategy.as_ref());
        let rollout = match strategy.and_then(|s| s.type_.as_deref()) {
            Some("Recreate") => RolloutShape::Recreate,
            _ => {
                let r = strategy.and_then(|s| s.rolling_update.as_ref());
                rolling(
                    r.and_then(|r| r.max_unavailable.as_ref()),
                    r.and_then(|r| r.max_surge.as_ref()),
                    "25%",
                    "25%",
                )
            }
        };
        out.push(make(
            "Deployment",
            &d.metadata,
            spec.map(|s| &s.template),
            Some(spec.and_then(|s| s.replicas).unwrap_or(1)),
            rollout,
        ));
    }
    for s in &inventory.statefulsets {
        let spec = Some(&s.spec);
        let strategy = spec.and_then(|s| s.update_strategy.as_ref());
        let rollout = match strategy.and_then(|s| s.type_.as_deref()) {
            Some("OnDelete") => RolloutShape::None,
            _ => rolling(
                strategy
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.as_ref()),
                None,
                "1",
                "0",
            ),
        };
        out.push(make(
            "StatefulSet",
            &s.metadata,
            spec.map(|s| &s.template),
            Some(spec.and_then(|s| s.replicas).unwrap_or(1)),
            rollout,
        ));
    }
    for d in &inventory.daemonsets {
        let spec = Some(&d.spec);
        let strategy = spec.and_then(|s| s.update_strategy.as_ref());
        let rollout = match strategy.and_then(|s| s.type_.as_deref()) {
            Some("OnDelete") => RolloutShape::None,
            _ => {
                let r = strategy.and_then(|s| s.rolling_update.as_ref());
                rolling(
                    r.and_then(|r| r.max_unavailable.as_ref()),
                    r.and_then(|r| r.max_surge.as_ref()),
                    "1",
                    "0",
                )
            }
        };
        let scheduled = d.status.as_ref().map(|s| s.desired_number_scheduled);
        out.push(make(
            "DaemonSet",
            &d.metadata,
            spec.map(|s| &s.template),
            scheduled,
            rollout,
        ));
    }
    for rs in &inventory.replicasets {
        if controller_uid(&rs.metadata).is_some() {
            continue;
        }
        let spec = Some(&rs.spec);
        out.push(make(
            "ReplicaSet",
            &rs.metadata,
            spec.and_then(|s| s.template.as_ref()),
            Some(spec.and_then(|s| s.replicas).unwrap_or(1)),
            RolloutShape::None,
        ));
    }
    for r in &inventory.rollouts {
        let Ok(meta) = serde_json::from_value::<kube::api::ObjectMeta>(
            r.get("metadata").cloned().unwrap_or_default(),
        ) else {
            continue;
        };
        let spec = r.get("spec");
        // A Rollout may point at a Deployment's template (workloadRef) instead of its own.
        let template: Option<PodTemplateSpec> = spec
            .and_then(|s| s.get("template"))
            .and_then(|t| serde_json::from_value(t.clone()).ok());
        let Some(template) = template else { continue };
        let replicas = spec
            .and_then(|s| s.get("replicas"))
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(1);
        let strategy = spec.and_then(|s| s.get("strategy"));
        let rollout = match strategy.and_then(|s| s.get("canary")) {
            Some(canary) => {
                let field = |k: &str| {
                    canary
                        .get(k)
                        .and_then(|v| serde_json::from_value::<IntOrString>(v.clone()).ok())
                };
                rolling(
                    field("maxUnavailable").as_ref(),
                    field("maxSurge").as_ref(),
                    "25%",
                    "25%",
                )
            }
            None => RolloutShape::None,
        };
        out.push(make(
            "Rollout",
            &meta,
            Some(&template),
            Some(replicas),
            rollout,
        ));
    }
    for p in &inventory.pods {
        if controller_uid(&p.metadata).is_some() || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let template = PodTemplateSpec {
            metadata: Some(p.metadata.clone()),
            spec: p.spec.clone(),
        };
        out.push(make(
            "Pod",
            &p.metadata,
            Some(&template),
            None,
            RolloutShape::None,
        ));
    }
    out
}

pub(super) fn rolling(
    max_unavailable: Option<&IntOrString>,
    max_surge: Option<&IntOrString>,
    default_unavailable: &str,
    default_surge: &str,
) -> RolloutShape {
    let or = |v: Option<&IntOrString>, d: &str| {
        v.cloned().unwrap_or_else(|| {
            d.parse::<i32>()
                .map(IntOrString::Int)
                .unwrap_or_else(|_| IntOrString::String(d.to_string()))
        })
    };
    RolloutShape::Rolling {
        max_unavailable: or(max_unavailable, default_unavailable),
        max_surge: or(max_surge, default_surge),
    }
}

pub(super) fn template_view(
    template: Option<&PodTemplateSpec>,
    namespace: &str,
) -> PodView<'static> {
    let Some(t) = template else {
        return PodView::default();
    };
    let mut view: PodView = serde_json::from_value(json!({
        "metadata": t.metadata.as_ref().map(|m| json!({
            "name": m.name, "labels": m.labels, "annotations": m.annotations,
        })),
        "spec": t.spec,
    }))
    .unwrap_or_default();
    view.metadata.namespace = Some(namespace.to_string().into());
    view
}

pub(super) fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether a label selector matches `labels`. An empty selector matches everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}
