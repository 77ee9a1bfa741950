//! `gracegate plan` as a user runs it: the binary, its text and its JSON.

use std::process::Command;

fn plan(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gracegate"))
        .arg("plan")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn text_for_the_seed_numbers() {
    let (code, out, err) = plan(&["--deregistration-delay", "30", "--replicas", "4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "\
preStop sleep (S)                40s  (deregistration-delay)
terminationGracePeriodSeconds    70s  (S + 30s shutdown budget)
new target healthy after         75s  (application load balancer)
rollout                          2m50s  (2 wave(s) of 2 pod(s); last old pod stops after 3m30s)

Risks:
  none found

Why:
  - S = 40s from the deregistration delay D = 30s (target group (from flags)): the load balancer keeps the old target draining for D, and the pod serves 10s more.
  - T = 70s: the 40s sleep plus a 30s shutdown budget for the app to finish after SIGTERM (a pod's own longer grace period is kept).
  - A new target turns healthy about 75s after registration: 5 health checks 15s apart must pass; only then does its readiness gate turn True and the rollout move on.
  - The rollout replaces 2 pod(s) at a time (maxSurge 1 + maxUnavailable 1) in 2 wave(s) of about 85s (10s to start + 75s to turn healthy): about 2m50s. The last old pod stops serving 40s after its wave, about 3m30s from the start.
"
    );
}

#[test]
fn json_for_an_nlb_with_measured_drains() {
    let (code, out, err) = plan(&[
        "--load-balancer",
        "network",
        "--deregistration-delay",
        "30",
        "--measured-drain-p99",
        "118.4",
        "--measured-drains",
        "12",
        "--health-check-interval",
        "10",
        "--healthy-threshold",
        "2",
        "--replicas",
        "6",
        "--max-surge",
        "50%",
        "--max-unavailable",
        "0",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["prestopSeconds"], 120);
    assert_eq!(v["prestopSource"], "measured-drain");
    assert_eq!(v["terminationGracePeriodSeconds"], 150);
    assert_eq!(v["loadBalancer"], "network");
    assert_eq!(v["timeToHealthySeconds"], 20);
    assert_eq!(
        v["rollout"],
        serde_json::json!({ "replicas": 6, "maxSurge": 3, "maxUnavailable": 0, "batch": 3,
                            "waves": 2, "seconds": 60, "lastOldPodStopsSeconds": 180 })
    );
    assert_eq!(v["risks"][0]["severity"], "risk");
    assert!(
        v["risks"][0]["text"]
            .as_str()
            .unwrap()
            .contains("needs a 124s preStop; capped at 120s")
    );
    assert!(
        v["reasoning"][0]
            .as_str()
            .unwrap()
            .contains("p99 of 12 drains")
    );
    assert_eq!(v["notes"], serde_json::json!([]));
}

#[test]
fn bad_input_is_a_clear_error() {
    let (code, out, err) = plan(&["--max-surge", "lots"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("\"lots\" is neither a count nor a percentage"),
        "{err}"
    );
    let (code, _, err) = plan(&["--from-cluster"]);
    assert_eq!(code, 2, "clap refuses it: {err}");
    assert!(err.contains("--namespace"), "{err}");
}
