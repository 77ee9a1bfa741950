//! The AWS Load Balancer Controller's `TargetGroupBinding`, and the pure rules that tie a
//! binding to its Service, to the pods behind it and to its target group's deregistration delay.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::networking::v1::{Ingress, IngressServiceBackend};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::elb::{LoadBalancerKind, TargetGroup};

/// `elbv2.k8s.aws/v1beta1` TargetGroupBinding, reduced to the fields gracegate reads.
///
/// Fields are optional wherever the CRD allows it, and `targetType` stays a string: a reflector
/// fails its whole list when one object does not deserialise, so an unexpected value must not
/// be a parse error.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "elbv2.k8s.aws",
    version = "v1beta1",
    kind = "TargetGroupBinding",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupBindingSpec {
    #[serde(
        rename = "targetGroupARN",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_group_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_name: Option<String>,
    pub service_ref: ServiceReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct ServiceReference {
    pub name: String,
    pub port: IntOrString,
}

impl Default for ServiceReference {
    fn default() -> Self {
        ServiceReference {
            name: String::new(),
            port: IntOrString::Int(0),
        }
    }
}

/// How the load balancer reaches a pod behind a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetType {
    /// The target is the pod IP: the target's health is the pod's health.
    Ip,
    /// The target is a node. It stands for one pod only behind an
    /// `externalTrafficPolicy: Local` Service.
    Instance,
}

impl TargetGroupBinding {
    pub fn target_type(&self) -> Option<TargetType> {
        match self.spec.target_type.as_deref() {
            Some("ip") => Some(TargetType::Ip),
            Some("instance") => Some(TargetType::Instance),
            _ => None,
        }
    }

    /// The target group the binding names: its ARN when set, else its name.
    pub fn target_group(&self) -> Option<TargetGroup> {
        TargetGroup::from_reference(
            self.spec.target_group_arn.as_deref(),
            self.spec.target_group_name.as_deref(),
        )
    }
}

/// Annotation on an Ingress (or on a Service behind an ALB Ingress) with target group attributes.
pub const ALB_TARGET_GROUP_ATTRIBUTES: &str = "alb.ingress.kubernetes.io/target-group-attributes";
/// Annotation on a `type: LoadBalancer` Service (NLB) with target group attributes.
pub const NLB_TARGET_GROUP_ATTRIBUTES: &str =
    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes";
const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";

/// Whether `service` selects a pod with `labels`. A Service without a selector (or with an
/// empty one) selects nothing: its endpoints are managed by hand, not by pod labels.
pub fn selects(service: &Service, labels: &BTreeMap<String, String>) -> bool {
    match service.spec.as_ref().and_then(|s| s.selector.as_ref()) {
        Some(selector) if !selector.is_empty() => {
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        }
        _ => false,
    }
}

/// `externalTrafficPolicy: Local`: only then does a node target's health speak for the pods on it.
pub fn is_traffic_policy_local(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local")
}

/// The Service port a reference names: by `port` number or by port `name`.
pub fn service_port<'a>(service: &'a Service, port: &IntOrString) -> Option<&'a ServicePort> {
    let ports = service.spec.as_ref()?.ports.as_ref()?;
    ports.iter().find(|p| match port {
        IntOrString::Int(n) => p.port == *n,
        IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
    })
}

/// Where a deregistration delay was read from, for warnings and `plan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelaySource {
    Service(String),
    Ingress(String),
    /// The target group's own attribute, as the watcher last read it.
    TargetGroup(String),
}

impl std::fmt::Display for DelaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DelaySource::Service(name) => write!(f, "Service {name}"),
            DelaySource::Ingress(name) => write!(f, "Ingress {name}"),
            DelaySource::TargetGroup(name) => write!(f, "target group {name}"),
        }
    }
}

