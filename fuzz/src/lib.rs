//! The fuzz targets' bodies, one function per target (`fuzz_targets/*.rs` only call them).
//! A panic is a finding: gracegate's own code must turn any input into an answer or an
//! error, and the checks below turn a wrong answer into a panic.
//!
//! Inputs: the review target takes the raw body of a request; the objects target the text
//! of an `--objects` file; the records target a ConfigMap's `data` (or one record); the
//! timing and watcher targets a JSON scenario (see [`TimingCase`], [`WatcherCase`]), so
//! that their seeds are made from `tests/fixtures/` (`fuzz/seeds.py`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use gracegate::binding::{DelaySource, TargetGroupBinding};
use gracegate::cluster::Objects;
use gracegate::drain::{self, Step};
use gracegate::facts::{MAX_DRAINS, MAX_RECORDS, Records};
use gracegate::health::{self, Observation};
use gracegate::elb::{TargetHealth, TargetState};
use gracegate::inject::Settings;
use gracegate::objects::NamespaceObjects;
use gracegate::targets::{self, GateSettings, Work};
use gracegate::timing::{self, Evidence, MeasuredDrain, PrestopSource, TimingSettings};
use gracegate::webhook::review;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::Value;

#[path = "../../tests/support/invariants.rs"]
pub mod invariants;

const NAMESPACE: &str = include_str!("../../tests/fixtures/cluster/namespace.json");
const SERVICE: &str = include_str!("../../tests/fixtures/cluster/service.json");
const BINDING: &str = include_str!("../../tests/fixtures/cluster/targetgroupbinding.json");
const INGRESS: &str = include_str!("../../tests/fixtures/cluster/ingress.json");
/// The pod the objects target plans for against whatever objects it loaded.
const POD_REVIEW: &str = include_str!("../../tests/fixtures/admission/create-deployment-pod.json");

/// The recorded 2048 namespace (`tests/fixtures/cluster`).
static FIXTURE_OBJECTS: LazyLock<NamespaceObjects> = LazyLock::new(|| NamespaceObjects {
    namespace: Some(Arc::new(serde_json::from_str(NAMESPACE).unwrap())),
    services: vec![Arc::new(serde_json::from_str(SERVICE).unwrap())],
    bindings: vec![Arc::new(serde_json::from_str(BINDING).unwrap())],
    ingresses: vec![Arc::new(serde_json::from_str(INGRESS).unwrap())],
    target_groups: Default::default(),
});

static SLEEP: LazyLock<Settings> = LazyLock::new(Settings::default);

/// Review `body` against `objects`; check the answer, and when it patches, that reviewing
/// the patched pod adds nothing.
fn review_and_check(body: &[u8], objects: &NamespaceObjects, settings: &Settings) {
    let Ok(reviewed) = review::review(body, settings, |_| objects.clone()) else {
        return; // a 400: not a review with a request
    };
    let answer = serde_json::to_value(&reviewed.review).expect("an answer always serialises");
    // serde_json skips unread fields without checking every escape (`"\ud800"`, a lone
    // surrogate), which `Value` refuses: such a body cannot be patched as a `Value`. The API
    // server (Go) never sends one: it writes valid UTF-8.
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let patched = match invariants::check(&request, &answer) {
        Ok(Some(patched)) => patched,
        Ok(None) => return,
        Err(broken) => panic!("{broken}\nanswer: {answer}"),
    };
    let again = invariants::second_request(&request, &patched);
    let bytes = serde_json::to_vec(&again).unwrap();
    let reviewed = review::review(&bytes, settings, |_| objects.clone())
        .expect("the patched review is still a review");
    let answer = serde_json::to_value(&reviewed.review).unwrap();
    if let Err(broken) = invariants::check_unchanged(&again, &answer) {
        panic!("{broken}");
    }
}

/// Target `review`: an AdmissionReview body against the recorded cluster objects.
/// Where serde_json's derive and gracegate's reader both read the body, they read the same.
/// The reader may refuse what serde reads in forms no API server writes (a struct as an
/// array of its fields, an enum as a one-key map): the review is then allowed unchanged with
/// a warning, which `review_and_check` checks like every other answer.
pub fn review(data: &[u8]) {
    if let (Ok(by_serde), Ok(read)) = (review::parse_serde(data), review::parse(data)) {
        assert_eq!(read, by_serde, "the reader and serde disagree");
    }
    review_and_check(data, &FIXTURE_OBJECTS, &SLEEP);
}

/// Target `timing`'s input.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TimingCase {
    pub settings: Option<[u32; 4]>,
    pub pod: Option<BTreeMap<String, String>>,
    pub namespace: Option<BTreeMap<String, String>>,
    /// `D` and where it came from (`service`, `ingress`, anything else: the target group).
    pub delay: Option<(u32, String)>,
    /// Measured p99 and count.
    pub measured: Option<(f64, usize)>,
    pub unmeasured_nlbs: Vec<String>,
    pub own_grace: Option<i64>,
}

