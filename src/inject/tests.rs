use super::waiter::{ContainerAdd, ENV_VARS, ListAdd, WaiterAdd};
use super::*;
use crate::elb::LoadBalancerKind;
use k8s_openapi::api::core::v1::{ExecAction, SleepAction};
use proptest::prelude::*;
use rstest::rstest;
use serde_json::json;
use std::sync::Arc;

fn exec(cmd: &[&str]) -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
        }),
        ..Default::default()
    }
}

#[rstest]
#[case(exec(&["/bin/sh", "-c", "sleep 5"]), Some(5))]
#[case(exec(&["sh", "-c", " sleep 30 "]), Some(30))]
#[case(exec(&["/bin/sleep", "12"]), Some(12))]
#[case(exec(&["/bin/sh", "-c", "nginx -s quit; sleep 5"]), None)]
#[case(exec(&["/app/drain"]), None)]
#[case(LifecycleHandler { sleep: Some(SleepAction { seconds: 15 }), ..Default::default() }, Some(15))]
#[case(LifecycleHandler::default(), None)]
fn reads_existing_sleeps(#[case] handler: LifecycleHandler, #[case] expected: Option<u64>) {
    assert_eq!(sleep_seconds(&handler), expected);
}

const SERVICE: &str = include_str!("../../tests/fixtures/cluster/service.json");
const BINDING: &str = include_str!("../../tests/fixtures/cluster/targetgroupbinding.json");
const INGRESS: &str = include_str!("../../tests/fixtures/cluster/ingress.json");
const NAMESPACE: &str = include_str!("../../tests/fixtures/cluster/namespace.json");
const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";

/// The recorded 2048 namespace, changed by `edit`.
fn objects(edit: impl FnOnce(&mut NamespaceObjects)) -> NamespaceObjects {
    let mut o = NamespaceObjects {
        namespace: Some(Arc::new(serde_json::from_str(NAMESPACE).unwrap())),
        services: vec![Arc::new(serde_json::from_str(SERVICE).unwrap())],
        bindings: vec![Arc::new(serde_json::from_str(BINDING).unwrap())],
        ingresses: vec![Arc::new(serde_json::from_str(INGRESS).unwrap())],
        target_groups: Default::default(),
    };
    edit(&mut o);
    o
}

fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodView<'static> {
    serde_json::from_value(json!({
        "metadata": {
            "name": "p",
            "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            "annotations": annotations.iter().cloned().collect::<BTreeMap<_, _>>(),
        },
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "initContainers": [
                { "name": "envoy", "restartPolicy": "Always" },
                { "name": "migrate" },
            ],
            "containers": [
                { "name": "app" },
                { "name": "shipper", "lifecycle": { "postStart": { "exec": { "command": ["true"] } } } },
            ],
        },
    }))
    .unwrap()
}

const APP: &[(&str, &str)] = &[("app.kubernetes.io/name", "app-2048")];

fn service(o: &mut NamespaceObjects) -> &mut Service {
    Arc::make_mut(&mut o.services[0])
}
fn binding(o: &mut NamespaceObjects) -> &mut TargetGroupBinding {
    Arc::make_mut(&mut o.bindings[0])
}

#[rstest]
#[case::selector_matches(APP, objects(|_| {}), Some(GATE))]
#[case::other_labels(&[("app", "batch-job")], objects(|_| {}), None)]
#[case::selector_needs_every_label(APP, objects(|o| {
    service(o).spec.as_mut().unwrap().selector.as_mut().unwrap().insert("tier".into(), "web".into());
}), None)]
#[case::empty_selector_matches_nothing(APP, objects(|o| {
    service(o).spec.as_mut().unwrap().selector = Some(BTreeMap::new());
}), None)]
#[case::no_selector_matches_nothing(APP, objects(|o| {
    service(o).spec.as_mut().unwrap().selector = None;
}), None)]
#[case::missing_service(APP, objects(|o| o.services.clear()), None)]
#[case::binding_to_another_service(APP, objects(|o| binding(o).spec.service_ref.name = "other".into()), None)]
fn binding_matching(
    #[case] labels: &[(&str, &str)],
    #[case] objects: NamespaceObjects,
    #[case] gate: Option<&str>,
) {
    let plan = plan(&pod(labels, &[]), &objects, &Settings::default());
    assert_eq!(
        plan.gates,
        gate.into_iter().map(String::from).collect::<Vec<_>>()
    );
    // A pod no binding serves is not behind the load balancer: nothing else is added either.
    assert_eq!(plan.is_empty(), gate.is_none());
    assert_eq!(plan.skip, gate.is_none().then_some(Skip::NoBinding));
}

