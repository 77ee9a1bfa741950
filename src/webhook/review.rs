//! One AdmissionReview in, one out. Everything the webhook decides about a request is here;
//! the HTTP layer only moves bytes.
//!
//! The webhook never denies a pod: anything it cannot act on is allowed unchanged, with a
//! warning where the user can do something about it. Only a body that is not an
//! AdmissionReview at all gets an error (HTTP 400), since there is no uid to answer.

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};

use crate::inject::{self, NamespaceObjects, Plan, Settings, Skip};
use crate::metrics::Outcome;

/// The answer to one review.
#[derive(Debug)]
pub struct Reviewed {
    /// The `AdmissionReview` to send back.
    pub review: Value,
    pub outcome: Outcome,
    /// For the log line.
    pub summary: Summary,
}

/// What a log line says about a review.
#[derive(Debug, Default)]
pub struct Summary {
    pub uid: String,
    pub namespace: String,
    pub pod: String,
    pub dry_run: bool,
    pub gates: usize,
    pub prestops: usize,
    pub grace: Option<i64>,
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
    match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Ok(review) => {
            let request: AdmissionRequest<Pod> = review
                .try_into()
                .map_err(|_| BadReview("AdmissionReview has no request".into()))?;
            Ok(review_pod(request, settings, objects))
        }
        Err(pod_error) => fail_open(body, &pod_error),
    }
}

fn review_pod(
    request: AdmissionRequest<Pod>,
    settings: &Settings,
    objects: impl FnOnce(&str) -> NamespaceObjects,
) -> Reviewed {
    let pod = request.object.as_ref();
    let mut summary = Summary {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        pod: pod.map(pod_name).unwrap_or_default(),
        dry_run: request.dry_run,
        ..Summary::default()
    };
    let response = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let pod = match pod {
        Some(pod)
            if is_pod
                && request.operation == Operation::Create
                && request.sub_resource.is_none() =>
        {
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
        let response = warn(response, vec![
            "gracegate: the review names no namespace; pod admitted unchanged".to_string(),
        ]);
        return reviewed(response, Outcome::FailedOpen, summary);
    };

    let plan = inject::plan(pod, &objects(namespace), settings);
    summary.gates = plan.gates.len();
    summary.prestops = plan.prestops.len();
    summary.grace = plan.grace.map(|(_, new)| new);
    summary.warnings = plan.warnings.len();
    summary.skip = plan.skip.map(Skip::as_str);
    let outcome = match &plan {
        Plan { skip: Some(Skip::NamespaceUnknown), .. } => Outcome::FailedOpen,
        plan if plan.is_empty() => Outcome::Unchanged,
        _ => Outcome::Patched,
    };
    let response = if plan.is_empty() {
        response
    } else {
        // Serialising a Patch of plain JSON values cannot fail; if it ever did, admitting the
        // pod unchanged is the fail-open answer.
        match response.clone().with_patch(plan.patch()) {
            Ok(patched) => patched,
            Err(error) => {
                return reviewed(
                    warn(response, vec![format!("gracegate: {error}; pod admitted unchanged")]),
                    Outcome::FailedOpen,
                    summary,
                );
            }
        }
    };
    reviewed(warn(response, plan.warnings), outcome, summary)
}

fn warn(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings.get_or_insert_with(Vec::new).extend(warnings);
    }
    response
}

fn reviewed(response: AdmissionResponse, outcome: Outcome, summary: Summary) -> Reviewed {
    let review = serde_json::to_value(response.into_review())
        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
    Reviewed {
        review,
        outcome,
        summary,
    }
}

fn pod_name(pod: &Pod) -> String {
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
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("body is not JSON: {e}")))?;
    if let Ok(review) = serde_json::from_value::<AdmissionReview<DynamicObject>>(value.clone())
        && let Ok(request) = TryInto::<AdmissionRequest<DynamicObject>>::try_into(review)
    {
        let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
        let mut summary = Summary {
            uid: request.uid.clone(),
            namespace: request.namespace.clone().unwrap_or_default(),
            ..Summary::default()
        };
        summary.skip = Some(if is_pod { "unreadable-pod" } else { "not-a-pod" });
        let response = AdmissionResponse::from(&request);
        let warning = if is_pod {
            format!("gracegate: could not read the pod ({pod_error}); pod admitted unchanged")
        } else {
            let k = &request.kind;
            format!("gracegate: only Pods are mutated, not {}/{} {}", k.group, k.version, k.kind)
        };
        return Ok(reviewed(warn(response, vec![warning]), Outcome::FailedOpen, summary));
    }
    // Not even kube's loosest reading: answer with the bare minimum if a uid is there.
    let request = value
        .get("request")
        .ok_or_else(|| BadReview("AdmissionReview has no request".into()))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or_else(|| BadReview(format!("not an AdmissionReview: {pod_error}")))?;
    let warning = format!("gracegate: could not read the review ({pod_error}); admitted unchanged");
    Ok(Reviewed {
        review: json!({
            "apiVersion": value.get("apiVersion").cloned().unwrap_or(json!("admission.k8s.io/v1")),
            "kind": "AdmissionReview",
            "response": { "uid": uid, "allowed": true, "warnings": [warning] },
        }),
        outcome: Outcome::FailedOpen,
        summary: Summary {
            uid: uid.to_string(),
            skip: Some("unreadable-review"),
            ..Summary::default()
        },
    })
}
