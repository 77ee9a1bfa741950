//! The `gracegate` binary itself: real exit codes, the kubectl plugin name, `make install`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{FakeApi, risky_cluster, serve_http};

const BIN: &str = env!("CARGO_BIN_EXE_gracegate");

/// A scratch directory, removed when the test ends (the install test copies the whole
/// binary into it: hundreds of MB a run).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("gracegate-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// A kubeconfig for `server`, context namespace game-2048.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: game-2048\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    path
}

async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn binary_exits_3_when_a_finding_reaches_fail_on() {
    let dir = temp_dir("exit");
    let config = kubeconfig(&dir, &serve_http(FakeApi::new(risky_cluster())).await);
    let mut c = Command::new(BIN);
    c.args(["audit", "--kubeconfig"])
        .arg(&config)
        .args(["--fail-on", "risk"]);
    let out = output(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("SEVERITY   NAMESPACE   WORKLOAD"),
        "{stdout}"
    );
    // Not a terminal: no colour.
    assert!(!stdout.contains('\x1b'), "{stdout}");

    let mut c = Command::new(BIN);
    c.args(["audit", "--kubeconfig"])
        .arg(&config)
        .args(["-o", "json"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["workloads"], 1);
}

#[tokio::test]
async fn bad_kubeconfig_is_a_clear_error_not_a_panic() {
    let out = output({
        let mut c = Command::new(BIN);
        c.args(["audit", "--kubeconfig", "/nonexistent/kubeconfig"]);
        c
    })
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reading kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `make install` puts the binary in PREFIX/bin under both names; the plugin name changes
/// the usage line, and kubectl (when installed) finds and runs it.
#[tokio::test]
async fn make_install_and_kubectl_plugin() {
    let dir = temp_dir("install");
    let prefix = dir.join("prefix");
    let out = output({
        let mut c = Command::new("make");
        c.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["--no-print-directory", "install-bin"])
            .arg(format!("BIN={BIN}"))
            .arg(format!("PREFIX={}", prefix.display()));
        c
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = prefix.join("bin");
    assert!(bin.join("gracegate").is_file());
    let plugin = bin.join("kubectl-gracegate");
    assert!(plugin.is_file());

    let out = output({
        let mut c = Command::new(&plugin);
        c.args(["audit", "--help"]);
        c
    })
    .await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: kubectl gracegate audit"), "{help}");

    let kubectl_found = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok();
    if !kubectl_found {
        eprintln!("kubectl not installed: plugin discovery not exercised");
        return;
    }
    let config = kubeconfig(&dir, &serve_http(FakeApi::new(risky_cluster())).await);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = output({
        let mut c = Command::new("kubectl");
        c.env("PATH", &path)
            .args(["gracegate", "audit", "--kubeconfig"])
            .arg(&config)
            .args(["-o", "json", "--fail-on", "warn"]);
        c
    })
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kind"], "AuditReport");
}