/// Target `timing`: the timing rule with arbitrary annotations and evidence.
pub fn timing(data: &[u8]) {
    let Ok(case) = serde_json::from_slice::<TimingCase>(data) else {
        return;
    };
    let settings = match case.settings {
        Some([prestop, max, budget, margin]) => TimingSettings {
            // As `InjectArgs::settings` requires.
            prestop_seconds: prestop.min(max),
            max_prestop_seconds: max,
            max_measured_prestop_seconds: max.max(300),
            shutdown_budget_seconds: budget,
            drain_margin_seconds: margin,
            ..TimingSettings::default()
        },
        None => TimingSettings::default(),
    };
    let evidence = Evidence {
        delay: case.delay.map(|(d, from)| {
            let source = match from.as_str() {
                "service" => DelaySource::Service(from.clone()),
                "ingress" => DelaySource::Ingress(from.clone()),
                _ => DelaySource::TargetGroup(from.clone()),
            };
            (d, source)
        }),
        measured: case.measured.map(|(p99_seconds, count)| MeasuredDrain {
            p99_seconds,
            count,
            target_group: "tg".into(),
        }),
        unmeasured_nlbs: case.unmeasured_nlbs,
    };
    let t = timing::timing(
        &settings,
        &evidence,
        case.pod.as_ref(),
        case.namespace.as_ref(),
    );
    let annotation = |map: &Option<BTreeMap<String, String>>, key: &str, max: u32| {
        map.as_ref()?
            .get(key)?
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= max)
    };
    let max = settings.max_prestop_seconds;
    let pod_s = annotation(&case.pod, timing::ANNOTATION_PRESTOP_SECONDS, max);
    let ns_s = annotation(&case.namespace, timing::ANNOTATION_PRESTOP_SECONDS, max);
    match (&t.prestop_source, pod_s, ns_s) {
        (PrestopSource::PodAnnotation, Some(s), _) => assert_eq!(t.prestop_seconds, s),
        (PrestopSource::NamespaceAnnotation, None, Some(s)) => assert_eq!(t.prestop_seconds, s),
        (PrestopSource::Default, None, None) => {
            assert_eq!(t.prestop_seconds, settings.prestop_seconds)
        }
        (PrestopSource::DeregistrationDelay(..), None, None) => {
            assert!(t.prestop_seconds <= max, "{t:?} above the cap {max}")
        }
        // Measured drains and the NLB default answer to their own, higher cap.
        (PrestopSource::MeasuredDrain(_) | PrestopSource::NlbDefault, None, None) => {
            let cap = settings.max_measured_prestop_seconds;
            assert!(t.prestop_seconds <= cap, "{t:?} above the cap {cap}")
        }
        other => panic!("S from the wrong rule: {other:?}"),
    }
    let budget = |map: &Option<BTreeMap<String, String>>| {
        annotation(
            map,
            timing::ANNOTATION_SHUTDOWN_BUDGET_SECONDS,
            timing::MAX_SHUTDOWN_BUDGET_SECONDS,
        )
    };
    assert_eq!(
        t.shutdown_budget_seconds,
        budget(&case.pod)
            .or(budget(&case.namespace))
            .unwrap_or(settings.shutdown_budget_seconds)
    );
    // A value that is present but ignored is always told.
    let present = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref().is_some_and(|m| m.contains_key(key))
    };
    let ignored = [
        (
            &case.pod,
            timing::ANNOTATION_PRESTOP_SECONDS,
            pod_s.is_some(),
        ),
        (
            &case.namespace,
            timing::ANNOTATION_PRESTOP_SECONDS,
            ns_s.is_some(),
        ),
        (
            &case.pod,
            timing::ANNOTATION_SHUTDOWN_BUDGET_SECONDS,
            budget(&case.pod).is_some(),
        ),
        (
            &case.namespace,
            timing::ANNOTATION_SHUTDOWN_BUDGET_SECONDS,
            budget(&case.namespace).is_some(),
        ),
    ]
    .into_iter()
    .filter(|(map, key, valid)| present(map, key) && !valid)
    .count();
    assert!(t.warnings.len() >= ignored, "{t:?}");
    let grace = t.grace_period(case.own_grace);
    let needed = i64::from(t.prestop_seconds) + i64::from(t.shutdown_budget_seconds);
    assert!(
        grace >= needed
            && grace
                >= case
                    .own_grace
                    .unwrap_or(timing::DEFAULT_GRACE_PERIOD_SECONDS)
    );
    assert!(
        grace >= i64::from(t.prestop_seconds),
        "the sleep must fit the grace period"
    );
}

