//! `gracegate watcher` and `gracegate serve`: the watcher runs on the one replica that holds
//! the Lease; `serve` also runs the webhook on every replica.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::aws::{self, Elb, ElbOptions};
use crate::cli::{LeaseArgs, ServeArgs, WatchArgs, WatcherArgs};
use crate::cluster::Cluster;
use crate::inject::Settings;
use crate::metrics::Metrics;
use crate::targets::GateSettings;
use crate::watcher::{self, GonePods, Watcher, WatcherSettings};
use crate::webhook::server::{self, shutdown_signal};
use crate::webhook::{Context, Health, admin_router};
use crate::{Error, Result};

/// Lease validity; a new leader takes over at most this long after the old one died.
const LEASE_SECONDS: u64 = 15;
/// The holder renews this long before expiry; also the clock skew tolerated between nodes.
const LEASE_GRACE_SECONDS: u64 = 5;

/// `gracegate serve`.
pub async fn run_serve(args: ServeArgs) -> Result<()> {
    if args.webhook.objects.is_some() {
        return Err(Error::Settings(
            "serve needs a cluster for its watcher; --objects is for `gracegate webhook`".into(),
        ));
    }
    let client = Client::try_default().await?;
    let (context, options) = server::prepare(&args.webhook, Some(client.clone())).await?;
    let running = server::start(options, context.clone()).await?;
    let prefix = context.settings.condition_prefix.clone();
    let namespace = args
        .webhook
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    tokio::select! {
        _ = shutdown_signal() => {}
        // The webhook's readiness never waits for the watcher's pod cache.
        result = lead(client, context, prefix, namespace, args.watch, args.lease, false) => {
            if let Err(error) = result {
                warn!(%error, "leader election ended; shutting down");
            }
        }
    }
    running
        .shutdown(Duration::from_secs(args.webhook.shutdown_delay_seconds))
        .await;
    Ok(())
}

/// `gracegate watcher`.
pub async fn run_watcher(args: WatcherArgs) -> Result<()> {
    let client = Client::try_default().await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let (cluster, drive) = Cluster::watch(client.clone(), &namespace);
    tokio::spawn(drive);
    let health = Health::default();
    health.tls_loaded.store(true, Ordering::Release); // no TLS in this mode
    let context = Context {
        settings: Arc::new(Settings {
            condition_prefix: args.condition_prefix.clone(),
            ..Settings::default()
        }),
        cluster,
        metrics: Arc::new(Metrics::default()),
        health: Arc::new(health),
    };
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .map_err(|e| Error::io(args.admin_listen.to_string(), e))?;
    info!(admin_addr = %args.admin_listen, "watcher admin serving");
    let admin = axum::serve(listener, admin_router(context.clone())).into_future();
    tokio::select! {
        _ = shutdown_signal() => {}
        result = admin => {
            if let Err(error) = result {
                warn!(%error, "admin listener failed");
            }
        }
        result = lead(client, context, args.condition_prefix, namespace, args.watch, args.lease, true) => {
            if let Err(error) = result {
                warn!(%error, "leader election ended; shutting down");
            }
        }
    }
    Ok(())
}

/// Take part in the election; while leading, watch target health. With
/// `ready_after_pod_sync`, `/readyz` is false while the leader fills its pod cache.
async fn lead(
    client: Client,
    context: Context,
    prefix: String,
    records_namespace: String,
    watch: WatchArgs,
    lease: LeaseArgs,
    ready_after_pod_sync: bool,
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
    let identity = lease
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gracegate".into());
    let namespace = lease
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let manager = LeaseManagerBuilder::new(client.clone(), &lease.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await
        .map_err(|e| Error::Lease(e.to_string()))?;
    let (mut leader, _lease_task) = manager.watch().await;
    let mut running: Option<JoinHandle<()>> = None;
    loop {
        let leading = *leader.borrow_and_update();
        match (leading, running.take()) {
            (true, None) => {
                info!(%identity, lease = %lease.lease_name, %namespace, "holding the lease: watching target health");
                let task = watch_targets(
                    ready_after_pod_sync,
                    client.clone(),
                    context.clone(),
                    elb.clone(),
                    settings.clone(),
                );
                running = Some(tokio::spawn(task));
                context.metrics.leader.set(1);
            }
            (false, Some(task)) => {
                warn!(%identity, "lost the lease: no longer writing conditions");
                task.abort();
                context.metrics.leader.set(0);
                context.health.pods_syncing.store(false, Ordering::Release);
            }
            (_, task) => running = task,
        }
        if leader.changed().await.is_err() {
            if let Some(task) = running {
                task.abort();
            }
            return Err(Error::Lease("the lease manager stopped".into()));
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
        .run()
        .await;
    };
    tokio::select! {
        _ = drive => {}
        _ = work => {}
    }
}
