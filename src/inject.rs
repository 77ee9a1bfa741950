//! What the webhook adds to a pod: pod + the objects of its namespace + settings → [`Plan`]
//! → JSONPatch. Pure: no I/O, no clock, and malformed input becomes a warning.
//!
//! The plan only ever *adds*: gates that are missing, a preStop where a container has none, a
//! grace period raised to what the preStop needs. Planning again on the patched pod yields an
//! empty plan, which is what makes `reinvocationPolicy: IfNeeded` safe.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{LifecycleHandler, Namespace, PodReadinessGate, Service};
use k8s_openapi::api::networking::v1::Ingress;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::binding::{self, DelaySource, TargetGroupBinding, TargetType};
use crate::facts::Records;
use crate::facts::{LoadBalancerKind, name_from_arn};
use crate::targets::TargetGroup;
use crate::timing::{
    self, ANNOTATION_CONTAINERS, ANNOTATION_INJECT, ANNOTATION_PRESTOP_SOURCE, Evidence,
    MeasuredDrain, PrestopSource, TimingSettings,
};

/// The default condition type prefix, shared with the AWS Load Balancer Controller.
pub const DEFAULT_CONDITION_PREFIX: &str = "target-health.elbv2.k8s.aws";
/// The default namespace opt-in label, shared with the AWS Load Balancer Controller.
pub const DEFAULT_NAMESPACE_LABEL: (&str, &str) =
    ("elbv2.k8s.aws/pod-readiness-gate-inject", "enabled");
/// The API server rejects a condition type whose name part is longer than this.
pub const MAX_CONDITION_NAME_LENGTH: usize = 63;

/// The parts of a pod the decision reads, as the webhook deserialises them from a review.
///
/// Not `k8s_openapi`'s `Pod`: reading a whole pod (managed fields, env, volumes, probes) was
/// four fifths of a review's time (see BENCHMARKS.md), for fields no decision looks at. Every
/// other field is skipped unread, so an odd value in one of them cannot fail a review either.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PodView {
    pub metadata: PodMeta,
    pub spec: Option<PodSpecView>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PodMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpecView {
    /// Regular containers only: init containers (native sidecars included) get no preStop.
    pub containers: Vec<ContainerView>,
    pub readiness_gates: Option<Vec<PodReadinessGate>>,
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    /// Present (maybe with only a postStart) or not: decides where a preStop is added.
    pub lifecycle: Option<LifecycleView>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct LifecycleView {
    pub pre_stop: Option<LifecycleHandler>,
}

/// How an injected preStop waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrestopAction {
    /// `lifecycle.preStop.sleep.seconds`: Kubernetes ≥ 1.30, needs no shell in the image.
    Sleep,
    /// `exec: ["/bin/sh", "-c", "sleep S"]`: for older API servers; needs a shell.
    Exec,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub timing: TimingSettings,
    pub prestop_action: PrestopAction,
    pub condition_prefix: String,
    pub namespace_label: (String, String),
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timing: TimingSettings::default(),
            prestop_action: PrestopAction::Sleep,
            condition_prefix: DEFAULT_CONDITION_PREFIX.to_string(),
            namespace_label: (
                DEFAULT_NAMESPACE_LABEL.0.to_string(),
                DEFAULT_NAMESPACE_LABEL.1.to_string(),
            ),
        }
    }
}

impl Settings {
    /// The readiness gate condition type for a binding.
    pub fn gate(&self, binding_name: &str) -> String {
        format!("{}/{}", self.condition_prefix, binding_name)
    }
}

/// The cluster objects of one namespace that a decision reads.
#[derive(Clone, Debug, Default)]
pub struct NamespaceObjects {
    /// `None` when the namespace is not (yet) known: nothing is injected.
    pub namespace: Option<Arc<Namespace>>,
    pub services: Vec<Arc<Service>>,
    pub bindings: Vec<Arc<TargetGroupBinding>>,
    pub ingresses: Vec<Arc<Ingress>>,
    /// What the leader learnt about target groups (facts and measured drains), from the
    /// `gracegate-target-groups` ConfigMap; empty when there is none yet.
    pub target_groups: Arc<Records>,
}

impl NamespaceObjects {
    /// The Service of that name in the namespace.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .map(|s| s.as_ref())
    }
}

/// Why a pod is left unchanged; for logs and metrics, not for the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NamespaceUnknown,
    NamespaceNotOptedIn,
    NamespaceOptedOut,
    PodOptedOut,
    NoBinding,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NamespaceUnknown => "namespace-unknown",
            Skip::NamespaceNotOptedIn => "namespace-not-opted-in",
            Skip::NamespaceOptedOut => "namespace-opted-out",
            Skip::PodOptedOut => "pod-opted-out",
            Skip::NoBinding => "no-binding",
        }
    }
}

