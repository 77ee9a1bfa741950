//! Drain wait (opt-in): instead of sleeping a fixed `S`, a container's preStop runs
//! `gracegate-wait`, which ends when gracegate says the pod's targets have left the load
//! balancer, or at its deadline `S`. What the webhook adds for it: an init container that
//! copies the waiter into an `emptyDir`, that volume read-only in each waiting container, the
//! pod's name, namespace and UID as env, and the `exec` preStop.
//!
//! What to add is decided here; `patch.rs` writes it as JSONPatch operations.
//!
//! An `exec` hook runs with no timeout of its own, bounded only by the grace period the
//! termination started with (kubernetes/kubernetes `pkg/kubelet/lifecycle/handlers.go`, and
//! `executePreStopHook` in `pkg/kubelet/kuberuntime/kuberuntime_container.go`), so the waiter
//! keeps its own deadline `S` and `T` stays `S` + budget.
//!
//! Pure, like the rest of [`crate::inject`]: it only adds, and planning again on the patched
//! pod adds nothing.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LifecycleHandler;

use super::pod::{ContainerView, Item, Listed, Named, PodSpecView};
use crate::timing::{self, Evidence, PrestopSource, Timing, TimingSettings};

/// `gracegate.io/drain: "wait" | "sleep"` on a pod or its namespace; the pod's value wins.
pub const ANNOTATION_DRAIN: &str = "gracegate.io/drain";
/// The init container and the volume it fills.
pub const WAITER_NAME: &str = "gracegate-waiter";
/// Where the volume is mounted, in the init container (read-write) and the waiting containers.
pub const MOUNT_PATH: &str = "/.gracegate";
/// The waiter as the waiting containers run it.
pub const WAITER_PATH: &str = "/.gracegate/gracegate-wait";
/// The waiter in gracegate's image (the Dockerfile puts it there).
pub const IMAGE_WAITER_PATH: &str = "/usr/local/bin/gracegate-wait";
/// The pod's own identity, from the downward API: what the waiter asks about.
pub const ENV_VARS: [(&str, &str); 3] = [
    ("GRACEGATE_POD_NAME", "metadata.name"),
    ("GRACEGATE_POD_NAMESPACE", "metadata.namespace"),
    ("GRACEGATE_POD_UID", "metadata.uid"),
];
/// The URL the shipped manifests serve the answer at: the webhook's Service, port 443.
pub const DEFAULT_URL: &str = "https://gracegate.gracegate-system.svc";
/// The waiter's deadline, `S`, unless an annotation says otherwise.
pub const DEFAULT_MAX_SECONDS: u32 = 300;
/// gracegate's own image at the running version: it carries the waiter.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/gracegate/gracegate:", env!("CARGO_PKG_VERSION"));
/// Largest `--drain-wait-max-seconds`: an hour of lingering is already a misconfiguration.
pub const MAX_MAX_SECONDS: u32 = 3600;

/// How a terminating pod waits for the load balancer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DrainMode {
    /// A preStop sleep of `S`, sized by the timing rule.
    #[default]
    Sleep,
    /// The waiter: ends when the pod's targets have left, at the latest after `S`.
    Wait,
}

impl DrainMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainMode::Sleep => "sleep",
            DrainMode::Wait => "wait",
        }
    }
}

/// The drain wait's settings; `ca_pem` is read by the shell (`--drain-wait-ca`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainSettings {
    /// The cluster's default (`--drain-mode`); annotations override it.
    pub mode: DrainMode,
    /// What waiters call (`--drain-wait-url`).
    pub url: String,
    /// The CA bundle waiters verify gracegate's certificate with; `None` when it could not be
    /// read: opted-in pods then sleep, with a warning.
    pub ca_pem: Option<String>,
    /// `S` in wait mode and the waiter's deadline (`--drain-wait-max-seconds`).
    pub max_seconds: u32,
    /// The init container's image (`--waiter-image`).
    pub image: String,
}

