//! One AdmissionReview in, one out. Everything the webhook decides about a request is here;
//! the HTTP layer only moves bytes.
//!
//! The webhook never denies a pod: anything it cannot act on is allowed unchanged, with a
//! warning where the user can do something about it. Only a body that is not an
//! AdmissionReview at all gets an error (HTTP 400), since there is no uid to answer.

use base64::Engine;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use kube::core::gvk::GroupVersionKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inject::{self, Plan, PodView, Settings, Skip};
use crate::metrics::Outcome;
use crate::objects::NamespaceObjects;

/// The answer to one review.
#[derive(Debug)]
pub struct Reviewed {
    /// The `AdmissionReview` to send back.
    pub review: ResponseReview,
    pub outcome: Outcome,
    /// For the log line.
    pub summary: Summary,
}

/// What a log line says about a review.
#[derive(Debug, Default)]
pub struct Summary {
    pub uid: String,
    /// The reviewed object's kind (`Pod`, or what a misconfigured registration sends).
    pub kind: String,
    pub namespace: String,
    /// The object's name (a pod's `generateName*` when it has no name yet).
    pub pod: String,
    pub dry_run: bool,
    pub gates: usize,
    pub prestops: usize,
    pub grace: Option<i64>,
    /// Which rule gave `S` (`gracegate.io/prestop-source`).
    pub prestop_source: Option<&'static str>,
    pub prestop_seconds: Option<u32>,
    /// How many warnings the answer carries (set from the answer itself).
    pub warnings: usize,
    pub skip: Option<&'static str>,
}

/// A body that is not an AdmissionReview with a request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadReview(pub String);

/// Answer an AdmissionReview body. `objects` gives the cluster objects of a namespace.
pub fn review(
    body: &[u8],
    settings: &Settings,
    objects: impl FnOnce(&str) -> NamespaceObjects,
) -> Result<Reviewed, BadReview> {
    match serde_json::from_slice::<PodReview>(body) {
        Ok(PodReview {
            api_version,
            request: Some(request),
        }) => Ok(review_pod(&api_version, request, settings, objects)),
        Ok(PodReview { request: None, .. }) => {
            Err(BadReview("AdmissionReview has no request".into()))
        }
        Err(pod_error) => fail_open(body, &pod_error),
    }
}

/// An AdmissionReview of a pod, reduced to what gracegate reads (see [`PodView`]); the
/// fields keep kube-core's types.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodReview {
    #[serde(default)]
    api_version: String,
    request: Option<PodRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    object: Option<PodView>,
}

/// The AdmissionReview sent back. kube-core has an `AdmissionResponse`, but it writes `patch`
/// as a JSON array of numbers; the API's wire form is a base64 string (Go's `[]byte`), which
/// is what every API server documents and a third of the size. gracegate never denies, so the
/// response needs no `status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseReview {
    pub api_version: String,
    pub kind: &'static str,
    pub response: Response,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ResponseReview {
    /// Allowed, unchanged.
    fn allow(api_version: &str, uid: &str) -> ResponseReview {
        ResponseReview {
            api_version: if api_version.is_empty() {
                V1.to_string()
            } else {
                api_version.to_string()
            },
            kind: "AdmissionReview",
            response: Response {
                uid: uid.to_string(),
                allowed: true,
                patch: None,
                patch_type: None,
                warnings: Vec::new(),
            },
        }
    }

    fn warn(mut self, warnings: impl IntoIterator<Item = String>) -> ResponseReview {
        self.response.warnings.extend(warnings);
        self
    }
}

const V1: &str = "admission.k8s.io/v1";