/// How `gracegate.io/prestop-source` goes onto the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotationAdd {
    /// The pod has no annotations: add the map.
    Map,
    /// Add the key to the pod's annotations.
    Key,
    /// The pod says another source (copied from an older pod's manifest): ours is current.
    Replace,
}

/// A container that gets a preStop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrestopAdd {
    /// Index into `spec.containers`.
    pub index: usize,
    /// Whether the container already has a `lifecycle` (e.g. a postStart hook) to add into.
    pub has_lifecycle: bool,
}

/// What to add to one pod.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    pub skip: Option<Skip>,
    /// New readiness gate condition types, in binding-name order.
    pub gates: Vec<String>,
    pub has_gates: bool,
    pub prestops: Vec<PrestopAdd>,
    pub prestop_seconds: u32,
    /// Which rule gave `prestop_seconds` (`None` when the pod was skipped).
    pub prestop_source: Option<PrestopSource>,
    /// `gracegate.io/prestop-source` to write, and how.
    pub source_annotation: Option<(AnnotationAdd, &'static str)>,
    pub prestop_action: Option<PrestopAction>,
    /// `(pod's own, new)` when the grace period must rise.
    pub grace: Option<(Option<i64>, i64)>,
    /// For `AdmissionResponse.warnings`: what the user should fix.
    pub warnings: Vec<String>,
}

impl Plan {
    fn skipped(skip: Skip, warnings: Vec<String>) -> Plan {
        Plan {
            skip: Some(skip),
            warnings,
            ..Plan::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
            && self.prestops.is_empty()
            && self.grace.is_none()
            && self.source_annotation.is_none()
    }

    /// The JSONPatch for the pod the plan was made for: `add` operations only, except that
    /// an existing grace period is `replace`d by a larger one.
    pub fn patch(&self) -> Patch {
        let mut ops = Vec::new();
        if !self.gates.is_empty() {
            let gates = self.gates.iter().map(|g| json!({ "conditionType": g }));
            if self.has_gates {
                ops.extend(gates.map(|value| add(&["spec", "readinessGates", "-"], value)));
            } else {
                ops.push(add(
                    &["spec", "readinessGates"],
                    Value::Array(gates.collect()),
                ));
            }
        }
        if let Some(action) = self.prestop_action {
            let handler = prestop_handler(action, self.prestop_seconds);
            for p in &self.prestops {
                let index = p.index.to_string();
                if p.has_lifecycle {
                    let path = ["spec", "containers", &index, "lifecycle", "preStop"];
                    ops.push(add(&path, handler.clone()));
                } else {
                    let path = ["spec", "containers", &index, "lifecycle"];
                    ops.push(add(&path, json!({ "preStop": handler })));
                }
            }
        }
        if let Some((how, value)) = self.source_annotation {
            let key = ANNOTATION_PRESTOP_SOURCE;
            ops.push(match how {
                AnnotationAdd::Map => add(&["metadata", "annotations"], json!({ key: value })),
                AnnotationAdd::Key => add(&["metadata", "annotations", key], json!(value)),
                AnnotationAdd::Replace => PatchOperation::Replace(ReplaceOperation {
                    path: PointerBuf::from_tokens(["metadata", "annotations", key]),
                    value: json!(value),
                }),
            });
        }
        if let Some((own, new)) = self.grace {
            let path = PointerBuf::from_tokens(["spec", "terminationGracePeriodSeconds"]);
            ops.push(match own {
                Some(_) => PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: json!(new),
                }),
                None => PatchOperation::Add(AddOperation {
                    path,
                    value: json!(new),
                }),
            });
        }
        Patch(ops)
    }
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn prestop_handler(action: PrestopAction, seconds: u32) -> Value {
    match action {
        PrestopAction::Sleep => json!({ "sleep": { "seconds": seconds } }),
        PrestopAction::Exec => {
            json!({ "exec": { "command": ["/bin/sh", "-c", format!("sleep {seconds}")] } })
        }
    }
}

/// A binding that serves the pod, with the Service that ties them.
#[derive(Clone, Copy, Debug)]
pub struct Served<'a> {
    pub binding: &'a TargetGroupBinding,
    pub service: &'a Service,
}

/// The bindings in `objects` whose Service selects a pod with `labels`, in name order, each once.
pub fn serving_bindings<'a>(
    labels: &BTreeMap<String, String>,
    objects: &'a NamespaceObjects,
) -> Vec<Served<'a>> {
    let mut served: Vec<Served<'a>> = objects
        .bindings
        .iter()
        .filter_map(|b| {
            let service = objects.service(&b.spec.service_ref.name)?;
            binding::selects(service, labels).then_some(Served {
                binding: b,
                service,
            })
        })
        .collect();
    served.sort_by(|a, b| a.binding.metadata.name.cmp(&b.binding.metadata.name));
    served.dedup_by(|a, b| a.binding.metadata.name == b.binding.metadata.name);
    served
}

