//! Every check on the recorded 2048 objects (tests/fixtures/cluster) and the recorded pod of
//! Deployment `deployment-2048` (tests/fixtures/admission/create-deployment-pod.json), each
//! case changing one thing.

use super::availability::scaled;
use super::*;
use crate::binding;
use crate::elb::{LoadBalancerKind, TargetGroup};
use crate::facts::{Drain, Record};
use crate::timing::ANNOTATION_CONTAINERS;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rstest::rstest;
use serde_json::json;

const NAMESPACE: &str = include_str!("../../tests/fixtures/cluster/namespace.json");
const SERVICE: &str = include_str!("../../tests/fixtures/cluster/service.json");
const BINDING: &str = include_str!("../../tests/fixtures/cluster/targetgroupbinding.json");
const INGRESS: &str = include_str!("../../tests/fixtures/cluster/ingress.json");
const REVIEW: &str = include_str!("../../tests/fixtures/admission/create-deployment-pod.json");
const DEPLOYMENT: &str = include_str!("../../tests/fixtures/audit/deployment.json");
const REPLICASET: &str = include_str!("../../tests/fixtures/audit/replicaset.json");
const PDB: &str = include_str!("../../tests/fixtures/audit/pdb.json");
const LBC_WEBHOOK: &str =
    include_str!("../../tests/fixtures/audit/lbc-mutatingwebhookconfiguration.json");

pub(crate) const NOW: &str = "2026-11-26T13:00:00Z";
const ARN: &str = "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/k8s-game2048-service2-6f5e3c2a1b/0123456789abcdef";
const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_json::from_str(s).unwrap()
}

/// The recorded pod as the API server stored it once gracegate had patched it: named,
/// running and Ready, created `age_seconds` before [`NOW`].
fn admitted_pod(name: &str, age_seconds: i64) -> Pod {
    let review: Value = parse(REVIEW);
    let mut pod = review["request"]["object"].clone();
    let view: PodView = serde_json::from_value(pod.clone()).unwrap();
    let objects = base_objects();
    let plan = inject::plan(&view, &objects, &Settings::default());
    json_patch::patch(&mut pod, &plan.patch()).unwrap();
    running(pod, name, age_seconds)
}

/// The recorded pod without gracegate's additions (created before the namespace was labelled).
fn unpatched_pod(name: &str) -> Pod {
    let review: Value = parse(REVIEW);
    running(review["request"]["object"].clone(), name, 3600)
}

