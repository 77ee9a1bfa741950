//! Leader handover against an API server that keeps a real Lease (server-side apply
//! ownership of `holderIdentity`, as kube-lease-manager relies on): two and three replicas,
//! the real election and supervisor, and watcher tasks that fail the test if two of them
//! ever write at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Request, Response};
use gracegate::election::Election;
use gracegate::serve::supervise;
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::time::Instant;

/// The Lease as the API server keeps it, and which field manager owns `holderIdentity`.
#[derive(Default)]
struct LeaseStore {
    lease: Option<Value>,
    holder_owner: Option<String>,
    resource_version: u64,
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code, "message": reason })
}

/// Apply one request to the store; the answer's status and body.
fn answer(
    store: &mut LeaseStore,
    method: &str,
    query: &str,
    content_type: &str,
    body: Value,
) -> (u16, Value) {
    let manager = query
        .split('&')
        .find_map(|q| q.strip_prefix("fieldManager="))
        .unwrap_or_default()
        .to_string();
    match method {
        "GET" => match &store.lease {
            Some(lease) => (200, lease.clone()),
            None => (404, status(404, "NotFound")),
        },
        "POST" => {
            if store.lease.is_some() {
                return (409, status(409, "AlreadyExists"));
            }
            let mut lease = body;
            lease["metadata"]["namespace"] = json!("gracegate-system");
            store.resource_version += 1;
            lease["metadata"]["resourceVersion"] = json!(store.resource_version.to_string());
            store.lease = Some(lease.clone());
            (201, lease)
        }
        "PATCH" => {
            let Some(lease) = store.lease.as_mut() else {
                return (404, status(404, "NotFound"));
            };
            let spec = body["spec"].as_object().cloned().unwrap_or_default();
            let sets_holder = spec.get("holderIdentity");
            if content_type.starts_with("application/apply-patch") {
                // Server-side apply without force: another manager's field is a conflict.
                let held = lease["spec"]["holderIdentity"].is_string();
                if sets_holder.is_some() && held && store.holder_owner.as_deref() != Some(&manager)
                {
                    return (409, status(409, "Conflict"));
                }
            }
            match sets_holder {
                Some(Value::Null) => store.holder_owner = None,
                Some(_) => store.holder_owner = Some(manager),
                None => {}
            }
            if !lease["spec"].is_object() {
                lease["spec"] = json!({});
            }
            for (k, v) in spec {
                if v.is_null() {
                    lease["spec"].as_object_mut().unwrap().remove(&k);
                } else {
                    lease["spec"][&k] = v;
                }
            }
            store.resource_version += 1;
            lease["metadata"]["resourceVersion"] = json!(store.resource_version.to_string());
            (200, lease.clone())
        }
        other => (405, status(405, other)),
    }
}

/// One client per replica, all on the same store.
fn lease_api(store: Arc<Mutex<LeaseStore>>) -> (Client, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            assert!(
                request
                    .uri()
                    .path()
                    .starts_with("/apis/coordination.k8s.io/v1/namespaces/gracegate-system/leases"),
                "{}",
                request.uri()
            );
            let content_type = request
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, reply) = answer(
                &mut store.lock().unwrap(),
                &method,
                &query,
                &content_type,
                body,
            );
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "gracegate-system"), task)
}

/// Who writes now; a second writer fails the test.
#[derive(Clone, Default)]
struct Writers(Arc<Mutex<Option<String>>>);

struct Writing(Writers);

impl Drop for Writing {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap() = None;
    }
}

impl Writers {
    fn start(&self, who: &str) -> Writing {
        let mut current = self.0.lock().unwrap();
        assert!(current.is_none(), "two writers: {current:?} and {who}");
        *current = Some(who.to_string());
        Writing(self.clone())
    }

    fn current(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A replica: election + supervisor + a watcher task that holds the writer slot while it runs.
struct Replica {
    stop: tokio::sync::oneshot::Sender<()>,
    supervisor: tokio::task::JoinHandle<()>,
    api: tokio::task::JoinHandle<()>,
}

async fn replica(name: &str, store: Arc<Mutex<LeaseStore>>, writers: Writers) -> Replica {
    let (client, api) = lease_api(store);
    let election = Election {
        client,
        lease: "gracegate".into(),
        namespace: "gracegate-system".into(),
        identity: name.into(),
        duration: 2,
        grace: 1,
    };
    let running = election.start().await.unwrap();
    let leader = running.leader.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let who = name.to_string();
    let supervisor = tokio::spawn(async move {
        let spawn = move || {
            let slot = writers.start(&who);
            tokio::spawn(async move {
                let _slot = slot;
                std::future::pending::<()>().await
            })
        };
        let _ = supervise(leader, spawn, || {}, Duration::from_secs(1), async {
            let _ = stopped.await;
        })
        .await;
        running.release(Duration::from_secs(3)).await;
    });
    Replica {
        stop,
        supervisor,
        api,
    }
}

impl Replica {
    /// SIGTERM: stop the watcher, then release.
    async fn terminate(self) {
        let _ = self.stop.send(());
        self.supervisor.await.unwrap();
        self.api.abort();
    }

    /// SIGKILL: everything stops at once, nothing is released.
    fn kill(self, writers: &Writers) {
        self.supervisor.abort();
        self.api.abort();
        // The process is gone, and with it its writes.
        *writers.0.lock().unwrap() = None;
    }
}

async fn wait_for_leader(
    writers: &Writers,
    not: Option<&str>,
    limit: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        if let Some(w) = writers.current()
            && Some(w.as_str()) != not
        {
            return (w, start.elapsed());
        }
        assert!(start.elapsed() < limit, "no new leader within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn handover_on_sigterm_within_a_second_and_on_a_crash_at_expiry_never_two_writers() {
    let store = Arc::new(Mutex::new(LeaseStore::default()));
    let writers = Writers::default();
    let mut replicas = std::collections::HashMap::new();
    replicas.insert("a", replica("a", store.clone(), writers.clone()).await);
    let (first, _) = wait_for_leader(&writers, None, Duration::from_secs(5)).await;
    assert_eq!(first, "a");
    for name in ["b", "c"] {
        replicas.insert(name, replica(name, store.clone(), writers.clone()).await);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        writers.current().as_deref(),
        Some("a"),
        "a keeps the Lease it renews"
    );

    // SIGTERM: a released Lease is taken at once, not at its expiry.
    let stopped = Instant::now();
    replicas.remove("a").unwrap().terminate().await;
    let (second, _) = wait_for_leader(&writers, Some("a"), Duration::from_secs(5)).await;
    let sigterm = stopped.elapsed();
    eprintln!("handover after SIGTERM: {sigterm:?}");
    assert!(sigterm < Duration::from_millis(1500), "{sigterm:?}");

    // SIGKILL of the new leader: taken over at the Lease's expiry (2 s) plus at most ~1 s.
    let killed = Instant::now();
    replicas.remove(second.as_str()).unwrap().kill(&writers);
    let (third, _) = wait_for_leader(&writers, Some(&second), Duration::from_secs(6)).await;
    let sigkill = killed.elapsed();
    eprintln!("handover after SIGKILL: {sigkill:?}");
    assert!(replicas.contains_key(third.as_str()));
    assert!(sigkill < Duration::from_millis(4500), "{sigkill:?}");
    for (_, r) in replicas {
        r.terminate().await;
    }
}
