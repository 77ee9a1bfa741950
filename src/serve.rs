//! The long-running commands: `gracegate webhook`, `gracegate watcher` and `gracegate serve`.
//! Their flags become the shells' settings here. The watcher runs on the one replica that
//! holds the Lease; `serve` also runs the webhook on every replica.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Client;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::aws::{self, Elb, ElbOptions};
use crate::cli::{
    LeaseArgs, PrestopMode, ServeArgs, WatchArgs, WatcherArgs, WebhookArgs, parse_server_version,
};
use crate::cluster::{Cluster, Objects};
use crate::election::Election;
use crate::inject::Settings;
use crate::metrics::Metrics;
use crate::targets::GateSettings;
use crate::waits::{Board, DEFAULT_MAX_WAITS};
use crate::watcher::{self, GonePods, Watcher, WatcherSettings};
use crate::webhook::conn::Timeouts;
use crate::webhook::server::{self, Options, shutdown_signal};
use crate::webhook::tls::CertFiles;
use crate::webhook::{Context, Health};
use crate::{Error, Result};

/// `gracegate webhook`: run until SIGTERM or Ctrl-C.
pub async fn run_webhook(args: WebhookArgs) -> Result<()> {
    let client = match args.objects {
        Some(_) => None,
        None => Some(Client::try_default().await?),
    };
    let (context, options) = prepare_webhook(&args, client).await?;
    let running = server::start(options, context).await?;
    shutdown_signal().await;
    running
        .shutdown(Duration::from_secs(args.shutdown_delay_seconds))
        .await;
    Ok(())
}

/// The CA bundle handed to drain waiters: `--drain-wait-ca`, else `ca.crt` beside the serving
/// certificate. Read once at start: waiters verify the CA, which outlives the serving
/// certificates it signs (a rotated CA needs a restart). When it cannot be read, pods that opt
/// in sleep instead, each with a warning, and this says so once.
fn drain_wait_ca(args: &WebhookArgs) -> Option<String> {
    let path = args.inject.drain_wait_ca.clone().unwrap_or_else(|| {
        args.tls_cert
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("ca.crt")
    });
    let problem = match std::fs::read_to_string(&path) {
        Ok(pem) if crate::inject::waiter::has_certificate(&pem) => return Some(pem),
        Ok(_) => "it holds no PEM certificate".to_string(),
        Err(e) => e.to_string(),
    };
    let wait = args.inject.drain_mode == crate::inject::DrainMode::Wait;
    if wait || args.inject.drain_wait_ca.is_some() {
        warn!(path = %path.display(), %problem, "no CA bundle for drain waiters: pods that opt in to the drain wait sleep instead");
    } else {
        info!(path = %path.display(), %problem, "no CA bundle for drain waiters: the drain wait is off (pods that opt in sleep, with a warning)");
    }
    None
}

