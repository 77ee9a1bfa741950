//! The leader's copy of the target-group records, and the `gracegate-target-groups`
//! ConfigMap it keeps them in.
//!
//! A new leader starts from the ConfigMap (read by the same reflector every webhook replica
//! runs), so nothing is lost on restart or failover. Writes are one server-side apply of the
//! whole `data` (gracegate is its only writer: `force` takes over fields a person edited), at
//! most every [`WRITE_INTERVAL`] and only when the data changed. A leader that has not read the
//! ConfigMap yet never writes it: it would overwrite what earlier leaders measured. What was
//! measured but not yet written when the Lease is lost (at most one interval) is lost.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{debug, info, warn};

use super::Context;
use crate::elb::{Facts, TargetGroup};
use crate::facts::{CONFIGMAP_NAME, Drain, Record, Records};

/// At most one ConfigMap write this often.
pub const WRITE_INTERVAL: SignedDuration = SignedDuration::from_secs(10);
/// The field manager of gracegate's server-side apply.
pub const FIELD_MANAGER: &str = "gracegate";

pub struct RecordKeeper {
    records: Records,
    /// Where the ConfigMap lives; `None`: records are kept in memory only.
    namespace: Option<String>,
    /// The ConfigMap has been read (found or not) and `records` started from it.
    loaded: bool,
    /// Changed since the last write.
    dirty: bool,
    last_attempt: Option<Timestamp>,
    /// The `data` last written, to skip writes that would change nothing.
    written: Option<BTreeMap<String, String>>,
}

impl RecordKeeper {
    pub fn new(namespace: Option<String>) -> RecordKeeper {
        RecordKeeper {
            records: Records::default(),
            namespace,
            loaded: false,
            dirty: false,
            last_attempt: None,
            written: None,
        }
    }

    pub fn records(&self) -> &Records {
        &self.records
    }

    /// Start from what the ConfigMap holds, once it has been read; anything measured before
    /// is added on top.
    pub fn load(&mut self, ctx: &Context) {
        if self.loaded || !ctx.cluster.target_groups_loaded() {
            return;
        }
        let mut base = (*ctx.cluster.target_groups()).clone();
        for (key, ours) in std::mem::take(&mut self.records.by_key) {
            let record = base.by_key.entry(key).or_default();
            merge(record, ours);
        }
        info!(
            target_groups = base.by_key.len(),
            "target-group records read from {CONFIGMAP_NAME}"
        );
        self.written = None;
        self.records = base;
        self.loaded = true;
    }

    pub fn add_drain(&mut self, group: &TargetGroup, arn: &str, drain: Drain) {
        self.records.entry(group, Some(arn)).add_drain(drain);
        self.dirty = true;
    }

    pub fn set_facts(&mut self, group: &TargetGroup, arn: &str, facts: Facts, at: Timestamp) {
        let record = self.records.entry(group, Some(arn));
        let first = record.facts.is_none();
        // A refresh that finds the same facts moves only their time: not worth a write (the
        // time goes out with the next change).
        if record.set_facts(facts, at) {
            if !first {
                info!(target_group = %group.name(Some(arn)), "target group facts changed");
            }
            self.dirty = true;
        }
    }

    /// When the facts of `group` were last read, as far as the records know.
    pub fn facts_at(&self, group: &TargetGroup) -> Option<Timestamp> {
        self.records.get(group)?.facts_at
    }

    /// When a pending change is due to be written; `None` when nothing is pending.
    pub fn next_write(&self) -> Option<Timestamp> {
        (self.dirty && self.loaded).then(|| {
            self.last_attempt
                .map_or(Timestamp::MIN, |last| last + WRITE_INTERVAL)
        })
    }

    /// Publish the records: to this replica's webhook at once, to the ConfigMap when due.
    /// Returns whether the ConfigMap was written.
    pub async fn flush(&mut self, ctx: &Context, now: Timestamp) -> bool {
        if !self.dirty {
            return false;
        }
        if !self.loaded {
            debug!("{CONFIGMAP_NAME} not read yet; records kept in memory");
            return false;
        }
        ctx.cluster.set_target_groups(self.records.clone());
        let Some(namespace) = self.namespace.clone() else {
            self.dirty = false;
            return false;
        };
        if self.next_write().is_some_and(|due| now < due) {
            return false;
        }
        let data = self.records.to_data();
        if self.written.as_ref() == Some(&data) {
            self.dirty = false;
            return false;
        }
        self.last_attempt = Some(now);
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIGMAP_NAME,
                "namespace": namespace,
                "labels": { "app.kubernetes.io/name": "gracegate", "app.kubernetes.io/component": "target-groups" },
            },
            "data": data,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch(CONFIGMAP_NAME, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => {
                debug!(target_groups = data.len(), "{CONFIGMAP_NAME} written");
                self.written = Some(data);
                self.dirty = false;
                true
            }
            Err(error) => {
                warn!(%error, "could not write {CONFIGMAP_NAME}; retrying in {}s", WRITE_INTERVAL.as_secs());
                false
            }
        }
    }
}

/// Add what this leader measured to what the ConfigMap held.
fn merge(into: &mut Record, ours: Record) {
    into.target_group_arn = into.target_group_arn.take().or(ours.target_group_arn);
    into.target_group_name = into.target_group_name.take().or(ours.target_group_name);
    if ours.facts_at > into.facts_at {
        into.facts = ours.facts;
        into.facts_at = ours.facts_at;
        into.updated_at = into.updated_at.max(ours.facts_at);
    }
    for drain in ours.drains {
        if !into.drains.contains(&drain) {
            into.add_drain(drain);
        }
    }
}