/// Whether a binding's target health speaks for one pod, so that a gate on it is meaningful.
/// `Err` carries a warning for the user; `Ok(false)` is silent (instance targets behind an
/// `externalTrafficPolicy: Cluster` Service, by design).
pub fn gate_applies(served: &Served<'_>) -> Result<bool, String> {
    let name = served.binding.metadata.name.as_deref().unwrap_or_default();
    match served.binding.target_type() {
        Some(TargetType::Ip) => Ok(true),
        Some(TargetType::Instance) => Ok(binding::is_traffic_policy_local(served.service)),
        None => Err(format!(
            "gracegate: TargetGroupBinding {name} has no known targetType yet, so no readiness gate for it"
        )),
    }
}

/// Plan what to add to `pod`, created in the namespace `objects` describes.
pub fn plan(pod: &PodView, objects: &NamespaceObjects, settings: &Settings) -> Plan {
    let mut warnings = Vec::new();
    let Some(namespace) = objects.namespace.as_deref() else {
        return Plan::skipped(
            Skip::NamespaceUnknown,
            vec!["gracegate: namespace not in cache yet; pod admitted unchanged".to_string()],
        );
    };
    let (label, value) = &settings.namespace_label;
    if namespace
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(label))
        != Some(value)
    {
        return Plan::skipped(Skip::NamespaceNotOptedIn, warnings);
    }
    if opted_out(
        namespace.metadata.annotations.as_ref(),
        "namespace",
        &mut warnings,
    ) {
        return Plan::skipped(Skip::NamespaceOptedOut, warnings);
    }
    if opted_out(pod.metadata.annotations.as_ref(), "pod", &mut warnings) {
        return Plan::skipped(Skip::PodOptedOut, warnings);
    }
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let served = serving_bindings(labels, objects);
    if served.is_empty() {
        return Plan::skipped(Skip::NoBinding, warnings);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Plan::skipped(Skip::NoBinding, warnings);
    };

    // 1. Readiness gates.
    let existing: BTreeSet<&str> = spec
        .readiness_gates
        .iter()
        .flatten()
        .map(|g| g.condition_type.as_str())
        .collect();
    let mut gates = Vec::new();
    let mut carried = Vec::new();
    for s in &served {
        let name = s.binding.metadata.name.as_deref().unwrap_or_default();
        match gate_applies(s) {
            Ok(true) if name.len() > MAX_CONDITION_NAME_LENGTH => warnings.push(format!(
                "gracegate: TargetGroupBinding name {name} is longer than {MAX_CONDITION_NAME_LENGTH} \
                 characters, too long for a readiness gate; no gate for it"
            )),
            Ok(true) => {
                let gate = settings.gate(name);
                if existing.contains(gate.as_str()) {
                    carried.push(gate);
                } else {
                    gates.push(gate);
                }
            }
            Ok(false) => {}
            Err(warning) => warnings.push(warning),
        }
    }

    // 2. Timing, from the slowest target group serving the pod.
    let mut timing = timing::timing(
        &settings.timing,
        &evidence(&served, objects),
        pod.metadata.annotations.as_ref(),
        namespace.metadata.annotations.as_ref(),
    );
    let (prestop_seconds, shutdown_budget_seconds) =
        (timing.prestop_seconds, timing.shutdown_budget_seconds);
    warnings.append(&mut timing.warnings);

    // 3. preStop hooks on the chosen regular containers. Init containers (native sidecars
    // included) are left alone: they stop after the app containers anyway.
    let chosen = chosen_containers(pod, &spec.containers, &mut warnings);
    let mut prestops = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        if !chosen
            .as_ref()
            .is_none_or(|c| c.contains(container.name.as_str()))
        {
            continue;
        }
        let lifecycle = container.lifecycle.as_ref();
        match lifecycle.and_then(|l| l.pre_stop.as_ref()) {
            Some(own) => {
                if let Some(own_seconds) = sleep_seconds(own)
                    && own_seconds < u64::from(prestop_seconds)
                {
                    warnings.push(format!(
                        "gracegate: container {}: its own preStop sleeps {own_seconds}s, shorter than \
                         the {prestop_seconds}s the load balancer needs; left unchanged",
                        container.name
                    ));
                }
            }
            None if prestop_seconds > 0 => prestops.push(PrestopAdd {
                index,
                has_lifecycle: lifecycle.is_some(),
            }),
            None => {}
        }
    }

    // 4. Grace period: never lowered. When `gracegate.io/containers` names no container of
    // the pod, no preStop was added, so nothing needs the time: the period is left alone.
    let own = spec.termination_grace_period_seconds;
    let needed = timing.grace_period(own);
    let names_none = chosen.as_ref().is_some_and(|c| {
        !spec
            .containers
            .iter()
            .any(|container| c.contains(container.name.as_str()))
    });
    if names_none {
        warnings.push(format!(
            "gracegate: annotation {ANNOTATION_CONTAINERS} names none of the pod's containers, \
             so no preStop was added and terminationGracePeriodSeconds is left unchanged"
        ));
    }
    let grace = (own != Some(needed) && !names_none).then_some((own, needed));

    // 5. A gate of ours that the pod already carries while the rest of what gracegate adds is
    // still missing was put there by another webhook, not by an earlier pass of this one
    // (which adds gates, preStop and grace period together): the AWS Load Balancer
    // Controller's pod mutator injects the same condition type with its
    // --enable-pod-readiness-gate-inject on (the default), and then two controllers write the
    // condition. See README, "Running beside the AWS Load Balancer Controller".
    if !carried.is_empty() && (!prestops.is_empty() || grace.is_some()) {
        warnings.push(format!(
            "gracegate: the pod already carries the readiness gate {}, added by another webhook \
             (the AWS Load Balancer Controller's, unless its --enable-pod-readiness-gate-inject=false); \
             both would write its condition: turn that injection off or give gracegate its own \
             --condition-prefix",
            carried.join(", ")
        ));
    }
    if let Some((Some(own), new)) = grace {
        warnings.push(format!(
            "gracegate: terminationGracePeriodSeconds raised from {own} to {new} \
             (preStop {prestop_seconds}s + shutdown budget {shutdown_budget_seconds}s)"
        ));
    }

    // 5. Where S came from, on the pod, whenever S shaped it.
    let annotations = pod.metadata.annotations.as_ref();
    let source = timing.prestop_source.as_str();
    let source_annotation = (!prestops.is_empty() || grace.is_some())
        .then(
            || match annotations.and_then(|a| a.get(ANNOTATION_PRESTOP_SOURCE)) {
                Some(v) if v == source => None,
                Some(_) => Some(AnnotationAdd::Replace),
                None if annotations.is_some() => Some(AnnotationAdd::Key),
                None => Some(AnnotationAdd::Map),
            },
        )
        .flatten()
        .map(|how| (how, source));

    Plan {
        skip: None,
        has_gates: !existing.is_empty() || spec.readiness_gates.is_some(),
        gates,
        prestop_action: (!prestops.is_empty()).then_some(settings.prestop_action),
        prestops,
        prestop_seconds,
        prestop_source: Some(timing.prestop_source),
        source_annotation,
        grace,
        warnings,
    }
}

