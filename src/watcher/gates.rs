//! The gate writer: pending gates → conditions, written as `pods/status` patches only when
//! they change, with the `TargetHealthy` and `GateTimeout` events.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use tracing::{debug, warn};

use super::Context;
use crate::aws::{AwsError, TargetId};
use crate::health::{self, Observation, TargetHealth, TargetState};
use crate::targets::{PendingGate, Work};

/// How many pods are patched at once.
const CONCURRENCY: usize = 16;

#[derive(Default)]
pub struct GateWriter {
    /// The condition last written per (pod uid, gate): the store lags behind our own patches,
    /// and without this a tick would write the same condition again.
    written: HashMap<(String, String), PodCondition>,
}

impl GateWriter {
    /// Write the conditions that change; returns how many were written.
    pub async fn write(
        &mut self,
        ctx: &Context,
        observed: Vec<(PendingGate, Observation)>,
        now: &Time,
    ) -> usize {
        let mut updates = Vec::new();
        for (gate, observation) in observed {
            let key = (gate.uid.clone(), gate.gate.clone());
            let current = self.written.get(&key).or(gate.current.as_ref());
            if let Some(condition) =
                health::update(&gate.gate, current, &observation.desired(), now)
            {
                updates.push((gate, observation, condition));
            }
        }
        let patched: Vec<_> = stream::iter(updates)
            .map(|(gate, observation, condition)| async move {
                let result = patch(ctx, &gate, &condition).await;
                (gate, observation, condition, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut written = 0;
        for (gate, observation, condition, result) in patched {
            match result {
                Ok(()) => {
                    written += 1;
                    announce(ctx, &gate, &observation, &condition, now).await;
                    self.written
                        .insert((gate.uid.clone(), gate.gate.clone()), condition);
                }
                Err(error) => {
                    warn!(pod = %gate.pod, namespace = %gate.namespace, gate = %gate.gate, %error, "status patch failed; retrying next tick")
                }
            }
        }
        written
    }

    /// Drop what is remembered about pods no longer in the cache.
    pub fn forget(&mut self, live: &HashSet<String>) {
        self.written.retain(|(uid, _), _| live.contains(uid));
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

async fn patch(
    ctx: &Context,
    gate: &PendingGate,
    condition: &PodCondition,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &gate.namespace);
    let body = health::status_patch(&gate.uid, condition);
    match api
        .patch_status(&gate.pod, &PatchParams::default(), &Patch::Strategic(&body))
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or replaced by a pod of the same name (the UID precondition): nothing to do.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            debug!(pod = %gate.pod, code = status.code, "pod gone; condition not written");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Events and metrics for a condition that was written.
async fn announce(
    ctx: &Context,
    gate: &PendingGate,
    observation: &Observation,
    condition: &PodCondition,
    now: &Time,
) {
    if condition.status != "True" {
        return;
    }
    let seconds = gate
        .created
        .as_ref()
        .map(|c| now.0.duration_since(c.0).as_secs_f64().max(0.0));
    let (type_, reason, note) = match observation {
        Observation::Health(h) if h.state == TargetState::Healthy => {
            if let Some(s) = seconds {
                ctx.metrics.gate_ready.observe(s);
            }
            let after = seconds
                .map(|s| format!(" {s:.0}s after pod creation"))
                .unwrap_or_default();
            (
                EventType::Normal,
                "TargetHealthy",
                format!("{}: target healthy{after}", gate.gate),
            )
        }
        Observation::TimedOut { .. } => (
            EventType::Warning,
            "GateTimeout",
            format!(
                "{}: {}",
                gate.gate,
                condition.message.clone().unwrap_or_default()
            ),
        ),
        _ => return,
    };
    ctx.event(&gate.namespace, &gate.pod, &gate.uid, type_, reason, note)
        .await;
}

/// What a pending gate's target says in its target group's answer; `None` leaves the gate
/// as it is (the call failed and is retried next tick).
pub fn observe(
    gate: &PendingGate,
    answer: &Result<HashMap<TargetId, TargetHealth>, AwsError>,
) -> Option<Observation> {
    let Work::Describe { target, .. } = &gate.work else {
        return None;
    };
    match answer {
        Ok(found) => Some(
            found
                .get(target)
                .cloned()
                .map_or(Observation::NotRegistered, Observation::Health),
        ),
        Err(AwsError::TargetGroupNotFound(message)) => Some(Observation::NoData(format!(
            "target group not found: {message}"
        ))),
        Err(_) => None,
    }
}
