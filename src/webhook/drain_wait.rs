//! `GET /drain/v1/namespaces/{ns}/pods/{name}?uid={uid}&timeout={seconds}`: the drain-wait
//! answer `gracegate-wait` asks for in its pod's preStop (issue 14, waiter/README.md).
//!
//! | answer | when |
//! |---|---|
//! | 200 `{"release": true, "uid", "reason"}` | the leader released this pod (this uid) |
//! | 200 `{"release": false, "uid", "reason"}` | not yet, after holding the poll up to `timeout` (≤ 25 s) |
//! | 503 `{"reason": "not-leader"}` | this replica does not hold the Lease, or lost it meanwhile |
//! | 503 `{"reason": "busy"}` | over `--max-drain-waits` open asks |
//! | 400 `{"reason": "bad-request", "message"}` | a namespace, name, uid or timeout that cannot be a pod's |
//!
//! The route sits beside `/mutate`, outside its body limit, request timeout and in-flight cap
//! (a parked poll must neither be cut at the review's 10 s nor hold a review's place); it
//! reads no body. Non-leaders do not forward: see [`crate::waits`] and the README.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::waits::{Answer, Board, MAX_POLL, WaitKey};

/// The route's path, as the waiter builds it after the URL's prefix.
pub const PATH: &str = "/drain/v1/namespaces/{namespace}/pods/{name}";

/// The drain-wait route alone, answering from `board`.
pub fn router(board: Arc<Board>) -> Router {
    Router::new().route(PATH, get(ask)).with_state(board)
}

async fn ask(
    State(board): State<Arc<Board>>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let asked = parse(&namespace, &name, query.as_deref().unwrap_or(""));
    let (key, timeout) = match asked {
        Ok(asked) => asked,
        Err(message) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({ "reason": "bad-request", "message": message }),
            );
        }
    };
    let uid = key.uid.clone();
    match board.ask(key, timeout).await {
        Answer::Verdict(verdict) => reply(
            StatusCode::OK,
            json!({ "release": verdict.is_release(), "uid": uid, "reason": verdict.reason() }),
        ),
        Answer::NotLeader => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "reason": "not-leader" }),
        ),
        Answer::Busy => reply(StatusCode::SERVICE_UNAVAILABLE, json!({ "reason": "busy" })),
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The pod asked about and how long to hold the poll; a message for a 400 otherwise.
pub fn parse(namespace: &str, name: &str, query: &str) -> Result<(WaitKey, Duration), String> {
    if !is_dns_label(namespace) {
        return Err(format!("namespace {namespace:?} is not a DNS label"));
    }
    if !is_dns_subdomain(name) {
        return Err(format!("pod name {name:?} is not a DNS subdomain"));
    }
    let mut uid = None;
    let mut timeout = MAX_POLL;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "uid" => uid = Some(v),
            "timeout" => {
                let seconds: u64 = v
                    .parse()
                    .map_err(|_| format!("timeout {v:?} is not a whole number of seconds"))?;
                timeout = Duration::from_secs(seconds).min(MAX_POLL);
            }
            // Unknown parameters are for later versions of the waiter.
            _ => {}
        }
    }
    let uid = uid.ok_or("no uid")?;
    // The API server's uids are UUIDs; anything else cannot name a pod.
    if uid.is_empty()
        || uid.len() > 64
        || !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!("uid {uid:?} is not a pod's uid"));
    }
    Ok((
        WaitKey {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        },
        timeout,
    ))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const UID: &str = "5f0c2a4e-8d1b-4c7a-9e3f-1a2b3c4d5e6f";

    #[rstest]
    #[case::plain("shop", "web-7d9f8-x2x9z", "uid=U&timeout=25", Ok(25))]
    #[case::no_timeout_is_the_longest("shop", "web-0", "uid=U", Ok(25))]
    #[case::long_timeout_capped("shop", "web-0", "timeout=600&uid=U", Ok(25))]
    #[case::zero_timeout("shop", "web-0", "uid=U&timeout=0", Ok(0))]
    #[case::unknown_parameters_ignored("shop", "web-0", "uid=U&v=2", Ok(25))]
    #[case::dotted_name("shop", "web.a-0", "uid=U", Ok(25))]
    #[case::no_uid("shop", "web-0", "timeout=25", Err("no uid"))]
    #[case::empty_uid("shop", "web-0", "uid=", Err("is not a pod's uid"))]
    #[case::uid_with_a_slash("shop", "web-0", "uid=a%2Fb", Err("is not a pod's uid"))]
    #[case::negative_timeout("shop", "web-0", "uid=U&timeout=-1", Err("whole number"))]
    #[case::fractional_timeout("shop", "web-0", "uid=U&timeout=2.5", Err("whole number"))]
    #[case::upper_case_namespace("Shop", "web-0", "uid=U", Err("not a DNS label"))]
    #[case::empty_namespace("", "web-0", "uid=U", Err("not a DNS label"))]
    #[case::name_with_a_space("shop", "web 0", "uid=U", Err("not a DNS subdomain"))]
    #[case::name_ending_in_a_dot("shop", "web.", "uid=U", Err("not a DNS subdomain"))]
    fn what_is_asked(
        #[case] namespace: &str,
        #[case] name: &str,
        #[case] query: &str,
        #[case] expected: Result<u64, &str>,
    ) {
        let got = parse(namespace, name, &query.replace('U', UID));
        match (got, expected) {
            (Ok((key, timeout)), Ok(seconds)) => {
                assert_eq!(timeout, Duration::from_secs(seconds));
                assert_eq!(
                    (key.namespace.as_str(), key.name.as_str()),
                    (namespace, name)
                );
                assert_eq!(key.uid, UID);
            }
            (Err(message), Err(part)) => assert!(message.contains(part), "{message}"),
            (got, expected) => panic!("{got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn an_overlong_name_or_namespace_is_refused() {
        let label = "a".repeat(64);
        assert!(parse(&label, "web", &format!("uid={UID}")).is_err());
        let name = [
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
        ]
        .join(".");
        assert!(name.len() > 253);
        assert!(parse("shop", &name, &format!("uid={UID}")).is_err());
    }
}
