//! The pod as a review carries it, reduced to what the decision reads.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LifecycleHandler, PodReadinessGate};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::json::{self, Reader};

/// The parts of a pod the decision reads.
///
/// Not `k8s_openapi`'s `Pod`: reading a whole pod (managed fields, env, volumes, probes) was
/// four fifths of a review's time (see BENCHMARKS.md), for fields no decision looks at. Every
/// other field is skipped unread, so an odd value in one of them cannot fail a review either.
///
/// The webhook reads it with [`PodView::read`], its names borrowed from the review's body;
/// `plan` and `audit` deserialise it (owned) from the objects they list.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PodView<'a> {
    pub metadata: PodMeta<'a>,
    pub spec: Option<PodSpecView<'a>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PodMeta<'a> {
    pub name: Option<Cow<'a, str>>,
    pub generate_name: Option<Cow<'a, str>>,
    pub namespace: Option<Cow<'a, str>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpecView<'a> {
    /// Regular containers only: init containers (native sidecars included) get no preStop.
    pub containers: Vec<ContainerView<'a>>,
    /// Init containers by name: where the drain wait's waiter goes, and whether it is there.
    pub init_containers: Option<Vec<Named<'a>>>,
    /// Volumes by name, and whether each is an `emptyDir` (the waiter's volume is).
    pub volumes: Option<Listed<'a, VolumeView<'a>>>,
    pub readiness_gates: Option<Vec<PodReadinessGate>>,
    pub termination_grace_period_seconds: Option<i64>,
    /// `spec.os.name`: a Windows pod cannot run the (Linux) waiter.
    pub os: Option<Named<'a>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerView<'a> {
    pub name: Cow<'a, str>,
    /// Present (maybe with only a postStart) or not: decides where a preStop is added.
    pub lifecycle: Option<LifecycleView>,
    /// Variables by name: the drain wait adds its own only where the container sets none.
    pub env: Option<EnvList<'a>>,
    pub volume_mounts: Option<Listed<'a, MountView<'a>>>,
}

/// A list the webhook's reader keeps as its text, its items read when asked
/// ([`Listed::items`]): a container's env, its volume mounts and the pod's volumes. Only the
/// drain wait looks at them, and every review paid for reading them (a pod with 42
/// variables: ~26,000 instructions read, ~3,000 skipped; the 4 KB review's volumes and
/// mounts ~4,100 read, ~2,000 skipped; BENCHMARKS.md).
#[derive(Clone, Debug)]
pub enum Listed<'a, T> {
    /// The list's JSON text as the webhook's reader found it: skipped, so checked for
    /// structure (brackets, strings) but not read.
    Text(&'a [u8]),
    /// The items, as serde reads them (`plan`, `audit` and the reader's reference).
    Items(Vec<T>),
}

/// A container's variables, read for their names.
pub type EnvList<'a> = Listed<'a, Named<'a>>;

/// An item of a [`Listed`] list: how the webhook's reader reads one.
pub trait Item<'a>: Clone + Sized {
    fn read(r: &mut Reader<'a>) -> json::Result<Self>;
}

impl<'a, T: Item<'a>> Listed<'a, T> {
    /// The items; an error when the text is not a list of such items (no API server sends
    /// one: the review's object is the typed pod encoded again, `VersionedObject` in
    /// kubernetes/kubernetes `staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/
    /// request/admissionreview.go`, so a volume's name is a string; a hand-made review may).
    pub fn items(&self) -> json::Result<Cow<'_, [T]>> {
        match self {
            Listed::Items(items) => Ok(Cow::Borrowed(items)),
            Listed::Text(text) => {
                let mut r = Reader::new(text);
                let items = r.vec(T::read)?;
                r.end()?;
                Ok(Cow::Owned(items))
            }
        }
    }
}

/// Equal when both lists' items are, however they were read.
impl<'a, T: Item<'a> + PartialEq> PartialEq for Listed<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        matches!((self.items(), other.items()), (Ok(a), Ok(b)) if a == b)
    }
}

impl<'de, 'a, T: Deserialize<'de>> Deserialize<'de> for Listed<'a, T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(Listed::Items)
    }
}

/// An item of a list read for its name alone.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Named<'a> {
    pub name: Cow<'a, str>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeView<'a> {
    pub name: Cow<'a, str>,
    /// Whether the volume is an `emptyDir`; its settings are not read.
    pub empty_dir: Option<IgnoredAny>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct MountView<'a> {
    pub name: Cow<'a, str>,
    pub mount_path: Cow<'a, str>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct LifecycleView {
    pub pre_stop: Option<LifecycleHandler>,
}