/// What the load balancer side says about the target groups of `served`: the largest `D`
/// (a binding's annotation, else its target group's attribute), the largest measured p99,
/// and the network load balancers still without enough drains measured.
pub fn evidence(served: &[Served<'_>], objects: &NamespaceObjects) -> Evidence {
    let mut out = Evidence::default();
    for s in served {
        let group = TargetGroup::of(s.binding);
        let record = group.as_ref().and_then(|g| objects.target_groups.get(g));
        let name = || {
            group
                .as_ref()
                .map(|g| match g {
                    TargetGroup::Arn(arn) => name_from_arn(arn).unwrap_or(arn).to_string(),
                    TargetGroup::Name(name) => name.clone(),
                })
                .unwrap_or_default()
        };
        let delay = binding::deregistration_delay(
            s.binding,
            s.service,
            objects.ingresses.iter().map(|i| i.as_ref()),
        )
        .or_else(|| {
            let d = record?.deregistration_delay()?;
            Some((d, DelaySource::TargetGroup(name())))
        });
        if let Some((d, source)) = delay
            && out.delay.as_ref().is_none_or(|(max, _)| d > *max)
        {
            out.delay = Some((d, source));
        }
        let Some(record) = record else { continue };
        match record.measured_p99() {
            Some(p99) if out.measured.as_ref().is_none_or(|m| p99 > m.p99_seconds) => {
                out.measured = Some(MeasuredDrain {
                    p99_seconds: p99,
                    count: record.drain.as_ref().map_or(0, |d| d.count),
                    target_group: name(),
                });
            }
            Some(_) => {}
            None if record.load_balancer() == Some(LoadBalancerKind::Network) => {
                out.unmeasured_nlbs.push(name())
            }
            None => {}
        }
    }
    out.unmeasured_nlbs.sort();
    out.unmeasured_nlbs.dedup();
    out
}

/// `gracegate.io/inject: "false"`. Anything but `"true"`/`"false"` is a warning and means inject.
fn opted_out(
    annotations: Option<&BTreeMap<String, String>>,
    scope: &str,
    warnings: &mut Vec<String>,
) -> bool {
    match annotations
        .and_then(|a| a.get(ANNOTATION_INJECT))
        .map(|v| v.trim())
    {
        None | Some("true") => false,
        Some("false") => true,
        Some(other) => {
            warnings.push(format!(
                "gracegate: {scope} annotation {ANNOTATION_INJECT}={other:?} is neither \"true\" nor \"false\"; injecting"
            ));
            false
        }
    }
}

/// The names in `gracegate.io/containers`, or `None` for "all regular containers".
fn chosen_containers<'a>(
    pod: &'a PodView,
    containers: &[ContainerView],
    warnings: &mut Vec<String>,
) -> Option<BTreeSet<&'a str>> {
    let raw = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_CONTAINERS)?;
    let names: BTreeSet<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !containers.iter().any(|c| c.name == *n))
        .collect();
    if !unknown.is_empty() {
        warnings.push(format!(
            "gracegate: annotation {ANNOTATION_CONTAINERS} names no container called {}",
            unknown.join(", ")
        ));
    }
    Some(names)
}

