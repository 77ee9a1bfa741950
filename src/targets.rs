//! Which gates are pending, which target each one waits for, and how they group by target
//! group. Pure: pods, the objects of their namespace and nodes in; work out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::binding::{self, TargetGroupBinding, TargetType};
use crate::elb::{TargetGroup, TargetId, instance_id};
use crate::health::Observation;
use crate::objects::NamespaceObjects;

/// The v1 ALB ingress controller's gate prefix: `<prefix>/<ingress>_<service>_<port>`.
pub const LEGACY_PREFIX: &str = "target-health.alb.ingress.k8s.aws";

/// A readiness gate gracegate is responsible for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate<'a> {
    /// `<prefix>/<TargetGroupBinding name>`.
    Binding(&'a str),
    /// `target-health.alb.ingress.k8s.aws/<ingress>_<service>_<port>`.
    Legacy {
        ingress: &'a str,
        service: &'a str,
        port: &'a str,
    },
}

/// Parse a condition type; `None` for gates that are not gracegate's.
pub fn parse_gate<'a>(condition_type: &'a str, prefix: &str) -> Option<Gate<'a>> {
    let (p, rest) = condition_type.split_once('/')?;
    if p == prefix {
        return Some(Gate::Binding(rest));
    }
    if p == LEGACY_PREFIX {
        // Names and port names are DNS labels: none contains '_'.
        let mut parts = rest.split('_');
        let (ingress, service, port) = (parts.next()?, parts.next()?, parts.next()?);
        return parts.next().is_none().then_some(Gate::Legacy {
            ingress,
            service,
            port,
        });
    }
    None
}

/// The binding a gate stands for, in the pod's namespace.
pub fn resolve<'o>(
    gate: &Gate<'_>,
    objects: &'o NamespaceObjects,
) -> Option<&'o TargetGroupBinding> {
    match gate {
        Gate::Binding(name) => objects
            .bindings
            .iter()
            .find(|b| b.metadata.name.as_deref() == Some(*name))
            .map(|b| b.as_ref()),
        Gate::Legacy {
            ingress,
            service,
            port,
        } => {
            let svc = objects.service(service)?;
            let wanted = match port.parse::<i32>() {
                Ok(n) => IntOrString::Int(n),
                Err(_) => IntOrString::String(port.to_string()),
            };
            let wanted = binding::service_port(svc, &wanted)?.port;
            // The Ingress must still route to that service port.
            let ing = objects
                .ingresses
                .iter()
                .find(|i| i.metadata.name.as_deref() == Some(*ingress))?;
            if !binding::routes_to(ing, svc, wanted) {
                return None;
            }
            objects
                .bindings
                .iter()
                .find(|b| {
                    b.spec.service_ref.name == *service
                        && binding::service_port(svc, &b.spec.service_ref.port)
                            .is_some_and(|sp| sp.port == wanted)
                })
                .map(|b| b.as_ref())
        }
    }
}

/// Why a pod has no target (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoTarget {
    /// Not scheduled or no IP yet: wait for the next pod event.
    NotYet,
    /// A configuration that will not produce a target; told to the user.
    Unresolvable(String),
}

