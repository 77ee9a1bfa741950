//! `gracegate audit`: which workloads behind a TargetGroupBinding will drop requests (or waste
//! time) on their next rollout, and what to change. Pure: an [`Inventory`] of cluster objects
//! in, [`Finding`]s out; listing the objects is [`shell`]'s job, printing them [`output`]'s.
//!
//! What "gracegate would inject now" means is never recomputed here: each workload's pod
//! template goes through the webhook's own [`inject::plan`], with the target-group records of
//! the `gracegate-target-groups` ConfigMap, so `S` and `T` are exactly what the next pod would get.
//!
//! The checks live in rooms by what they look at, each findable by its id (the [`Check`]
//! variant's doc names its room):
//!
//! * `namespace.rs`: `namespace-not-labelled`, `opted-out`;
//! * `workload_timing.rs`: `no-prestop`, `prestop-too-short`, `grace-too-short`,
//!   `pods-without-gate`, `pods-stale-timing`;
//! * `load_balancer.rs`: `deregistration-delay-default`, `deregistration-delay-over-cap`,
//!   `nlb-drain-longer-than-prestop`, `instance-targets-cluster-policy`, `binding-name-too-long`;
//! * `availability.rs`: `no-pdb`, `pdb-allows-all`, `rollout-no-healthy-target`;
//! * `installation.rs`: gracegate beside the cluster's other parts: `lbc-webhook`, `gates-stuck`.
//!
//! `workloads.rs` turns the inventory into workloads of every kind; [`shell`] lists the objects
//! and [`output`] prints the findings.

mod availability;
mod installation;
mod load_balancer;
mod namespace;
pub mod output;
pub mod shell;
mod workload_timing;
mod workloads;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::binding::TargetGroupBinding;
use crate::facts::Records;
use crate::inject::{self, PodView, Settings};
use crate::objects::NamespaceObjects;
use crate::timing::ANNOTATION_INJECT;
pub use workloads::selector_matches;
use workloads::{RolloutShape, Workload, controller_uid, workloads};

/// The name of the AWS Load Balancer Controller's pod mutating webhook, which injects
/// `target-health.elbv2.k8s.aws/<binding>` gates itself. Upstream:
/// kubernetes-sigs/aws-load-balancer-controller `webhooks/core/pod_readiness_gate_mutator.go`
/// (kubebuilder marker `name=mpod.elbv2.k8s.aws`, path `/mutate-v1-pod`) and
/// `helm/aws-load-balancer-controller/templates/webhook.yaml`.
pub const LBC_POD_WEBHOOK: &str = "mpod.elbv2.k8s.aws";
/// The controller's flag that turns its gate injection off (default `true`). Upstream:
/// `pkg/inject/pod_readiness/pod_readiness_gate_config.go`, `BindFlags`.
pub const LBC_INJECT_FLAG: &str = "--enable-pod-readiness-gate-inject";
/// The condition type prefix the controller's webhook injects (upstream
/// `pkg/targetgroupbinding/utils.go`, `TargetHealthPodConditionTypePrefix`).
pub const LBC_CONDITION_PREFIX: &str = "target-health.elbv2.k8s.aws";

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing fails.
    Info,
    /// Requests may fail, or rollouts take longer than they need to.
    Warn,
    /// Requests will fail on the next rollout.
    Risk,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Risk => "risk",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every check, by the name findings carry (`check` in JSON/YAML, CHECK in the table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// `namespace-not-labelled`, in `audit/namespace.rs`.
    NamespaceNotLabelled,
    /// `opted-out`, in `audit/namespace.rs`.
    OptedOut,
    /// `lbc-webhook`, in `audit/installation.rs`.
    LbcWebhook,
    /// `pods-without-gate`, in `audit/workload_timing.rs`.
    PodsWithoutGate,
    /// `pods-stale-timing`, in `audit/workload_timing.rs`.
    PodsStaleTiming,
    /// `no-prestop`, in `audit/workload_timing.rs`.
    NoPrestop,
    /// `prestop-too-short`, in `audit/workload_timing.rs`.
    PrestopTooShort,
    /// `grace-too-short`, in `audit/workload_timing.rs`.
    GraceTooShort,
    /// `drain-wait-own-prestop`, in `audit/workload_timing.rs`.
    DrainWaitOwnPrestop,
    /// `deregistration-delay-default`, in `audit/load_balancer.rs`.
    DeregistrationDelayDefault,
    /// `deregistration-delay-over-cap`, in `audit/load_balancer.rs`.
    DeregistrationDelayOverCap,
    /// `nlb-drain-longer-than-prestop`, in `audit/load_balancer.rs`.
    NlbDrainLongerThanPrestop,
    /// `instance-targets-cluster-policy`, in `audit/load_balancer.rs`.
    InstanceTargetsClusterPolicy,
    /// `binding-name-too-long`, in `audit/load_balancer.rs`.
    BindingNameTooLong,
    /// `no-pdb`, in `audit/availability.rs`.
    NoPdb,
    /// `pdb-allows-all`, in `audit/availability.rs`.
    PdbAllowsAll,
    /// `rollout-no-healthy-target`, in `audit/availability.rs`.
    RolloutNoHealthyTarget,
    /// `gates-stuck`, in `audit/installation.rs`.
    GatesStuck,
}