impl Default for DrainSettings {
    fn default() -> Self {
        DrainSettings {
            mode: DrainMode::Sleep,
            url: DEFAULT_URL.to_string(),
            ca_pem: None,
            max_seconds: DEFAULT_MAX_SECONDS,
            image: DEFAULT_IMAGE.to_string(),
        }
    }
}

impl DrainSettings {
    /// Contradictions in the flags, named; the CA is checked where it is read.
    pub fn check(&self) -> Result<(), String> {
        let host = self
            .url
            .strip_prefix("https://")
            .map(|rest| rest.split(['/', ':']).next().unwrap_or_default());
        if host.is_none_or(str::is_empty) {
            return Err(format!(
                "--drain-wait-url {:?} must be an https:// URL with a host (waiters only speak TLS)",
                self.url
            ));
        }
        if self.max_seconds == 0 || self.max_seconds > MAX_MAX_SECONDS {
            return Err(format!(
                "--drain-wait-max-seconds {} must be between 1 and {MAX_MAX_SECONDS}",
                self.max_seconds
            ));
        }
        if self.image.trim().is_empty() {
            return Err("--waiter-image must name an image".to_string());
        }
        Ok(())
    }
}

/// Whether a PEM bundle holds at least one certificate: what `--drain-wait-ca` must give.
pub fn has_certificate(pem: &str) -> bool {
    pem.contains("-----BEGIN CERTIFICATE-----")
}

/// The pod's mode: the pod's annotation, else the namespace's, else the flag. A value other
/// than `wait` or `sleep` is a warning and falls through to the next.
pub fn mode(
    pod: Option<&BTreeMap<String, String>>,
    namespace: Option<&BTreeMap<String, String>>,
    default: DrainMode,
    warnings: &mut Vec<String>,
) -> DrainMode {
    for (scope, annotations) in [("pod", pod), ("namespace", namespace)] {
        match annotations
            .and_then(|a| a.get(ANNOTATION_DRAIN))
            .map(|v| v.trim())
        {
            None => {}
            Some("wait") => return DrainMode::Wait,
            Some("sleep") => return DrainMode::Sleep,
            Some(other) => warnings.push(format!(
                "gracegate: {scope} annotation {ANNOTATION_DRAIN}={other:?} is neither \"wait\" \
                 nor \"sleep\"; ignored"
            )),
        }
    }
    default
}

/// `S` and `T` in wait mode: a `gracegate.io/prestop-seconds` annotation still sets `S` (the
/// deadline; `0`: no preStop), else `--drain-wait-max-seconds`. The load balancer's side no
/// longer sizes `S` (the wait ends when it is done), but a deadline shorter than what it says it
/// needs is a warning.
pub fn timing(
    settings: &TimingSettings,
    drain: &DrainSettings,
    evidence: &Evidence,
    pod: Option<&BTreeMap<String, String>>,
    namespace: Option<&BTreeMap<String, String>>,
) -> Timing {
    let mut t = timing::timing(settings, &Evidence::default(), pod, namespace);
    if t.prestop_source == PrestopSource::Default {
        t.prestop_seconds = drain.max_seconds;
        t.prestop_source = PrestopSource::DrainWait;
    }
    if t.prestop_seconds > 0
        && let Some((wanted, source)) = timing::wanted_prestop(settings, evidence)
        && wanted > t.prestop_seconds
    {
        t.warnings.push(format!(
            "gracegate: {} needs up to {wanted}s, but the drain wait ends at {}s ({}): pods \
             may stop while their target is still routed",
            timing::describe(&source),
            t.prestop_seconds,
            if t.prestop_source == PrestopSource::DrainWait {
                "--drain-wait-max-seconds"
            } else {
                timing::ANNOTATION_PRESTOP_SECONDS
            }
        ));
    }
    t
}

/// Whether a preStop is the waiter's: an `exec` of [`WAITER_PATH`].
pub fn is_waiter(handler: &LifecycleHandler) -> bool {
    handler
        .exec
        .as_ref()
        .and_then(|e| e.command.as_ref())
        .and_then(|c| c.first())
        .is_some_and(|c| c == WAITER_PATH)
}

