//! `gracegate plan --from-cluster`: the plan's inputs read from a live cluster, read-only:
//! the Deployment, its namespace, the bindings serving its pods (with their Services and
//! Ingresses), and the leader's records in the `gracegate-target-groups` ConfigMap; with
//! `--aws`, the target groups' facts straight from ELBv2.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::{LoadBalancer, Shape};
use crate::aws::Elb;
use crate::binding::{DelaySource, TargetGroupBinding};
use crate::cli::{LoadBalancerArg, PlanArgs, PlanOutput};
use crate::cluster::records_of;
use crate::elb::{LoadBalancerKind, TargetGroup};
use crate::facts::{CONFIGMAP_NAME, Records};
use crate::inject::waiter::{self, DrainMode, DrainSettings};
use crate::inject::{self, PodView};
use crate::objects::NamespaceObjects;
use crate::timing::{self, MeasuredDrain, Timing, TimingSettings};
use crate::{Error, Result};

/// `gracegate plan`: the report, as text or JSON.
pub async fn run(args: &PlanArgs) -> Result<String> {
    let settings = args.timing();
    settings.check().map_err(Error::Settings)?;
    let drain = args.drain();
    drain.check().map_err(Error::Settings)?;
    let (lb, shape, timing, notes) = if args.from_cluster {
        let client =
            crate::cluster::kubectl_client(args.kubeconfig.as_deref(), args.context.as_deref())
                .await
                .map_err(|e| Error::Settings(format!("{e:#}")))?;
        let elb = match args.aws {
            true => {
                Some(Elb::for_command(args.aws_region.clone(), args.aws_endpoint_url.clone()).await)
            }
            false => None,
        };
        let read = read(
            client,
            args.namespace.as_deref().unwrap_or_default(),
            args.deployment.as_deref().unwrap_or_default(),
            &args.gracegate_namespace,
            &settings,
            &drain,
            args.pod_start_seconds,
            elb.as_ref(),
        )
        .await?;
        (
            read.load_balancer,
            read.shape,
            Some(read.timing),
            read.notes,
        )
    } else {
        let lb = from_flags(args);
        let timing = (drain.mode == DrainMode::Wait)
            .then(|| waiter::timing(&settings, &drain, &lb.evidence(), None, None));
        (lb, shape_of(args), timing, Vec::new())
    };
    let report =
        super::plan(&settings, &lb, &shape, timing).map_err(|e| Error::Settings(e.to_string()))?;
    Ok(match args.output {
        PlanOutput::Json => {
            let mut value = serde_json::to_value(&report).unwrap_or_default();
            value["notes"] = serde_json::json!(notes);
            let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
            text.push('\n');
            text
        }
        PlanOutput::Text => {
            let mut text = report.text();
            for note in notes {
                text.push_str(&format!("  (note) {note}\n"));
            }
            text
        }
    })
}

/// How the target group is named when the flags describe it.
const FLAGS: &str = "(from flags)";

/// The load balancer as the flags describe it.
pub fn from_flags(args: &PlanArgs) -> LoadBalancer {
    let kind = match args.load_balancer {
        LoadBalancerArg::Application => LoadBalancerKind::Application,
        LoadBalancerArg::Network => LoadBalancerKind::Network,
    };
    let defaults = LoadBalancer::defaults(kind);
    LoadBalancer {
        name: FLAGS.into(),
        kind,
        deregistration_delay: args
            .deregistration_delay
            .map(|d| (d, DelaySource::TargetGroup(FLAGS.into()))),
        health_check_interval_seconds: args
            .health_check_interval
            .unwrap_or(defaults.health_check_interval_seconds),
        healthy_threshold: args.healthy_threshold.unwrap_or(defaults.healthy_threshold),
        slow_start_seconds: args.slow_start,
        measured: args.measured_drain_p99.map(|p99| MeasuredDrain {
            p99_seconds: p99,
            count: args.measured_drains,
            target_group: FLAGS.into(),
        }),
    }
}

fn shape_of(args: &PlanArgs) -> Shape {
    Shape {
        replicas: args.replicas,
        max_surge: args.max_surge.clone(),
        max_unavailable: args.max_unavailable.clone(),
        pod_start_seconds: args.pod_start_seconds,
    }
}

/// What `plan` needs, read from the cluster.
pub struct Read {
    pub shape: Shape,
    pub load_balancer: LoadBalancer,
    pub timing: Timing,
    /// What the user should know about how the inputs were found.
    pub notes: Vec<String>,
}

