//! Bad input gets a clear answer, never a panic or a hang, and never a blocked pod: a body
//! that is not an AdmissionReview is a 400; a readable review about an odd object is allowed.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gracegate::inject::Settings;
use gracegate::webhook::{MAX_BODY_BYTES, router};
use json_patch::PatchOperation;
use rstest::rstest;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::{Answer, context, post, review};

async fn rejected(body: impl Into<Body>) -> String {
    let (status, body) = post(&context(Settings::default()), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    String::from_utf8(body).unwrap()
}

#[rstest]
#[case::empty("", "not JSON")]
#[case::truncated("{\"kind\":\"AdmissionReview\"", "not JSON")]
#[case::array("[]", "not an AdmissionReview: the body is a JSON array")]
#[case::string("\"review\"", "not an AdmissionReview: the body is a JSON string")]
#[case::no_request(
    r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
    "no request"
)]
#[case::null_request(
    r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":null}"#,
    "no request"
)]
#[case::no_uid(r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"CREATE"}}"#, "not an AdmissionReview")]
#[tokio::test]
async fn unreadable_reviews_are_400(#[case] body: &'static str, #[case] says: &str) {
    let text = rejected(body).await;
    assert!(text.contains(says), "{text:?} should say {says:?}");
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_stack_overflow() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let text = rejected(body).await;
    assert!(text.contains("not JSON"), "{text}");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let mut request = review("create-deployment-pod.json");
    request["request"]["object"]["metadata"]["annotations"] =
        json!({ "padding": "x".repeat(MAX_BODY_BYTES) });
    let (status, _) = post(
        &context(Settings::default()),
        serde_json::to_vec(&request).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn only_post() {
    let request = Request::get("/mutate").body(Body::empty()).unwrap();
    let response = router(context(Settings::default()))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// The answer to a readable review, checked to be a 200 for the request's uid.
async fn answered(request: &Value) -> Answer {
    let (status, body) = post(
        &context(Settings::default()),
        serde_json::to_vec(request).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    Answer::parse(request, &body)
}

/// A readable review, allowed unchanged with a warning containing `says`.
async fn allowed_unchanged(request: Value, says: &str) {
    let answer = answered(&request).await;
    assert!(answer.patch().is_none(), "{:?}", answer.response);
    let warnings = answer.warnings();
    assert!(
        warnings.iter().any(|w| w.contains(says)),
        "{warnings:?} should say {says:?}"
    );
}

#[tokio::test]
async fn not_a_pod() {
    let mut request = review("create-deployment-pod.json");
    request["request"]["kind"] = json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    request["request"]["object"] = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "d", "namespace": "game-2048" },
        "spec": { "selector": {}, "template": {} },
    });
    allowed_unchanged(request, "only Pods are mutated, not apps/v1 Deployment").await;
}

/// Fields the API server would require anyway: k8s-openapi reads their absence as empty, so
/// the review is answered normally, and any patch still applies to the pod as sent.
#[rstest]
#[case::no_containers("/spec/containers", 3)]
#[case::container_without_name("/spec/containers/0/name", 5)]
#[case::no_labels("/metadata/labels", 0)]
#[case::no_metadata("/metadata", 0)]
#[case::no_spec("/spec", 0)]
#[tokio::test]
async fn pod_missing_fields(#[case] pointer: &str, #[case] operations: usize) {
    let mut request = review("create-deployment-pod.json");
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let object = &mut request["request"]["object"];
    let parent = if parent.is_empty() {
        object
    } else {
        object.pointer_mut(parent).unwrap()
    };
    match parent {
        Value::Object(map) => {
            map.remove(key);
        }
        other => panic!("{other}"),
    }
    let answer = answered(&request).await;
    let patch = answer.patch().map(|p| p.0).unwrap_or_default();
    assert_eq!(patch.len(), operations, "{patch:?}");
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
}

#[tokio::test]
async fn pod_field_of_the_wrong_type() {
    let mut request = review("create-deployment-pod.json");
    request["request"]["object"]["spec"]["terminationGracePeriodSeconds"] = json!("seventy");
    allowed_unchanged(request, "could not read the pod").await;
}

#[tokio::test]
async fn review_gracegate_cannot_read_at_all_is_still_answered() {
    // A uid, but a request kube's own types cannot read: still allowed, never blocked.
    let request = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": { "uid": "u-1", "operation": "CREATE" },
    });
    allowed_unchanged(request, "could not read the review").await;
}

#[tokio::test]
async fn create_without_object() {
    let mut request = review("create-deployment-pod.json");
    request["request"]["object"] = Value::Null;
    assert!(answered(&request).await.patch().is_none());
}

#[tokio::test]
async fn namespace_not_in_cache() {
    let mut request = review("create-deployment-pod.json");
    request["request"]["namespace"] = json!("not-yet-seen");
    allowed_unchanged(request, "namespace not in cache").await;
}

/// The preStop sleep values a patch sets.
fn prestop_seconds(answer: &Answer) -> Vec<u64> {
    answer
        .patch()
        .unwrap()
        .0
        .iter()
        .filter_map(|op| match op {
            PatchOperation::Add(add) if add.path.to_string().ends_with("/lifecycle") => add
                .value
                .pointer("/preStop/sleep/seconds")
                .and_then(Value::as_u64),
            _ => None,
        })
        .collect()
}

#[rstest]
#[case::not_a_number("abc")]
#[case::negative("-5")]
#[case::over_the_cap("99999")]
#[case::fraction("2.5")]
#[tokio::test]
async fn malformed_prestop_annotation_falls_back_with_a_warning(#[case] value: &str) {
    let mut request = review("create-deployment-pod.json");
    request["request"]["object"]["metadata"]["annotations"] =
        json!({ "gracegate.io/prestop-seconds": value });
    let answer = answered(&request).await;
    // The default rule still applies: D = 30 from the Ingress, so S = 40.
    assert_eq!(prestop_seconds(&answer), vec![40, 40]);
    let warnings = answer.warnings();
    let expected = format!(
        "gracegate.io/prestop-seconds={value:?} is not a number of seconds from 0 to 120, ignored; using 40s"
    );
    assert!(
        warnings.iter().any(|w| w.contains(&expected)),
        "{warnings:#?}"
    );
}

#[tokio::test]
async fn zero_prestop_seconds_injects_no_prestop() {
    let mut request = review("create-deployment-pod.json");
    request["request"]["object"]["metadata"]["annotations"] =
        json!({ "gracegate.io/prestop-seconds": "0" });
    let answer = answered(&request).await;
    assert_eq!(prestop_seconds(&answer), Vec::<u64>::new());
    // The gate is still added; T = max(30, 0 + 30) leaves the grace period alone.
    let patch = serde_json::to_value(answer.patch().unwrap()).unwrap();
    assert_eq!(patch.as_array().unwrap().len(), 1, "{patch}");
    assert_eq!(patch[0]["path"], "/spec/readinessGates");
}
