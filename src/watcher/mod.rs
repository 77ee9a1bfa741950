//! `gracegate watcher`: what the load balancer says, turned into pod conditions, events and
//! knowledge about each target group.
//!
//! The decisions are pure ([`crate::targets`], [`crate::health`], [`crate::drain`],
//! [`crate::facts`]); this module is the shell that feeds them from the reflector stores and
//! carries out what they decide. Each tick:
//!
//! 1. gather the pending gates of every gated pod ([`cache`] keeps only gated pods, stripped)
//!    and the departing targets of terminating and deleted pods;
//! 2. one round of ELBv2 calls ([`scheduler`]): one `DescribeTargetHealth` per target group
//!    with pending or departing targets — never one per pod — then the facts of the target
//!    groups that are due ([`facts`]);
//! 3. as each answer arrives: the gate writer ([`gates`]) patches the conditions that change,
//!    the departure follower ([`departures`]) measures drains and reports early deaths, and the
//!    facts go into the records ([`records`]), written to the `gracegate-target-groups`
//!    ConfigMap at most every 10 s.
//!
//! With drain waits ([`Watcher::with_drain_waits`]), the pods whose waiters ask the board
//! are followed too ([`releases`]): their targets join the round's describes and the verdicts
//! go to the board after it.
//!
//! Ticks run every `tick` while anything is pending, departing or waited for, and otherwise
//! only when a pod event or a new drain wait wakes the loop or facts or a records write come
//! due.

pub mod cache;
pub mod departures;
pub mod facts;
pub mod gates;
pub mod records;
pub mod releases;
pub mod scheduler;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use cache::{GonePods, apply_gated_pods, merge_containers, strip_pod, watch_pods};

use crate::aws::Elb;
use crate::cluster::Cluster;
use crate::drain::{self, Departure};
use crate::elb::TargetGroup;
use crate::health::Observation;
use crate::metrics::Metrics;
use crate::targets::{self, GateSettings, PendingGate, Work};
use departures::DepartureFollower;
use facts::FactsRefresher;
use gates::GateWriter;
use records::RecordKeeper;
use releases::ReleaseFollower;
use scheduler::{Answer, Scheduler};

#[derive(Clone, Debug)]
pub struct WatcherSettings {
    pub gates: GateSettings,
    /// Time between ticks while anything is pending.
    pub tick: Duration,
    /// How often a gated target group's facts are read; `None`: never.
    pub facts_refresh: Option<Duration>,
    /// gracegate's namespace, where the records are kept; `None`: in memory only.
    pub records_namespace: Option<String>,
}

impl WatcherSettings {
    /// Gates only: no facts, records kept in memory.
    pub fn gates(gates: GateSettings, tick: Duration) -> WatcherSettings {
        WatcherSettings {
            gates,
            tick,
            facts_refresh: None,
            records_namespace: None,
        }
    }
}

/// What one tick did; for tests, benches and the debug log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub pending: usize,
    /// Terminating pods' targets still followed until the ELB drops them.
    pub departing: usize,
    /// Pods with drain waits not released yet.
    pub waiting: usize,
    pub describe_calls: usize,
    /// Target groups whose facts were read.
    pub facts_calls: usize,
    pub patches: usize,
    /// The records ConfigMap was written.
    pub records_written: bool,
    /// When the loop must come back although nothing is pending: facts or a records write
    /// come due then.
    pub next_due: Option<Duration>,
}

/// What the watcher's parts share: the API client, the ELB, events, metrics and caches.
pub struct Context {
    pub client: Client,
    pub elb: Elb,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub cluster: Cluster,
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
}

// === impl Context ===

impl Context {
    /// Record an event on a pod; a failure is logged, never fatal.
    pub async fn event(
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
            warn!(%pod, %namespace, %reason, %error, "could not record event");
        }
    }
}

pub struct Watcher {
    ctx: Context,
    settings: WatcherSettings,
    wake: Arc<Notify>,
    gone: GonePods,
    scheduler: Scheduler,
    gates: GateWriter,
    departures: DepartureFollower,
    facts: FactsRefresher,
    records: RecordKeeper,
    releases: Option<ReleaseFollower>,
}

