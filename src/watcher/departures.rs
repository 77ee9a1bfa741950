//! The departure follower: every terminating pod's targets, followed (also after the pod
//! object is gone) until the load balancer no longer lists them. It measures each drain into
//! the target group's record, and reports the pods whose preStop sleep ended too early:
//! `TerminatedBeforeDeregistered` (still `healthy`: requests certainly failed) and
//! `TerminatedWhileDraining` (still `draining`: the load balancer may have sent new requests).

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use tracing::{debug, info, warn};

use super::Context;
use super::records::RecordKeeper;
use crate::aws::AwsError;
use crate::drain::{self, Departure, Gone, Step};
use crate::elb::{TargetGroup, TargetHealth, TargetId};
use crate::facts::Drain;
use crate::metrics::TargetGroupLabels;

type Key = (String, TargetGroup, TargetId);

#[derive(Default)]
pub struct DepartureFollower {
    departures: HashMap<Key, Departure>,
    /// Departures already concluded, while their pod is still in the store (sleeping out its
    /// preStop): not followed again.
    departed: HashSet<Key>,
}

impl DepartureFollower {
    /// Follow these departures, unless already followed or concluded.
    pub fn add(&mut self, departing: Vec<Departure>) {
        for d in departing {
            let key = (d.uid.clone(), d.group.clone(), d.target.clone());
            if !self.departed.contains(&key) {
                self.departures.entry(key).or_insert(d);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.departures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.departures.is_empty()
    }

    /// Departures followed or remembered as concluded.
    pub fn remembered(&self) -> usize {
        self.departures.len() + self.departed.len()
    }

    /// The targets to ask about.
    pub fn targets(&self) -> impl Iterator<Item = (&TargetGroup, &TargetId)> {
        self.departures.values().map(|d| (&d.group, &d.target))
    }

    /// Drop concluded departures of pods no longer in the cache (followed ones stay: a pod
    /// usually disappears while its target is still listed).
    pub fn forget(&mut self, live: &HashSet<String>) {
        self.departed.retain(|(uid, _, _)| live.contains(uid));
    }

    /// Advance the departures of a target group that answered.
    pub async fn follow(
        &mut self,
        ctx: &Context,
        group: &TargetGroup,
        arn: &str,
        answer: &Result<HashMap<TargetId, TargetHealth>, AwsError>,
        now: &Time,
        records: &mut RecordKeeper,
    ) {
        // An error says nothing about the targets: they are asked about again next tick.
        let Ok(found) = answer else { return };
        let mut ended = Vec::new();
        let mut late = Vec::new();
        for (key, d) in self
            .departures
            .iter_mut()
            .filter(|(_, d)| &d.group == group)
        {
            match drain::observe(d, found.get(&d.target), now.0) {
                Step::Continue => {}
                Step::StillHealthyAfterPrestop { late_seconds } => {
                    late.push((d.clone(), late_seconds))
                }
                Step::Gone(gone) => ended.push((key.clone(), Some(gone))),
                Step::GiveUp {
                    draining_after_prestop,
                } => {
                    info!(pod = %d.pod, namespace = %d.namespace, target = %d.target, "still listed after 15 minutes; no longer followed");
                    let gone = draining_after_prestop.map(|after| Gone {
                        drain_seconds: None,
                        lag_seconds: None,
                        draining_after_prestop: Some(after),
                    });
                    ended.push((key.clone(), gone));
                }
            }
        }
        for (d, late_seconds) in late {
            ctx.metrics.terminated_before_deregistered.inc();
            warn!(pod = %d.pod, namespace = %d.namespace, target = %d.target, late_seconds, reason = "TerminatedBeforeDeregistered", "preStop sleep ended while the load balancer still sent traffic");
            let note = format!(
                "preStop sleep ended while target {} was still healthy in the load balancer: \
                 requests may fail; raise gracegate.io/prestop-seconds or lower the deregistration delay",
                d.target
            );
            warning(ctx, &d, "TerminatedBeforeDeregistered", note).await;
        }
        for (key, gone) in ended {
            let Some(d) = self.departures.remove(&key) else {
                continue;
            };
            self.departed.insert(key);
            let Some(gone) = gone else { continue };
            self.measured(ctx, &d, arn, &gone, now, records);
            if let Some(after) = gone.draining_after_prestop {
                self.draining_too_late(ctx, &d, after, gone.drain_seconds.is_some())
                    .await;
            }
        }
    }

    /// Metrics and the target group's record for a drain that was measured.
    fn measured(
        &self,
        ctx: &Context,
        d: &Departure,
        arn: &str,
        gone: &Gone,
        now: &Time,
        records: &mut RecordKeeper,
    ) {
        if let Some(lag) = gone.lag_seconds {
            ctx.metrics.deregistration_lag.observe(lag);
        }
        let Some(seconds) = gone.drain_seconds else {
            debug!(pod = %d.pod, target = %d.target, "target gone before it was first seen; no drain measured");
            return;
        };
        ctx.metrics.deregistration.observe(seconds);
        ctx.metrics
            .drain
            .get_or_create(&TargetGroupLabels {
                target_group: d.group.name(Some(arn)),
            })
            .observe(seconds);
        debug!(pod = %d.pod, target = %d.target, target_group = %d.group, seconds, lag_seconds = gone.lag_seconds, "drain measured");
        records.add_drain(
            &d.group,
            arn,
            Drain {
                at: now.0,
                drain_seconds: seconds,
                lag_seconds: gone.lag_seconds,
            },
        );
    }

    async fn draining_too_late(&self, ctx: &Context, d: &Departure, after: f64, left: bool) {
        ctx.metrics.terminated_while_draining.inc();
        warn!(pod = %d.pod, namespace = %d.namespace, target = %d.target, target_group = %d.group, listed_after_seconds = after, reason = "TerminatedWhileDraining", "preStop sleep ended while the target was still draining");
        let then = if left {
            format!("it stayed listed {after:.0}s longer")
        } else {
            format!("it was still listed {after:.0}s later, when gracegate stopped following it")
        };
        let note = format!(
            "preStop sleep ended while target {} was still draining in the load balancer, which \
             may still have sent it new requests; {then}. gracegate sizes new pods' sleep from \
             the measured drains",
            d.target
        );
        warning(ctx, d, "TerminatedWhileDraining", note).await;
    }
}

/// A Warning event on a departing pod.
async fn warning(ctx: &Context, d: &Departure, reason: &str, note: String) {
    ctx.event(
        &d.namespace,
        &d.pod,
        &d.uid,
        EventType::Warning,
        reason,
        note,
    )
    .await;
}
