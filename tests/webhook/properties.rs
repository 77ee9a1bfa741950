//! Properties of every answer, over generated pods: random regular containers, init
//! containers and native sidecars, lifecycles (none, a postStart, each kind of own preStop),
//! gates, grace periods, labels, and pod and namespace annotations, malformed ones included,
//! reviewed through `review::review` against the recorded cluster objects. What must hold is
//! `tests/support/invariants.rs` (shared with the fuzz targets): the patch applies to the pod
//! it was made for, only adds (a raised grace period and gracegate's own
//! `gracegate.io/prestop-source` aside), passes the API server's validation, keeps the pod a
//! `k8s_openapi` Pod, never lowers the grace period, and a second review of the result adds
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use gracegate::inject::{PrestopAction, Settings};
use gracegate::objects::NamespaceObjects;
use gracegate::webhook::review::{parse, parse_serde, review};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};

use crate::common::{cluster, review as recorded};

#[path = "../support/invariants.rs"]
mod invariants;

const GATE_PREFIX: &str = "target-health.elbv2.k8s.aws";
const BINDING: &str = "k8s-game2048-service2-6f5e3c2a1b";
const SELECTED: (&str, &str) = ("app.kubernetes.io/name", "app-2048");
const CONTAINERS: [&str; 4] = ["app", "shipper", "metrics", "worker"];
const INIT_CONTAINERS: [&str; 2] = ["envoy", "migrate"];

/// Seconds as a user might write them in an annotation: good, zero, out of range, not numbers.
fn seconds_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..200).prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("120".to_string()),
        Just("121".to_string()),
        Just("3600".to_string()),
        Just("3601".to_string()),
        Just(" 30 ".to_string()),
        Just("-5".to_string()),
        Just("abc".to_string()),
        Just("99999".to_string()),
        Just("4294967296".to_string()),
        Just(String::new()),
        "[ -~]{0,6}",
    ]
}

fn lifecycle() -> impl Strategy<Value = Option<Value>> {
    let exec = |cmd: Vec<String>| json!({ "preStop": { "exec": { "command": cmd } } });
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => Just(Some(json!({}))),
        1 => Just(Some(json!({ "preStop": null }))),
        1 => Just(Some(json!({ "postStart": { "exec": { "command": ["true"] } } }))),
        1 => (1i64..300).prop_map(|n| Some(json!({ "preStop": { "sleep": { "seconds": n } } }))),
        1 => (0u32..300).prop_map(move |n| Some(exec(vec!["/bin/sleep".into(), n.to_string()]))),
        1 => (0u32..300).prop_map(move |n| Some(exec(vec!["/bin/sh".into(), "-c".into(), format!("sleep {n}")]))),
        1 => Just(Some(exec(vec!["/app/drain".into()]))),
        1 => Just(Some(json!({
            "preStop": { "httpGet": { "path": "/drain", "port": 8080 } },
            "postStart": { "exec": { "command": ["true"] } },
        }))),
    ]
}

fn container(name: &'static str, sidecar: bool) -> impl Strategy<Value = Value> {
    (lifecycle(), any::<bool>()).prop_map(move |(lifecycle, port)| {
        let mut c = json!({ "name": name, "image": "registry.example/app:1" });
        if let Some(l) = lifecycle {
            c["lifecycle"] = l;
        }
        if port {
            c["ports"] = json!([{ "name": "http", "containerPort": 8080 }]);
        }
        if sidecar {
            c["restartPolicy"] = json!("Always");
        }
        c
    })
}

fn gates() -> impl Strategy<Value = Option<Vec<String>>> {
    let gate = prop_oneof![
        Just(format!("{GATE_PREFIX}/{BINDING}")),
        Just("target-health.alb.ingress.k8s.aws/ingress-2048_service-2048_80".to_string()),
        Just("example.com/warmed-up".to_string()),
        Just(format!("other.example.com/{BINDING}")),
    ];
    proptest::option::of(proptest::collection::vec(gate, 0..3))
}