#[rstest]
#[case::ip("ip", "Cluster", true, 0)]
#[case::instance_local("instance", "Local", true, 0)]
// A node target's health says nothing about one pod behind a Cluster-policy Service.
#[case::instance_cluster("instance", "Cluster", false, 0)]
#[case::unknown_target_type("", "Cluster", false, 1)]
fn target_types(
    #[case] target_type: &str,
    #[case] policy: &str,
    #[case] gated: bool,
    #[case] warnings: usize,
) {
    let objects = objects(|o| {
        binding(o).spec.target_type = (!target_type.is_empty()).then(|| target_type.into());
        service(o).spec.as_mut().unwrap().external_traffic_policy = Some(policy.into());
    });
    let plan = plan(&pod(APP, &[]), &objects, &Settings::default());
    assert_eq!(plan.gates.len(), usize::from(gated));
    // Served either way, so the end-of-life half still applies.
    assert_eq!(plan.prestops.len(), 2);
    // One warning is the grace period being raised.
    assert_eq!(plan.warnings.len(), warnings + 1, "{:?}", plan.warnings);
}

#[test]
fn other_namespace_objects_are_not_consulted() {
    // The shell hands `plan` only the pod's namespace; an unknown namespace injects nothing.
    let plan = plan(
        &pod(APP, &[]),
        &objects(|o| o.namespace = None),
        &Settings::default(),
    );
    assert_eq!(plan.skip, Some(Skip::NamespaceUnknown));
    assert!(plan.is_empty());
    assert_eq!(plan.warnings.len(), 1);
}

#[rstest]
#[case::not_labelled(objects(|o| {
    Arc::make_mut(o.namespace.as_mut().unwrap()).metadata.labels = None;
}), &[], Skip::NamespaceNotOptedIn)]
#[case::namespace_opt_out(objects(|o| {
    Arc::make_mut(o.namespace.as_mut().unwrap()).metadata.annotations =
        Some([(ANNOTATION_INJECT.to_string(), "false".to_string())].into());
}), &[], Skip::NamespaceOptedOut)]
#[case::pod_opt_out(objects(|_| {}), &[(ANNOTATION_INJECT, "false")], Skip::PodOptedOut)]
fn opting_out(
    #[case] objects: NamespaceObjects,
    #[case] annotations: &[(&str, &str)],
    #[case] skip: Skip,
) {
    let plan = plan(&pod(APP, annotations), &objects, &Settings::default());
    assert_eq!(plan.skip, Some(skip));
    assert!(plan.is_empty());
}

#[test]
fn malformed_inject_annotation_injects_with_a_warning() {
    let plan = plan(
        &pod(APP, &[(ANNOTATION_INJECT, "nope")]),
        &objects(|_| {}),
        &Settings::default(),
    );
    assert_eq!(plan.gates, vec![GATE]);
    assert!(plan.warnings[0].contains("neither"), "{:?}", plan.warnings);
}

#[rstest]
// Init containers and native sidecars never get one; `shipper` has a postStart to add into.
#[case::all_regular(&[], &[(0, false), (1, true)], 0)]
#[case::chosen(&[(ANNOTATION_CONTAINERS, "shipper")], &[(1, true)], 0)]
#[case::chosen_with_spaces(&[(ANNOTATION_CONTAINERS, " app , shipper ")], &[(0, false), (1, true)], 0)]
#[case::init_container_named(&[(ANNOTATION_CONTAINERS, "app,envoy")], &[(0, false)], 1)]
// Names no container: nothing added, so the grace period is not raised either (2nd warning).
#[case::unknown_name(&[(ANNOTATION_CONTAINERS, "nope")], &[], 2)]
#[case::zero_seconds(&[("gracegate.io/prestop-seconds", "0")], &[], 0)]
fn container_choice(
    #[case] annotations: &[(&str, &str)],
    #[case] expected: &[(usize, bool)],
    #[case] warnings: usize,
) {
    let plan = plan(
        &pod(APP, annotations),
        &objects(|_| {}),
        &Settings::default(),
    );
    let got: Vec<(usize, bool)> = plan
        .prestops
        .iter()
        .map(|p| (p.index, p.has_lifecycle))
        .collect();
    assert_eq!(got, expected);
    let non_grace: Vec<_> = plan
        .warnings
        .iter()
        .filter(|w| !w.contains("raised"))
        .collect();
    assert_eq!(non_grace.len(), warnings, "{:?}", plan.warnings);
    assert_eq!(plan.prestop_action.is_some(), !expected.is_empty());
}

