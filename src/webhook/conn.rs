//! What both listeners do with a connection: bind dual-stack, `TCP_NODELAY`, the same
//! header, body and idle timeouts, and the same caps on the HTTPS port and the admin port.
//!
//! * **Nagle**: an answer is written right after the request is read; with Nagle's algorithm
//!   on, its last segment waits for the client's delayed ACK (40 ms on Linux) on a fresh
//!   connection. The API server opens new connections whenever its pool turns over, so every
//!   accepted socket gets `TCP_NODELAY` (BENCHMARKS.md, "First review on a fresh connection").
//! * **Header timeout**: a new connection must finish its TLS handshake within
//!   [`Timeouts::header`], and then deliver a request's headers within [`Timeouts::header`]
//!   (axum-server's first-request timeout, both HTTP/1.1 and HTTP/2).
//! * **Body timeout**: from a request's headers to its answer, the body included, at most
//!   [`Timeouts::body`]; else 408 and the connection is closed ([`request_timeout`]).
//! * **Idle timeout**: a connection the client sends nothing on for [`Timeouts::idle`] is
//!   closed ([`IdleStream`]); on HTTP/1.1 hyper also bounds the wait for the next request's
//!   headers by it. Longer than the API server's HTTP/2 health-check pings (30 s), so its
//!   live connections are never cut.
//! * **Connection cap**: at most [`Limits::max_connections`] open connections per port,
//!   counted from accept (before TLS) to close. One more is accepted and closed at once with a
//!   reset ([`TcpAcceptor`]): answering it a 503 would first cost a TLS handshake, the work
//!   the cap is there to bound, and left in the kernel's backlog it would hang the API server
//!   for its whole `timeoutSeconds`. Either way the API server fails open (`failurePolicy:
//!   Ignore`); a reset does it at once.
//! * **In-flight cap**: at most [`Limits::max_in_flight`] requests between their headers and
//!   their answer per port (on the HTTPS port, reviews: `/mutate` applies the cap and the
//!   body timeout itself); one more is answered 503 at once ([`in_flight`]). With the body
//!   limit it bounds the memory bodies can take: `max_in_flight × max_body_bytes`.
//! * **Body limit**: [`Limits::max_body_bytes`] (3 MiB, the API server's own request limit),
//!   enforced by the router: a larger `Content-Length` is refused unread, a chunked or
//!   HTTP/2 body as soon as it passes the limit.
//! * **HTTP/2 streams**: at most [`Limits::http2_max_streams`] concurrent streams per
//!   connection (the `SETTINGS_MAX_CONCURRENT_STREAMS` the server announces).

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_server::ConnectionShutdown;
use axum_server::accept::Accept;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};
use tokio::time::{Instant, Sleep};
use tracing::{info, warn};

use crate::metrics::{Metrics, Outcome, RefusedLabels};
use crate::{Error, Result};

/// The three limits on a client, the same on both ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Accept → a request's headers read.
    pub header: Duration,
    /// A request's headers → its answer (reading the body included).
    pub body: Duration,
    /// Nothing received from the client for this long closes the connection.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            // The API server gives up on a review after the webhook's timeoutSeconds (5 s).
            body: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// The caps on what clients may hold, each port counted on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections, from accept (before TLS) to close.
    pub max_connections: usize,
    /// Requests between their headers and their answer, over all connections.
    pub max_in_flight: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Concurrent streams on one HTTP/2 connection.
    pub http2_max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Each takes a file descriptor and a few KiB; the API server needs a handful.
            max_connections: 4096,
            // A review takes tens of microseconds: the API server rarely has more than a few
            // in flight. 256 × 3 MiB bounds what bodies being read can take to 768 MiB.
            max_in_flight: 256,
            max_body_bytes: super::MAX_BODY_BYTES,
            // The smallest value RFC 9113 recommends announcing (hyper's own default is 200);
            // the API server sends a handful of reviews at a time on each connection.
            http2_max_streams: 100,
        }
    }
}

/// Bind `addr` for listening. An unspecified IPv6 address (`[::]`, the default) is bound
/// dual-stack, so IPv4 clients are served too whatever `net.ipv6.bindv6only` says; on a host
/// without IPv6 (`ipv6.disable=1`) it falls back to `0.0.0.0` on the same port.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    match bind_exactly(addr) {
        Err(error) if addr.is_ipv6() && addr.ip().is_unspecified() && no_ipv6(&error) => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            info!(%addr, %v4, %error, "no IPv6 on this host: listening on IPv4 only");
            bind_exactly(v4).map_err(|e| Error::io(v4.to_string(), e))
        }
        result => result.map_err(|e| Error::io(addr.to_string(), e)),
    }
}

fn no_ipv6(error: &io::Error) -> bool {
    // EAFNOSUPPORT (socket) or EADDRNOTAVAIL (bind) when the kernel has no IPv6.
    matches!(error.raw_os_error(), Some(97) | Some(99))
}