/// The target the ELB knows this pod by, behind `binding`.
pub fn target(
    pod: &Pod,
    binding: &TargetGroupBinding,
    service: &Service,
    node: impl FnOnce(&str) -> Option<std::sync::Arc<Node>>,
) -> Result<TargetId, NoTarget> {
    let binding_name = binding.metadata.name.as_deref().unwrap_or_default();
    let service_name = service.metadata.name.as_deref().unwrap_or_default();
    let service_port =
        binding::service_port(service, &binding.spec.service_ref.port).ok_or_else(|| {
            NoTarget::Unresolvable(format!(
                "Service {service_name} has no port {:?} (TargetGroupBinding {binding_name})",
                binding.spec.service_ref.port
            ))
        })?;
    match binding.target_type() {
        Some(TargetType::Ip) => {
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .filter(|ip| !ip.is_empty())
                .ok_or(NoTarget::NotYet)?;
            let port = match &service_port.target_port {
                None => service_port.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => container_port(pod, name).ok_or_else(|| {
                    NoTarget::Unresolvable(format!(
                        "no container port named {name:?} for Service {service_name}'s targetPort"
                    ))
                })?,
            };
            Ok(TargetId {
                id: ip.to_string(),
                port,
            })
        }
        Some(TargetType::Instance) if binding::is_traffic_policy_local(service) => {
            let node_name = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .ok_or(NoTarget::NotYet)?;
            let node = node(node_name).ok_or(NoTarget::NotYet)?;
            let instance = node
                .spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(instance_id)
                .ok_or_else(|| {
                    NoTarget::Unresolvable(format!(
                        "node {node_name} has no EC2 instance providerID"
                    ))
                })?;
            let port = service_port.node_port.ok_or_else(|| {
                NoTarget::Unresolvable(format!("Service {service_name} has no nodePort"))
            })?;
            Ok(TargetId {
                id: instance.to_string(),
                port,
            })
        }
        Some(TargetType::Instance) => Err(NoTarget::Unresolvable(format!(
            "instance targets behind Service {service_name} with externalTrafficPolicy Cluster do not speak for one pod"
        ))),
        None => Err(NoTarget::Unresolvable(format!(
            "TargetGroupBinding {binding_name} has no known targetType"
        ))),
    }
}

/// A named container port; native sidecars (init containers) count, as they serve traffic.
fn container_port(pod: &Pod, name: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

/// One gate of one pod that is not `True` yet.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingGate {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub gate: String,
    pub current: Option<PodCondition>,
    pub created: Option<Time>,
    pub work: Work,
}

/// What a pending gate needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    /// Ask the ELB about this target.
    Describe {
        group: TargetGroup,
        target: TargetId,
    },
    /// Decided without the ELB.
    Settle(Observation),
    /// Nothing to do until the pod changes (no IP, not scheduled).
    Wait,
}

/// Settings the pending computation needs.
#[derive(Clone, Debug)]
pub struct GateSettings {
    pub condition_prefix: String,
    /// `None`: gates never time out.
    pub gate_timeout: Option<std::time::Duration>,
}

/// Every gate of `pods` (all in the namespace `objects` describes) that is not `True`,
/// with what it needs. Terminating pods are skipped: their gates no longer matter.
pub fn pending_gates(
    pods: &[std::sync::Arc<Pod>],
    objects: &NamespaceObjects,
    node: impl Fn(&str) -> Option<std::sync::Arc<Node>>,
    settings: &GateSettings,
    now: &Time,
) -> Vec<PendingGate> {
    let mut out = Vec::new();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        for gate in spec.readiness_gates.iter().flatten() {
            let Some(parsed) = parse_gate(&gate.condition_type, &settings.condition_prefix) else {
                continue;
            };
            let current = conditions
                .and_then(|cs| cs.iter().find(|c| c.type_ == gate.condition_type))
                .cloned();
            if current.as_ref().is_some_and(|c| c.status == "True") {
                continue;
            }
            let created = pod.metadata.creation_timestamp.clone();
            let waited = created
                .as_ref()
                .map(|c| now.0.duration_since(c.0).as_secs_f64().max(0.0) as u64);
            let work = match (settings.gate_timeout, waited) {
                (Some(limit), Some(w)) if w >= limit.as_secs() => {
                    Work::Settle(Observation::TimedOut { waited_seconds: w })
                }
                _ => work_for(pod, &parsed, objects, &node),
            };
            out.push(PendingGate {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                gate: gate.condition_type.clone(),
                current,
                created,
                work,
            });
        }
    }
    out
}