/// `(key, value)` pairs of pod annotations, each key at most once.
fn pod_annotations() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    let containers = proptest::sample::subsequence(
        vec![
            "app", "shipper", "metrics", "worker", "envoy", "nope", " app ", "",
        ],
        0..4,
    )
    .prop_map(|names| names.join(","));
    let entries = (
        proptest::option::of(prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("nope".to_string())
        ]),
        proptest::option::of(seconds_text()),
        proptest::option::of(seconds_text()),
        proptest::option::of(containers),
        proptest::option::of(prop_oneof![
            Just("default".to_string()),
            Just("annotation".to_string()),
            Just("deregistration-delay".to_string()),
            Just("from an older manifest".to_string()),
        ]),
        any::<bool>(),
    );
    proptest::option::of(entries.prop_map(
        |(inject, prestop, budget, containers, source, other)| {
            let mut a = BTreeMap::new();
            let mut put = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    a.insert(k.to_string(), v);
                }
            };
            put("gracegate.io/inject", inject);
            put("gracegate.io/prestop-seconds", prestop);
            put("gracegate.io/shutdown-budget-seconds", budget);
            put("gracegate.io/containers", containers);
            put("gracegate.io/prestop-source", source);
            put("example.com/team", other.then(|| "payments".to_string()));
            a
        },
    ))
}

fn namespace_annotations() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    proptest::option::of(
        (
            proptest::option::of(prop_oneof![Just("false"), Just("true"), Just("maybe")]),
            proptest::option::of(seconds_text()),
            proptest::option::of(seconds_text()),
        )
            .prop_map(|(inject, prestop, budget)| {
                let mut a = BTreeMap::new();
                if let Some(v) = inject {
                    a.insert("gracegate.io/inject".to_string(), v.to_string());
                }
                if let Some(v) = prestop {
                    a.insert("gracegate.io/prestop-seconds".to_string(), v);
                }
                if let Some(v) = budget {
                    a.insert("gracegate.io/shutdown-budget-seconds".to_string(), v);
                }
                a
            }),
    )
}

fn labels() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    // Mostly selected by the recorded Service: those are the pods that get patched.
    proptest::option::weighted(
        0.9,
        (
            prop_oneof![4 => Just(SELECTED.1), 1 => Just("batch-job")],
            any::<bool>(),
        )
            .prop_map(|(name, extra)| {
                let mut l = BTreeMap::from([(SELECTED.0.to_string(), name.to_string())]);
                if extra {
                    l.insert("tier".into(), "web".into());
                }
                l
            }),
    )
}

fn pod() -> impl Strategy<Value = Value> {
    let containers = (1..=CONTAINERS.len()).prop_flat_map(|n| {
        CONTAINERS[..n]
            .iter()
            .map(|name| container(name, false))
            .collect::<Vec<_>>()
    });
    let init_containers =
        proptest::option::of((any::<bool>(), any::<bool>())).prop_flat_map(|init| match init {
            None => Just(None).boxed(),
            Some((sidecar, plain)) => {
                let mut list = Vec::new();
                if sidecar {
                    list.push(container(INIT_CONTAINERS[0], true).boxed());
                }
                if plain {
                    list.push(container(INIT_CONTAINERS[1], false).boxed());
                }
                list.prop_map(Some).boxed()
            }
        });
    let grace = prop_oneof![
        Just(None),
        (0i64..200).prop_map(Some),
        (200i64..100_000).prop_map(Some),
    ];
    (
        containers,
        init_containers,
        gates(),
        grace,
        pod_annotations(),
        labels(),
        any::<bool>(),
    )
        .prop_map(
            |(containers, init_containers, gates, grace, annotations, labels, named)| {
                let mut metadata = json!({ "namespace": "game-2048" });
                if named {
                    metadata["name"] = json!("generated");
                } else {
                    metadata["generateName"] = json!("deployment-2048-5c4b6d7f8-");
                }
                if let Some(a) = annotations {
                    metadata["annotations"] = json!(a);
                }
                if let Some(l) = labels {
                    metadata["labels"] = json!(l);
                }
                let mut spec = json!({ "containers": containers });
                if let Some(i) = init_containers {
                    spec["initContainers"] = json!(i);
                }
                if let Some(g) = gates {
                    let g: Vec<Value> = g.iter().map(|c| json!({ "conditionType": c })).collect();
                    spec["readinessGates"] = json!(g);
                }
                if let Some(t) = grace {
                    spec["terminationGracePeriodSeconds"] = json!(t);
                }
                json!({ "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec })
            },
        )
}

/// The binding's name: the recorded one, the longest a gate allows, one character more.
fn binding_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(BINDING.to_string()),
        1 => Just("b".repeat(63)),
        1 => Just("b".repeat(64)),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    prop_oneof![Just(PrestopAction::Sleep), Just(PrestopAction::Exec)].prop_map(|action| Settings {
        prestop_action: action,
        ..Settings::default()
    })
}

struct World {
    objects: NamespaceObjects,
    template: Value,
}

fn world() -> World {
    World {
        objects: cluster().objects("game-2048"),
        template: recorded("create-deployment-pod.json"),
    }
}

fn answer(body: &Value, settings: &Settings, objects: &NamespaceObjects) -> Value {
    let bytes = serde_json::to_vec(body).unwrap();
    // gracegate's reader reads what serde_json's derive reads.
    assert_eq!(parse(&bytes).unwrap(), parse_serde(&bytes).unwrap());
    let reviewed = review(&bytes, settings, |_| objects.clone()).expect("a review is answered");
    serde_json::to_value(&reviewed.review).unwrap()
}

fn check_case(
    world: &World,
    pod: Value,
    settings: &Settings,
    namespace_annotations: Option<BTreeMap<String, String>>,
    binding_name: String,
) -> Result<(), TestCaseError> {
    // Every generated pod is one the API server could send.
    prop_assert!(
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod.clone()).is_ok(),
        "generated an invalid pod: {pod}"
    );
    let mut objects = world.objects.clone();
    let namespace = Arc::make_mut(objects.namespace.as_mut().unwrap());
    namespace.metadata.annotations = namespace_annotations;
    Arc::make_mut(&mut objects.bindings[0]).metadata.name = Some(binding_name);

    let mut request = world.template.clone();
    request["request"]["object"] = pod;
    let first = answer(&request, settings, &objects);
    let patched = invariants::check(&request, &first).map_err(TestCaseError::fail)?;
    if let Some(patched) = patched {
        let again = invariants::second_request(&request, &patched);
        let second = answer(&again, settings, &objects);
        invariants::check_unchanged(&again, &second).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    // ~2 s in a debug build; `PROPTEST_CASES` raises it for a longer search.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(768)
    ))]

    #[test]
    fn every_patch_applies_validates_and_is_final(
        pod in pod(),
        settings in settings(),
        namespace_annotations in namespace_annotations(),
        binding_name in binding_name(),
    ) {
        thread_local!(static WORLD: World = world());
        WORLD.with(|w| check_case(w, pod, &settings, namespace_annotations, binding_name))?;
    }
}

