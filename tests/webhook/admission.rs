//! Every recorded review through the real router: apply the returned patch to the request's
//! pod, read the result as a `k8s_openapi` Pod, compare it with the expected pod, then review
//! the patched pod again and expect nothing more to add.

use gracegate::inject::{PrestopAction, Settings};
use k8s_openapi::api::core::v1::{
    ExecAction, Lifecycle, LifecycleHandler, Pod, PodReadinessGate, SleepAction,
};
use rstest::rstest;
use serde_json::{Value, json};

use crate::common::{Answer, context, post, review};

const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";

struct Expected {
    gates: &'static [&'static str],
    /// Containers that get a preStop of this many seconds.
    prestops: &'static [(&'static str, i32)],
    grace: Option<i64>,
    /// Each warning, by a part of its text.
    warnings: &'static [&'static str],
    /// `gracegate.io/prestop-source`, when S shaped the pod.
    source: Option<&'static str>,
}

const UNCHANGED: Expected = Expected {
    gates: &[],
    prestops: &[],
    grace: None,
    warnings: &[],
    source: None,
};

fn handler(action: PrestopAction, seconds: i32) -> LifecycleHandler {
    match action {
        PrestopAction::Sleep => LifecycleHandler {
            sleep: Some(SleepAction {
                seconds: seconds.into(),
            }),
            ..Default::default()
        },
        PrestopAction::Exec => LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("sleep {seconds}"),
                ]),
            }),
            ..Default::default()
        },
    }
}

/// The request's pod with `expected` applied by hand, in typed code.
fn expected_pod(original: &Value, expected: &Expected, action: PrestopAction) -> Pod {
    let mut pod: Pod = serde_json::from_value(original.clone()).unwrap();
    let spec = pod.spec.as_mut().unwrap();
    for gate in expected.gates {
        spec.readiness_gates
            .get_or_insert_with(Vec::new)
            .push(PodReadinessGate {
                condition_type: gate.to_string(),
            });
    }
    for (name, seconds) in expected.prestops {
        let container = spec
            .containers
            .iter_mut()
            .find(|c| c.name == *name)
            .unwrap();
        container
            .lifecycle
            .get_or_insert_with(Lifecycle::default)
            .pre_stop = Some(handler(action, *seconds));
    }
    if let Some(grace) = expected.grace {
        spec.termination_grace_period_seconds = Some(grace);
    }
    if let Some(source) = expected.source {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("gracegate.io/prestop-source".into(), source.into());
    }
    pod
}

async fn check(fixture: &str, expected: Expected, settings: Settings) {
    check_in(fixture, expected, context(settings)).await;
}

