//! `gracegate audit` as a command: its exact (read-only) requests against kube-rs's tower-test
//! mock, golden table and JSON output, and the binary's exit codes and plugin name against a
//! fake API server over HTTP.

mod binary;
mod fake_api;

use std::path::{Path, PathBuf};

use clap::Parser;
use gracegate::audit::output::Format;
use gracegate::cli::{Cli, Command};
use serde_json::{Value, json};

pub use fake_api::*;

pub const NOW: &str = "2026-11-26T13:00:00Z";

pub fn fixture(path: &str) -> Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap()
}

/// The recorded pod of `deployment-2048` as created before the namespace was labelled: no
/// gate, no preStop, running.
pub fn old_pod(name: &str) -> Value {
    let mut pod = fixture("admission/create-deployment-pod.json")["request"]["object"].clone();
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["uid"] = json!(format!("uid-{name}"));
    pod["metadata"]["creationTimestamp"] = json!("2026-11-26T12:00:00Z");
    pod["status"] = json!({ "phase": "Running", "conditions": [
        { "type": "ContainersReady", "status": "True" }, { "type": "Ready", "status": "True" } ] });
    pod
}

/// The 2048 namespace with what a rollout will get wrong: the AWS default deregistration
/// delay, one replica that may go unavailable, no PDB, a pod from before the label, and the
/// AWS Load Balancer Controller's webhook.
pub fn risky_cluster() -> Vec<Value> {
    let mut ingress = fixture("cluster/ingress.json");
    ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-group-attributes"] =
        json!("deregistration_delay.timeout_seconds=300");
    let mut deployment = fixture("audit/deployment.json");
    deployment["spec"]["replicas"] = json!(1);
    deployment["spec"]["strategy"]["rollingUpdate"] = json!({ "maxUnavailable": 1, "maxSurge": 0 });
    vec![
        fixture("cluster/namespace.json"),
        fixture("cluster/service.json"),
        fixture("cluster/targetgroupbinding.json"),
        ingress,
        deployment,
        fixture("audit/replicaset.json"),
        old_pod("deployment-2048-689df87b6-old"),
        fixture("audit/lbc-mutatingwebhookconfiguration.json"),
    ]
}

pub fn args(extra: &[&str]) -> gracegate::cli::AuditArgs {
    let mut argv = vec!["gracegate", "audit"];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Audit(a) => a,
        _ => unreachable!(),
    }
}

async fn run(objects: Vec<Value>, extra: &[&str]) -> (String, i32, Vec<String>) {
    let api = MockApi::start(FakeApi::new(objects));
    let (text, code) = gracegate::audit::shell::run_with_client(
        api.client.clone(),
        &args(extra),
        NOW.parse().unwrap(),
    )
    .await
    .unwrap();
    (text, code, api.requests())
}

/// Every request, in order: GETs only, the namespace's lists, and the cluster-scoped webhook
/// configurations and gracegate's ConfigMap.
#[tokio::test]
async fn lists_exactly_what_it_reads_and_writes_nothing() {
    let (_, _, requests) = run(risky_cluster(), &["-n", "game-2048"]).await;
    let ns = "namespaces/game-2048";
    // kube-rs writes list parameters after a `?&`.
    let list = |path: &str| format!("GET {path}?&limit=500");
    assert_eq!(
        requests,
        vec![
            format!("GET /api/v1/{ns}"),
            list(&format!("/api/v1/{ns}/services")),
            list(&format!(
                "/apis/elbv2.k8s.aws/v1beta1/{ns}/targetgroupbindings"
            )),
            list(&format!("/apis/networking.k8s.io/v1/{ns}/ingresses")),
            list(&format!("/apis/policy/v1/{ns}/poddisruptionbudgets")),
            list(&format!("/apis/apps/v1/{ns}/deployments")),
            list(&format!("/apis/apps/v1/{ns}/statefulsets")),
            list(&format!("/apis/apps/v1/{ns}/daemonsets")),
            list(&format!("/apis/apps/v1/{ns}/replicasets")),
            list(&format!("/apis/argoproj.io/v1alpha1/{ns}/rollouts")),
            list(&format!("/api/v1/{ns}/pods")),
            list("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"),
            "GET /api/v1/namespaces/gracegate-system/configmaps/gracegate-target-groups"
                .to_string(),
        ]
    );
}

