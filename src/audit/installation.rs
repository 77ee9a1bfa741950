//! Checks on gracegate beside the cluster's other parts: the AWS Load Balancer Controller's
//! own pod webhook (`lbc-webhook`) and gates that no watcher satisfies (`gates-stuck`).

use std::time::Duration;

use super::{
    Check, Ctx, LBC_CONDITION_PREFIX, LBC_INJECT_FLAG, LBC_POD_WEBHOOK, Severity, selector_matches,
};
use crate::targets::LEGACY_PREFIX;

impl Ctx<'_> {
    /// The AWS Load Balancer Controller's own pod webhook, selecting this namespace.
    pub(super) fn lbc_webhook(&mut self, injected: bool) {
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

    /// Pods not Ready only because one of gracegate's gates is not True, for longer than half
    /// the gate timeout.
    pub(super) fn stuck_gates(&mut self) {
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
