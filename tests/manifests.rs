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
    // Drain wait: the waiter's init container runs gracegate's own image, read from the pod at
    // start (POD_NAME); the binary's fallback is the image these manifests name.
    assert!(env.contains(&"POD_NAME"), "{env:?}");
    assert!(!env.contains(&"GRACEGATE_WAITER_IMAGE"), "{env:?}");
    assert_eq!(
        container["image"],
        gracegate::inject::waiter::DEFAULT_IMAGE,
        "manifests/base/kustomization.yaml's image and the binary's version disagree"
    );
    // The waiters' CA bundle (--drain-wait-ca's default: ca.crt beside --tls-cert) is in the
    // mounted TLS Secret: the Deployment mounts the whole Secret where --tls-cert points.
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .unwrap();
    let tls_cert = format!(
        "--tls-cert={}/tls.crt",
        mount["mountPath"].as_str().unwrap()
    );
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&tls_cert.into()),
        "{container}"
    );
    assert!(mount.get("subPath").is_none(), "{mount}");
    // The leader records DrainReleased (and the gate events) on pods.
    assert!(
        cluster_role["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"]
                .as_array()
                .unwrap()
                .contains(&"events".into())
                && r["verbs"].as_array().unwrap().contains(&"create".into())
        }),
        "{cluster_role}"
    );
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

/// The drain-wait NetworkPolicy examples render and open the port gracegate's Service sends
/// the waiters' asks to, and DNS for the application side.
#[test]
fn drain_wait_network_policies_render() {
    let base = kustomize(&root().join("manifests/base"));
    let service = find(&base, "Service", "gracegate");
    let https = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "https")
        .unwrap();
    assert_eq!(https["port"], 443, "--drain-wait-url's default port");
    let deployment = find(&base, "Deployment", "gracegate");
    let port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == https["targetPort"])
        .unwrap()["containerPort"]
        .clone();

    let docs = kustomize(&root().join("manifests/networkpolicy"));
    let ingress = find(&docs, "NetworkPolicy", "gracegate");
    assert_eq!(ingress["metadata"]["namespace"], "gracegate-system");
    assert_eq!(ingress["spec"]["ingress"][0]["ports"][0]["port"], port);
    assert!(
        ingress["spec"]["ingress"][0].get("from").is_none(),
        "the API server must reach it"
    );
    let egress = find(&docs, "NetworkPolicy", "gracegate-drain-wait");
    let rules = egress["spec"]["egress"].as_array().unwrap();
    assert_eq!(rules[0]["ports"][0]["port"], port);
    assert_eq!(
        rules[0]["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "gracegate-system"
    );
    assert!(
        rules[1]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["port"] == 53)
    );
}
