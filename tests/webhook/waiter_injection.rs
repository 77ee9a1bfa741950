//! Drain wait, the webhook's side: recorded reviews (tests/fixtures/admission, edited here
//! where a case needs an annotation, an init container, a volume or env the recording lacks)
//! through the real router; each patch applied to the original pod, read back as a
//! `k8s_openapi` Pod, compared with the pod built here by hand, and reviewed again to see that
//! nothing more is added.

use std::collections::BTreeMap;

use gracegate::cluster::{Cluster, Objects};
use gracegate::inject::waiter::{DrainMode, DrainSettings};
use gracegate::inject::{PrestopAction, Settings};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, Pod, PodSecurityContext, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rstest::rstest;
use serde_json::{Value, json};

use super::common::{Answer, context, fixtures, post, review};
#[path = "../support/restricted.rs"]
mod restricted;

const FIXTURE: &str = "create-deployment-pod.json";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";
const URL: &str = "https://gracegate.gracegate-system.svc";
const IMAGE: &str = "registry.example/gracegate:9.9.9";
const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";

fn settings(mode: DrainMode) -> Settings {
    Settings {
        drain: DrainSettings {
            mode,
            url: URL.into(),
            ca_pem: Some(CA.into()),
            max_seconds: 300,
            image: IMAGE.into(),
        },
        ..Settings::default()
    }
}

/// The recorded review with `edit` applied to its pod.
fn review_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut request = review(FIXTURE);
    edit(&mut request["request"]["object"]);
    request
}

fn annotate(pod: &mut Value, key: &str, value: &str) {
    pod["metadata"]["annotations"] = json!({ key: value });
}

/// The 2048 namespace from the recorded cluster, with `annotations` on the Namespace.
fn cluster_with_namespace_annotations(annotations: &[(&str, &str)]) -> Cluster {
    let mut objects = Objects::load_dir(&fixtures().join("cluster")).unwrap();
    for ns in &mut objects.namespaces {
        let map = ns.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in annotations {
            map.insert(k.to_string(), v.to_string());
        }
    }
    Cluster::from_objects(objects)
}