/// How an item goes into a list of the pod: the list is missing, or append (`-`) / insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListAdd {
    /// The list is missing: add it with the item.
    List,
    /// Add the item to the list.
    Item,
}

impl ListAdd {
    /// How an item goes into `list`, which the pod may lack.
    fn of<T>(list: &Option<T>) -> ListAdd {
        match list {
            Some(_) => ListAdd::Item,
            None => ListAdd::List,
        }
    }
}

/// What one waiting container lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerAdd {
    /// Index into `spec.containers`.
    pub index: usize,
    pub mount: Option<ListAdd>,
    /// The env vars of [`ENV_VARS`] it does not set, and how they go in.
    pub env: Vec<&'static str>,
    pub env_list: ListAdd,
}

/// What the pod lacks for its waiting containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterAdd {
    pub init: Option<ListAdd>,
    pub volume: Option<ListAdd>,
    pub containers: Vec<ContainerAdd>,
    /// The preStop command: waiter, URL, deadline, CA.
    pub command: Vec<String>,
    pub image: String,
}

/// What `spec` lacks for the waiter in the containers at `waiting` (indexes into
/// `spec.containers`): those that get the waiter's preStop now and those that already run it.
/// `Err` is a warning: something of the pod's own is in the way, and the pod sleeps instead.
pub fn plan(
    spec: &PodSpecView,
    waiting: &[usize],
    seconds: u32,
    drain: &DrainSettings,
) -> Result<Option<WaiterAdd>, String> {
    if waiting.is_empty() {
        return Ok(None);
    }
    let Some(ca) = drain.ca_pem.as_deref() else {
        return Err(
            "gracegate: no CA bundle for waiters (--drain-wait-ca could not be read), so no drain \
             wait: the preStop sleeps instead"
                .to_string(),
        );
    };
    if spec.os.as_ref().is_some_and(|os| os.name == "windows") {
        return Err(
            "gracegate: a Windows pod cannot run the drain-wait waiter; the preStop sleeps instead"
                .to_string(),
        );
    }
    let volumes = items(&spec.volumes, || "the pod's volumes".to_string())?;
    let volume = volumes.iter().find(|v| v.name == WAITER_NAME);
    if volume.is_some_and(|v| v.empty_dir.is_none()) {
        return Err(format!(
            "gracegate: the pod has a volume {WAITER_NAME} that is not an emptyDir; no drain wait, \
             the preStop sleeps instead"
        ));
    }
    let mut containers = Vec::new();
    for &index in waiting {
        let Some(c) = spec.containers.get(index) else {
            continue;
        };
        let mounts = items(&c.volume_mounts, || {
            format!("the volume mounts of container {}", c.name)
        })?;
        let ours = mounts
            .iter()
            .any(|m| m.name == WAITER_NAME && m.mount_path == MOUNT_PATH);
        if !ours && mounts.iter().any(|m| is_under(&m.mount_path)) {
            return Err(format!(
                "gracegate: container {} already mounts something at {MOUNT_PATH}; no drain wait, \
                 the preStop sleeps instead",
                c.name
            ));
        }
        let env = items(&c.env, || format!("the env of container {}", c.name))?;
        let add = container_add(index, c, ours, &env);
        if add.mount.is_some() || !add.env.is_empty() {
            containers.push(add);
        }
    }
    let has_init = spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == WAITER_NAME);
    Ok(Some(WaiterAdd {
        init: (!has_init).then(|| ListAdd::of(&spec.init_containers)),
        volume: volume.is_none().then(|| ListAdd::of(&spec.volumes)),
        containers,
        command: command(&drain.url, seconds, ca),
        image: drain.image.clone(),
    }))
}

