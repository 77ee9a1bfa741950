//! `gracegate watcher`: sets readiness gate conditions from ELB target health.
//!
//! The decisions are pure ([`crate::targets`], [`crate::health`]); this module is the shell
//! that feeds them from the reflector stores and carries out what they decide:
//!
//! 1. gather the pending gates of every gated pod (a pod is stored only if it carries a gate
//!    gracegate serves, and only the fields the decisions read);
//! 2. one `DescribeTargetHealth` per target group with pending targets — never one per pod;
//! 3. a strategic-merge patch of `pods/status` for each condition that changes.
//!
//! Ticks run every `tick` while anything is pending and not at all when nothing is; a pod
//! event wakes the loop at once (at most one tick per `tick`, so a burst of events does not
//! multiply AWS calls).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, future, stream};
use k8s_openapi::api::core::v1::{Container, Node, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::aws::{AwsError, Elb, TargetId};
use crate::cluster::Cluster;
use crate::drain::{self, Departure, Step};
use crate::health::{self, Observation, TargetHealth, TargetState};
use crate::metrics::Metrics;
use crate::targets::{self, GateSettings, PendingGate, TargetGroup, Work};

/// How many target groups are described, and pods patched, at once.
const CONCURRENCY: usize = 16;

#[derive(Clone, Debug)]
pub struct WatcherSettings {
    pub gates: GateSettings,
    /// Time between ticks while anything is pending.
    pub tick: Duration,
}

/// What one tick did; for tests, benches and the debug log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub pending: usize,
    /// Terminating pods' targets still followed until the ELB drops them.
    pub departing: usize,
    pub describe_calls: usize,
    pub patches: usize,
}

pub struct Watcher {
    client: Client,
    elb: Elb,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    cluster: Cluster,
    pods: Store<Pod>,
    nodes: Store<Node>,
    wake: Arc<Notify>,
    settings: WatcherSettings,
    /// Target group names → ARNs, for bindings that only name their target group.
    arns: HashMap<String, String>,
    /// The condition last written per (pod uid, gate): the store lags behind our own patches,
    /// and without this a tick would write the same condition again.
    written: HashMap<(String, String), PodCondition>,
    /// Target groups whose last Describe failed: their outage is logged once, not every tick.
    failing: HashSet<TargetGroup>,
    /// Terminating pods' targets, followed until deregistered (even after the pod is gone).
    departures: HashMap<(String, TargetGroup, TargetId), Departure>,
    /// Departures already concluded, while their pod is still in the store (sleeping out its
    /// preStop): not followed again.
    departed: HashSet<(String, TargetGroup, TargetId)>,
}