#[tokio::test]
async fn all_namespaces_lists_cluster_wide() {
    let (_, _, requests) = run(risky_cluster(), &["-A", "--gracegate-namespace", "gg"]).await;
    assert!(
        requests.iter().all(|r| r.starts_with("GET ")),
        "{requests:?}"
    );
    assert_eq!(requests[0], "GET /api/v1/namespaces?&limit=500");
    assert!(requests.contains(&"GET /apis/apps/v1/deployments?&limit=500".to_string()));
    assert!(requests.contains(&"GET /api/v1/pods?&limit=500".to_string()));
    assert_eq!(
        requests.last().unwrap(),
        "GET /api/v1/namespaces/gg/configmaps/gracegate-target-groups"
    );
    assert!(
        !requests.iter().any(|r| r.contains("namespaces/game-2048")),
        "{requests:?}"
    );
}

/// Lists come in pages of 500; a continue token asks for the next page.
#[tokio::test]
async fn follows_continue_tokens() {
    let mut objects = risky_cluster();
    for n in 0..3 {
        let mut p = old_pod(&format!("deployment-2048-689df87b6-p{n}"));
        p["metadata"]["uid"] = json!(format!("uid-p{n}"));
        objects.push(p);
    }
    let api = MockApi::start(FakeApi::new(objects).with_page_size(2));
    let (text, _) = gracegate::audit::shell::run_with_client(
        api.client.clone(),
        &args(&["-n", "game-2048", "-o", "json"]),
        NOW.parse().unwrap(),
    )
    .await
    .unwrap();
    let pods: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.contains("/pods"))
        .collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods[1].contains("continue="), "{pods:?}");
    let report: Value = serde_json::from_str(&text).unwrap();
    let without_gate = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "pods-without-gate")
        .unwrap();
    assert!(
        without_gate["reason"]
            .as_str()
            .unwrap()
            .starts_with("4 of 4 running pods"),
        "{without_gate}"
    );
}

/// The records in gracegate's ConfigMap size `S` and feed the NLB check: drains size `S` up
/// to --max-measured-prestop-seconds (300), so only a longer one is a risk.
#[tokio::test]
async fn reads_the_target_group_records() {
    let arn = fixture("cluster/targetgroupbinding.json")["spec"]["targetGroupARN"].clone();
    let drains: Vec<Value> = (0..6)
        .map(|n| json!({ "at": format!("2026-11-26T12:5{n}:00Z"), "drainSeconds": 320.0 }))
        .collect();
    let record = json!({ "targetGroupArn": arn, "facts": { "protocol": "TCP", "loadBalancer": "network" },
                         "drains": drains });
    let mut objects = risky_cluster();
    objects.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "gracegate-target-groups", "namespace": "gracegate-system" },
        "data": { "k8s-game2048-service2-6f5e3c2a1b.0123456789abcdef": record.to_string() },
    }));
    let (text, _, _) = run(objects, &["-n", "game-2048", "-o", "json"]).await;
    let report: Value = serde_json::from_str(&text).unwrap();
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "nlb-drain-longer-than-prestop"),
        "{report:#}"
    );
}

#[tokio::test]
async fn missing_crds_and_forbidden_optional_lists_are_not_errors() {
    let api = MockApi::start(
        FakeApi::new(vec![fixture("cluster/namespace.json")])
            .forbid("mutatingwebhookconfigurations")
            .forbid("configmaps")
            .missing("targetgroupbindings"),
    );
    let (text, code) = gracegate::audit::shell::run_with_client(
        api.client.clone(),
        &args(&["-n", "game-2048", "--fail-on", "warn"]),
        NOW.parse().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert!(text.starts_with("No findings: 0 workload(s)"), "{text}");
}

#[tokio::test]
async fn forbidden_required_list_is_a_clear_error() {
    let api = MockApi::start(FakeApi::new(risky_cluster()).forbid("pods"));
    let error = gracegate::audit::shell::run_with_client(
        api.client.clone(),
        &args(&["-n", "game-2048"]),
        NOW.parse().unwrap(),
    )
    .await
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.starts_with("listing pods (audit needs get/list on it"),
        "{message}"
    );
}

#[rstest::rstest]
#[case(&[], 0)]
#[case(&["--fail-on", "risk"], 3)]
#[case(&["--fail-on", "warn"], 3)]
#[tokio::test]
async fn exit_code_follows_fail_on(#[case] extra: &[&str], #[case] expected: i32) {
    let mut argv = vec!["-n", "game-2048"];
    argv.extend_from_slice(extra);
    let (_, code, _) = run(risky_cluster(), &argv).await;
    assert_eq!(code, expected);
}