#[test]
fn containers_annotation_naming_no_container_changes_no_grace_period() {
    let plan = plan(
        &pod(APP, &[(ANNOTATION_CONTAINERS, "nope, envoy")]),
        &objects(|_| {}),
        &Settings::default(),
    );
    assert!(plan.prestops.is_empty());
    assert_eq!(plan.grace, None, "{:?}", plan.warnings);
    // The gate still applies: the pod is behind the load balancer.
    assert_eq!(plan.gates, vec![GATE]);
    assert!(
        plan.warnings.iter().any(|w| w.contains("left unchanged")),
        "{:?}",
        plan.warnings
    );
    // A name that exists still raises it, even if that container has its own preStop.
    let plan = super::plan(
        &pod(APP, &[(ANNOTATION_CONTAINERS, "app")]),
        &objects(|_| {}),
        &Settings::default(),
    );
    assert_eq!(plan.grace, Some((Some(30), 70)));
}

#[rstest]
#[case::raised(Some(30), Some((Some(30), 70)))]
#[case::equal(Some(70), None)]
#[case::never_lowered(Some(3600), None)]
#[case::absent(None, Some((None, 70)))]
fn grace_period(#[case] own: Option<i64>, #[case] expected: Option<(Option<i64>, i64)>) {
    let mut p = pod(APP, &[]);
    p.spec.as_mut().unwrap().termination_grace_period_seconds = own;
    let plan = plan(&p, &objects(|_| {}), &Settings::default());
    assert_eq!(plan.grace, expected);
    // Only a value the pod asked for is worth a warning when raised.
    let warned = plan.warnings.iter().any(|w| w.contains("raised"));
    assert_eq!(warned, matches!(expected, Some((Some(_), _))));
}

#[test]
fn deregistration_delay_from_the_ingress_sizes_the_sleep() {
    let plan = plan(&pod(APP, &[]), &objects(|_| {}), &Settings::default());
    assert_eq!(
        (plan.prestop_seconds, plan.grace),
        (40, Some((Some(30), 70)))
    );
    // Without the Ingress nothing says D: the default S applies (also 40), so change it.
    let settings = Settings {
        timing: TimingSettings {
            prestop_seconds: 15,
            ..TimingSettings::default()
        },
        ..Settings::default()
    };
    let plan_without = super::plan(&pod(APP, &[]), &objects(|o| o.ingresses.clear()), &settings);
    assert_eq!(plan_without.prestop_seconds, 15);
    let plan_with = super::plan(&pod(APP, &[]), &objects(|_| {}), &settings);
    assert_eq!(plan_with.prestop_seconds, 40);
}

#[test]
fn service_annotation_beats_the_ingress() {
    let objects = objects(|o| {
        service(o).metadata.annotations = Some(
            [(
                binding::NLB_TARGET_GROUP_ATTRIBUTES.to_string(),
                "deregistration_delay.timeout_seconds=60".to_string(),
            )]
            .into(),
        );
    });
    let plan = plan(&pod(APP, &[]), &objects, &Settings::default());
    assert_eq!(plan.prestop_seconds, 70);
}