fn work_for(
    pod: &Pod,
    gate: &Gate<'_>,
    objects: &NamespaceObjects,
    node: &impl Fn(&str) -> Option<std::sync::Arc<Node>>,
) -> Work {
    let Some(binding) = resolve(gate, objects) else {
        let what = match gate {
            Gate::Binding(name) => name.to_string(),
            Gate::Legacy {
                ingress,
                service,
                port,
            } => {
                format!("for Ingress {ingress} → Service {service} port {port}")
            }
        };
        return Work::Settle(Observation::BindingDeleted(what));
    };
    let Some(service) = objects.service(&binding.spec.service_ref.name) else {
        return Work::Settle(Observation::NoData(format!(
            "Service {} of TargetGroupBinding {} not found",
            binding.spec.service_ref.name,
            binding.metadata.name.as_deref().unwrap_or_default()
        )));
    };
    let Some(group) = binding.target_group() else {
        return Work::Settle(Observation::NoData(format!(
            "TargetGroupBinding {} names no target group yet",
            binding.metadata.name.as_deref().unwrap_or_default()
        )));
    };
    match target(pod, binding, service, node) {
        Ok(target) => Work::Describe { group, target },
        Err(NoTarget::NotYet) => Work::Wait,
        Err(NoTarget::Unresolvable(why)) => Work::Settle(Observation::NoData(why)),
    }
}

/// The target groups serving any of `pods` (all in the namespace `objects` describes) through
/// a gate gracegate serves: the ones whose facts are worth reading.
pub fn gated_groups(
    pods: &[std::sync::Arc<Pod>],
    objects: &NamespaceObjects,
    condition_prefix: &str,
) -> BTreeSet<TargetGroup> {
    let mut out = BTreeSet::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for pod in pods {
        for gate in pod
            .spec
            .iter()
            .flat_map(|s| s.readiness_gates.iter().flatten())
        {
            // Pods of one workload share their gates: resolve each gate once.
            if !seen.insert(gate.condition_type.as_str()) {
                continue;
            }
            let group = parse_gate(&gate.condition_type, condition_prefix)
                .and_then(|parsed| resolve(&parsed, objects))
                .and_then(|b| b.target_group());
            out.extend(group);
        }
    }
    out
}

