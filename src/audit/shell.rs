//! `gracegate audit`'s I/O: list the objects (read-only: `get` and `list`, nothing else),
//! optionally ask ELBv2 for deregistration delays (`--aws`), run the pure checks, print.
//!
//! RBAC it needs (cluster-wide for `--all-namespaces`, else in the namespace): `list` on
//! namespaces (or `get` on the one namespace), services, pods, poddisruptionbudgets
//! (policy), deployments, statefulsets, daemonsets, replicasets (apps), ingresses
//! (networking.k8s.io), targetgroupbindings (elbv2.k8s.aws), rollouts (argoproj.io, if
//! installed); `list` on mutatingwebhookconfigurations (admissionregistration.k8s.io, cluster);
//! `get` on the ConfigMap `gracegate-target-groups` in gracegate's namespace. Lists that are
//! forbidden for the optional objects (webhook configurations, the ConfigMap, rollouts) are
//! noted on stderr and the checks that need them are skipped.

use anyhow::Context as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::output::{self, Format};
use super::{AuditSettings, Inventory, audit};
use crate::binding::TargetGroupBinding;
use crate::cli::AuditArgs;
use crate::elb::TargetGroup;
use crate::facts::CONFIGMAP_NAME;
use crate::inject::PrestopAction;

/// Exit code when a finding reaches `--fail-on`.
pub const EXIT_FINDINGS: i32 = 3;

/// Which namespaces to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

/// Run `gracegate audit`: returns the process exit code.
pub async fn run(args: AuditArgs) -> anyhow::Result<i32> {
    let client = client(&args).await?;
    let (text, code) = run_with_client(client, &args, Timestamp::now()).await?;
    print!("{text}");
    Ok(code)
}

async fn client(args: &AuditArgs) -> anyhow::Result<Client> {
    crate::cluster::kubectl_client(args.kubeconfig.as_deref(), args.context.as_deref()).await
}

/// Everything but making the client and printing: the rendered output and the exit code.
pub async fn run_with_client(
    client: Client,
    args: &AuditArgs,
    now: Timestamp,
) -> anyhow::Result<(String, i32)> {
    let settings = AuditSettings {
        inject: args.inject.settings(PrestopAction::Sleep)?,
        gate_timeout: args.gate_timeout,
        now,
    };
    let scope = match (&args.namespace, args.all_namespaces) {
        (_, true) => Scope::All,
        (Some(ns), false) => Scope::Namespace(ns.clone()),
        (None, false) => Scope::Namespace(client.default_namespace().to_string()),
    };
    let mut inventory = collect(client, &scope, &args.gracegate_namespace).await?;
    if args.aws {
        fill_from_aws(&mut inventory, args).await?;
    }
    let result = audit(&inventory, &settings);
    let color = args.output == Format::Table
        && crate::logging::ansi(
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
            std::env::var_os("NO_COLOR").as_deref(),
        );
    let text = output::render(&result, args.output, color);
    let code = match (args.fail_on, result.worst()) {
        (Some(level), Some(worst)) if worst >= level.severity() => EXIT_FINDINGS,
        _ => 0,
    };
    Ok((text, code))
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::All => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Every object of a kind, page by page.
async fn list_all<K>(api: &Api<K>) -> kube::Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

fn is_status(error: &kube::Error, codes: &[u16]) -> bool {
    matches!(error, kube::Error::Api(s) if codes.contains(&s.code))
}

/// A list that may be missing (CRD not installed: 404) or forbidden (403): empty, with a note.
async fn optional<K>(api: &Api<K>, what: &str) -> anyhow::Result<Option<Vec<K>>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match list_all(api).await {
        Ok(items) => Ok(Some(items)),
        Err(e) if is_status(&e, &[404]) => Ok(Some(Vec::new())),
        Err(e) if is_status(&e, &[403]) => {
            eprintln!(
                "gracegate audit: not allowed to list {what}; the checks that need them are skipped"
            );
            Ok(None)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("listing {what}"))),
    }
}