#[test]
fn ingress_for_another_port_does_not_count() {
    let objects = objects(|o| {
        let ing = Arc::make_mut(&mut o.ingresses[0]);
        let path = &mut ing.spec.as_mut().unwrap().rules.as_mut().unwrap()[0]
            .http
            .as_mut()
            .unwrap()
            .paths[0];
        path.backend
            .service
            .as_mut()
            .unwrap()
            .port
            .as_mut()
            .unwrap()
            .number = Some(8080);
    });
    let settings = Settings {
        timing: TimingSettings {
            prestop_seconds: 15,
            ..TimingSettings::default()
        },
        ..Settings::default()
    };
    assert_eq!(
        plan(&pod(APP, &[]), &objects, &settings).prestop_seconds,
        15
    );
}

#[test]
fn long_binding_names_get_no_gate() {
    let long = "b".repeat(64);
    let objects = objects(|o| binding(o).metadata.name = Some(long.clone()));
    let plan = plan(&pod(APP, &[]), &objects, &Settings::default());
    assert!(plan.gates.is_empty());
    assert!(
        plan.warnings.iter().any(|w| w.contains("longer than 63")),
        "{:?}",
        plan.warnings
    );
    let ok = "b".repeat(63);
    let objects = super::tests::objects(|o| binding(o).metadata.name = Some(ok.clone()));
    assert_eq!(plan_for(&objects).gates.len(), 1);
}

fn plan_for(objects: &NamespaceObjects) -> Plan {
    plan(&pod(APP, &[]), objects, &Settings::default())
}

#[test]
fn existing_gate_is_kept_and_not_repeated() {
    let mut p = pod(APP, &[]);
    p.spec.as_mut().unwrap().readiness_gates =
        Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
            condition_type: GATE.into(),
        }]);
    let plan = plan(&p, &objects(|_| {}), &Settings::default());
    assert!(plan.gates.is_empty());
    assert!(plan.has_gates);
}

fn other_webhook_warning(plan: &Plan) -> bool {
    plan.warnings.iter().any(|w| w.contains("another webhook"))
}

fn with_gate<'a>(mut p: PodView<'a>, gate: &str) -> PodView<'a> {
    p.spec.as_mut().unwrap().readiness_gates =
        Some(vec![k8s_openapi::api::core::v1::PodReadinessGate {
            condition_type: gate.into(),
        }]);
    p
}

#[test]
fn same_gate_from_another_webhook_is_a_warning() {
    // The LBC's mutator ran first: gate there, nothing else of gracegate's.
    let plan = plan(
        &with_gate(pod(APP, &[]), GATE),
        &objects(|_| {}),
        &Settings::default(),
    );
    assert!(plan.gates.is_empty());
    assert!(other_webhook_warning(&plan), "{:?}", plan.warnings);
    assert!(plan.warnings.iter().any(|w| w.contains(GATE)));

    // gracegate's own output, re-invoked (reinvocationPolicy: IfNeeded): no warning.
    let ours: PodView = serde_json::from_value(json!({
        "metadata": { "name": "p", "labels": { "app.kubernetes.io/name": "app-2048" } },
        "spec": {
            "terminationGracePeriodSeconds": 70,
            "readinessGates": [{ "conditionType": GATE }],
            "containers": [
                { "name": "app", "lifecycle": { "preStop": { "sleep": { "seconds": 40 } } } },
                { "name": "shipper", "lifecycle": { "preStop": { "sleep": { "seconds": 40 } } } },
            ],
        },
    }))
    .unwrap();
    let again = super::plan(&ours, &objects(|_| {}), &Settings::default());
    assert!(again.is_empty(), "{again:?}");
    assert!(!other_webhook_warning(&again), "{:?}", again.warnings);

    // Another prefix's gate (gracegate beside the LBC with --condition-prefix): no warning.
    let settings = Settings {
        condition_prefix: "target-health.gracegate.io".into(),
        ..Settings::default()
    };
    let plan = super::plan(&with_gate(pod(APP, &[]), GATE), &objects(|_| {}), &settings);
    assert_eq!(
        plan.gates,
        vec!["target-health.gracegate.io/k8s-game2048-service2-6f5e3c2a1b"]
    );
    assert!(!other_webhook_warning(&plan), "{:?}", plan.warnings);
}

