//! What every answer of the webhook must satisfy, whatever the pod. Shared by the property
//! tests (`tests/webhook/properties.rs`) and the fuzz targets (`fuzz/`), which include this
//! file by path; it needs only `serde_json`, `json-patch`, `base64` and `k8s-openapi`.
//!
//! [`check`] takes a request review and gracegate's answer, both as JSON, and returns the
//! patched pod (when there is a patch) or a description of the broken rule:
//!
//! * the uid is echoed and the pod is allowed (gracegate never denies);
//! * the patch is base64 JSONPatch of `add` and `replace` operations and applies to the pod;
//! * nothing the pod had is removed or changed, except a raised
//!   `terminationGracePeriodSeconds` and gracegate's own `gracegate.io/prestop-source`;
//! * what the API server validates holds for what was added: a gate's condition type is a
//!   qualified name (name part ≤ 63 characters), a native `sleep.seconds` is between 1 and
//!   the grace period, and an exec preStop's sleep too;
//! * a pod that deserialised as a `k8s_openapi` Pod still does after the patch.
//!
//! [`second_request`] makes the review of the patched pod, whose answer [`check_unchanged`]
//! checks: reviewing gracegate's own output adds nothing (`reinvocationPolicy: IfNeeded`).

#![allow(dead_code)] // each includer uses its part

use base64::Engine;
use serde_json::Value;

/// The annotation gracegate writes and may replace.
pub const PRESTOP_SOURCE: &str = "gracegate.io/prestop-source";
/// What the API server assumes when a pod sets no grace period.
pub const DEFAULT_GRACE: i64 = 30;

/// Check one answer; `Ok(Some(patched pod))` when it carries a patch.
pub fn check(request: &Value, answer: &Value) -> Result<Option<Value>, String> {
    if answer["kind"] != "AdmissionReview" {
        return Err(format!("answer kind {:?}", answer["kind"]));
    }
    let response = &answer["response"];
    if response["uid"] != request["request"]["uid"] {
        return Err(format!(
            "uid {} answered for {}",
            response["uid"], request["request"]["uid"]
        ));
    }
    if response["allowed"] != true {
        return Err("a pod was denied".into());
    }
    let Some(encoded) = response.get("patch") else {
        if response.get("patchType").is_some() {
            return Err("patchType without a patch".into());
        }
        return Ok(None);
    };
    if response["patchType"] != "JSONPatch" {
        return Err(format!("patchType {:?}", response["patchType"]));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_str().ok_or("patch is not a string")?)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSONPatch: {e}"))?;
    for op in &patch.0 {
        match op {
            json_patch::PatchOperation::Add(_) | json_patch::PatchOperation::Replace(_) => {}
            other => return Err(format!("operation other than add/replace: {other:?}")),
        }
    }
    let original = &request["request"]["object"];
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch)
        .map_err(|e| format!("patch does not apply to the pod it was made for: {e}"))?;

    keeps(original, &patched, &mut Vec::new())?;
    let grace = |pod: &Value| pod["spec"]["terminationGracePeriodSeconds"].as_i64();
    match (grace(original), grace(&patched)) {
        (Some(before), Some(after)) if after < before => {
            return Err(format!("grace period lowered from {before} to {after}"));
        }
        (Some(_), None) => return Err("grace period removed".into()),
        _ => {}
    }
    let grace = grace(&patched).unwrap_or(DEFAULT_GRACE);

    let gates = |pod: &Value| -> Vec<String> {
        pod["spec"]["readinessGates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["conditionType"].as_str().map(String::from))
            .collect()
    };
    let before = gates(original);
    for gate in gates(&patched).iter().skip(before.len()) {
        qualified_name(gate).map_err(|e| format!("gate {gate:?}: {e}"))?;
        if before.contains(gate) {
            return Err(format!("gate {gate} added twice"));
        }
    }

    let containers = |pod: &Value| pod["spec"]["containers"].as_array().cloned();
    let before = containers(original).unwrap_or_default();
    for (i, c) in containers(&patched).into_iter().flatten().enumerate() {
        let had = before.get(i).map(|b| &b["lifecycle"]["preStop"]);
        if had.is_some_and(|h| !h.is_null()) {
            continue; // the container's own preStop: left as it was (checked by `keeps`)
        }
        let pre_stop = &c["lifecycle"]["preStop"];
        if pre_stop.is_null() {
            continue;
        }
        let seconds = injected_sleep(pre_stop)
            .ok_or_else(|| format!("container {i}: injected preStop {pre_stop} is no sleep"))?;
        if !(1..=grace).contains(&seconds) {
            return Err(format!(
                "container {i}: preStop sleeps {seconds}s, outside 1..={grace} (the grace period)"
            ));
        }
    }

    if serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(original.clone()).is_ok() {
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(patched.clone())
            .map_err(|e| format!("the patched pod is no longer a Pod: {e}"))?;
    }
    Ok(Some(patched))
}

