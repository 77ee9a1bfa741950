//! A [`Plan`] — what to add to one pod — and the JSONPatch that adds it.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::{Value, json};

use super::waiter::{
    ENV_VARS, IMAGE_WAITER_PATH, ListAdd, MOUNT_PATH, WAITER_NAME, WAITER_PATH, WaiterAdd,
};
use super::{PrestopAction, Skip};
use crate::json::write::{Decimal, integer, pointer_token, string};
use crate::timing::{ANNOTATION_PRESTOP_SOURCE, PrestopSource};

/// How `gracegate.io/prestop-source` goes onto the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotationAdd {
    /// The pod has no annotations: add the map.
    Map,
    /// Add the key to the pod's annotations.
    Key,
    /// The pod says another source (copied from an older pod's manifest): ours is current.
    Replace,
}

/// A container that gets a preStop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrestopAdd {
    /// Index into `spec.containers`.
    pub index: usize,
    /// Whether the container already has a `lifecycle` (e.g. a postStart hook) to add into.
    pub has_lifecycle: bool,
}

/// What to add to one pod.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    pub skip: Option<Skip>,
    /// New readiness gate condition types, in binding-name order.
    pub gates: Vec<String>,
    pub has_gates: bool,
    pub prestops: Vec<PrestopAdd>,
    pub prestop_seconds: u32,
    /// Which rule gave `prestop_seconds` (`None` when the pod was skipped).
    pub prestop_source: Option<PrestopSource>,
    /// `gracegate.io/prestop-source` to write, and how.
    pub source_annotation: Option<(AnnotationAdd, &'static str)>,
    pub prestop_action: Option<PrestopAction>,
    /// `(pod's own, new)` when the grace period must rise.
    pub grace: Option<(Option<i64>, i64)>,
    /// Drain wait: the preStops run the waiter, and what the pod lacks for it.
    pub waiter: Option<WaiterAdd>,
    /// For `AdmissionResponse.warnings`: what the user should fix.
    pub warnings: Vec<String>,
}

impl Plan {
    pub(super) fn skipped(skip: Skip, warnings: Vec<String>) -> Plan {
        Plan {
            skip: Some(skip),
            warnings,
            ..Plan::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
            && self.prestops.is_empty()
            && self.grace.is_none()
            && self.source_annotation.is_none()
            && self.waiter.as_ref().is_none_or(WaiterAdd::is_empty)
    }

    /// The JSONPatch for the pod the plan was made for: `add` operations only, except that
    /// an existing grace period is `replace`d by a larger one.
    ///
    /// Built as `serde_json` values: the reference [`Plan::write_patch`] is tested against
    /// (and what the webhook did before it), for tests and the benchmarks.
    pub fn patch(&self) -> Patch {
        let mut ops = Vec::new();
        if !self.gates.is_empty() {
            let gates = self.gates.iter().map(|g| json!({ "conditionType": g }));
            if self.has_gates {
                ops.extend(gates.map(|value| add(&["spec", "readinessGates", "-"], value)));
            } else {
                ops.push(add(
                    &["spec", "readinessGates"],
                    Value::Array(gates.collect()),
                ));
            }
        }
        if let Some(waiter) = &self.waiter {
            waiter.ops(&mut ops);
        }
        if let Some(action) = self.prestop_action {
            let handler = match &self.waiter {
                Some(waiter) => waiter.handler(),
                None => prestop_handler(action, self.prestop_seconds),
            };
            for p in &self.prestops {
                let index = p.index.to_string();
                if p.has_lifecycle {
                    let path = ["spec", "containers", &index, "lifecycle", "preStop"];
                    ops.push(add(&path, handler.clone()));
                } else {
                    let path = ["spec", "containers", &index, "lifecycle"];
                    ops.push(add(&path, json!({ "preStop": handler })));
                }
            }
        }
        if let Some((how, value)) = self.source_annotation {
            let key = ANNOTATION_PRESTOP_SOURCE;
            ops.push(match how {
                AnnotationAdd::Map => add(&["metadata", "annotations"], json!({ key: value })),
                AnnotationAdd::Key => add(&["metadata", "annotations", key], json!(value)),
                AnnotationAdd::Replace => PatchOperation::Replace(ReplaceOperation {
                    path: PointerBuf::from_tokens(["metadata", "annotations", key]),
                    value: json!(value),
                }),
            });
        }
        if let Some((own, new)) = self.grace {
            let path = PointerBuf::from_tokens(["spec", "terminationGracePeriodSeconds"]);
            ops.push(match own {
                Some(_) => PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: json!(new),
                }),
                None => PatchOperation::Add(AddOperation {
                    path,
                    value: json!(new),
                }),
            });
        }
        Patch(ops)
    }
}

