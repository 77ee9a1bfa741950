//! `gracegate audit`: which workloads behind a TargetGroupBinding will drop requests (or waste
//! time) on their next rollout, and what to change. Pure: an [`Inventory`] of cluster objects
//! in, [`Finding`]s out; listing the objects is [`shell`]'s job, printing them [`output`]'s.
//!
//! What "gracegate would inject now" means is never recomputed here: each workload's pod
//! template goes through the webhook's own [`inject::plan`], with the target-group records of
//! the `gracegate-target-groups` ConfigMap, so `S` and `T` are exactly what the next pod would get.

pub mod output;
pub mod shell;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodTemplateSpec, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::binding::{self, TargetGroupBinding, TargetType};
use crate::facts::{LoadBalancerKind, Records};
use crate::inject::{self, MAX_CONDITION_NAME_LENGTH, NamespaceObjects, PodView, Settings, Skip};
use crate::targets::{LEGACY_PREFIX, TargetGroup};
use crate::timing::{ANNOTATION_CONTAINERS, ANNOTATION_INJECT, AWS_DEFAULT_DEREGISTRATION_DELAY};

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
    NamespaceNotLabelled,
    OptedOut,
    LbcWebhook,
    PodsWithoutGate,
    PodsStaleTiming,
    NoPrestop,
    PrestopTooShort,
    GraceTooShort,
    DeregistrationDelayDefault,
    DeregistrationDelayOverCap,
    NlbDrainLongerThanPrestop,
    InstanceTargetsClusterPolicy,
    BindingNameTooLong,
    NoPdb,
    PdbAllowsAll,
    RolloutNoHealthyTarget,
    GatesStuck,
}