fn bind_exactly(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    // As std's TcpListener::bind: a restarted process can bind while old connections linger.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The connection cap of one port: a permit per open connection.
#[derive(Clone)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
    /// Set while connections are being refused, so the warning is logged once per episode.
    saturated: Arc<AtomicBool>,
    /// `Some` on the HTTPS port: open connections and refusals are exported.
    metrics: Option<Arc<Metrics>>,
}

impl ConnectionCap {
    pub fn new(max: usize, metrics: Option<Arc<Metrics>>) -> Self {
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            max,
            saturated: Arc::default(),
            metrics,
        }
    }

    /// A permit for one more connection, or `None` at the cap (counted and logged).
    fn admit(&self) -> Option<Held> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.saturated.store(false, Ordering::Relaxed);
                let gauge = self.metrics.as_ref().map(|m| m.webhook_connections.clone());
                if let Some(gauge) = &gauge {
                    gauge.inc();
                }
                Some(Held {
                    _permit: permit,
                    gauge,
                })
            }
            Err(_) => {
                if let Some(metrics) = &self.metrics {
                    metrics.refused(RefusedLabels::CONNECTIONS);
                }
                if !self.saturated.swap(true, Ordering::Relaxed) {
                    warn!(
                        max_connections = self.max,
                        "connection cap reached: new connections are reset until some close"
                    );
                }
                None
            }
        }
    }
}

/// A connection's place under the cap, given back (and the gauge lowered) when it closes.
struct Held {
    _permit: OwnedSemaphorePermit,
    gauge: Option<Gauge>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

/// axum-server acceptor for both ports: the connection cap, `TCP_NODELAY` and the idle limit
/// on every socket, before TLS on the HTTPS port.
#[derive(Clone)]
pub struct TcpAcceptor {
    pub idle: Duration,
    pub cap: ConnectionCap,
}

impl<S> Accept<TcpStream, S> for TcpAcceptor {
    type Stream = IdleStream<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Some(held) = self.cap.admit() else {
            // Reset rather than FIN: the client learns at once, and this side keeps no
            // TIME_WAIT socket per refused connection. axum-server drops the stream on error.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            return std::future::ready(Err(io::Error::other(format!(
                "over --max-connections ({})",
                self.cap.max
            ))));
        };
        std::future::ready(stream.set_nodelay(true).map(|()| {
            let mut stream = IdleStream::new(stream, self.idle);
            stream._held = Some(held);
            (stream, service)
        }))
    }
}

/// A stream whose reads fail with `TimedOut` once nothing has been received for `idle`.
/// Only reads count: a client that sends nothing is idle, whatever the server still writes.
/// It also holds the connection's place under the cap until it is dropped.
pub struct IdleStream<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _held: Option<Held>,
}

impl<S> IdleStream<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        IdleStream {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            _held: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let next = Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// State of [`request_timeout`]: the limit, and the metrics to count a cut-off review in.
#[derive(Clone)]
pub struct BodyLimit {
    pub timeout: Duration,
    /// `Some` on the HTTPS port: a review cut off is counted as `rejected`.
    pub metrics: Option<Arc<Metrics>>,
}

/// Middleware: a request not answered within the body timeout (a client sending its body
/// slowly) gets 408 and its connection is closed.
pub async fn request_timeout(
    State(limit): State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    let shutdown = request.extensions().get::<ConnectionShutdown>().cloned();
    let path = request.uri().path().to_string();
    within_body_timeout(&limit, &path, shutdown, next.run(request)).await
}

/// `answer` if it is ready within the body timeout; else 408, and the connection (when
/// `shutdown` is given) is closed. What [`request_timeout`] does, for a handler that applies
/// the limit itself.
pub async fn within_body_timeout(
    limit: &BodyLimit,
    path: &str,
    shutdown: Option<ConnectionShutdown>,
    answer: impl Future<Output = Response>,
) -> Response {
    match tokio::time::timeout(limit.timeout, answer).await {
        Ok(response) => response,
        Err(_) => {
            if let Some(metrics) = &limit.metrics {
                metrics.admission(Outcome::Rejected, limit.timeout.as_secs_f64());
            }
            warn!(
                %path, timeout_seconds = limit.timeout.as_secs_f64(),
                "request not received in time; answered 408 and closing the connection"
            );
            if let Some(shutdown) = shutdown {
                shutdown.graceful_shutdown();
            }
            (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "gracegate: request not received within {} s\n",
                    limit.timeout.as_secs_f64()
                ),
            )
                .into_response()
        }
    }
}

/// State of [`in_flight`]: the permits of one port.
#[derive(Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: usize,
    saturated: Arc<AtomicBool>,
    /// `Some` on the HTTPS port: a request refused is counted.
    metrics: Option<Arc<Metrics>>,
}