/// What the webhook answers, the pod its patch makes, and the warnings.
async fn admit(
    context: &gracegate::webhook::Context,
    request: &Value,
) -> (Pod, Value, Vec<String>) {
    let (status, body) = post(context, serde_json::to_vec(request).unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = Answer::parse(request, &body);
    let mut patched = request["request"]["object"].clone();
    if let Some(patch) = answer.patch() {
        json_patch::patch(&mut patched, &patch.0).unwrap();
    }
    let pod: Pod = serde_json::from_value(patched.clone()).unwrap();
    for w in answer.warnings() {
        assert!(
            w.len() <= 256,
            "the API server truncates longer warnings: {w}"
        );
    }
    (pod, patched, answer.warnings())
}

/// Reinvocation: the webhook on its own output adds nothing.
async fn second_review_adds_nothing(
    context: &gracegate::webhook::Context,
    request: &Value,
    patched: Value,
) {
    let mut again = request.clone();
    again["request"]["object"] = patched;
    let (status, body) = post(context, serde_json::to_vec(&again).unwrap()).await;
    assert_eq!(status, 200);
    let answer = Answer::parse(&again, &body);
    assert!(
        answer.patch().is_none(),
        "second pass patched: {:?}",
        answer.response
    );
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiter_init_container() -> Container {
    let q = |s: &str| Quantity(s.into());
    Container {
        name: "gracegate-waiter".into(),
        image: Some(IMAGE.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            "/usr/local/bin/gracegate-wait".into(),
            "install".into(),
            "/.gracegate/gracegate-wait".into(),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: "gracegate-waiter".into(),
            mount_path: "/.gracegate".into(),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some([("cpu".into(), q("20m")), ("memory".into(), q("16Mi"))].into()),
            limits: Some([("cpu".into(), q("20m")), ("memory".into(), q("16Mi"))].into()),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// `original` with what the drain wait adds, built by hand: the gate, the init container
/// first, the volume, and on each of `waiting` the mount, the env it lacks and the waiter's
/// preStop; the grace period `grace`; the source annotation.
fn expected(original: &Value, waiting: &[&str], seconds: u32, grace: i64) -> Pod {
    let mut pod: Pod = serde_json::from_value(original.clone()).unwrap();
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("gracegate.io/prestop-source".into(), "drain-wait".into());
    let spec = pod.spec.as_mut().unwrap();
    spec.readiness_gates.get_or_insert_with(Vec::new).push(
        k8s_openapi::api::core::v1::PodReadinessGate {
            condition_type: GATE.into(),
        },
    );
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .insert(0, waiter_init_container());
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "gracegate-waiter".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("16Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    });
    for c in spec
        .containers
        .iter_mut()
        .filter(|c| waiting.contains(&c.name.as_str()))
    {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: "gracegate-waiter".into(),
                mount_path: "/.gracegate".into(),
                read_only: Some(true),
                ..Default::default()
            });
        let env = c.env.get_or_insert_with(Vec::new);
        for (name, path) in [
            ("GRACEGATE_POD_NAME", "metadata.name"),
            ("GRACEGATE_POD_NAMESPACE", "metadata.namespace"),
            ("GRACEGATE_POD_UID", "metadata.uid"),
        ] {
            if !env.iter().any(|e| e.name == name) {
                env.push(field_env(name, path));
            }
        }
        c.lifecycle.get_or_insert_with(Lifecycle::default).pre_stop = Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(
                    [
                        "/.gracegate/gracegate-wait",
                        "wait",
                        "--url",
                        URL,
                        "--max-seconds",
                        &seconds.to_string(),
                        "--ca",
                        CA,
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
            }),
            ..Default::default()
        });
    }
    spec.termination_grace_period_seconds = Some(grace);
    pod
}

/// Opted in by the pod's annotation, the namespace's, or the flag: the same pod comes out.
#[rstest]
#[case::pod_annotation(DrainMode::Sleep, Some("wait"), None)]
#[case::namespace_annotation(DrainMode::Sleep, None, Some("wait"))]
#[case::flag(DrainMode::Wait, None, None)]
#[case::pod_beats_namespace(DrainMode::Sleep, Some("wait"), Some("sleep"))]
#[tokio::test]
async fn an_opted_in_pod_gets_the_waiter(
    #[case] flag: DrainMode,
    #[case] pod: Option<&str>,
    #[case] namespace: Option<&str>,
) {
    let mut context = context(settings(flag));
    let ns: Vec<(&str, &str)> = namespace
        .map(|v| ("gracegate.io/drain", v))
        .into_iter()
        .collect();
    context.cluster = cluster_with_namespace_annotations(&ns);
    let request = review_with(|p| {
        if let Some(v) = pod {
            annotate(p, "gracegate.io/drain", v);
        }
    });
    let (got, patched, warnings) = admit(&context, &request).await;
    let want = expected(
        &request["request"]["object"],
        &["app-2048", "log-shipper"],
        300,
        330,
    );
    assert_eq!(got, want);
    assert!(
        warnings.iter().any(|w| w.contains("raised from 30 to 330")),
        "{warnings:?}"
    );
    second_review_adds_nothing(&context, &request, patched).await;
}

/// `sleep` on the pod opts it out of a cluster-wide or namespace-wide wait: today's sleep.
#[rstest]
#[case::pod_opts_out_of_the_flag(DrainMode::Wait, None)]
#[case::pod_opts_out_of_the_namespace(DrainMode::Sleep, Some("wait"))]
#[tokio::test]
async fn sleep_opts_a_pod_out(#[case] flag: DrainMode, #[case] namespace: Option<&str>) {
    let mut context = context(settings(flag));
    let ns: Vec<(&str, &str)> = namespace
        .map(|v| ("gracegate.io/drain", v))
        .into_iter()
        .collect();
    context.cluster = cluster_with_namespace_annotations(&ns);
    let request = review_with(|p| annotate(p, "gracegate.io/drain", "sleep"));
    let (got, _, _) = admit(&context, &request).await;
    let spec = got.spec.unwrap();
    assert!(spec.init_containers.is_none());
    for c in &spec.containers {
        let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.sleep.as_ref().map(|s| s.seconds),
            Some(40),
            "{}",
            c.name
        );
    }
    assert_eq!(spec.termination_grace_period_seconds, Some(70));
}

/// A pod with init containers, volumes and env of its own: the waiter goes first, the rest is
/// kept in order, and a variable the container sets itself is never overwritten.
#[tokio::test]
async fn a_pods_own_init_containers_volumes_and_env_are_kept() {
    let context = context(settings(DrainMode::Wait));
    let request = review_with(|p| {
        p["spec"]["initContainers"] = json!([
            { "name": "migrate", "image": "migrate:1", "restartPolicy": null },
            { "name": "proxy", "image": "envoy:1", "restartPolicy": "Always" },
        ]);
        p["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "cache", "emptyDir": {} }));
        p["spec"]["containers"][0]["env"] = json!([
            { "name": "GRACEGATE_POD_UID", "value": "set-by-the-user" },
            { "name": "PORT", "value": "80" },
        ]);
    });
    let (got, patched, _) = admit(&context, &request).await;
    let want = expected(
        &request["request"]["object"],
        &["app-2048", "log-shipper"],
        300,
        330,
    );
    assert_eq!(got, want);
    let spec = got.spec.as_ref().unwrap();
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["gracegate-waiter", "migrate", "proxy"]);
    let env = spec.containers[0].env.as_ref().unwrap();
    let uid: Vec<&EnvVar> = env
        .iter()
        .filter(|e| e.name == "GRACEGATE_POD_UID")
        .collect();
    assert_eq!(uid.len(), 1);
    assert_eq!(uid[0].value.as_deref(), Some("set-by-the-user"));
    second_review_adds_nothing(&context, &request, patched).await;
}

/// A container with a preStop of its own keeps it (and is told it cannot wait); the others wait.
#[tokio::test]
async fn a_containers_own_prestop_is_kept_with_a_warning() {
    let context = context(settings(DrainMode::Wait));
    let own = json!({ "preStop": { "exec": { "command": ["/bin/drain.sh"] } } });
    let request = review_with(|p| p["spec"]["containers"][1]["lifecycle"] = own.clone());
    let (got, patched, warnings) = admit(&context, &request).await;
    let want = expected(&request["request"]["object"], &["app-2048"], 300, 330);
    assert_eq!(got, want);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("log-shipper") && w.contains("cannot wait")),
        "{warnings:?}"
    );
    second_review_adds_nothing(&context, &request, patched).await;
}

