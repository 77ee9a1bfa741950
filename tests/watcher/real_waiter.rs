//! The drain wait end to end: the real `gracegate-wait` binary against a real gracegate
//! HTTPS listener (certificates as `gracegate certs` makes them), whose board the real
//! watcher loop leads, describing the fake ELBv2 through the real SDK.
//!
//! Ignored by a plain `cargo test` (which builds no waiter); `make test` runs it with
//! `--ignored` and GRACEGATE_WAIT_BIN set to the waiter `make waiter` built.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gracegate::certs;
use gracegate::inject::Settings;
use gracegate::metrics::Metrics;
use gracegate::waits::{Board, DEFAULT_MAX_WAITS};
use gracegate::webhook::conn::{Limits, Timeouts};
use gracegate::webhook::server::{Options, Running, start};
use gracegate::webhook::tls::CertFiles;
use gracegate::webhook::{Context, Health};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::harness::*;

fn waiter_bin() -> PathBuf {
    PathBuf::from(std::env::var_os("GRACEGATE_WAIT_BIN").expect(
        "GRACEGATE_WAIT_BIN is not set: `make test` builds the waiter and sets it \
         (by hand: `make waiter`, then GRACEGATE_WAIT_BIN=$(make -s waiter-path))",
    ))
}

/// A terminating pod (deleted now, 330 s grace), its gate True: its target was registered.
fn terminating(name: &str, ip: &str) -> Pod {
    let mut p = pod(
        name,
        ip,
        GATE,
        Duration::from_secs(3600),
        json!([{ "type": GATE, "status": "True" }]),
    );
    let grace = 330;
    let deadline = Timestamp::now() + SignedDuration::from_secs(grace);
    p.metadata.deletion_timestamp = Some(Time(deadline));
    p.metadata.deletion_grace_period_seconds = Some(grace);
    p
}

/// A gracegate HTTPS listener on 127.0.0.1 answering drain waits from `board`.
async fn listener(name: &str, board: Arc<Board>, metrics: Arc<Metrics>) -> (Running, PathBuf) {
    let dir = std::env::temp_dir().join(format!("gracegate-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = certs::generate("gracegate", "gracegate-system", 1).unwrap();
    certs::write(&bundle, &dir).unwrap();
    let health = Health::default();
    health
        .tls_loaded
        .store(true, std::sync::atomic::Ordering::Release);
    let context = Context {
        settings: Arc::new(Settings::default()),
        cluster: cluster(0, false),
        metrics,
        health: Arc::new(health),
        waits: board,
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
    (start(options, context).await.unwrap(), dir)
}

/// `gracegate-wait wait` for pod `name` of [`NS`] at `port`, trusting `dir`'s CA.
fn waiter(port: u16, dir: &std::path::Path, name: &str, max_seconds: u64) -> Child {
    Command::new(waiter_bin())
        .args(["wait", "--url", &format!("https://127.0.0.1:{port}")])
        .args(["--max-seconds", &max_seconds.to_string()])
        .arg("--ca-file")
        .arg(dir.join("ca.crt"))
        .args(["--pod-name", name, "--pod-namespace", NS])
        .args(["--pod-uid", &format!("uid-{name}")])
        // No copy of the log lines to PID 1's stderr: this is not a container.
        .env("GRACEGATE_WAIT_PID1_STDERR", "")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait (without blocking the runtime) for `child` to exit, at most `limit`; its stderr.
async fn exited(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status, stderr);
        }
        assert!(started.elapsed() < limit, "still running after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the waiter: `make test` runs this with GRACEGATE_WAIT_BIN=…"]
async fn the_real_waiter_stops_soon_after_its_target_leaves_and_waits_while_it_does_not() {
    let pods = vec![
        terminating("leaving", "10.0.2.1"),
        terminating("staying", "10.0.2.2"),
    ];
    let s = setup(pods, cluster(0, false), None).await;
    for ip in ["10.0.2.1", "10.0.2.2"] {
        s.fake.set_health(
            ARN,
            ip,
            80,
            "draining",
            Some("Target.DeregistrationInProgress"),
            None,
        );
    }
    // The replica that leads: its webhook's board, led by its watcher loop.
    let board = Arc::new(Board::new(DEFAULT_MAX_WAITS, s.metrics.clone()));
    let (running, dir) = listener("leader", board.clone(), s.metrics.clone()).await;
    let watcher = s
        .watcher
        .with_drain_waits(board.clone(), SignedDuration::from_secs(2));
    let watching = tokio::spawn(watcher.run());
    // A replica that does not lead (`gracegate webhook` alone): its board never leads.
    let standby = Arc::new(Board::new(DEFAULT_MAX_WAITS, Arc::new(Metrics::default())));
    let (standby_running, standby_dir) =
        listener("standby", standby, Arc::new(Metrics::default())).await;

    let started = Instant::now();
    let port = running.addr.port();
    let mut leaving = waiter(port, &dir, "leaving", 60);
    let mut staying = waiter(port, &dir, "staying", 6);
    let mut unanswered = waiter(standby_running.addr.port(), &standby_dir, "leaving", 4);

    // Draining: every waiter keeps waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        leaving.try_wait().unwrap().is_none(),
        "released while draining"
    );
    assert_eq!(board.asked().len(), 2, "both pods are followed");

    s.fake.deregister(ARN, "10.0.2.1", 80);
    let gone = Instant::now();
    let (status, stderr) = exited(&mut leaving, Duration::from_secs(15)).await;
    let after = gone.elapsed();
    assert!(status.success(), "{status:?}: {stderr}");
    // Settle (2 s) plus at most a tick (1 s) and the poll's round trip.
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(6),
        "released {after:?} after the target left\n{stderr}"
    );
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("gracegate-wait: released after ") && last.ends_with("s: targets-gone"),
        "{stderr}"
    );

    // Still draining: it waits for its own deadline, never less.
    let (status, stderr) = exited(&mut staying, Duration::from_secs(15)).await;
    assert!(status.success());
    assert!(started.elapsed() >= Duration::from_secs(6), "{stderr}");
    assert!(stderr.contains("deadline of 6s reached"), "{stderr}");
    assert!(!stderr.contains("released after"), "{stderr}");

    // Asking only a replica that does not lead: not-leader until the deadline.
    let (status, stderr) = exited(&mut unanswered, Duration::from_secs(15)).await;
    assert!(status.success());
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(stderr.contains("not the leader"), "{stderr}");
    assert!(stderr.contains("deadline of 4s reached"), "{stderr}");

    let metrics = s.metrics.encode();
    assert!(
        metrics.contains(r#"gracegate_drain_waits_total{outcome="released"} 1"#),
        "{metrics}"
    );
    let released: Vec<_> = s
        .api
        .events()
        .into_iter()
        .filter(|e| e.body["reason"] == "DrainReleased")
        .collect();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].body["regarding"]["name"], "leaving");

    watching.abort();
    let _ = watching.await;
    assert!(
        !board.is_leading(),
        "the watcher's end steps the board down"
    );
    running.shutdown(Duration::ZERO).await;
    standby_running.shutdown(Duration::ZERO).await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(standby_dir);
}