/// How long an existing preStop sleeps, when it is a plain sleep we can read: the native
/// action, `sleep N`, or `sh -c "sleep N"`.
pub fn sleep_seconds(handler: &LifecycleHandler) -> Option<u64> {
    if let Some(sleep) = &handler.sleep {
        return u64::try_from(sleep.seconds).ok();
    }
    let command = handler.exec.as_ref()?.command.as_ref()?;
    let script = match command.as_slice() {
        [sleep, n] if sleep.ends_with("sleep") => return n.parse().ok(),
        [shell, flag, script] if shell.ends_with("sh") && flag == "-c" => script,
        _ => return None,
    };
    script.trim().strip_prefix("sleep ")?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, SleepAction};
    use rstest::rstest;

    fn exec(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    #[rstest]
    #[case(exec(&["/bin/sh", "-c", "sleep 5"]), Some(5))]
    #[case(exec(&["sh", "-c", " sleep 30 "]), Some(30))]
    #[case(exec(&["/bin/sleep", "12"]), Some(12))]
    #[case(exec(&["/bin/sh", "-c", "nginx -s quit; sleep 5"]), None)]
    #[case(exec(&["/app/drain"]), None)]
    #[case(LifecycleHandler { sleep: Some(SleepAction { seconds: 15 }), ..Default::default() }, Some(15))]
    #[case(LifecycleHandler::default(), None)]
    fn reads_existing_sleeps(#[case] handler: LifecycleHandler, #[case] expected: Option<u64>) {
        assert_eq!(sleep_seconds(&handler), expected);
    }

    const SERVICE: &str = include_str!("../tests/fixtures/cluster/service.json");
    const BINDING: &str = include_str!("../tests/fixtures/cluster/targetgroupbinding.json");
    const INGRESS: &str = include_str!("../tests/fixtures/cluster/ingress.json");
    const NAMESPACE: &str = include_str!("../tests/fixtures/cluster/namespace.json");
    const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";

    /// The recorded 2048 namespace, changed by `edit`.
    fn objects(edit: impl FnOnce(&mut NamespaceObjects)) -> NamespaceObjects {
        let mut o = NamespaceObjects {
            namespace: Some(Arc::new(serde_json::from_str(NAMESPACE).unwrap())),
            services: vec![Arc::new(serde_json::from_str(SERVICE).unwrap())],
            bindings: vec![Arc::new(serde_json::from_str(BINDING).unwrap())],
            ingresses: vec![Arc::new(serde_json::from_str(INGRESS).unwrap())],
            target_groups: Default::default(),
        };
        edit(&mut o);
        o
    }

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodView {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p",
                "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                "annotations": annotations.iter().cloned().collect::<BTreeMap<_, _>>(),
            },
            "spec": {
                "terminationGracePeriodSeconds": 30,
                "initContainers": [
                    { "name": "envoy", "restartPolicy": "Always" },
                    { "name": "migrate" },
                ],
                "containers": [
                    { "name": "app" },
                    { "name": "shipper", "lifecycle": { "postStart": { "exec": { "command": ["true"] } } } },
                ],
            },
        }))
        .unwrap()
    }

    const APP: &[(&str, &str)] = &[("app.kubernetes.io/name", "app-2048")];

    fn service(o: &mut NamespaceObjects) -> &mut Service {
        Arc::make_mut(&mut o.services[0])
    }
    fn binding(o: &mut NamespaceObjects) -> &mut TargetGroupBinding {
        Arc::make_mut(&mut o.bindings[0])
    }

    #[rstest]
    #[case::selector_matches(APP, objects(|_| {}), Some(GATE))]
    #[case::other_labels(&[("app", "batch-job")], objects(|_| {}), None)]
    #[case::selector_needs_every_label(APP, objects(|o| {
        service(o).spec.as_mut().unwrap().selector.as_mut().unwrap().insert("tier".into(), "web".into());
    }), None)]
    #[case::empty_selector_matches_nothing(APP, objects(|o| {
        service(o).spec.as_mut().unwrap().selector = Some(BTreeMap::new());
    }), None)]
    #[case::no_selector_matches_nothing(APP, objects(|o| {
        service(o).spec.as_mut().unwrap().selector = None;
    }), None)]
    #[case::missing_service(APP, objects(|o| o.services.clear()), None)]
    #[case::binding_to_another_service(APP, objects(|o| binding(o).spec.service_ref.name = "other".into()), None)]
    fn binding_matching(
        #[case] labels: &[(&str, &str)],
        #[case] objects: NamespaceObjects,
        #[case] gate: Option<&str>,
    ) {
        let plan = plan(&pod(labels, &[]), &objects, &Settings::default());
        assert_eq!(
            plan.gates,
            gate.into_iter().map(String::from).collect::<Vec<_>>()
        );
        // A pod no binding serves is not behind the load balancer: nothing else is added either.
        assert_eq!(plan.is_empty(), gate.is_none());
        assert_eq!(plan.skip, gate.is_none().then_some(Skip::NoBinding));
    }

    #[rstest]
    #[case::ip("ip", "Cluster", true, 0)]
    #[case::instance_local("instance", "Local", true, 0)]
    // A node target's health says nothing about one pod behind a Cluster-policy Service.
    #[case::instance_cluster("instance", "Cluster", false, 0)]
    #[case::unknown_target_type("", "Cluster", false, 1)]
    fn target_types(
        #[case] target_type: &str,
        #[case] policy: &str,
        #[case] gated: bool,
        #[case] warnings: usize,
    ) {
        let objects = objects(|o| {
            binding(o).spec.target_type = (!target_type.is_empty()).then(|| target_type.into());
            service(o).spec.as_mut().unwrap().external_traffic_policy = Some(policy.into());
        });
        let plan = plan(&pod(APP, &[]), &objects, &Settings::default());
        assert_eq!(plan.gates.len(), usize::from(gated));
        // Served either way, so the end-of-life half still applies.
        assert_eq!(plan.prestops.len(), 2);
        // One warning is the grace period being raised.
        assert_eq!(plan.warnings.len(), warnings + 1, "{:?}", plan.warnings);
    }

    #[test]
    fn other_namespace_objects_are_not_consulted() {
        // The shell hands `plan` only the pod's namespace; an unknown namespace injects nothing.
        let plan = plan(
            &pod(APP, &[]),
            &objects(|o| o.namespace = None),
            &Settings::default(),
        );
        assert_eq!(plan.skip, Some(Skip::NamespaceUnknown));
        assert!(plan.is_empty());
        assert_eq!(plan.warnings.len(), 1);
    }

    #[rstest]
    #[case::not_labelled(objects(|o| {
        Arc::make_mut(o.namespace.as_mut().unwrap()).metadata.labels = None;
    }), &[], Skip::NamespaceNotOptedIn)]
    #[case::namespace_opt_out(objects(|o| {
        Arc::make_mut(o.namespace.as_mut().unwrap()).metadata.annotations =
            Some([(ANNOTATION_INJECT.to_string(), "false".to_string())].into());
    }), &[], Skip::NamespaceOptedOut)]
    #[case::pod_opt_out(objects(|_| {}), &[(ANNOTATION_INJECT, "false")], Skip::PodOptedOut)]
    fn opting_out(
        #[case] objects: NamespaceObjects,
        #[case] annotations: &[(&str, &str)],
        #[case] skip: Skip,
    ) {
        let plan = plan(&pod(APP, annotations), &objects, &Settings::default());
        assert_eq!(plan.skip, Some(skip));
        assert!(plan.is_empty());
    }

    #[test]
    fn malformed_inject_annotation_injects_with_a_warning() {
        let plan = plan(
            &pod(APP, &[(ANNOTATION_INJECT, "nope")]),
            &objects(|_| {}),
            &Settings::default(),
        );
        assert_eq!(plan.gates, vec![GATE]);
        assert!(plan.warnings[0].contains("neither"), "{:?}", plan.warnings);
    }

    #[rstest]
    // Init containers and native sidecars never get one; `shipper` has a postStart to add into.
    #[case::all_regular(&[], &[(0, false), (1, true)], 0)]
    #[case::chosen(&[(ANNOTATION_CONTAINERS, "shipper")], &[(1, true)], 0)]
    #[case::chosen_with_spaces(&[(ANNOTATION_CONTAINERS, " app , shipper ")], &[(0, false), (1, true)], 0)]
    #[case::init_container_named(&[(ANNOTATION_CONTAINERS, "app,envoy")], &[(0, false)], 1)]
    // Names no container: nothing added, so the grace period is not raised either (2nd warning).
    #[case::unknown_name(&[(ANNOTATION_CONTAINERS, "nope")], &[], 2)]
    #[case::zero_seconds(&[("gracegate.io/prestop-seconds", "0")], &[], 0)]
    fn container_choice(
        #[case] annotations: &[(&str, &str)],
        #[case] expected: &[(usize, bool)],
        #[case] warnings: usize,
    ) {
        let plan = plan(
            &pod(APP, annotations),
            &objects(|_| {}),
            &Settings::default(),
        );
        let got: Vec<(usize, bool)> = plan
            .prestops
            .iter()
            .map(|p| (p.index, p.has_lifecycle))
            .collect();
        assert_eq!(got, expected);
        let non_grace: Vec<_> = plan
            .warnings
            .iter()
            .filter(|w| !w.contains("raised"))
            .collect();
        assert_eq!(non_grace.len(), warnings, "{:?}", plan.warnings);
        assert_eq!(plan.prestop_action.is_some(), !expected.is_empty());
    }

    #[test]
    fn containers_annotation_naming_no_container_changes_no_grace_period() {
        let plan = plan(
            &pod(APP, &[(ANNOTATION_CONTAINERS, "nope, envoy")]),
            &objects(|_| {}),
            &Settings::default(),
        );
        assert!(plan.prestops.is_empty());
        assert_eq!(plan.grace, None, "{:?}", plan.warnings);
        // The gate still applies: the pod is behind the load balancer.
        assert_eq!(plan.gates, vec![GATE]);
        assert!(
            plan.warnings.iter().any(|w| w.contains("left unchanged")),
            "{:?}",
            plan.warnings
        );
        // A name that exists still raises it, even if that container has its own preStop.
        let plan = super::plan(
            &pod(APP, &[(ANNOTATION_CONTAINERS, "app")]),
            &objects(|_| {}),
            &Settings::default(),
        );
        assert_eq!(plan.grace, Some((Some(30), 70)));
    }

    #[rstest]
    #[case::raised(Some(30), Some((Some(30), 70)))]
    #[case::equal(Some(70), None)]
    #[case::never_lowered(Some(3600), None)]
    #[case::absent(None, Some((None, 70)))]
    fn grace_period(#[case] own: Option<i64>, #[case] expected: Option<(Option<i64>, i64)>) {
        let mut p = pod(APP, &[]);
        p.spec.as_mut().unwrap().termination_grace_period_seconds = own;
        let plan = plan(&p, &objects(|_| {}), &Settings::default());
        assert_eq!(plan.grace, expected);
        // Only a value the pod asked for is worth a warning when raised.
        let warned = plan.warnings.iter().any(|w| w.contains("raised"));
        assert_eq!(warned, matches!(expected, Some((Some(_), _))));
    }

    #[test]
    fn deregistration_delay_from_the_ingress_sizes_the_sleep() {
        let plan = plan(&pod(APP, &[]), &objects(|_| {}), &Settings::default());
        assert_eq!(
            (plan.prestop_seconds, plan.grace),
            (40, Some((Some(30), 70)))
        );
        // Without the Ingress nothing says D: the default S applies (also 40), so change it.
        let settings = Settings {
            timing: TimingSettings {
                prestop_seconds: 15,
                ..TimingSettings::default()
            },
            ..Settings::default()
        };
        let plan_without =
            super::plan(&pod(APP, &[]), &objects(|o| o.ingresses.clear()), &settings);
        assert_eq!(plan_without.prestop_seconds, 15);
        let plan_with = super::plan(&pod(APP, &[]), &objects(|_| {}), &settings);
        assert_eq!(plan_with.prestop_seconds, 40);
    }

    #[test]
    fn service_annotation_beats_the_ingress() {
        let objects = objects(|o| {
            service(o).metadata.annotations = Some(
                [(
                    binding::NLB_TARGET_GROUP_ATTRIBUTES.to_string(),
                    "deregistration_delay.timeout_seconds=60".to_string(),
                )]
                .into(),
            );
        });
        let plan = plan(&pod(APP, &[]), &objects, &Settings::default());
        assert_eq!(plan.prestop_seconds, 70);
    }

    #[test]
    fn ingress_for_another_port_does_not_count() {
        let objects = objects(|o| {
            let ing = Arc::make_mut(&mut o.ingresses[0]);
            let path = &mut ing.spec.as_mut().unwrap().rules.as_mut().unwrap()[0]
                .http
                .as_mut()
                .unwrap()
                .paths[0];
            path.backend
                .service
                .as_mut()
                .unwrap()
                .port
                .as_mut()
                .unwrap()
                .number = Some(8080);
        });
        let settings = Settings {
            timing: TimingSettings {
                prestop_seconds: 15,
                ..TimingSettings::default()
            },
            ..Settings::default()
        };
        assert_eq!(
            plan(&pod(APP, &[]), &objects, &settings).prestop_seconds,
            15
        );
    }

    #[test]
    fn long_binding_names_get_no_gate() {
        let long = "b".repeat(64);
        let objects = objects(|o| binding(o).metadata.name = Some(long.clone()));
        let plan = plan(&pod(APP, &[]), &objects, &Settings::default());
        assert!(plan.gates.is_empty());
        assert!(
            plan.warnings.iter().any(|w| w.contains("longer than 63")),
            "{:?}",
            plan.warnings
        );
        let ok = "b".repeat(63);
        let objects = super::tests::objects(|o| binding(o).metadata.name = Some(ok.clone()));
        assert_eq!(plan_for(&objects).gates.len(), 1);
    }

    fn plan_for(objects: &NamespaceObjects) -> Plan {
        plan(&pod(APP, &[]), objects, &Settings::default())
    }

    #[test]
    fn existing_gate_is_kept_and_not_repeated() {
        let mut p = pod(APP, &[]);
        p.spec.as_mut().unwrap().readiness_gates =
            Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
                condition_type: GATE.into(),
            }]);
        let plan = plan(&p, &objects(|_| {}), &Settings::default());
        assert!(plan.gates.is_empty());
        assert!(plan.has_gates);
    }

    fn other_webhook_warning(plan: &Plan) -> bool {
        plan.warnings.iter().any(|w| w.contains("another webhook"))
    }

    fn with_gate(mut p: PodView, gate: &str) -> PodView {
        p.spec.as_mut().unwrap().readiness_gates =
            Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
                condition_type: gate.into(),
            }]);
        p
    }

    #[test]
    fn same_gate_from_another_webhook_is_a_warning() {
        // The LBC's mutator ran first: gate there, nothing else of gracegate's.
        let plan = plan(
            &with_gate(pod(APP, &[]), GATE),
            &objects(|_| {}),
            &Settings::default(),
        );
        assert!(plan.gates.is_empty());
        assert!(other_webhook_warning(&plan), "{:?}", plan.warnings);
        assert!(plan.warnings.iter().any(|w| w.contains(GATE)));

        // gracegate's own output, re-invoked (reinvocationPolicy: IfNeeded): no warning.
        let ours: PodView = serde_json::from_value(json!({
            "metadata": { "name": "p", "labels": { "app.kubernetes.io/name": "app-2048" } },
            "spec": {
                "terminationGracePeriodSeconds": 70,
                "readinessGates": [{ "conditionType": GATE }],
                "containers": [
                    { "name": "app", "lifecycle": { "preStop": { "sleep": { "seconds": 40 } } } },
                    { "name": "shipper", "lifecycle": { "preStop": { "sleep": { "seconds": 40 } } } },
                ],
            },
        }))
        .unwrap();
        let again = super::plan(&ours, &objects(|_| {}), &Settings::default());
        assert!(again.is_empty(), "{again:?}");
        assert!(!other_webhook_warning(&again), "{:?}", again.warnings);

        // Another prefix's gate (gracegate beside the LBC with --condition-prefix): no warning.
        let settings = Settings {
            condition_prefix: "target-health.gracegate.io".into(),
            ..Settings::default()
        };
        let plan = super::plan(&with_gate(pod(APP, &[]), GATE), &objects(|_| {}), &settings);
        assert_eq!(
            plan.gates,
            vec!["target-health.gracegate.io/k8s-game2048-service2-6f5e3c2a1b"]
        );
        assert!(!other_webhook_warning(&plan), "{:?}", plan.warnings);
    }

    #[test]
    fn patch_shapes() {
        let plan = Plan {
            gates: vec!["p/a".into()],
            has_gates: false,
            prestops: vec![
                PrestopAdd {
                    index: 0,
                    has_lifecycle: false,
                },
                PrestopAdd {
                    index: 2,
                    has_lifecycle: true,
                },
            ],
            prestop_seconds: 40,
            prestop_action: Some(PrestopAction::Exec),
            grace: Some((None, 70)),
            ..Plan::default()
        };
        let patch = serde_json::to_value(plan.patch()).unwrap();
        assert_eq!(
            patch,
            json!([
                { "op": "add", "path": "/spec/readinessGates", "value": [{ "conditionType": "p/a" }] },
                { "op": "add", "path": "/spec/containers/0/lifecycle",
                  "value": { "preStop": { "exec": { "command": ["/bin/sh", "-c", "sleep 40"] } } } },
                { "op": "add", "path": "/spec/containers/2/lifecycle/preStop",
                  "value": { "exec": { "command": ["/bin/sh", "-c", "sleep 40"] } } },
                { "op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": 70 },
            ])
        );
    }
}
