//! The load balancer's vocabulary, on the ground floor: every layer may use these words and
//! this module uses nothing of the crate.
//!
//! * [`TargetGroup`]: a target group, by ARN or by name; [`name_from_arn`].
//! * [`TargetId`]: a target as ELBv2 names it (an IP or an EC2 instance id, and a port);
//!   [`instance_id`] reads the id from a node's `providerID`.
//! * [`TargetState`], [`TargetHealth`]: what `DescribeTargetHealth` says of a target.
//! * [`LoadBalancerKind`], [`HealthCheck`], [`Facts`]: what `DescribeTargetGroups` and
//!   `DescribeTargetGroupAttributes` say of a target group.

use serde::{Deserialize, Serialize};

// === Target groups and targets ===

/// A target group, by ARN or (for bindings that only name it) by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetGroup {
    Arn(String),
    Name(String),
}

impl std::fmt::Display for TargetGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetGroup::Arn(arn) => f.write_str(arn),
            TargetGroup::Name(name) => f.write_str(name),
        }
    }
}

impl TargetGroup {
    /// The target group's name: from its ARN (`…:targetgroup/NAME/ID`), or `arn` when this
    /// is a name-only reference resolved to it.
    pub fn name(&self, arn: Option<&str>) -> String {
        match self {
            TargetGroup::Name(name) => name.clone(),
            TargetGroup::Arn(a) => name_from_arn(arn.unwrap_or(a)).unwrap_or(a).to_string(),
        }
    }

    /// The target group a binding (or any reference) names: its ARN when set, else its name.
    pub fn from_reference(arn: Option<&str>, name: Option<&str>) -> Option<TargetGroup> {
        match (arn, name) {
            (Some(arn), _) if !arn.is_empty() => Some(TargetGroup::Arn(arn.to_string())),
            (_, Some(name)) if !name.is_empty() => Some(TargetGroup::Name(name.to_string())),
            _ => None,
        }
    }
}

/// `arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID` → `NAME`.
pub fn name_from_arn(arn: &str) -> Option<&str> {
    let rest = arn.split_once(":targetgroup/")?.1;
    Some(rest.split('/').next()?).filter(|n| !n.is_empty())
}

/// A target as the ELB names it: an IP or an instance id, and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId {
    pub id: String,
    pub port: i32,
}

impl std::fmt::Display for TargetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.id, self.port)
    }
}

/// `aws:///eu-west-1a/i-0123456789abcdef0` → `i-0123456789abcdef0`.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let id = provider_id.strip_prefix("aws://")?.rsplit('/').next()?;
    id.starts_with("i-").then_some(id)
}

// === Target health ===

/// `DescribeTargetHealth`'s `TargetHealth.State`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    Initial,
    Healthy,
    Unhealthy,
    UnhealthyDraining,
    Unused,
    Draining,
    Unavailable,
    Other(String),
}

impl TargetState {
    pub fn from_wire(s: &str) -> TargetState {
        match s {
            "initial" => TargetState::Initial,
            "healthy" => TargetState::Healthy,
            "unhealthy" => TargetState::Unhealthy,
            "unhealthy.draining" => TargetState::UnhealthyDraining,
            "unused" => TargetState::Unused,
            "draining" => TargetState::Draining,
            "unavailable" => TargetState::Unavailable,
            other => TargetState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::UnhealthyDraining => "unhealthy.draining",
            TargetState::Unused => "unused",
            TargetState::Draining => "draining",
            TargetState::Unavailable => "unavailable",
            TargetState::Other(s) => s,
        }
    }
}

/// One target's health as the ELB reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetHealth {
    pub state: TargetState,
    pub reason: Option<String>,
    pub description: Option<String>,
}

impl TargetHealth {
    /// The ELB does not know the target (yet): `unused` with `Target.NotRegistered`.
    pub fn is_not_registered(&self) -> bool {
        self.reason.as_deref() == Some(REASON_TARGET_NOT_REGISTERED)
    }
}

/// The reason ELBv2 gives for a target it does not know (yet).
pub const REASON_TARGET_NOT_REGISTERED: &str = "Target.NotRegistered";

// === Target groups: kinds, health checks, attributes ===

/// The kind of load balancer a target group belongs to, from its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadBalancerKind {
    Application,
    Network,
    Gateway,
}

impl LoadBalancerKind {
    /// HTTP/HTTPS: application; TCP/UDP/TLS/TCP_UDP: network; GENEVE: gateway.
    pub fn from_protocol(protocol: &str) -> Option<LoadBalancerKind> {
        match protocol.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTPS" => Some(LoadBalancerKind::Application),
            "TCP" | "UDP" | "TLS" | "TCP_UDP" => Some(LoadBalancerKind::Network),
            "GENEVE" => Some(LoadBalancerKind::Gateway),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalancerKind::Application => "application",
            LoadBalancerKind::Network => "network",
            LoadBalancerKind::Gateway => "gateway",
        }
    }
}

impl std::fmt::Display for LoadBalancerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A target group's health check, as `DescribeTargetGroups` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

/// What the ELBv2 API says about a target group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Facts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address_type: Option<String>,
    pub health_check: HealthCheck,
    /// `deregistration_delay.timeout_seconds`: `D`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregistration_delay_seconds: Option<u32>,
    /// `slow_start.duration_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start_seconds: Option<u32>,
    /// `deregistration_delay.connection_termination.enabled` (NLB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_termination: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("HTTP", Some(LoadBalancerKind::Application))]
    #[case("https", Some(LoadBalancerKind::Application))]
    #[case("TCP", Some(LoadBalancerKind::Network))]
    #[case("UDP", Some(LoadBalancerKind::Network))]
    #[case("TLS", Some(LoadBalancerKind::Network))]
    #[case("TCP_UDP", Some(LoadBalancerKind::Network))]
    #[case("GENEVE", Some(LoadBalancerKind::Gateway))]
    #[case("SCTP", None)]
    #[case("", None)]
    fn load_balancer_from_protocol(#[case] p: &str, #[case] kind: Option<LoadBalancerKind>) {
        assert_eq!(LoadBalancerKind::from_protocol(p), kind);
    }

    #[test]
    fn states_round_trip() {
        for s in [
            "initial",
            "healthy",
            "unhealthy",
            "unhealthy.draining",
            "unused",
            "draining",
            "unavailable",
            "new-state",
        ] {
            assert_eq!(TargetState::from_wire(s).as_str(), s);
        }
    }

    #[rstest]
    #[case("aws:///us-west-2a/i-0123456789abcdef0", Some("i-0123456789abcdef0"))]
    #[case("aws:///i-0123", Some("i-0123"))]
    #[case("gce://project/zone/name", None)]
    #[case("aws:///us-west-2a/fargate-ip-10-0-0-1", None)]
    fn instance_ids(#[case] provider_id: &str, #[case] expected: Option<&str>) {
        assert_eq!(instance_id(provider_id), expected);
    }

    #[rstest]
    #[case(Some("arn:x"), Some("n"), Some(TargetGroup::Arn("arn:x".into())))]
    #[case(Some(""), Some("n"), Some(TargetGroup::Name("n".into())))]
    #[case(None, Some(""), None)]
    #[case(None, None, None)]
    fn a_reference_names_its_arn_first(
        #[case] arn: Option<&str>,
        #[case] name: Option<&str>,
        #[case] expected: Option<TargetGroup>,
    ) {
        assert_eq!(TargetGroup::from_reference(arn, name), expected);
    }
}