async fn check_in(fixture: &str, expected: Expected, context: gracegate::webhook::Context) {
    let action = context.settings.prestop_action;
    let request = review(fixture);
    let (status, body) = post(&context, serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = Answer::parse(&request, &body);

    let original = request["request"]["object"].clone();
    let mut patched = original.clone();
    if let Some(patch) = answer.patch() {
        json_patch::patch(&mut patched, &patch.0).unwrap();
    }
    let got: Pod = serde_json::from_value(patched.clone()).unwrap();
    assert_eq!(got, expected_pod(&original, &expected, action));

    let warnings = answer.warnings();
    assert_eq!(warnings.len(), expected.warnings.len(), "{warnings:#?}");
    for (got, want) in warnings.iter().zip(expected.warnings) {
        assert!(got.contains(want), "warning {got:?} should say {want:?}");
        assert!(
            got.len() <= 256,
            "the API server truncates longer warnings: {got}"
        );
    }

    // Reinvocation: the webhook on its own output adds nothing.
    let mut again = request.clone();
    again["request"]["object"] = patched;
    let (status, body) = post(&context, serde_json::to_vec(&again).unwrap()).await;
    assert_eq!(status, 200);
    let answer = Answer::parse(&again, &body);
    assert!(
        answer.patch().is_none(),
        "second pass patched: {:?}",
        answer.response
    );
}

#[rstest]
#[case::deployment_pod("create-deployment-pod.json", Expected {
    gates: &[GATE],
    prestops: &[("app-2048", 40), ("log-shipper", 40)],
    grace: Some(70),
    source: Some("deregistration-delay"),
    warnings: &["terminationGracePeriodSeconds raised from 30 to 70"],
})]
#[case::large_pod("create-deployment-pod-large.json", Expected {
    gates: &[GATE],
    prestops: &[("http", 40), ("grpc-gateway", 40), ("otel-agent", 40)],
    grace: Some(70),
    source: Some("deregistration-delay"),
    warnings: &["raised from 30 to 70"],
})]
// A dry run is mutated exactly like a real create, so `--dry-run=server -o yaml` shows it.
#[case::dry_run("create-pod-dry-run.json", Expected {
    gates: &[GATE],
    prestops: &[("app", 40)],
    grace: Some(70),
    source: Some("deregistration-delay"),
    warnings: &["raised from 30 to 70"],
})]
// The legacy gate stays, the new one is appended; nginx keeps its own (too short) preStop;
// the pod's annotation sets S = 25, so T = 25 + 30.
#[case::legacy_gate_own_prestop("create-pod-legacy-gate-own-prestop.json", Expected {
    gates: &[GATE],
    prestops: &[("metrics", 25)],
    grace: Some(55),
    source: Some("annotation"),
    warnings: &["container nginx: its own preStop sleeps 5s, shorter than the 25s", "raised from 10 to 55"],
})]
// The native sidecar and the init container are left alone; the app's own 15 s sleep is kept.
#[case::sidecar_native_sleep("create-pod-sidecar-native-sleep.json", Expected {
    gates: &[GATE],
    prestops: &[],
    grace: Some(70),
    source: Some("deregistration-delay"),
    warnings: &["container app: its own preStop sleeps 15s, shorter than the 40s", "raised from 30 to 70"],
})]
#[case::opted_out("create-pod-opted-out.json", UNCHANGED)]
#[case::unmatched_labels("create-pod-unmatched-labels.json", UNCHANGED)]
#[case::update("update-pod-labels.json", UNCHANGED)]
#[tokio::test]
async fn recorded_reviews(#[case] fixture: &str, #[case] expected: Expected) {
    check(fixture, expected, Settings::default()).await;
}

#[tokio::test]
async fn exec_prestop_for_older_api_servers() {
    let settings = Settings {
        prestop_action: PrestopAction::Exec,
        ..Settings::default()
    };
    let expected = Expected {
        gates: &[GATE],
        prestops: &[("app-2048", 40), ("log-shipper", 40)],
        grace: Some(70),
        source: Some("deregistration-delay"),
        warnings: &["raised from 30 to 70"],
    };
    check("create-deployment-pod.json", expected, settings).await;
}

#[tokio::test]
async fn own_condition_prefix() {
    let settings = Settings {
        condition_prefix: "gracegate.io".into(),
        ..Settings::default()
    };
    let expected = Expected {
        gates: &["gracegate.io/k8s-game2048-service2-6f5e3c2a1b"],
        prestops: &[("app-2048", 40), ("log-shipper", 40)],
        grace: Some(70),
        source: Some("deregistration-delay"),
        warnings: &["raised from 30 to 70"],
    };
    check("create-deployment-pod.json", expected, settings).await;
}

#[tokio::test]
async fn namespace_without_the_label_is_left_alone() {
    let settings = Settings {
        namespace_label: ("team".into(), "web".into()),
        ..Settings::default()
    };
    check("create-deployment-pod.json", UNCHANGED, settings).await;
}

