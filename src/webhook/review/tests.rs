use super::*;
use crate::cluster::{Cluster, Objects};
use crate::inject::{DrainMode, DrainSettings, PrestopAction};
use rstest::rstest;

fn answer(body: serde_json::Value) -> Reviewed<'static> {
    // The answer borrows from the body: a test's few bodies live as long as it does.
    let body: &'static [u8] = serde_json::to_vec(&body).unwrap().leak();
    review(body, &Settings::default(), |_| NamespaceObjects::default()).unwrap()
}

fn request(kind: &str, object: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u1", "kind": { "group": "", "version": "v1", "kind": kind },
            "resource": { "group": "", "version": "v1", "resource": "x" },
            "name": "my-config", "namespace": "ns", "operation": "CREATE",
            "userInfo": {}, "object": object,
        },
    })
}

/// The log line counts the warnings the answer carries, whatever path produced them.
#[test]
fn the_summary_says_what_was_answered() {
    let config_map = answer(request(
        "ConfigMap",
        serde_json::json!({ "metadata": { "name": "my-config" }, "data": { "a": "b" } }),
    ));
    assert_eq!(config_map.outcome, Outcome::FailedOpen);
    assert_eq!(config_map.review.response.warnings.len(), 1);
    assert_eq!(config_map.summary.warnings, 1);
    assert_eq!(config_map.summary.kind, "ConfigMap");

    // A pod gracegate cannot read (a number where a string goes): the fail-open path.
    let unreadable = answer(request(
        "Pod",
        serde_json::json!({ "metadata": { "name": 5 } }),
    ));
    assert_eq!(unreadable.summary.warnings, 1);
    assert_eq!(unreadable.summary.kind, "Pod");

    // An unknown namespace: the plan's warning.
    let pod = answer(request(
        "Pod",
        serde_json::json!({ "metadata": { "name": "p" }, "spec": { "containers": [] } }),
    ));
    assert_eq!(pod.outcome, Outcome::FailedOpen);
    assert_eq!(pod.summary.warnings, pod.review.response.warnings.len());
    assert_eq!(pod.summary.warnings, 1);
}

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::read(dir.join("admission").join(name)).unwrap()
}

/// The webhook writes the answer itself: byte for byte what serde writes, for every
/// recorded review (patched, unchanged, opted out, dry run, an update) and for reviews
/// derived from them whose strings need escaping, or that fail open or carry warnings.
#[rstest]
#[case::patched("create-deployment-pod.json", None)]
#[case::patched_large("create-deployment-pod-large.json", None)]
#[case::dry_run("create-pod-dry-run.json", None)]
#[case::own_prestop("create-pod-legacy-gate-own-prestop.json", None)]
#[case::opted_out("create-pod-opted-out.json", None)]
#[case::sidecar("create-pod-sidecar-native-sleep.json", None)]
#[case::unmatched("create-pod-unmatched-labels.json", None)]
#[case::update("update-pod-labels.json", None)]
#[case::escaped_uid("create-deployment-pod.json", Some(("/request/uid", serde_json::json!("a\"b\\c\n\u{1}\u{7f}é😀</"))))]
#[case::escaped_api_version("create-deployment-pod.json", Some(("/apiVersion", serde_json::json!("admission.k8s.io/v1\t\"x\""))))]
#[case::bad_containers_annotation("create-deployment-pod.json", Some(("/request/object/metadata/annotations", serde_json::json!({ "gracegate.io/containers": "nope\"\n", "gracegate.io/inject": "yes\u{2028}" }))))]
#[case::not_a_pod("create-deployment-pod.json", Some(("/request/kind/kind", serde_json::json!("ConfigMap"))))]
#[case::unreadable_pod("create-deployment-pod.json", Some(("/request/object/metadata/name", serde_json::json!(5))))]
#[case::unreadable_review("create-deployment-pod.json", Some(("/request/kind", serde_json::json!(5))))]
#[case::unknown_namespace("create-deployment-pod.json", Some(("/request/namespace", serde_json::json!("elsewhere"))))]
fn the_answer_is_written_as_serde_writes_it(
    #[case] name: &str,
    #[case] change: Option<(&str, serde_json::Value)>,
) {
    let cluster = Cluster::from_objects(
        Objects::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster"),
        )
        .unwrap(),
    );
    let mut request: Value = serde_json::from_slice(&fixture(name)).unwrap();
    if let Some((pointer, value)) = change {
        // Each step an object key, made where the recorded review has none.
        let mut at = &mut request;
        for key in pointer.split('/').skip(1) {
            at = &mut at[key];
        }
        *at = value;
    }
    let body = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&body, &Settings::default(), |ns| cluster.objects(ns)).unwrap();
    let written = reviewed.review.to_json();
    let serde = serde_json::to_vec(&reviewed.review).unwrap();
    assert_eq!(
        String::from_utf8(written).unwrap(),
        String::from_utf8(serde).unwrap()
    );
}