/// The checks can fail: a patch that removes, lowers or injects a zero sleep is caught.
#[test]
fn the_invariants_catch_bad_patches() {
    use base64::Engine;
    let request = recorded("create-pod-legacy-gate-own-prestop.json");
    let with_patch = |patch: Value| {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": { "uid": request["request"]["uid"], "allowed": true,
                          "patchType": "JSONPatch", "patch": encoded },
        })
    };
    let bad = [
        (
            json!([{ "op": "remove", "path": "/spec/readinessGates" }]),
            "add/replace",
        ),
        (
            json!([{ "op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": 5 }]),
            "lowered",
        ),
        (
            json!([{ "op": "add", "path": "/spec/containers/1/lifecycle",
                     "value": { "preStop": { "sleep": { "seconds": 0 } } } }]),
            "outside 1..=10",
        ),
        (
            json!([{ "op": "add", "path": "/spec/containers/1/lifecycle",
                     "value": { "preStop": { "sleep": { "seconds": 11 } } } }]),
            "outside 1..=10",
        ),
        (
            json!([{ "op": "add", "path": "/spec/containers/0/lifecycle",
                     "value": { "preStop": { "sleep": { "seconds": 5 } } } }]),
            "removed",
        ),
        (
            json!([{ "op": "add", "path": "/spec/readinessGates/-",
                     "value": { "conditionType": format!("{GATE_PREFIX}/{}", "b".repeat(64)) } }]),
            "64 characters",
        ),
        (
            json!([{ "op": "add", "path": "/spec/containers/9/lifecycle", "value": {} }]),
            "does not apply",
        ),
        (
            json!([{ "op": "add", "path": "/spec/containers/1/lifecycle", "value": 7 }]),
            "no longer a Pod",
        ),
    ];
    for (patch, expected) in bad {
        let error = invariants::check(&request, &with_patch(patch.clone()))
            .expect_err(&format!("{patch} passed"));
        assert!(error.contains(expected), "{patch}: {error}");
    }
    // And the real answer passes.
    let good = answer(&request, &Settings::default(), &world().objects);
    assert!(invariants::check(&request, &good).unwrap().is_some());
}
