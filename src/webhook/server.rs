//! The webhook's two listeners and their life: start, readiness, graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsAcceptor;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::conn::{self, BodyLimit, ConnectionCap, InFlight, Limits, TcpAcceptor, Timeouts};
use super::tls::{CertFiles, Certificate};
use super::{Context, ReviewLimits, admin_router, router_with_limits};
use crate::{Error, Result};

/// How long in-flight reviews get to finish once the port stops accepting.
/// The API server gives up on a review after its `timeoutSeconds` (5 s) anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Options {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub cert: CertFiles,
    pub cert_reload: Duration,
    /// Header, body and idle limits, the same on both ports.
    pub timeouts: Timeouts,
    /// Connection, in-flight, body and HTTP/2 stream caps, the same on both ports (each port
    /// counts its own).
    pub limits: Limits,
}

/// A started webhook.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub context: Context,
    handle: Handle<SocketAddr>,
    https: JoinHandle<std::io::Result<()>>,
    admin_handle: Handle<SocketAddr>,
    admin: JoinHandle<std::io::Result<()>>,
    cert_watch: JoinHandle<()>,
}

/// Bind both ports, load the certificate and serve. Returns once both ports accept.
pub async fn start(options: Options, context: Context) -> Result<Running> {
    let (certificate, loaded) = Certificate::load(options.cert).await?;
    context.health.tls_loaded.store(true, Ordering::Release);
    let cert_watch = tokio::spawn(certificate.clone().watch(loaded, options.cert_reload));
    let timeouts = options.timeouts;
    let limits = options.limits;
    check_fd_limit(&limits);
    let acceptor = TcpAcceptor {
        idle: timeouts.idle,
        cap: ConnectionCap::new(limits.max_connections, Some(context.metrics.clone())),
    };

    // Both ports: the same acceptor (cap, TCP_NODELAY, idle limit), timeouts and caps.
    let (admin_addr, admin_handle, admin) =
        serve_admin_with(options.admin_listen, &context, timeouts, limits)?;

    let listener = conn::bind(options.listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(options.listen.to_string(), e))?;
    let handle = Handle::new();
    let tls = RustlsAcceptor::new(certificate.rustls_config())
        .handshake_timeout(timeouts.header)
        .acceptor(acceptor);
    let mut server = axum_server::from_tcp(listener)
        .map_err(|e| Error::io(addr.to_string(), e))?
        .acceptor(tls)
        .handle(handle.clone())
        .first_request_timeout(timeouts.header);
    configure(&mut server, timeouts, limits);
    // The in-flight cap and the body timeout, as on the admin port, applied by `/mutate`
    // itself; the drain-wait polls are not reviews (no body, parked up to 25 s).
    let review_limits = ReviewLimits {
        in_flight: InFlight::new(limits.max_in_flight, Some(context.metrics.clone())),
        body: BodyLimit {
            timeout: timeouts.body,
            metrics: Some(context.metrics.clone()),
        },
    };
    let app = router_with_limits(context.clone(), limits.max_body_bytes, Some(review_limits))
        .merge(super::drain_wait::router(context.waits.clone()));
    let https = tokio::spawn(server.serve(app.into_make_service()));
    handle.listening().await;
    admin_handle.listening().await;
    info!(%addr, %admin_addr, "webhook serving");

    Ok(Running {
        addr,
        admin_addr,
        context,
        handle,
        https,
        admin_handle,
        admin,
        cert_watch,
    })
}

/// hyper's settings for both ports: the idle limit on the wait for HTTP/1.1 headers, and the
/// HTTP/2 stream cap.
fn configure<A: axum_server::Address, Acc>(
    server: &mut axum_server::Server<A, Acc>,
    timeouts: Timeouts,
    limits: Limits,
) {
    let builder = server.http_builder();
    builder.http1().header_read_timeout(Some(timeouts.idle));
    builder
        .http2()
        .max_concurrent_streams(Some(limits.http2_max_streams));
}

/// Raise the soft limit on open files if it can, and warn when the connection caps of both
/// ports would not fit under it.
fn check_fd_limit(limits: &Limits) {
    let needed = 2 * limits.max_connections as u64 + 64;
    match conn::raise_fd_limit() {
        Some(soft) if soft < needed => warn!(
            open_files = soft,
            needed,
            max_connections = limits.max_connections,
            "the open-file limit is below what --max-connections allows on both ports; \
             past it connections fail to be accepted rather than being reset"
        ),
        _ => {}
    }
}

/// The admin port (`/livez`, `/readyz`, `/metrics`) on `listen`, with the HTTPS port's
/// connection handling and the default caps; also `gracegate watcher`'s only port.
pub fn serve_admin(
    listen: SocketAddr,
    context: &Context,
    timeouts: Timeouts,
) -> Result<(
    SocketAddr,
    Handle<SocketAddr>,
    JoinHandle<std::io::Result<()>>,
)> {
    serve_admin_with(listen, context, timeouts, Limits::default())
}

/// [`serve_admin`] with the given caps.
pub fn serve_admin_with(
    listen: SocketAddr,
    context: &Context,
    timeouts: Timeouts,
    limits: Limits,
) -> Result<(
    SocketAddr,
    Handle<SocketAddr>,
    JoinHandle<std::io::Result<()>>,
)> {
    let listener = conn::bind(listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(listen.to_string(), e))?;
    let handle = Handle::new();
    let mut server = axum_server::from_tcp(listener)
        .map_err(|e| Error::io(addr.to_string(), e))?
        .acceptor(TcpAcceptor {
            idle: timeouts.idle,
            cap: ConnectionCap::new(limits.max_connections, None),
        })
        .handle(handle.clone())
        .first_request_timeout(timeouts.header);
    configure(&mut server, timeouts, limits);
    let app = admin_router(context.clone())
        .layer(axum::middleware::from_fn_with_state(
            BodyLimit {
                timeout: timeouts.body,
                metrics: None,
            },
            conn::request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            InFlight::new(limits.max_in_flight, None),
            conn::in_flight,
        ));
    Ok((
        addr,
        handle,
        tokio::spawn(server.serve(app.into_make_service())),
    ))
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
            Ok(Err(error)) => {
                warn!(error = %crate::report(&error), "webhook listener ended with an error")
            }
            Err(error) => warn!(%error, "webhook listener task failed"),
        }
        self.admin_handle.graceful_shutdown(Some(DRAIN_TIMEOUT));
        let _ = self.admin.await;
        self.cert_watch.abort();
        info!("stopped");
    }
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
