//! The webhook's hard limits, on real sockets with real TLS clients: 1,000 stalled
//! connections do not slow reviews down, the connection and in-flight caps refuse what is
//! beyond them (a reset, a 503), HTTP/2 streams per connection are capped, and a review that
//! comes late changes nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use gracegate::webhook::conn::{Limits, Timeouts, raise_fd_limit};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::review_bytes;
use crate::ports::{Server, counter, get, post, send};

/// A metric's value from the exposition (`name` with its labels, as printed).
fn metric(server: &Server, name: &str) -> f64 {
    let text = server.running.context.metrics.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn open_connections(server: &Server) -> f64 {
    metric(server, "gracegate_webhook_connections")
}

fn refused(server: &Server, limit: &str) -> f64 {
    metric(
        server,
        &format!("gracegate_webhook_refused_total{{limit=\"{limit}\"}}"),
    )
}

/// Wait until `check` holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HTTP/1.1 headers announcing a review of `length` bytes.
fn head(length: usize) -> Vec<u8> {
    format!(
        "POST /mutate HTTP/1.1\r\nhost: gracegate\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// A TLS connection that has sent a review's headers and the first half of its body.
async fn mid_body(server: &Server) -> tokio_rustls::client::TlsStream<TcpStream> {
    let review = review_bytes("create-deployment-pod.json");
    let mut tls = server.tls(server.https("127.0.0.1"), b"http/1.1").await;
    tls.write_all(&head(review.len())).await.unwrap();
    tls.write_all(&review[..review.len() / 2]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// A real HTTPS client (hyper-util over hyper-rustls, HTTP/1.1) that opens a new
/// connection, TLS handshake included, for every request.
fn fresh_connection_client(
    server: &Server,
) -> Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let mut config = server.client_config(b"http/1.1");
    config.alpn_protocols.clear(); // hyper-rustls sets its own
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// 1,000 stalled connections on loopback: 400 that never send a byte, 400 stopped in the
/// middle of their TLS handshake (the ClientHello sent, the server's answer never taken up),
/// and 200 stopped in the middle of a review's body (fewer than the default 256 in flight:
/// each holds a place under `--max-in-flight`, and more would rightly get 503s). Meanwhile,
/// real reviews through a real TLS client are timed: each on a new connection (TLS handshake
/// included), and on one kept-alive HTTP/2 connection as the API server sends them.
///
/// The figure asserted is the **median** of 21 reviews of each kind, under 100 ms: the median
/// says what the admission path does while the stalls are open, where a single slow review
/// says more about a shared 2-core machine's scheduler. A review takes about a millisecond
/// here; if stalled connections cost the server work (polling, timers, a thread each), 1,000
/// of them would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_connections_do_not_slow_reviews_down() {
    // 1,000 client sockets and their 1,000 server sides in this one process, plus the rest:
    // more than the usual soft limit of 1024 open files. The server raises it to the hard
    // limit itself when it starts (as Go programs do); do it here first to say why if it
    // cannot be.
    let soft = raise_fd_limit().unwrap_or(u64::MAX);
    assert!(
        soft >= 2200,
        "the open-file limit is {soft}; this test needs ~2,100 (raise `ulimit -Hn`)"
    );
    // The default limits; timeouts long enough that nothing stalled is cut off while the
    // reviews are timed (the cutting off is ports::slow_and_silent_clients_are_cut_off...).
    let timeouts = Timeouts {
        header: Duration::from_secs(60),
        body: Duration::from_secs(60),
        idle: Duration::from_secs(60),
    };
    let server = Server::start_with("stalled", "127.0.0.1:0", timeouts, Limits::default()).await;
    let addr = server.https("127.0.0.1");

    // A ClientHello, made once: the server answers each copy with its own handshake.
    let mut hello = Vec::new();
    let mut client = rustls::ClientConnection::new(
        Arc::new(server.client_config(b"http/1.1")),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    client.write_tls(&mut hello).unwrap();

    let silent = join_all((0..400).map(|_| TcpStream::connect(addr))).await;
    let silent: Vec<TcpStream> = silent.into_iter().map(Result::unwrap).collect();
    let handshaking = join_all((0..400).map(|_| {
        let hello = hello.clone();
        async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&hello).await.unwrap();
            // The server's flight (ServerHello … Finished) arrives; the client never answers.
            let mut buf = [0u8; 1];
            tcp.read_exact(&mut buf).await.unwrap();
            tcp
        }
    }))
    .await;
    let mut bodies = Vec::new();
    for _ in 0..10 {
        bodies.extend(join_all((0..20).map(|_| mid_body(&server))).await);
    }
    let stalled = silent.len() + handshaking.len() + bodies.len();
    assert_eq!(stalled, 1000);
    eventually("the server holds all 1,000 connections", || {
        open_connections(&server) >= 1000.0
    })
    .await;

    let fresh = fresh_connection_client(&server);
    let uri = format!("https://127.0.0.1:{}/mutate", addr.port());
    let mut on_fresh = Vec::new();
    for _ in 0..21 {
        let request = hyper::Request::post(&uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(review_bytes(
                "create-deployment-pod.json",
            ))))
            .unwrap();
        let started = Instant::now();
        let response = fresh.request(request).await.unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        on_fresh.push(started.elapsed());
        assert_eq!(status, 200);
    }

    let tls = server.tls(addr, b"h2").await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut on_h2 = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        let response = sender
            .send_request(post(review_bytes("create-deployment-pod.json")))
            .await
            .unwrap();
        let status = response.status();
        response.into_body().collect().await.unwrap();
        on_h2.push(started.elapsed());
        assert_eq!(status, 200);
    }

    // Still all open: the reviews were timed with the 1,000 in place.
    assert!(open_connections(&server) >= 1000.0);
    assert_eq!(refused(&server, "connections"), 0.0);
    assert_eq!(refused(&server, "in_flight"), 0.0);
    let (fresh_median, h2_median) = (median(on_fresh.clone()), median(on_h2.clone()));
    eprintln!(
        "with 1,000 stalled connections: median review {fresh_median:?} on a new connection, \
         {h2_median:?} on a kept-alive HTTP/2 connection"
    );
    assert!(
        fresh_median < Duration::from_millis(100),
        "median review on a new connection {fresh_median:?}: {on_fresh:?}"
    );
    assert!(
        h2_median < Duration::from_millis(100),
        "median review on a kept-alive HTTP/2 connection {h2_median:?}: {on_h2:?}"
    );

    drop((silent, handshaking, bodies));
    eventually("closed connections give their places back", || {
        open_connections(&server) <= 1.0
    })
    .await;
    server.stop().await;
}

/// Whether a new connection to `port` is served: `/livez` on the admin port, a review on the
/// HTTPS port. `false` when it is reset.
async fn served_on(server: &Server, port: std::net::SocketAddr, admin: bool) -> bool {
    let Ok(tcp) = TcpStream::connect(port).await else {
        return false;
    };
    let attempt = async {
        if admin {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(conn);
            let response = sender.send_request(get("/livez")).await.ok()?;
            Some(response.status().as_u16())
        } else {
            let tls = TlsConnector::from(Arc::new(server.client_config(b"h2")))
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .ok()?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .ok()?;
            tokio::spawn(conn);
            let response = sender
                .send_request(post(review_bytes("create-deployment-pod.json")))
                .await
                .ok()?;
            Some(response.status().as_u16())
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(Some(status)) => {
            assert_eq!(status, 200);
            true
        }
        _ => false,
    }
}

#[tokio::test]
async fn beyond_the_connection_cap_connections_are_reset_on_both_ports() {
    let limits = Limits {
        max_connections: 3,
        ..Limits::default()
    };
    let server = Server::start_with("conn-cap", "127.0.0.1:0", Timeouts::default(), limits).await;
    for port in [server.https("127.0.0.1"), server.admin("127.0.0.1")] {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(port).await.unwrap());
        }
        let admin = port == server.admin("127.0.0.1");
        // The three are taken in (a task each, in any order) before the fourth comes.
        if admin {
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            eventually("3 connections held", || open_connections(&server) == 3.0).await;
        }
        // The fourth is accepted and reset at once (a reset may even fail the connect): it
        // ends without waiting for any timeout.
        let started = Instant::now();
        if let Ok(mut fourth) = TcpStream::connect(port).await {
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
                .await
                .expect("the connection over the cap was left open");
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "read {read:?} from a connection over the cap"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        // One closes: the next connection is served.
        held.pop();
        let served = async {
            while !served_on(&server, port, admin).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("a place under the cap was never given back");
        drop(held);
    }
    assert!(refused(&server, "connections") >= 1.0, "counted");
    eventually("the gauge comes back to 0", || {
        open_connections(&server) == 0.0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn beyond_the_in_flight_cap_a_review_is_answered_503() {
    let limits = Limits {
        max_in_flight: 2,
        ..Limits::default()
    };
    let server = Server::start_with("in-flight", "127.0.0.1:0", Timeouts::default(), limits).await;
    // Two reviews stopped mid-body hold both places.
    let stalled = vec![mid_body(&server).await, mid_body(&server).await];
    let review = review_bytes("create-deployment-pod.json");
    let refusal = async {
        loop {
            let tls = server.tls(server.https("127.0.0.1"), b"h2").await;
            let (status, body) = send(tls, true, post(review.clone())).await;
            if status == 503 {
                return String::from_utf8(body).unwrap();
            }
            // The stalled requests were not dispatched yet.
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(10), refusal)
        .await
        .expect("never refused");
    assert!(text.contains("over 2 requests in flight"), "{text}");
    assert!(text.contains("--max-in-flight"), "{text}");
    assert!(refused(&server, "in_flight") >= 1.0, "counted");
    // Not an admission outcome: no review was read.
    let exposition = server.running.context.metrics.encode();
    assert_eq!(counter(&exposition, "rejected"), 0);

    // Retry-After, over HTTP/1.1 this time.
    let tls = server.tls(server.https("127.0.0.1"), b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(post(review.clone())).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");

    // The stalled clients go away (the API server gave up): their places come back.
    drop(stalled);
    let served = async {
        loop {
            let tls = server.tls(server.https("127.0.0.1"), b"h2").await;
            if send(tls, true, post(review.clone())).await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("places never given back");
    server.stop().await;
}

type Frames = futures::channel::mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>;
type FrameSender = futures::channel::mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// A request body that sends `first`, then waits for the rest (which the test sends later
/// through the sender, or ends by dropping it).
fn held_body(first: Bytes) -> (FrameSender, hyper::Request<StreamBody<Frames>>) {
    let (sender, frames) = futures::channel::mpsc::unbounded();
    sender.unbounded_send(Ok(Frame::data(first))).unwrap();
    let request = hyper::Request::post("/mutate")
        .header("host", "gracegate")
        .header("content-type", "application/json")
        .body(StreamBody::new(frames))
        .unwrap();
    (sender, request)
}

#[tokio::test]
async fn http2_streams_per_connection_are_capped() {
    let limits = Limits {
        http2_max_streams: 2,
        ..Limits::default()
    };
    let server = Server::start_with("h2-streams", "127.0.0.1:0", Timeouts::default(), limits).await;
    let review = Bytes::from(review_bytes("create-deployment-pod.json"));
    let half = review.len() / 2;
    let tls = server.tls(server.https("127.0.0.1"), b"h2").await;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let whole = || {
        let (end, request) = held_body(review.clone());
        drop(end);
        request
    };
    // One whole review first, so the client has the server's SETTINGS.
    let response = sender.clone().send_request(whole()).await.unwrap();
    assert_eq!(response.status(), 200);

    // Two streams stop mid-body and hold both places on this connection.
    let mut open = Vec::new();
    for _ in 0..2 {
        let (rest, request) = held_body(review.slice(..half));
        let mut sender = sender.clone();
        let answer = tokio::spawn(async move { sender.send_request(request).await });
        open.push((rest, answer));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third waits for a place on this connection...
    let mut third_sender = sender.clone();
    let third = whole();
    let mut third = tokio::spawn(async move { third_sender.send_request(third).await });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut third)
            .await
            .is_err(),
        "a third stream was served beside two open ones"
    );
    // ...while another connection is served at once: the cap is per connection.
    let other = server.tls(server.https("127.0.0.1"), b"h2").await;
    assert_eq!(send(other, true, post(review.to_vec())).await.0, 200);

    // One stream completes its body: its answer comes, and then the third's.
    let (rest, answer) = open.remove(0);
    rest.unbounded_send(Ok(Frame::data(review.slice(half..))))
        .unwrap();
    drop(rest);
    let response = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("the completed stream was never answered")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third stream never got the freed place")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(open);
    server.stop().await;
}

/// The API server gives up on a review after the webhook's `timeoutSeconds` (5 s in
/// manifests/base) and admits the pod without gracegate's additions. The review may still
/// reach gracegate afterwards, or be abandoned half sent. gracegate only computes an answer:
/// no write, no cache change, nothing kept per request. So a late review is answered exactly
/// as a prompt one, one past the body timeout gets a 408, an abandoned one gives back its
/// place, and the next review's answer is unchanged. Scaled down: 1.5 s stands for the API
/// server's timeout, with a 2 s body timeout.
#[tokio::test]
async fn a_review_after_the_api_servers_timeout_does_no_harm() {
    let timeouts = Timeouts {
        header: Duration::from_secs(2),
        body: Duration::from_secs(2),
        idle: Duration::from_secs(10),
    };
    // One request in flight at a time: a place not given back would show as a 503.
    let limits = Limits {
        max_in_flight: 1,
        ..Limits::default()
    };
    let server = Server::start_with("late", "127.0.0.1:0", timeouts, limits).await;
    let review = review_bytes("create-deployment-pod.json");
    let prompt = async || {
        let tls = server.tls(server.https("127.0.0.1"), b"h2").await;
        send(tls, true, post(review.clone())).await
    };
    let (status, before) = prompt().await;
    assert_eq!(status, 200);

    // Late: the first half, 1.5 s of nothing, the rest; within the body timeout.
    let mut tls = mid_body(&server).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(&review[review.len() / 2..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let late = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((headers, body)) = text.split_once("\r\n\r\n")
                && let Some(length) = headers.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                && body.len() >= length.trim().parse::<usize>().unwrap()
            {
                return (headers.to_string(), body.as_bytes().to_vec());
            }
        }
    })
    .await
    .expect("the late review was never answered");
    assert!(late.0.starts_with("HTTP/1.1 200"), "{}", late.0);
    assert_eq!(late.1, before, "a late review is answered as a prompt one");

    // Too late: the body never completes within the body timeout.
    let mut tls = mid_body(&server).await;
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(6), tls.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    // Abandoned: the client closes half way (the API server gave up).
    drop(mid_body(&server).await);

    // Nothing changed: the same answer, and the one place in flight is free again.
    let served = async {
        loop {
            let (status, after) = prompt().await;
            if status == 200 {
                return after;
            }
            assert_eq!(status, 503, "only a place not yet given back may refuse");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let after = tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the abandoned review kept its place");
    assert_eq!(after, before);
    let exposition = server.running.context.metrics.encode();
    assert_eq!(counter(&exposition, "patched"), 3, "{exposition}");
    server.stop().await;
}