/// An `add` of `value` at the pointer made of `path`'s tokens.
pub(super) fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn prestop_handler(action: PrestopAction, seconds: u32) -> Value {
    match action {
        PrestopAction::Sleep => json!({ "sleep": { "seconds": seconds } }),
        PrestopAction::Exec => {
            json!({ "exec": { "command": ["/bin/sh", "-c", format!("sleep {seconds}")] } })
        }
    }
}

// === impl WaiterAdd ===

/// The drain wait's additions as JSONPatch operations.
impl WaiterAdd {
    /// The preStop handler of a waiting container.
    pub fn handler(&self) -> Value {
        json!({ "exec": { "command": self.command } })
    }

    /// The operations that add the init container, the volume, and each container's mount
    /// and env. The init container goes first: it must have run before any other init
    /// container (a native sidecar among them) can be stopped.
    pub fn ops(&self, ops: &mut Vec<PatchOperation>) {
        match self.init {
            Some(ListAdd::List) => ops.push(add(
                &["spec", "initContainers"],
                json!([self.init_container()]),
            )),
            Some(ListAdd::Item) => {
                ops.push(add(&["spec", "initContainers", "0"], self.init_container()))
            }
            None => {}
        }
        let volume = json!({ "name": WAITER_NAME, "emptyDir": { "sizeLimit": "16Mi" } });
        match self.volume {
            Some(ListAdd::List) => ops.push(add(&["spec", "volumes"], json!([volume]))),
            Some(ListAdd::Item) => ops.push(add(&["spec", "volumes", "-"], volume)),
            None => {}
        }
        for c in &self.containers {
            let index = c.index.to_string();
            let mount = json!({ "name": WAITER_NAME, "mountPath": MOUNT_PATH, "readOnly": true });
            match c.mount {
                Some(ListAdd::List) => ops.push(add(
                    &["spec", "containers", &index, "volumeMounts"],
                    json!([mount]),
                )),
                Some(ListAdd::Item) => ops.push(add(
                    &["spec", "containers", &index, "volumeMounts", "-"],
                    mount,
                )),
                None => {}
            }
            let vars: Vec<Value> = c
                .env
                .iter()
                .map(|name| {
                    let path = ENV_VARS.iter().find(|(n, _)| n == name).map_or("", |v| v.1);
                    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
                })
                .collect();
            match (c.env_list, vars.is_empty()) {
                (_, true) => {}
                (ListAdd::List, false) => ops.push(add(
                    &["spec", "containers", &index, "env"],
                    Value::Array(vars),
                )),
                (ListAdd::Item, false) => ops.extend(
                    vars.into_iter()
                        .map(|v| add(&["spec", "containers", &index, "env", "-"], v)),
                ),
            }
        }
    }

    /// Copies the waiter into the volume and ends. Its security context passes the Pod
    /// Security `restricted` profile on its own, and requests equal limits, so it neither
    /// breaks a LimitRange or ResourceQuota nor lowers a `Guaranteed` pod's QoS class.
    fn init_container(&self) -> Value {
        json!({
            "name": WAITER_NAME,
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": [IMAGE_WAITER_PATH, "install", WAITER_PATH],
            "volumeMounts": [{ "name": WAITER_NAME, "mountPath": MOUNT_PATH }],
            "resources": {
                "requests": { "cpu": "20m", "memory": "16Mi" },
                "limits": { "cpu": "20m", "memory": "16Mi" },
            },
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "terminationMessagePolicy": "FallbackToLogsOnError",
        })
    }
}

// === The JSONPatch written as JSON text ===