impl Check {
    pub const ALL: [Check; 18] = [
        Check::NamespaceNotLabelled,
        Check::OptedOut,
        Check::LbcWebhook,
        Check::PodsWithoutGate,
        Check::PodsStaleTiming,
        Check::NoPrestop,
        Check::PrestopTooShort,
        Check::GraceTooShort,
        Check::DrainWaitOwnPrestop,
        Check::DeregistrationDelayDefault,
        Check::DeregistrationDelayOverCap,
        Check::NlbDrainLongerThanPrestop,
        Check::InstanceTargetsClusterPolicy,
        Check::BindingNameTooLong,
        Check::NoPdb,
        Check::PdbAllowsAll,
        Check::RolloutNoHealthyTarget,
        Check::GatesStuck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::NamespaceNotLabelled => "namespace-not-labelled",
            Check::OptedOut => "opted-out",
            Check::LbcWebhook => "lbc-webhook",
            Check::PodsWithoutGate => "pods-without-gate",
            Check::PodsStaleTiming => "pods-stale-timing",
            Check::NoPrestop => "no-prestop",
            Check::PrestopTooShort => "prestop-too-short",
            Check::GraceTooShort => "grace-too-short",
            Check::DrainWaitOwnPrestop => "drain-wait-own-prestop",
            Check::DeregistrationDelayDefault => "deregistration-delay-default",
            Check::DeregistrationDelayOverCap => "deregistration-delay-over-cap",
            Check::NlbDrainLongerThanPrestop => "nlb-drain-longer-than-prestop",
            Check::InstanceTargetsClusterPolicy => "instance-targets-cluster-policy",
            Check::BindingNameTooLong => "binding-name-too-long",
            Check::NoPdb => "no-pdb",
            Check::PdbAllowsAll => "pdb-allows-all",
            Check::RolloutNoHealthyTarget => "rollout-no-healthy-target",
            Check::GatesStuck => "gates-stuck",
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that will go wrong, on one workload, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub severity: Severity,
    pub check: Check,
    pub namespace: String,
    /// The workload's kind: Deployment, StatefulSet, DaemonSet, ReplicaSet, Rollout, Pod.
    pub kind: String,
    pub name: String,
    /// What goes wrong, in one sentence.
    pub reason: String,
    /// The annotation, label or kubectl command that fixes it.
    pub fix: String,
}

/// A workload behind at least one TargetGroupBinding, and what gracegate would give its pods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditedWorkload {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// The TargetGroupBindings serving its pods, by name.
    pub bindings: Vec<String>,
    /// `S`: the preStop sleep gracegate would inject now.
    pub prestop_seconds: u32,
    /// `T`: the grace period a new pod would get.
    pub termination_grace_period_seconds: i64,
    /// Whether gracegate acts on its new pods (namespace labelled, not opted out).
    pub injected: bool,
}