/// An annotation still sets S: here the waiter's deadline; `0` still means no preStop.
#[rstest]
#[case::deadline_from_annotation("60", Some(60), 90)]
#[case::zero_means_none("0", None, 30)]
#[tokio::test]
async fn prestop_seconds_sets_the_deadline(
    #[case] value: &str,
    #[case] deadline: Option<u32>,
    #[case] grace: i64,
) {
    let context = context(settings(DrainMode::Wait));
    let request = review_with(|p| {
        p["metadata"]["annotations"] = json!({ "gracegate.io/prestop-seconds": value });
    });
    let (got, patched, _) = admit(&context, &request).await;
    match deadline {
        Some(seconds) => {
            let mut want = expected(
                &request["request"]["object"],
                &["app-2048", "log-shipper"],
                seconds,
                grace,
            );
            want.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert("gracegate.io/prestop-source".into(), "annotation".into());
            assert_eq!(got, want);
        }
        None => {
            let spec = got.spec.unwrap();
            assert!(spec.init_containers.is_none());
            assert!(spec.containers.iter().all(|c| c.lifecycle.is_none()));
            assert_eq!(spec.termination_grace_period_seconds, Some(grace));
        }
    }
    second_review_adds_nothing(&context, &request, patched).await;
}

/// Whatever keeps the waiter out, the pod sleeps as today and the user is told why.
#[rstest]
#[case::no_ca(true, None, "no CA bundle")]
#[case::windows(false, Some(json!({ "os": { "name": "windows" } })), "Windows")]
#[case::volume_name_taken(false, Some(json!({ "volumes": [{ "name": "gracegate-waiter", "configMap": { "name": "x" } }] })), "not an emptyDir")]
#[tokio::test]
async fn when_the_waiter_cannot_run_the_pod_sleeps(
    #[case] no_ca: bool,
    #[case] spec_edit: Option<Value>,
    #[case] warning: &str,
) {
    let mut settings = settings(DrainMode::Wait);
    if no_ca {
        settings.drain.ca_pem = None;
    }
    let context = context(settings);
    let request = review_with(|p| {
        if let Some(Value::Object(edit)) = &spec_edit {
            for (k, v) in edit {
                p["spec"][k] = v.clone();
            }
        }
    });
    let (got, patched, warnings) = admit(&context, &request).await;
    let spec = got.spec.unwrap();
    assert!(
        spec.init_containers
            .iter()
            .flatten()
            .all(|c| c.name != "gracegate-waiter"),
        "no waiter"
    );
    for c in &spec.containers {
        let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert!(pre_stop.sleep.is_some(), "{}: {pre_stop:?}", c.name);
    }
    assert!(warnings.iter().any(|w| w.contains(warning)), "{warnings:?}");
    second_review_adds_nothing(&context, &request, patched).await;
}

