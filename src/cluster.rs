//! Where the webhook's cluster objects come from: kube-runtime reflectors on a live cluster,
//! or a directory of YAML/JSON files for runs without one. Both fill the same reflector
//! stores, so a review reads the same way in either case and never calls the API server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{debug, info, warn};

use arc_swap::ArcSwap;

use crate::binding::TargetGroupBinding;
use crate::facts::{CONFIGMAP_NAME, Records};
use crate::objects::NamespaceObjects;
use crate::{Error, Result};

/// Read-only views of the reflector stores, and whether they have been filled.
#[derive(Clone)]
pub struct Cluster {
    namespaces: Store<Namespace>,
    services: Store<Service>,
    bindings: Store<TargetGroupBinding>,
    ingresses: Store<Ingress>,
    /// The leader's target-group records, as last read from the ConfigMap (or written by
    /// this replica when it leads).
    target_groups: Arc<ArcSwap<Records>>,
    /// The ConfigMap has been listed (found or not) at least once.
    records_loaded: Arc<AtomicBool>,
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
            target_groups: self.target_groups.load_full(),
        }
    }

    /// The target-group records every decision reads.
    pub fn target_groups(&self) -> Arc<Records> {
        self.target_groups.load_full()
    }

    /// Whether the ConfigMap has been read once (a new leader starts from it).
    pub fn target_groups_loaded(&self) -> bool {
        self.records_loaded.load(Ordering::Acquire)
    }

    /// Replace the records (the leader after each change; the ConfigMap reflector otherwise).
    pub fn set_target_groups(&self, records: Records) {
        self.target_groups.store(Arc::new(records));
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
        Cluster::with_writers(objects).0
    }

    /// [`Cluster::from_objects`], keeping the stores' writers: whoever holds them plays the
    /// watches (tests delete and recreate objects with them).
    pub fn with_writers(objects: Objects) -> (Cluster, Writers) {
        let (namespaces, mut w_ns) = reflector::store();
        let (services, mut w_svc) = reflector::store();
        let (bindings, mut w_tgb) = reflector::store();
        let (ingresses, mut w_ing) = reflector::store();
        fill(&mut w_ns, objects.namespaces);
        fill(&mut w_svc, objects.services);
        fill(&mut w_tgb, objects.bindings);
        fill(&mut w_ing, objects.ingresses);
        let cluster = Cluster {
            namespaces,
            services,
            bindings,
            ingresses,
            target_groups: Arc::new(ArcSwap::from_pointee(objects.target_groups)),
            records_loaded: Arc::new(AtomicBool::new(true)),
            synced: Arc::new(AtomicBool::new(true)),
        };
        let writers = Writers {
            namespaces: w_ns,
            services: w_svc,
            bindings: w_tgb,
            ingresses: w_ing,
        };
        (cluster, writers)
    }

    /// Stores kept up to date by reflectors. The returned future drives them (and marks the
    /// cluster synced); it runs until the process stops, retrying with backoff on errors.
    ///
    /// `namespace` is gracegate's own: the `gracegate-target-groups` ConfigMap is read from it.
    pub fn watch(
        client: Client,
        namespace: &str,
    ) -> (Cluster, impl Future<Output = ()> + Send + 'static) {
        let (namespaces, w_ns) = reflector::store();
        let (services, w_svc) = reflector::store();
        let (bindings, w_tgb) = reflector::store();
        let (ingresses, w_ing) = reflector::store();
        let cluster = Cluster {
            namespaces,
            services,
            bindings,
            ingresses,
            target_groups: Default::default(),
            records_loaded: Arc::new(AtomicBool::new(false)),
            synced: Arc::new(AtomicBool::new(false)),
        };
        let synced = cluster.clone();
        let records = cluster.target_groups.clone();
        let loaded = cluster.records_loaded.clone();
        let configmaps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
        let drive = async move {
            future::join(
                reflect_records(configmaps, records, loaded),
                future::join5(
                    reflect(Api::<Namespace>::all(client.clone()), w_ns),
                    reflect(Api::<Service>::all(client.clone()), w_svc),
                    reflect(Api::<TargetGroupBinding>::all(client.clone()), w_tgb),
                    reflect(Api::<Ingress>::all(client), w_ing),
                    async move {
                        synced.wait_until_synced().await;
                        info!("caches synced");
                    },
                ),
            )
            .await;
        };
        (cluster, drive)
    }
}