/// Read the Deployment `name` in `namespace` and everything its plan depends on.
#[allow(clippy::too_many_arguments)] // each is one of the command's inputs, named at the call
pub async fn read(
    client: Client,
    namespace: &str,
    name: &str,
    gracegate_namespace: &str,
    settings: &TimingSettings,
    drain: &DrainSettings,
    pod_start_seconds: u32,
    elb: Option<&Elb>,
) -> Result<Read> {
    let mut notes = Vec::new();
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    let spec = deployment.spec.clone();
    let replicas = u32::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let strategy = spec.strategy.clone().unwrap_or_default();
    let (max_surge, max_unavailable) = if strategy.type_.as_deref() == Some("Recreate") {
        notes.push("strategy Recreate: every old pod goes before any new one starts".into());
        ("0".to_string(), replicas.to_string())
    } else {
        let rolling = strategy.rolling_update.unwrap_or_default();
        let text = |v: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>| match v {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                n.to_string()
            }
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s,
            None => "25%".into(),
        };
        (text(rolling.max_surge), text(rolling.max_unavailable))
    };
    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let pod: PodView = serde_json::from_value(template)
        .map_err(|e| Error::Settings(format!("Deployment {name}'s pod template: {e}")))?;

    let ns = Api::<Namespace>::all(client.clone()).get(namespace).await?;
    let all = ListParams::default();
    let services = Api::<Service>::namespaced(client.clone(), namespace)
        .list(&all)
        .await?;
    let bindings = Api::<TargetGroupBinding>::namespaced(client.clone(), namespace)
        .list(&all)
        .await?;
    let ingresses = Api::<Ingress>::namespaced(client.clone(), namespace)
        .list(&all)
        .await?;
    let records = match Api::<ConfigMap>::namespaced(client, gracegate_namespace)
        .get_opt(CONFIGMAP_NAME)
        .await
    {
        Ok(Some(cm)) => records_of(&cm),
        Ok(None) => {
            notes.push(format!(
                "no {CONFIGMAP_NAME} ConfigMap in {gracegate_namespace}: nothing measured yet"
            ));
            Records::default()
        }
        Err(error) => {
            notes.push(format!(
                "could not read {CONFIGMAP_NAME} in {gracegate_namespace} ({error}): planned without measurements"
            ));
            Records::default()
        }
    };
    let mut objects = NamespaceObjects {
        namespace: Some(Arc::new(ns)),
        services: services.items.into_iter().map(Arc::new).collect(),
        bindings: bindings.items.into_iter().map(Arc::new).collect(),
        ingresses: ingresses.items.into_iter().map(Arc::new).collect(),
        target_groups: Arc::new(records),
    };

    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let groups: Vec<(String, TargetGroup)> = inject::serving_bindings(&labels, &objects)
        .iter()
        .filter_map(|s| Some((s.binding.name_any(), s.binding.target_group()?)))
        .collect();
    if groups.is_empty() {
        return Err(Error::Settings(format!(
            "no TargetGroupBinding in {namespace} serves Deployment {name}'s pods (no binding's \
             Service selects labels {labels:?})"
        )));
    }

    if let Some(elb) = elb {
        let mut records = (*objects.target_groups).clone();
        for (binding, group) in &groups {
            let arn = match group {
                TargetGroup::Arn(arn) => Some(arn.clone()),
                TargetGroup::Name(n) => elb.target_group_arn(n).await.ok().flatten(),
            };
            let Some(arn) = arn else {
                notes.push(format!(
                    "binding {binding}: target group {group} not found in ELBv2"
                ));
                continue;
            };
            match elb.target_group_facts(&arn).await {
                Ok(facts) => {
                    records
                        .entry(group, Some(&arn))
                        .set_facts(facts, k8s_openapi::jiff::Timestamp::now());
                }
                Err(error) => notes.push(format!("binding {binding}: {group}: {error}")),
            }
        }
        objects.target_groups = Arc::new(records);
    }

    let served = inject::serving_bindings(&labels, &objects);
    let evidence = inject::evidence(&served, &objects);
    let pod_annotations = pod.metadata.annotations.as_ref();
    let ns_annotations = objects
        .namespace
        .as_ref()
        .and_then(|n| n.metadata.annotations.as_ref());
    // As the webhook decides: the workload's annotation, its namespace's, else --drain-mode.
    let timing = match waiter::mode(pod_annotations, ns_annotations, drain.mode, &mut notes) {
        DrainMode::Wait => {
            waiter::timing(settings, drain, &evidence, pod_annotations, ns_annotations)
        }
        DrainMode::Sleep => timing::timing(settings, &evidence, pod_annotations, ns_annotations),
    };

    // The slowest target group to turn a new target healthy decides the rollout's pace.
    let mut lb: Option<LoadBalancer> = None;
    for (_, group) in &groups {
        let record = objects.target_groups.get(group);
        let facts = record.and_then(|r| r.facts.clone());
        let kind = facts
            .as_ref()
            .and_then(|f| f.load_balancer)
            .unwrap_or(LoadBalancerKind::Application);
        let defaults = LoadBalancer::defaults(kind);
        let hc = facts
            .as_ref()
            .map(|f| f.health_check.clone())
            .unwrap_or_default();
        let candidate = LoadBalancer {
            name: group.name(None),
            kind,
            deregistration_delay: evidence.delay.clone(),
            health_check_interval_seconds: hc
                .interval_seconds
                .unwrap_or(defaults.health_check_interval_seconds),
            healthy_threshold: hc.healthy_threshold.unwrap_or(defaults.healthy_threshold),
            slow_start_seconds: facts.as_ref().and_then(|f| f.slow_start_seconds),
            measured: evidence.measured.clone(),
        };
        if facts.is_none() {
            notes.push(format!(
                "target group {}: no facts known (the watcher reads them once a pod is gated; or \
                 use --aws): AWS's application load balancer defaults assumed",
                candidate.name
            ));
        }
        let pace = |l: &LoadBalancer| l.health_check_interval_seconds * l.healthy_threshold;
        let slower = lb.as_ref().is_none_or(|l| {
            pace(&candidate) > pace(l)
                || (candidate.kind == LoadBalancerKind::Network
                    && l.kind != LoadBalancerKind::Network)
        });
        if slower {
            lb = Some(candidate);
        }
    }
    let load_balancer = lb.unwrap_or_else(|| LoadBalancer::defaults(LoadBalancerKind::Application));

    Ok(Read {
        shape: Shape {
            replicas,
            max_surge,
            max_unavailable,
            pod_start_seconds,
        },
        load_balancer,
        timing,
        notes,
    })
}