/// Every field of the answer the writer knows, set and unset, against serde.
#[rstest]
#[case::bare(false, None, None, vec![])]
#[case::denied_with_warnings(false, None, None, vec!["one".to_string(), "t\"w\no".to_string()])]
#[case::patch(true, Some(b"[{\"op\":\"add\"}]".to_vec()), Some("JSONPatch"), vec![])]
#[case::patch_lengths_1(true, Some(b"[".to_vec()), Some("JSONPatch"), vec!["w".to_string()])]
#[case::patch_lengths_2(true, Some(b"[]".to_vec()), None, vec![])]
#[case::empty_patch(true, Some(Vec::new()), Some("JSONPatch"), vec![])]
fn every_field_is_written_as_serde_writes_it(
    #[case] allowed: bool,
    #[case] patch: Option<Vec<u8>>,
    #[case] patch_type: Option<&'static str>,
    #[case] warnings: Vec<String>,
) {
    let answer = ResponseReview {
        api_version: Cow::Borrowed(V1),
        kind: "AdmissionReview",
        response: Response {
            uid: "705ab4f5-6393-11e8-b7cc-42010a800002".to_string(),
            allowed,
            patch,
            patch_type,
            warnings,
        },
    };
    let json = answer.to_json();
    if !answer
        .response
        .warnings
        .iter()
        .any(|w| w.contains(['"', '\n']))
    {
        // Sized up front: the buffer did not grow.
        assert_eq!(json.capacity(), answer.json_len(answer.patch_len()));
    }
    assert_eq!(
        String::from_utf8(json).unwrap(),
        serde_json::to_string(&answer).unwrap()
    );
}

/// The patch goes out as base64 of the plan's JSONPatch, and decodes back to it.
#[test]
fn the_patch_is_base64_of_the_jsonpatch() {
    let cluster = Cluster::from_objects(
        Objects::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster"),
        )
        .unwrap(),
    );
    let body = fixture("create-deployment-pod.json");
    let reviewed = review(&body, &Settings::default(), |ns| cluster.objects(ns)).unwrap();
    assert_eq!(reviewed.outcome, Outcome::Patched);
    let answer: Value = serde_json::from_slice(&reviewed.review.to_json()).unwrap();
    let patch = BASE64
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    assert_eq!(Some(&patch), reviewed.review.response.patch.as_ref());
    let ops: Value = serde_json::from_slice(&patch).unwrap();
    assert!(ops.as_array().is_some_and(|ops| !ops.is_empty()), "{ops}");
}

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

