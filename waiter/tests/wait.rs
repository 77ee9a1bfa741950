//! The real waiter binary against real TLS servers: it ends at once on a release of its own
//! pod, and otherwise exits 0 at its deadline, never earlier, whatever the server does.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// The deadline of the tests that must run to it: short, but long enough for several asks.
const DEADLINE: u64 = 3;

fn localhost() -> Pki {
    Pki::new(&["localhost", "127.0.0.1", "::1"])
}

#[test]
fn a_release_of_our_pod_ends_the_wait_at_once() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::release(POD_UID));
    let run = wait(&server.url(), 30, &pki.ca_pem);
    run.assert_released(Duration::from_secs(2));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let port = server.addr.port();
    assert_eq!(
        requests[0].head,
        format!(
            "GET /drain/v1/namespaces/{POD_NAMESPACE}/pods/{POD_NAME}?uid={POD_UID}&timeout=25 HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\n\
             User-Agent: gracegate-wait/{}\r\n\
             Accept: application/json\r\n\
             Connection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(requests[0].sni, None, "no SNI for an IP address");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert_eq!(
        lines[0],
        format!(
            "gracegate-wait: waiting for gracegate to release pod {POD_NAMESPACE}/{POD_NAME} (uid {POD_UID}) at {}, at most 30s",
            server.url()
        )
    );
    assert!(
        lines[1].starts_with("gracegate-wait: released after "),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with("s: targets-gone"), "{}", lines[1]);
    assert_eq!(
        run.copy, run.stderr,
        "every line is copied to PID 1's stderr"
    );
}

#[test]
fn ipv6_literals_work() {
    let pki = localhost();
    let server = Server::https(&pki, "[::1]:0", |_, _| Act::release(POD_UID));
    let run = wait(&server.url(), 30, &pki.ca_pem);
    run.assert_released(Duration::from_secs(2));
    assert!(
        server.requests()[0]
            .head
            .contains(&format!("\r\nHost: [::1]:{}\r\n", server.addr.port()))
    );
}

#[test]
fn flags_win_over_the_env_and_ca_file_works() {
    let pki = localhost();
    let scratch = Scratch::new("ca-file");
    let ca_file = scratch.path("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let server = Server::https(&pki, "127.0.0.1:0", |_, request| {
        if request
            .head
            .contains("/namespaces/other-ns/pods/other-pod?uid=other-uid&")
        {
            Act::release("other-uid")
        } else {
            Act::json(400, r#"{"reason":"unexpected pod"}"#)
        }
    });
    let run = run(
        &waiter_bin(),
        &[
            "wait",
            "--url",
            &server.url(),
            "--max-seconds",
            "30",
            "--ca-file",
            ca_file.to_str().unwrap(),
            "--pod-namespace",
            "other-ns",
            "--pod-name=other-pod",
            "--pod-uid",
            "other-uid",
        ],
        &pod_env(),
    );
    run.assert_released(Duration::from_secs(2));
}

