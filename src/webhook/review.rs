//! One AdmissionReview in, one out. Everything the webhook decides about a request is here;
//! the HTTP layer only moves bytes.
//!
//! The webhook never denies a pod: anything it cannot act on is allowed unchanged, with a
//! warning where the user can do something about it. Only a body that is not an
//! AdmissionReview at all gets an error (HTTP 400), since there is no uid to answer.

use std::borrow::Cow;

use base64::Engine;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inject::{self, Plan, PodView, Settings, Skip};
use crate::json::write::string as json_str;
use crate::json::{self, Reader};
use crate::metrics::Outcome;
use crate::objects::NamespaceObjects;

/// The answer to one review; its strings borrow from the review's body where they can.
#[derive(Debug)]
pub struct Reviewed<'a> {
    /// The `AdmissionReview` to send back.
    pub review: ResponseReview<'a>,
    pub outcome: Outcome,
    /// For the log line.
    pub summary: Summary<'a>,
}

/// What a log line says about a review.
#[derive(Debug, Default)]
pub struct Summary<'a> {
    pub uid: Cow<'a, str>,
    /// The reviewed object's kind (`Pod`, or what a misconfigured registration sends).
    pub kind: Cow<'a, str>,
    pub namespace: Cow<'a, str>,
    /// The object's name (a pod's `generateName*` when it has no name yet).
    pub pod: Cow<'a, str>,
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
pub fn review<'a>(
    body: &'a [u8],
    settings: &Settings,
    objects: impl FnOnce(&str) -> NamespaceObjects,
) -> Result<Reviewed<'a>, BadReview> {
    match parse(body) {
        Ok(PodReview {
            api_version,
            request: Some(request),
        }) => Ok(review_pod(api_version, request, settings, objects)),
        Ok(PodReview { request: None, .. }) => {
            Err(BadReview("AdmissionReview has no request".into()))
        }
        Err(pod_error) => fail_open(body, &pod_error),
    }
}

/// The first step of [`review`]: the body read as an AdmissionReview of a pod (for the
/// benchmarks of the steps). Read with [`json::Reader`], which skips what gracegate does not
/// read by its structure alone; [`parse_serde`] is the same reading by serde_json.
pub fn parse(body: &[u8]) -> Result<PodReview<'_>, json::Error> {
    let mut r = Reader::new(body);
    let review = PodReview::read(&mut r)?;
    r.end()?;
    Ok(review)
}

/// [`parse`] by serde_json's derive: the reference the reader is tested against (and the
/// benchmarks' baseline).
#[doc(hidden)]
pub fn parse_serde(body: &[u8]) -> Result<PodReview<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// An AdmissionReview of a pod, reduced to what gracegate reads (see [`PodView`]). Its
/// strings borrow from the body (they are copied only when they hold an escape); they read
/// as kube-core's `AdmissionRequest` and `GroupVersionKind` do, with the same required
/// fields.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodReview<'a> {
    #[serde(default, borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<PodRequest<'a>>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PodRequest<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: Gvk<'a>,
    #[serde(default, borrow)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
    operation: Operation,
    #[serde(default)]
    dry_run: bool,
    #[serde(default, borrow)]
    object: Option<PodView<'a>>,
}

/// kube-core's `GroupVersionKind`, borrowed.
#[derive(Debug, Deserialize, PartialEq)]
struct Gvk<'a> {
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

// === impl PodReview: read from the body ===

impl<'a> PodReview<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let mut api_version = None;
        let mut request = None;
        r.object(|r, key| {
            match &*key {
                "apiVersion" => api_version = Some(r.string()?),
                "request" => request = r.nullable(PodRequest::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(PodReview {
            api_version: api_version.unwrap_or_default(),
            request,
        })
    }
}

impl<'a> PodRequest<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let (mut uid, mut kind, mut operation) = (None, None, None);
        let (mut sub_resource, mut namespace, mut dry_run, mut object) = (None, None, false, None);
        r.object(|r, key| {
            match &*key {
                "uid" => uid = Some(r.string()?),
                "kind" => kind = Some(Gvk::read(r)?),
                "subResource" => sub_resource = r.nullable(Reader::string)?,
                "namespace" => namespace = r.nullable(Reader::string)?,
                "operation" => operation = Some(read_operation(r)?),
                "dryRun" => dry_run = r.nullable(Reader::bool)?.unwrap_or_default(),
                "object" => object = r.nullable(PodView::read)?,
                _ => r.skip()?,
            }
            Ok(())
        })?;
        Ok(PodRequest {
            uid: uid.ok_or_else(|| r.error("missing field `uid`"))?,
            kind: kind.ok_or_else(|| r.error("missing field `kind`"))?,
            sub_resource,
            namespace,
            operation: operation.ok_or_else(|| r.error("missing field `operation`"))?,
            dry_run,
            object,
        })
    }
}

