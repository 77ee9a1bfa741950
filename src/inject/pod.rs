//! The pod as a review carries it, reduced to what the decision reads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LifecycleHandler, PodReadinessGate};
use serde::Deserialize;

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