/// The items of a list the reader kept as text (none when the pod has no such list): read
/// here, the only place that looks at them. One that cannot be read keeps the waiter out
/// (and the sleep in) with a warning naming `what`; it does not fail the review.
fn items<'l, 'a, T: Item<'a>>(
    list: &'l Option<Listed<'a, T>>,
    what: impl FnOnce() -> String,
) -> Result<Cow<'l, [T]>, String> {
    match list {
        Some(list) => list.items().map_err(|e| {
            format!(
                "gracegate: could not read {} ({e}); no drain wait, the preStop sleeps instead",
                what()
            )
        }),
        None => Ok(Cow::Borrowed(&[])),
    }
}

fn is_under(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path == MOUNT_PATH || path.starts_with("/.gracegate/")
}

fn container_add(index: usize, c: &ContainerView, mounted: bool, set: &[Named]) -> ContainerAdd {
    let env = ENV_VARS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !set.iter().any(|e| e.name == *name))
        .collect();
    ContainerAdd {
        index,
        mount: (!mounted).then(|| ListAdd::of(&c.volume_mounts)),
        env,
        env_list: ListAdd::of(&c.env),
    }
}

/// The preStop command. The CA goes inline: the waiter reads nothing from the image it lands
/// in but its own executable.
pub fn command(url: &str, seconds: u32, ca_pem: &str) -> Vec<String> {
    [
        WAITER_PATH,
        "wait",
        "--url",
        url,
        "--max-seconds",
        &seconds.to_string(),
        "--ca",
        ca_pem,
    ]
    .map(str::to_string)
    .to_vec()
}

// === impl WaiterAdd ===