fn running(mut pod: Value, name: &str, age_seconds: i64) -> Pod {
    let created = NOW.parse::<Timestamp>().unwrap()
        - k8s_openapi::jiff::SignedDuration::from_secs(age_seconds);
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["uid"] = json!(format!("uid-{name}"));
    pod["metadata"]["creationTimestamp"] = json!(created.to_string());
    let gate_condition = pod["spec"]["readinessGates"]
        .as_array()
        .map(|gates| {
            gates
                .iter()
                .map(|g| json!({ "type": g["conditionType"], "status": "True" }))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut conditions = vec![
        json!({ "type": "ContainersReady", "status": "True" }),
        json!({ "type": "Ready", "status": "True" }),
    ];
    conditions.extend(gate_condition);
    pod["status"] = json!({ "phase": "Running", "podIP": "10.0.0.7", "conditions": conditions });
    serde_json::from_value(pod).unwrap()
}

fn base_objects() -> NamespaceObjects {
    NamespaceObjects {
        namespace: Some(Arc::new(parse(NAMESPACE))),
        services: vec![Arc::new(parse(SERVICE))],
        bindings: vec![Arc::new(parse(BINDING))],
        ingresses: vec![Arc::new(parse(INGRESS))],
        target_groups: Default::default(),
    }
}

/// The 2048 namespace with its Deployment (3 replicas), ReplicaSet, PDB and three admitted pods:
/// nothing to report.
pub(crate) fn inventory() -> Inventory {
    Inventory {
        namespaces: vec![parse(NAMESPACE)],
        services: vec![parse(SERVICE)],
        bindings: vec![parse(BINDING)],
        ingresses: vec![parse(INGRESS)],
        pdbs: vec![parse(PDB)],
        deployments: vec![parse(DEPLOYMENT)],
        replicasets: vec![parse(REPLICASET)],
        pods: ["a", "b", "c"]
            .iter()
            .map(|n| admitted_pod(&format!("deployment-2048-689df87b6-{n}"), 3600))
            .collect(),
        webhook_configurations: Some(Vec::new()),
        ..Default::default()
    }
}

pub(crate) fn settings() -> AuditSettings {
    AuditSettings {
        inject: Settings::default(),
        gate_timeout: Duration::from_secs(600),
        now: NOW.parse().unwrap(),
    }
}

fn checks(inventory: &Inventory) -> Vec<(Check, Severity)> {
    let mut found: Vec<(Check, Severity)> = audit(inventory, &settings())
        .findings
        .iter()
        .map(|f| (f.check, f.severity))
        .collect();
    found.sort();
    found
}

fn deployment(i: &mut Inventory) -> &mut Deployment {
    &mut i.deployments[0]
}

fn set_delay(i: &mut Inventory, seconds: u32) {
    i.ingresses[0]
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(
            binding::ALB_TARGET_GROUP_ATTRIBUTES.into(),
            format!("deregistration_delay.timeout_seconds={seconds}"),
        );
}

fn template_spec(i: &mut Inventory) -> &mut k8s_openapi::api::core::v1::PodSpec {
    deployment(i).spec.template.spec.as_mut().unwrap()
}

fn template_annotate(i: &mut Inventory, key: &str, value: &str) {
    deployment(i)
        .spec
        .template
        .metadata
        .get_or_insert_default()
        .annotations
        .get_or_insert_default()
        .insert(key.into(), value.into());
}

fn record(edit: impl FnOnce(&mut Record)) -> Records {
    let mut records = Records::default();
    let r = records.entry(&TargetGroup::Arn(ARN.into()), Some(ARN));
    edit(r);
    records
}

fn nlb_drains(seconds: f64) -> Records {
    record(|r| {
        r.facts = Some(crate::elb::Facts {
            protocol: Some("TCP".into()),
            load_balancer: Some(LoadBalancerKind::Network),
            ..Default::default()
        });
        for n in 0..10 {
            r.add_drain(Drain {
                at: NOW.parse::<Timestamp>().unwrap()
                    - k8s_openapi::jiff::SignedDuration::from_secs(60 * n),
                drain_seconds: seconds,
                lag_seconds: Some(1.0),
            });
        }
    })
}

fn stuck_pod(age_seconds: i64) -> Pod {
    let mut pod = admitted_pod("deployment-2048-689df87b6-new", age_seconds);
    let status = pod.status.as_mut().unwrap();
    status.conditions = Some(
        serde_json::from_value(json!([
            { "type": "ContainersReady", "status": "True" },
            { "type": "Ready", "status": "False", "reason": "ReadinessGatesNotReady" },
            { "type": GATE, "status": "False", "reason": "Elb.InitialHealthChecking",
              "message": "Initial health checks in progress" },
        ]))
        .unwrap(),
    );
    pod
}

use Check::*;
use Severity::{Risk, Warn};

#[rstest]
#[case::all_good(|_: &mut Inventory| {}, vec![])]
#[case::namespace_not_labelled(
    |i: &mut Inventory| { i.namespaces[0].metadata.labels.as_mut().unwrap().remove("elbv2.k8s.aws/pod-readiness-gate-inject"); },
    vec![(NamespaceNotLabelled, Risk), (NoPrestop, Risk), (GraceTooShort, Risk)],
)]
#[case::namespace_missing(
    |i: &mut Inventory| { i.namespaces.clear(); },
    vec![(NamespaceNotLabelled, Risk), (NoPrestop, Risk), (GraceTooShort, Risk)],
)]
#[case::namespace_opted_out(
    |i: &mut Inventory| { i.namespaces[0].metadata.annotations.get_or_insert_default().insert(ANNOTATION_INJECT.into(), "false".into()); },
    vec![(OptedOut, Warn), (NoPrestop, Risk), (GraceTooShort, Risk)],
)]
#[case::template_opted_out(
    |i: &mut Inventory| template_annotate(i, ANNOTATION_INJECT, "false"),
    vec![(OptedOut, Warn), (NoPrestop, Risk), (GraceTooShort, Risk)],
)]
#[case::opted_out_but_own_prestop_and_grace(
    |i: &mut Inventory| {
        template_annotate(i, ANNOTATION_INJECT, "false");
        let spec = template_spec(i);
        spec.termination_grace_period_seconds = Some(70);
        for c in &mut spec.containers {
            c.lifecycle = Some(serde_json::from_value(json!({ "preStop": { "sleep": { "seconds": 40 } } })).unwrap());
        }
    },
    vec![(OptedOut, Warn)],
)]
#[case::pods_predate_the_label(
    |i: &mut Inventory| { i.pods[0] = unpatched_pod("deployment-2048-689df87b6-old"); },
    vec![(PodsWithoutGate, Risk)],
)]
#[case::pods_predate_the_binding_but_have_a_prestop(
    |i: &mut Inventory| { i.pods[1].spec.as_mut().unwrap().readiness_gates = None; },
    vec![(PodsWithoutGate, Warn)],
)]
#[case::delay_grew_since_pods_were_admitted(
    |i: &mut Inventory| set_delay(i, 60),
    vec![(PodsStaleTiming, Risk)],
)]
#[case::own_prestop_too_short(
    |i: &mut Inventory| {
        template_spec(i).containers[0].lifecycle = Some(serde_json::from_value(json!({
            "preStop": { "exec": { "command": ["/bin/sh", "-c", "sleep 5"] } } })).unwrap());
    },
    vec![(PrestopTooShort, Risk)],
)]
#[case::drain_wait_own_prestop(
    |i: &mut Inventory| {
        template_spec(i).containers[0].lifecycle = Some(serde_json::from_value(json!({
            "preStop": { "exec": { "command": ["/bin/sh", "-c", "sleep 5"] } } })).unwrap());
        template_annotate(i, "gracegate.io/drain", "wait");
    },
    vec![(DrainWaitOwnPrestop, Warn)],
)]
#[case::own_prestop_long_enough(
    |i: &mut Inventory| {
        template_spec(i).containers[0].lifecycle = Some(serde_json::from_value(json!({
            "preStop": { "sleep": { "seconds": 45 } } })).unwrap());
    },
    vec![],
)]
#[case::own_short_prestop_on_a_container_gracegate_skips(
    |i: &mut Inventory| {
        template_annotate(i, ANNOTATION_CONTAINERS, "app-2048");
        template_spec(i).containers[1].lifecycle = Some(serde_json::from_value(json!({
            "preStop": { "sleep": { "seconds": 1 } } })).unwrap());
    },
    vec![],
)]
#[case::aws_default_delay(
    |i: &mut Inventory| set_delay(i, 300),
    vec![(DeregistrationDelayDefault, Warn), (PodsStaleTiming, Risk)],
)]
#[case::delay_over_the_cap(
    |i: &mut Inventory| set_delay(i, 200),
    vec![(DeregistrationDelayOverCap, Warn), (PodsStaleTiming, Risk)],
)]
#[case::aws_default_delay_from_the_records(
    |i: &mut Inventory| {
        i.ingresses[0].metadata.annotations.as_mut().unwrap().remove(binding::ALB_TARGET_GROUP_ATTRIBUTES);
        i.target_groups = record(|r| r.facts = Some(crate::elb::Facts {
            deregistration_delay_seconds: Some(300), ..Default::default() }));
        i.pods.clear();
    },
    vec![(DeregistrationDelayDefault, Warn)],
)]
// Measured drains size S up to --max-measured-prestop-seconds (300): only longer ones are a risk.
#[case::nlb_drains_longer_than_prestop(
    |i: &mut Inventory| { i.target_groups = nlb_drains(320.0); i.pods.clear(); },
    vec![(NlbDrainLongerThanPrestop, Risk)],
)]
#[case::nlb_drains_within_measured_cap(
    |i: &mut Inventory| { i.target_groups = nlb_drains(200.0); i.pods.clear(); },
    vec![],
)]
#[case::nlb_drains_short(
    |i: &mut Inventory| { i.target_groups = nlb_drains(12.0); i.pods.clear(); },
    vec![],
)]
#[case::instance_targets_behind_cluster_policy(
    |i: &mut Inventory| { i.bindings[0].spec.target_type = Some("instance".into()); },
    vec![(InstanceTargetsClusterPolicy, Warn)],
)]
#[case::instance_targets_behind_local_policy(
    |i: &mut Inventory| {
        i.bindings[0].spec.target_type = Some("instance".into());
        i.services[0].spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
    },
    vec![],
)]
#[case::binding_name_too_long(
    |i: &mut Inventory| { i.bindings[0].metadata.name = Some("k8s-game2048-service2-6f5e3c2a1b-with-a-very-long-suffix-for-no-reason".into()); },
    vec![(BindingNameTooLong, Warn)],
)]
#[case::no_pdb(|i: &mut Inventory| i.pdbs.clear(), vec![(NoPdb, Warn)])]
#[case::pdb_max_unavailable_all(
    |i: &mut Inventory| { i.pdbs[0].spec.as_mut().unwrap().max_unavailable = Some(IntOrString::String("100%".into())); },
    vec![(PdbAllowsAll, Warn)],
)]
#[case::pdb_min_available_zero(
    |i: &mut Inventory| {
        let spec = i.pdbs[0].spec.as_mut().unwrap();
        spec.max_unavailable = None;
        spec.min_available = Some(IntOrString::Int(0));
    },
    vec![(PdbAllowsAll, Warn)],
)]
#[case::one_replica_max_unavailable_one(
    |i: &mut Inventory| {
        let spec = &mut deployment(i).spec;
        spec.replicas = Some(1);
        spec.strategy = Some(serde_json::from_value(json!({ "type": "RollingUpdate",
            "rollingUpdate": { "maxUnavailable": 1, "maxSurge": 0 } })).unwrap());
    },
    vec![(PdbAllowsAll, Warn), (RolloutNoHealthyTarget, Risk)],
)]
#[case::one_replica_default_strategy_surges_first(
    |i: &mut Inventory| { deployment(i).spec.replicas = Some(1); i.pdbs.clear(); },
    vec![(NoPdb, Warn)],
)]
#[case::recreate(
    |i: &mut Inventory| { deployment(i).spec.strategy = Some(serde_json::from_value(json!({ "type": "Recreate" })).unwrap()); },
    vec![(RolloutNoHealthyTarget, Risk)],
)]
#[case::gate_stuck(
    |i: &mut Inventory| i.pods.push(stuck_pod(360)),
    vec![(GatesStuck, Warn)],
)]
#[case::gate_pending_not_long(
    |i: &mut Inventory| i.pods.push(stuck_pod(240)),
    vec![],
)]
#[case::lbc_webhook_injects_the_same_gate(
    |i: &mut Inventory| i.webhook_configurations = Some(vec![parse(LBC_WEBHOOK)]),
    vec![(LbcWebhook, Warn)],
)]
#[case::lbc_webhook_on_an_unlabelled_namespace(
    |i: &mut Inventory| {
        i.webhook_configurations = Some(vec![parse(LBC_WEBHOOK)]);
        i.namespaces[0].metadata.labels.as_mut().unwrap().remove("elbv2.k8s.aws/pod-readiness-gate-inject");
    },
    vec![(NamespaceNotLabelled, Risk), (NoPrestop, Risk), (GraceTooShort, Risk)],
)]
#[case::lbc_webhook_but_gracegate_not_acting(
    |i: &mut Inventory| {
        i.webhook_configurations = Some(vec![parse(LBC_WEBHOOK)]);
        template_annotate(i, ANNOTATION_INJECT, "false");
    },
    vec![(OptedOut, Warn), (NoPrestop, Risk), (GraceTooShort, Risk), (LbcWebhook, Severity::Info)],
)]
#[case::lbc_webhook_not_listable(
    |i: &mut Inventory| i.webhook_configurations = None,
    vec![],
)]
#[case::not_served(
    |i: &mut Inventory| { i.services[0].spec.as_mut().unwrap().selector = Some([("app".to_string(), "other".to_string())].into()); },
    vec![],
)]
fn checks_on_the_2048_deployment(
    #[case] edit: impl FnOnce(&mut Inventory),
    #[case] expected: Vec<(Check, Severity)>,
) {
    let mut i = inventory();
    edit(&mut i);
    let mut expected = expected;
    expected.sort();
    assert_eq!(
        checks(&i),
        expected,
        "{:#?}",
        audit(&i, &settings()).findings
    );
}