/// Under `--prestop-mode exec` the waiter's preStop is still the waiter, not a shell.
#[tokio::test]
async fn the_exec_prestop_mode_does_not_change_the_waiter() {
    let context = context(Settings {
        prestop_action: PrestopAction::Exec,
        ..settings(DrainMode::Wait)
    });
    let request = review(FIXTURE);
    let (got, _, _) = admit(&context, &request).await;
    assert_eq!(
        got,
        expected(
            &request["request"]["object"],
            &["app-2048", "log-shipper"],
            300,
            330
        )
    );
}

/// A pod that passes the `restricted` profile still passes it with the waiter added.
#[tokio::test]
async fn the_patched_pod_passes_the_restricted_profile() {
    let context = context(settings(DrainMode::Wait));
    let request = review_with(|p| {
        p["spec"]["securityContext"] = json!({
            "runAsNonRoot": true, "seccompProfile": { "type": "RuntimeDefault" } });
        for c in p["spec"]["containers"].as_array_mut().unwrap() {
            c["securityContext"] = json!({
                "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } });
        }
    });
    let original: Pod = serde_json::from_value(request["request"]["object"].clone()).unwrap();
    assert_eq!(restricted::check(&original), Ok(()));
    let (got, _, _) = admit(&context, &request).await;
    assert!(got.spec.as_ref().unwrap().init_containers.is_some());
    assert_eq!(restricted::check(&got), Ok(()));
}

/// The checker can fail: the recorded pod as is (no security context) does not pass, and
/// neither does a privileged waiter.
#[test]
fn the_restricted_checker_rejects_what_it_should() {
    let pod: Pod = serde_json::from_value(review(FIXTURE)["request"]["object"].clone()).unwrap();
    assert!(restricted::check(&pod).is_err());
    let mut init = waiter_init_container();
    assert!(
        restricted::check(&pod_with_init(init.clone())).is_err(),
        "the app containers still fail"
    );
    let lone = |c: Container| Pod {
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![c],
            security_context: Some(PodSecurityContext::default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(restricted::check(&lone(init.clone())), Ok(()));
    init.security_context.as_mut().unwrap().privileged = Some(true);
    assert!(restricted::check(&lone(init)).is_err());
}

fn pod_with_init(init: Container) -> Pod {
    let mut pod: Pod =
        serde_json::from_value(review(FIXTURE)["request"]["object"].clone()).unwrap();
    pod.spec.as_mut().unwrap().init_containers = Some(vec![init]);
    pod
}
