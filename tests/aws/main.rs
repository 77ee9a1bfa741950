//! gracegate's ELBv2 client (`gracegate::aws::Elb`) through the real AWS SDK, against a
//! scriptable fake ELB and, for protocol conformance, against moto.

#[path = "../support/fake_elb.rs"]
mod fake_elb;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2::config::{Credentials, SharedCredentialsProvider};
use fake_elb::{FakeElb, Fault};
use gracegate::aws::{AwsError, Elb, ElbOptions};
use gracegate::elb::{Facts, HealthCheck, LoadBalancerKind, TargetHealth, TargetId, TargetState};
use gracegate::metrics::Metrics;

const ARN: &str =
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
const NAME: &str = "web";

/// Small timeouts and backoff so failure paths take well under a second or two.
fn fast_options() -> ElbOptions {
    ElbOptions {
        rate_per_second: 1000.0,
        burst: 1000,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        attempt_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(2),
    }
}

/// A region no other test uses, so that no two tests share SDK state keyed by region.
fn unique_region() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("us-test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Built as production builds it, but with static credentials: the default chain must never
/// fall through to the instance metadata service in tests.
async fn elb_for(url: &str, region: &str, options: &ElbOptions, metrics: Arc<Metrics>) -> Elb {
    let config = gracegate::aws::sdk_config(Some(region.into()), Some(url.into()), options)
        .await
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        )))
        .build();
    Elb::new(&config, options, metrics)
}

struct Setup {
    fake: FakeElb,
    elb: Elb,
    metrics: Arc<Metrics>,
}

/// A fake with the target group `ARN` / `NAME` and a client for it.
async fn setup_with(options: ElbOptions) -> Setup {
    let fake = FakeElb::start().await;
    fake.add_target_group(ARN, NAME);
    let metrics = Arc::new(Metrics::default());
    let elb = elb_for(&fake.url(), &unique_region(), &options, metrics.clone()).await;
    Setup { fake, elb, metrics }
}

async fn setup() -> Setup {
    setup_with(fast_options()).await
}

fn target(id: &str, port: i32) -> TargetId {
    TargetId {
        id: id.into(),
        port,
    }
}

fn health(state: TargetState, reason: Option<&str>, description: Option<&str>) -> TargetHealth {
    TargetHealth {
        state,
        reason: reason.map(String::from),
        description: description.map(String::from),
    }
}

/// The value of `gracegate_aws_requests_total{operation,outcome}`, if the series exists.
fn aws_counter(metrics: &Metrics, operation: &str, outcome: &str) -> Option<u64> {
    let series =
        format!("gracegate_aws_requests_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

/// Asks for one target and returns what came back for it.
async fn describe_one(s: &Setup, id: &str, port: i32) -> TargetHealth {
    let got = s
        .elb
        .describe_target_health(ARN, &[target(id, port)])
        .await
        .expect("describe_target_health");
    assert_eq!(got.len(), 1, "exactly the requested target: {got:?}");
    assert_eq!(got[0].0, target(id, port));
    got[0].1.clone()
}

#[tokio::test]
async fn initial_then_healthy() {
    let s = setup().await;
    s.fake.set_health(
        ARN,
        "10.0.0.1",
        80,
        "initial",
        Some("Elb.InitialHealthChecking"),
        Some("Initial health checks in progress"),
    );
    assert_eq!(
        describe_one(&s, "10.0.0.1", 80).await,
        health(
            TargetState::Initial,
            Some("Elb.InitialHealthChecking"),
            Some("Initial health checks in progress")
        )
    );

    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    assert_eq!(
        describe_one(&s, "10.0.0.1", 80).await,
        health(TargetState::Healthy, None, None)
    );

    let requests = s.fake.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.action, "DescribeTargetHealth");
        assert_eq!(r.param("Version"), Some("2015-12-01"));
        // The ARN's ':' and '/' arrive percent-encoded and decode back.
        assert_eq!(r.param("TargetGroupArn"), Some(ARN));
        assert_eq!(r.targets(), vec![("10.0.0.1".to_string(), Some(80))]);
        assert_eq!(r.param("Targets.member.1.Id"), Some("10.0.0.1"));
        assert_eq!(r.param("Targets.member.1.Port"), Some("80"));
    }
    assert_eq!(s.fake.describe_calls_for(ARN), 2);
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetHealth", "ok"),
        Some(2)
    );
}

