//! A read-only fake API server: answers GETs (get and paged list) from a set of objects, as
//! kube-apiserver does, and records every request. Served through kube-rs's tower-test mock
//! (in-process) or over plain HTTP (for the binary).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct FakeApi {
    objects: Vec<Value>,
    page_size: Option<usize>,
    forbidden: BTreeSet<String>,
    missing: BTreeSet<String>,
}

fn plural(kind: &str) -> String {
    match kind {
        "Ingress" => "ingresses".into(),
        "PodDisruptionBudget" => "poddisruptionbudgets".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code }),
    )
}

impl FakeApi {
    pub fn new(objects: Vec<Value>) -> FakeApi {
        FakeApi {
            objects,
            ..Default::default()
        }
    }

    pub fn with_page_size(mut self, n: usize) -> FakeApi {
        self.page_size = Some(n);
        self
    }

    /// Answer 403 for this resource (plural).
    pub fn forbid(mut self, plural: &str) -> FakeApi {
        self.forbidden.insert(plural.into());
        self
    }

    /// Answer 404 for this resource (plural), as for a CRD that is not installed.
    pub fn missing(mut self, plural: &str) -> FakeApi {
        self.missing.insert(plural.into());
        self
    }

    /// The answer to one request: (status, body).
    pub fn answer(&self, method: &Method, path: &str, query: &str) -> (u16, Value) {
        if method != Method::GET {
            return status(405, "MethodNotAllowed", "read-only fake");
        }
        let rest = path
            .strip_prefix("/api/v1/")
            .or_else(|| {
                let r = path.strip_prefix("/apis/")?;
                let mut parts = r.splitn(3, '/');
                parts.next()?;
                parts.next()?;
                parts.next()
            })
            .unwrap_or_default();
        let segments: Vec<&str> = rest.split('/').collect();
        let (namespace, resource, name) = match segments.as_slice() {
            ["namespaces", ns, resource, tail @ ..] => {
                (Some(*ns), *resource, tail.first().copied())
            }
            [resource, tail @ ..] => (None, *resource, tail.first().copied()),
            [] => (None, "", None),
        };
        if self.forbidden.contains(resource) {
            return status(403, "Forbidden", &format!("{resource} is forbidden"));
        }
        let known = self
            .objects
            .iter()
            .any(|o| plural(o["kind"].as_str().unwrap_or_default()) == resource);
        if self.missing.contains(resource) || (resource == "rollouts" && !known) {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        let matching: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| plural(o["kind"].as_str().unwrap_or_default()) == resource)
            .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
            .collect();
        if let Some(name) = name {
            return match matching.iter().find(|o| o["metadata"]["name"] == name) {
                Some(o) => (200, (*o).clone()),
                None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
            };
        }
        // `kubectl get ns` lists namespaces as `/api/v1/namespaces`.
        let matching: Vec<&Value> = if resource == "namespaces" && namespace.is_none() {
            (self.objects.iter())
                .filter(|o| o["kind"] == "Namespace")
                .collect()
        } else {
            matching
        };
        let start: usize = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("continue="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let end = self
            .page_size
            .map_or(matching.len(), |n| (start + n).min(matching.len()));
        let items: Vec<Value> = matching[start..end].iter().map(|o| (*o).clone()).collect();
        let mut metadata = json!({ "resourceVersion": "1" });
        if end < matching.len() {
            metadata["continue"] = json!(end.to_string());
        }
        (
            200,
            json!({ "apiVersion": "v1", "kind": "List", "metadata": metadata, "items": items }),
        )
    }
}

/// The fake behind kube-rs's tower-test mock.
pub struct MockApi {
    pub client: Client,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockApi {
    pub fn start(fake: FakeApi) -> MockApi {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let query = request.uri().query().unwrap_or_default().to_string();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                assert!(body.is_empty(), "a request with a body: {method} {path}");
                record.lock().unwrap().push(if query.is_empty() {
                    format!("{method} {path}")
                } else {
                    format!("{method} {path}?{query}")
                });
                let (code, reply) = fake.answer(&method, &path, &query);
                send.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                        .unwrap(),
                );
            }
        });
        MockApi {
            client: Client::new(service, "default"),
            seen,
            task,
        }
    }

    /// `METHOD path?query` of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The fake over plain HTTP on 127.0.0.1, for the binary. Returns its URL.
pub async fn serve_http(fake: FakeApi) -> String {
    let fake = Arc::new(fake);
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let fake = fake.clone();
        async move {
            let (code, body) = fake.answer(
                request.method(),
                request.uri().path(),
                request.uri().query().unwrap_or_default(),
            );
            axum::http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}
