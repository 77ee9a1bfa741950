//! The gate writer: pending gates → conditions, written as `pods/status` patches only when
//! they change, with the `TargetHealthy` and `GateTimeout` events.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use tracing::{debug, info, warn};

use super::Context;
use crate::aws::AwsError;
use crate::elb::{TargetHealth, TargetId, TargetState};
use crate::health::{self, Observation};
use crate::targets::{PendingGate, Work};

/// How many pods are patched at once.
const CONCURRENCY: usize = 16;

/// The first retry of a failed status patch waits this long; each further failure doubles it.
const RETRY_FIRST: SignedDuration = SignedDuration::from_secs(1);
/// The longest wait between two attempts: a gate is never given up, only tried less often.
const RETRY_MAX: SignedDuration = SignedDuration::from_secs(30);

type Key = (String, String);

#[derive(Default)]
pub struct GateWriter {
    /// The condition last written per (pod uid, gate): the store lags behind our own patches,
    /// and without this a tick would write the same condition again.
    written: HashMap<Key, PodCondition>,
    /// Gates whose last patch failed: how often in a row, and when to try again.
    failed: HashMap<Key, (u32, Timestamp)>,
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
            // Backing off after failures: an API server that refuses (429, 5xx, a webhook
            // of its own failing) is not asked again every tick.
            if self.failed.get(&key).is_some_and(|(_, next)| now.0 < *next) {
                continue;
            }
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
                    let key = (gate.uid.clone(), gate.gate.clone());
                    if let Some((failures, _)) = self.failed.remove(&key) {
                        info!(pod = %gate.pod, namespace = %gate.namespace, gate = %gate.gate, failures, "status patch written after failures");
                    }
                    self.written.insert(key, condition);
                }
                Err(error) => {
                    let key = (gate.uid.clone(), gate.gate.clone());
                    let (failures, next) = self.failed.entry(key).or_insert((0, now.0));
                    *failures += 1;
                    let wait = retry_after(*failures);
                    *next = now.0 + wait;
                    // One line per gate's first failure; the rest at debug.
                    if *failures == 1 {
                        warn!(pod = %gate.pod, namespace = %gate.namespace, gate = %gate.gate, %error, "status patch failed; retrying with backoff")
                    } else {
                        debug!(pod = %gate.pod, gate = %gate.gate, failures = *failures, retry_in_seconds = wait.as_secs(), %error, "status patch failed again")
                    }
                }
            }
        }
        written
    }

    /// Drop what is remembered about pods no longer in the cache.
    pub fn forget(&mut self, live: &HashSet<String>) {
        self.written.retain(|(uid, _), _| live.contains(uid));
        self.failed.retain(|(uid, _), _| live.contains(uid));
    }

    /// Gates remembered (written or failing): bounded by the gated pods in the cache.
    pub fn remembered(&self) -> usize {
        self.written.len() + self.failed.len()
    }
}

/// A status patch the API server has not answered in this long is given up (and retried
/// with backoff): a hung request must not hold up the tick, and every other gate with it.
pub const PATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn patch(ctx: &Context, gate: &PendingGate, condition: &PodCondition) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &gate.namespace);
    let body = health::status_patch(&gate.uid, condition);
    let (params, body) = (PatchParams::default(), Patch::Strategic(&body));
    let sent = api.patch_status(&gate.pod, &params, &body);
    match tokio::time::timeout(PATCH_TIMEOUT, sent).await {
        Ok(Ok(_)) => Ok(()),
        // Gone, or replaced by a pod of the same name (the UID precondition): nothing to do.
        Ok(Err(kube::Error::Api(status))) if status.code == 404 || status.code == 409 => {
            debug!(pod = %gate.pod, code = status.code, "pod gone; condition not written");
            Ok(())
        }
        Ok(Err(error)) => Err(crate::report(&error)),
        Err(_) => Err(format!("no answer in {}s", PATCH_TIMEOUT.as_secs())),
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
        Observation::TimedOut { .. } => {
            ctx.metrics.gate_timeouts.inc();
            (
                EventType::Warning,
                "GateTimeout",
                format!(
                    "{}: {}",
                    gate.gate,
                    condition.message.clone().unwrap_or_default()
                ),
            )
        }
        _ => return,
    };
    ctx.event(&gate.namespace, &gate.pod, &gate.uid, type_, reason, note)
        .await;
}

/// 1 s, 2 s, 4 s … 30 s after the 1st, 2nd, 3rd … failure in a row.
fn retry_after(failures: u32) -> SignedDuration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST
        .checked_mul(1 << doublings)
        .unwrap_or(RETRY_MAX)
        .min(RETRY_MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(1, 1)]
    #[case(2, 2)]
    #[case(3, 4)]
    #[case(5, 16)]
    #[case(6, 30)]
    #[case(1000, 30)]
    fn backoff(#[case] failures: u32, #[case] seconds: i64) {
        assert_eq!(retry_after(failures).as_secs(), seconds);
    }
}
