//! The release follower: the pods whose drain waits are open on the board ([`Board`]), their
//! targets described with the rest of the tick's round (one `DescribeTargetHealth` per target
//! group, never one per pod), and the leader's verdict ([`crate::release::decide`])
//! published to the board after each round. A release is an Event `DrainReleased` on the pod
//! with the seconds waited since its deletion, and an observation of
//! `gracegate_drain_wait_seconds`.
//!
//! The follower starts empty with each leadership: a target group this leader has not
//! described yet is "not yet", whatever an earlier leader saw. Dropping it (the watcher task
//! aborted when the Lease is lost, or ended) steps the board down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info};

use super::Context;
use crate::aws::AwsError;
use crate::drain;
use crate::elb::{TargetGroup, TargetHealth, TargetId};
use crate::release::{self, Departing, TargetLook, Verdict};
use crate::targets;
use crate::waits::{Board, WaitKey};

pub struct ReleaseFollower {
    board: Arc<Board>,
    settle: SignedDuration,
    pods: HashMap<WaitKey, Followed>,
}

/// A pod asked about, as far as this leader knows it.
#[derive(Default)]
struct Followed {
    /// Seen in the cache (or among the deleted pods) with the asked uid.
    found: bool,
    terminating: bool,
    /// When its delete was asked for (deletionTimestamp − grace period).
    deleted_at: Option<Timestamp>,
    targets: Vec<TargetLook>,
    /// A verdict decided without the load balancer (the pod is not known).
    unknown: Option<Verdict>,
}

// === impl ReleaseFollower ===

impl ReleaseFollower {
    /// Lead `board` from now on.
    pub fn new(board: Arc<Board>, settle: SignedDuration) -> ReleaseFollower {
        board.lead();
        ReleaseFollower {
            board,
            settle,
            pods: HashMap::new(),
        }
    }

    /// Pods with open, unreleased waits.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Resolves when a pod is asked about for the first time.
    pub async fn arrived(&self) {
        self.board.arrived().await
    }

    /// Take the board's pods, find each one (in the cache, or among `gone`, the pods deleted
    /// since the last tick) and its targets.
    pub fn gather(&mut self, ctx: &Context, gone: &[Pod], prefix: &str, now: &Time) {
        for key in self.board.expire() {
            info!(pod = %key.name, namespace = %key.namespace, "drain wait ended without a release (the pod stopped asking)");
        }
        let asked: BTreeSet<WaitKey> = self.board.asked().into_iter().collect();
        self.pods.retain(|key, _| asked.contains(key));
        for key in asked {
            let cached = ctx
                .pods
                .get(&ObjectRef::new(&key.name).within(&key.namespace));
            let pod = cached
                .as_deref()
                .filter(|p| p.metadata.uid.as_deref() == Some(key.uid.as_str()))
                .or_else(|| {
                    gone.iter()
                        .find(|p| p.metadata.uid.as_deref() == Some(key.uid.as_str()))
                });
            let followed = self.pods.entry(key.clone()).or_default();
            match pod {
                Some(pod) => {
                    let gone_now = cached
                        .as_deref()
                        .is_none_or(|c| c.metadata.uid != pod.metadata.uid);
                    followed.update(ctx, pod, gone_now, prefix, now);
                }
                // Known before: deleted since (its targets are still followed).
                None if followed.found => followed.terminating = true,
                // Another pod of that name: the asking pod is gone, or the ask is not a
                // pod's. Not known to this leader: nothing to vouch for.
                None if cached.is_some() => {
                    followed.unknown = Some(Verdict::NotYet("uid-mismatch"))
                }
                None => followed.unknown = Some(Verdict::NotYet("pod-not-found")),
            }
        }
    }

    /// The targets to describe this tick.
    pub fn targets(&self) -> impl Iterator<Item = (&TargetGroup, &TargetId)> {
        self.pods
            .values()
            .flat_map(|f| f.targets.iter())
            .map(|t| (&t.group, &t.target))
    }

