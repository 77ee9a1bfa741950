//! What the waiter's integration tests share: certificates, a scripted HTTPS server, plain
//! TCP misbehaviours, a test name server, and running the waiter binary.
#![allow(dead_code)] // each test crate uses its own part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

pub const POD_NAME: &str = "web-7d9f8-x2x9z";
pub const POD_NAMESPACE: &str = "shop";
pub const POD_UID: &str = "5f0c3a52-6f4e-4b8e-9f51-3c1b2f0e7a11";

/// The pod identity as the webhook injects it (fieldRef env vars).
pub fn pod_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GRACEGATE_POD_NAME", POD_NAME),
        ("GRACEGATE_POD_NAMESPACE", POD_NAMESPACE),
        ("GRACEGATE_POD_UID", POD_UID),
    ]
}

/// A CA and a serving certificate it signs for `names` (DNS names or IP addresses).
pub struct Pki {
    pub ca_pem: String,
    pub server: Arc<ServerConfig>,
}

impl Pki {
    pub fn new(names: &[&str]) -> Pki {
        // Each CA its own name: another CA's certificate is then of an unknown issuer (one
        // of the same name and another key would fail on its signature instead).
        static N: AtomicUsize = AtomicUsize::new(0);
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("gracegate test CA {}", N.fetch_add(1, Ordering::SeqCst)),
        );
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca, &ca_key);

        let mut leaf = CertificateParams::default();
        leaf.subject_alt_names = names
            .iter()
            .map(|name| match name.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().unwrap()),
            })
            .collect();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let chain = vec![CertificateDer::from_pem_slice(leaf_cert.pem().as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }
}

/// What the scripted server does with one request.
pub enum Act {
    /// Answer after `delay`; the connection is closed after the response.
    Respond {
        delay: Duration,
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request, never answer (until the waiter gives up).
    Hang,
}

impl Act {
    pub fn json(status: u16, body: impl Into<String>) -> Act {
        Act::Respond {
            delay: Duration::ZERO,
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.into(),
        }
    }

    pub fn release(uid: &str) -> Act {
        Act::json(
            200,
            format!(
                r#"{{"release":true,"uid":"{uid}","reason":"targets-gone","waitedSeconds":1.5}}"#
            ),
        )
    }

    pub fn not_leader() -> Act {
        Act::Respond {
            delay: Duration::ZERO,
            status: 503,
            headers: vec![
                ("Content-Type", "application/json".into()),
                ("Retry-After", "1".into()),
                ("Connection", "close".into()),
            ],
            body: r#"{"release":false,"reason":"not-leader"}"#.into(),
        }
    }

    pub fn after(mut self, pause: Duration) -> Act {
        if let Act::Respond { delay, .. } = &mut self {
            *delay = pause;
        }
        self
    }
}

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The request line and headers, as sent.
    pub head: String,
    /// The TLS server name the client sent (SNI), if any.
    pub sni: Option<String>,
    pub received: Instant,
    /// When the response was sent, if one was.
    pub answered: Option<Instant>,
}

/// A server on a loopback port: TLS with a script, or plain TCP misbehaving.
pub struct Server {
    pub addr: SocketAddr,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    /// HTTPS on `bind` (port 0 for any), answering the n-th request (from 0) with
    /// `script(n, request)`.
    pub fn https(
        pki: &Pki,
        bind: &str,
        script: impl Fn(usize, &Request) -> Act + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind(bind).unwrap();
        Server::https_on(pki, listener, script)
    }