/// The writers of a [`Cluster`]'s stores (see [`Cluster::with_writers`]).
pub struct Writers {
    pub namespaces: reflector::store::Writer<Namespace>,
    pub services: reflector::store::Writer<Service>,
    pub bindings: reflector::store::Writer<TargetGroupBinding>,
    pub ingresses: reflector::store::Writer<Ingress>,
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

/// Keep `records` equal to the `gracegate-target-groups` ConfigMap: one object, watched by
/// name. Not part of "synced": a replica without the ConfigMap (or without the RBAC to read
/// it) still serves, sizing `S` from annotations and defaults.
async fn reflect_records(
    api: Api<ConfigMap>,
    records: Arc<ArcSwap<Records>>,
    loaded: Arc<AtomicBool>,
) {
    let config = watcher::Config::default()
        .any_semantic()
        .fields(&format!("metadata.name={CONFIGMAP_NAME}"));
    // A relist that no longer finds the ConfigMap means it was deleted meanwhile.
    let mut listed_one = false;
    watcher(api, config)
        .default_backoff()
        .for_each(|event| {
            match event {
                Ok(watcher::Event::Init) => listed_one = false,
                Ok(watcher::Event::InitApply(cm)) => {
                    listed_one = true;
                    records.store(Arc::new(records_of(&cm)));
                }
                Ok(watcher::Event::InitDone) => {
                    if !listed_one {
                        records.store(Arc::default());
                    }
                    loaded.store(true, Ordering::Release);
                }
                Ok(watcher::Event::Apply(cm)) => records.store(Arc::new(records_of(&cm))),
                Ok(watcher::Event::Delete(_)) => records.store(Arc::default()),
                Err(error) => warn!(%error, "{CONFIGMAP_NAME} watch failed; retrying"),
            }
            future::ready(())
        })
        .await;
}

/// The records a ConfigMap holds; entries that do not parse are logged and skipped.
pub fn records_of(cm: &ConfigMap) -> Records {
    let empty = Default::default();
    let (records, errors) = Records::from_data(cm.data.as_ref().unwrap_or(&empty));
    for error in errors {
        warn!(%error, "ignoring a target-group record");
    }
    records
}

/// gracegate's own namespace: `--namespace`, else the downward API's `POD_NAMESPACE`, else
/// the client's (the service account's in a cluster, the kubeconfig context's outside).
pub fn own_namespace(flag: Option<&str>, client: &Client) -> String {
    flag.map(String::from)
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| client.default_namespace().to_string())
}

/// The image this replica runs, read from its own Pod (`POD_NAME` in `namespace`): the drain
/// wait's init container runs it, since it carries the waiter. A list by name, so the
/// ClusterRole's pods list (no `get`) suffices. `None`, logged, when it cannot be read.
pub async fn own_image(client: &Client, namespace: &str, pod_name: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!("metadata.name={pod_name}"));
    match pods.list(&params).await {
        Ok(list) => {
            let image = list.items.first().and_then(gracegate_image);
            if image.is_none() {
                warn!(
                    pod = pod_name,
                    namespace, "own pod has no container named gracegate (and not just one)"
                );
            }
            image
        }
        Err(e) => {
            warn!(pod = pod_name, namespace, error = %e, "cannot read own pod for its image");
            None
        }
    }
}

/// The image of a gracegate pod's container: the one named `gracegate` (the manifests' name),
/// else the only container.
pub fn gracegate_image(pod: &Pod) -> Option<String> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == "gracegate")
        .or(match containers.as_slice() {
            [only] => Some(only),
            _ => None,
        })?
        .image
        .clone()
}