#[test]
fn patch_shapes() {
    let plan = Plan {
        gates: vec!["p/a".into()],
        has_gates: false,
        prestops: vec![
            PrestopAdd {
                index: 0,
                has_lifecycle: false,
            },
            PrestopAdd {
                index: 2,
                has_lifecycle: true,
            },
        ],
        prestop_seconds: 40,
        prestop_action: Some(PrestopAction::Exec),
        grace: Some((None, 70)),
        ..Plan::default()
    };
    let patch = serde_json::to_value(plan.patch()).unwrap();
    assert_eq!(
        patch,
        json!([
            { "op": "add", "path": "/spec/readinessGates", "value": [{ "conditionType": "p/a" }] },
            { "op": "add", "path": "/spec/containers/0/lifecycle",
              "value": { "preStop": { "exec": { "command": ["/bin/sh", "-c", "sleep 40"] } } } },
            { "op": "add", "path": "/spec/containers/2/lifecycle/preStop",
              "value": { "exec": { "command": ["/bin/sh", "-c", "sleep 40"] } } },
            { "op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": 70 },
        ])
    );
}

/// Before the watcher has described a binding's target group, the binding's labels say what
/// kind of load balancer serves it; once the facts exist, they win.
#[rstest]
#[case::labels_say_nlb(Some("service.k8s.aws/stack-name"), None, 0, true)]
#[case::labels_say_alb(Some("ingress.k8s.aws/stack-name"), None, 0, false)]
#[case::nothing_says(None, None, 0, false)]
#[case::facts_say_nlb(None, Some(LoadBalancerKind::Network), 0, true)]
#[case::facts_beat_labels_alb(
    Some("service.k8s.aws/stack-name"),
    Some(LoadBalancerKind::Application),
    0,
    false
)]
#[case::facts_beat_labels_nlb(
    Some("ingress.k8s.aws/stack-name"),
    Some(LoadBalancerKind::Network),
    0,
    true
)]
// Short drains measured: below the NLB default only from 20 of them.
#[case::nlb_ten_short_drains(None, Some(LoadBalancerKind::Network), 10, true)]
#[case::nlb_twenty_short_drains(None, Some(LoadBalancerKind::Network), 20, false)]
#[case::labels_nlb_twenty_short_drains(Some("service.k8s.aws/stack-name"), None, 20, false)]
fn the_kind_before_the_facts(
    #[case] label: Option<&str>,
    #[case] facts: Option<LoadBalancerKind>,
    #[case] drains: usize,
    #[case] unmeasured_nlb: bool,
) {
    let objects = objects(|o| {
        let mut binding: crate::binding::TargetGroupBinding = (*o.bindings[0]).clone();
        if let Some(label) = label {
            binding
                .metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(label.into(), "game-2048".into());
        }
        if facts.is_some() || drains > 0 {
            let mut records = crate::facts::Records::default();
            let record = records.entry(&binding.target_group().unwrap(), None);
            record.facts = facts.map(|kind| crate::elb::Facts {
                load_balancer: Some(kind),
                ..Default::default()
            });
            // Drains of 20 s: S from them alone would be 25, below the NLB default.
            record.drain = (drains > 0).then_some(crate::facts::Stats {
                count: drains,
                p50: 20.0,
                p90: 20.0,
                p99: 20.0,
                max: 20.0,
            });
            o.target_groups = Arc::new(records);
        }
        o.bindings = vec![Arc::new(binding)];
    });
    let labels = APP
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let served = serving_bindings(&labels, &objects);
    assert_eq!(served.len(), 1);
    let evidence = evidence(&served, &objects);
    assert_eq!(
        !evidence.unmeasured_nlbs.is_empty(),
        unmeasured_nlb,
        "{evidence:?}"
    );
    let s = crate::timing::timing(&TimingSettings::default(), &evidence, None, None);
    assert_eq!(
        s.prestop_source == crate::timing::PrestopSource::NlbDefault,
        unmeasured_nlb,
        "{s:?}"
    );
}

// === The JSONPatch written as text ===

/// `Plan::write_patch` against its reference, serde's writing of `Plan::patch`.
fn assert_written_as_serde(plan: &Plan) {
    // Appended to what the buffer already holds.
    let mut written = b"[0,".to_vec();
    plan.write_patch(&mut written);
    let serde = serde_json::to_vec(&plan.patch()).unwrap();
    assert_eq!(
        String::from_utf8(written[3..].to_vec()).unwrap(),
        String::from_utf8(serde).unwrap()
    );
}