/// The webhook's context and listener options from its flags: cluster objects from files
/// (`--objects`) or from reflectors on `client`, which this spawns.
pub async fn prepare_webhook(
    args: &WebhookArgs,
    client: Option<Client>,
) -> Result<(Context, Options)> {
    let (cluster, action, own_image) = match (&args.objects, client) {
        (Some(dir), _) => {
            let objects = Objects::load_dir(dir)?;
            info!(
                dir = %dir.display(), namespaces = objects.namespaces.len(),
                services = objects.services.len(), bindings = objects.bindings.len(),
                ingresses = objects.ingresses.len(), "cluster objects read from files"
            );
            // No API server to ask: a cluster new enough for the native sleep is assumed.
            (
                Cluster::from_objects(objects),
                args.inject.prestop_mode.resolve(None),
                None,
            )
        }
        (None, Some(client)) => {
            let version = match args.inject.prestop_mode {
                PrestopMode::Auto => Some(server_version(&client).await?),
                _ => None,
            };
            let namespace = crate::cluster::own_namespace(args.namespace.as_deref(), &client);
            let image = match (&args.inject.waiter_image, std::env::var("POD_NAME")) {
                (None, Ok(pod)) if !pod.is_empty() => {
                    crate::cluster::own_image(&client, &namespace, &pod).await
                }
                _ => None,
            };
            let (cluster, drive) = Cluster::watch(client, &namespace);
            tokio::spawn(drive);
            (cluster, args.inject.prestop_mode.resolve(version), image)
        }
        (None, None) => return Err(Error::Settings("no cluster and no --objects".into())),
    };
    let mut settings = args.inject.settings(action)?;
    info!(?action, prefix = %settings.condition_prefix, "preStop action");
    settings.drain.ca_pem = drain_wait_ca(args);
    if let Some(image) = own_image {
        settings.drain.image = image;
    }
    info!(image = %settings.drain.image, "drain-wait waiter image");
    let metrics = Arc::new(Metrics::default());
    let context = Context {
        settings: Arc::new(settings),
        cluster,
        // Standby until this process's watcher leads (`gracegate serve`); `gracegate webhook`
        // alone never leads and answers every drain wait "not leader".
        waits: Arc::new(Board::new(args.max_drain_waits as usize, metrics.clone())),
        metrics,
        health: Arc::new(Health::default()),
    };
    let options = Options {
        listen: args.listen,
        admin_listen: args.admin_listen,
        cert: CertFiles {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
        cert_reload: Duration::from_secs(args.cert_reload_seconds.max(1)),
        timeouts: args.limits.timeouts(),
        limits: args.limits.limits(),
    };
    Ok((context, options))
}

/// The API server's version, read once: it decides between the native sleep and exec.
async fn server_version(client: &Client) -> Result<(u32, u32)> {
    let info = client.apiserver_version().await?;
    let version = parse_server_version(&info.major, &info.minor).ok_or_else(|| {
        Error::Settings(format!(
            "cannot read the API server version {:?}.{:?}; set --prestop-mode sleep or exec",
            info.major, info.minor
        ))
    })?;
    info!(major = version.0, minor = version.1, "API server version");
    Ok(version)
}

/// `gracegate serve`.
pub async fn run_serve(args: ServeArgs) -> Result<()> {
    if args.webhook.objects.is_some() {
        return Err(Error::Settings(
            "serve needs a cluster for its watcher; --objects is for `gracegate webhook`".into(),
        ));
    }
    let client = Client::try_default().await?;
    let (context, options) = prepare_webhook(&args.webhook, Some(client.clone())).await?;
    let running = server::start(options, context.clone()).await?;
    let prefix = context.settings.condition_prefix.clone();
    let namespace = crate::cluster::own_namespace(args.webhook.namespace.as_deref(), &client);
    // On SIGTERM the watcher stops writing and the Lease is released (`lead`) while the
    // webhook keeps answering through its shutdown delay.
    let stop = on_shutdown_signal();
    // The webhook's readiness never waits for the watcher's pod cache.
    let led = lead(
        client, context, prefix, namespace, args.watch, args.lease, false, stop,
    );
    if let Err(error) = led.await {
        warn!(error = %crate::report(&error), "leader election ended; shutting down");
    }
    running
        .shutdown(Duration::from_secs(args.webhook.shutdown_delay_seconds))
        .await;
    Ok(())
}

/// `gracegate watcher`.
pub async fn run_watcher(args: WatcherArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let namespace = crate::cluster::own_namespace(args.namespace.as_deref(), &client);
    let (cluster, drive) = Cluster::watch(client.clone(), &namespace);
    tokio::spawn(drive);
    let health = Health::default();
    health.tls_loaded.store(true, Ordering::Release); // no TLS in this mode
    let metrics = Arc::new(Metrics::default());
    let context = Context {
        settings: Arc::new(Settings {
            condition_prefix: args.condition_prefix.clone(),
            ..Settings::default()
        }),
        cluster,
        // No HTTPS listener here: nobody asks this board.
        waits: Arc::new(Board::new(DEFAULT_MAX_WAITS, metrics.clone())),
        metrics,
        health: Arc::new(health),
    };
    let (admin_addr, _admin_handle, admin) =
        server::serve_admin(args.admin_listen, &context, Timeouts::default())?;
    info!(%admin_addr, "watcher admin serving");
    let stop = on_shutdown_signal();
    let led = lead(
        client,
        context,
        args.condition_prefix,
        namespace,
        args.watch,
        args.lease,
        true,
        stop.clone(),
    );
    tokio::select! {
        result = admin => {
            if let Ok(Err(error)) = result {
                warn!(error = %crate::report(&error), "admin listener failed");
            }
        }
        result = led => {
            if let Err(error) = result {
                warn!(error = %crate::report(&error), "leader election ended; shutting down");
            }
        }
    }
    Ok(())
}

/// A receiver that turns true on SIGTERM or Ctrl-C.
fn on_shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// How long a stopping replica waits for the Lease release to reach the API server.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Take part in the election; while leading, watch target health. With
/// `ready_after_pod_sync`, `/readyz` is false while the leader fills its pod cache. Returns
/// when `stop` turns true, once the watcher has stopped and the Lease is released.
#[allow(clippy::too_many_arguments)]
async fn lead(
    client: Client,
    context: Context,
    prefix: String,
    records_namespace: String,
    watch: WatchArgs,
    lease: LeaseArgs,
    ready_after_pod_sync: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let options = ElbOptions {
        rate_per_second: watch.aws_rate,
        burst: watch.aws_burst,
        ..ElbOptions::default()
    };
    let sdk = aws::sdk_config(
        watch.aws_region.clone(),
        watch.aws_endpoint_url.clone(),
        &options,
    )
    .await;
    let elb = Elb::new(&sdk, &options, context.metrics.clone());
    let settings = WatcherSettings {
        gates: GateSettings {
            condition_prefix: prefix,
            gate_timeout: (!watch.gate_timeout.is_zero()).then_some(watch.gate_timeout),
        },
        tick: watch.tick,
        facts_refresh: Some(watch.facts_refresh),
        records_namespace: Some(records_namespace),
    };
    let settle = k8s_openapi::jiff::SignedDuration::from_secs(watch.drain_settle_seconds.into());
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let identity = lease_identity(lease.identity.clone(), env);
    let namespace = lease
        .lease_namespace
        .clone()
        .or_else(|| env("POD_NAMESPACE"))
        .unwrap_or_else(|| client.default_namespace().to_string());
    let (duration, grace) = lease.timings()?;
    let election = Election {
        client: client.clone(),
        lease: lease.lease_name.clone(),
        namespace: namespace.clone(),
        identity: identity.clone(),
        duration,
        grace,
    };
    let election = tokio::select! {
        started = election.start() => started?,
        _ = stop.wait_for(|s| *s) => return Ok(()),
    };
    let leader = election.leader.clone();
    info!(%identity, lease = %lease.lease_name, %namespace, "taking part in the leader election");
    let metrics = context.metrics.clone();
    let spawn = || {
        // `gracegate_leader`: this replica holds the Lease and runs the watcher.
        metrics.leader.set(1);
        tokio::spawn(watch_targets(
            ready_after_pod_sync,
            client.clone(),
            context.clone(),
            elb.clone(),
            settings.clone(),
            settle,
        ))
    };
    let health = context.health.clone();
    let leader_gauge = context.metrics.clone();
    let waits = context.waits.clone();
    let stopped = move || {
        leader_gauge.leader.set(0);
        // The watcher's drop did it already; parked drain waits hear "not leader" at once.
        waits.step_down();
        health.pods_syncing.store(false, Ordering::Release);
    };
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let result = supervise(leader, spawn, stopped, RESTART_BACKOFF, shutdown).await;
    // The watcher has stopped (supervise aborts and awaits it): only now is the Lease
    // released, so the next leader never writes beside this one.
    election.release(RELEASE_TIMEOUT).await;
    result
}

/// `--identity` (`GRACEGATE_IDENTITY`), else the downward API's `POD_NAME`, else `HOSTNAME`.
fn lease_identity(flag: Option<String>, env: impl Fn(&str) -> Option<String>) -> String {
    flag.or_else(|| env("POD_NAME"))
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| "gracegate".into())
}