#[tokio::test]
async fn a_target_turns_healthy_while_polled() {
    let s = setup().await;
    s.fake.set_health(
        ARN,
        "10.0.0.1",
        80,
        "initial",
        Some("Elb.RegistrationInProgress"),
        None,
    );
    let script = s.fake.handle();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        script.set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    });
    let polled = tokio::time::timeout(Duration::from_secs(10), async {
        let mut polls = 0;
        loop {
            polls += 1;
            if describe_one(&s, "10.0.0.1", 80).await.state == TargetState::Healthy {
                return polls;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the target turns healthy");
    assert!(polled > 1, "the first poll saw it initial");
    assert_eq!(s.fake.describe_calls_for(ARN), polled);
}

#[tokio::test]
async fn unhealthy_with_reason_and_description() {
    let s = setup().await;
    s.fake.set_health(
        ARN,
        "10.0.0.1",
        8080,
        "unhealthy",
        Some("Target.ResponseCodeMismatch"),
        Some("Health checks failed with these codes: [502]"),
    );
    assert_eq!(
        describe_one(&s, "10.0.0.1", 8080).await,
        health(
            TargetState::Unhealthy,
            Some("Target.ResponseCodeMismatch"),
            Some("Health checks failed with these codes: [502]")
        )
    );
}

#[tokio::test]
async fn draining() {
    let s = setup().await;
    s.fake.set_health(
        ARN,
        "10.0.0.1",
        80,
        "draining",
        Some("Target.DeregistrationInProgress"),
        Some("Target deregistration is in progress"),
    );
    assert_eq!(
        describe_one(&s, "10.0.0.1", 80).await,
        health(
            TargetState::Draining,
            Some("Target.DeregistrationInProgress"),
            Some("Target deregistration is in progress")
        )
    );
}

#[tokio::test]
async fn unknown_and_deregistered_targets_are_not_registered() {
    let s = setup().await;
    let h = describe_one(&s, "10.0.0.9", 80).await;
    assert_eq!(
        h,
        health(
            TargetState::Unused,
            Some("Target.NotRegistered"),
            Some("Target is not registered to the target group")
        )
    );
    assert!(h.is_not_registered());

    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.deregister(ARN, "10.0.0.1", 80);
    assert!(describe_one(&s, "10.0.0.1", 80).await.is_not_registered());
    // Same id, other port: a different target.
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    assert!(describe_one(&s, "10.0.0.1", 81).await.is_not_registered());
}

#[tokio::test]
async fn text_is_xml_escaped_and_unescaped() {
    let s = setup().await;
    let description = "codes: [502] & <body> \"quoted\" 'single'";
    s.fake.set_health(
        ARN,
        "10.0.0.1",
        80,
        "unhealthy",
        Some("Target.ResponseCodeMismatch"),
        Some(description),
    );
    assert_eq!(
        describe_one(&s, "10.0.0.1", 80)
            .await
            .description
            .as_deref(),
        Some(description)
    );
}

#[tokio::test]
async fn several_targets_in_one_call() {
    let s = setup().await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.set_health(
        ARN,
        "10.0.0.2",
        80,
        "initial",
        Some("Elb.InitialHealthChecking"),
        None,
    );
    s.fake.set_health(
        ARN,
        "10.0.0.3",
        8080,
        "unhealthy.draining",
        Some("Target.DeregistrationInProgress"),
        None,
    );
    let asked = [
        target("10.0.0.3", 8080),
        target("10.0.0.1", 80),
        target("10.0.0.2", 80),
        target("10.0.0.4", 80),
    ];
    let mut got = s.elb.describe_target_health(ARN, &asked).await.unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let states: Vec<(String, TargetState, Option<String>)> = got
        .into_iter()
        .map(|(t, h)| (t.to_string(), h.state, h.reason))
        .collect();
    assert_eq!(
        states,
        vec![
            ("10.0.0.1:80".into(), TargetState::Healthy, None),
            (
                "10.0.0.2:80".into(),
                TargetState::Initial,
                Some("Elb.InitialHealthChecking".into())
            ),
            (
                "10.0.0.3:8080".into(),
                TargetState::UnhealthyDraining,
                Some("Target.DeregistrationInProgress".into())
            ),
            (
                "10.0.0.4:80".into(),
                TargetState::Unused,
                Some("Target.NotRegistered".into())
            ),
        ]
    );
    assert_eq!(
        s.fake.calls("DescribeTargetHealth"),
        1,
        "one call for all targets"
    );
    let sent = s.fake.requests()[0].targets();
    let expected: Vec<(String, Option<i32>)> =
        asked.iter().map(|t| (t.id.clone(), Some(t.port))).collect();
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn without_targets_every_registered_target_is_listed() {
    let s = setup().await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.set_health(
        ARN,
        "10.0.0.2",
        80,
        "unhealthy",
        Some("Target.Timeout"),
        None,
    );
    let mut got = s.elb.describe_target_health(ARN, &[]).await.unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, target("10.0.0.1", 80));
    assert_eq!(got[1].1.reason.as_deref(), Some("Target.Timeout"));
    assert!(s.fake.requests()[0].targets().is_empty(), "no filter sent");
}

#[tokio::test]
async fn throttled_twice_then_answered() {
    let s = setup().await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.fail_next(2, Fault::Throttling);
    let h = describe_one(&s, "10.0.0.1", 80).await;
    assert_eq!(h.state, TargetState::Healthy);
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 3, "two retries");
    // Every attempt carries the same request.
    let requests = s.fake.requests();
    assert!(requests.iter().all(|r| r.params == requests[0].params));
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetHealth", "throttled"),
        // The series exists from the start, at 0.
        Some(0)
    );
}

#[tokio::test]
async fn throttled_on_every_attempt() {
    let s = setup().await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.fail_next(10, Fault::Throttling);
    let err = s
        .elb
        .describe_target_health(ARN, &[target("10.0.0.1", 80)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AwsError::Throttled(m) if m.contains("Rate exceeded")),
        "{err:?}"
    );
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 3, "max_attempts");
    assert!(
        s.metrics
            .encode()
            .contains("gracegate_aws_requests_total{operation=\"DescribeTargetHealth\",outcome=\"throttled\"} 1\n"),
        "{}",
        s.metrics.encode()
    );
}