// === impl PodView: read from a review's body ===
//
// The same fields as the serde derives above, with one leniency: a `null` reads as absent
// wherever serde would refuse it (`"containers": null`), as the API server's own decoder
// does. The tests compare both readings on every recorded review and on generated pods.

impl<'a> PodView<'a> {
    /// Reads a pod (the JSON object at `r`), skipping every field the decision does not read.
    pub fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut pod = PodView::default();
        r.object(|r, key| {
            match &*key {
                "metadata" => pod.metadata = r.nullable(PodMeta::read)?.unwrap_or_default(),
                "spec" => pod.spec = r.nullable(PodSpecView::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(pod)
    }
}

impl<'a> PodMeta<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut meta = PodMeta::default();
        r.object(|r, key| {
            match &*key {
                "name" => meta.name = r.nullable(Reader::string)?,
                "generateName" => meta.generate_name = r.nullable(Reader::string)?,
                "namespace" => meta.namespace = r.nullable(Reader::string)?,
                "labels" => meta.labels = r.nullable(string_map)?,
                "annotations" => meta.annotations = r.nullable(string_map)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(meta)
    }
}

impl<'a> PodSpecView<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut spec = PodSpecView::default();
        r.object(|r, key| {
            match &*key {
                "containers" => {
                    spec.containers = r
                        .nullable(|r| r.vec(ContainerView::read))?
                        .unwrap_or_default();
                }
                "initContainers" => spec.init_containers = r.nullable(|r| r.vec(Named::read))?,
                "volumes" => spec.volumes = r.nullable(|r| r.raw().map(Listed::Text))?,
                "readinessGates" => spec.readiness_gates = r.nullable(|r| r.vec(readiness_gate))?,
                "terminationGracePeriodSeconds" => {
                    spec.termination_grace_period_seconds = r.nullable(Reader::i64)?;
                }
                "os" => spec.os = r.nullable(Named::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(spec)
    }
}

impl<'a> ContainerView<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut c = ContainerView::default();
        r.object(|r, key| {
            match &*key {
                "name" => c.name = r.nullable(Reader::string)?.unwrap_or_default(),
                "lifecycle" => c.lifecycle = r.nullable(LifecycleView::read)?,
                "env" => c.env = r.nullable(|r| r.raw().map(Listed::Text))?,
                "volumeMounts" => c.volume_mounts = r.nullable(|r| r.raw().map(Listed::Text))?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(c)
    }
}

impl<'a> Item<'a> for Named<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut named = Named::default();
        r.object(|r, key| {
            match &*key {
                "name" => named.name = r.nullable(Reader::string)?.unwrap_or_default(),
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(named)
    }
}

impl<'a> Item<'a> for VolumeView<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut volume = VolumeView::default();
        r.object(|r, key| {
            match &*key {
                "name" => volume.name = r.nullable(Reader::string)?.unwrap_or_default(),
                "emptyDir" => volume.empty_dir = r.nullable(|r| r.skip().map(|()| IgnoredAny))?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(volume)
    }
}

impl<'a> Item<'a> for MountView<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut mount = MountView::default();
        r.object(|r, key| {
            match &*key {
                "name" => mount.name = r.nullable(Reader::string)?.unwrap_or_default(),
                "mountPath" => mount.mount_path = r.nullable(Reader::string)?.unwrap_or_default(),
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(mount)
    }
}

impl LifecycleView {
    fn read(r: &mut Reader<'_>) -> json::Result<Self> {
        let mut lifecycle = LifecycleView::default();
        r.object(|r, key| {
            match &*key {
                // A preStop is rare and read whole: k8s_openapi's own reading of it.
                "preStop" => {
                    let raw = r.raw()?;
                    lifecycle.pre_stop = serde_json::from_slice(raw)
                        .map_err(|e| r.error(format!("preStop: {e}")))?;
                }
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(lifecycle)
    }
}

fn string_map(r: &mut Reader<'_>) -> json::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    r.object(|r, key| {
        map.insert(key.into_owned(), r.string()?.into_owned());
        Ok(())
    })?;
    Ok(map)
}

/// k8s_openapi's `PodReadinessGate`: a missing or `null` `conditionType` reads as empty, as
/// k8s_openapi reads it.
fn readiness_gate(r: &mut Reader<'_>) -> json::Result<PodReadinessGate> {
    let mut gate = PodReadinessGate::default();
    r.object(|r, key| {
        match &*key {
            "conditionType" => {
                gate.condition_type = r.nullable(Reader::string)?.unwrap_or_default().into_owned();
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(gate)
}
