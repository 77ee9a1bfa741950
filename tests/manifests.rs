//! The kustomize manifests as kubectl renders them (`kubectl kustomize`), checked for what
//! gracegate depends on. kubectl is on this project's machines; without it the test fails
//! with a message saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize DIR`, every document as JSON.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is needed to render the manifests (kubectl kustomize)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn base_renders_with_what_gracegate_needs() {
    let docs = kustomize(&root().join("manifests/base"));
    // The records ConfigMap: a Role in gracegate's own namespace, bound to its ServiceAccount.
    let role = find(&docs, "Role", "gracegate-target-groups");
    assert_eq!(role["metadata"]["namespace"], "gracegate-system");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(rules[0]["resourceNames"][0], "gracegate-target-groups");
    let binding = find(&docs, "RoleBinding", "gracegate-target-groups");
    assert_eq!(binding["subjects"][0]["name"], "gracegate");
    // Nothing in the ClusterRole may delete or update pods: the watcher only patches status.
    let cluster_role = find(&docs, "ClusterRole", "gracegate-webhook");
    for rule in cluster_role["rules"].as_array().unwrap() {
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if resources.contains(&"pods") {
            assert!(
                verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
                "{rule}"
            );
        }
    }
    let deployment = find(&docs, "Deployment", "gracegate");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "serve");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"POD_NAMESPACE"), "{env:?}");
    let webhook = find(&docs, "MutatingWebhookConfiguration", "gracegate");
    assert_eq!(webhook["webhooks"][0]["failurePolicy"], "Ignore");
}

#[test]
fn cert_manager_overlay_renders() {
    let docs = kustomize(&root().join("manifests/cert-manager"));
    let webhook = find(&docs, "MutatingWebhookConfiguration", "gracegate");
    assert!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].is_string(),
        "{webhook}"
    );
}

/// The monitoring component on top of the base, with and without the PodMonitor swap.
#[test]
fn monitoring_components_render() {
    let dir = root().join("target/manifests-test");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, components) in [
        ("servicemonitor", vec!["manifests/monitoring"]),
        (
            "podmonitor",
            vec!["manifests/monitoring", "manifests/monitoring/podmonitor"],
        ),
    ] {
        let overlay = dir.join(name);
        std::fs::create_dir_all(&overlay).unwrap();
        let relative = |p: &str| format!("../../../{p}");
        let text = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\ncomponents:\n{}",
            relative("manifests/base"),
            components
                .iter()
                .map(|c| format!("  - {}\n", relative(c)))
                .collect::<String>()
        );
        std::fs::write(overlay.join("kustomization.yaml"), text).unwrap();
        let docs = kustomize(&overlay);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert!(kinds.contains(&"PrometheusRule"), "{kinds:?}");
        match name {
            "podmonitor" => assert!(
                kinds.contains(&"PodMonitor") && !kinds.contains(&"ServiceMonitor"),
                "{kinds:?}"
            ),
            _ => assert!(kinds.contains(&"ServiceMonitor"), "{kinds:?}"),
        }
    }
}