/// First wait before restarting a watcher task that ended while holding the Lease; doubles
/// up to [`MAX_RESTART_BACKOFF`], and starts over once a task has run that long.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);

/// Run the task `spawn` makes while `leader` says this replica holds the Lease, abort it (and
/// call `stopped`) when the Lease is lost. A task that ends while the Lease is still held (a
/// panic, or a watch that gave up) is restarted after a backoff: otherwise the replica would
/// keep the Lease, so no other replica could take over, while no gate is ever set.
/// Returns when the lease manager stops, or on `shutdown` once the task has ended (aborted and
/// awaited: no write of this replica's can follow).
pub async fn supervise(
    mut leader: tokio::sync::watch::Receiver<bool>,
    mut spawn: impl FnMut() -> JoinHandle<()>,
    stopped: impl Fn(),
    backoff: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let mut running: Option<(JoinHandle<()>, Instant)> = None;
    let mut delay = backoff;
    tokio::pin!(shutdown);
    loop {
        let leading = *leader.borrow_and_update();
        match (leading, running.take()) {
            (true, None) => {
                info!("holding the lease: watching target health");
                running = Some((spawn(), Instant::now()));
            }
            (false, Some((task, _))) => {
                warn!("lost the lease: no longer writing conditions");
                task.abort();
                stopped();
            }
            (_, task) => running = task,
        }
        let ended = async {
            match running.as_mut() {
                Some((task, _)) => task.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => {
                if let Some((task, _)) = running.take() {
                    task.abort();
                    let _ = task.await;
                    stopped();
                }
                info!("stopped: the watcher writes nothing more");
                return Ok(());
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    if let Some((task, _)) = running {
                        task.abort();
                    }
                    return Err(Error::Lease("the lease manager stopped".into()));
                }
            }
            result = ended => {
                let ran = running.take().map(|(_, started)| started.elapsed()).unwrap_or_default();
                if ran >= MAX_RESTART_BACKOFF {
                    delay = backoff;
                }
                let how = match result {
                    Ok(()) => "returned".to_string(),
                    Err(error) => crate::report(&error),
                };
                error!(
                    ended = %how, ran_seconds = ran.as_secs(), restart_in_seconds = delay.as_secs_f64(),
                    "the watcher task ended while this replica holds the lease; restarting it"
                );
                stopped();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RESTART_BACKOFF);
            }
        }
    }
}

