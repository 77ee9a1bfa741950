//! The leader with 1,000 open drain waits: resident memory and CPU of a leader process (the
//! real HTTPS listener, the board, the real watcher loop over 1,000 terminating pods in 50
//! target groups, the fake ELBv2 in-process through the real SDK) while a load generator in
//! another process holds 1,000 long polls the way `gracegate-wait` does (a new TLS
//! connection per ask, `Connection: close`, asking again as soon as an answer comes); against
//! the same leader with no waits, in the same run. Every target stays `draining`, so no poll
//! is released: each is held its full 25 s and asked again.
//!
//!     cargo bench --bench drain_waits [-- ROUNDS [SECONDS]]

#[path = "../tests/support/fake_elb.rs"]
mod fake_elb;
#[allow(dead_code)]
#[path = "../tests/watcher/harness.rs"]
mod harness;

#[path = "support/proc_self.rs"]
mod proc_self;
use proc_self::rss_kib;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gracegate::waits::Board;
use gracegate::webhook::conn::{Limits, Timeouts};
use gracegate::webhook::server::{Options, start};
use gracegate::webhook::tls::CertFiles;
use gracegate::webhook::{Context, Health};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use harness::*;

const PODS: usize = 1000;
const GROUPS: usize = 50;
/// Connections and handshakes settle before the window opens.
const WARM_UP: Duration = Duration::from_secs(15);

fn ip(i: usize) -> String {
    format!("10.0.{}.{}", i / 250, i % 250)
}

