use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::config::{Credentials, SharedCredentialsProvider};
use axum::http::{Method, Request, Response};
use gracegate::aws::{Elb, ElbOptions, sdk_config};
use gracegate::cluster::{Cluster, Objects};
use gracegate::metrics::Metrics;
use gracegate::targets::GateSettings;
use gracegate::watcher::{Watcher, WatcherSettings};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fake_elb::FakeElb;

pub const NS: &str = "game-2048";
pub const BINDING: &str = "k8s-game2048-service2-6f5e3c2a1b";
pub const GATE: &str = "target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b";
pub const ARN: &str = "arn:aws:elasticloadbalancing:ap-northeast-1:123456789012:targetgroup/k8s-game2048-service2-6f5e3c2a1b/0123456789abcdef";

/// The recorded 2048 objects; `extra_bindings` more bindings `tgb-N` (ARN `arn:tg/N`) on the
/// same Service.
pub fn cluster(extra_bindings: usize, drop_binding: bool) -> Cluster {
    Cluster::from_objects(objects(extra_bindings, drop_binding))
}

/// [`cluster`], with the writers of its stores, to delete and recreate objects mid-test.
pub fn cluster_with_writers(
    extra_bindings: usize,
) -> (Cluster, gracegate::cluster::Writers, Objects) {
    let objects = objects(extra_bindings, false);
    let copy = objects_copy(&objects);
    let (cluster, writers) = Cluster::with_writers(objects);
    (cluster, writers, copy)
}

fn objects_copy(o: &Objects) -> Objects {
    Objects {
        namespaces: o.namespaces.clone(),
        services: o.services.clone(),
        bindings: o.bindings.clone(),
        ingresses: o.ingresses.clone(),
        target_groups: o.target_groups.clone(),
    }
}

fn objects(extra_bindings: usize, drop_binding: bool) -> Objects {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster");
    let mut objects = Objects::load_dir(&dir).unwrap();
    let template = objects.bindings[0].clone();
    for n in 0..extra_bindings {
        let mut b = template.clone();
        b.metadata.name = Some(format!("tgb-{n}"));
        b.spec.target_group_arn = Some(format!("arn:tg/{n}"));
        objects.bindings.push(b);
    }
    if drop_binding {
        objects.bindings.remove(0);
    }
    objects
}

/// A pod of the 2048 Deployment with `gate`, created `age` ago, with IP `ip`.
pub fn pod(name: &str, ip: &str, gate: &str, age: Duration, conditions: Value) -> Pod {
    let created = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::try_from(age).unwrap();
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": NS, "uid": format!("uid-{name}"),
                      "creationTimestamp": created.to_string(),
                      "labels": { "app.kubernetes.io/name": "app-2048" } },
        "spec": {
            "readinessGates": [{ "conditionType": gate }],
            "containers": [{ "name": "app-2048", "ports": [{ "name": "http", "containerPort": 80 }] }],
        },
        "status": { "podIP": ip, "conditions": conditions },
    }))
    .unwrap()
}

pub struct Pods {
    pub writer: Writer<Pod>,
    pub store: reflector::Store<Pod>,
}

impl Pods {
    pub fn new(pods: Vec<Pod>) -> Pods {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for p in pods {
            writer.apply_watcher_event(&Event::InitApply(p));
        }
        writer.apply_watcher_event(&Event::InitDone);
        Pods { writer, store }
    }
}

pub fn empty_nodes() -> reflector::Store<Node> {
    let (store, mut writer) = reflector::store::<Node>();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitDone);
    store
}

pub fn elb_options() -> ElbOptions {
    ElbOptions {
        rate_per_second: 1000.0,
        burst: 1000,
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        // Generous: on a loaded machine a slow answer must not be retried, or the tests that
        // count calls would count the retries. No watcher test needs a timeout to fire.
        attempt_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(10),
    }
}

pub async fn elb(fake: &FakeElb, metrics: Arc<Metrics>, options: ElbOptions) -> Elb {
    let config = sdk_config(Some("us-east-1".into()), Some(fake.url()), &options)
        .await
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        )))
        .build();
    Elb::new(&config, &options, metrics)
}

pub fn settings(gate_timeout: Option<Duration>) -> WatcherSettings {
    WatcherSettings::gates(
        GateSettings {
            condition_prefix: "target-health.elbv2.k8s.aws".into(),
            gate_timeout,
        },
        Duration::from_secs(1),
    )
}

