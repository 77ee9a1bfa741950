//! What the webhook adds to a pod: pod + the objects of its namespace + settings → [`Plan`]
//! → JSONPatch. Pure: no I/O, no clock, and malformed input becomes a warning.
//!
//! The plan only ever *adds*: gates that are missing, a preStop where a container has none, a
//! grace period raised to what the preStop needs. Planning again on the patched pod yields an
//! empty plan, which is what makes `reinvocationPolicy: IfNeeded` safe.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{LifecycleHandler, Service};

use crate::binding::{self, DelaySource, TargetGroupBinding, TargetType};
use crate::elb::{TargetGroup, name_from_arn};
use crate::objects::NamespaceObjects;
use crate::timing::{
    self, ANNOTATION_CONTAINERS, ANNOTATION_INJECT, ANNOTATION_PRESTOP_SOURCE, Evidence,
    MeasuredDrain, TimingSettings,
};

mod patch;
mod pod;
pub mod waiter;

pub use patch::{AnnotationAdd, Plan, PrestopAdd};
pub use pod::{
    ContainerView, EnvList, Item, LifecycleView, Listed, MountView, Named, PodMeta, PodSpecView,
    PodView, VolumeView,
};
pub use waiter::{DrainMode, DrainSettings};

/// The default condition type prefix, shared with the AWS Load Balancer Controller.
pub const DEFAULT_CONDITION_PREFIX: &str = "target-health.elbv2.k8s.aws";
/// The default namespace opt-in label, shared with the AWS Load Balancer Controller.
pub const DEFAULT_NAMESPACE_LABEL: (&str, &str) =
    ("elbv2.k8s.aws/pod-readiness-gate-inject", "enabled");
/// The API server rejects a condition type whose name part is longer than this.
pub const MAX_CONDITION_NAME_LENGTH: usize = 63;

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
    pub drain: DrainSettings,
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
            drain: DrainSettings::default(),
        }
    }
}

impl Settings {
    /// The readiness gate condition type for a binding.
    pub fn gate(&self, binding_name: &str) -> String {
        // Per binding per review: joined, not `format!`ed (the formatting machinery costs more).
        [self.condition_prefix.as_str(), "/", binding_name].concat()
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

    // 2. Timing, from the slowest target group serving the pod; in drain-wait mode the
    // waiter's deadline, unless something of the pod's own rules the waiter out.
    let pod_annotations = pod.metadata.annotations.as_ref();
    let ns_annotations = namespace.metadata.annotations.as_ref();
    let evidence = evidence(&served, objects);
    let sleep = || timing::timing(&settings.timing, &evidence, pod_annotations, ns_annotations);
    let chosen = chosen_containers(pod, &spec.containers, &mut warnings);
    let is_chosen = |name: &str| chosen.as_ref().is_none_or(|c| c.contains(name));
    let mut waiter_add = None;
    let mut timing = match waiter::mode(
        pod_annotations,
        ns_annotations,
        settings.drain.mode,
        &mut warnings,
    ) {
        DrainMode::Sleep => sleep(),
        DrainMode::Wait => {
            let wait = waiter::timing(
                &settings.timing,
                &settings.drain,
                &evidence,
                pod_annotations,
                ns_annotations,
            );
            // The containers that get the waiter now, and those that already run it (a
            // second review).
            let waiting: Vec<usize> = spec
                .containers
                .iter()
                .enumerate()
                .filter(|(_, c)| match own_prestop(c) {
                    Some(own) => waiter::is_waiter(own),
                    None => wait.prestop_seconds > 0 && is_chosen(&c.name),
                })
                .map(|(i, _)| i)
                .collect();
            // No container waits (none chosen, each with a preStop of its own, `S` = 0) or
            // the waiter cannot run: the sleep rule, as for any other pod.
            match waiter::plan(spec, &waiting, wait.prestop_seconds, &settings.drain) {
                Ok(Some(add)) => {
                    waiter_add = Some(add);
                    wait
                }
                Ok(None) => sleep(),
                Err(warning) => {
                    warnings.push(warning);
                    sleep()
                }
            }
        }
    };
    let (prestop_seconds, shutdown_budget_seconds) =
        (timing.prestop_seconds, timing.shutdown_budget_seconds);
    warnings.append(&mut timing.warnings);

    // 3. preStop hooks on the chosen regular containers. Init containers (native sidecars
    // included) are left alone: they stop after the app containers anyway.
    let mut prestops = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        if !is_chosen(&container.name) {
            continue;
        }
        let lifecycle = container.lifecycle.as_ref();
        match lifecycle.and_then(|l| l.pre_stop.as_ref()) {
            Some(own) if waiter::is_waiter(own) => {}
            Some(_) if waiter_add.is_some() => warnings.push(format!(
                "gracegate: container {}: its own preStop cannot wait for the load balancer; \
                 left unchanged, so it may stop while its target is still routed",
                container.name
            )),
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
            .any(|container| c.contains(&*container.name))
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
    let annotations = pod_annotations;
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
        waiter: waiter_add,
        warnings,
    }
}

/// What the load balancer side says about the target groups of `served`: the largest `D`
/// (a binding's annotation, else its target group's attribute), the largest measured p99,
/// and the network load balancers still without enough drains measured.
pub fn evidence(served: &[Served<'_>], objects: &NamespaceObjects) -> Evidence {
    let mut out = Evidence::default();
    for s in served {
        let group = s.binding.target_group();
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
        // The watcher's facts win; before them, what the cluster objects say.
        let kind = record
            .and_then(|r| r.load_balancer())
            .or_else(|| binding::origin_kind(s.binding, s.service));
        let drains = record.and_then(|r| r.drain.as_ref()).map_or(0, |d| d.count);
        if let Some(p99) = record.and_then(|r| r.measured_p99())
            && out.measured.as_ref().is_none_or(|m| p99 > m.p99_seconds)
        {
            out.measured = Some(MeasuredDrain {
                p99_seconds: p99,
                count: drains,
                target_group: name(),
            });
        }
        // A few drains of an NLB may raise `S` above the NLB default, not lower it.
        if timing::nlb_unmeasured(kind, drains) {
            out.unmeasured_nlbs.push(name());
        }
    }
    out.unmeasured_nlbs.sort();
    out.unmeasured_nlbs.dedup();
    out
}

fn own_prestop<'c>(c: &'c ContainerView<'_>) -> Option<&'c LifecycleHandler> {
    c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
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
mod tests;