fn review_pod(
    api_version: &str,
    request: PodRequest,
    settings: &Settings,
    objects: impl FnOnce(&str) -> NamespaceObjects,
) -> Reviewed {
    let pod = request.object.as_ref();
    let mut summary = Summary {
        uid: request.uid.clone(),
        kind: request.kind.kind.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        pod: pod.map(pod_name).unwrap_or_default(),
        dry_run: request.dry_run,
        ..Summary::default()
    };
    let response = ResponseReview::allow(api_version, &request.uid);
    if !is_pod(&request.kind) {
        return reviewed(
            response.warn([not_a_pod(&request.kind)]),
            Outcome::FailedOpen,
            summary,
        );
    }
    let pod = match pod {
        Some(pod) if request.operation == Operation::Create && request.sub_resource.is_none() => {
            pod
        }
        _ => return reviewed(response, Outcome::Unchanged, summary),
    };
    // The request's namespace is authoritative: a pod made from a template has none of its own.
    let Some(namespace) = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
    else {
        let response = response
            .warn(["gracegate: the review names no namespace; pod admitted unchanged".to_string()]);
        return reviewed(response, Outcome::FailedOpen, summary);
    };

    let plan = inject::plan(pod, &objects(namespace), settings);
    summary.gates = plan.gates.len();
    summary.prestops = plan.prestops.len();
    summary.grace = plan.grace.map(|(_, new)| new);
    summary.prestop_source = plan.prestop_source.as_ref().map(|s| s.as_str());
    summary.prestop_seconds = plan.prestop_source.as_ref().map(|_| plan.prestop_seconds);
    summary.skip = plan.skip.map(Skip::as_str);
    let outcome = match &plan {
        Plan {
            skip: Some(Skip::NamespaceUnknown),
            ..
        } => Outcome::FailedOpen,
        plan if plan.is_empty() => Outcome::Unchanged,
        _ => Outcome::Patched,
    };
    let mut response = response;
    if !plan.is_empty() {
        // A Patch of plain JSON values always serialises.
        let json = serde_json::to_vec(&plan.patch()).unwrap_or_default();
        response.response.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
        response.response.patch_type = Some("JSONPatch");
    }
    reviewed(response.warn(plan.warnings), outcome, summary)
}

fn reviewed(review: ResponseReview, outcome: Outcome, mut summary: Summary) -> Reviewed {
    // What the log line says is what was answered.
    summary.warnings = review.response.warnings.len();
    Reviewed {
        review,
        outcome,
        summary,
    }
}

fn is_pod(k: &GroupVersionKind) -> bool {
    k.group.is_empty() && k.kind == "Pod"
}

/// The webhook is registered for pods only; anything else means a misconfiguration.
fn not_a_pod(k: &GroupVersionKind) -> String {
    format!(
        "gracegate: only Pods are mutated, not {}/{} {}",
        k.group, k.version, k.kind
    )
}

fn pod_name(pod: &PodView) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => String::new(),
    }
}

/// The body did not parse as a review of a Pod. If it is still a review with a request uid —
/// another kind, or a pod gracegate cannot read — allow it unchanged and say why; otherwise
/// it is a bad request.
fn fail_open(body: &[u8], pod_error: &serde_json::Error) -> Result<Reviewed, BadReview> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BadReview(format!("body is not JSON: {e}")))?;
    if let Ok(review) = serde_json::from_value::<AdmissionReview<DynamicObject>>(value.clone())
        && let Ok(request) = TryInto::<AdmissionRequest<DynamicObject>>::try_into(review)
    {
        let pod_kind = is_pod(&request.kind);
        let summary = Summary {
            uid: request.uid.clone(),
            kind: request.kind.kind.clone(),
            namespace: request.namespace.clone().unwrap_or_default(),
            pod: request.name.clone(),
            skip: Some(if pod_kind {
                "unreadable-pod"
            } else {
                "not-a-pod"
            }),
            ..Summary::default()
        };
        let warning = if pod_kind {
            format!("gracegate: could not read the pod ({pod_error}); pod admitted unchanged")
        } else {
            not_a_pod(&request.kind)
        };
        let response =
            ResponseReview::allow(&request.types.api_version, &request.uid).warn([warning]);
        return Ok(reviewed(response, Outcome::FailedOpen, summary));
    }
    if !value.is_object() {
        return Err(BadReview(format!(
            "not an AdmissionReview: the body is a JSON {}, not an object",
            json_type(&value)
        )));
    }
    // Not even kube's loosest reading: answer with the bare minimum if a uid is there.
    let request = value
        .get("request")
        .filter(|r| !r.is_null())
        .ok_or_else(|| BadReview("AdmissionReview has no request".into()))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or_else(|| BadReview(format!("not an AdmissionReview: {pod_error}")))?;
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(V1);
    let warning = format!("gracegate: could not read the review ({pod_error}); admitted unchanged");
    Ok(reviewed(
        ResponseReview::allow(api_version, uid).warn([warning]),
        Outcome::FailedOpen,
        Summary {
            uid: uid.to_string(),
            kind: request
                .pointer("/kind/kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            skip: Some("unreadable-review"),
            ..Summary::default()
        },
    ))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: serde_json::Value) -> Reviewed {
        review(
            &serde_json::to_vec(&body).unwrap(),
            &Settings::default(),
            |_| NamespaceObjects::default(),
        )
        .unwrap()
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
}