impl InFlight {
    pub fn new(max: usize, metrics: Option<Arc<Metrics>>) -> Self {
        InFlight {
            permits: Arc::new(Semaphore::new(max)),
            max,
            saturated: Arc::default(),
            metrics,
        }
    }

    /// A place for one request to `path`, held until the permit is dropped; `None` at the
    /// cap (counted, and logged once per episode of refusals).
    pub fn admit(&self, path: &str) -> Option<SemaphorePermit<'_>> {
        match self.permits.try_acquire() {
            Ok(permit) => {
                // Read first: the flag's cache line is only written after a refusal.
                if self.saturated.load(Ordering::Relaxed) {
                    self.saturated.store(false, Ordering::Relaxed);
                }
                Some(permit)
            }
            Err(_) => {
                if let Some(metrics) = &self.metrics {
                    metrics.refused(RefusedLabels::IN_FLIGHT);
                }
                if !self.saturated.swap(true, Ordering::Relaxed) {
                    warn!(
                        max_in_flight = self.max, %path,
                        "in-flight cap reached: requests are answered 503 until some finish"
                    );
                }
                None
            }
        }
    }
}

/// Middleware: a request beyond [`Limits::max_in_flight`] is answered 503 at once, with
/// `Retry-After: 1`, without its body being read. The API server fails open on a 503
/// (`failurePolicy: Ignore`) and says why in its log; the pod is never blocked.
pub async fn in_flight(State(cap): State<InFlight>, request: Request, next: Next) -> Response {
    match cap.admit(request.uri().path()) {
        Some(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        None => in_flight_refusal(&cap),
    }
}

/// The 503 for a request over the in-flight cap.
pub fn in_flight_refusal(cap: &InFlight) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "gracegate: over {} requests in flight (--max-in-flight); try again\n",
            cap.max
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Raise this process's soft limit on open files to its hard limit, as Go programs do at
/// start: containers often get a soft limit of 1024, below `--max-connections`. Returns the
/// soft limit now in force (`None` where it cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        #[repr(C)]
        struct Rlimit {
            cur: u64,
            max: u64,
        }
        unsafe extern "C" {
            fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
            fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
        }
        const RLIMIT_NOFILE: i32 = 7;
        let mut limit = Rlimit { cur: 0, max: 0 };
        // SAFETY: getrlimit and setrlimit only read or write the struct passed, whose layout
        // is the kernel's `struct rlimit` on 64-bit Linux (two 64-bit words), where
        // RLIMIT_NOFILE is 7.
        unsafe {
            if getrlimit(RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.cur < limit.max {
                let raised = Rlimit {
                    cur: limit.max,
                    max: limit.max,
                };
                if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
                    limit.cur = limit.max;
                }
            }
        }
        Some(limit.cur)
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn accepted_sockets_get_tcp_nodelay() {
        let (_client, server) = pair().await;
        assert!(!server.nodelay().unwrap(), "Linux default is Nagle on");
        let acceptor = TcpAcceptor {
            idle: Duration::from_secs(1),
            cap: ConnectionCap::new(1, None),
        };
        let (stream, ()) = acceptor.accept(server, ()).await.unwrap();
        assert!(stream.get_ref().nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_and_a_talking_one_is_not() {
        let (mut client, server) = pair().await;
        let mut stream = IdleStream::new(server, Duration::from_millis(300));
        let mut buf = [0u8; 8];
        // Bytes every 100 ms keep it open for longer than the idle limit.
        for _ in 0..6 {
            client.write_all(b"x").await.unwrap();
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = std::time::Instant::now();
        let error = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[test]
    fn the_cap_counts_open_connections_and_refusals() {
        let metrics = Arc::new(Metrics::default());
        let cap = ConnectionCap::new(2, Some(metrics.clone()));
        let first = cap.admit().expect("first");
        let second = cap.admit().expect("second");
        assert_eq!(metrics.webhook_connections.get(), 2);
        assert!(cap.admit().is_none(), "a third over a cap of 2");
        assert!(cap.admit().is_none());
        let refused = |limit| metrics.webhook_refused.get_or_create(&limit).get();
        assert_eq!(refused(RefusedLabels::CONNECTIONS), 2);
        assert_eq!(refused(RefusedLabels::IN_FLIGHT), 0);
        drop(first);
        assert_eq!(metrics.webhook_connections.get(), 1);
        let _third = cap.admit().expect("a place given back");
        drop((second, _third));
        assert_eq!(metrics.webhook_connections.get(), 0);
    }

    #[test]
    fn unspecified_ipv6_is_dual_stack() {
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        for client in ["127.0.0.1", "[::1]"] {
            std::net::TcpStream::connect(format!("{client}:{port}"))
                .unwrap_or_else(|e| panic!("{client}: {e}"));
        }
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let error = bind(addr).unwrap_err();
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