/// The leader's work: pod and node caches, then the watcher loop.
async fn watch_targets(
    ready_after_pod_sync: bool,
    client: Client,
    context: Context,
    elb: Elb,
    settings: WatcherSettings,
    drain_settle: k8s_openapi::jiff::SignedDuration,
) {
    context
        .health
        .pods_syncing
        .store(ready_after_pod_sync, Ordering::Release);
    let wake = Arc::new(Notify::new());
    let gone = GonePods::default();
    let (pods, nodes, drive) = watcher::watch_pods(
        client.clone(),
        settings.gates.condition_prefix.clone(),
        wake.clone(),
        gone.clone(),
    );
    let work = async {
        context.cluster.wait_until_synced().await;
        let synced = futures::future::join(pods.wait_until_ready(), nodes.wait_until_ready()).await;
        if synced.0.is_err() || synced.1.is_err() {
            return;
        }
        context.health.pods_syncing.store(false, Ordering::Release);
        info!(pods = pods.len(), "pod cache synced");
        Watcher::new(
            client,
            elb,
            context.metrics.clone(),
            context.cluster.clone(),
            pods,
            nodes,
            wake,
            settings,
        )
        .with_gone_pods(gone)
        .with_drain_waits(context.waits.clone(), drain_settle)
        .run()
        .await;
    };
    tokio::select! {
        _ = drive => {}
        _ = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn starts() -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(0))
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_task_that_ends_while_leading_is_restarted_and_stopped_on_loss() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let started = starts();
        let stops = starts();
        let (s, st) = (started.clone(), stops.clone());
        let supervisor = tokio::spawn(supervise(
            rx,
            move || {
                s.fetch_add(1, Ordering::SeqCst);
                // Dies soon after starting: a panic in the loop or a watch that gave up.
                tokio::spawn(async { tokio::time::sleep(Duration::from_millis(10)).await })
            },
            move || {
                st.fetch_add(1, Ordering::SeqCst);
            },
            Duration::from_secs(1),
            std::future::pending(),
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "not leading: nothing runs"
        );

        tx.send(true).unwrap();
        // Starts at 0 s and ends 10 ms later each time; restarts after 1, 2, 4 s of backoff:
        // at 1.01, 3.02 and 7.03 s.
        tokio::time::sleep(Duration::from_millis(7_100)).await;
        assert_eq!(started.load(Ordering::SeqCst), 4);

        tx.send(false).unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        let after_loss = started.load(Ordering::SeqCst);
        assert!(after_loss <= 5, "{after_loss}");
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            after_loss,
            "no restarts without the lease"
        );
        assert!(stops.load(Ordering::SeqCst) >= 3);

        drop(tx);
        let result = tokio::time::timeout(Duration::from_secs(1), supervisor).await;
        assert!(matches!(result, Ok(Ok(Err(Error::Lease(_))))), "{result:?}");
    }

    #[test]
    fn identity_flag_then_pod_name_then_hostname() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both: &[(&str, &str)] = &[("POD_NAME", "pod-a"), ("HOSTNAME", "host-a")];
        assert_eq!(lease_identity(Some("flag".into()), env(both)), "flag");
        assert_eq!(lease_identity(None, env(both)), "pod-a");
        assert_eq!(
            lease_identity(None, env(&[("HOSTNAME", "host-a")])),
            "host-a"
        );
        assert_eq!(lease_identity(None, env(&[])), "gracegate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_watcher_task_runs_once_and_is_aborted_when_the_lease_is_lost() {
        let (tx, rx) = tokio::sync::watch::channel(true);
        let started = starts();
        let alive = Arc::new(());
        let (s, a) = (started.clone(), alive.clone());
        let supervisor = tokio::spawn(supervise(
            rx,
            move || {
                s.fetch_add(1, Ordering::SeqCst);
                let guard = a.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await
                })
            },
            || {},
            Duration::from_secs(1),
            std::future::pending(),
        ));
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        // Held here, by the spawn closure and by the running task.
        assert_eq!(Arc::strong_count(&alive), 3, "the task is running");
        tx.send(false).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(Arc::strong_count(&alive), 2, "the task was aborted");
        supervisor.abort();
    }

    /// SIGTERM on the leader: the watcher task is aborted and has ended before `supervise`
    /// returns, so the Lease (released next) never has two writers behind it.
    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_the_watcher_before_returning() {
        let (_tx, rx) = tokio::sync::watch::channel(true);
        let alive = Arc::new(());
        let stops = starts();
        let (a, st) = (alive.clone(), stops.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn(supervise(
            rx,
            move || {
                let guard = a.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await
                })
            },
            move || {
                st.fetch_add(1, Ordering::SeqCst);
            },
            Duration::from_secs(1),
            async {
                let _ = stop_rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(Arc::strong_count(&alive), 3, "leading, the task runs");
        stop_tx.send(()).unwrap();
        let result = supervisor.await.unwrap();
        assert!(result.is_ok());
        // Returned only after the task was gone: nothing of it is left.
        assert_eq!(Arc::strong_count(&alive), 1);
        assert_eq!(stops.load(Ordering::SeqCst), 1);
    }
}