impl WaiterAdd {
    /// Nothing to add: the pod has all of it (a second review).
    pub fn is_empty(&self) -> bool {
        self.init.is_none() && self.volume.is_none() && self.containers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{Listed, MountView, VolumeView};
    use rstest::rstest;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[rstest]
    #[case::flag_only(None, None, DrainMode::Wait, DrainMode::Wait, 0)]
    #[case::pod_wait(Some("wait"), None, DrainMode::Sleep, DrainMode::Wait, 0)]
    #[case::namespace_wait(None, Some("wait"), DrainMode::Sleep, DrainMode::Wait, 0)]
    #[case::pod_beats_namespace(Some("sleep"), Some("wait"), DrainMode::Wait, DrainMode::Sleep, 0)]
    #[case::spaces(Some(" wait "), None, DrainMode::Sleep, DrainMode::Wait, 0)]
    #[case::bad_pod_falls_to_namespace(
        Some("yes"),
        Some("wait"),
        DrainMode::Sleep,
        DrainMode::Wait,
        1
    )]
    #[case::bad_both_fall_to_flag(Some("Wait"), Some("1"), DrainMode::Sleep, DrainMode::Sleep, 2)]
    fn the_mode(
        #[case] pod: Option<&str>,
        #[case] namespace: Option<&str>,
        #[case] flag: DrainMode,
        #[case] want: DrainMode,
        #[case] warnings: usize,
    ) {
        let pod = pod.map(|v| map(&[(ANNOTATION_DRAIN, v)]));
        let namespace = namespace.map(|v| map(&[(ANNOTATION_DRAIN, v)]));
        let mut got = Vec::new();
        assert_eq!(mode(pod.as_ref(), namespace.as_ref(), flag, &mut got), want);
        assert_eq!(got.len(), warnings, "{got:?}");
    }

    #[rstest]
    #[case::defaults(DEFAULT_URL, 300, DEFAULT_IMAGE, true)]
    #[case::with_port_and_path("https://gg.example:8443/prefix", 60, "img", true)]
    #[case::plain_http("http://gracegate.gracegate-system.svc", 300, "img", false)]
    #[case::no_host("https://", 300, "img", false)]
    #[case::no_host_port("https://:443", 300, "img", false)]
    #[case::zero_deadline(DEFAULT_URL, 0, "img", false)]
    #[case::over_an_hour(DEFAULT_URL, 3601, "img", false)]
    #[case::no_image(DEFAULT_URL, 300, " ", false)]
    fn the_flags_are_checked(
        #[case] url: &str,
        #[case] max_seconds: u32,
        #[case] image: &str,
        #[case] ok: bool,
    ) {
        let settings = DrainSettings {
            url: url.into(),
            max_seconds,
            image: image.into(),
            ..DrainSettings::default()
        };
        assert_eq!(settings.check().is_ok(), ok, "{:?}", settings.check());
    }

    #[test]
    fn the_default_image_is_this_version() {
        assert!(DEFAULT_IMAGE.ends_with(env!("CARGO_PKG_VERSION")));
    }

    fn spec_with_mount(path: &str) -> PodSpecView<'_> {
        PodSpecView {
            containers: vec![ContainerView {
                name: "app".into(),
                volume_mounts: Some(Listed::Items(vec![MountView {
                    name: "data".into(),
                    mount_path: path.into(),
                }])),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn drain() -> DrainSettings {
        DrainSettings {
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
            ..DrainSettings::default()
        }
    }

    #[rstest]
    #[case::other_path("/data", true)]
    #[case::similar_name("/.gracegate-data", true)]
    #[case::same_path("/.gracegate", false)]
    #[case::same_path_slash("/.gracegate/", false)]
    #[case::below("/.gracegate/bin", false)]
    fn a_mount_in_the_way_keeps_the_waiter_out(#[case] path: &str, #[case] ok: bool) {
        let got = plan(&spec_with_mount(path), &[0], 300, &drain());
        assert_eq!(got.is_ok(), ok, "{got:?}");
    }

    /// The env as the webhook's reader keeps it, its text: the variables the container
    /// sets are not added again; a text that is not a list of named variables keeps the
    /// waiter out, with the reason.
    #[rstest]
    #[case::none_set(r#"[{"name":"A","value":"x"}]"#, Ok(3))]
    #[case::one_set(
        r#"[{"name":"GRACEGATE_POD_UID","valueFrom":{"fieldRef":{"fieldPath":"metadata.uid"}}}]"#,
        Ok(2)
    )]
    #[case::all_set(r#"[{"name":"GRACEGATE_POD_NAME"},{"name":"GRACEGATE_POD_NAMESPACE"},{"name":"GRACEGATE_POD_UID"}]"#, Ok(0))]
    #[case::empty("[]", Ok(3))]
    #[case::not_objects("[1]", Err("could not read the env of container app"))]
    #[case::not_a_list(r#"{"name":"A"}"#, Err("could not read the env of container app"))]
    fn env_text_is_read_for_the_waiter(#[case] text: &str, #[case] want: Result<usize, &str>) {
        let mut spec = spec_with_mount("/data");
        spec.containers[0].env = Some(Listed::Text(text.as_bytes()));
        let got = plan(&spec, &[0], 300, &drain());
        match (got, want) {
            (Ok(Some(add)), Ok(lacking)) => {
                assert_eq!(add.containers[0].env.len(), lacking);
                assert_eq!(add.containers[0].env_list, ListAdd::Item);
            }
            (Err(e), Err(why)) => assert!(e.contains(why), "{e}"),
            (got, want) => panic!("{got:?}, wanted {want:?}"),
        }
    }

    /// The pod's volumes and a container's mounts as the webhook's reader keeps them, their
    /// text: the waiter's own volume and mount are found in it, and a text that is not a
    /// list of them keeps the waiter out with the reason instead of failing the review.
    #[rstest]
    #[case::none(None, None, Ok((true, true)))]
    #[case::others(
        Some(r#"[{"name":"data","emptyDir":{}}]"#),
        Some(r#"[{"name":"data","mountPath":"/data","readOnly":true}]"#),
        Ok((true, true))
    )]
    #[case::ours(
        Some(r#"[{"name":"gracegate-waiter","emptyDir":{"medium":"Memory"}}]"#),
        Some(r#"[{"name":"gracegate-waiter","mountPath":"/.gracegate"}]"#),
        Ok((false, false))
    )]
    #[case::ours_not_an_empty_dir(
        Some(r#"[{"name":"gracegate-waiter","hostPath":{"path":"/x"}}]"#),
        None,
        Err("has a volume gracegate-waiter that is not an emptyDir")
    )]
    #[case::mount_in_the_way(
        None,
        Some(r#"[{"name":"data","mountPath":"/.gracegate/x"}]"#),
        Err("already mounts something at /.gracegate")
    )]
    #[case::volumes_not_objects(Some("[1]"), None, Err("could not read the pod's volumes"))]
    #[case::volume_name_not_a_string(
        Some(r#"[{"name":7}]"#),
        None,
        Err("could not read the pod's volumes")
    )]
    #[case::mounts_not_a_list(
        None,
        Some(r#"{"name":"data"}"#),
        Err("could not read the volume mounts of container app")
    )]
    fn volume_and_mount_text_is_read_for_the_waiter(
        #[case] volumes: Option<&str>,
        #[case] mounts: Option<&str>,
        #[case] want: Result<(bool, bool), &str>,
    ) {
        let mut spec = spec_with_mount("/data");
        spec.volumes = volumes.map(|t| Listed::Text(t.as_bytes()));
        spec.containers[0].volume_mounts = mounts.map(|t| Listed::Text(t.as_bytes()));
        let got = plan(&spec, &[0], 300, &drain());
        match (got, want) {
            (Ok(Some(add)), Ok((volume, mount))) => {
                assert_eq!(add.volume.is_some(), volume, "{add:?}");
                assert_eq!(add.containers[0].mount.is_some(), mount, "{add:?}");
            }
            (Err(e), Err(why)) => assert!(e.contains(why), "{e}"),
            (got, want) => panic!("{got:?}, wanted {want:?}"),
        }
    }

    #[test]
    fn nothing_waits_nothing_is_planned() {
        assert_eq!(
            plan(&spec_with_mount("/data"), &[], 300, &drain()),
            Ok(None)
        );
    }

    #[test]
    fn an_empty_dir_of_that_name_is_taken_for_ours() {
        let mut spec = spec_with_mount("/data");
        spec.volumes = Some(Listed::Items(vec![VolumeView {
            name: WAITER_NAME.into(),
            empty_dir: Some(serde::de::IgnoredAny),
        }]));
        spec.init_containers = Some(vec![Named {
            name: "other".into(),
        }]);
        let add = plan(&spec, &[0], 300, &drain()).unwrap().unwrap();
        assert_eq!(add.volume, None);
        assert_eq!(add.init, Some(ListAdd::Item));
        assert_eq!(add.containers[0].mount, Some(ListAdd::Item));
        assert_eq!(add.containers[0].env_list, ListAdd::List);
        assert_eq!(add.containers[0].env.len(), 3);
    }

    #[rstest]
    #[case::ours(&[WAITER_PATH, "wait"], true)]
    #[case::shell(&["/bin/sh", "-c", "sleep 5"], false)]
    #[case::empty(&[], false)]
    fn the_waiters_prestop_is_recognised(#[case] command: &[&str], #[case] ours: bool) {
        let handler = LifecycleHandler {
            exec: Some(k8s_openapi::api::core::v1::ExecAction {
                command: Some(command.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        };
        assert_eq!(is_waiter(&handler), ours);
    }

    /// A deadline below what the load balancer needs is said; S stays the deadline.
    #[test]
    fn a_short_deadline_is_a_warning() {
        let evidence = Evidence {
            delay: Some((300, crate::binding::DelaySource::TargetGroup("tg".into()))),
            ..Evidence::default()
        };
        let t = timing(&TimingSettings::default(), &drain(), &evidence, None, None);
        assert_eq!(
            (t.prestop_seconds, t.prestop_source.as_str()),
            (300, "drain-wait")
        );
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(
            t.warnings[0].contains("needs up to 310s"),
            "{:?}",
            t.warnings
        );
    }
}