impl Check {
    pub const ALL: [Check; 17] = [
        Check::NamespaceNotLabelled,
        Check::OptedOut,
        Check::LbcWebhook,
        Check::PodsWithoutGate,
        Check::PodsStaleTiming,
        Check::NoPrestop,
        Check::PrestopTooShort,
        Check::GraceTooShort,
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

/// A workload, whatever its kind, reduced to what the checks read.
#[derive(Clone, Debug)]
struct Workload {
    kind: &'static str,
    namespace: String,
    name: String,
    uid: Option<String>,
    /// `metadata` + `spec` of the pod template (or of the bare pod).
    template: PodView,
    template_labels: BTreeMap<String, String>,
    /// Desired pods; `None` for bare pods.
    replicas: Option<i32>,
    rollout: RolloutShape,
}

/// How a workload replaces its pods.
#[derive(Clone, Debug, PartialEq)]
enum RolloutShape {
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
    fn add(&mut self, severity: Severity, check: Check, reason: String, fix: String) {
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

    fn ns(&self) -> &str {
        &self.workload.namespace
    }

    /// `kubectl rollout restart` for workloads that have one; delete for the rest.
    fn restart_command(&self) -> String {
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
        let label = self.settings.inject.namespace_label.clone();
        let namespace = self.objects.namespace.clone();
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

        match plan_now.skip {
            Some(Skip::NamespaceNotOptedIn) | Some(Skip::NamespaceUnknown) => {
                let missing = if namespace.is_none() {
                    "could not be read"
                } else {
                    "is not labelled"
                };
                self.add(
                    Severity::Risk,
                    Check::NamespaceNotLabelled,
                    format!(
                        "namespace {} {missing} {}={}: gracegate adds no readiness gate, preStop or grace period to its pods",
                        self.ns(),
                        label.0,
                        label.1
                    ),
                    format!(
                        "kubectl label namespace {} {}={}, then {}",
                        self.ns(),
                        label.0,
                        label.1,
                        self.restart_command()
                    ),
                );
            }
            Some(Skip::NamespaceOptedOut) => self.add(
                Severity::Warn,
                Check::OptedOut,
                format!(
                    "namespace {} has {ANNOTATION_INJECT}=\"false\": gracegate adds nothing to its pods",
                    self.ns()
                ),
                format!(
                    "kubectl annotate namespace {} {ANNOTATION_INJECT}-",
                    self.ns()
                ),
            ),
            Some(Skip::PodOptedOut) => self.add(
                Severity::Warn,
                Check::OptedOut,
                format!(
                    "its pod template has {ANNOTATION_INJECT}=\"false\": gracegate adds nothing to its pods"
                ),
                format!(
                    "remove the annotation {ANNOTATION_INJECT} from spec.template.metadata.annotations"
                ),
            ),
            Some(Skip::NoBinding) | None => {}
        }

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

    fn workload_grace(&self) -> Option<i64> {
        self.workload
            .template
            .spec
            .as_ref()?
            .termination_grace_period_seconds
    }

    fn as_if_enabled(&self) -> (NamespaceObjects, PodView) {
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

    /// The AWS Load Balancer Controller's own pod webhook, selecting this namespace.
    fn lbc_webhook(&mut self, injected: bool) {
        let Some(configs) = &self.inventory.webhook_configurations else {
            return;
        };
        let namespace_labels = self
            .objects
            .namespace
            .as_ref()
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let Some(config) = configs.iter().find(|c| {
            c.webhooks.iter().flatten().any(|w| {
                w.name == LBC_POD_WEBHOOK
                    && w.namespace_selector
                        .as_ref()
                        .is_none_or(|s| selector_matches(s, &namespace_labels))
            })
        }) else {
            return;
        };
        let config_name = config.metadata.name.clone().unwrap_or_default();
        let same_prefix = self.settings.inject.condition_prefix == LBC_CONDITION_PREFIX;
        if injected && same_prefix {
            self.add(
                Severity::Warn,
                Check::LbcWebhook,
                format!(
                    "the AWS Load Balancer Controller's webhook {LBC_POD_WEBHOOK} \
                     (MutatingWebhookConfiguration {config_name}) also selects namespace {}: unless the \
                     controller runs with {LBC_INJECT_FLAG}=false, both inject the same gate and both \
                     write its condition (last writer wins, so it can flap)",
                    self.ns()
                ),
                format!(
                    "run the controller with {LBC_INJECT_FLAG}=false (Helm: --set \
                     enablePodReadinessGateInject=false), or run gracegate with its own --condition-prefix"
                ),
            );
        } else if !injected {
            self.add(
                Severity::Info,
                Check::LbcWebhook,
                format!(
                    "gracegate does not act here, but the AWS Load Balancer Controller's webhook \
                     {LBC_POD_WEBHOOK} (MutatingWebhookConfiguration {config_name}) selects namespace {}: \
                     its pods may still get the controller's gate, with no preStop or grace period",
                    self.ns()
                ),
                "see the namespace-not-labelled or opted-out finding".to_string(),
            );
        }
    }

    /// The template's own preStop hooks and grace period against `S` and `T`.
    fn template_timing(&mut self, plan: &inject::Plan, injected: bool) {
        let s = plan.prestop_seconds;
        let Some(spec) = self.workload.template.spec.clone() else {
            return;
        };
        let chosen = chosen_containers(&self.workload.template);
        let mut short = Vec::new();
        let mut missing = Vec::new();
        for c in &spec.containers {
            if chosen.as_ref().is_some_and(|n| !n.contains(&c.name)) {
                continue;
            }
            match c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                Some(handler) => {
                    if let Some(n) = inject::sleep_seconds(handler)
                        && n < u64::from(s)
                    {
                        short.push((c.name.clone(), n));
                    }
                }
                None if !injected && s > 0 => missing.push(c.name.clone()),
                None => {}
            }
        }
        if !short.is_empty() {
            let sleeps: Vec<String> = (short.iter())
                .map(|(name, n)| format!("container {name} sleeps {n}s"))
                .collect();
            let names: Vec<&str> = short.iter().map(|(name, _)| name.as_str()).collect();
            self.add(
                Severity::Risk,
                Check::PrestopTooShort,
                format!(
                    "its own preStop is shorter than the {s}s the load balancer needs ({}); gracegate \
                     never replaces a container's preStop",
                    sleeps.join(", ")
                ),
                format!(
                    "set lifecycle.preStop.sleep.seconds: {s} on container {} (or remove the preStop and \
                     let gracegate add one)",
                    names.join(", ")
                ),
            );
        }
        if !missing.is_empty() {
            self.add(
                Severity::Risk,
                Check::NoPrestop,
                format!(
                    "container {} has no preStop and gracegate adds none here: it stops while the load \
                     balancer still sends it requests",
                    missing.join(", ")
                ),
                format!(
                    "let gracegate inject (see namespace-not-labelled or opted-out), or set \
                     lifecycle.preStop.sleep.seconds: {s} on container {}",
                    missing.join(", ")
                ),
            );
        }
        if !injected
            && let Some((own, needed)) = plan.grace
            && let own = own.unwrap_or(crate::timing::DEFAULT_GRACE_PERIOD_SECONDS)
            && own < needed
        {
            self.add(
                Severity::Risk,
                Check::GraceTooShort,
                format!(
                    "terminationGracePeriodSeconds {own} is shorter than {needed} (preStop {s}s + \
                     shutdown budget): the kubelet kills the pod before it has drained"
                ),
                format!(
                    "let gracegate inject, or set spec.template.spec.terminationGracePeriodSeconds: {needed}"
                ),
            );
        }
    }

    /// Running pods created before the label, the binding or the current `S`.
    fn running_pods(&mut self, s: u32, t: i64) {
        let pods = self.pods();
        let mut without_gate = Vec::new();
        let mut without_prestop = 0;
        let mut stale = Vec::new();
        for pod in &pods {
            let Some(view) = pod_view(pod) else { continue };
            let plan = inject::plan(&view, self.objects, &self.settings.inject);
            let name = pod.metadata.name.clone().unwrap_or_default();
            if !plan.gates.is_empty() {
                without_gate.push(name.clone());
                if !plan.prestops.is_empty() {
                    without_prestop += 1;
                }
                continue;
            }
            let short_sleep = (view.spec.iter())
                .flat_map(|s| &s.containers)
                .filter_map(|c| c.lifecycle.as_ref()?.pre_stop.as_ref())
                .filter_map(inject::sleep_seconds)
                .any(|n| n < u64::from(s));
            if !plan.prestops.is_empty() || plan.grace.is_some() || short_sleep {
                stale.push(name);
            }
        }
        if !without_gate.is_empty() {
            let gates: Vec<String> = self.expected_gates();
            let (severity, prestop) = if without_prestop > 0 {
                (
                    Severity::Risk,
                    format!(
                        "; {without_prestop} of them have no preStop either, so the next rollout stops them while the load balancer still sends them requests"
                    ),
                )
            } else {
                (Severity::Warn, String::new())
            };
            self.add(
                severity,
                Check::PodsWithoutGate,
                format!(
                    "{} of {} running pods ({}) lack the gate {}: they predate the namespace label or \
                     the binding{prestop}",
                    without_gate.len(),
                    pods.len(),
                    list(&without_gate),
                    gates.join(", ")
                ),
                self.restart_command(),
            );
        }
        // A bare pod is its own template: template_timing already spoke about it.
        if !stale.is_empty() && self.workload.kind != "Pod" {
            self.add(
                Severity::Risk,
                Check::PodsStaleTiming,
                format!(
                    "{} running pods ({}) were admitted with a shorter preStop or grace period than \
                     gracegate injects now (preStop {s}s, terminationGracePeriodSeconds {t})",
                    stale.len(),
                    list(&stale)
                ),
                self.restart_command(),
            );
        }
    }

    fn expected_gates(&self) -> Vec<String> {
        inject::serving_bindings(&self.workload.template_labels, self.objects)
            .iter()
            .filter(|s| matches!(inject::gate_applies(s), Ok(true)))
            .filter_map(|s| s.binding.metadata.name.as_deref())
            .filter(|n| n.len() <= MAX_CONDITION_NAME_LENGTH)
            .map(|n| self.settings.inject.gate(n))
            .collect()
    }

    /// The workload's live pods (not terminating).
    fn pods(&self) -> Vec<&Pod> {
        let w = self.workload;
        let rs_owner: BTreeMap<&str, &str> = (self.inventory.replicasets.iter())
            .filter_map(|rs| Some((rs.metadata.uid.as_deref()?, controller_uid(&rs.metadata)?)))
            .collect();
        (self.inventory.pods.iter())
            .filter(|p| p.metadata.namespace.as_deref() == Some(w.namespace.as_str()))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .filter(|p| match (controller_uid(&p.metadata), &w.uid) {
                (None, _) => w.kind == "Pod" && p.metadata.name.as_deref() == Some(&w.name),
                (Some(owner), Some(uid)) => {
                    owner == uid || rs_owner.get(owner).is_some_and(|o| o == uid)
                }
                (Some(_), None) => false,
            })
            .collect()
    }

    /// Checks on each binding serving the workload.
    fn binding_checks(&mut self, served: &inject::Served<'_>, s: u32) {
        let binding = served.binding;
        let name = binding.metadata.name.clone().unwrap_or_default();
        let record = TargetGroup::of(binding).and_then(|g| self.inventory.target_groups.get(&g));
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
                     --max-prestop-seconds if that is over the cap)",
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

    /// PodDisruptionBudgets and the rollout strategy.
    fn availability(&mut self) {
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

    /// Pods not Ready only because one of gracegate's gates is not True, for longer than half
    /// the gate timeout.
    fn stuck_gates(&mut self) {
        let half = match self.settings.gate_timeout {
            Duration::ZERO => Duration::from_secs(300),
            t => t / 2,
        };
        let prefix = format!("{}/", self.settings.inject.condition_prefix);
        let legacy = format!("{LEGACY_PREFIX}/");
        let mut stuck = Vec::new();
        for pod in self.pods() {
            let Some(status) = &pod.status else { continue };
            let conditions = status.conditions.clone().unwrap_or_default();
            let status_of = |t: &str| {
                conditions
                    .iter()
                    .find(|c| c.type_ == t)
                    .map(|c| c.status.as_str())
            };
            if status_of("Ready") == Some("True") || status_of("ContainersReady") != Some("True") {
                continue;
            }
            let Some(created) = pod.metadata.creation_timestamp.as_ref() else {
                continue;
            };
            let age = self.settings.now.duration_since(created.0).as_secs_f64();
            if age < half.as_secs_f64() {
                continue;
            }
            let gates = (pod.spec.as_ref())
                .and_then(|s| s.readiness_gates.clone())
                .unwrap_or_default();
            for gate in gates {
                let t = gate.condition_type;
                if !(t.starts_with(&prefix) || t.starts_with(&legacy)) {
                    continue;
                }
                let condition = conditions.iter().find(|c| c.type_ == t);
                if condition.is_some_and(|c| c.status == "True") {
                    continue;
                }
                let last = match condition {
                    Some(c) => format!(
                        "{} {}{}",
                        c.status,
                        c.reason.as_deref().unwrap_or("(no reason)"),
                        c.message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                    None => "no condition written yet".to_string(),
                };
                stuck.push(format!(
                    "{} waited {}s for {t} (last: {last})",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    age as u64
                ));
            }
        }
        if !stuck.is_empty() {
            self.add(
                Severity::Warn,
                Check::GatesStuck,
                format!(
                    "pods not Ready only because of gracegate's gate, for more than {}s: {}",
                    half.as_secs(),
                    stuck.join("; ")
                ),
                "check the target group's health check (aws elbv2 describe-target-health \
                 --target-group-arn ARN) and the watcher's logs (kubectl -n gracegate-system logs \
                 deploy/gracegate); gracegate releases the gate at --gate-timeout"
                    .to_string(),
            );
        }
    }
}

fn delay_fix(served: &inject::Served<'_>) -> String {
    let svc = served.service.metadata.name.as_deref().unwrap_or_default();
    format!(
        "set deregistration_delay.timeout_seconds (e.g. 30) in {} on the Ingress, or {} on Service {svc}",
        binding::ALB_TARGET_GROUP_ATTRIBUTES,
        binding::NLB_TARGET_GROUP_ATTRIBUTES
    )
}

/// At most three names, then a count.
fn list(names: &[String]) -> String {
    if names.len() <= 3 {
        names.join(", ")
    } else {
        format!("{}, and {} more", names[..3].join(", "), names.len() - 3)
    }
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// An absolute number or a percentage of `total`, rounded up or down (as the controllers
/// do: surge and minAvailable up, maxUnavailable down). A malformed value counts as 0.
fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
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

fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "pod-template-hash")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
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

fn controller_uid(meta: &kube::api::ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// `gracegate.io/containers`, as the webhook reads it.
fn chosen_containers(pod: &PodView) -> Option<BTreeSet<String>> {
    let raw = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_CONTAINERS)?;
    Some(
        raw.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
    )
}

fn pod_view(pod: &Pod) -> Option<PodView> {
    serde_json::from_value(serde_json::to_value(pod).ok()?).ok()
}

fn template_view(template: Option<&PodTemplateSpec>, namespace: &str) -> PodView {
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
    view.metadata.namespace = Some(namespace.to_string());
    view
}

fn rolling(
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

/// Every workload in the inventory, whatever its kind. ReplicaSets and pods that a controller
/// owns are audited through their owner.
fn workloads(inventory: &Inventory) -> Vec<Workload> {
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

#[cfg(test)]
mod tests;