/// Everything `audit` reads. Rollouts (argoproj.io) stay JSON: gracegate has no types for them
/// and reads only `spec.replicas`, `spec.template` and `spec.strategy`.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub bindings: Vec<TargetGroupBinding>,
    pub ingresses: Vec<Ingress>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub deployments: Vec<Deployment>,
    pub statefulsets: Vec<StatefulSet>,
    pub daemonsets: Vec<DaemonSet>,
    pub replicasets: Vec<ReplicaSet>,
    pub rollouts: Vec<Value>,
    pub pods: Vec<Pod>,
    /// `None` when they could not be listed (no RBAC): the LBC webhook check is skipped.
    pub webhook_configurations: Option<Vec<MutatingWebhookConfiguration>>,
    /// From the `gracegate-target-groups` ConfigMap (and `--aws`).
    pub target_groups: Records,
}

/// What audit compares against: the webhook's settings and the watcher's gate timeout.
#[derive(Clone, Debug)]
pub struct AuditSettings {
    pub inject: Settings,
    /// The watcher's `--gate-timeout`; `ZERO` = never released.
    pub gate_timeout: Duration,
    pub now: Timestamp,
}

/// The result of an audit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    pub workloads: Vec<AuditedWorkload>,
    pub findings: Vec<Finding>,
}

impl Audit {
    /// The worst severity found.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// Run every check.
pub fn audit(inventory: &Inventory, settings: &AuditSettings) -> Audit {
    let mut result = Audit::default();
    let namespaces: BTreeMap<&str, &Namespace> = inventory
        .namespaces
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let records = Arc::new(inventory.target_groups.clone());
    for workload in workloads(inventory) {
        let objects = namespace_objects(inventory, &namespaces, &workload.namespace, &records);
        let served = inject::serving_bindings(&workload.template_labels, &objects);
        if served.is_empty() {
            continue;
        }
        let mut ctx = Ctx {
            inventory,
            settings,
            workload: &workload,
            objects: &objects,
            findings: Vec::new(),
        };
        let audited = ctx.run(&served);
        result.workloads.push(audited);
        result.findings.append(&mut ctx.findings);
    }
    result
        .workloads
        .sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    result.findings.sort_by(|a, b| {
        (
            &a.namespace,
            &a.kind,
            &a.name,
            std::cmp::Reverse(a.severity),
            a.check,
        )
            .cmp(&(
                &b.namespace,
                &b.kind,
                &b.name,
                std::cmp::Reverse(b.severity),
                b.check,
            ))
    });
    result
}

fn namespace_objects(
    inventory: &Inventory,
    namespaces: &BTreeMap<&str, &Namespace>,
    namespace: &str,
    records: &Arc<Records>,
) -> NamespaceObjects {
    let in_ns = |m: &kube::api::ObjectMeta| m.namespace.as_deref() == Some(namespace);
    NamespaceObjects {
        namespace: namespaces.get(namespace).map(|n| Arc::new((*n).clone())),
        services: (inventory.services.iter())
            .filter(|s| in_ns(&s.metadata))
            .map(|s| Arc::new(s.clone()))
            .collect(),
        bindings: (inventory.bindings.iter())
            .filter(|b| in_ns(&b.metadata))
            .map(|b| Arc::new(b.clone()))
            .collect(),
        ingresses: (inventory.ingresses.iter())
            .filter(|i| in_ns(&i.metadata))
            .map(|i| Arc::new(i.clone()))
            .collect(),
        target_groups: records.clone(),
    }
}

struct Ctx<'a> {
    inventory: &'a Inventory,
    settings: &'a AuditSettings,
    workload: &'a Workload,
    objects: &'a NamespaceObjects,
    findings: Vec<Finding>,
}