impl Plan {
    /// [`Plan::patch`] as compact JSON appended to `out`: byte for byte what
    /// `serde_json::to_vec(&plan.patch())` writes, without building a value or allocating
    /// anything but `out`'s growth. The webhook answers with it.
    pub fn write_patch(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        let mut ops = Ops { out, first: true };
        if !self.gates.is_empty() {
            let gate = |out: &mut Vec<u8>, gate: &String| {
                out.extend_from_slice(b"{\"conditionType\":");
                string(out, gate);
                out.push(b'}');
            };
            if self.has_gates {
                for g in &self.gates {
                    let path = [Key("spec"), Key("readinessGates"), Key("-")];
                    ops.add(&path, |out| gate(out, g));
                }
            } else {
                let path = [Key("spec"), Key("readinessGates")];
                ops.add(&path, |out| list(out, &self.gates, gate));
            }
        }
        if let Some(waiter) = &self.waiter {
            waiter.write_ops(&mut ops);
        }
        if let Some(action) = self.prestop_action {
            let handler = |out: &mut Vec<u8>| match &self.waiter {
                Some(waiter) => waiter.write_handler(out),
                None => write_prestop_handler(out, action, self.prestop_seconds),
            };
            for p in &self.prestops {
                let (spec, containers, index) = (Key("spec"), Key("containers"), Index(p.index));
                if p.has_lifecycle {
                    let path = [spec, containers, index, Key("lifecycle"), Key("preStop")];
                    ops.add(&path, handler);
                } else {
                    let path = [spec, containers, index, Key("lifecycle")];
                    ops.add(&path, |out| {
                        out.extend_from_slice(b"{\"preStop\":");
                        handler(out);
                        out.push(b'}');
                    });
                }
            }
        }
        if let Some((how, value)) = self.source_annotation {
            let key = ANNOTATION_PRESTOP_SOURCE;
            let (metadata, annotations) = (Key("metadata"), Key("annotations"));
            match how {
                AnnotationAdd::Map => ops.add(&[metadata, annotations], |out| {
                    out.push(b'{');
                    string(out, key);
                    out.push(b':');
                    string(out, value);
                    out.push(b'}');
                }),
                AnnotationAdd::Key => {
                    ops.add(&[metadata, annotations, Key(key)], |out| string(out, value))
                }
                AnnotationAdd::Replace => {
                    ops.op("replace", &[metadata, annotations, Key(key)], |out| {
                        string(out, value)
                    })
                }
            }
        }
        if let Some((own, new)) = self.grace {
            let op = if own.is_some() { "replace" } else { "add" };
            let path = [Key("spec"), Key("terminationGracePeriodSeconds")];
            ops.op(op, &path, |out| integer(out, new));
        }
        out.push(b']');
    }
}

/// A reference token of a JSON Pointer.
#[derive(Clone, Copy)]
enum Token<'a> {
    Key(&'a str),
    Index(usize),
}
use Token::{Index, Key};

/// The operations of a JSONPatch being written, the array's brackets left to the caller.
struct Ops<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl Ops<'_> {
    fn add(&mut self, path: &[Token], value: impl FnOnce(&mut Vec<u8>)) {
        self.op("add", path, value);
    }

    /// `{"op":…,"path":…,"value":…}`, in the order json-patch's `PatchOperation` serialises.
    fn op(&mut self, op: &str, path: &[Token], value: impl FnOnce(&mut Vec<u8>)) {
        let out = &mut *self.out;
        if !std::mem::take(&mut self.first) {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"op\":");
        string(out, op);
        out.extend_from_slice(b",\"path\":\"");
        for token in path {
            out.push(b'/');
            match *token {
                Key(key) => pointer_token(out, key),
                Index(index) => {
                    out.extend_from_slice(Decimal::unsigned(index as u64).as_bytes());
                }
            }
        }
        out.extend_from_slice(b"\",\"value\":");
        value(out);
        out.push(b'}');
    }
}

/// `[item, …]`.
fn list<T>(out: &mut Vec<u8>, items: &[T], item: impl Fn(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, it);
    }
    out.push(b']');
}

/// [`prestop_handler`], written. An object's keys go in serde_json's order (sorted), as the
/// values' maps have them.
fn write_prestop_handler(out: &mut Vec<u8>, action: PrestopAction, seconds: u32) {
    match action {
        PrestopAction::Sleep => {
            out.extend_from_slice(b"{\"sleep\":{\"seconds\":");
            integer(out, seconds.into());
            out.extend_from_slice(b"}}");
        }
        PrestopAction::Exec => {
            out.extend_from_slice(b"{\"exec\":{\"command\":[\"/bin/sh\",\"-c\",\"sleep ");
            integer(out, seconds.into());
            out.extend_from_slice(b"\"]}}");
        }
    }
}

