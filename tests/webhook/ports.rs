//! Both ports as a client sees them: dual-stack defaults, 413 over HTTP/1.1 and HTTP/2
//! (answered without reading the body whole, counted), the same header, body and idle timeouts on the HTTPS and the admin
//! port, and health bodies that end with a newline. Real sockets, real TLS clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gracegate::certs::{self, Bundle};
use gracegate::inject::Settings;
use gracegate::webhook::MAX_BODY_BYTES;
use gracegate::webhook::conn::{Limits, Timeouts};
use gracegate::webhook::server::{Options, Running, start};
use gracegate::webhook::tls::CertFiles;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Bytes;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::{context, review_bytes};

pub(crate) struct Server {
    pub(crate) running: Running,
    bundle: Bundle,
    dir: PathBuf,
}

impl Server {
    pub(crate) async fn start(name: &str, listen: &str, timeouts: Timeouts) -> Server {
        Server::start_with(name, listen, timeouts, Limits::default()).await
    }

    pub(crate) async fn start_with(
        name: &str,
        listen: &str,
        timeouts: Timeouts,
        limits: Limits,
    ) -> Server {
        let dir =
            std::env::temp_dir().join(format!("gracegate-ports-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bundle = certs::generate("gracegate", "gracegate-system", 1).unwrap();
        certs::write(&bundle, &dir).unwrap();
        let options = Options {
            listen: listen.parse().unwrap(),
            admin_listen: listen.parse().unwrap(),
            cert: CertFiles {
                cert: dir.join("tls.crt"),
                key: dir.join("tls.key"),
            },
            cert_reload: Duration::from_secs(60),
            timeouts,
            limits,
        };
        let running = start(options, context(Settings::default())).await.unwrap();
        Server {
            running,
            bundle,
            dir,
        }
    }

    pub(crate) fn https(&self, host: &str) -> SocketAddr {
        format!("{host}:{}", self.running.addr.port())
            .parse()
            .unwrap()
    }

    pub(crate) fn admin(&self, host: &str) -> SocketAddr {
        format!("{host}:{}", self.running.admin_addr.port())
            .parse()
            .unwrap()
    }

    /// A TLS client config that trusts only this server's CA, offering `alpn`.
    pub(crate) fn client_config(&self, alpn: &[u8]) -> rustls::ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.bundle.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        config
    }

    /// A TLS connection that trusts only this server's CA, offering `alpn`.
    pub(crate) async fn tls(
        &self,
        addr: SocketAddr,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let config = self.client_config(alpn);
        let tcp = TcpStream::connect(addr).await.unwrap();
        // As the API server's (Go's) connections: no Nagle, so a request's HEADERS and DATA
        // frames do not wait for the delayed ACK of each other.
        tcp.set_nodelay(true).unwrap();
        let name = if addr.is_ipv4() {
            "127.0.0.1"
        } else {
            "localhost"
        };
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(name).unwrap(), tcp)
            .await
            .unwrap()
    }

    pub(crate) fn rejected(&self) -> u64 {
        counter(&self.running.context.metrics.encode(), "rejected")
    }

