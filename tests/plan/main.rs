//! `gracegate plan` as a user runs it: the binary, its text and its JSON.

use std::process::Command;

fn plan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gracegate"))
        .arg("plan")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn text_for_the_seed_numbers() {
    let (code, out, err) = plan(&["--deregistration-delay", "30", "--replicas", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "\
preStop sleep (S)                40s  (deregistration-delay)
terminationGracePeriodSeconds    70s  (S + 30s shutdown budget)
new target healthy after         75s  (application load balancer)
rollout                          2m50s  (2 wave(s) of 2 pod(s); last old pod stops after 3m30s)

Risks:
  none found

Why:
  - S = 40s from the deregistration delay D = 30s (target group (from flags)): the load balancer keeps the old target draining for D, and the pod serves 10s more.
  - T = 70s: the 40s sleep plus a 30s shutdown budget for the app to finish after SIGTERM (a pod's own longer grace period is kept).
  - A new target turns healthy about 75s after registration: 5 health checks 15s apart must pass; only then does its readiness gate turn True and the rollout move on.
  - The rollout replaces 2 pod(s) at a time (maxSurge 1 + maxUnavailable 1) in 2 wave(s) of about 85s (10s to start + 75s to turn healthy): about 2m50s. The last old pod stops serving 40s after its wave, about 3m30s from the start.
"
    );
}

#[test]
fn json_for_an_nlb_with_measured_drains() {
    let (code, out, err) = plan(&[
        "--load-balancer",
        "network",
        "--deregistration-delay",
        "30",
        "--measured-drain-p99",
        "118.4",
        "--measured-drains",
        "24",
        "--health-check-interval",
        "10",
        "--healthy-threshold",
        "2",
        "--replicas",
        "6",
        "--max-surge",
        "50%",
        "--max-unavailable",
        "0",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Measured drains are not cut at --max-prestop-seconds (120), only at 300.
    assert_eq!(v["prestopSeconds"], 124);
    assert_eq!(v["prestopSource"], "measured-drain");
    assert_eq!(v["terminationGracePeriodSeconds"], 154);
    assert_eq!(v["loadBalancer"], "network");
    assert_eq!(v["timeToHealthySeconds"], 20);
    assert_eq!(
        v["rollout"],
        serde_json::json!({ "replicas": 6, "maxSurge": 3, "maxUnavailable": 0, "batch": 3,
                            "waves": 2, "seconds": 60, "lastOldPodStopsSeconds": 184 })
    );
    assert_eq!(v["risks"][0]["severity"], "warn");
    assert!(
        v["risks"][0]["text"]
            .as_str()
            .unwrap()
            .contains("over --max-prestop-seconds 120: each replaced pod lingers 124s"),
        "{v:#}"
    );
    assert!(
        v["reasoning"][0]
            .as_str()
            .unwrap()
            .contains("p99 of 24 drains")
    );
    assert_eq!(v["notes"], serde_json::json!([]));
}

/// Nothing measured behind an NLB: the NLB default, not `D + 10`, and why.
#[rstest::rstest]
#[case::short_delay(&["--deregistration-delay", "5"], 135, "nlb-default", 165)]
#[case::no_delay(&[], 135, "nlb-default", 165)]
// D + 10 = 160 is capped at 120 (--max-prestop-seconds), under the NLB default.
#[case::delay_capped_below_the_default(&["--deregistration-delay", "150"], 135, "nlb-default", 165)]
#[case::nlb_default_off(&["--deregistration-delay", "5", "--nlb-prestop-seconds", "0"], 15, "deregistration-delay", 45)]
// Measured drains take an NLB below its default only from 20 of them.
#[case::few_measured_lower(&["--deregistration-delay", "5", "--measured-drain-p99", "20", "--measured-drains", "19"], 135, "nlb-default", 165)]
#[case::measured_lower(&["--deregistration-delay", "5", "--measured-drain-p99", "20", "--measured-drains", "20"], 25, "measured-drain", 55)]
fn unmeasured_nlb(#[case] extra: &[&str], #[case] s: u32, #[case] source: &str, #[case] t: u32) {
    let mut args = vec!["--load-balancer", "network", "-o", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = plan(&args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["prestopSeconds"], s, "{v:#}");
    assert_eq!(v["prestopSource"], source);
    assert_eq!(v["terminationGracePeriodSeconds"], t);
    if source == "nlb-default" {
        assert!(
            v["reasoning"][0]
                .as_str()
                .unwrap()
                .contains("the NLB default (--nlb-prestop-seconds)"),
            "{v:#}"
        );
    }
}

/// `gracegate plan --drain-mode wait`: S is the wait's deadline, and the plan says why.
#[rstest::rstest]
#[case::alb(&["--deregistration-delay", "30"], 300, 330)]
#[case::deadline_flag(&["--deregistration-delay", "30", "--drain-wait-max-seconds", "90"], 90, 120)]
#[case::nlb(&["--load-balancer", "network", "--deregistration-delay", "5"], 300, 330)]
fn drain_wait_plan(#[case] extra: &[&str], #[case] s: u32, #[case] t: u32) {
    let mut args = vec!["--drain-mode", "wait", "-o", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = plan(&args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["prestopSeconds"], s, "{v:#}");
    assert_eq!(v["prestopSource"], "drain-wait");
    assert_eq!(v["terminationGracePeriodSeconds"], t);
    let why = v["reasoning"][0].as_str().unwrap();
    assert!(
        why.contains("stops when its target leaves, at most"),
        "{why}"
    );
}

#[test]
fn a_bad_drain_mode_is_a_clear_error() {
    let (code, _, err) = plan(&["--drain-mode", "forever"]);
    assert_ne!(code, 0);
    assert!(err.contains("expected sleep or wait"), "{err}");
}

#[test]
fn contradicting_caps_are_a_clear_error() {
    let (code, _, err) = plan(&["--nlb-prestop-seconds", "400"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--nlb-prestop-seconds 400 is above --max-measured-prestop-seconds 300"),
        "{err}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let (code, out, err) = plan(&["--max-surge", "lots"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("\"lots\" is neither a count nor a percentage"),
        "{err}"
    );
    let (code, _, err) = plan(&["--from-cluster"]);
    assert_eq!(code, 2, "clap refuses it: {err}");
    assert!(err.contains("--namespace"), "{err}");
}

/// `plan --from-cluster`'s reads, against a tower-test API mock: only GETs, exactly these
/// paths, and the plan the webhook's rule gives for the Deployment's pod template.
mod from_cluster {
    use std::sync::{Arc, Mutex};

    use axum::http::{Method, Request, Response};
    use gracegate::plan::cluster::read;
    use gracegate::timing::TimingSettings;
    use http_body_util::BodyExt;
    use kube::client::Body;
    use serde_json::{Value, json};

    fn fixture(path: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({ "apiVersion": "v1", "kind": format!("{kind}List"), "metadata": { "resourceVersion": "1" }, "items": items })
    }

    /// The 2048 Deployment: the recorded pod's template, 4 replicas, maxSurge 1, maxUnavailable 0.
    fn deployment() -> Value {
        let pod = fixture("admission/create-deployment-pod.json")["request"]["object"].clone();
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "deployment-2048", "namespace": "game-2048" },
            "spec": {
                "replicas": 4,
                "selector": { "matchLabels": { "app.kubernetes.io/name": "app-2048" } },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } },
                "template": { "metadata": { "labels": pod["metadata"]["labels"] }, "spec": pod["spec"] },
            },
        })
    }

    /// The leader's records: 6 drains (p99 61 s) on an NLB target group checked every 10 s, 2 to healthy.
    fn records() -> Value {
        let drains: Vec<Value> = (0..6)
            .map(|n| json!({ "at": format!("2026-11-30T08:0{n}:00Z"), "drainSeconds": 50 + 2 * n + if n == 5 { 1 } else { 0 } }))
            .collect();
        let record = json!({
            "targetGroupArn": "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/k8s-game2048-service2-6f5e3c2a1b/0123456789abcdef",
            "facts": { "protocol": "TCP", "loadBalancer": "network",
                       "healthCheck": { "intervalSeconds": 10, "healthyThreshold": 2 }, "deregistrationDelaySeconds": 300 },
            "drains": drains,
        });
        json!({ "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "gracegate-target-groups", "namespace": "gracegate-system" },
                "data": { "k8s-game2048-service2-6f5e3c2a1b.0123456789abcdef": record.to_string() } })
    }

    /// `--drain-mode wait` plans the drain wait for the same workload: `S` is the deadline.
    #[rstest::rstest]
    #[case::sleep(gracegate::inject::DrainMode::Sleep, 135, "nlb-default", "AWS default")]
    // D = 300 drains longer than the wait's deadline: said, not hidden.
    #[case::drain_wait(
        gracegate::inject::DrainMode::Wait,
        300,
        "drain-wait",
        "the drain wait ends at 300s"
    )]
    #[tokio::test]
    async fn reads_only_and_plans_from_the_records(
        #[case] mode: gracegate::inject::DrainMode,
        #[case] s: u32,
        #[case] source: &str,
        #[case] risk: &str,
    ) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen: Arc<Mutex<Vec<(Method, String)>>> = Arc::default();
        let record = seen.clone();
        let server = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (method, path) = (request.method().clone(), request.uri().path().to_string());
                let _ = request.into_body().collect().await;
                record.lock().unwrap().push((method, path.clone()));
                let body = match path.as_str() {
                    "/apis/apps/v1/namespaces/game-2048/deployments/deployment-2048" => {
                        deployment()
                    }
                    "/api/v1/namespaces/game-2048" => fixture("cluster/namespace.json"),
                    "/api/v1/namespaces/game-2048/services" => {
                        list("Service", vec![fixture("cluster/service.json")])
                    }
                    "/apis/elbv2.k8s.aws/v1beta1/namespaces/game-2048/targetgroupbindings" => list(
                        "TargetGroupBinding",
                        vec![fixture("cluster/targetgroupbinding.json")],
                    ),
                    "/apis/networking.k8s.io/v1/namespaces/game-2048/ingresses" => {
                        list("Ingress", vec![])
                    }
                    "/api/v1/namespaces/gracegate-system/configmaps/gracegate-target-groups" => {
                        records()
                    }
                    other => panic!("unexpected request {other}"),
                };
                send.send_response(
                    Response::builder()
                        .status(200)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        let client = kube::Client::new(service, "default");
        let got = read(
            client,
            "game-2048",
            "deployment-2048",
            "gracegate-system",
            &TimingSettings::default(),
            &gracegate::inject::DrainSettings {
                mode,
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .unwrap();
        server.abort();

        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().all(|(m, _)| m == Method::GET),
            "read-only: {seen:?}"
        );
        assert_eq!(seen.len(), 6, "{seen:?}");
        // No Ingress: D is the target group's own 300 s, D + 10 capped at 120; the measured p99
        // (61 s) + 5 is smaller, and six drains of an NLB are too few to go below its default.
        // A drain wait stops when the target leaves, at most its deadline.
        assert_eq!(got.timing.prestop_seconds, s);
        assert_eq!(got.timing.prestop_source.as_str(), source);
        assert_eq!(
            (
                got.shape.replicas,
                got.shape.max_surge.as_str(),
                got.shape.max_unavailable.as_str()
            ),
            (4, "1", "0")
        );
        assert_eq!(
            got.load_balancer.kind,
            gracegate::elb::LoadBalancerKind::Network
        );
        assert_eq!(
            (
                got.load_balancer.health_check_interval_seconds,
                got.load_balancer.healthy_threshold
            ),
            (10, 2)
        );
        assert_eq!(
            got.load_balancer.measured.as_ref().map(|m| m.p99_seconds),
            Some(61.0)
        );
        let report = gracegate::plan::plan(
            &TimingSettings::default(),
            &got.load_balancer,
            &got.shape,
            Some(got.timing),
        )
        .unwrap();
        assert_eq!((report.rollout.waves, report.rollout.seconds), (4, 120));
        assert!(
            report.risks.iter().any(|r| r.text.contains(risk)),
            "{:#?}",
            report.risks
        );
    }
}
