//! What both listeners do with a connection: bind dual-stack, `TCP_NODELAY`, and the same
//! header, body and idle timeouts on the HTTPS port and the admin port.
//!
//! * **Nagle**: an answer is written right after the request is read; with Nagle's algorithm
//!   on, its last segment waits for the client's delayed ACK (40 ms on Linux) on a fresh
//!   connection. The API server opens new connections whenever its pool turns over, so every
//!   accepted socket gets `TCP_NODELAY` (BENCHMARKS.md, "First review on a fresh connection").
//! * **Header timeout**: a new connection must deliver a request's headers within
//!   [`Timeouts::header`] (axum-server's first-request timeout, both HTTP/1.1 and HTTP/2).
//! * **Body timeout**: from a request's headers to its answer, the body included, at most
//!   [`Timeouts::body`]; else 408 and the connection is closed ([`request_timeout`]).
//! * **Idle timeout**: a connection the client sends nothing on for [`Timeouts::idle`] is
//!   closed ([`IdleStream`]); on HTTP/1.1 hyper also bounds the wait for the next request's
//!   headers by it. Longer than the API server's HTTP/2 health-check pings (30 s), so its
//!   live connections are never cut.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_server::ConnectionShutdown;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::{info, warn};

use crate::metrics::{Metrics, Outcome};
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

/// axum-server acceptor for both ports: `TCP_NODELAY` and the idle limit on every socket,
/// before TLS on the HTTPS port.
#[derive(Clone, Copy, Debug)]
pub struct TcpAcceptor {
    pub idle: Duration,
}

impl<S> Accept<TcpStream, S> for TcpAcceptor {
    type Stream = IdleStream<TcpStream>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(
            stream
                .set_nodelay(true)
                .map(|()| (IdleStream::new(stream, self.idle), service)),
        )
    }
}

/// A stream whose reads fail with `TimedOut` once nothing has been received for `idle`.
/// Only reads count: a client that sends nothing is idle, whatever the server still writes.
pub struct IdleStream<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleStream<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        IdleStream {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
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
    match tokio::time::timeout(limit.timeout, next.run(request)).await {
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