/// The targets to ask about, per target group: one `DescribeTargetHealth` each.
pub fn group_by_target_group<'a>(
    gates: impl IntoIterator<Item = &'a PendingGate>,
) -> BTreeMap<TargetGroup, BTreeSet<TargetId>> {
    let mut groups: BTreeMap<TargetGroup, BTreeSet<TargetId>> = BTreeMap::new();
    for g in gates {
        if let Work::Describe { group, target } = &g.work {
            groups
                .entry(group.clone())
                .or_default()
                .insert(target.clone());
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Observation;
    use rstest::rstest;
    use serde_json::json;
    use std::sync::Arc;

    const SERVICE: &str = include_str!("../tests/fixtures/cluster/service.json");
    const BINDING: &str = include_str!("../tests/fixtures/cluster/targetgroupbinding.json");
    const INGRESS: &str = include_str!("../tests/fixtures/cluster/ingress.json");
    const ARN: &str = "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/k8s-game2048-service2-6f5e3c2a1b/0123456789abcdef";
    const PREFIX: &str = "target-health.elbv2.k8s.aws";
    const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";
    const LEGACY: &str = "target-health.alb.ingress.k8s.aws/ingress-2048_service-2048_80";

    fn objects(edit: impl FnOnce(&mut NamespaceObjects)) -> NamespaceObjects {
        let mut o = NamespaceObjects {
            namespace: None,
            services: vec![Arc::new(serde_json::from_str(SERVICE).unwrap())],
            bindings: vec![Arc::new(serde_json::from_str(BINDING).unwrap())],
            ingresses: vec![Arc::new(serde_json::from_str(INGRESS).unwrap())],
            target_groups: Default::default(),
        };
        edit(&mut o);
        o
    }

    fn pod(name: &str, ip: Option<&str>, gates: &[&str], conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "game-2048", "uid": format!("uid-{name}"),
                          "creationTimestamp": "2026-11-26T12:00:00Z" },
            "spec": {
                "nodeName": "ip-10-0-1-1.ec2.internal",
                "readinessGates": gates.iter().map(|g| json!({ "conditionType": g })).collect::<Vec<_>>(),
                "containers": [{ "name": "app", "ports": [{ "name": "http", "containerPort": 8080 }] }],
            },
            "status": { "podIP": ip, "conditions": conditions },
        }))
        .unwrap()
    }

    fn time(s: &str) -> Time {
        serde_json::from_value(json!(s)).unwrap()
    }

    fn settings() -> GateSettings {
        GateSettings {
            condition_prefix: PREFIX.into(),
            gate_timeout: Some(std::time::Duration::from_secs(600)),
        }
    }

    fn no_node(_: &str) -> Option<Arc<Node>> {
        None
    }

    #[rstest]
    #[case(GATE, Some(Gate::Binding("k8s-game2048-service2-6f5e3c2a1b")))]
    #[case(LEGACY, Some(Gate::Legacy { ingress: "ingress-2048", service: "service-2048", port: "80" }))]
    #[case("target-health.alb.ingress.k8s.aws/ing_svc_http", Some(Gate::Legacy { ingress: "ing", service: "svc", port: "http" }))]
    #[case("target-health.alb.ingress.k8s.aws/ing_svc", None)]
    #[case("target-health.alb.ingress.k8s.aws/a_b_c_d", None)]
    #[case("example.com/other-gate", None)]
    #[case("no-slash", None)]
    fn gates(#[case] condition_type: &str, #[case] expected: Option<Gate<'static>>) {
        assert_eq!(parse_gate(condition_type, PREFIX), expected);
    }

    fn binding_name(gate: &str, objects: &NamespaceObjects) -> Option<String> {
        resolve(&parse_gate(gate, PREFIX).unwrap(), objects).and_then(|b| b.metadata.name.clone())
    }

    #[rstest]
    #[case::ours(GATE, objects(|_| {}), true)]
    #[case::ours_deleted(GATE, objects(|o| o.bindings.clear()), false)]
    #[case::legacy(LEGACY, objects(|_| {}), true)]
    // The service port by name resolves to the same port 80.
    #[case::legacy_port_by_name(LEGACY, objects(|o| {
        let svc = Arc::make_mut(&mut o.services[0]);
        svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].name = Some("web".into());
        let tgb = Arc::make_mut(&mut o.bindings[0]);
        tgb.spec.service_ref.port = IntOrString::String("web".into());
    }), true)]
    #[case::legacy_ingress_gone(LEGACY, objects(|o| o.ingresses.clear()), false)]
    #[case::legacy_ingress_routes_elsewhere(LEGACY, objects(|o| {
        let ing = Arc::make_mut(&mut o.ingresses[0]);
        ing.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].http.as_mut().unwrap().paths[0]
            .backend.service.as_mut().unwrap().name = "other".into();
    }), false)]
    #[case::legacy_no_binding_for_port(LEGACY, objects(|o| {
        Arc::make_mut(&mut o.bindings[0]).spec.service_ref.port = IntOrString::Int(443);
    }), false)]
    fn gate_resolution(#[case] gate: &str, #[case] objects: NamespaceObjects, #[case] found: bool) {
        assert_eq!(
            binding_name(gate, &objects),
            found.then(|| "k8s-game2048-service2-6f5e3c2a1b".to_string())
        );
    }

    fn target_of(
        pod: &Pod,
        objects: &NamespaceObjects,
        node: Option<Node>,
    ) -> Result<TargetId, NoTarget> {
        let node = node.map(Arc::new);
        target(pod, &objects.bindings[0], &objects.services[0], |_| {
            node.clone()
        })
    }

    fn with_target_port(port: IntOrString) -> NamespaceObjects {
        objects(|o| {
            let svc = Arc::make_mut(&mut o.services[0]);
            svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(port);
        })
    }

    #[rstest]
    #[case::named(with_target_port(IntOrString::String("http".into())), Ok(8080))]
    #[case::numeric(with_target_port(IntOrString::Int(9000)), Ok(9000))]
    #[case::missing_name(with_target_port(IntOrString::String("grpc".into())), Err(()))]
    #[case::absent_means_port(objects(|o| {
        let svc = Arc::make_mut(&mut o.services[0]);
        svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = None;
    }), Ok(80))]
    #[case::binding_port_not_on_service(objects(|o| {
        Arc::make_mut(&mut o.bindings[0]).spec.service_ref.port = IntOrString::Int(443);
    }), Err(()))]
    fn ip_target_port(#[case] objects: NamespaceObjects, #[case] expected: Result<i32, ()>) {
        let got = target_of(
            &pod("p", Some("10.0.0.7"), &[GATE], json!([])),
            &objects,
            None,
        );
        match expected {
            Ok(port) => assert_eq!(
                got,
                Ok(TargetId {
                    id: "10.0.0.7".into(),
                    port
                })
            ),
            Err(()) => assert!(matches!(got, Err(NoTarget::Unresolvable(_))), "{got:?}"),
        }
    }

    #[test]
    fn no_ip_yet_waits() {
        let got = target_of(&pod("p", None, &[GATE], json!([])), &objects(|_| {}), None);
        assert_eq!(got, Err(NoTarget::NotYet));
    }

    fn instance_objects(policy: &str) -> NamespaceObjects {
        objects(|o| {
            Arc::make_mut(&mut o.bindings[0]).spec.target_type = Some("instance".into());
            Arc::make_mut(&mut o.services[0])
                .spec
                .as_mut()
                .unwrap()
                .external_traffic_policy = Some(policy.into());
        })
    }

    fn node(provider_id: &str) -> Node {
        serde_json::from_value(
            json!({ "metadata": { "name": "n" }, "spec": { "providerID": provider_id } }),
        )
        .unwrap()
    }

    #[test]
    fn instance_targets() {
        let p = pod("p", Some("10.0.0.7"), &[GATE], json!([]));
        let local = instance_objects("Local");
        assert_eq!(
            target_of(&p, &local, Some(node("aws:///ap-northeast-1a/i-0abc"))),
            Ok(TargetId {
                id: "i-0abc".into(),
                port: 30296
            })
        );
        assert_eq!(target_of(&p, &local, None), Err(NoTarget::NotYet));
        assert!(matches!(
            target_of(&p, &local, Some(node("kind://docker/n"))),
            Err(NoTarget::Unresolvable(_))
        ));
        assert!(matches!(
            target_of(
                &p,
                &instance_objects("Cluster"),
                Some(node("aws:///az/i-0abc"))
            ),
            Err(NoTarget::Unresolvable(_))
        ));
    }

    fn work_of(pod: Pod, objects: &NamespaceObjects, now: &str) -> Vec<Work> {
        pending_gates(&[Arc::new(pod)], objects, no_node, &settings(), &time(now))
            .into_iter()
            .map(|g| g.work)
            .collect()
    }

    const SOON: &str = "2026-11-26T12:00:05Z";

    #[test]
    fn pending_gate_describes_its_target() {
        let works = work_of(
            pod("p", Some("10.0.0.7"), &[GATE], json!([])),
            &objects(|_| {}),
            SOON,
        );
        assert_eq!(
            works,
            vec![Work::Describe {
                group: TargetGroup::Arn(ARN.into()),
                target: TargetId {
                    id: "10.0.0.7".into(),
                    port: 8080
                },
            }]
        );
    }

    #[test]
    fn legacy_gate_describes_the_same_target_group() {
        let works = work_of(
            pod("p", Some("10.0.0.7"), &[LEGACY, GATE], json!([])),
            &objects(|_| {}),
            SOON,
        );
        assert_eq!(works.len(), 2);
        assert_eq!(works[0], works[1]);
    }

    #[rstest]
    #[case::true_is_done(json!([{ "type": GATE, "status": "True" }]), SOON, None)]
    #[case::false_is_pending(json!([{ "type": GATE, "status": "False" }]), SOON, Some("describe"))]
    #[case::other_conditions_ignored(json!([{ "type": "Ready", "status": "True" }]), SOON, Some("describe"))]
    #[case::timed_out(json!([]), "2026-11-26T12:10:00Z", Some("timeout"))]
    #[case::just_before_timeout(json!([]), "2026-11-26T12:09:59Z", Some("describe"))]
    fn pending_or_not(
        #[case] conditions: serde_json::Value,
        #[case] now: &str,
        #[case] expected: Option<&str>,
    ) {
        let works = work_of(
            pod("p", Some("10.0.0.7"), &[GATE], conditions),
            &objects(|_| {}),
            now,
        );
        let got = works.first().map(|w| match w {
            Work::Describe { .. } => "describe",
            Work::Settle(Observation::TimedOut {
                waited_seconds: 600,
            }) => "timeout",
            other => panic!("{other:?}"),
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn timeout_zero_means_never() {
        let settings = GateSettings {
            gate_timeout: None,
            ..settings()
        };
        let p = Arc::new(pod("p", Some("10.0.0.7"), &[GATE], json!([])));
        let gates = pending_gates(
            &[p],
            &objects(|_| {}),
            no_node,
            &settings,
            &time("2030-01-01T00:00:00Z"),
        );
        assert!(matches!(gates[0].work, Work::Describe { .. }));
    }

    #[test]
    fn deleted_binding_releases_the_gate() {
        let works = work_of(
            pod("p", Some("10.0.0.7"), &[GATE], json!([])),
            &objects(|o| o.bindings.clear()),
            SOON,
        );
        assert_eq!(
            works,
            vec![Work::Settle(Observation::BindingDeleted(
                "k8s-game2048-service2-6f5e3c2a1b".into()
            ))]
        );
        assert_eq!(
            Observation::BindingDeleted("x".into()).desired().status,
            "True"
        );
    }

    #[test]
    fn terminating_pods_and_foreign_gates_are_not_pending() {
        let mut p = pod("p", Some("10.0.0.7"), &[GATE], json!([]));
        p.metadata.deletion_timestamp = Some(time(SOON));
        assert!(work_of(p, &objects(|_| {}), SOON).is_empty());
        assert!(
            work_of(
                pod("q", Some("10.0.0.8"), &["example.com/x"], json!([])),
                &objects(|_| {}),
                SOON
            )
            .is_empty()
        );
    }

    #[test]
    fn binding_by_name_only() {
        let o = objects(|o| {
            let b = Arc::make_mut(&mut o.bindings[0]);
            b.spec.target_group_arn = None;
            b.spec.target_group_name = Some("tg-name".into());
        });
        let works = work_of(pod("p", Some("10.0.0.7"), &[GATE], json!([])), &o, SOON);
        assert!(
            matches!(&works[0], Work::Describe { group: TargetGroup::Name(n), .. } if n == "tg-name")
        );
    }

    #[test]
    fn thousand_pods_over_fifty_target_groups_need_fifty_calls() {
        let mut o = objects(|o| o.bindings.clear());
        for g in 0..50 {
            let mut b: TargetGroupBinding = serde_json::from_str(BINDING).unwrap();
            b.metadata.name = Some(format!("tgb-{g}"));
            b.spec.target_group_arn = Some(format!("arn:tg/{g}"));
            o.bindings.push(Arc::new(b));
        }
        let pods: Vec<Arc<Pod>> = (0..1000)
            .map(|i| {
                let gate = format!("{PREFIX}/tgb-{}", i % 50);
                Arc::new(pod(
                    &format!("p{i}"),
                    Some(&format!("10.0.{}.{}", i / 250, i % 250)),
                    &[&gate],
                    json!([]),
                ))
            })
            .collect();
        let pending = pending_gates(&pods, &o, no_node, &settings(), &time(SOON));
        assert_eq!(pending.len(), 1000);
        let groups = group_by_target_group(&pending);
        assert_eq!(
            groups.len(),
            50,
            "one DescribeTargetHealth per target group"
        );
        assert!(groups.values().all(|targets| targets.len() == 20));
    }
}
