//! The webhook's two listeners and their life: start, readiness, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum_server::Handle;
use kube::Client;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::tls::{CertFiles, Certificate};
use super::{Context, Health, admin_router, router};
use crate::cli::{PrestopMode, WebhookArgs, parse_server_version};
use crate::cluster::{Cluster, Objects};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// How long in-flight reviews get to finish once the port stops accepting.
/// The API server gives up on a review after its `timeoutSeconds` (5 s) anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Slow or silent clients are cut off rather than holding a connection open.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Options {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub cert: CertFiles,
    pub cert_reload: Duration,
}

/// A started webhook.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub context: Context,
    handle: Handle<SocketAddr>,
    https: JoinHandle<std::io::Result<()>>,
    admin: JoinHandle<std::io::Result<()>>,
    admin_stop: Arc<tokio::sync::Notify>,
    cert_watch: JoinHandle<()>,
}

/// Bind both ports, load the certificate and serve. Returns once both ports accept.
pub async fn start(options: Options, context: Context) -> Result<Running> {
    let (certificate, loaded) = Certificate::load(options.cert).await?;
    context.health.tls_loaded.store(true, Ordering::Release);
    let cert_watch = tokio::spawn(certificate.clone().watch(loaded, options.cert_reload));

    let admin_listener = tokio::net::TcpListener::bind(options.admin_listen)
        .await
        .map_err(|e| Error::io(options.admin_listen.to_string(), e))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| Error::io(options.admin_listen.to_string(), e))?;
    let admin_stop = Arc::new(tokio::sync::Notify::new());
    let stop = admin_stop.clone();
    let admin = tokio::spawn(
        axum::serve(admin_listener, admin_router(context.clone()))
            .with_graceful_shutdown(async move { stop.notified().await })
            .into_future(),
    );

    let listener = std::net::TcpListener::bind(options.listen)
        .map_err(|e| Error::io(options.listen.to_string(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io(options.listen.to_string(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(options.listen.to_string(), e))?;
    let handle = Handle::new();
    let server = axum_server::from_tcp_rustls(listener, certificate.rustls_config())
        .map_err(|e| Error::io(addr.to_string(), e))?
        .handle(handle.clone())
        .first_request_timeout(FIRST_REQUEST_TIMEOUT);
    let https = tokio::spawn(server.serve(router(context.clone()).into_make_service()));
    handle.listening().await;
    info!(%addr, %admin_addr, "webhook serving");

    Ok(Running {
        addr,
        admin_addr,
        context,
        handle,
        https,
        admin,
        admin_stop,
        cert_watch,
    })
}

impl Running {
    /// Stop: `/readyz` goes false at once; reviews are still served for `delay` (endpoints
    /// take a moment to drop this pod); then the port closes and in-flight reviews finish.
    pub async fn shutdown(self, delay: Duration) {
        self.context
            .health
            .shutting_down
            .store(true, Ordering::Release);
        info!(
            delay_seconds = delay.as_secs(),
            "shutting down: readyz is false"
        );
        tokio::time::sleep(delay).await;
        self.handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
        match self.https.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "webhook listener ended with an error"),
            Err(error) => warn!(%error, "webhook listener task failed"),
        }
        self.admin_stop.notify_one();
        let _ = self.admin.await;
        self.cert_watch.abort();
        info!("stopped");
    }
}

/// `gracegate webhook`: run until SIGTERM or Ctrl-C.
pub async fn run(args: WebhookArgs) -> Result<()> {
    let client = match args.objects {
        Some(_) => None,
        None => Some(Client::try_default().await?),
    };
    let (context, options) = prepare(&args, client).await?;
    let running = start(options, context).await?;
    shutdown_signal().await;
    running
        .shutdown(Duration::from_secs(args.shutdown_delay_seconds))
        .await;
    Ok(())
}

/// The webhook's context and listener options from its flags: cluster objects from files
/// (`--objects`) or from reflectors on `client`, which this spawns.
pub async fn prepare(args: &WebhookArgs, client: Option<Client>) -> Result<(Context, Options)> {
    let (cluster, action) = match (&args.objects, client) {
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
            )
        }
        (None, Some(client)) => {
            let version = match args.inject.prestop_mode {
                PrestopMode::Auto => Some(server_version(&client).await?),
                _ => None,
            };
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let (cluster, drive) = Cluster::watch(client, &namespace);
            tokio::spawn(drive);
            (cluster, args.inject.prestop_mode.resolve(version))
        }
        (None, None) => return Err(Error::Settings("no cluster and no --objects".into())),
    };
    let settings = args.inject.settings(action)?;
    info!(?action, prefix = %settings.condition_prefix, "preStop action");
    let context = Context {
        settings: Arc::new(settings),
        cluster,
        metrics: Arc::new(Metrics::default()),
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

/// SIGTERM (the kubelet) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the webhook");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