/// Target `objects`: one `--objects` file's text, read as JSON and as YAML; whatever loads
/// is then what the fixture pod is planned against.
pub fn objects(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["objects.json", "objects.yaml"] {
        let mut objects = Objects::default();
        match objects.add_text(Path::new(name), text) {
            Ok(()) => plan_against(objects),
            Err(error) => assert!(error.to_string().starts_with(name), "{error}"),
        }
    }
}

/// The names the API server accepts for objects: DNS subdomains.
fn dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn plan_against(objects: Objects) {
    let mut namespaces: Vec<Option<String>> = objects
        .namespaces
        .iter()
        .map(|n| n.metadata.name.clone())
        .collect();
    namespaces.push(Some("game-2048".into()));
    namespaces.dedup();
    let records = Arc::new(objects.target_groups);
    for namespace in namespaces.into_iter().flatten().take(4) {
        let in_ns = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.namespace.as_deref() == Some(namespace.as_str())
        };
        let found: Option<&Namespace> = objects
            .namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(namespace.as_str()));
        let ns_objects = NamespaceObjects {
            namespace: found.cloned().map(Arc::new),
            services: pick(&objects.services, |s: &Service| in_ns(&s.metadata)),
            // A binding the API server holds has a DNS subdomain name.
            bindings: pick(&objects.bindings, |b: &TargetGroupBinding| {
                in_ns(&b.metadata) && b.metadata.name.as_deref().is_some_and(dns_subdomain)
            }),
            ingresses: pick(&objects.ingresses, |i: &Ingress| in_ns(&i.metadata)),
            target_groups: records.clone(),
        };
        let mut request: Value = serde_json::from_str(POD_REVIEW).unwrap();
        request["request"]["namespace"] = Value::String(namespace.clone());
        let body = serde_json::to_vec(&request).unwrap();
        review_and_check(&body, &ns_objects, &SLEEP);
    }
}

fn pick<T: Clone>(all: &[T], keep: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
    all.iter()
        .filter(|o| keep(o))
        .cloned()
        .map(Arc::new)
        .collect()
}

/// Target `records`: the `gracegate-target-groups` ConfigMap's `data` (a JSON object of
/// strings), or any bytes as one record; then the round trip through `to_data`.
pub fn records(data: &[u8]) {
    if let Ok(map) = serde_json::from_slice::<BTreeMap<String, String>>(data) {
        round_trip(&map);
    }
    let one = BTreeMap::from([("tg".to_string(), String::from_utf8_lossy(data).into_owned())]);
    round_trip(&one);
}

fn round_trip(data: &BTreeMap<String, String>) {
    let (records, errors) = Records::from_data(data);
    assert_eq!(records.by_key.len() + errors.len(), data.len());
    for record in records.by_key.values() {
        assert!(record.drains.len() <= MAX_DRAINS);
        let drain = record.drain.as_ref().map_or(0, |s| s.count);
        assert!(drain <= record.drains.len());
        if let Some(s) = &record.drain {
            assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max, "{s:?}");
        }
        let _ = record.measured_p99();
    }
    let written = records.to_data();
    assert_eq!(written.len(), records.by_key.len().min(MAX_RECORDS));
    let (back, errors) = Records::from_data(&written);
    assert!(
        errors.is_empty(),
        "gracegate cannot read what it wrote: {errors:?}"
    );
    for (key, record) in &back.by_key {
        let before = records.by_key.get(key).expect("only keys that were there");
        let (a, b) = (
            serde_json::to_value(before).unwrap(),
            serde_json::to_value(record).unwrap(),
        );
        assert!(same(&a, &b), "record {key} changed:\n{a}\n{b}");
    }
}

/// Equal JSON, except that numbers may differ by an ULP: serde_json's default float parser
/// (no `float_roundtrip`) is not correctly rounded for 16–17 significant digits, so a drain
/// written as the shortest text of its f64 can read back one ULP off (tests/fuzz_found.rs).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => {
                x == y || (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (x, y) => x == y,
    }
}

/// Target `watcher`'s input: pods and cluster objects of one namespace, nodes, the clock
/// and what the ELB answers (`null`: the target is not listed).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WatcherCase {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub bindings: Vec<TargetGroupBinding>,
    pub ingresses: Vec<Ingress>,
    pub now: Option<Time>,
    pub gate_timeout_seconds: Option<u64>,
    pub health: Vec<Option<Health>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Health {
    pub state: String,
    pub reason: Option<String>,
    pub description: Option<String>,
}

const PREFIX: &str = "target-health.elbv2.k8s.aws";