#[tokio::test]
async fn compact_json_as_the_api_server_sends_it() {
    // The recordings are pretty-printed; the API server sends compact JSON. Same answer.
    let context = context(Settings::default());
    let request = review("create-deployment-pod.json");
    let (_, pretty) = post(
        &context,
        crate::common::review_bytes("create-deployment-pod.json"),
    )
    .await;
    let (_, compact) = post(&context, serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(pretty, compact);
}

#[tokio::test]
async fn metrics_count_outcomes() {
    let context = context(Settings::default());
    post(
        &context,
        serde_json::to_vec(&review("create-deployment-pod.json")).unwrap(),
    )
    .await;
    post(
        &context,
        serde_json::to_vec(&review("update-pod-labels.json")).unwrap(),
    )
    .await;
    post(&context, "{").await;
    let text = context.metrics.encode();
    for line in [
        r#"gracegate_admission_requests_total{outcome="patched"} 1"#,
        r#"gracegate_admission_requests_total{outcome="unchanged"} 1"#,
        r#"gracegate_admission_requests_total{outcome="rejected"} 1"#,
        "gracegate_admission_duration_seconds_count 3",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn the_example_objects_of_make_run_give_the_same_answer() {
    use gracegate::cluster::{Cluster, Objects};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/objects");
    let mut from_examples = context(Settings::default());
    from_examples.cluster = Cluster::from_objects(Objects::load_dir(&dir).unwrap());
    let body = serde_json::to_vec(&review("create-deployment-pod.json")).unwrap();
    let (_, expected) = post(&context(Settings::default()), body.clone()).await;
    let (_, got) = post(&from_examples, body).await;
    assert_eq!(
        String::from_utf8(got).unwrap(),
        String::from_utf8(expected).unwrap()
    );
}

/// The `gracegate-target-groups` ConfigMap as the leader writes it, for the 2048 binding's
/// target group: `drains` drains of `seconds` each, and the target group's own attributes.
fn target_groups(drains: usize, seconds: f64, protocol: &str, delay: u32) -> Value {
    let drains: Vec<Value> = (0..drains)
        .map(|n| json!({ "at": format!("2026-11-26T12:{n:02}:00Z"), "drainSeconds": seconds - n as f64 * 0.1, "lagSeconds": 1.5 }))
        .collect();
    let record = json!({
        "targetGroupArn": "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/k8s-game2048-service2-6f5e3c2a1b/0123456789abcdef",
        "facts": { "protocol": protocol, "loadBalancer": if protocol == "HTTP" { "application" } else { "network" },
                   "healthCheck": { "intervalSeconds": 15, "healthyThreshold": 2 },
                   "deregistrationDelaySeconds": delay },
        "factsAt": "2026-11-26T12:00:00Z",
        "drains": drains,
    });
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "gracegate-target-groups", "namespace": "gracegate-system" },
        "data": { "k8s-game2048-service2-6f5e3c2a1b.0123456789abcdef": record.to_string() },
    })
}

/// The recorded review against the recorded cluster plus that ConfigMap.
async fn check_with_records(configmap: Value, expected: Expected) {
    use gracegate::cluster::{Cluster, Objects};
    let mut objects = Objects::load_dir(&crate::common::fixtures().join("cluster")).unwrap();
    objects
        .add_text(
            std::path::Path::new("target-groups.json"),
            &configmap.to_string(),
        )
        .unwrap();
    let mut context = context(Settings::default());
    context.cluster = Cluster::from_objects(objects);
    check_in("create-deployment-pod.json", expected, context).await;
}

#[tokio::test]
async fn measured_drains_size_the_prestop() {
    // p99 of 5 drains around 61 s: S = 62 + 5 = 67 > D + 10 = 40 (the Ingress's D = 30).
    check_with_records(
        target_groups(5, 61.2, "HTTP", 30),
        Expected {
            gates: &[GATE],
            prestops: &[("app-2048", 67), ("log-shipper", 67)],
            grace: Some(97),
            warnings: &["raised from 30 to 97"],
            source: Some("measured-drain"),
        },
    )
    .await;
}

