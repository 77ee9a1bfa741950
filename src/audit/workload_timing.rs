//! Checks on the workload's own preStop and grace period, and on its running pods:
//! `no-prestop`, `prestop-too-short`, `grace-too-short`, `pods-without-gate`, `pods-stale-timing`.

use k8s_openapi::api::core::v1::Pod;
use std::collections::{BTreeMap, BTreeSet};

use super::{Check, Ctx, Severity, controller_uid, list};
use crate::inject::{self, MAX_CONDITION_NAME_LENGTH, PodView};
use crate::timing::ANNOTATION_CONTAINERS;

impl Ctx<'_> {
    /// The template's own preStop hooks and grace period against `S` and `T`.
    pub(super) fn template_timing(&mut self, plan: &inject::Plan, injected: bool) {
        let s = plan.prestop_seconds;
        let Some(spec) = self.workload.template.spec.clone() else {
            return;
        };
        let chosen = chosen_containers(&self.workload.template);
        // Drain wait asked for (annotation or --drain-mode): a container's own preStop is kept
        // and cannot wait, so its S is not the waiter's.
        let namespace = self.objects.namespace.as_deref();
        let wait = inject::waiter::mode(
            self.workload.template.metadata.annotations.as_ref(),
            namespace.and_then(|n| n.metadata.annotations.as_ref()),
            self.settings.inject.drain.mode,
            &mut Vec::new(),
        ) == inject::DrainMode::Wait;
        let mut own = Vec::new();
        let mut short = Vec::new();
        let mut missing = Vec::new();
        for c in &spec.containers {
            if chosen.as_ref().is_some_and(|n| !n.contains(&*c.name)) {
                continue;
            }
            match c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                Some(handler) if inject::waiter::is_waiter(handler) => {}
                Some(_) if wait => own.push(c.name.clone()),
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
        if !own.is_empty() {
            self.add(
                Severity::Warn,
                Check::DrainWaitOwnPrestop,
                format!(
                    "drain wait is on, but container {} has its own preStop, which gracegate keeps: \
                     it cannot wait for its target to leave the load balancer",
                    own.join(", ")
                ),
                format!(
                    "remove the preStop of container {} (gracegate adds the waiting one), or opt \
                     the workload out with gracegate.io/drain: sleep",
                    own.join(", ")
                ),
            );
        }
        if !short.is_empty() {
            let sleeps: Vec<String> = (short.iter())
                .map(|(name, n)| format!("container {name} sleeps {n}s"))
                .collect();
            let names: Vec<&str> = short.iter().map(|(name, _)| name.as_ref()).collect();
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
    pub(super) fn running_pods(&mut self, s: u32, t: i64) {
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

    pub(super) fn expected_gates(&self) -> Vec<String> {
        inject::serving_bindings(&self.workload.template_labels, self.objects)
            .iter()
            .filter(|s| matches!(inject::gate_applies(s), Ok(true)))
            .filter_map(|s| s.binding.metadata.name.as_deref())
            .filter(|n| n.len() <= MAX_CONDITION_NAME_LENGTH)
            .map(|n| self.settings.inject.gate(n))
            .collect()
    }

    /// The workload's live pods (not terminating).
    pub(super) fn pods(&self) -> Vec<&Pod> {
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
}

/// `gracegate.io/containers`, as the webhook reads it.
pub(super) fn chosen_containers(pod: &PodView) -> Option<BTreeSet<String>> {
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

pub(super) fn pod_view(pod: &Pod) -> Option<PodView<'static>> {
    serde_json::from_value(serde_json::to_value(pod).ok()?).ok()
}