    pub(crate) async fn stop(self) {
        self.running.shutdown(Duration::ZERO).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn counter(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!("gracegate_admission_requests_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// One request on its own HTTP/1.1 or HTTP/2 connection over `io`.
pub(crate) async fn send<IO, B>(io: IO, h2: bool, request: hyper::Request<B>) -> (u16, Vec<u8>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await
    };
    let response = response.unwrap_or_else(|e| panic!("h2={h2}: {e:?}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

pub(crate) fn post(body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/mutate")
        .header("host", "gracegate")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

pub(crate) fn get(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::get(path)
        .header("host", "gracegate")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn health_bodies_end_with_a_newline() {
    let server = Server::start("health", "127.0.0.1:0", Timeouts::default()).await;
    for path in ["/livez", "/readyz"] {
        let tcp = TcpStream::connect(server.admin("127.0.0.1")).await.unwrap();
        let (status, body) = send(tcp, false, get(path)).await;
        assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]), "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_default_listen_address_serves_ipv4_and_ipv6() {
    // `[::]`, the flags' default, bound dual-stack.
    let server = Server::start("dual", "[::]:0", Timeouts::default()).await;
    for host in ["127.0.0.1", "[::1]"] {
        let tls = server.tls(server.https(host), b"h2").await;
        let (status, _) = send(tls, true, post(review_bytes("create-deployment-pod.json"))).await;
        assert_eq!(status, 200, "HTTPS over {host}");
        let tcp = TcpStream::connect(server.admin(host)).await.unwrap();
        let (status, _) = send(tcp, false, get("/livez")).await;
        assert_eq!(status, 200, "admin over {host}");
    }
    server.stop().await;
}

/// Read what the server answers until it closes, for at most `within`.
async fn answer_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The default body timeout is 10 s: a server that waited for (more of) the body would answer
/// 408 then, not 413 within this.
const PROMPTLY: Duration = Duration::from_secs(3);

#[tokio::test]
async fn an_announced_oversized_body_is_refused_unread() {
    let server = Server::start("413-announced", "127.0.0.1:0", Timeouts::default()).await;
    // Headers only: the 4 MiB the Content-Length announces never come.
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: gracegate\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        4 * 1024 * 1024
    );
    let mut tls = server.tls(server.https("127.0.0.1"), b"http/1.1").await;
    tls.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let answer = answer_within(&mut tls, PROMPTLY).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("over 3145728 bytes"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // answer_within returned before PROMPTLY: the server closed the connection after answering.
    assert!(started.elapsed() < PROMPTLY, "connection left open");
    assert_eq!(server.rejected(), 1, "counted");
    server.stop().await;
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_once_past_the_limit() {
    let server = Server::start("413-chunked", "127.0.0.1:0", Timeouts::default()).await;
    let mut tls = server.tls(server.https("127.0.0.1"), b"http/1.1").await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nhost: gracegate\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    // One byte over the limit in 64 KiB chunks, then nothing: no last chunk ever comes.
    let mut left = MAX_BODY_BYTES + 1;
    while left > 0 {
        let n = left.min(64 * 1024);
        let mut chunk = format!("{n:x}\r\n").into_bytes();
        chunk.extend(std::iter::repeat_n(b'x', n));
        chunk.extend_from_slice(b"\r\n");
        tls.write_all(&chunk).await.unwrap();
        left -= n;
    }
    tls.flush().await.unwrap();
    let answer = answer_within(&mut tls, PROMPTLY).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert_eq!(server.rejected(), 1, "counted");
    server.stop().await;
}

#[tokio::test]
async fn an_http2_body_is_cut_off_once_past_the_limit() {
    let server = Server::start("413-h2", "127.0.0.1:0", Timeouts::default()).await;
    let tls = server.tls(server.https("127.0.0.1"), b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // One byte over the limit, and the stream is never ended: `body` stays open.
    let (body, frames) =
        futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::convert::Infallible>>();
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..MAX_BODY_BYTES / chunk.len() {
        body.unbounded_send(Ok(Frame::data(chunk.clone()))).unwrap();
    }
    body.unbounded_send(Ok(Frame::data(Bytes::from_static(b"x"))))
        .unwrap();
    let request = hyper::Request::post("/mutate")
        .header("host", "gracegate")
        .header("content-type", "application/json")
        .body(StreamBody::new(frames))
        .unwrap();
    let response = tokio::time::timeout(PROMPTLY, sender.send_request(request))
        .await
        .expect("no answer while the body is still open")
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(server.rejected(), 1, "counted");
    // The connection itself is still good for the next review.
    let (end, frames) = futures::channel::mpsc::unbounded();
    end.unbounded_send(Ok(Frame::data(Bytes::from(review_bytes(
        "create-deployment-pod.json",
    )))))
    .unwrap();
    drop(end);
    let request = hyper::Request::post("/mutate")
        .header("host", "gracegate")
        .header("content-type", "application/json")
        .body(StreamBody::new(frames))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(body);
    server.stop().await;
}

/// Write `bytes` one at a time, `gap` apart, until the server closes; returns what it
/// answered and when the connection ended (from the first byte written).
async fn trickle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &[u8],
    trickled: &[u8],
    gap: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let mut next = trickled.iter();
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(gap) => {
                if let Some(b) = next.next()
                    && stream.write_all(&[*b]).await.is_err()
                {
                    break;
                }
            },
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
    }
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

const SHORT: Timeouts = Timeouts {
    header: Duration::from_millis(400),
    body: Duration::from_millis(400),
    idle: Duration::from_millis(800),
};

/// Between `at_least` and a generous upper bound for a shared 2-core machine.
fn around(elapsed: Duration, at_least: Duration) {
    assert!(
        elapsed >= at_least.mul_f32(0.9) && elapsed < at_least + Duration::from_secs(3),
        "closed after {elapsed:?}, expected about {at_least:?}"
    );
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off_on_both_ports() {
    let server = Server::start("slow", "127.0.0.1:0", SHORT).await;
    let slow_head = b"GET /livez HTTP/1.1\r\nhost: gracegate\r\nx-slow: ";
    let trickled = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let gap = Duration::from_millis(50);

    // Header timeout: a silent new connection, and headers sent a byte at a time.
    let (_, silent) = trickle(
        TcpStream::connect(server.admin("127.0.0.1")).await.unwrap(),
        b"",
        b"",
        gap,
    )
    .await;
    around(silent, SHORT.header);
    let (_, silent_tls) = trickle(
        server.tls(server.https("127.0.0.1"), b"http/1.1").await,
        b"",
        b"",
        gap,
    )
    .await;
    around(silent_tls, SHORT.header);
    let (_, slow) = trickle(
        TcpStream::connect(server.admin("127.0.0.1")).await.unwrap(),
        slow_head,
        trickled,
        gap,
    )
    .await;
    around(slow, SHORT.header);
    let (_, slow_tls) = trickle(
        server.tls(server.https("127.0.0.1"), b"http/1.1").await,
        slow_head,
        trickled,
        gap,
    )
    .await;
    around(slow_tls, SHORT.header);

    // Body timeout: headers at once, the body a byte at a time: 408, then closed.
    let rejected = server.rejected();
    let head = b"POST /mutate HTTP/1.1\r\nhost: gracegate\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    let (answer, took) = trickle(
        server.tls(server.https("127.0.0.1"), b"http/1.1").await,
        head,
        trickled,
        gap,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    around(took, SHORT.body);
    assert_eq!(
        server.rejected(),
        rejected + 1,
        "a cut-off review is counted"
    );
    let (answer, took) = trickle(
        TcpStream::connect(server.admin("127.0.0.1")).await.unwrap(),
        &head.replace_path(b"/livez"),
        trickled,
        gap,
    )
    .await;
    // The admin port reads no bodies: it answers at once, and still closes the connection
    // within the body timeout rather than waiting for the rest.
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(took < SHORT.body + Duration::from_secs(3), "{took:?}");

    // Idle timeout: a kept-alive connection with nothing more to say, on both ports.
    let keep_alive = b"GET /livez HTTP/1.1\r\nhost: gracegate\r\n\r\n";
    let (answer, idle) = trickle(
        TcpStream::connect(server.admin("127.0.0.1")).await.unwrap(),
        keep_alive,
        b"",
        gap,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    around(idle, SHORT.idle);
    let review = review_bytes("create-deployment-pod.json");
    let mut request = format!(
        "POST /mutate HTTP/1.1\r\nhost: gracegate\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        review.len()
    )
    .into_bytes();
    request.extend_from_slice(&review);
    let (answer, idle_tls) = trickle(
        server.tls(server.https("127.0.0.1"), b"http/1.1").await,
        &request,
        b"",
        gap,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    around(idle_tls, SHORT.idle);

    // HTTP/2: an idle connection after a review is closed too.
    let tls = server.tls(server.https("127.0.0.1"), b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let started = Instant::now();
    let conn = tokio::spawn(conn);
    let response = sender.send_request(post(review)).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("HTTP/2 connection never closed");
    around(started.elapsed(), SHORT.idle);

    server.stop().await;
}

trait ReplacePath {
    fn replace_path(&self, path: &[u8]) -> Vec<u8>;
}

impl ReplacePath for [u8] {
    fn replace_path(&self, path: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(self);
        text.replacen("/mutate", &String::from_utf8_lossy(path), 1)
            .into_bytes()
    }
}