/// The patch answered for every recorded review, sleeping or waiting, with either preStop:
/// serde's writing of the plan's `Plan::patch` (the plan made again from the same pod and
/// objects); applied to the pod, the result is a `k8s_openapi` Pod, and a second review of
/// it patches nothing.
#[rstest]
fn the_patch_is_the_plans_jsonpatch(
    #[values(
        "create-deployment-pod.json",
        "create-deployment-pod-large.json",
        "create-pod-dry-run.json",
        "create-pod-legacy-gate-own-prestop.json",
        "create-pod-opted-out.json",
        "create-pod-sidecar-native-sleep.json",
        "create-pod-unmatched-labels.json",
        "update-pod-labels.json"
    )]
    name: &str,
    #[values(PrestopAction::Sleep, PrestopAction::Exec)] action: PrestopAction,
    #[values(DrainMode::Sleep, DrainMode::Wait)] mode: DrainMode,
) {
    let cluster = Cluster::from_objects(
        Objects::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster"),
        )
        .unwrap(),
    );
    let settings = Settings {
        prestop_action: action,
        drain: DrainSettings {
            mode,
            ca_pem: Some(CA.into()),
            ..DrainSettings::default()
        },
        ..Settings::default()
    };
    let body = fixture(name);
    let reviewed = review(&body, &settings, |ns| cluster.objects(ns)).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let Some(patch) = &reviewed.review.response.patch else {
        assert_ne!(reviewed.outcome, Outcome::Patched, "{name}");
        return;
    };
    let original = &request["request"]["object"];
    let object = serde_json::to_vec(original).unwrap();
    let pod: PodView = serde_json::from_slice(&object).unwrap();
    let namespace = request["request"]["namespace"].as_str().unwrap();
    let plan = inject::plan(&pod, &cluster.objects(namespace), &settings);
    assert_eq!(
        String::from_utf8(patch.clone()).unwrap(),
        serde_json::to_string(&plan.patch()).unwrap()
    );

    let ops: json_patch::Patch = serde_json::from_slice(patch).unwrap();
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &ops).unwrap();
    let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched.clone()).unwrap();
    let mut again = request.clone();
    again["request"]["object"] = patched;
    let body = serde_json::to_vec(&again).unwrap();
    let second = review(&body, &settings, |ns| cluster.objects(ns)).unwrap();
    assert_eq!(second.review.response.patch, None, "{name}");
}

/// A container's env is kept as its text, and read (for the drain wait) as serde reads it.
#[test]
fn env_is_kept_as_text_and_reads_as_serde_reads_it() {
    let body = fixture("create-deployment-pod-large.json");
    fn containers(review: PodReview<'_>) -> Vec<crate::inject::EnvList<'_>> {
        let spec = review.request.unwrap().object.unwrap().spec.unwrap();
        spec.containers
            .into_iter()
            .map(|c| c.env.unwrap())
            .collect()
    }
    let read = containers(parse(&body).unwrap());
    let by_serde = containers(parse_serde(&body).unwrap());
    assert_eq!(read.len(), 3);
    for (env, reference) in read.iter().zip(&by_serde) {
        assert!(matches!(env, crate::inject::Listed::Text(_)), "{env:?}");
        assert!(
            matches!(reference, crate::inject::Listed::Items(_)),
            "{reference:?}"
        );
        let names = env.items().unwrap();
        assert_eq!(names.len(), 42);
        assert_eq!(names, reference.items().unwrap());
    }
}

/// The pod's volumes and the containers' mounts are kept as text too, and read (for the
/// drain wait) as serde reads them.
#[test]
fn volumes_and_mounts_are_kept_as_text_and_read_as_serde_reads_them() {
    let body = fixture("create-deployment-pod.json");
    fn spec(review: PodReview<'_>) -> crate::inject::PodSpecView<'_> {
        review.request.unwrap().object.unwrap().spec.unwrap()
    }
    let (read, by_serde) = (
        spec(parse(&body).unwrap()),
        spec(parse_serde(&body).unwrap()),
    );
    let volumes = read.volumes.as_ref().unwrap();
    assert!(
        matches!(volumes, crate::inject::Listed::Text(_)),
        "{volumes:?}"
    );
    let (items, reference) = (volumes.items().unwrap(), by_serde.volumes.as_ref().unwrap());
    assert!(matches!(reference, crate::inject::Listed::Items(_)));
    assert!(!items.is_empty());
    assert_eq!(items, reference.items().unwrap());
    let mut mounted = 0;
    for (c, reference) in read.containers.iter().zip(&by_serde.containers) {
        let Some(mounts) = &c.volume_mounts else {
            assert_eq!(reference.volume_mounts, None);
            continue;
        };
        assert!(
            matches!(mounts, crate::inject::Listed::Text(_)),
            "{mounts:?}"
        );
        let reference = reference.volume_mounts.as_ref().unwrap().items().unwrap();
        assert_eq!(mounts.items().unwrap(), reference);
        mounted += reference.len();
    }
    assert!(mounted > 0);
}