impl Watcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        elb: Elb,
        metrics: Arc<Metrics>,
        cluster: Cluster,
        pods: Store<Pod>,
        nodes: Store<Node>,
        wake: Arc<Notify>,
        settings: WatcherSettings,
    ) -> Watcher {
        let reporter = Reporter {
            controller: "gracegate".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Watcher {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            elb,
            metrics,
            cluster,
            pods,
            nodes,
            wake,
            settings,
            arns: HashMap::new(),
            written: HashMap::new(),
            failing: HashSet::new(),
            departures: HashMap::new(),
            departed: HashSet::new(),
        }
    }

    /// Run until the process stops.
    pub async fn run(mut self) {
        let mut last: Option<Instant> = None;
        let mut pending = true;
        loop {
            // Idle: only a pod event starts a tick. Busy: the next tick is due `tick` after
            // the last one, sooner never.
            if pending {
                let due = last.map_or_else(Instant::now, |l| l + self.settings.tick);
                tokio::time::sleep_until(due).await;
            } else {
                self.wake.notified().await;
                if let Some(l) = last {
                    tokio::time::sleep_until(l + self.settings.tick).await;
                }
            }
            last = Some(Instant::now());
            let report = self.tick(now()).await;
            debug!(?report, "tick");
            pending = report.pending > 0 || report.departing > 0;
        }
    }

    /// One pass: gather pending gates and departing targets, describe their target groups,
    /// write what changed.
    pub async fn tick(&mut self, now: Time) -> TickReport {
        let (pending, departing) = self.scan(&now);
        for d in departing {
            let key = (d.uid.clone(), d.group.clone(), d.target.clone());
            if !self.departed.contains(&key) {
                self.departures.entry(key).or_insert(d);
            }
        }
        self.metrics.gates_pending.set(pending.len() as i64);
        let mut report = TickReport {
            pending: pending.len(),
            departing: self.departures.len(),
            ..TickReport::default()
        };
        self.forget_gone_pods();
        if pending.is_empty() && self.departures.is_empty() {
            return report;
        }

        let mut groups = targets::group_by_target_group(&pending);
        for d in self.departures.values() {
            groups
                .entry(d.group.clone())
                .or_default()
                .insert(d.target.clone());
        }
        let arns = self.resolve_names(groups.keys()).await;
        report.describe_calls = groups.keys().filter(|g| arns.contains_key(*g)).count();

        // Gates decided without the ELB are written first; the others wait for their target
        // group's answer, and each answer is acted on as it arrives: with many target groups
        // behind the token bucket, the last answer can come seconds after the first.
        let mut waiting: HashMap<TargetGroup, Vec<PendingGate>> = HashMap::new();
        let mut settled = Vec::new();
        for gate in pending {
            match &gate.work {
                Work::Describe { group, .. } => {
                    waiting.entry(group.clone()).or_default().push(gate)
                }
                Work::Settle(observation) => {
                    let observation = observation.clone();
                    settled.push((gate, observation));
                }
                Work::Wait => {}
            }
        }
        report.patches += self.write(settled, &now).await;

        let mut answers = tokio::task::JoinSet::new();
        for (group, targets) in groups {
            let Some(arn) = arns.get(&group).cloned() else {
                continue;
            };
            let targets: Vec<TargetId> = targets.into_iter().collect();
            // Made here, in target group order: each call's turn in the token bucket is taken now.
            let call = self.elb.describe_target_health(&arn, &targets);
            answers.spawn(async move {
                let result = call
                    .await
                    .map(|found| found.into_iter().collect::<HashMap<_, _>>());
                (group, result)
            });
        }
        while let Some(answer) = answers.join_next().await {
            let Ok((group, result)) = answer else {
                continue;
            };
            match &result {
                Ok(_) => {
                    if self.failing.remove(&group) {
                        info!(target_group = ?group, "target health readable again");
                    }
                }
                Err(error) => self.log_failure(&group, error),
            }
            self.follow_departures(&group, &result, &now).await;
            let observed = waiting
                .remove(&group)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|gate| {
                    let observation = observe(&gate, &result)?;
                    Some((gate, observation))
                })
                .collect();
            report.patches += self.write(observed, &now).await;
        }
        report
    }

    /// Write the conditions that change; returns how many were written.
    async fn write(&mut self, observed: Vec<(PendingGate, Observation)>, now: &Time) -> usize {
        let mut updates = Vec::new();
        for (gate, observation) in observed {
            let key = (gate.uid.clone(), gate.gate.clone());
            let current = self.written.get(&key).or(gate.current.as_ref());
            if let Some(condition) =
                health::update(&gate.gate, current, &observation.desired(), now)
            {
                updates.push((gate, observation, condition));
            }
        }
        let this = &*self;
        let patched: Vec<_> = stream::iter(updates)
            .map(|(gate, observation, condition)| async move {
                let result = this.patch(&gate, &condition).await;
                (gate, observation, condition, result)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut written = 0;
        for (gate, observation, condition, result) in patched {
            match result {
                Ok(()) => {
                    written += 1;
                    self.announce(&gate, &observation, &condition, now).await;
                    self.written
                        .insert((gate.uid.clone(), gate.gate.clone()), condition);
                }
                Err(error) => {
                    warn!(pod = %gate.pod, namespace = %gate.namespace, gate = %gate.gate, %error, "status patch failed; retrying next tick")
                }
            }
        }
        written
    }

    /// Pending gates of live pods, and departures of terminating ones, namespace by namespace
    /// (each namespace's objects are gathered once).
    fn scan(&self, now: &Time) -> (Vec<PendingGate>, Vec<Departure>) {
        let mut by_namespace: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in self.pods.state() {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            by_namespace.entry(ns).or_default().push(pod);
        }
        let node = |name: &str| self.nodes.get(&reflector::ObjectRef::new(name));
        let prefix = &self.settings.gates.condition_prefix;
        let (mut pending, mut departing) = (Vec::new(), Vec::new());
        for (ns, pods) in by_namespace {
            let objects = self.cluster.objects(&ns);
            pending.extend(targets::pending_gates(
                &pods,
                &objects,
                node,
                &self.settings.gates,
                now,
            ));
            if pods.iter().any(|p| p.metadata.deletion_timestamp.is_some()) {
                departing.extend(drain::departures(&pods, &objects, node, prefix));
            }
        }
        (pending, departing)
    }

    /// Advance the departures of a target group that answered.
    async fn follow_departures(
        &mut self,
        group: &TargetGroup,
        answer: &Result<HashMap<TargetId, TargetHealth>, AwsError>,
        now: &Time,
    ) {
        let Ok(found) = answer else { return };
        let mut done = Vec::new();
        let mut late = Vec::new();
        for (key, d) in self
            .departures
            .iter_mut()
            .filter(|(_, d)| &d.group == group)
        {
            match drain::observe(d, found.get(&d.target), now.0) {
                Step::Continue => {}
                Step::StillHealthyAfterPrestop { late_seconds } => {
                    late.push((d.clone(), late_seconds))
                }
                Step::Deregistered { seconds } => {
                    self.metrics.deregistration.observe(seconds);
                    debug!(pod = %d.pod, target = %d.target, seconds, "target deregistered");
                    done.push(key.clone());
                }
                Step::GiveUp => done.push(key.clone()),
            }
        }
        for key in done {
            self.departures.remove(&key);
            self.departed.insert(key);
        }
        for (d, late_seconds) in late {
            self.metrics.terminated_before_deregistered.inc();
            warn!(pod = %d.pod, namespace = %d.namespace, target = %d.target, late_seconds, "preStop sleep ended while the load balancer still sent traffic");
            let note = format!(
                "preStop sleep ended while target {} was still healthy in the load balancer: \
                 requests may fail; raise gracegate.io/prestop-seconds or lower the deregistration delay",
                d.target
            );
            self.event(
                &d.namespace,
                &d.pod,
                &d.uid,
                EventType::Warning,
                "TerminatedBeforeDeregistered",
                note,
            )
            .await;
        }
    }

    fn forget_gone_pods(&mut self) {
        if self.written.is_empty() && self.departed.is_empty() {
            return;
        }
        let live: HashSet<String> = self.pods.state().iter().filter_map(|p| p.uid()).collect();
        self.written.retain(|(uid, _), _| live.contains(uid));
        self.departed.retain(|(uid, _, _)| live.contains(uid));
    }

    /// ARNs for every group; names are looked up once and cached.
    async fn resolve_names<'g>(
        &mut self,
        groups: impl Iterator<Item = &'g TargetGroup>,
    ) -> HashMap<TargetGroup, String> {
        let mut arns = HashMap::new();
        for group in groups {
            match group {
                TargetGroup::Arn(arn) => {
                    arns.insert(group.clone(), arn.clone());
                }
                TargetGroup::Name(name) => {
                    if !self.arns.contains_key(name) {
                        match self.elb.target_group_arn(name).await {
                            Ok(Some(arn)) => {
                                self.arns.insert(name.clone(), arn);
                            }
                            Ok(None) => {}
                            Err(error) => self.log_failure(group, &error),
                        }
                    }
                    if let Some(arn) = self.arns.get(name) {
                        arns.insert(group.clone(), arn.clone());
                    }
                }
            }
        }
        arns
    }

    fn log_failure(&mut self, group: &TargetGroup, error: &AwsError) {
        if self.failing.insert(group.clone()) {
            warn!(target_group = ?group, %error, "cannot read target health; gates wait and retry every tick");
        }
    }

    async fn patch(&self, gate: &PendingGate, condition: &PodCondition) -> Result<(), kube::Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &gate.namespace);
        let body = health::status_patch(&gate.uid, condition);
        match api
            .patch_status(&gate.pod, &PatchParams::default(), &Patch::Strategic(&body))
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or replaced by a pod of the same name (the UID precondition): nothing to do.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                debug!(pod = %gate.pod, code = status.code, "pod gone; condition not written");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Events and metrics for a condition that was written.
    async fn announce(
        &self,
        gate: &PendingGate,
        observation: &Observation,
        condition: &PodCondition,
        now: &Time,
    ) {
        if condition.status != "True" {
            return;
        }
        let seconds = gate
            .created
            .as_ref()
            .map(|c| now.0.duration_since(c.0).as_secs_f64().max(0.0));
        let (type_, reason, note) = match observation {
            Observation::Health(h) if h.state == TargetState::Healthy => {
                if let Some(s) = seconds {
                    self.metrics.gate_ready.observe(s);
                }
                let after = seconds
                    .map(|s| format!(" {s:.0}s after pod creation"))
                    .unwrap_or_default();
                (
                    EventType::Normal,
                    "TargetHealthy",
                    format!("{}: target healthy{after}", gate.gate),
                )
            }
            Observation::TimedOut { .. } => {
                self.metrics.gate_timeouts.inc();
                (
                    EventType::Warning,
                    "GateTimeout",
                    format!(
                        "{}: {}",
                        gate.gate,
                        condition.message.clone().unwrap_or_default()
                    ),
                )
            }
            _ => return,
        };
        self.event(&gate.namespace, &gate.pod, &gate.uid, type_, reason, note)
            .await;
    }

    async fn event(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "ObserveTargetHealth".into(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: Some(namespace.into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            warn!(%pod, %error, "could not record event");
        }
    }
}