impl Ctx<'_> {
    pub(super) fn add(&mut self, severity: Severity, check: Check, reason: String, fix: String) {
        self.findings.push(Finding {
            severity,
            check,
            namespace: self.workload.namespace.clone(),
            kind: self.workload.kind.to_string(),
            name: self.workload.name.clone(),
            reason,
            fix,
        });
    }

    pub(super) fn ns(&self) -> &str {
        &self.workload.namespace
    }

    /// `kubectl rollout restart` for workloads that have one; delete for the rest.
    pub(super) fn restart_command(&self) -> String {
        let w = self.workload;
        match w.kind {
            "Deployment" | "StatefulSet" | "DaemonSet" => format!(
                "kubectl -n {} rollout restart {}/{}",
                w.namespace,
                w.kind.to_ascii_lowercase(),
                w.name
            ),
            "Rollout" => format!(
                "kubectl argo rollouts -n {} restart {}",
                w.namespace, w.name
            ),
            _ => format!(
                "delete and recreate the pods of {} {} (kubectl -n {} delete pod ...)",
                w.kind, w.name, w.namespace
            ),
        }
    }

    fn run(&mut self, served: &[inject::Served<'_>]) -> AuditedWorkload {
        let plan_now = inject::plan(&self.workload.template, self.objects, &self.settings.inject);

        // What gracegate would inject if it acted on this workload: the same plan with the
        // namespace labelled and neither the namespace nor the pod opted out.
        let (enabled_objects, enabled_pod) = self.as_if_enabled();
        let plan = inject::plan(&enabled_pod, &enabled_objects, &self.settings.inject);
        let injected = plan_now.skip.is_none();
        let s = plan.prestop_seconds;
        let t = plan
            .grace
            .map(|(_, new)| new)
            .or(self.workload_grace())
            .unwrap_or(crate::timing::DEFAULT_GRACE_PERIOD_SECONDS);

        self.namespace_checks(plan_now.skip);

        self.lbc_webhook(injected);
        self.template_timing(&plan, injected);
        if injected {
            self.running_pods(s, t);
        }
        for served in served {
            self.binding_checks(served, s);
        }
        self.availability();
        self.stuck_gates();

        AuditedWorkload {
            namespace: self.workload.namespace.clone(),
            kind: self.workload.kind.to_string(),
            name: self.workload.name.clone(),
            bindings: served
                .iter()
                .map(|s| s.binding.metadata.name.clone().unwrap_or_default())
                .collect(),
            prestop_seconds: s,
            termination_grace_period_seconds: t,
            injected,
        }
    }

    pub(super) fn workload_grace(&self) -> Option<i64> {
        self.workload
            .template
            .spec
            .as_ref()?
            .termination_grace_period_seconds
    }

    pub(super) fn as_if_enabled(&self) -> (NamespaceObjects, PodView<'static>) {
        let mut objects = self.objects.clone();
        let mut namespace = objects
            .namespace
            .as_deref()
            .cloned()
            .unwrap_or_else(|| Namespace {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.workload.namespace.clone()),
                    ..Default::default()
                },
                ..Default::default()
            });
        let (k, v) = &self.settings.inject.namespace_label;
        namespace
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.clone(), v.clone());
        if let Some(a) = namespace.metadata.annotations.as_mut() {
            a.remove(ANNOTATION_INJECT);
        }
        objects.namespace = Some(Arc::new(namespace));
        let mut pod = self.workload.template.clone();
        if let Some(a) = pod.metadata.annotations.as_mut() {
            a.remove(ANNOTATION_INJECT);
        }
        (objects, pod)
    }
}

/// At most three names, then a count.
fn list(names: &[String]) -> String {
    if names.len() <= 3 {
        names.join(", ")
    } else {
        format!("{}, and {} more", names[..3].join(", "), names.len() - 3)
    }
}

#[cfg(test)]
mod tests;
