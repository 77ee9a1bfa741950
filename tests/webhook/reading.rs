//! The webhook reads a review with its own JSON reader (`gracegate::json`), which skips what
//! gracegate does not read by structure alone; serde_json's derive of the same types is the
//! reference. Both must read every recorded review, and every variation of one, the same.

use gracegate::webhook::review::{parse, parse_serde};
use rstest::rstest;
use serde_json::{Value, json};

use crate::common::review as recorded;

fn same_reading(body: &[u8]) {
    let by_serde = parse_serde(body).expect("serde reads it");
    assert_eq!(parse(body).expect("the reader reads it"), by_serde);
}

fn both_ways(review: &Value) {
    same_reading(&serde_json::to_vec(review).unwrap());
    same_reading(&serde_json::to_vec_pretty(review).unwrap());
}

#[rstest]
fn every_recorded_review_reads_as_serde_reads_it(
    #[files("tests/fixtures/admission/*.json")] path: std::path::PathBuf,
) {
    let text = std::fs::read(&path).unwrap();
    same_reading(&text);
    both_ways(&serde_json::from_slice(&text).unwrap());
}

/// Variations of the recorded review, each set at one JSON pointer.
#[rstest]
#[case::escaped_names("/request/object/metadata/generateName", json!("a\"b\\c/\u{e9}\u{1F600}\n-"))]
#[case::escaped_label("/request/object/metadata/labels", json!({"a/b": "x\ty", "\u{e9}": "\u{2028}"}))]
#[case::annotations("/request/object/metadata/annotations", json!({"gracegate.io/prestop-seconds": "40"}))]
#[case::null_annotations("/request/object/metadata/annotations", Value::Null)]
#[case::no_spec("/request/object/spec", Value::Null)]
#[case::null_grace("/request/object/spec/terminationGracePeriodSeconds", Value::Null)]
#[case::negative_grace("/request/object/spec/terminationGracePeriodSeconds", json!(-1))]
#[case::gates("/request/object/spec/readinessGates", json!([{"conditionType": "a/b"}, {"conditionType": "c", "x": 1}]))]
#[case::gates_without_type("/request/object/spec/readinessGates", json!([{}, {"conditionType": null}]))]
#[case::os("/request/object/spec/os", json!({"name": "windows"}))]
#[case::init_containers("/request/object/spec/initContainers", json!([{"name": "gracegate-waiter", "image": "x"}, {}]))]
#[case::volumes("/request/object/spec/volumes", json!([{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": null}, {"name": "c", "configMap": {"name": "x"}}]))]
#[case::env("/request/object/spec/containers/0/env", json!([{"name": "GRACEGATE_DRAIN_WAIT_URL", "value": "x"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]))]
#[case::mounts("/request/object/spec/containers/0/volumeMounts", json!([{"name": "gracegate-waiter", "mountPath": "/gracegate", "readOnly": true}]))]
#[case::post_start("/request/object/spec/containers/0/lifecycle", json!({"postStart": {"exec": {"command": ["a"]}}}))]
#[case::pre_stop("/request/object/spec/containers/0/lifecycle", json!({"preStop": {"sleep": {"seconds": 5}}}))]
#[case::pre_stop_http("/request/object/spec/containers/0/lifecycle", json!({"preStop": {"httpGet": {"port": "http", "path": "/drain"}}}))]
#[case::null_pre_stop("/request/object/spec/containers/0/lifecycle", json!({"preStop": null}))]
#[case::dry_run("/request/dryRun", json!(true))]
#[case::sub_resource("/request/subResource", json!("status"))]
#[case::no_object("/request/object", Value::Null)]
#[case::unread_oddities("/request/object/status", json!({"x": [1.5e300, -0, "\\", {"\"": [[]]}, true, null]}))]
fn variations_read_as_serde_reads_them(#[case] pointer: &str, #[case] value: Value) {
    let mut review = recorded("create-deployment-pod.json");
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = review.pointer_mut(parent).unwrap();
    match parent {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => panic!("{other}"),
    }
    both_ways(&review);
}

/// Where serde's derive refuses a `null` the reader reads it as absent, as the API server's
/// own decoder does; where a field has the wrong type, both refuse the review.
#[rstest]
#[case::null_containers("/request/object/spec/containers", Value::Null, true)]
#[case::null_metadata("/request/object/metadata", Value::Null, true)]
#[case::null_dry_run("/request/dryRun", Value::Null, true)]
#[case::grace_as_text("/request/object/spec/terminationGracePeriodSeconds", json!("30"), false)]
#[case::grace_as_fraction("/request/object/spec/terminationGracePeriodSeconds", json!(30.5), false)]
#[case::label_as_number("/request/object/metadata/labels", json!({"a": 1}), false)]
#[case::unknown_operation("/request/operation", json!("PATCH"), false)]
#[case::bad_pre_stop("/request/object/spec/containers/0/lifecycle", json!({"preStop": {"sleep": {"seconds": "x"}}}), false)]
// The env is kept as text, read only by the drain wait (which then keeps its waiter out).
#[case::env_item_as_number("/request/object/spec/containers/0/env", json!([1]), true)]
#[case::env_as_object("/request/object/spec/containers/0/env", json!({"name": "A"}), true)]
fn where_serde_refuses(#[case] pointer: &str, #[case] value: Value, #[case] reader_reads: bool) {
    let mut review = recorded("create-deployment-pod.json");
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    review.pointer_mut(parent).unwrap()[key] = value;
    let body = serde_json::to_vec(&review).unwrap();
    assert!(parse_serde(&body).is_err());
    assert_eq!(
        parse(&body).is_ok(),
        reader_reads,
        "{:?}",
        parse(&body).err()
    );
}

#[rstest]
#[case::trailing(b"{\"request\":null} x".as_slice(), "trailing characters")]
#[case::truncated(b"{\"request\":{\"uid\":\"u\"".as_slice(), "unexpected end of JSON")]
#[case::not_an_object(b"[]".as_slice(), "expected an object")]
#[case::no_uid(b"{\"request\":{\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"operation\":\"CREATE\"}}".as_slice(), "missing field `uid`")]
fn a_broken_body_says_where(#[case] body: &[u8], #[case] what: &str) {
    assert!(parse_serde(body).is_err());
    let error = parse(body).unwrap_err();
    assert_eq!(error.what, what);
    assert!(error.at <= body.len());
}

/// serde's derive also reads a struct from an array of its fields and an enum from a one-key
/// map; no API server writes either, and the reader refuses both: the webhook then allows the
/// pod unchanged (bad_input.rs), as for any pod it cannot read.
#[rstest]
#[case::struct_as_array("/request/kind", json!(["", "v1", "Pod"]))]
#[case::enum_as_map("/request/operation", json!({"CREATE": null}))]
fn serde_spellings_no_api_server_writes(#[case] pointer: &str, #[case] value: Value) {
    let mut review = recorded("create-deployment-pod.json");
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    review.pointer_mut(parent).unwrap()[key] = value;
    let body = serde_json::to_vec(&review).unwrap();
    assert!(parse_serde(&body).is_ok());
    assert!(parse(&body).is_err());
}
