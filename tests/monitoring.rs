//! The running binary against what operators are given: every metric the alert rules and the
//! Grafana dashboard (manifests/monitoring/) query is one `/metrics` exports, and the logs it
//! writes when stderr is not a terminal carry no ANSI escape codes.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gracegate");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gracegate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `gracegate webhook` on the example objects (no cluster), admin port `admin`.
fn webhook(dir: &Path, admin: u16, log_format: &str) -> Child {
    let certs = dir.join("certs");
    if !certs.join("tls.crt").exists() {
        let status = Command::new(BIN)
            .args(["certs", "--out"])
            .arg(&certs)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    Command::new(BIN)
        .args(["webhook", "--listen", "127.0.0.1:0", "--admin-listen"])
        .arg(format!("127.0.0.1:{admin}"))
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .arg("--objects")
        .arg(repo("examples/objects"))
        .args(["--shutdown-delay-seconds", "0", "--log-format", log_format])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A plain HTTP/1.0 GET; `None` until the port answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

fn wait_for(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(body) = get(port, path) {
            return body;
        }
        assert!(Instant::now() < deadline, "no answer on {path}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop the webhook as the kubelet does, with SIGTERM: it ends on its own, writing out its
/// last batch of log lines (SIGKILL would drop them). Killed if it has not ended in 30 s.
fn stop(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// Sample names a text exposition can have, from its `# TYPE` lines.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    names
}

/// Every `gracegate_*` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("gracegate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// (where, name) for each metric the rules and the dashboard query.
fn used() -> Vec<(String, String)> {
    let mut used = Vec::new();
    let rules = std::fs::read_to_string(repo("manifests/monitoring/prometheusrule.yaml")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        for name in metric_names(line) {
            used.push(("prometheusrule.yaml".to_string(), name));
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("manifests/monitoring/dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            for name in metric_names(target["expr"].as_str().unwrap_or_default()) {
                used.push((format!("dashboard.json {}", panel["title"]), name));
            }
        }
    }
    used
}

#[test]
fn the_check_itself_catches_a_missing_metric() {
    let exposition = "# HELP gracegate_leader x\n# TYPE gracegate_leader gauge\n\
                      # TYPE gracegate_admission_requests counter\n# TYPE gracegate_drain_seconds histogram\n";
    let names = exported(exposition);
    assert!(names.contains("gracegate_admission_requests_total"));
    assert!(names.contains("gracegate_drain_seconds_bucket"));
    assert!(!names.contains("gracegate_admission_requests"));
    assert!(!names.contains("gracegate_drain_seconds"));
    assert_eq!(
        metric_names("rate(gracegate_a_total{x=\"y\"}[5m]) / gracegate_b"),
        ["gracegate_a_total", "gracegate_b"]
    );
}

#[test]
fn rules_and_dashboard_use_only_exported_metrics_and_logs_have_no_colour() {
    let dir = temp_dir("monitoring");
    let port = free_port();
    let child = webhook(&dir, port, "plain");
    let metrics = wait_for(port, "/metrics");
    let stderr = stop(child);

    let exported = exported(&metrics);
    let used = used();
    // Each alert and panel queries something: a regression to zero names would pass below.
    assert!(used.len() >= 20, "{used:?}");
    // Per-target-group families show up once observed: check those names on a registry that
    // has seen one observation (the binary's own Metrics type).
    let observed = gracegate::metrics::Metrics::default();
    observed
        .drain
        .get_or_create(&gracegate::metrics::TargetGroupLabels {
            target_group: "tg".into(),
        })
        .observe(1.0);
    let runtime = self::exported(&observed.encode());
    let missing: Vec<&(String, String)> = used
        .iter()
        .filter(|(_, name)| {
            let per_target_group = gracegate::metrics::RUNTIME_LABELLED_FAMILIES
                .iter()
                .any(|f| name.starts_with(f));
            let seen_once_observed = per_target_group && runtime.contains(name);
            !exported.contains(name) && !seen_once_observed
        })
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
    for alert_metric in ["gracegate_gate_timeouts_total", "gracegate_leader"] {
        assert!(
            used.iter().any(|(_, n)| n == alert_metric),
            "{alert_metric} unused"
        );
    }

    // stderr is a pipe here: plain logs without escape codes.
    assert!(stderr.contains("webhook serving"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "escape codes in {stderr:?}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = temp_dir("json-logs");
    let port = free_port();
    let child = webhook(&dir, port, "json");
    wait_for(port, "/readyz");
    let stderr = stop(child);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}