impl WaiterAdd {
    /// [`WaiterAdd::handler`], written.
    fn write_handler(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"exec\":{\"command\":");
        list(out, &self.command, |out, arg| string(out, arg));
        out.extend_from_slice(b"}}");
    }

    /// [`WaiterAdd::ops`], written.
    fn write_ops(&self, ops: &mut Ops) {
        let (spec, init) = (Key("spec"), Key("initContainers"));
        match self.init {
            Some(ListAdd::List) => ops.add(&[spec, init], |out| {
                out.push(b'[');
                self.write_init_container(out);
                out.push(b']');
            }),
            Some(ListAdd::Item) => ops.add(&[spec, init, Key("0")], |out| {
                self.write_init_container(out)
            }),
            None => {}
        }
        let volume = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"{\"emptyDir\":{\"sizeLimit\":\"16Mi\"},\"name\":");
            string(out, WAITER_NAME);
            out.push(b'}');
        };
        match self.volume {
            Some(ListAdd::List) => ops.add(&[Key("spec"), Key("volumes")], |out| {
                out.push(b'[');
                volume(out);
                out.push(b']');
            }),
            Some(ListAdd::Item) => ops.add(&[Key("spec"), Key("volumes"), Key("-")], volume),
            None => {}
        }
        let mount = |out: &mut Vec<u8>| {
            out.extend_from_slice(b"{\"mountPath\":");
            string(out, MOUNT_PATH);
            out.extend_from_slice(b",\"name\":");
            string(out, WAITER_NAME);
            out.extend_from_slice(b",\"readOnly\":true}");
        };
        let var = |out: &mut Vec<u8>, name: &&str| {
            let path = ENV_VARS.iter().find(|(n, _)| n == name).map_or("", |v| v.1);
            out.extend_from_slice(b"{\"name\":");
            string(out, name);
            out.extend_from_slice(b",\"valueFrom\":{\"fieldRef\":{\"fieldPath\":");
            string(out, path);
            out.extend_from_slice(b"}}}");
        };
        for c in &self.containers {
            let (spec, containers, index) = (Key("spec"), Key("containers"), Index(c.index));
            let (mounts, env) = (Key("volumeMounts"), Key("env"));
            match c.mount {
                Some(ListAdd::List) => ops.add(&[spec, containers, index, mounts], |out| {
                    out.push(b'[');
                    mount(out);
                    out.push(b']');
                }),
                Some(ListAdd::Item) => ops.add(&[spec, containers, index, mounts, Key("-")], mount),
                None => {}
            }
            match (c.env_list, c.env.is_empty()) {
                (_, true) => {}
                (ListAdd::List, false) => ops.add(&[spec, containers, index, env], |out| {
                    list(out, &c.env, var)
                }),
                (ListAdd::Item, false) => {
                    for name in &c.env {
                        ops.add(&[spec, containers, index, env, Key("-")], |out| {
                            var(out, name)
                        });
                    }
                }
            }
        }
    }

    /// [`WaiterAdd::init_container`], written.
    fn write_init_container(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"command\":[");
        string(out, IMAGE_WAITER_PATH);
        out.extend_from_slice(b",\"install\",");
        string(out, WAITER_PATH);
        out.extend_from_slice(b"],\"image\":");
        string(out, &self.image);
        out.extend_from_slice(b",\"imagePullPolicy\":\"IfNotPresent\",\"name\":");
        string(out, WAITER_NAME);
        out.extend_from_slice(
            b",\"resources\":{\"limits\":{\"cpu\":\"20m\",\"memory\":\"16Mi\"},\
              \"requests\":{\"cpu\":\"20m\",\"memory\":\"16Mi\"}},\
              \"securityContext\":{\"allowPrivilegeEscalation\":false,\
              \"capabilities\":{\"drop\":[\"ALL\"]},\"readOnlyRootFilesystem\":true,\
              \"runAsGroup\":65532,\"runAsNonRoot\":true,\"runAsUser\":65532,\
              \"seccompProfile\":{\"type\":\"RuntimeDefault\"}},\
              \"terminationMessagePolicy\":\"FallbackToLogsOnError\",\"volumeMounts\":[{\"mountPath\":",
        );
        string(out, MOUNT_PATH);
        out.extend_from_slice(b",\"name\":");
        string(out, WAITER_NAME);
        out.extend_from_slice(b"}]}");
    }
}