// === impl Watcher ===

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
            ctx: Context {
                recorder: Recorder::new(client.clone(), reporter),
                client,
                elb,
                metrics,
                cluster,
                pods,
                nodes,
            },
            facts: FactsRefresher::new(settings.facts_refresh),
            records: RecordKeeper::new(settings.records_namespace.clone()),
            settings,
            wake,
            gone: GonePods::default(),
            scheduler: Scheduler::default(),
            gates: GateWriter::default(),
            departures: DepartureFollower::default(),
            releases: None,
        }
    }

    /// Answer the drain waits on `board`, which this watcher leads from now on (and steps
    /// down when dropped); a pod is released once its targets have been unlisted `settle`.
    pub fn with_drain_waits(
        mut self,
        board: Arc<crate::waits::Board>,
        settle: k8s_openapi::jiff::SignedDuration,
    ) -> Watcher {
        self.releases = Some(ReleaseFollower::new(board, settle));
        self
    }

    /// Where the pod cache hands over deleted pods (see [`watch_pods`]).
    pub fn gone_pods(&self) -> GonePods {
        self.gone.clone()
    }

    /// Take deleted pods from this handle (the one given to [`watch_pods`]).
    pub fn with_gone_pods(mut self, gone: GonePods) -> Watcher {
        self.gone = gone;
        self
    }

    /// Per-pod bookkeeping entries (conditions written, patches failing, departures followed
    /// or concluded): bounded by the pods in the cache plus the departures still followed.
    pub fn remembered(&self) -> usize {
        self.gates.remembered() + self.departures.remembered()
    }

    /// The records as this watcher knows them.
    pub fn records(&self) -> &crate::facts::Records {
        self.records.records()
    }

    /// Run until the process stops.
    pub async fn run(mut self) {
        let mut last: Option<Instant> = None;
        let mut report = TickReport {
            pending: 1,
            ..TickReport::default()
        };
        loop {
            // Busy: the next tick is due `tick` after the last one, sooner never. Idle: only a
            // pod event starts a tick, or facts or a records write coming due.
            if report.pending > 0 || report.departing > 0 || report.waiting > 0 {
                let due = last.map_or_else(Instant::now, |l| l + self.settings.tick);
                tokio::time::sleep_until(due).await;
            } else {
                let woken = self.wake.notified();
                let asked = async {
                    match &self.releases {
                        Some(releases) => releases.arrived().await,
                        None => std::future::pending().await,
                    }
                };
                let due = async {
                    match report.next_due {
                        Some(after) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = woken => {}
                    _ = asked => {}
                    _ = due => {}
                }
                if let Some(l) = last {
                    tokio::time::sleep_until(l + self.settings.tick).await;
                }
            }
            last = Some(Instant::now());
            report = self.tick(now()).await;
            debug!(?report, "tick");
        }
    }

    /// One pass: gather pending gates and departing targets, describe their target groups
    /// (and read the facts that are due), write what changed.
    pub async fn tick(&mut self, now: Time) -> TickReport {
        // Pods deleted since the last tick: followed before their bookkeeping is pruned.
        let gone = self.gone.take();
        let scan = self.scan(&now, &gone);
        self.departures.add(scan.departing);
        if let Some(releases) = self.releases.as_mut() {
            let prefix = &self.settings.gates.condition_prefix;
            releases.gather(&self.ctx, &gone, prefix, &now);
        }
        let waiting = self.releases.as_ref().map_or(0, ReleaseFollower::len);
        self.records.load(&self.ctx);
        self.ctx
            .metrics
            .gates_pending
            .set(scan.pending.len() as i64);
        self.forget_gone_pods();
        let facts_due = self.facts.due(&scan.gated, &self.records, now.0);

        let mut report = TickReport {
            pending: scan.pending.len(),
            departing: self.departures.len(),
            waiting,
            ..TickReport::default()
        };
        if !scan.pending.is_empty()
            || !self.departures.is_empty()
            || waiting > 0
            || !facts_due.is_empty()
        {
            self.round(scan.pending, facts_due, &now, &mut report).await;
        }
        if let Some(releases) = self.releases.as_mut() {
            releases.publish(&self.ctx, &now).await;
            report.waiting = releases.len();
        }
        report.records_written = self.records.flush(&self.ctx, now.0).await;
        report.next_due = [self.facts.next_due(), self.records.next_write()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| {
                let after = t.duration_since(now.0).as_secs_f64();
                Duration::from_secs_f64(after.clamp(0.0, 86_400.0))
            });
        report
    }

    async fn round(
        &mut self,
        pending: Vec<PendingGate>,
        facts_due: Vec<TargetGroup>,
        now: &Time,
        report: &mut TickReport,
    ) {
        let mut health = targets::group_by_target_group(&pending);
        for (group, target) in self.departures.targets() {
            health
                .entry(group.clone())
                .or_default()
                .insert(target.clone());
        }
        if let Some(releases) = &self.releases {
            releases.add_targets(&mut health);
        }
        let mut round = self.scheduler.start(&self.ctx.elb, health, facts_due).await;
        report.describe_calls = round.health_calls;
        report.facts_calls = round.facts_calls;

        // Gates decided without the ELB are written first; the others wait for their target
        // group's answer.
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
        report.patches += self.gates.write(&self.ctx, settled, now).await;

        while let Some(answer) = round.next().await {
            match answer {
                Answer::Health { group, arn, result } => {
                    self.scheduler.note(&group, &result);
                    if let Some(releases) = self.releases.as_mut() {
                        releases.observe(&group, &result, now);
                    }
                    self.departures
                        .follow(&self.ctx, &group, &arn, &result, now, &mut self.records)
                        .await;
                    let observed: Vec<(PendingGate, Observation)> = waiting
                        .remove(&group)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|gate| {
                            let observation = gates::observe(&gate, &result)?;
                            Some((gate, observation))
                        })
                        .collect();
                    report.patches += self.gates.write(&self.ctx, observed, now).await;
                }
                Answer::Facts { group, arn, result } => {
                    self.scheduler.note(&group, &result);
                    self.facts
                        .answered(&group, &arn, result, now.0, &mut self.records);
                }
            }
        }
    }

    /// Pending gates of live pods, departures of terminating and deleted ones, and (when
    /// facts are read) the target groups serving gated pods; namespace by namespace, each
    /// namespace's objects gathered once.
    fn scan(&self, now: &Time, gone: &[Pod]) -> Scan {
        let mut by_namespace: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in self.ctx.pods.state() {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            by_namespace.entry(ns).or_default().push(pod);
        }
        let mut gone_by_namespace: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in gone {
            let mut pod = pod.clone();
            // Deleted without a grace period: it was gone, sleep and all, the moment we
            // heard of it.
            if pod.metadata.deletion_timestamp.is_none() {
                pod.metadata.deletion_timestamp = Some(now.clone());
                pod.metadata.deletion_grace_period_seconds = Some(0);
                for c in pod.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
                    c.lifecycle = None;
                }
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            gone_by_namespace.entry(ns).or_default().push(Arc::new(pod));
        }
        let node = |name: &str| self.ctx.nodes.get(&reflector::ObjectRef::new(name));
        let prefix = &self.settings.gates.condition_prefix;
        let mut scan = Scan::default();
        let namespaces: BTreeSet<&String> = by_namespace
            .keys()
            .chain(gone_by_namespace.keys())
            .collect();
        for ns in namespaces {
            let objects = self.ctx.cluster.objects(ns);
            let pods = by_namespace.get(ns).map(Vec::as_slice).unwrap_or_default();
            scan.pending.extend(targets::pending_gates(
                pods,
                &objects,
                node,
                &self.settings.gates,
                now,
            ));
            if pods.iter().any(|p| p.metadata.deletion_timestamp.is_some()) {
                scan.departing
                    .extend(drain::departures(pods, &objects, node, prefix));
            }
            if let Some(gone) = gone_by_namespace.get(ns) {
                scan.departing
                    .extend(drain::departures(gone, &objects, node, prefix));
            }
            if self.facts.enabled() {
                scan.gated
                    .extend(targets::gated_groups(pods, &objects, prefix));
            }
        }
        scan
    }

    fn forget_gone_pods(&mut self) {
        let live: HashSet<String> = self
            .ctx
            .pods
            .state()
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        self.gates.forget(&live);
        self.departures.forget(&live);
    }
}

#[derive(Default)]
struct Scan {
    pending: Vec<PendingGate>,
    departing: Vec<Departure>,
    gated: BTreeSet<TargetGroup>,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
