//! What gracegate's answer means for this pod (the contract's "Response handling").

use serde_json::Value;

use crate::failure::Failure;
use crate::http::Response;

/// Server-chosen text is shown in the pod's log: printable, and short.
const MAX_REASON: usize = 200;

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// 200 `{"release": true, "uid": <ours>}`: the pod's targets have left the load balancer.
    Released { reason: String },
    /// 200 `{"release": false}`: the long poll ran out; ask again.
    NotYet { reason: String },
    /// 503: a replica that does not hold the Lease; reconnect so the Service may route to
    /// the leader.
    NotLeader { reason: String },
    /// Anything else: back off and retry.
    Failed(Failure),
}

pub fn classify(response: &Response, uid: &str) -> Verdict {
    let body: Option<Value> = serde_json::from_slice(&response.body).ok();
    let reason = || {
        body.as_ref()
            .and_then(|b| b.get("reason"))
            .and_then(Value::as_str)
            .map(printable)
            .unwrap_or_default()
    };
    match response.status {
        200 => {}
        503 => return Verdict::NotLeader { reason: reason() },
        status => return Verdict::Failed(Failure::Status(status)),
    }
    let Some(body) = body.as_ref().filter(|b| b.is_object()) else {
        return Verdict::Failed(Failure::BadAnswer("the body is not a JSON object"));
    };
    match body.get("release").and_then(Value::as_bool) {
        Some(true) => match body.get("uid").and_then(Value::as_str) {
            Some(theirs) if theirs == uid => Verdict::Released { reason: reason() },
            theirs => Verdict::Failed(Failure::OtherUid(theirs.map(printable))),
        },
        Some(false) => Verdict::NotYet { reason: reason() },
        None => Verdict::Failed(Failure::BadAnswer("no boolean \"release\"")),
    }
}

/// `text` without control characters, cut at [`MAX_REASON`] characters.
pub fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    if text
        .chars()
        .filter(|c| !c.is_control())
        .nth(MAX_REASON)
        .is_some()
    {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "5f0c3a52-6f4e-4b8e-9f51-3c1b2f0e7a11";

    fn classify_(status: u16, body: &str) -> Verdict {
        classify(
            &Response {
                status,
                body: body.as_bytes().to_vec(),
            },
            UID,
        )
    }

    #[test]
    fn a_release_of_our_uid_releases() {
        assert_eq!(
            classify_(
                200,
                &format!(
                    r#"{{"release":true,"uid":"{UID}","reason":"targets-gone","waitedSeconds":12.5}}"#
                )
            ),
            Verdict::Released {
                reason: "targets-gone".into()
            }
        );
        assert_eq!(
            classify_(200, &format!(r#"{{"release":true,"uid":"{UID}"}}"#)),
            Verdict::Released { reason: "".into() }
        );
    }

    #[test]
    fn a_release_of_another_uid_or_none_is_not_ours() {
        assert_eq!(
            classify_(
                200,
                r#"{"release":true,"uid":"someone-else","reason":"targets-gone"}"#
            ),
            Verdict::Failed(Failure::OtherUid(Some("someone-else".into())))
        );
        assert_eq!(
            classify_(200, r#"{"release":true}"#),
            Verdict::Failed(Failure::OtherUid(None))
        );
        assert_eq!(
            classify_(200, r#"{"release":true,"uid":7}"#),
            Verdict::Failed(Failure::OtherUid(None))
        );
        let upper = UID.to_uppercase();
        assert!(matches!(
            classify_(200, &format!(r#"{{"release":true,"uid":"{upper}"}}"#)),
            Verdict::Failed(Failure::OtherUid(_))
        ));
    }

    #[test]
    fn not_yet_and_not_leader() {
        assert_eq!(
            classify_(
                200,
                &format!(r#"{{"release":false,"uid":"{UID}","reason":"targets-draining"}}"#)
            ),
            Verdict::NotYet {
                reason: "targets-draining".into()
            }
        );
        assert_eq!(
            classify_(503, r#"{"release":false,"reason":"not-leader"}"#),
            Verdict::NotLeader {
                reason: "not-leader".into()
            }
        );
        assert_eq!(
            classify_(503, "upstream overflow"),
            Verdict::NotLeader { reason: "".into() },
            "any 503 reconnects"
        );
    }

    #[test]
    fn a_503_that_says_release_is_not_a_release() {
        assert!(matches!(
            classify_(503, &format!(r#"{{"release":true,"uid":"{UID}"}}"#)),
            Verdict::NotLeader { .. }
        ));
    }

    #[test]
    fn everything_else_fails() {
        for (status, body) in [
            (500, r#"{"release":true}"#),
            (400, r#"{"reason":"bad uid"}"#),
            (404, ""),
            (204, ""),
            (302, ""),
        ] {
            assert_eq!(
                classify_(status, body),
                Verdict::Failed(Failure::Status(status))
            );
        }
        for body in [
            "",
            "release",
            "[true]",
            "null",
            r#"{"release":"true"}"#,
            r#"{"release":1}"#,
            r#"{"Release":true}"#,
            &format!(r#"{{"release":true,"uid":"{UID}""#),
        ] {
            assert!(
                matches!(classify_(200, body), Verdict::Failed(Failure::BadAnswer(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn reasons_are_printable_and_short() {
        assert_eq!(printable("a\nb\u{1b}[31mc"), "ab[31mc");
        let long = "x".repeat(500);
        assert_eq!(printable(&long).chars().count(), MAX_REASON + 1);
        assert_eq!(printable(&"y".repeat(MAX_REASON)), "y".repeat(MAX_REASON));
    }
}