/// The seconds of a preStop gracegate injects: native `sleep` or `/bin/sh -c "sleep N"`.
fn injected_sleep(handler: &Value) -> Option<i64> {
    if let Some(seconds) = handler["sleep"]["seconds"].as_i64() {
        return Some(seconds);
    }
    match handler["exec"]["command"].as_array()?.as_slice() {
        [sh, c, script] if sh == "/bin/sh" && c == "-c" => {
            script.as_str()?.strip_prefix("sleep ")?.parse().ok()
        }
        _ => None,
    }
}

/// Everything `original` holds is in `patched` unchanged: object members (unless null),
/// array elements at the same index (arrays may only grow), equal scalars. The two values
/// gracegate may change are exempt: the grace period (raising is checked by the caller) and
/// the `gracegate.io/prestop-source` annotation.
fn keeps(original: &Value, patched: &Value, path: &mut Vec<String>) -> Result<(), String> {
    let exempt = matches!(
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["spec", "terminationGracePeriodSeconds"] | ["metadata", "annotations", PRESTOP_SOURCE]
    );
    if exempt {
        return Ok(());
    }
    match (original, patched) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                if v.is_null() {
                    continue;
                }
                path.push(k.clone());
                let kept = match b.get(k) {
                    Some(w) => keeps(v, w, path),
                    None => Err(format!("/{} removed", path.join("/"))),
                };
                path.pop();
                kept?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => {
            if b.len() < a.len() {
                return Err(format!("/{} shrank", path.join("/")));
            }
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                path.push(i.to_string());
                let kept = keeps(v, w, path);
                path.pop();
                kept?;
            }
            Ok(())
        }
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("/{} changed from {a} to {b}", path.join("/"))),
    }
}

/// A Kubernetes qualified name: `[prefix/]name`, prefix a DNS subdomain (≤ 253), name ≤ 63
/// characters of `[A-Za-z0-9-_.]`, starting and ending alphanumeric.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Err(format!("prefix {prefix:?} is not a DNS subdomain"));
        }
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 {
        return Err(format!("name part is {} characters", name.len()));
    }
    if !alnum(name.chars().next())
        || !alnum(name.chars().last())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!("name part {name:?} is not a qualified name"));
    }
    Ok(())
}

/// The same review with the patched pod as its object: what the API server sends when it
/// reinvokes the webhook.
pub fn second_request(request: &Value, patched: &Value) -> Value {
    let mut again = request.clone();
    again["request"]["object"] = patched.clone();
    again
}

/// The answer to [`second_request`] must change nothing.
pub fn check_unchanged(request: &Value, answer: &Value) -> Result<(), String> {
    match check(request, answer)? {
        None => Ok(()),
        Some(_) => Err(format!(
            "a second review of gracegate's own output patched again: {}",
            answer["response"]["patch"]
        )),
    }
}