    /// Add the targets to describe to a round's `health` map.
    pub fn add_targets(&self, health: &mut BTreeMap<TargetGroup, BTreeSet<TargetId>>) {
        for (group, target) in self.targets() {
            health
                .entry(group.clone())
                .or_default()
                .insert(target.clone());
        }
    }

    /// A target group's answer.
    pub fn observe(
        &mut self,
        group: &TargetGroup,
        answer: &Result<HashMap<TargetId, TargetHealth>, AwsError>,
        now: &Time,
    ) {
        let looks = self
            .pods
            .values_mut()
            .flat_map(|f| f.targets.iter_mut())
            .filter(|t| &t.group == group);
        for look in looks {
            match answer {
                Ok(found) => look.observe(found.get(&look.target), now.0),
                Err(_) => look.failed(),
            }
        }
    }

    /// Decide every pod and publish the verdicts; a release is recorded on the pod.
    pub async fn publish(&mut self, ctx: &Context, now: &Time) {
        let mut released = Vec::new();
        for (key, followed) in &self.pods {
            let verdict = match followed.unknown {
                Some(verdict) if !followed.found => verdict,
                _ => release::decide(
                    &Departing {
                        terminating: followed.terminating,
                        targets: followed.targets.clone(),
                    },
                    now.0,
                    self.settle,
                ),
            };
            debug!(pod = %key.name, namespace = %key.namespace, reason = verdict.reason(), release = verdict.is_release(), "drain wait");
            if self.board.publish(key, verdict) {
                released.push((key.clone(), verdict, followed.deleted_at));
            }
        }
        for (key, verdict, deleted_at) in released {
            self.pods.remove(&key);
            let waited = deleted_at.map(|d| now.0.duration_since(d).as_secs_f64().max(0.0));
            if let Some(seconds) = waited {
                ctx.metrics.drain_wait.observe(seconds);
            }
            let after = waited
                .map(|s| format!(" {s:.0}s after its deletion"))
                .unwrap_or_default();
            info!(pod = %key.name, namespace = %key.namespace, reason = verdict.reason(), waited_seconds = waited, "drain wait released");
            ctx.event(
                &key.namespace,
                &key.name,
                &key.uid,
                EventType::Normal,
                "DrainReleased",
                format!(
                    "released{after}: {} (its targets left every target group)",
                    verdict.reason()
                ),
            )
            .await;
        }
    }
}

impl Drop for ReleaseFollower {
    fn drop(&mut self) {
        self.board.step_down();
    }
}

// === impl Followed ===

impl Followed {
    /// What the pod says now: terminating or not, and its targets (kept once known, so a
    /// binding deleted meanwhile does not make them vanish).
    fn update(&mut self, ctx: &Context, pod: &Pod, gone: bool, prefix: &str, now: &Time) {
        self.found = true;
        self.unknown = None;
        self.terminating = gone || pod.metadata.deletion_timestamp.is_some();
        if !self.terminating {
            return;
        }
        let mut pod = pod.clone();
        // Deleted without a grace period (see `Watcher::scan`).
        if pod.metadata.deletion_timestamp.is_none() {
            pod.metadata.deletion_timestamp = Some(now.clone());
            pod.metadata.deletion_grace_period_seconds = Some(0);
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let objects = ctx.cluster.objects(&namespace);
        let node = |name: &str| ctx.nodes.get(&ObjectRef::new(name));
        let registered = gate_was_true(&pod, prefix);
        if let Some(deletion) = &pod.metadata.deletion_timestamp {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or_default();
            let asked = deletion
                .0
                .checked_sub(SignedDuration::from_secs(grace))
                .ok();
            self.deleted_at = self.deleted_at.or(asked);
        }
        for d in drain::departures(&[Arc::new(pod)], &objects, node, prefix) {
            if !self
                .targets
                .iter()
                .any(|t| t.group == d.group && t.target == d.target)
            {
                self.targets
                    .push(TargetLook::new(d.group, d.target, registered));
            }
        }
    }
}

/// One of the pod's gracegate gates turned True: its target was healthy, so registered.
fn gate_was_true(pod: &Pod, prefix: &str) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.status == "True" && targets::parse_gate(&c.type_, prefix).is_some())
}