/// User + system CPU of this process, seconds (`/proc/self/stat` in USER_HZ, 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start at `state`, field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// The leader: listener + board + watcher loop; prints `ready PORT DIR`, then after the
/// warm-up and the window `result RSS_KIB CPU_SECONDS OPEN_AT_START OPEN_AT_END`.
async fn leader(window: Duration) {
    let grace = 330;
    let deleted = Time(Timestamp::now() + SignedDuration::from_secs(grace));
    let pods = (0..PODS)
        .map(|i| {
            let mut p = pod(
                &format!("p{i}"),
                &ip(i),
                &format!("target-health.elbv2.k8s.aws/tgb-{}", i % GROUPS),
                Duration::from_secs(3600),
                json!([{ "type": format!("target-health.elbv2.k8s.aws/tgb-{}", i % GROUPS), "status": "True" }]),
            );
            p.metadata.deletion_timestamp = Some(deleted.clone());
            p.metadata.deletion_grace_period_seconds = Some(grace);
            p.spec.as_mut().unwrap().containers[0].lifecycle = Some(
                serde_json::from_value(json!({ "preStop": { "exec": { "command": [
                    "/.gracegate/gracegate-wait", "wait", "--max-seconds", "300"
                ] } } }))
                .unwrap(),
            );
            p
        })
        .collect();
    let s = setup_with(pods, cluster(GROUPS, false), None, elb_options()).await;
    for g in 0..GROUPS {
        s.fake
            .add_target_group(&format!("arn:tg/{g}"), &format!("tg-{g}"));
    }
    for i in 0..PODS {
        s.fake.set_health(
            &format!("arn:tg/{}", i % GROUPS),
            &ip(i),
            80,
            "draining",
            Some("Target.DeregistrationInProgress"),
            None,
        );
    }
    let board = Arc::new(Board::new(2048, s.metrics.clone()));
    let dir = std::env::temp_dir().join(format!("gracegate-bench-waits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = gracegate::certs::generate("gracegate", "gracegate-system", 1).unwrap();
    gracegate::certs::write(&bundle, &dir).unwrap();
    let health = Health::default();
    health.tls_loaded.store(true, Ordering::Release);
    let context = Context {
        settings: Arc::new(gracegate::inject::Settings::default()),
        cluster: cluster(GROUPS, false),
        metrics: s.metrics.clone(),
        health: Arc::new(health),
        waits: board.clone(),
    };
    let options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        cert: CertFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        cert_reload: Duration::from_secs(60),
        timeouts: Timeouts::default(),
        limits: Limits::default(),
    };
    let running = start(options, context).await.unwrap();
    let watcher = s
        .watcher
        .with_drain_waits(board.clone(), SignedDuration::from_secs(2));
    let _watching = tokio::spawn(watcher.run());
    println!("ready {} {}", running.addr.port(), dir.display());

    tokio::time::sleep(WARM_UP).await;
    let (rss0, cpu0, open0) = (rss_kib(), cpu_seconds(), board.open());
    tokio::time::sleep(window).await;
    let (rss1, cpu1, open1) = (rss_kib(), cpu_seconds(), board.open());
    println!(
        "result {} {:.2} {open0} {open1} {}",
        rss0.max(rss1),
        cpu1 - cpu0,
        s.fake.calls("DescribeTargetHealth")
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::process::exit(0);
}

/// The load generator: `n` slots, each asking like `gracegate-wait` does, forever.
async fn load(port: u16, dir: PathBuf, n: usize) {
    gracegate::webhook::conn::raise_fd_limit();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let answered = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let (connector, answered) = (connector.clone(), answered.clone());
        tokio::spawn(async move {
            let request = format!(
                "GET /drain/v1/namespaces/{NS}/pods/p{i}?uid=uid-p{i}&timeout=25 HTTP/1.1\r\n\
                 Host: 127.0.0.1:{port}\r\nUser-Agent: bench\r\nAccept: application/json\r\n\
                 Connection: close\r\n\r\n"
            );
            loop {
                let asked = async {
                    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
                    let name = ServerName::try_from("127.0.0.1").unwrap();
                    let mut tls = connector.connect(name, tcp).await?;
                    tls.write_all(request.as_bytes()).await?;
                    let mut answer = Vec::new();
                    tls.read_to_end(&mut answer).await?;
                    Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
                };
                match asked.await {
                    Ok(true) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // As the waiter: back off on anything but an answer.
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
    }
    std::future::pending::<()>().await;
}

struct Row {
    mode: &'static str,
    rss_kib: u64,
    cpu: f64,
    open: (usize, usize),
    describes: u64,
}

fn run(exe: &Path, mode: &'static str, window: Duration) -> Row {
    let mut leader = Command::new(exe)
        .args(["leader", &window.as_secs().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(leader.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let f: Vec<&str> = ready.split_whitespace().collect();
    let load = (mode == "1000 waits").then(|| {
        Command::new(exe)
            .args(["load", f[1], f[2], &PODS.to_string()])
            .spawn()
            .unwrap()
    });
    let result = lines.next().unwrap().unwrap();
    let _ = leader.wait();
    if let Some(mut load) = load {
        let _ = load.kill();
        let _ = load.wait();
    }
    let f: Vec<&str> = result.split_whitespace().collect();
    Row {
        mode,
        rss_kib: f[1].parse().unwrap(),
        cpu: f[2].parse().unwrap(),
        open: (f[3].parse().unwrap(), f[4].parse().unwrap()),
        describes: f[5].parse().unwrap(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = || tokio::runtime::Runtime::new().unwrap();
    match args.get(1).map(String::as_str) {
        Some("leader") => {
            let window = Duration::from_secs(args[2].parse().unwrap());
            return runtime().block_on(leader(window));
        }
        Some("load") => {
            let (port, dir, n) = (
                args[2].parse().unwrap(),
                args[3].clone().into(),
                args[4].parse().unwrap(),
            );
            return runtime().block_on(load(port, dir, n));
        }
        _ => {}
    }
    // `cargo bench` passes `--bench`; numbers after it are ours.
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let rounds = numbers.first().copied().unwrap_or(3);
    let window = Duration::from_secs(numbers.get(1).copied().unwrap_or(30));
    let exe = PathBuf::from(&args[0]);
    println!(
        "drain waits: leader with {PODS} terminating pods over {GROUPS} target groups; \
         {}s warm-up, {}s window",
        WARM_UP.as_secs(),
        window.as_secs()
    );
    println!(
        "| round | mode | RSS | CPU in the window | CPU share of one core | waits open (start, end) | DescribeTargetHealth calls |"
    );
    println!("|---|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for mode in ["idle", "1000 waits"] {
            let r = run(&exe, mode, window);
            println!(
                "| {round} | {} | {:.1} MiB | {:.2} s | {:.1} % | {}, {} | {} |",
                r.mode,
                r.rss_kib as f64 / 1024.0,
                r.cpu,
                100.0 * r.cpu / window.as_secs_f64(),
                r.open.0,
                r.open.1,
                r.describes
            );
        }
    }
}