/// A client as kubectl would make one, for the commands a person runs (`plan`, `audit`):
/// `kubeconfig` (else `KUBECONFIG`, `~/.kube/config`, or the in-cluster service account) and
/// its `context` (else the current one).
pub async fn kubectl_client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    use kube::config::{Config, KubeConfigOptions, Kubeconfig};
    let options = KubeConfigOptions {
        context: context.map(String::from),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer()
            .await
            .context("no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster")?,
    };
    Ok(Client::try_from(config)?)
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
    /// From a ConfigMap named `gracegate-target-groups`, if one is among the files.
    pub target_groups: Records,
}

impl Objects {
    /// Read every `*.yaml`, `*.yml` and `*.json` file in `dir` (not recursive). Each may hold
    /// several YAML documents or a `kind: List`. Kinds other than Namespace, Service, Ingress,
    /// TargetGroupBinding and the `gracegate-target-groups` ConfigMap are skipped.
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
            "ConfigMap" => {
                let cm: ConfigMap = parse(document)?;
                if cm.metadata.name.as_deref() == Some(CONFIGMAP_NAME) {
                    let data = cm.data.unwrap_or_default();
                    let (records, errors) = Records::from_data(&data);
                    if let Some(error) = errors.into_iter().next() {
                        return Err(error);
                    }
                    self.target_groups = records;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, Request, Response};
    use kube::client::Body;
    use rstest::rstest;
    use serde_json::json;

    fn pod(containers: &[(&str, &str)]) -> Pod {
        let containers: Vec<Value> = containers
            .iter()
            .map(|(name, image)| json!({ "name": name, "image": image }))
            .collect();
        serde_json::from_value(json!({
            "metadata": { "name": "gracegate-7d9f8-x2x9z", "namespace": "gracegate-system" },
            "spec": { "containers": containers },
        }))
        .unwrap()
    }

    #[rstest]
    #[case::named(&[("istio-proxy", "istio:1"), ("gracegate", "mirror/gracegate:1")], Some("mirror/gracegate:1"))]
    #[case::only_one(&[("webhook", "mirror/gracegate:2")], Some("mirror/gracegate:2"))]
    #[case::ambiguous(&[("a", "x:1"), ("b", "y:1")], None)]
    fn the_gracegate_container(#[case] containers: &[(&str, &str)], #[case] want: Option<&str>) {
        assert_eq!(gracegate_image(&pod(containers)).as_deref(), want);
    }

    /// One list of pods in gracegate's namespace, by name (no `get`: the ClusterRole has none).
    #[tokio::test]
    async fn own_image_lists_its_pod_by_name() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), Method::GET);
            assert_eq!(
                request.uri().path(),
                "/api/v1/namespaces/gracegate-system/pods"
            );
            let query = request.uri().query().unwrap_or_default().to_string();
            assert!(
                query.contains("fieldSelector=metadata.name%3Dgracegate-7d9f8-x2x9z"),
                "{query}"
            );
            let list = json!({ "apiVersion": "v1", "kind": "PodList", "metadata": {},
                               "items": [pod(&[("gracegate", "mirror/gracegate:3")])] });
            send.send_response(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
        });
        let client = Client::new(service, "default");
        let image = own_image(&client, "gracegate-system", "gracegate-7d9f8-x2x9z").await;
        server.await.unwrap();
        assert_eq!(image.as_deref(), Some("mirror/gracegate:3"));
    }

    /// An API error is no image (the default is used), never a failure to start.
    #[tokio::test]
    async fn own_image_on_an_error_is_none() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            let status = json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure",
                                 "reason": "Forbidden", "code": 403, "message": "forbidden" });
            send.send_response(
                Response::builder()
                    .status(403)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        });
        let client = Client::new(service, "default");
        assert_eq!(own_image(&client, "gracegate-system", "p").await, None);
        server.await.unwrap();
    }
}