impl<'a> Gvk<'a> {
    fn read(r: &mut Reader<'a>) -> json::Result<Self> {
        let (mut group, mut version, mut kind) = (None, None, None);
        r.object(|r, key| {
            match &*key {
                "group" => group = Some(r.string()?),
                "version" => version = Some(r.string()?),
                "kind" => kind = Some(r.string()?),
                _ => r.skip()?,
            }
            Ok(())
        })?;
        let missing = |field| r.error(format!("kind: missing field `{field}`"));
        Ok(Gvk {
            group: group.ok_or_else(|| missing("group"))?,
            version: version.ok_or_else(|| missing("version"))?,
            kind: kind.ok_or_else(|| missing("kind"))?,
        })
    }
}

/// kube-core's `Operation`, by its wire name.
fn read_operation(r: &mut Reader<'_>) -> json::Result<Operation> {
    match &*r.string()? {
        "CREATE" => Ok(Operation::Create),
        "UPDATE" => Ok(Operation::Update),
        "DELETE" => Ok(Operation::Delete),
        "CONNECT" => Ok(Operation::Connect),
        other => Err(r.error(format!("unknown operation `{other}`"))),
    }
}

/// The AdmissionReview sent back. kube-core has an `AdmissionResponse`, but it writes `patch`
/// as a JSON array of numbers; the API's wire form is a base64 string (Go's `[]byte`), which
/// is what every API server documents and a third of the size. gracegate never denies, so the
/// response needs no `status`.
///
/// Serialised with serde or, by the webhook, with [`ResponseReview::to_json`]: the same bytes
/// written straight into one buffer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseReview<'a> {
    pub api_version: Cow<'a, str>,
    pub kind: &'static str,
    pub response: Response,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    /// The JSONPatch as JSON text; on the wire it is base64 (Go's `[]byte`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_base64"
    )]
    pub patch: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn serialize_base64<S: serde::Serializer>(
    patch: &Option<Vec<u8>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match patch {
        Some(json) => serializer.serialize_str(&BASE64.encode(json)),
        None => serializer.serialize_none(),
    }
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl<'a> ResponseReview<'a> {
    /// Allowed, unchanged.
    fn allow(api_version: Cow<'a, str>, uid: &str) -> ResponseReview<'a> {
        ResponseReview {
            api_version: if api_version.is_empty() {
                Cow::Borrowed(V1)
            } else {
                api_version
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

    fn warn(mut self, warnings: impl IntoIterator<Item = String>) -> ResponseReview<'a> {
        self.response.warnings.extend(warnings);
        self
    }

    /// The answer as compact JSON, byte for byte what `serde_json::to_vec` writes, into one
    /// buffer sized up front: the patch is base64-encoded in place.
    pub fn to_json(&self) -> Vec<u8> {
        let r = &self.response;
        let patch_len = self.patch_len();
        let mut out = Vec::with_capacity(self.json_len(patch_len));
        out.extend_from_slice(b"{\"apiVersion\":");
        json_str(&mut out, &self.api_version);
        out.extend_from_slice(b",\"kind\":");
        json_str(&mut out, self.kind);
        out.extend_from_slice(b",\"response\":{\"uid\":");
        json_str(&mut out, &r.uid);
        out.extend_from_slice(if r.allowed {
            b",\"allowed\":true"
        } else {
            b",\"allowed\":false"
        });
        if let Some(patch) = &r.patch {
            out.extend_from_slice(b",\"patch\":\"");
            let at = out.len();
            out.resize(at + patch_len, 0);
            // The space is exactly the encoded length.
            let written = BASE64.encode_slice(patch, &mut out[at..]).unwrap_or(0);
            out.truncate(at + written);
            out.push(b'"');
        }
        if let Some(patch_type) = r.patch_type {
            out.extend_from_slice(b",\"patchType\":");
            json_str(&mut out, patch_type);
        }
        if !r.warnings.is_empty() {
            out.extend_from_slice(b",\"warnings\":[");
            for (i, warning) in r.warnings.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(&mut out, warning);
            }
            out.push(b']');
        }
        out.extend_from_slice(b"}}");
        out
    }

    /// The patch's length in base64.
    fn patch_len(&self) -> usize {
        (self.response.patch.as_ref())
            .map_or(0, |p| base64::encoded_len(p.len(), true).unwrap_or(0))
    }

    /// The length of [`Self::to_json`]'s text when no string needs an escape: the buffer
    /// never grows then (it did, by a copy of the whole answer, when this was short).
    fn json_len(&self, patch_len: usize) -> usize {
        let r = &self.response;
        const KEYS: usize = r#"{"apiVersion":"","kind":"","response":{"uid":"","allowed":false,"patch":"","patchType":"","warnings":[]}}"#.len();
        KEYS + self.api_version.len()
            + self.kind.len()
            + r.uid.len()
            + patch_len
            + r.patch_type.map_or(0, str::len)
            + r.warnings.iter().map(|w| w.len() + 3).sum::<usize>()
    }
}

const V1: &str = "admission.k8s.io/v1";

/// Room for a usual JSONPatch up front (the 4 KB recorded review's is ~700 bytes; a drain
/// wait's carries its CA bundle and grows once or twice).
pub const PATCH_CAPACITY: usize = 1024;

fn review_pod<'a>(
    api_version: Cow<'a, str>,
    request: PodRequest<'a>,
    settings: &Settings,
    objects: impl FnOnce(&str) -> NamespaceObjects,
) -> Reviewed<'a> {
    let response = ResponseReview::allow(api_version, &request.uid);
    let PodRequest {
        uid,
        kind,
        sub_resource,
        namespace,
        operation,
        dry_run,
        object,
    } = request;
    let pod = object.as_ref();
    let mut summary = Summary {
        uid,
        namespace: namespace.clone().unwrap_or_default(),
        pod: pod.map(pod_name).unwrap_or_default(),
        dry_run,
        ..Summary::default()
    };
    if !is_pod(&kind.group, &kind.kind) {
        let warning = not_a_pod(&kind.group, &kind.version, &kind.kind);
        summary.kind = kind.kind;
        return reviewed(response.warn([warning]), Outcome::FailedOpen, summary);
    }
    summary.kind = kind.kind;
    let pod = match pod {
        Some(pod) if operation == Operation::Create && sub_resource.is_none() => pod,
        _ => return reviewed(response, Outcome::Unchanged, summary),
    };
    // The request's namespace is authoritative: a pod made from a template has none of its own.
    let Some(namespace) = namespace.as_deref().or(pod.metadata.namespace.as_deref()) else {
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
        let mut patch = Vec::with_capacity(PATCH_CAPACITY);
        plan.write_patch(&mut patch);
        response.response.patch = Some(patch);
        response.response.patch_type = Some("JSONPatch");
    }
    reviewed(response.warn(plan.warnings), outcome, summary)
}

fn reviewed<'a>(
    review: ResponseReview<'a>,
    outcome: Outcome,
    mut summary: Summary<'a>,
) -> Reviewed<'a> {
    // What the log line says is what was answered.
    summary.warnings = review.response.warnings.len();
    Reviewed {
        review,
        outcome,
        summary,
    }
}