/// Strings JSON and JSON Pointer have to escape, or must not.
const ODD: &str = "a~b/c~1\"d\\e\n\t\u{1}\u{1f}\u{7f}é😀\u{2028}";

fn waiter_add(
    init: Option<ListAdd>,
    volume: Option<ListAdd>,
    containers: Vec<ContainerAdd>,
) -> WaiterAdd {
    WaiterAdd {
        init,
        volume,
        containers,
        command: waiter::command(
            "https://gracegate.gracegate-system.svc",
            300,
            "-----BEGIN CERTIFICATE-----\nMIIB\"x\"\n-----END CERTIFICATE-----\n",
        ),
        image: format!("registry.example/{ODD}:1"),
    }
}

fn container_add(
    index: usize,
    mount: Option<ListAdd>,
    env: &[&'static str],
    env_list: ListAdd,
) -> ContainerAdd {
    ContainerAdd {
        index,
        mount,
        env: env.to_vec(),
        env_list,
    }
}

fn prestop(index: usize, has_lifecycle: bool) -> PrestopAdd {
    PrestopAdd {
        index,
        has_lifecycle,
    }
}

const ALL_ENV: [&str; 3] = [ENV_VARS[0].0, ENV_VARS[1].0, ENV_VARS[2].0];

/// Each operation the plan writes, alone and together, against serde.
#[rstest]
#[case::empty(Plan::default())]
#[case::gates_new_list(Plan { gates: vec![GATE.into(), "p/two".into()], ..Plan::default() })]
#[case::gates_appended(Plan { gates: vec![GATE.into(), "p/two".into()], has_gates: true, ..Plan::default() })]
#[case::odd_gate_names(Plan { gates: vec![ODD.into(), String::new()], ..Plan::default() })]
#[case::sleeps(Plan {
    prestops: vec![prestop(0, false), prestop(11, true)],
    prestop_seconds: 40,
    prestop_action: Some(PrestopAction::Sleep),
    ..Plan::default()
})]
#[case::exec_sleeps(Plan {
    prestops: vec![prestop(1, true), prestop(2, false)],
    prestop_seconds: u32::MAX,
    prestop_action: Some(PrestopAction::Exec),
    ..Plan::default()
})]
#[case::grace_added(Plan { grace: Some((None, 70)), ..Plan::default() })]
#[case::grace_replaced(Plan { grace: Some((Some(30), i64::MAX)), ..Plan::default() })]
#[case::annotation_map(Plan { source_annotation: Some((AnnotationAdd::Map, "deregistration-delay")), ..Plan::default() })]
#[case::annotation_key(Plan { source_annotation: Some((AnnotationAdd::Key, ODD)), ..Plan::default() })]
#[case::annotation_replaced(Plan { source_annotation: Some((AnnotationAdd::Replace, "nlb-default")), ..Plan::default() })]
#[case::waiter_lists(Plan {
    waiter: Some(waiter_add(
        Some(ListAdd::List),
        Some(ListAdd::List),
        vec![container_add(0, Some(ListAdd::List), &ALL_ENV, ListAdd::List)],
    )),
    prestops: vec![prestop(0, false)],
    prestop_seconds: 300,
    prestop_action: Some(PrestopAction::Sleep),
    ..Plan::default()
})]
#[case::waiter_items(Plan {
    waiter: Some(waiter_add(
        Some(ListAdd::Item),
        Some(ListAdd::Item),
        vec![
            container_add(0, Some(ListAdd::Item), &ALL_ENV[1..], ListAdd::Item),
            container_add(3, None, &[], ListAdd::Item),
            container_add(4, None, &ALL_ENV[..1], ListAdd::List),
        ],
    )),
    prestops: vec![prestop(0, true), prestop(4, false)],
    prestop_seconds: 300,
    prestop_action: Some(PrestopAction::Exec),
    ..Plan::default()
})]
#[case::waiter_already_there(Plan {
    waiter: Some(waiter_add(None, None, vec![])),
    ..Plan::default()
})]
#[case::everything(Plan {
    gates: vec![GATE.into()],
    has_gates: true,
    waiter: Some(waiter_add(
        Some(ListAdd::Item),
        None,
        vec![container_add(1, Some(ListAdd::List), &ALL_ENV, ListAdd::Item)],
    )),
    prestops: vec![prestop(1, true)],
    prestop_seconds: 120,
    prestop_action: Some(PrestopAction::Sleep),
    source_annotation: Some((AnnotationAdd::Key, "drain-wait")),
    grace: Some((Some(30), 150)),
    ..Plan::default()
})]
fn the_patch_is_written_as_serde_writes_it(#[case] plan: Plan) {
    assert_written_as_serde(&plan);
}