#[test]
fn every_check_is_covered_above() {
    // Keeps the tables honest: a new check needs a case that expects it.
    let source = include_str!("tests.rs");
    for check in Check::ALL {
        let expected = format!("({check:?}, ");
        assert!(source.contains(&expected), "no case for {check}");
    }
}

#[test]
fn the_workload_reports_s_and_t_from_the_webhooks_plan() {
    let result = audit(&inventory(), &settings());
    assert_eq!(
        result.workloads,
        vec![AuditedWorkload {
            namespace: "game-2048".into(),
            kind: "Deployment".into(),
            name: "deployment-2048".into(),
            bindings: vec!["k8s-game2048-service2-6f5e3c2a1b".into()],
            prestop_seconds: 40,
            termination_grace_period_seconds: 70,
            injected: true,
        }]
    );
}

#[test]
fn stuck_gate_names_the_pod_and_the_last_reason() {
    let mut i = inventory();
    i.pods.push(stuck_pod(400));
    let f = audit(&i, &settings()).findings;
    assert_eq!(f.len(), 1);
    assert!(
        f[0].reason
            .contains("deployment-2048-689df87b6-new waited 400s")
            && f[0]
                .reason
                .contains("False Elb.InitialHealthChecking: Initial health checks in progress"),
        "{}",
        f[0].reason
    );
}