fn is_pod(group: &str, kind: &str) -> bool {
    group.is_empty() && kind == "Pod"
}

/// The webhook is registered for pods only; anything else means a misconfiguration.
fn not_a_pod(group: &str, version: &str, kind: &str) -> String {
    format!("gracegate: only Pods are mutated, not {group}/{version} {kind}")
}

fn pod_name<'a>(pod: &PodView<'a>) -> Cow<'a, str> {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => Cow::Owned([prefix.as_ref(), "*"].concat()),
        (None, None) => Cow::Borrowed(""),
    }
}

/// The body did not parse as a review of a Pod. If it is still a review with a request uid —
/// another kind, or a pod gracegate cannot read — allow it unchanged and say why; otherwise
/// it is a bad request.
fn fail_open<'a>(body: &[u8], pod_error: &json::Error) -> Result<Reviewed<'a>, BadReview> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BadReview(format!("body is not JSON: {e}")))?;
    if let Ok(review) = serde_json::from_value::<AdmissionReview<DynamicObject>>(value.clone())
        && let Ok(request) = TryInto::<AdmissionRequest<DynamicObject>>::try_into(review)
    {
        let k = &request.kind;
        let pod_kind = is_pod(&k.group, &k.kind);
        let warning = if pod_kind {
            format!("gracegate: could not read the pod ({pod_error}); pod admitted unchanged")
        } else {
            not_a_pod(&k.group, &k.version, &k.kind)
        };
        let response =
            ResponseReview::allow(Cow::Owned(request.types.api_version.clone()), &request.uid)
                .warn([warning]);
        let summary = Summary {
            uid: Cow::Owned(request.uid),
            kind: Cow::Owned(request.kind.kind),
            namespace: Cow::Owned(request.namespace.unwrap_or_default()),
            pod: Cow::Owned(request.name),
            skip: Some(if pod_kind {
                "unreadable-pod"
            } else {
                "not-a-pod"
            }),
            ..Summary::default()
        };
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
        ResponseReview::allow(Cow::Owned(api_version.to_string()), uid).warn([warning]),
        Outcome::FailedOpen,
        Summary {
            uid: Cow::Owned(uid.to_string()),
            kind: Cow::Owned(
                request
                    .pointer("/kind/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
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
mod tests;