/// The plans `plan` makes for the test pod (as it is, with another source annotation, with
/// a gate of its own), in each mode.
#[rstest]
fn planned_patches_are_written_as_serde_writes_them(
    #[values(PrestopAction::Sleep, PrestopAction::Exec)] action: PrestopAction,
    #[values(DrainMode::Sleep, DrainMode::Wait)] mode: DrainMode,
    #[values(0, 1, 2)] variant: usize,
) {
    let settings = Settings {
        prestop_action: action,
        drain: DrainSettings {
            mode,
            ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
            ..DrainSettings::default()
        },
        ..Settings::default()
    };
    let p = match variant {
        0 => pod(APP, &[]),
        1 => pod(APP, &[("gracegate.io/prestop-source", "default")]),
        _ => with_gate(pod(APP, &[]), "target-health.elbv2.k8s.aws/other"),
    };
    let plan = plan(&p, &objects(|_| {}), &settings);
    assert!(!plan.is_empty(), "{plan:?}");
    assert_written_as_serde(&plan);
}

fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z~/\"\\\\\n\u{1}é-]{0,12}",
        Just(GATE.to_string()),
    ]
}

fn list_add() -> impl Strategy<Value = ListAdd> {
    prop_oneof![Just(ListAdd::List), Just(ListAdd::Item)]
}

fn any_waiter() -> impl Strategy<Value = WaiterAdd> {
    let container = (
        0usize..12,
        proptest::option::of(list_add()),
        proptest::sample::subsequence(ALL_ENV.to_vec(), 0..=3),
        list_add(),
    )
        .prop_map(|(index, mount, env, env_list)| ContainerAdd {
            index,
            mount,
            env,
            env_list,
        });
    (
        proptest::option::of(list_add()),
        proptest::option::of(list_add()),
        proptest::collection::vec(container, 0..3),
        proptest::collection::vec(odd_string(), 0..5),
        odd_string(),
    )
        .prop_map(|(init, volume, containers, command, image)| WaiterAdd {
            init,
            volume,
            containers,
            command,
            image,
        })
}

fn any_plan() -> impl Strategy<Value = Plan> {
    let annotation = proptest::option::of((
        prop_oneof![
            Just(AnnotationAdd::Map),
            Just(AnnotationAdd::Key),
            Just(AnnotationAdd::Replace)
        ],
        proptest::sample::select(vec!["deregistration-delay", "nlb-default", ODD, ""]),
    ));
    (
        (proptest::collection::vec(odd_string(), 0..4), any::<bool>()),
        proptest::collection::vec((0usize..12, any::<bool>()), 0..4),
        any::<u32>(),
        proptest::option::of(prop_oneof![
            Just(PrestopAction::Sleep),
            Just(PrestopAction::Exec)
        ]),
        annotation,
        proptest::option::of((proptest::option::of(any::<i64>()), any::<i64>())),
        proptest::option::of(any_waiter()),
    )
        .prop_map(
            |((gates, has_gates), prestops, seconds, action, annotation, grace, waiter)| Plan {
                gates,
                has_gates,
                prestops: prestops
                    .into_iter()
                    .map(|(index, has_lifecycle)| prestop(index, has_lifecycle))
                    .collect(),
                prestop_seconds: seconds,
                prestop_action: action,
                source_annotation: annotation,
                grace,
                waiter,
                ..Plan::default()
            },
        )
}

proptest! {
    #[test]
    fn any_plans_patch_is_written_as_serde_writes_it(plan in any_plan()) {
        let mut written = Vec::new();
        plan.write_patch(&mut written);
        let serde = serde_json::to_vec(&plan.patch()).unwrap();
        prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(serde).unwrap());
    }
}