/// What a pending gate's target says in its target group's answer; `None` leaves the gate
/// as it is (the call failed and is retried next tick).
fn observe(
    gate: &PendingGate,
    answer: &Result<HashMap<TargetId, TargetHealth>, AwsError>,
) -> Option<Observation> {
    let Work::Describe { target, .. } = &gate.work else {
        return None;
    };
    match answer {
        Ok(found) => Some(
            found
                .get(target)
                .cloned()
                .map_or(Observation::NotRegistered, Observation::Health),
        ),
        Err(AwsError::TargetGroupNotFound(message)) => Some(Observation::NoData(format!(
            "target group not found: {message}"
        ))),
        Err(_) => None,
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Reflectors on Pods (only pods carrying a gracegate gate, stripped to what the watcher
/// reads) and Nodes (only their providerID). The future drives them; every pod change
/// wakes `wake`.
pub fn watch_pods(
    client: Client,
    condition_prefix: String,
    wake: Arc<Notify>,
) -> (
    Store<Pod>,
    Store<Node>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (pods, pod_writer) = reflector::store();
    let (nodes, node_writer) = reflector::store();
    let drive = async move {
        let pod_stream = watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff();
        let nodes_stream = watcher(
            Api::<Node>::all(client),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(strip_node)
        .reflect(node_writer)
        .for_each(|event| {
            if let Err(error) = event {
                warn!(%error, "node watch failed; retrying");
            }
            future::ready(())
        });
        future::join(
            apply_gated_pods(pod_stream, pod_writer, condition_prefix, wake),
            nodes_stream,
        )
        .await;
    };
    (pods, nodes, drive)
}

/// Keep only gated pods, stripped, in the store. Readiness gates are immutable, so a pod
/// without one never gains one.
pub async fn apply_gated_pods<S>(
    events: S,
    mut writer: Writer<Pod>,
    prefix: String,
    wake: Arc<Notify>,
) where
    S: futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>,
{
    let gated = |pod: &Pod| {
        pod.spec
            .iter()
            .flat_map(|s| s.readiness_gates.iter().flatten())
            .any(|g| targets::parse_gate(&g.condition_type, &prefix).is_some())
    };
    let events = events.map_err(|error| {
        warn!(%error, "pod watch failed; retrying");
        error
    });
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let event = match event {
            watcher::Event::Apply(pod) if gated(&pod) => {
                watcher::Event::Apply(strip_pod(pod, &prefix))
            }
            watcher::Event::InitApply(pod) if gated(&pod) => {
                watcher::Event::InitApply(strip_pod(pod, &prefix))
            }
            watcher::Event::Delete(pod) => watcher::Event::Delete(pod),
            watcher::Event::Apply(_) | watcher::Event::InitApply(_) => continue,
            other => other,
        };
        let listed = matches!(event, watcher::Event::InitDone);
        writer.apply_watcher_event(&event);
        if listed {
            release_freed_memory();
        }
        wake.notify_one();
    }
}

/// A (re)list deserialises every pod in full before it is stripped: for a large cluster,
/// hundreds of MB of short-lived allocations interleaved with the small long-lived ones, which
/// glibc's allocator keeps as resident memory. Once the list is in, hand the free pages back.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no
        // memory in use and is safe to call at any time from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Everything a decision about a pod does not read goes before caching: at 10,000 pods the
/// env, volumes, probes and managed fields are most of the memory (see BENCHMARKS.md).
///
/// What stays: name, namespace, UID and times; node, gates and grace period; IP and the
/// gracegate conditions; and the containers reduced to what resolves a target port and the
/// preStop sleep (see [`merge_containers`]).
pub fn strip_pod(mut pod: Pod, condition_prefix: &str) -> Pod {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    if let Some(spec) = pod.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::PodSpec {
            containers: merge_containers(std::mem::take(&mut spec.containers), true),
            init_containers: spec
                .init_containers
                .take()
                .map(|cs| merge_containers(cs, false))
                .filter(|cs| !cs.is_empty()),
            node_name: spec.node_name.take(),
            readiness_gates: spec.readiness_gates.take(),
            termination_grace_period_seconds: spec.termination_grace_period_seconds,
            ..Default::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        let ours = |c: &k8s_openapi::api::core::v1::PodCondition| {
            targets::parse_gate(&c.type_, condition_prefix).is_some()
        };
        *status = k8s_openapi::api::core::v1::PodStatus {
            conditions: status
                .conditions
                .take()
                .map(|cs| cs.into_iter().filter(ours).collect()),
            pod_ip: status.pod_ip.take(),
            ..Default::default()
        };
    }
    pod
}

/// One container per distinct preStop, holding the ports of every container with that
/// preStop; containers with neither ports nor a preStop are dropped. A `Container` is 2.3 KB
/// even when nearly empty, and a pod usually has several with the same injected preStop.
/// What the watcher reads is unchanged: which port numbers a port name resolves to, and
/// which preStop the container serving a port has.
pub fn merge_containers(containers: Vec<Container>, keep_prestop: bool) -> Vec<Container> {
    let mut groups: Vec<Container> = Vec::new();
    for c in containers {
        let prestop = c
            .lifecycle
            .and_then(|l| l.pre_stop)
            .filter(|_| keep_prestop);
        let ports = c.ports.unwrap_or_default();
        if ports.is_empty() && prestop.is_none() {
            continue;
        }
        let same = groups
            .iter_mut()
            .find(|g| g.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) == prestop.as_ref());
        match same {
            Some(group) => group.ports.get_or_insert_with(Vec::new).extend(ports),
            None => groups.push(Container {
                name: c.name,
                ports: (!ports.is_empty()).then_some(ports),
                lifecycle: prestop.map(|p| k8s_openapi::api::core::v1::Lifecycle {
                    pre_stop: Some(p),
                    ..Default::default()
                }),
                ..Container::default()
            }),
        }
    }
    groups
}

fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.metadata.labels = None;
    node.status = None;
    if let Some(spec) = node.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::NodeSpec {
            provider_id: spec.provider_id.take(),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::NamespaceObjects;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    const PREFIX: &str = "target-health.elbv2.k8s.aws";
    const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";

    /// The large recorded pod, scheduled, gated, with preStops of 40 s on two containers and
    /// 5 s on the third.
    fn large_pod() -> Pod {
        let review: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/fixtures/admission/create-deployment-pod-large.json"
        ))
        .unwrap();
        let mut pod = review["request"]["object"].clone();
        pod["metadata"]["name"] = json!("checkout-1");
        pod["metadata"]["uid"] = json!("u-1");
        pod["spec"]["nodeName"] = json!("ip-10-0-1-1.ec2.internal");
        pod["spec"]["readinessGates"] = json!([{ "conditionType": GATE }]);
        for (i, seconds) in [40, 40, 5].iter().enumerate() {
            pod["spec"]["containers"][i]["lifecycle"] =
                json!({ "preStop": { "sleep": { "seconds": seconds } } });
        }
        pod["status"] = json!({
            "phase": "Running", "podIP": "10.0.0.7",
            "conditions": [
                { "type": "PodScheduled", "status": "True" },
                { "type": GATE, "status": "False", "reason": "Elb.InitialHealthChecking" },
            ],
        });
        serde_json::from_value(pod).unwrap()
    }

    fn objects(target_port: IntOrString) -> NamespaceObjects {
        let mut service: k8s_openapi::api::core::v1::Service =
            serde_json::from_str(include_str!("../tests/fixtures/cluster/service.json")).unwrap();
        service.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].target_port = Some(target_port);
        NamespaceObjects {
            namespace: None,
            services: vec![Arc::new(service)],
            bindings: vec![Arc::new(
                serde_json::from_str(include_str!(
                    "../tests/fixtures/cluster/targetgroupbinding.json"
                ))
                .unwrap(),
            )],
            ingresses: vec![],
            target_groups: Default::default(),
        }
    }

    #[test]
    fn stripping_keeps_every_answer_the_watcher_reads() {
        let full = large_pod();
        let stripped = strip_pod(full.clone(), PREFIX);
        let mut terminating = full.clone();
        terminating.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_070).unwrap(),
        ));
        terminating.metadata.deletion_grace_period_seconds = Some(70);
        let stripped_terminating = strip_pod(terminating.clone(), PREFIX);
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let settings = GateSettings {
            condition_prefix: PREFIX.into(),
            gate_timeout: None,
        };
        for port in ["http-p", "grpc-gatew-p", "otel-agent-p", "nope"] {
            let o = objects(IntOrString::String(port.into()));
            let target = |p: &Pod| targets::target(p, &o.bindings[0], &o.services[0], |_| None);
            assert_eq!(target(&full), target(&stripped), "{port}");
            let pending = |p: Pod| {
                targets::pending_gates(&[Arc::new(p)], &o, |_| None, &settings, &now)
                    .into_iter()
                    .map(|g| (g.gate, g.current, g.work))
                    .collect::<Vec<_>>()
            };
            assert_eq!(pending(full.clone()), pending(stripped.clone()), "{port}");
            let departures = |p: Pod| drain::departures(&[Arc::new(p)], &o, |_| None, PREFIX);
            assert_eq!(
                departures(terminating.clone()),
                departures(stripped_terminating.clone()),
                "{port}"
            );
        }
        // The third container's own 5 s preStop still decides for the port it serves.
        let o = objects(IntOrString::String("otel-agent-p".into()));
        let d = drain::departures(&[Arc::new(stripped_terminating)], &o, |_| None, PREFIX);
        assert_eq!(
            d[0].prestop_ends.as_second() - d[0].deleted_at.as_second(),
            5
        );
    }

    #[test]
    fn stripping_drops_what_no_decision_reads() {
        let stripped = strip_pod(large_pod(), PREFIX);
        let json = serde_json::to_value(&stripped).unwrap();
        for absent in [
            "/metadata/managedFields",
            "/metadata/labels",
            "/spec/volumes",
            "/spec/affinity",
        ] {
            assert!(json.pointer(absent).is_none(), "{absent} kept");
        }
        let spec = stripped.spec.as_ref().unwrap();
        assert_eq!(
            spec.containers.len(),
            2,
            "one container per distinct preStop"
        );
        assert!(
            spec.containers
                .iter()
                .all(|c| c.env.is_none() && c.readiness_probe.is_none())
        );
        let conditions = stripped
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, GATE);
        let full_size = serde_json::to_vec(&large_pod()).unwrap().len();
        let stripped_size = serde_json::to_vec(&stripped).unwrap().len();
        assert!(
            stripped_size * 20 < full_size,
            "{stripped_size} of {full_size} bytes kept"
        );
    }

    #[test]
    fn containers_merge_by_prestop() {
        let c = |name: &str, port: Option<i32>, sleep: Option<i64>| -> Container {
            serde_json::from_value(json!({
                "name": name,
                "ports": port.map(|p| vec![json!({ "containerPort": p })]),
                "lifecycle": sleep.map(|s| json!({ "preStop": { "sleep": { "seconds": s } } })),
            }))
            .unwrap()
        };
        let merged = merge_containers(
            vec![
                c("a", Some(80), Some(40)),
                c("b", Some(81), Some(40)),
                c("c", None, None),
                c("d", None, Some(5)),
                c("e", Some(82), None),
            ],
            true,
        );
        let summary: Vec<(Vec<i32>, Option<u64>)> = merged
            .iter()
            .map(|g| {
                (
                    g.ports.iter().flatten().map(|p| p.container_port).collect(),
                    g.lifecycle
                        .as_ref()
                        .and_then(|l| l.pre_stop.as_ref())
                        .and_then(crate::inject::sleep_seconds),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (vec![80, 81], Some(40)),
                (vec![], Some(5)),
                (vec![82], None)
            ]
        );
        // Init containers keep only their ports.
        let init = merge_containers(
            vec![c("envoy", Some(15001), Some(3)), c("migrate", None, None)],
            false,
        );
        assert_eq!(init.len(), 1);
        assert!(init[0].lifecycle.is_none());
    }
}