/// A quiet client (a watcher makes a few calls a second) that is throttled once retries
/// after a short backoff, well within the operation timeout.
#[tokio::test]
async fn a_throttle_on_a_quiet_client_is_retried_within_the_backoff_cap() {
    let s = setup().await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.fail_next(1, Fault::Throttling);
    let start = Instant::now();
    let h = describe_one(&s, "10.0.0.1", 80).await;
    let elapsed = start.elapsed();
    assert_eq!(h.state, TargetState::Healthy);
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 2, "one retry");
    assert!(elapsed < fast_options().operation_timeout, "{elapsed:?}");
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetHealth", "ok"),
        Some(1)
    );
}

#[tokio::test]
async fn server_errors_on_every_attempt() {
    let s = setup().await;
    s.fake.fail_next(10, Fault::InternalError);
    let err = s
        .elb
        .describe_target_health(ARN, &[target("10.0.0.1", 80)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AwsError::Other(m) if m.contains("InternalFailure")),
        "{err:?}"
    );
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 3);
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetHealth", "error"),
        Some(1)
    );
}

#[tokio::test]
async fn one_server_error_then_answered() {
    let s = setup().await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.fail_next(1, Fault::InternalError);
    assert_eq!(
        describe_one(&s, "10.0.0.1", 80).await.state,
        TargetState::Healthy
    );
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 2);

    s.fake.reset_counts();
    s.fake.fail_next(1, Fault::ServiceUnavailable);
    assert_eq!(
        describe_one(&s, "10.0.0.1", 80).await.state,
        TargetState::Healthy
    );
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 2);
}