#[test]
fn fixes_are_commands_and_annotations() {
    let mut i = inventory();
    i.namespaces[0]
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("elbv2.k8s.aws/pod-readiness-gate-inject");
    let f = audit(&i, &settings()).findings;
    let label = f.iter().find(|f| f.check == NamespaceNotLabelled).unwrap();
    assert_eq!(
        label.fix,
        "kubectl label namespace game-2048 elbv2.k8s.aws/pod-readiness-gate-inject=enabled, then \
         kubectl -n game-2048 rollout restart deployment/deployment-2048"
    );
    let grace = f.iter().find(|f| f.check == GraceTooShort).unwrap();
    assert!(
        grace
            .reason
            .contains("terminationGracePeriodSeconds 30 is shorter than 70"),
        "{}",
        grace.reason
    );
}

fn statefulset(replicas: i32) -> StatefulSet {
    let d: Value = parse(DEPLOYMENT);
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "web", "namespace": "game-2048", "uid": "sts-uid" },
        "spec": { "replicas": replicas, "serviceName": "service-2048",
                  "selector": d["spec"]["selector"], "template": d["spec"]["template"] },
    }))
    .unwrap()
}

#[rstest]
#[case::statefulset_of_one(|i: &mut Inventory| { i.deployments.clear(); i.statefulsets.push(statefulset(1)); }, "StatefulSet", vec![(PdbAllowsAll, Warn), (RolloutNoHealthyTarget, Risk)])]
#[case::statefulset_of_three(|i: &mut Inventory| { i.deployments.clear(); i.statefulsets.push(statefulset(3)); }, "StatefulSet", vec![])]
#[case::daemonset_without_surge_on_one_node(
    |i: &mut Inventory| {
        let d: Value = parse(DEPLOYMENT);
        i.deployments.clear();
        i.daemonsets.push(serde_json::from_value(json!({
            "metadata": { "name": "edge", "namespace": "game-2048", "uid": "ds-uid" },
            "spec": { "selector": d["spec"]["selector"], "template": d["spec"]["template"] },
            "status": { "desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": 1 },
        })).unwrap());
    },
    "DaemonSet",
    vec![(RolloutNoHealthyTarget, Risk)],
)]
#[case::argo_rollout_canary_all_unavailable(
    |i: &mut Inventory| {
        let d: Value = parse(DEPLOYMENT);
        i.deployments.clear();
        i.rollouts.push(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": { "name": "rollout-2048", "namespace": "game-2048", "uid": "ro-uid" },
            "spec": { "replicas": 2, "selector": d["spec"]["selector"], "template": d["spec"]["template"],
                      "strategy": { "canary": { "maxUnavailable": "100%", "maxSurge": 0 } } },
        }));
    },
    "Rollout",
    vec![(RolloutNoHealthyTarget, Risk)],
)]
#[case::bare_replicaset(
    |i: &mut Inventory| {
        i.deployments.clear();
        i.replicasets[0].metadata.owner_references = None;
    },
    "ReplicaSet",
    vec![],
)]
#[case::bare_pod_without_gate(
    |i: &mut Inventory| {
        i.deployments.clear();
        i.replicasets.clear();
        let mut pod = unpatched_pod("lonely");
        pod.metadata.owner_references = None;
        i.pods = vec![pod];
    },
    "Pod",
    vec![(PodsWithoutGate, Risk)],
)]
fn other_workload_kinds(
    #[case] edit: impl FnOnce(&mut Inventory),
    #[case] kind: &str,
    #[case] expected: Vec<(Check, Severity)>,
) {
    let mut i = inventory();
    edit(&mut i);
    let result = audit(&i, &settings());
    assert_eq!(
        result
            .workloads
            .iter()
            .map(|w| w.kind.as_str())
            .collect::<Vec<_>>(),
        vec![kind]
    );
    let mut expected = expected;
    expected.sort();
    assert_eq!(checks(&i), expected, "{:#?}", result.findings);
}

#[rstest]
#[case("25%", 4, false, 1)]
#[case("25%", 4, true, 1)]
#[case("25%", 1, false, 0)]
#[case("25%", 1, true, 1)]
#[case("100%", 3, false, 3)]
#[case("x%", 3, false, 0)]
fn percentages_round_like_the_controllers(
    #[case] value: &str,
    #[case] total: i32,
    #[case] up: bool,
    #[case] expected: i32,
) {
    assert_eq!(
        scaled(&IntOrString::String(value.into()), total, up),
        expected
    );
}