/// List everything `audit` reads. Only GET requests.
pub async fn collect(
    client: Client,
    scope: &Scope,
    gracegate_namespace: &str,
) -> anyhow::Result<Inventory> {
    let required = |what: &'static str| {
        move |e: kube::Error| {
            let hint = if is_status(&e, &[403]) {
                " (audit needs get/list on it: see `gracegate audit --help` and the README)"
            } else {
                ""
            };
            anyhow::Error::new(e).context(format!("listing {what}{hint}"))
        }
    };
    let namespaces = match scope {
        Scope::All => list_all(&Api::<Namespace>::all(client.clone()))
            .await
            .map_err(required("namespaces"))?,
        Scope::Namespace(ns) => match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
            Ok(found) => found.into_iter().collect(),
            Err(e) => return Err(required("namespaces")(e)),
        },
    };
    let mut inventory = Inventory {
        namespaces,
        services: list_all(&api(&client, scope))
            .await
            .map_err(required("services"))?,
        ..Default::default()
    };
    // Without the CRD nothing is behind a TargetGroupBinding.
    inventory.bindings = optional(
        &api::<TargetGroupBinding>(&client, scope),
        "targetgroupbindings",
    )
    .await?
    .unwrap_or_default();
    inventory.ingresses = list_all(&api(&client, scope))
        .await
        .map_err(required("ingresses"))?;
    inventory.pdbs = list_all(&api(&client, scope))
        .await
        .map_err(required("poddisruptionbudgets"))?;
    inventory.deployments = list_all(&api(&client, scope))
        .await
        .map_err(required("deployments"))?;
    inventory.statefulsets = list_all(&api(&client, scope))
        .await
        .map_err(required("statefulsets"))?;
    inventory.daemonsets = list_all(&api(&client, scope))
        .await
        .map_err(required("daemonsets"))?;
    inventory.replicasets = list_all(&api(&client, scope))
        .await
        .map_err(required("replicasets"))?;
    let rollout = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Rollout"),
        "rollouts",
    );
    let rollouts: Api<DynamicObject> = match scope {
        Scope::All => Api::all_with(client.clone(), &rollout),
        Scope::Namespace(ns) => Api::namespaced_with(client.clone(), ns, &rollout),
    };
    inventory.rollouts = optional(&rollouts, "rollouts (argoproj.io)")
        .await?
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    inventory.pods = list_all(&api(&client, scope))
        .await
        .map_err(required("pods"))?;
    inventory.webhook_configurations = optional(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        "mutatingwebhookconfigurations",
    )
    .await?;
    let configmaps = Api::<ConfigMap>::namespaced(client, gracegate_namespace);
    match configmaps.get_opt(CONFIGMAP_NAME).await {
        Ok(Some(cm)) => inventory.target_groups = crate::cluster::records_of(&cm),
        Ok(None) => {}
        Err(e) if is_status(&e, &[403]) => eprintln!(
            "gracegate audit: not allowed to get ConfigMap {gracegate_namespace}/{CONFIGMAP_NAME}; \
             sizing S without measured drains"
        ),
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("reading ConfigMap {CONFIGMAP_NAME}"))
            );
        }
    }
    Ok(inventory)
}

/// `--aws`: the facts (deregistration delay, protocol → load balancer kind, health checks) of
/// every bound target group the records do not know.
async fn fill_from_aws(inventory: &mut Inventory, args: &AuditArgs) -> anyhow::Result<()> {
    let elb =
        crate::aws::Elb::for_command(args.aws_region.clone(), args.aws_endpoint_url.clone()).await;
    let groups: std::collections::BTreeSet<TargetGroup> = inventory
        .bindings
        .iter()
        .filter_map(|b| b.target_group())
        .collect();
    for group in groups {
        if inventory
            .target_groups
            .get(&group)
            .is_some_and(|r| r.facts.is_some())
        {
            continue;
        }
        let arn = match &group {
            TargetGroup::Arn(arn) => Some(arn.clone()),
            TargetGroup::Name(name) => elb
                .target_group_arn(name)
                .await
                .with_context(|| format!("DescribeTargetGroups {name}"))?,
        };
        let Some(arn) = arn else { continue };
        let facts = elb
            .target_group_facts(&arn)
            .await
            .with_context(|| format!("target group {arn}"))?;
        inventory
            .target_groups
            .entry(&group, Some(&arn))
            .set_facts(facts, Timestamp::now());
    }
    Ok(())
}