#[tokio::test]
async fn warnings_only_do_not_fail_on_risk() {
    // The fixed cluster keeps only warnings: AWS default delay (its S is capped) and the LBC.
    let mut objects = risky_cluster();
    objects
        .retain(|o| o["kind"] != "Pod" && o["kind"] != "Deployment" && o["kind"] != "ReplicaSet");
    let mut d = fixture("audit/deployment.json");
    d["spec"]["replicas"] = json!(3);
    objects.push(d);
    objects.push(fixture("audit/pdb.json"));
    let (_, code, _) = run(objects.clone(), &["-n", "game-2048", "--fail-on", "risk"]).await;
    assert_eq!(code, 0);
    let (_, code, _) = run(objects, &["-n", "game-2048", "--fail-on", "warn"]).await;
    assert_eq!(code, 3);
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audit/golden")
        .join(name)
}

/// Compare with the stored output; `GRACEGATE_BLESS=1` rewrites it.
fn assert_golden(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var_os("GRACEGATE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{name} differs from {} (GRACEGATE_BLESS=1 to accept):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[rstest::rstest]
#[case(Format::Table, "risky.txt")]
#[case(Format::Json, "risky.json")]
#[case(Format::Yaml, "risky.yaml")]
#[tokio::test]
async fn golden_output(#[case] format: Format, #[case] file: &str) {
    let output = match format {
        Format::Table => "table",
        Format::Json => "json",
        Format::Yaml => "yaml",
    };
    let (text, _, _) = run(risky_cluster(), &["-n", "game-2048", "-o", output]).await;
    assert_golden(file, &text);
}

/// JSON and YAML are the same report.
#[tokio::test]
async fn yaml_and_json_agree() {
    let (json_text, _, _) = run(risky_cluster(), &["-n", "game-2048", "-o", "json"]).await;
    let (yaml_text, _, _) = run(risky_cluster(), &["-n", "game-2048", "-o", "yaml"]).await;
    let from_json: Value = serde_json::from_str(&json_text).unwrap();
    let from_yaml: Value = serde_saphyr::from_str(&yaml_text).unwrap();
    assert_eq!(from_json, from_yaml);
    assert_eq!(from_json["apiVersion"], "gracegate.io/v1alpha1");
    assert_eq!(from_json["kind"], "AuditReport");
}

/// manifests/audit-rbac.yaml allows every request audit makes, and only get/list.
#[tokio::test]
async fn the_documented_cluster_role_covers_every_request() {
    let role: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/audit-rbac.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let rules = role["rules"].as_array().unwrap();
    let allowed = |group: &str, resource: &str, verb: &str, name: Option<&str>| {
        rules.iter().any(|r| {
            let has = |field: &str, v: &str| r[field].as_array().unwrap().iter().any(|x| x == v);
            has("apiGroups", group)
                && has("resources", resource)
                && has("verbs", verb)
                && r.get("resourceNames").is_none_or(|n| {
                    name.is_some_and(|name| n.as_array().unwrap().iter().any(|x| x == name))
                })
        })
    };
    for rule in rules {
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(verb == "get" || verb == "list", "{rule}");
        }
    }
    let (_, _, mut requests) = run(risky_cluster(), &["-n", "game-2048"]).await;
    let (_, _, all) = run(risky_cluster(), &["-A"]).await;
    requests.extend(all);
    for request in requests {
        let path = request
            .trim_start_matches("GET ")
            .split('?')
            .next()
            .unwrap();
        let (group, rest) = match path.strip_prefix("/api/v1/") {
            Some(rest) => ("", rest),
            None => {
                let r = path.strip_prefix("/apis/").unwrap();
                let mut p = r.splitn(3, '/');
                (p.next().unwrap(), {
                    p.next();
                    p.next().unwrap()
                })
            }
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let (resource, name) = match segments.as_slice() {
            ["namespaces", _, resource, name] => (*resource, Some(*name)),
            ["namespaces", _, resource] => (*resource, None),
            [resource, name] => (*resource, Some(*name)),
            [resource] => (*resource, None),
            _ => panic!("{path}"),
        };
        let verb = if name.is_some() { "get" } else { "list" };
        assert!(
            allowed(group, resource, verb, name),
            "not allowed by audit-rbac.yaml: {request}"
        );
    }
}