#[tokio::test]
async fn four_drains_are_not_enough() {
    check_with_records(
        target_groups(4, 61.2, "HTTP", 30),
        Expected {
            gates: &[GATE],
            prestops: &[("app-2048", 40), ("log-shipper", 40)],
            grace: Some(70),
            warnings: &["raised from 30 to 70"],
            source: Some("deregistration-delay"),
        },
    )
    .await;
}

#[tokio::test]
async fn an_nlb_still_learning_is_called_out() {
    check_with_records(
        target_groups(2, 130.0, "TCP", 30),
        Expected {
            gates: &[GATE],
            // Two drains of 130 s are not enough to go by: the NLB default, not D + 10 = 40.
            prestops: &[("app-2048", 135), ("log-shipper", 135)],
            grace: Some(165),
            warnings: &[
                "over --max-prestop-seconds 120: each replaced pod lingers 135s",
                "NLB target group k8s-game2048-service2-6f5e3c2a1b has under 20 drains measured \
                 and NLBs are reported to route to draining targets ~2 min: S = 135s",
                "raised from 30 to 165",
            ],
            source: Some("nlb-default"),
        },
    )
    .await;
}

/// A binding the AWS Load Balancer Controller made for a Service, before the watcher has read
/// its target group: the labels say NLB, so its first pods get the NLB default.
#[rstest::rstest]
#[case::service_stack(
    "service.k8s.aws/stack-name",
    &[("app-2048", 135), ("log-shipper", 135)],
    165,
    "nlb-default",
    &[
        "each replaced pod lingers 135s",
        "NLB target group k8s-game2048-service2-6f5e3c2a1b has under 20 drains measured",
        "raised from 30 to 165",
    ]
)]
#[case::ingress_stack(
    "ingress.k8s.aws/stack-name",
    &[("app-2048", 40), ("log-shipper", 40)],
    70,
    "deregistration-delay",
    &["raised from 30 to 70"]
)]
#[tokio::test]
async fn a_labelled_binding_is_known_before_the_facts(
    #[case] label: &str,
    #[case] prestops: &'static [(&'static str, i32)],
    #[case] grace: i64,
    #[case] source: &'static str,
    #[case] warnings: &'static [&'static str],
) {
    use gracegate::cluster::{Cluster, Objects};
    let mut objects = Objects::load_dir(&crate::common::fixtures().join("cluster")).unwrap();
    for b in &mut objects.bindings {
        b.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(label.into(), "game-2048".into());
    }
    let mut context = context(Settings::default());
    context.cluster = Cluster::from_objects(objects);
    check_in(
        "create-deployment-pod.json",
        Expected {
            gates: &[GATE],
            prestops,
            grace: Some(grace),
            warnings,
            source: Some(source),
        },
        context,
    )
    .await;
}

#[tokio::test]
async fn the_target_groups_own_delay_when_no_annotation_says() {
    // Without the Ingress, D comes from the target group's attribute: 300 s, the AWS default.
    use gracegate::cluster::{Cluster, Objects};
    let mut objects = Objects::load_dir(&crate::common::fixtures().join("cluster")).unwrap();
    objects.ingresses.clear();
    objects
        .add_text(
            std::path::Path::new("target-groups.json"),
            &target_groups(0, 0.0, "HTTP", 300).to_string(),
        )
        .unwrap();
    let mut context = context(Settings::default());
    context.cluster = Cluster::from_objects(objects);
    let expected = Expected {
        gates: &[GATE],
        prestops: &[("app-2048", 120), ("log-shipper", 120)],
        grace: Some(150),
        warnings: &[
            "deregistration delay 300s from target group k8s-game2048-service2-6f5e3c2a1b needs a 310s preStop; capped at 120s",
            "is the AWS default",
            "raised from 30 to 150",
        ],
        source: Some("deregistration-delay"),
    };
    check_in("create-deployment-pod.json", expected, context).await;
}