/// A request the mock API server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

/// A mock API server: answers every request as the real one would for the calls the watcher
/// makes (status patches, events), and records each for assertions.
pub struct MockApi {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests whose path contains the text are answered with the status (a Status body).
    failing: Arc<Mutex<Option<(String, u16)>>>,
    pub client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockApi {
    pub fn start() -> MockApi {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let failing: Arc<Mutex<Option<(String, u16)>>> = Arc::default();
        let fail = failing.clone();
        let mut hung = Vec::new();
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let at = Instant::now();
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or_default().to_string();
                let content_type = request
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let reply = if path.ends_with("/status") {
                    let name = path.rsplit('/').nth(1).unwrap();
                    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": NS } })
                } else {
                    body.clone()
                };
                let failure = fail
                    .lock()
                    .unwrap()
                    .clone()
                    .filter(|(part, _)| path.contains(part.as_str()));
                record.lock().unwrap().push(Seen {
                    at,
                    method,
                    path,
                    query,
                    content_type,
                    body,
                });
                if let Some((_, 1)) = failure {
                    // Never answered: the request hangs until the client gives up.
                    hung.push(send);
                    continue;
                }
                if let Some((_, code)) = failure {
                    let status = json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure",
                                         "message": "injected", "reason": "InternalError", "code": code });
                    send.send_response(
                        Response::builder()
                            .status(code)
                            .body(Body::from(serde_json::to_vec(&status).unwrap()))
                            .unwrap(),
                    );
                    continue;
                }
                send.send_response(
                    Response::builder()
                        .status(if reply.get("kind") == Some(&json!("Event")) {
                            201
                        } else {
                            200
                        })
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
        });
        MockApi {
            seen,
            failing,
            client: Client::new(service, "default"),
            task,
        }
    }

    /// Answer requests whose path contains `part` with `code` (0: answer normally again; 1:
    /// never answer).
    pub fn fail_path(&self, part: &str, code: u16) {
        *self.failing.lock().unwrap() = (code != 0).then(|| (part.to_string(), code));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn patches(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == Method::PATCH)
            .collect()
    }

    pub fn configmap_writes(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains("/configmaps/"))
            .collect()
    }

    pub fn events(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains("/events"))
            .collect()
    }
}

pub struct Setup {
    pub fake: FakeElb,
    pub api: MockApi,
    pub pods: Pods,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    pub watcher: Watcher,
}

pub async fn setup(pods: Vec<Pod>, cluster: Cluster, gate_timeout: Option<Duration>) -> Setup {
    setup_with(pods, cluster, gate_timeout, elb_options()).await
}

/// The 2048 namespace with one gated pod `p1` (10.0.0.7), created `age` seconds ago.
pub async fn one_pod(age: u64, conditions: Value) -> Setup {
    setup(
        vec![pod(
            "p1",
            "10.0.0.7",
            GATE,
            Duration::from_secs(age),
            conditions,
        )],
        cluster(0, false),
        None,
    )
    .await
}

pub async fn setup_with(
    pods: Vec<Pod>,
    cluster: Cluster,
    gate_timeout: Option<Duration>,
    options: ElbOptions,
) -> Setup {
    setup_full(pods, cluster, settings(gate_timeout), options).await
}

/// gracegate's namespace in these tests.
pub const OWN_NS: &str = "gracegate-system";

/// Facts read every `refresh`, records kept in the ConfigMap in [`OWN_NS`].
pub fn settings_with_records(refresh: Option<Duration>) -> WatcherSettings {
    let mut s = settings(None);
    s.facts_refresh = refresh;
    s.records_namespace = Some(OWN_NS.into());
    s
}

pub async fn setup_full(
    pods: Vec<Pod>,
    cluster: Cluster,
    settings: WatcherSettings,
    options: ElbOptions,
) -> Setup {
    let fake = FakeElb::start().await;
    fake.add_target_group(ARN, BINDING);
    let api = MockApi::start();
    let metrics = Arc::new(Metrics::default());
    let pods = Pods::new(pods);
    let wake = Arc::new(Notify::new());
    let watcher = Watcher::new(
        api.client.clone(),
        elb(&fake, metrics.clone(), options).await,
        metrics.clone(),
        cluster,
        pods.store.clone(),
        empty_nodes(),
        wake.clone(),
        settings,
    );
    Setup {
        fake,
        api,
        pods,
        metrics,
        wake,
        watcher,
    }
}

pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}