#[tokio::test]
async fn slow_responses_end_in_an_error_within_the_operation_timeout() {
    let s = setup().await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    s.fake.set_delay(Duration::from_secs(30));
    let start = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        s.elb.describe_target_health(ARN, &[target("10.0.0.1", 80)]),
    )
    .await
    .expect("the SDK's timeouts end the call");
    let elapsed = start.elapsed();
    assert!(matches!(result, Err(AwsError::Other(_))), "{result:?}");
    let options = fast_options();
    assert!(elapsed >= options.attempt_timeout, "{elapsed:?}");
    assert!(
        elapsed < options.operation_timeout + Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert!(s.fake.calls("DescribeTargetHealth") >= 1);
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetHealth", "error"),
        Some(1)
    );
}

#[tokio::test]
async fn unknown_target_group() {
    let s = setup().await;
    let other =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/gone/feedfacefeedface";
    let err = s
        .elb
        .describe_target_health(other, &[target("10.0.0.1", 80)])
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::TargetGroupNotFound(_)), "{err:?}");
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 1, "not retried");
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetHealth", "not_found"),
        Some(1)
    );

    let err = s.elb.target_group_arn("gone").await.unwrap_err();
    assert!(matches!(err, AwsError::TargetGroupNotFound(_)), "{err:?}");
    let err = s.elb.deregistration_delay(other).await.unwrap_err();
    assert!(matches!(err, AwsError::TargetGroupNotFound(_)), "{err:?}");
}

/// `DescribeTargetGroups` + `DescribeTargetGroupAttributes` → the facts, from the wire.
#[tokio::test]
async fn target_group_facts_from_both_calls() {
    let s = setup().await;
    s.fake.set_deregistration_delay(ARN, 45);
    s.fake.set_slow_start(ARN, 30);
    s.fake.set_health_check(ARN, 10, 6, 3, 4);
    let facts = s.elb.target_group_facts(ARN).await.unwrap();
    assert_eq!(
        facts,
        Facts {
            protocol: Some("HTTP".into()),
            load_balancer: Some(LoadBalancerKind::Application),
            target_type: Some("ip".into()),
            ip_address_type: Some("ipv4".into()),
            health_check: HealthCheck {
                interval_seconds: Some(10),
                timeout_seconds: Some(6),
                healthy_threshold: Some(3),
                unhealthy_threshold: Some(4),
            },
            deregistration_delay_seconds: Some(45),
            slow_start_seconds: Some(30),
            connection_termination: None,
        }
    );
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].action, "DescribeTargetGroups");
    assert_eq!(requests[0].list("TargetGroupArns"), vec![ARN.to_string()]);
    assert_eq!(requests[1].action, "DescribeTargetGroupAttributes");
    assert_eq!(requests[1].param("TargetGroupArn"), Some(ARN));

    s.fake.make_network(ARN);
    let nlb = s.elb.target_group_facts(ARN).await.unwrap();
    assert_eq!(nlb.load_balancer, Some(LoadBalancerKind::Network));
    assert_eq!(nlb.protocol.as_deref(), Some("TCP"));
    assert_eq!(nlb.connection_termination, Some(false));
    assert_eq!(
        (
            aws_counter(&s.metrics, "DescribeTargetGroups", "ok"),
            aws_counter(&s.metrics, "DescribeTargetGroupAttributes", "ok")
        ),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn target_group_facts_errors() {
    let s = setup().await;
    // Throttled once: retried by the SDK, then answered.
    s.fake.fail_next(1, Fault::Throttling);
    assert!(s.elb.target_group_facts(ARN).await.is_ok());
    assert_eq!(s.fake.calls("DescribeTargetGroups"), 2);
    // Not found: no attributes call, classified.
    let other = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/gone/1";
    let err = s.elb.target_group_facts(other).await.unwrap_err();
    assert!(matches!(err, AwsError::TargetGroupNotFound(_)), "{err:?}");
    assert_eq!(s.fake.calls("DescribeTargetGroupAttributes"), 1);
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetGroups", "not_found"),
        Some(1)
    );
    // Throttled past the retries: an error, counted as throttling.
    s.fake.fail_next(3, Fault::Throttling);
    let err = s.elb.target_group_facts(ARN).await.unwrap_err();
    assert!(matches!(err, AwsError::Throttled(_)), "{err:?}");
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetGroups", "throttled"),
        Some(1)
    );
}