/// Target `watcher`: the pure decisions of the watcher loop and the termination observer.
pub fn watcher(data: &[u8]) {
    let Ok(case) = serde_json::from_slice::<WatcherCase>(data) else {
        return;
    };
    let objects = NamespaceObjects {
        namespace: None,
        services: case.services.into_iter().map(Arc::new).collect(),
        bindings: case.bindings.into_iter().map(Arc::new).collect(),
        ingresses: case.ingresses.into_iter().map(Arc::new).collect(),
        target_groups: Default::default(),
    };
    let nodes: Vec<Arc<Node>> = case.nodes.into_iter().map(Arc::new).collect();
    let node = |name: &str| {
        nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .cloned()
    };
    let pods: Vec<Arc<Pod>> = case.pods.into_iter().map(Arc::new).collect();
    let now = case
        .now
        .unwrap_or(Time(Timestamp::from_second(1_800_000_000).unwrap()));
    let answers: Vec<Option<TargetHealth>> = case
        .health
        .into_iter()
        .map(|h| {
            h.map(|h| TargetHealth {
                state: TargetState::from_wire(&h.state),
                reason: h.reason,
                description: h.description,
            })
        })
        .collect();
    let answer = |i: usize| answers.get(i % answers.len().max(1)).cloned().flatten();
    let settings = GateSettings {
        condition_prefix: PREFIX.into(),
        gate_timeout: case
            .gate_timeout_seconds
            .map(std::time::Duration::from_secs),
    };

    let pending = targets::pending_gates(&pods, &objects, node, &settings, &now);
    let groups = targets::group_by_target_group(&pending);
    let describes = pending
        .iter()
        .filter(|g| matches!(g.work, Work::Describe { .. }))
        .count();
    assert!(groups.values().map(|t| t.len()).sum::<usize>() <= describes);
    for (i, gate) in pending.iter().enumerate() {
        assert!(
            pods.iter().any(|p| p.metadata.deletion_timestamp.is_none()
                && p.metadata.uid.clone().unwrap_or_default() == gate.uid),
            "a pending gate belongs to a pod that is not terminating"
        );
        assert!(targets::parse_gate(&gate.gate, PREFIX).is_some());
        assert!(gate.current.as_ref().is_none_or(|c| c.status != "True"));
        let observation = match &gate.work {
            Work::Describe { group, .. } => {
                assert!(groups.contains_key(group));
                match answer(i) {
                    Some(h) => Observation::Health(h),
                    None => Observation::NotRegistered,
                }
            }
            Work::Settle(o) => o.clone(),
            Work::Wait => continue,
        };
        let desired = observation.desired();
        if let Some(c) = health::update(&gate.gate, gate.current.as_ref(), &desired, &now) {
            assert_eq!(c.type_, gate.gate);
            assert_eq!(c.status, desired.status);
            let changed = gate
                .current
                .as_ref()
                .is_none_or(|old| old.status != c.status);
            if changed {
                assert_eq!(c.last_transition_time.as_ref(), Some(&now));
            }
            let patch = health::status_patch(&gate.uid, &c);
            assert_eq!(patch["status"]["conditions"][0]["type"], gate.gate.as_str());
        }
    }

    let departures = drain::departures(&pods, &objects, node, PREFIX);
    for (i, mut d) in departures.into_iter().enumerate() {
        assert!(pods.iter().any(|p| p.metadata.deletion_timestamp.is_some()
            && p.metadata.uid.clone().unwrap_or_default() == d.uid));
        let mut warned = false;
        let mut at = d.deleted_at;
        for step in 0..8 {
            at = at
                .saturating_add(SignedDuration::from_secs(150))
                .unwrap_or(at);
            let draining_before = d.draining_at;
            match drain::observe(&mut d, answer(i + step).as_ref(), at) {
                Step::Gone(gone) => {
                    let measured = [
                        gone.drain_seconds,
                        gone.lag_seconds,
                        gone.draining_after_prestop,
                    ];
                    assert!(measured.into_iter().flatten().all(|s| s >= 0.0), "{gone:?}");
                    assert_eq!(gone.drain_seconds.is_some(), d.seen_listed);
                    assert!(gone.draining_after_prestop.is_none() || !d.warned);
                    break;
                }
                Step::GiveUp {
                    draining_after_prestop,
                } => {
                    assert!(at.duration_since(d.deleted_at) > drain::GIVE_UP_AFTER);
                    assert!(draining_after_prestop.is_none_or(|s| s >= 0.0));
                    break;
                }
                Step::StillHealthyAfterPrestop { late_seconds } => {
                    assert!(!warned, "warned twice");
                    assert!(late_seconds >= 0.0);
                    warned = true;
                }
                Step::Continue => {}
            }
            if draining_before.is_some() {
                assert_eq!(d.draining_at, draining_before, "the first draining is kept");
            }
        }
    }
}