/// The kind of load balancer a binding serves, as the cluster objects say, for the time before
/// the watcher has described its target group (the facts win once they exist).
///
/// The AWS Load Balancer Controller labels the bindings it creates with its stack:
/// `<prefix>/stack-namespace` + `<prefix>/stack-name`, or `<prefix>/stack` for a stack without
/// a namespace (an explicit IngressGroup) (pkg/deploy/tracking/provider.go, `StackLabels`).
/// The prefix is `service.k8s.aws` for a Service (an NLB) and `ingress.k8s.aws` for an Ingress
/// (an ALB); the Gateway API model builders use `gateway.k8s.aws.nlb` / `gateway.k8s.aws.alb`.
/// A binding without those labels: the Service's `spec.loadBalancerClass` `service.k8s.aws/nlb`
/// (the controller's default class), or its `service.beta.kubernetes.io/aws-load-balancer-type`
/// `external` / `nlb-ip` (pkg/service/service_utils.go, `IsServiceSupported`) or `nlb` (the
/// in-tree cloud provider's NLB) says NLB.
pub fn origin_kind(binding: &TargetGroupBinding, service: &Service) -> Option<LoadBalancerKind> {
    let labels = binding.metadata.labels.as_ref();
    let has_stack = |prefix: &str| {
        labels.is_some_and(|l| {
            l.contains_key(&format!("{prefix}/stack"))
                || l.contains_key(&format!("{prefix}/stack-name"))
        })
    };
    if has_stack("service.k8s.aws") || has_stack("gateway.k8s.aws.nlb") {
        return Some(LoadBalancerKind::Network);
    }
    if has_stack("ingress.k8s.aws") || has_stack("gateway.k8s.aws.alb") {
        return Some(LoadBalancerKind::Application);
    }
    let class = service
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref());
    let lb_type = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("service.beta.kubernetes.io/aws-load-balancer-type"))
        .map(|t| t.trim());
    if class == Some("service.k8s.aws/nlb")
        || matches!(lb_type, Some("external" | "nlb-ip" | "nlb"))
    {
        return Some(LoadBalancerKind::Network);
    }
    None
}

/// The deregistration delay configured for a binding's target group, as the Load Balancer
/// Controller would apply it: the Service's own annotation wins over the Ingress's (LBC merges
/// service-level ALB annotations over ingress-level ones).
///
/// Returns `None` when nothing says: the caller then falls back to its default.
pub fn deregistration_delay<'a>(
    binding: &TargetGroupBinding,
    service: &Service,
    ingresses: impl IntoIterator<Item = &'a Ingress>,
) -> Option<(u32, DelaySource)> {
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let annotations = service.metadata.annotations.as_ref();
    for key in [NLB_TARGET_GROUP_ATTRIBUTES, ALB_TARGET_GROUP_ATTRIBUTES] {
        if let Some(d) = annotations
            .and_then(|a| a.get(key))
            .and_then(|v| parse_deregistration_delay(v))
        {
            return Some((d, DelaySource::Service(service_name)));
        }
    }
    let bound_port = service_port(service, &binding.spec.service_ref.port)?.port;
    ingresses
        .into_iter()
        .filter(|ing| routes_to(ing, service, bound_port))
        .find_map(|ing| {
            let value = ing
                .metadata
                .annotations
                .as_ref()?
                .get(ALB_TARGET_GROUP_ATTRIBUTES)?;
            let d = parse_deregistration_delay(value)?;
            Some((
                d,
                DelaySource::Ingress(ing.metadata.name.clone().unwrap_or_default()),
            ))
        })
}

/// Whether `ingress` routes to `service` on its port numbered `port` (a backend may name the
/// Service port by number or by name).
pub fn routes_to(ingress: &Ingress, service: &Service, port: i32) -> bool {
    let name = service.metadata.name.as_deref().unwrap_or_default();
    ingress_backends(ingress).any(|b| {
        b.name == name
            && b.port.as_ref().is_some_and(|p| match (&p.number, &p.name) {
                (Some(n), _) => *n == port,
                (None, Some(port_name)) => {
                    service_port(service, &IntOrString::String(port_name.clone()))
                        .is_some_and(|sp| sp.port == port)
                }
                (None, None) => false,
            })
    })
}