#[tokio::test]
async fn target_group_arn_and_deregistration_delay() {
    let s = setup().await;
    s.fake.add_target_group(
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api/1111",
        "api",
    );
    s.fake.set_deregistration_delay(ARN, 45);

    assert_eq!(
        s.elb.target_group_arn(NAME).await.unwrap().as_deref(),
        Some(ARN)
    );
    assert_eq!(s.elb.deregistration_delay(ARN).await.unwrap(), Some(45));

    let requests = s.fake.requests();
    assert_eq!(requests[0].action, "DescribeTargetGroups");
    assert_eq!(requests[0].list("Names"), vec![NAME.to_string()]);
    assert_eq!(requests[1].action, "DescribeTargetGroupAttributes");
    assert_eq!(requests[1].param("TargetGroupArn"), Some(ARN));
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetGroups", "ok"),
        Some(1)
    );
    assert_eq!(
        aws_counter(&s.metrics, "DescribeTargetGroupAttributes", "ok"),
        Some(1)
    );
}

#[tokio::test]
async fn token_bucket_spaces_calls_out() {
    let s = setup_with(ElbOptions {
        rate_per_second: 5.0,
        burst: 1,
        ..fast_options()
    })
    .await;
    s.fake
        .set_health(ARN, "10.0.0.1", 80, "healthy", None, None);
    let start = Instant::now();
    for _ in 0..3 {
        describe_one(&s, "10.0.0.1", 80).await;
    }
    let elapsed = start.elapsed();
    // One free call, then one every 200 ms.
    assert!(elapsed >= Duration::from_millis(380), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(s.fake.calls("DescribeTargetHealth"), 3);
}

#[tokio::test]
async fn the_fake_stops_when_shut_down() {
    let fake = FakeElb::start().await;
    let addr = fake.addr();
    fake.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn the_fake_decodes_forms() {
    assert_eq!(
        fake_elb::parse_form(b"A=arn%3Aaws%2Fx&B=a+b&C=100%&D=%zz&E"),
        [
            ("A", "arn:aws/x"),
            ("B", "a b"),
            ("C", "100%"),
            ("D", "%zz"),
            ("E", "")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

// ---- moto ----

/// Kills the child process when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_moto(moto_server: &Path, port: u16) -> ChildGuard {
    let child = Command::new(moto_server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", moto_server.display()));
    let mut guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("moto_server exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    guard
}

/// Creates a target group with two targets and a 30 s deregistration delay through boto3.
fn moto_setup(python: &Path, url: &str) -> (String, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/moto_setup.py");
    let out = Command::new(python)
        .arg(script)
        .arg(url)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "moto_setup.py failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("moto_setup.py prints JSON");
    (
        v["arn"].as_str().expect("arn").to_string(),
        v["name"].as_str().expect("name").to_string(),
        v["nlb_arn"].as_str().expect("nlb_arn").to_string(),
    )
}

/// Needs moto (Python): ignored by a plain `cargo test`, which then reports it as
/// `ignored, needs moto …`; `make test` installs moto in .venv and runs it with `--ignored`.
#[tokio::test]
#[ignore = "needs moto_server: `make test` installs it and runs this test (MOTO_SERVER=…)"]
async fn moto_conformance() {
    let moto_server = PathBuf::from(std::env::var_os("MOTO_SERVER").expect(
        "MOTO_SERVER is not set: run `make test`, which installs moto in .venv and sets it",
    ));
    let python = moto_server.with_file_name("python");
    let port = free_port();
    let _moto = start_moto(&moto_server, port);
    let url = format!("http://127.0.0.1:{port}");
    let (arn, name, nlb_arn) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || moto_setup(&python, &url)
    })
    .await
    .unwrap();

    // moto keeps state per region: the one boto3 used.
    let metrics = Arc::new(Metrics::default());
    let elb = elb_for(&url, "us-east-1", &fast_options(), metrics.clone()).await;

    let asked = [
        target("10.0.0.1", 80),
        target("10.0.0.2", 80),
        target("10.0.0.9", 80),
    ];
    let got = elb
        .describe_target_health(&arn, &asked)
        .await
        .expect("DescribeTargetHealth on moto");
    for (t, h) in &got {
        eprintln!("moto: {t} → {h:?}");
        assert!(
            !matches!(h.state, TargetState::Other(_)),
            "{t}: unknown state {h:?}"
        );
    }
    for registered in &asked[..2] {
        let h = got
            .iter()
            .find(|(t, _)| t == registered)
            .map(|(_, h)| h)
            .unwrap_or_else(|| panic!("{registered} missing from {got:?}"));
        assert!(!h.is_not_registered(), "{registered}: {h:?}");
    }
    // AWS answers `unused`; moto 5.2 `unavailable`. Both carry the reason gracegate relies on.
    match got.iter().find(|(t, _)| t == &asked[2]) {
        Some((_, h)) => assert!(h.is_not_registered(), "unregistered target: {h:?}"),
        None => eprintln!("moto: omits the unregistered target"),
    }

    assert_eq!(
        elb.target_group_arn(&name).await.unwrap(),
        Some(arn.clone())
    );
    assert_eq!(elb.deregistration_delay(&arn).await.unwrap(), Some(30));

    // Target-group facts: both calls, every field gracegate reads, as moto answers them.
    let facts = elb.target_group_facts(&arn).await.expect("facts on moto");
    eprintln!("moto: facts {facts:?}");
    assert_eq!(facts.protocol.as_deref(), Some("HTTP"));
    assert_eq!(facts.load_balancer, Some(LoadBalancerKind::Application));
    assert_eq!(facts.target_type.as_deref(), Some("ip"));
    assert_eq!(
        facts.health_check,
        HealthCheck {
            interval_seconds: Some(10),
            timeout_seconds: Some(4),
            healthy_threshold: Some(3),
            unhealthy_threshold: Some(2),
        }
    );
    assert_eq!(facts.deregistration_delay_seconds, Some(30));
    assert_eq!(facts.slow_start_seconds, Some(45));
    let nlb = elb
        .target_group_facts(&nlb_arn)
        .await
        .expect("NLB facts on moto");
    assert_eq!(nlb.protocol.as_deref(), Some("TCP"));
    assert_eq!(nlb.load_balancer, Some(LoadBalancerKind::Network));
    assert_eq!(nlb.deregistration_delay_seconds, Some(300), "AWS's default");
    let err = elb
        .target_group_facts(&arn.replace(&name, "no-such-group"))
        .await
        .unwrap_err();
    assert!(matches!(err, AwsError::TargetGroupNotFound(_)), "{err:?}");

    // Error responses parse as gracegate classifies them.
    let err = elb.target_group_arn("no-such-group").await.unwrap_err();
    assert!(matches!(err, AwsError::TargetGroupNotFound(_)), "{err:?}");
    let gone = arn.replace(&name, "no-such-group");
    let err = elb.describe_target_health(&gone, &asked).await.unwrap_err();
    assert!(matches!(err, AwsError::TargetGroupNotFound(_)), "{err:?}");
    assert_eq!(aws_counter(&metrics, "DescribeTargetHealth", "ok"), Some(1));
}
