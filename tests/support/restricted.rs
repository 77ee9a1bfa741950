//! The Pod Security Standards' `restricted` profile, as the API server's pod-security admission
//! enforces it (kubernetes/kubernetes `staging/src/k8s.io/pod-security-admission/policy/`):
//! the checks of the `baseline` level that a pod spec can fail, and the restricted ones
//! (`check_restrictedVolumes.go`, `check_allowPrivilegeEscalation.go`,
//! `check_runAsNonRoot.go`, `check_runAsUser.go`, `check_seccompProfile_restricted.go`,
//! `check_capabilities_restricted.go`). Every container counts: init, regular and ephemeral.
//! A test helper: `Err` lists every violation.

use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};

/// Volume types the restricted profile allows (`check_restrictedVolumes.go`).
const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

pub fn check(pod: &Pod) -> Result<(), Vec<String>> {
    let mut violations = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let pod_sc = spec.security_context.clone().unwrap_or_default();

    // Host namespaces (baseline, check_hostNamespaces.go).
    for (on, what) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if on == Some(true) {
            violations.push(format!("{what}=true"));
        }
    }
    // Volumes: only the listed types (restricted).
    for v in spec.volumes.iter().flatten() {
        let value = serde_json::to_value(v).unwrap();
        let kinds: Vec<&String> = value
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        for kind in kinds {
            if !ALLOWED_VOLUMES.contains(&kind.as_str()) {
                violations.push(format!("volume {} has restricted type {kind}", v.name));
            }
        }
    }
    // Pod-level runAsUser 0 and seccomp Unconfined are violations on their own.
    if pod_sc.run_as_user == Some(0) {
        violations.push("pod runAsUser=0".into());
    }
    let pod_seccomp = pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    if matches!(pod_seccomp, Some(t) if t != "RuntimeDefault" && t != "Localhost") {
        violations.push(format!("pod seccompProfile {}", pod_seccomp.unwrap()));
    }

    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        container(
            c,
            pod_sc.run_as_non_root,
            pod_seccomp.is_some(),
            &mut violations,
        );
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        let as_container: Container =
            serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap();
        container(
            &as_container,
            pod_sc.run_as_non_root,
            pod_seccomp.is_some(),
            &mut violations,
        );
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

fn container(
    c: &Container,
    pod_non_root: Option<bool>,
    pod_seccomp: bool,
    violations: &mut Vec<String>,
) {
    let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
    let name = &c.name;
    // Baseline: privileged, host ports, added capabilities beyond the baseline set.
    if sc.privileged == Some(true) {
        violations.push(format!("{name}: privileged"));
    }
    for p in c.ports.iter().flatten() {
        if p.host_port.is_some_and(|h| h != 0) {
            violations.push(format!("{name}: hostPort"));
        }
    }
    if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        violations.push(format!("{name}: procMount"));
    }
    // Restricted: allowPrivilegeEscalation must be false, explicitly.
    if sc.allow_privilege_escalation != Some(false) {
        violations.push(format!("{name}: allowPrivilegeEscalation not false"));
    }
    // runAsNonRoot: true on the container, or on the pod and not false on the container.
    match (sc.run_as_non_root, pod_non_root) {
        (Some(true), _) | (None, Some(true)) => {}
        _ => violations.push(format!("{name}: runAsNonRoot not true")),
    }
    if sc.run_as_user == Some(0) {
        violations.push(format!("{name}: runAsUser=0"));
    }
    // seccomp: RuntimeDefault or Localhost, on the container or inherited from the pod.
    match sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
        Some("RuntimeDefault" | "Localhost") => {}
        None if pod_seccomp => {}
        other => violations.push(format!("{name}: seccompProfile {other:?}")),
    }
    // Capabilities: drop ALL; add at most NET_BIND_SERVICE.
    let caps = sc.capabilities.unwrap_or_default();
    if !caps.drop.iter().flatten().any(|c| c == "ALL") {
        violations.push(format!("{name}: capabilities do not drop ALL"));
    }
    for added in caps.add.iter().flatten() {
        if added != "NET_BIND_SERVICE" {
            violations.push(format!("{name}: adds capability {added}"));
        }
    }
}