/// Every Service backend an Ingress routes to: the default backend and each rule path.
pub fn ingress_backends(ingress: &Ingress) -> impl Iterator<Item = &IngressServiceBackend> {
    let spec = ingress.spec.as_ref();
    let default = spec
        .and_then(|s| s.default_backend.as_ref())
        .and_then(|b| b.service.as_ref());
    let rules = spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.http.as_ref())
        .flat_map(|h| h.paths.iter())
        .filter_map(|p| p.backend.service.as_ref());
    default.into_iter().chain(rules)
}

/// `deregistration_delay.timeout_seconds=N` out of a comma-separated attribute list.
pub fn parse_deregistration_delay(attributes: &str) -> Option<u32> {
    attributes.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == DEREGISTRATION_DELAY)
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::service_stack(&[("service.k8s.aws/stack-namespace", "web"), ("service.k8s.aws/stack-name", "web")], None, None, Some(LoadBalancerKind::Network))]
    #[case::service_stack_older(&[("service.k8s.aws/stack", "web/web")], None, None, Some(LoadBalancerKind::Network))]
    #[case::ingress_stack(&[("ingress.k8s.aws/stack-namespace", "web"), ("ingress.k8s.aws/stack-name", "web")], None, None, Some(LoadBalancerKind::Application))]
    #[case::ingress_group(&[("ingress.k8s.aws/stack", "shared")], None, None, Some(LoadBalancerKind::Application))]
    #[case::gateway_nlb(&[("gateway.k8s.aws.nlb/stack-name", "gw")], None, None, Some(LoadBalancerKind::Network))]
    #[case::gateway_alb(&[("gateway.k8s.aws.alb/stack-name", "gw")], None, None, Some(LoadBalancerKind::Application))]
    #[case::class(&[], Some("service.k8s.aws/nlb"), None, Some(LoadBalancerKind::Network))]
    #[case::type_external(&[], None, Some("external"), Some(LoadBalancerKind::Network))]
    #[case::type_nlb_ip(&[], None, Some("nlb-ip"), Some(LoadBalancerKind::Network))]
    #[case::type_nlb(&[], None, Some("nlb"), Some(LoadBalancerKind::Network))]
    #[case::other_class(&[], Some("example.com/lb"), None, None)]
    #[case::nothing(&[("app", "web")], None, None, None)]
    // The binding's own labels beat the Service's hints.
    #[case::labels_first(&[("ingress.k8s.aws/stack", "shared")], None, Some("external"), Some(LoadBalancerKind::Application))]
    fn kind_from_the_cluster_objects(
        #[case] labels: &[(&str, &str)],
        #[case] class: Option<&str>,
        #[case] lb_type: Option<&str>,
        #[case] want: Option<LoadBalancerKind>,
    ) {
        let mut binding = TargetGroupBinding::new("web", Default::default());
        binding.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let service = Service {
            metadata: kube::api::ObjectMeta {
                annotations: lb_type.map(|t| {
                    [(
                        "service.beta.kubernetes.io/aws-load-balancer-type".to_string(),
                        t.to_string(),
                    )]
                    .into()
                }),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                load_balancer_class: class.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(origin_kind(&binding, &service), want);
    }

    #[rstest]
    #[case("deregistration_delay.timeout_seconds=30", Some(30))]
    #[case(
        "stickiness.enabled=true, deregistration_delay.timeout_seconds = 5",
        Some(5)
    )]
    #[case("stickiness.enabled=true", None)]
    #[case("deregistration_delay.timeout_seconds=abc", None)]
    #[case("deregistration_delay.timeout_seconds=-1", None)]
    #[case("", None)]
    fn parses_deregistration_delay(#[case] value: &str, #[case] expected: Option<u32>) {
        assert_eq!(parse_deregistration_delay(value), expected);
    }

    #[test]
    fn target_type_is_lenient() {
        let mut b = TargetGroupBinding::new("b", TargetGroupBindingSpec::default());
        assert_eq!(b.target_type(), None);
        b.spec.target_type = Some("ip".into());
        assert_eq!(b.target_type(), Some(TargetType::Ip));
        b.spec.target_type = Some("instance".into());
        assert_eq!(b.target_type(), Some(TargetType::Instance));
        b.spec.target_type = Some("alb".into());
        assert_eq!(b.target_type(), None);
    }
}
