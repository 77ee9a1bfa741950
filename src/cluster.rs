//! Where the webhook's cluster objects come from: kube-runtime reflectors on a live cluster,
//! or a directory of YAML/JSON files for runs without one. Both fill the same reflector
//! stores, so a review reads the same way in either case and never calls the API server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::binding::TargetGroupBinding;
use crate::inject::NamespaceObjects;
use crate::{Error, Result};

/// Read-only views of the reflector stores, and whether they have been filled.
#[derive(Clone)]
pub struct Cluster {
    namespaces: Store<Namespace>,
    services: Store<Service>,
    bindings: Store<TargetGroupBinding>,
    ingresses: Store<Ingress>,
    synced: Arc<AtomicBool>,
}

impl Cluster {
    /// The objects a decision about a pod in `namespace` reads.
    pub fn objects(&self, namespace: &str) -> NamespaceObjects {
        let in_ns = |meta: &kube::api::ObjectMeta| meta.namespace.as_deref() == Some(namespace);
        NamespaceObjects {
            namespace: self.namespaces.get(&ObjectRef::new(namespace)),
            services: self.services.state_filter(|s| in_ns(&s.metadata)),
            bindings: self.bindings.state_filter(|b| in_ns(&b.metadata)),
            ingresses: self.ingresses.state_filter(|i| in_ns(&i.metadata)),
        }
    }

    /// True once every store holds a full initial list.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Resolves once every store holds a full initial list.
    pub async fn wait_until_synced(&self) {
        let all = future::join4(
            self.namespaces.wait_until_ready(),
            self.services.wait_until_ready(),
            self.bindings.wait_until_ready(),
            self.ingresses.wait_until_ready(),
        )
        .await;
        if let (Ok(()), Ok(()), Ok(()), Ok(())) = all {
            self.synced.store(true, Ordering::Release);
        }
    }

    /// Stores filled once from `objects` (for `--objects DIR`); synced at once.
    pub fn from_objects(objects: Objects) -> Cluster {
        let (namespaces, mut w_ns) = reflector::store();
        let (services, mut w_svc) = reflector::store();
        let (bindings, mut w_tgb) = reflector::store();
        let (ingresses, mut w_ing) = reflector::store();
        fill(&mut w_ns, objects.namespaces);
        fill(&mut w_svc, objects.services);
        fill(&mut w_tgb, objects.bindings);
        fill(&mut w_ing, objects.ingresses);
        Cluster {
            namespaces,
            services,
            bindings,
            ingresses,
            synced: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Stores kept up to date by reflectors. The returned future drives them (and marks the
    /// cluster synced); it runs until the process stops, retrying with backoff on errors.
    pub fn watch(client: Client) -> (Cluster, impl Future<Output = ()> + Send + 'static) {
        let (namespaces, w_ns) = reflector::store();
        let (services, w_svc) = reflector::store();
        let (bindings, w_tgb) = reflector::store();
        let (ingresses, w_ing) = reflector::store();
        let cluster = Cluster {
            namespaces,
            services,
            bindings,
            ingresses,
            synced: Arc::new(AtomicBool::new(false)),
        };
        let synced = cluster.clone();
        let drive = async move {
            future::join5(
                reflect(Api::<Namespace>::all(client.clone()), w_ns),
                reflect(Api::<Service>::all(client.clone()), w_svc),
                reflect(Api::<TargetGroupBinding>::all(client.clone()), w_tgb),
                reflect(Api::<Ingress>::all(client), w_ing),
                async move {
                    synced.wait_until_synced().await;
                    info!("caches synced");
                },
            )
            .await;
        };
        (cluster, drive)
    }
}

fn fill<K>(writer: &mut reflector::store::Writer<K>, objects: Vec<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}

async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let kind = K::kind(&Default::default()).to_string();
    // `any_semantic`: the initial list may come from the API server's watch cache.
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .for_each(|event| {
            if let Err(error) = event {
                warn!(%kind, %error, "watch failed; retrying");
            }
            future::ready(())
        })
        .await;
}

/// Drop what no decision reads before it is cached: managed fields and the last-applied copy
/// of the whole object are usually most of its size.
fn strip<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    object
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Cluster objects read from files.
#[derive(Debug, Default)]
pub struct Objects {
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub bindings: Vec<TargetGroupBinding>,
    pub ingresses: Vec<Ingress>,
}

impl Objects {
    /// Read every `*.yaml`, `*.yml` and `*.json` file in `dir` (not recursive). Each may hold
    /// several YAML documents or a `kind: List`. Kinds other than Namespace, Service, Ingress
    /// and TargetGroupBinding are skipped.
    pub fn load_dir(dir: &Path) -> Result<Objects> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        paths.sort();
        let mut objects = Objects::default();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            objects.add_text(&path, &text)?;
        }
        Ok(objects)
    }

    /// Add the objects in one file's text.
    pub fn add_text(&mut self, path: &Path, text: &str) -> Result<()> {
        let invalid = |message: String| Error::Objects {
            path: path.display().to_string(),
            message,
        };
        let documents: Vec<Value> = if path.extension().and_then(|e| e.to_str()) == Some("json") {
            vec![serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?]
        } else {
            serde_saphyr::from_multiple(text).map_err(|e| invalid(e.to_string()))?
        };
        for document in documents {
            self.add(document).map_err(invalid)?;
        }
        Ok(())
    }

    fn add(&mut self, document: Value) -> std::result::Result<(), String> {
        fn parse<K: DeserializeOwned>(v: Value) -> std::result::Result<K, String> {
            serde_json::from_value(v).map_err(|e| e.to_string())
        }
        let kind = document
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "Namespace" => self.namespaces.push(parse(document)?),
            "Service" => self.services.push(parse(document)?),
            "Ingress" => self.ingresses.push(parse(document)?),
            "TargetGroupBinding" => self.bindings.push(parse(document)?),
            "List" => {
                if let Some(Value::Array(items)) = document.get("items") {
                    for item in items.clone() {
                        self.add(item)?;
                    }
                }
            }
            "" if document.is_null() => {} // an empty YAML document
            other => debug!(
                kind = other,
                "skipping object of a kind gracegate does not read"
            ),
        }
        Ok(())
    }
}
