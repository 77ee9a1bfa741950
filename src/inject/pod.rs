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
    /// Init containers by name: where the drain wait's waiter goes, and whether it is there.
    pub init_containers: Option<Vec<Named>>,
    /// Volumes by name, and whether each is an `emptyDir` (the waiter's volume is).
    pub volumes: Option<Vec<VolumeView>>,
    pub readiness_gates: Option<Vec<PodReadinessGate>>,
    pub termination_grace_period_seconds: Option<i64>,
    /// `spec.os.name`: a Windows pod cannot run the (Linux) waiter.
    pub os: Option<Named>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    /// Present (maybe with only a postStart) or not: decides where a preStop is added.
    pub lifecycle: Option<LifecycleView>,
    /// Variables by name: the drain wait adds its own only where the container sets none.
    pub env: Option<Vec<Named>>,
    pub volume_mounts: Option<Vec<MountView>>,
}

/// An item of a list read for its name alone.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Named {
    pub name: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeView {
    pub name: String,
    /// Whether the volume is an `emptyDir`; its settings are not read.
    pub empty_dir: Option<serde::de::IgnoredAny>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct MountView {
    pub name: String,
    pub mount_path: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct LifecycleView {
    pub pre_stop: Option<LifecycleHandler>,
}