    pub fn https_on(
        pki: &Pki,
        listener: TcpListener,
        script: impl Fn(usize, &Request) -> Act + Send + Sync + 'static,
    ) -> Server {
        let server = Server::new(&listener);
        let (config, script) = (pki.server.clone(), Arc::new(script));
        let (connections, requests) = (server.connections.clone(), server.requests.clone());
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let (config, script, requests) = (config.clone(), script.clone(), requests.clone());
                thread::spawn(move || serve(tcp, config, &*script, &requests));
            }
        });
        server
    }

    /// Plain TCP: each accepted connection is handed to `on_accept` on its own thread.
    pub fn tcp(on_accept: fn(TcpStream)) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::new(&listener);
        let connections = server.connections.clone();
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || on_accept(tcp));
            }
        });
        server
    }

    fn new(listener: &TcpListener) -> Server {
        Server {
            addr: listener.local_addr().unwrap(),
            connections: Arc::new(AtomicUsize::new(0)),
            requests: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn url(&self) -> String {
        match self.addr {
            SocketAddr::V4(v4) => format!("https://{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => format!("https://[{}]:{}", v6.ip(), v6.port()),
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    script: &(dyn Fn(usize, &Request) -> Act + Send + Sync),
    requests: &Mutex<Vec<Request>>,
) {
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            // A handshake the client broke off (wrong CA), or a closed connection.
            _ => return,
        }
    }
    let mut request = Request {
        head: String::from_utf8_lossy(&head).into_owned(),
        sni: tls.conn.server_name().map(str::to_string),
        received: Instant::now(),
        answered: None,
    };
    let n = {
        let mut all = requests.lock().unwrap();
        all.push(request.clone());
        all.len() - 1
    };
    match script(n, &request) {
        Act::Hang => thread::sleep(Duration::from_secs(120)),
        Act::Respond {
            delay,
            status,
            headers,
            body,
        } => {
            thread::sleep(delay);
            let mut response = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
            for (name, value) in headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            if tls
                .write_all(response.as_bytes())
                .and_then(|()| tls.flush())
                .is_ok()
            {
                request.answered = Some(Instant::now());
                requests.lock().unwrap()[n] = request;
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

/// A free loopback port with nothing listening on it (connections are refused).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gracegate-wait-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished waiter.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub stderr: String,
    /// What it copied to "PID 1's stderr" (a file here).
    pub copy: String,
}

impl Run {
    /// Exited 0 at its deadline of `seconds`: not before, and not much after.
    pub fn assert_deadline(&self, seconds: u64) {
        let deadline = Duration::from_secs(seconds);
        assert!(self.status.success(), "{self:#?}");
        assert!(
            self.elapsed >= deadline,
            "ended before the deadline: {self:#?}"
        );
        assert!(
            self.elapsed < deadline + Duration::from_secs(2),
            "ended late: {self:#?}"
        );
        assert!(
            self.stderr
                .ends_with(&format!("deadline of {seconds}s reached; stopping\n")),
            "{self:#?}"
        );
    }

    /// Exited 0 on a release, within `within`.
    pub fn assert_released(&self, within: Duration) {
        assert!(self.status.success(), "{self:#?}");
        assert!(self.elapsed < within, "{self:#?}");
        assert!(self.stderr.contains("released after "), "{self:#?}");
    }
}

/// The waiter binary of this build.
pub fn waiter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gracegate-wait"))
}

/// Runs `bin` with `args` and only `env` (plus the log-copy hook) until it exits.
pub fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let scratch = Scratch::new("run");
    let copy = scratch.path("pid1-stderr");
    std::fs::write(&copy, "").unwrap();
    let started = Instant::now();
    let output = Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .env("GRACEGATE_WAIT_PID1_STDERR", &copy)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    Run {
        status: output.status,
        elapsed,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        copy: std::fs::read_to_string(&copy).unwrap(),
    }
}

/// `gracegate-wait wait --url URL --max-seconds N --ca PEM` with the pod's env.
pub fn wait(url: &str, seconds: u64, ca_pem: &str) -> Run {
    run(
        &waiter_bin(),
        &[
            "wait",
            "--url",
            url,
            "--max-seconds",
            &seconds.to_string(),
            "--ca",
            ca_pem,
        ],
        &pod_env(),
    )
}

/// A name server for tests: answers `A` questions for `name` with `address` (over TCP only
/// when `truncate_udp`: the UDP answer is truncated), NODATA for its AAAA, NXDOMAIN for
/// every other name. Records "name type udp|tcp" per question.
pub struct NameServer {
    pub asked: Arc<Mutex<Vec<String>>>,
}

impl NameServer {
    pub fn start(
        udp: UdpSocket,
        tcp: TcpListener,
        name: &str,
        address: [u8; 4],
        truncate_udp: bool,
    ) -> NameServer {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let name = name.to_string();
        {
            let (asked, name) = (asked.clone(), name.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok((len, from)) = udp.recv_from(&mut buf) {
                    let query = &buf[..len];
                    let (qname, qtype) = question(query);
                    asked.lock().unwrap().push(format!("{qname} {qtype} udp"));
                    let mut reply = dns_answer(query, &qname, qtype, &name, address);
                    if truncate_udp && qname == name && qtype == 1 {
                        reply.truncate(len); // the question only
                        reply[2] |= 0x02; // TC
                        reply[6..8].copy_from_slice(&[0, 0]);
                    }
                    let _ = udp.send_to(&reply, from);
                }
            });
        }
        {
            let asked = asked.clone();
            thread::spawn(move || {
                for stream in tcp.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let mut len = [0u8; 2];
                    if stream.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                    if stream.read_exact(&mut query).is_err() {
                        continue;
                    }
                    let (qname, qtype) = question(&query);
                    asked.lock().unwrap().push(format!("{qname} {qtype} tcp"));
                    let reply = dns_answer(&query, &qname, qtype, &name, address);
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    let _ = stream.write_all(&framed);
                }
            });
        }
        NameServer { asked }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

fn question(query: &[u8]) -> (String, u16) {
    let mut at = 12;
    let mut labels = Vec::new();
    while at < query.len() && query[at] != 0 {
        let len = query[at] as usize;
        labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + len]).to_ascii_lowercase());
        at += 1 + len;
    }
    (
        labels.join("."),
        u16::from_be_bytes([query[at + 1], query[at + 2]]),
    )
}

fn dns_answer(query: &[u8], qname: &str, qtype: u16, name: &str, address: [u8; 4]) -> Vec<u8> {
    let mut reply = query.to_vec();
    reply[2] |= 0x80; // QR
    reply[3] = 0x80; // RA, NOERROR
    if qname != name {
        reply[3] |= 3; // NXDOMAIN
    } else if qtype == 1 {
        reply[7] = 1; // one answer: the name (a pointer to the question), A, IN, TTL 5
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
        reply.extend_from_slice(&address);
    }
    reply
}

/// Whether the ELF file at `path` asks for a program interpreter (a dynamic loader):
/// a static executable has no PT_INTERP program header.
pub fn has_interpreter(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    assert_eq!(elf[5], 1, "not little-endian");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP)
}