#[test]
fn nothing_listening_waits_for_the_deadline() {
    let pki = localhost();
    let run = wait(
        &format!("https://127.0.0.1:{}", closed_port()),
        DEADLINE,
        &pki.ca_pem,
    );
    run.assert_deadline(DEADLINE);
    assert!(
        run.stderr.contains(
            "cannot reach gracegate: connect: connection refused; retrying until the deadline\n"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.lines().count(),
        3,
        "one line per change: {}",
        run.stderr
    );
}

#[test]
fn a_server_that_closes_every_connection_waits_for_the_deadline() {
    let server = Server::tcp(drop);
    let pki = localhost();
    let run = wait(&server.url(), DEADLINE, &pki.ca_pem);
    run.assert_deadline(DEADLINE);
    assert!(
        run.stderr
            .contains("cannot reach gracegate: TLS handshake: "),
        "{}",
        run.stderr
    );
    assert!(
        server.connections() >= 4,
        "kept retrying: {}",
        server.connections()
    );
}

#[test]
fn a_server_that_accepts_and_says_nothing_waits_for_the_deadline() {
    let server = Server::tcp(|tcp| {
        thread::sleep(Duration::from_secs(60));
        drop(tcp);
    });
    let pki = localhost();
    let run = wait(&server.url(), DEADLINE, &pki.ca_pem);
    run.assert_deadline(DEADLINE);
    assert_eq!(
        server.connections(),
        1,
        "the one handshake ran into the deadline"
    );
}

#[test]
fn a_request_left_unanswered_ends_at_the_deadline() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::Hang);
    let run = wait(&server.url(), DEADLINE, &pki.ca_pem);
    run.assert_deadline(DEADLINE);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_500_is_retried_with_backoff_until_the_deadline() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::json(500, "{}"));
    let run = wait(&server.url(), DEADLINE, &pki.ca_pem);
    run.assert_deadline(DEADLINE);
    let asks = server.requests();
    // Delays of 50-100, 100-200, 200-400, 400-800, 800-1600 ms: 4 to 7 asks in 3 s.
    assert!((4..=8).contains(&asks.len()), "{} asks", asks.len());
    for pair in asks.windows(2) {
        let gap = pair[1].received - pair[0].received;
        assert!(
            gap <= Duration::from_millis(2_300),
            "backoff over 2 s: {gap:?}"
        );
    }
    assert!(
        run.stderr.contains(
            "gracegate's answer is no release: HTTP status 500; retrying until the deadline"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_release_of_another_pod_is_not_ours() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::release("someone-else"));
    let run = wait(&server.url(), DEADLINE, &pki.ca_pem);
    run.assert_deadline(DEADLINE);
    assert!(server.requests().len() >= 3, "kept asking");
    assert!(
        run.stderr
            .contains("a release for uid someone-else, not ours"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused_until_the_deadline() {
    let (ours, theirs) = (localhost(), localhost());
    let server = Server::https(&theirs, "127.0.0.1:0", |_, _| Act::release(POD_UID));
    let run = wait(&server.url(), DEADLINE, &ours.ca_pem);
    run.assert_deadline(DEADLINE);
    assert!(
        server.requests().is_empty(),
        "no request over an untrusted connection"
    );
    assert!(
        server.connections() >= 3,
        "kept retrying: {}",
        server.connections()
    );
    assert!(
        run.stderr.contains(
            "cannot reach gracegate: TLS: invalid peer certificate: UnknownIssuer; retrying until the deadline"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let pki = Pki::new(&["gracegate.example"]);
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::release(POD_UID));
    let run = wait(&server.url(), DEADLINE, &pki.ca_pem);
    run.assert_deadline(DEADLINE);
    assert!(
        run.stderr
            .contains("TLS: invalid peer certificate: certificate not valid for name"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_leader_change_mid_wait_reconnects_and_still_waits_for_the_release() {
    let pki = localhost();
    // A long poll that runs out on the old leader, three 503s from a replica that is not
    // the leader yet, then the new leader's release.
    let server = Server::https(&pki, "127.0.0.1:0", |n, _| match n {
        0 => Act::json(
            200,
            format!(r#"{{"release":false,"uid":"{POD_UID}","reason":"targets-draining"}}"#),
        )
        .after(Duration::from_millis(1_200)),
        1..=3 => Act::not_leader(),
        _ => Act::release(POD_UID),
    });
    let run = wait(&server.url(), 30, &pki.ca_pem);
    run.assert_released(Duration::from_secs(5));
    assert_eq!(server.connections(), 5, "a new connection per ask");
    let asks = server.requests();
    for pair in asks[1..].windows(2) {
        let gap = pair[1].received - pair[0].answered.unwrap();
        // A jittered backoff doubling from 50-100 ms (at most 200-400 ms by the third 503),
        // then a connection and a handshake.
        assert!(
            gap >= Duration::from_millis(50) && gap < Duration::from_millis(1_500),
            "{gap:?}"
        );
    }
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .map(|l| l.trim_start_matches("gracegate-wait: "))
        .collect();
    assert_eq!(lines.len(), 4, "{}", run.stderr);
    assert_eq!(
        lines[1..3],
        [
            "not released yet: targets-draining",
            "reached a gracegate replica that is not the leader (not-leader); reconnecting",
        ],
        "one line for three 503s"
    );
    assert!(lines[3].starts_with("released after "), "{}", run.stderr);
}

#[test]
fn a_long_poll_that_runs_out_is_asked_again_at_once() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |n, _| match n {
        0 => Act::json(
            200,
            format!(r#"{{"release":false,"uid":"{POD_UID}","reason":"targets-draining"}}"#),
        )
        .after(Duration::from_millis(1_500)),
        _ => Act::release(POD_UID),
    });
    let run = wait(&server.url(), 30, &pki.ca_pem);
    run.assert_released(Duration::from_secs(4));
    let asks = server.requests();
    assert_eq!(asks.len(), 2);
    let gap = asks[1].received - asks[0].answered.unwrap();
    // No pause: only a new connection and its handshake in between.
    assert!(
        gap < Duration::from_millis(800),
        "asked again after {gap:?}"
    );
}

#[test]
fn a_missing_pod_identity_sleeps_until_the_deadline_without_asking() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::release(POD_UID));
    let run = run(
        &waiter_bin(),
        &[
            "wait",
            "--url",
            &server.url(),
            "--max-seconds",
            &DEADLINE.to_string(),
            "--ca",
            &pki.ca_pem,
        ],
        &[
            ("GRACEGATE_POD_NAME", POD_NAME),
            ("GRACEGATE_POD_NAMESPACE", POD_NAMESPACE),
        ],
    );
    run.assert_deadline(DEADLINE);
    assert_eq!(server.connections(), 0);
    assert_eq!(
        run.stderr.lines().next().unwrap(),
        "gracegate-wait: cannot ask gracegate: the pod uid is missing (--pod-uid or GRACEGATE_POD_UID); waiting until the deadline of 3s"
    );
}

#[test]
fn a_bad_ca_bundle_sleeps_until_the_deadline() {
    let server = Server::https(&localhost(), "127.0.0.1:0", |_, _| Act::release(POD_UID));
    let run = wait(
        &server.url(),
        DEADLINE,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    run.assert_deadline(DEADLINE);
    assert_eq!(server.connections(), 0);
    assert!(
        run.stderr
            .contains("the CA bundle holds no usable CA certificate"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unparseable_max_seconds_means_300s() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::release(POD_UID));
    let mut child = Command::new(waiter_bin())
        .args([
            "wait",
            "--url",
            &server.url(),
            "--max-seconds",
            "5m",
            "--ca",
            &pki.ca_pem,
        ])
        .env_clear()
        .envs(pod_env())
        .env("GRACEGATE_WAIT_PID1_STDERR", "")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(1_500));
    assert!(child.try_wait().unwrap().is_none(), "still waiting");
    child.kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert_eq!(
        stderr,
        "gracegate-wait: cannot ask gracegate: --max-seconds \"5m\" is not a whole number of seconds; the deadline is 300s; waiting until the deadline of 300s\n"
    );
    assert_eq!(server.connections(), 0);
}

#[test]
fn a_zero_deadline_exits_at_once() {
    let pki = localhost();
    let run = wait(
        &format!("https://127.0.0.1:{}", closed_port()),
        0,
        &pki.ca_pem,
    );
    run.assert_deadline(0);
}

#[test]
fn install_copies_the_executable_atomically() {
    let scratch = Scratch::new("install");
    let dest = scratch.path("gracegate-wait");
    let started = Instant::now();
    let run = run(&waiter_bin(), &["install", dest.to_str().unwrap()], &[]);
    assert!(run.status.success(), "{run:#?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(waiter_bin()).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_dir(&scratch.0).unwrap().count(),
        1,
        "no temporary file left"
    );
    assert!(
        run.stderr
            .starts_with(&format!("gracegate-wait: installed {}", dest.display()))
    );

    // The copy runs.
    let version = Command::new(&dest).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8(version.stdout).unwrap(),
        format!("gracegate-wait {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn install_into_a_missing_directory_fails_clearly() {
    let scratch = Scratch::new("install-missing");
    let dest = scratch.path("absent/gracegate-wait");
    let run = run(&waiter_bin(), &["install", dest.to_str().unwrap()], &[]);
    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    assert!(
        run.stderr.starts_with(&format!(
            "gracegate-wait: cannot install {}: cannot create ",
            dest.display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [&[][..], &["sleep"][..], &["install"][..]] {
        let run = run(&waiter_bin(), args, &[]);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {run:#?}");
        assert!(run.stderr.contains("usage:"), "{run:#?}");
    }
}

/// No test reaches a real `/proc/1/fd/2` (tests run as root on machines whose PID 1 is not
/// theirs): the hook points the copy at a file, which the other tests compare with stderr.
/// An empty hook turns the copy off, and the wait goes on as usual.
#[test]
fn an_empty_copy_hook_turns_the_copy_off() {
    let pki = localhost();
    let server = Server::https(&pki, "127.0.0.1:0", |_, _| Act::release(POD_UID));
    let output = Command::new(waiter_bin())
        .args([
            "wait",
            "--url",
            &server.url(),
            "--max-seconds",
            "30",
            "--ca",
            &pki.ca_pem,
        ])
        .env_clear()
        .envs(pod_env())
        .env("GRACEGATE_WAIT_PID1_STDERR", "")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("released after"));
}
