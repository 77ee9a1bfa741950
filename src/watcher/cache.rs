//! The leader's pod and node caches: reflectors that keep only gated pods, stripped to the
//! fields the watcher reads, and hand the pods that leave the cluster to the departure
//! follower.

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tracing::warn;

use crate::targets;

/// Gated pods deleted from the cluster since the last tick: a pod often disappears right
/// after its preStop sleep, or at once when deleted with a short grace period, and its target
/// is still followed until the load balancer drops it.
#[derive(Clone, Default)]
pub struct GonePods(Arc<Mutex<Vec<Pod>>>);

impl GonePods {
    pub fn push(&self, pod: Pod) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pod);
    }

    pub fn take(&self) -> Vec<Pod> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Reflectors on Pods (only pods carrying a gracegate gate, stripped to what the watcher
/// reads) and Nodes (only their providerID). The future drives them; every pod change
/// wakes `wake`, and deleted pods go to `gone`.
pub fn watch_pods(
    client: Client,
    condition_prefix: String,
    wake: Arc<Notify>,
    gone: GonePods,
) -> (
    Store<Pod>,
    Store<Node>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (pods, pod_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let drive = async move {
        let pod_stream = watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff();
        let nodes_stream = watcher(
            Api::<Node>::all(client),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(strip_node)
        .reflect(node_writer)
        .for_each(|event| {
            if let Err(error) = event {
                warn!(%error, "node watch failed; retrying");
            }
            future::ready(())
        });
        future::join(
            apply_gated_pods(pod_stream, pod_writer, condition_prefix, wake, gone),
            nodes_stream,
        )
        .await;
    };
    (pods, nodes, drive)
}

/// Keep only gated pods, stripped, in the store; deleted gated pods also go to `gone`.
/// Readiness gates are immutable, so a pod without one never gains one.
pub async fn apply_gated_pods<S>(
    events: S,
    mut writer: Writer<Pod>,
    prefix: String,
    wake: Arc<Notify>,
    gone: GonePods,
) where
    S: futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>,
{
    let gated = |pod: &Pod| {
        pod.spec
            .iter()
            .flat_map(|s| s.readiness_gates.iter().flatten())
            .any(|g| targets::parse_gate(&g.condition_type, &prefix).is_some())
    };
    let events = events.map_err(|error| {
        warn!(%error, "pod watch failed; retrying");
        error
    });
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let event = match event {
            watcher::Event::Apply(pod) if gated(&pod) => {
                watcher::Event::Apply(strip_pod(pod, &prefix))
            }
            watcher::Event::InitApply(pod) if gated(&pod) => {
                watcher::Event::InitApply(strip_pod(pod, &prefix))
            }
            watcher::Event::Delete(pod) => {
                if gated(&pod) {
                    gone.push(strip_pod(pod.clone(), &prefix));
                }
                watcher::Event::Delete(pod)
            }
            watcher::Event::Apply(_) | watcher::Event::InitApply(_) => continue,
            other => other,
        };
        let listed = matches!(event, watcher::Event::InitDone);
        writer.apply_watcher_event(&event);
        if listed {
            release_freed_memory();
        }
        wake.notify_one();
    }
}

/// A (re)list deserialises every pod in full before it is stripped: for a large cluster,
/// hundreds of MB of short-lived allocations interleaved with the small long-lived ones, which
/// glibc's allocator keeps as resident memory. Once the list is in, hand the free pages back.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no
        // memory in use and is safe to call at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Everything a decision about a pod does not read goes before caching: at 10,000 pods the
/// env, volumes, probes and managed fields are most of the memory (see BENCHMARKS.md).
///
/// What stays: name, namespace, UID and times; node, gates and grace period; IP and the
/// gracegate conditions; and the containers reduced to what resolves a target port and the
/// preStop sleep (see [`merge_containers`]).
pub fn strip_pod(mut pod: Pod, condition_prefix: &str) -> Pod {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    if let Some(spec) = pod.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::PodSpec {
            containers: merge_containers(std::mem::take(&mut spec.containers), true),
            init_containers: spec
                .init_containers
                .take()
                .map(|cs| merge_containers(cs, false))
                .filter(|cs| !cs.is_empty()),
            node_name: spec.node_name.take(),
            readiness_gates: spec.readiness_gates.take(),
            termination_grace_period_seconds: spec.termination_grace_period_seconds,
            ..Default::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        let ours = |c: &k8s_openapi::api::core::v1::PodCondition| {
            targets::parse_gate(&c.type_, condition_prefix).is_some()
        };
        *status = k8s_openapi::api::core::v1::PodStatus {
            conditions: status
                .conditions
                .take()
                .map(|cs| cs.into_iter().filter(ours).collect()),
            pod_ip: status.pod_ip.take(),
            ..Default::default()
        };
    }
    pod
}

/// One container per distinct preStop, holding the ports of every container with that
/// preStop; containers with neither ports nor a preStop are dropped. A `Container` is 2.3 KB
/// even when nearly empty, and a pod usually has several with the same injected preStop.
/// What the watcher reads is unchanged: which port numbers a port name resolves to, and
/// which preStop the container serving a port has.
pub fn merge_containers(containers: Vec<Container>, keep_prestop: bool) -> Vec<Container> {
    let mut groups: Vec<Container> = Vec::new();
    for c in containers {
        let prestop = c
            .lifecycle
            .and_then(|l| l.pre_stop)
            .filter(|_| keep_prestop);
        let ports = c.ports.unwrap_or_default();
        if ports.is_empty() && prestop.is_none() {
            continue;
        }
        let same = groups
            .iter_mut()
            .find(|g| g.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) == prestop.as_ref());
        match same {
            Some(group) => group.ports.get_or_insert_with(Vec::new).extend(ports),
            None => groups.push(Container {
                name: c.name,
                ports: (!ports.is_empty()).then_some(ports),
                lifecycle: prestop.map(|p| k8s_openapi::api::core::v1::Lifecycle {
                    pre_stop: Some(p),
                    ..Default::default()
                }),
                ..Container::default()
            }),
        }
    }
    groups
}

fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.metadata.labels = None;
    node.status = None;
    if let Some(spec) = node.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::NodeSpec {
            provider_id: spec.provider_id.take(),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain;
    use crate::objects::NamespaceObjects;
    use crate::targets::GateSettings;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    const PREFIX: &str = "target-health.elbv2.k8s.aws";
    const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";

    /// The large recorded pod, scheduled, gated, with preStops of 40 s on two containers and
    /// 5 s on the third.
    fn large_pod() -> Pod {
        let review: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/admission/create-deployment-pod-large.json"
        ))
        .unwrap();
        let mut pod = review["request"]["object"].clone();
        pod["metadata"]["name"] = json!("checkout-1");
        pod["metadata"]["uid"] = json!("u-1");
        pod["spec"]["nodeName"] = json!("ip-10-0-1-1.ec2.internal");
        pod["spec"]["readinessGates"] = json!([{ "conditionType": GATE }]);
        for (i, seconds) in [40, 40, 5].iter().enumerate() {
            pod["spec"]["containers"][i]["lifecycle"] =
                json!({ "preStop": { "sleep": { "seconds": seconds } } });
        }
        pod["status"] = json!({
            "phase": "Running", "podIP": "10.0.0.7",
            "conditions": [
                { "type": "PodScheduled", "status": "True" },
                { "type": GATE, "status": "False", "reason": "Elb.InitialHealthChecking" },
            ],
        });
        serde_json::from_value(pod).unwrap()
    }

    fn objects(target_port: IntOrString) -> NamespaceObjects {
        let mut service: k8s_openapi::api::core::v1::Service =
            serde_json::from_str(include_str!("../../tests/fixtures/cluster/service.json"))
                .unwrap();
        service.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(target_port);
        NamespaceObjects {
            namespace: None,
            services: vec![Arc::new(service)],
            bindings: vec![Arc::new(
                serde_json::from_str(include_str!(
                    "../../tests/fixtures/cluster/targetgroupbinding.json"
                ))
                .unwrap(),
            )],
            ingresses: vec![],
            target_groups: Default::default(),
        }
    }

    #[test]
    fn stripping_keeps_every_answer_the_watcher_reads() {
        let full = large_pod();
        let stripped = strip_pod(full.clone(), PREFIX);
        let mut terminating = full.clone();
        terminating.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_070).unwrap(),
        ));
        terminating.metadata.deletion_grace_period_seconds = Some(70);
        let stripped_terminating = strip_pod(terminating.clone(), PREFIX);
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let settings = GateSettings {
            condition_prefix: PREFIX.into(),
            gate_timeout: None,
        };
        for port in ["http-p", "grpc-gatew-p", "otel-agent-p", "nope"] {
            let o = objects(IntOrString::String(port.into()));
            let target = |p: &Pod| targets::target(p, &o.bindings[0], &o.services[0], |_| None);
            assert_eq!(target(&full), target(&stripped), "{port}");
            let pending = |p: Pod| {
                targets::pending_gates(&[Arc::new(p)], &o, |_| None, &settings, &now)
                    .into_iter()
                    .map(|g| (g.gate, g.current, g.work))
                    .collect::<Vec<_>>()
            };
            assert_eq!(pending(full.clone()), pending(stripped.clone()), "{port}");
            let departures = |p: Pod| drain::departures(&[Arc::new(p)], &o, |_| None, PREFIX);
            assert_eq!(
                departures(terminating.clone()),
                departures(stripped_terminating.clone()),
                "{port}"
            );
        }
        // The third container's own 5 s preStop still decides for the port it serves.
        let o = objects(IntOrString::String("otel-agent-p".into()));
        let d = drain::departures(&[Arc::new(stripped_terminating)], &o, |_| None, PREFIX);
        assert_eq!(
            d[0].prestop_ends.as_second() - d[0].deleted_at.as_second(),
            5
        );
    }

    #[test]
    fn stripping_drops_what_no_decision_reads() {
        let stripped = strip_pod(large_pod(), PREFIX);
        let json = serde_json::to_value(&stripped).unwrap();
        for absent in [
            "/metadata/managedFields",
            "/metadata/labels",
            "/spec/volumes",
            "/spec/affinity",
        ] {
            assert!(json.pointer(absent).is_none(), "{absent} kept");
        }
        let spec = stripped.spec.as_ref().unwrap();
        assert_eq!(
            spec.containers.len(),
            2,
            "one container per distinct preStop"
        );
        assert!(
            spec.containers
                .iter()
                .all(|c| c.env.is_none() && c.readiness_probe.is_none())
        );
        let conditions = stripped
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, GATE);
        let full_size = serde_json::to_vec(&large_pod()).unwrap().len();
        let stripped_size = serde_json::to_vec(&stripped).unwrap().len();
        assert!(
            stripped_size * 20 < full_size,
            "{stripped_size} of {full_size} bytes kept"
        );
    }

    #[test]
    fn containers_merge_by_prestop() {
        let c = |name: &str, port: Option<i32>, sleep: Option<i64>| -> Container {
            serde_json::from_value(json!({
                "name": name,
                "ports": port.map(|p| vec![json!({ "containerPort": p })]),
                "lifecycle": sleep.map(|s| json!({ "preStop": { "sleep": { "seconds": s } } })),
            }))
            .unwrap()
        };
        let merged = merge_containers(
            vec![
                c("a", Some(80), Some(40)),
                c("b", Some(81), Some(40)),
                c("c", None, None),
                c("d", None, Some(5)),
                c("e", Some(82), None),
            ],
            true,
        );
        let summary: Vec<(Vec<i32>, Option<u64>)> = merged
            .iter()
            .map(|g| {
                (
                    g.ports.iter().flatten().map(|p| p.container_port).collect(),
                    g.lifecycle
                        .as_ref()
                        .and_then(|l| l.pre_stop.as_ref())
                        .and_then(crate::inject::sleep_seconds),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec![80, 81], Some(40)),
                (vec![], Some(5)),
                (vec![82], None)
            ]
        );
        // Init containers keep only their ports.
        let init = merge_containers(
            vec![c("envoy", Some(15001), Some(3)), c("migrate", None, None)],
            false,
        );
        assert_eq!(init.len(), 1);
        assert!(init[0].lifecycle.is_none());
    }
}
