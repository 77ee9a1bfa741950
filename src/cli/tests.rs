use super::*;
use crate::inject::{DEFAULT_CONDITION_PREFIX, PrestopAction};
use crate::timing::TimingSettings;
use rstest::rstest;

#[rstest]
#[case(PrestopMode::Auto, Some((1, 32)), PrestopAction::Sleep)]
#[case(PrestopMode::Auto, Some((1, 30)), PrestopAction::Sleep)]
#[case(PrestopMode::Auto, Some((1, 29)), PrestopAction::Exec)]
#[case(PrestopMode::Auto, Some((2, 0)), PrestopAction::Sleep)]
#[case(PrestopMode::Auto, None, PrestopAction::Sleep)]
#[case(PrestopMode::Exec, Some((1, 32)), PrestopAction::Exec)]
#[case(PrestopMode::Sleep, Some((1, 28)), PrestopAction::Sleep)]
fn prestop_mode(
    #[case] mode: PrestopMode,
    #[case] version: Option<(u32, u32)>,
    #[case] expected: PrestopAction,
) {
    assert_eq!(mode.resolve(version), expected);
}

#[rstest]
#[case("1", "32", Some((1, 32)))]
#[case("1", "30+", Some((1, 30)))]
#[case("1", "", None)]
#[case("v1", "29", None)]
fn server_version(#[case] major: &str, #[case] minor: &str, #[case] expected: Option<(u32, u32)>) {
    assert_eq!(parse_server_version(major, minor), expected);
}

#[test]
fn flags_and_env() {
    let cli = Cli::try_parse_from([
        "gracegate",
        "webhook",
        "--tls-cert",
        "c",
        "--tls-key",
        "k",
        "--namespace-label",
        "team=web",
        "--prestop-mode",
        "exec",
    ])
    .unwrap();
    let Command::Webhook(args) = cli.command else {
        panic!("webhook")
    };
    assert_eq!(
        args.inject.namespace_label,
        ("team".to_string(), "web".to_string())
    );
    let settings = args
        .inject
        .settings(args.inject.prestop_mode.resolve(None))
        .unwrap();
    assert_eq!(settings.prestop_action, PrestopAction::Exec);
    assert_eq!(settings.timing, TimingSettings::default());
    assert_eq!(settings.gate("b"), "target-health.elbv2.k8s.aws/b");
}

#[test]
fn limit_defaults_are_the_documented_ones() {
    let cli =
        Cli::try_parse_from(["gracegate", "webhook", "--tls-cert", "c", "--tls-key", "k"]).unwrap();
    let Command::Webhook(args) = cli.command else {
        panic!("webhook")
    };
    assert_eq!(
        args.limits.timeouts(),
        crate::webhook::conn::Timeouts::default()
    );
    assert_eq!(
        args.limits.limits(),
        crate::webhook::conn::Limits::default()
    );
    let cli = Cli::try_parse_from([
        "gracegate",
        "webhook",
        "--tls-cert",
        "c",
        "--tls-key",
        "k",
        "--max-connections",
        "10",
        "--max-in-flight",
        "3",
        "--max-body-bytes",
        "1024",
        "--http2-max-streams",
        "2",
        "--header-timeout",
        "500ms",
        "--body-timeout",
        "2s",
        "--idle-timeout",
        "1m",
    ])
    .unwrap();
    let Command::Webhook(args) = cli.command else {
        panic!("webhook")
    };
    let limits = args.limits.limits();
    assert_eq!(
        (
            limits.max_connections,
            limits.max_in_flight,
            limits.max_body_bytes,
            limits.http2_max_streams
        ),
        (10, 3, 1024, 2)
    );
    let timeouts = args.limits.timeouts();
    assert_eq!(
        (timeouts.header, timeouts.body, timeouts.idle),
        (
            std::time::Duration::from_millis(500),
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(60)
        )
    );
}

#[rstest]
#[case(&["--namespace-label", "novalue"])]
#[case(&["--max-connections", "0"])]
#[case(&["--max-in-flight", "0"])]
#[case(&["--max-body-bytes", "0"])]
#[case(&["--max-body-bytes", "100000000"])]
#[case(&["--http2-max-streams", "0"])]
#[case(&["--header-timeout", "0s"])]
#[case(&["--body-timeout", "soon"])]
#[case(&["--prestop-seconds", "-1"])]
#[case(&["--prestop-mode", "maybe"])]
fn bad_flags_are_refused(#[case] extra: &[&str]) {
    let mut argv = vec!["gracegate", "webhook", "--tls-cert", "c", "--tls-key", "k"];
    argv.extend_from_slice(extra);
    assert!(Cli::try_parse_from(argv).is_err());
}

#[rstest]
#[case("10m", Some(600_000))]
#[case("90s", Some(90_000))]
#[case("45", Some(45_000))]
#[case("0", Some(0))]
#[case("250ms", Some(250))]
#[case("1h", Some(3_600_000))]
#[case("10 m", None)]
#[case("-1s", None)]
#[case("1d", None)]
#[case("", None)]
fn durations(#[case] input: &str, #[case] millis: Option<u128>) {
    assert_eq!(parse_duration(input).ok().map(|d| d.as_millis()), millis);
}

#[test]
fn serve_takes_both_halves_flags() {
    let cli = Cli::try_parse_from([
        "gracegate",
        "serve",
        "--tls-cert",
        "c",
        "--tls-key",
        "k",
        "--gate-timeout",
        "0",
        "--aws-endpoint-url",
        "http://127.0.0.1:5000",
        "--condition-prefix",
        "example.com",
    ])
    .unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("serve")
    };
    assert_eq!(args.watch.gate_timeout, std::time::Duration::ZERO);
    assert_eq!(args.watch.tick, std::time::Duration::from_secs(1));
    assert_eq!(args.webhook.inject.condition_prefix, "example.com");
    assert_eq!(args.lease.lease_name, "gracegate");
}

#[test]
fn serve_help_does_not_offer_objects() {
    let mut cli = command();
    let serve = cli.find_subcommand_mut("serve").unwrap().render_long_help();
    assert!(!serve.to_string().contains("--objects <"), "{serve}");
    let webhook = cli
        .find_subcommand_mut("webhook")
        .unwrap()
        .render_long_help();
    assert!(webhook.to_string().contains("--objects <"));
}

/// The module's promise: every flag of every subcommand that runs in a cluster (or makes
/// its certificates) reads a `GRACEGATE_*` variable. `plan` and `audit` are commands a
/// person types, kubectl-style: their flags are flags.
#[test]
fn every_flag_reads_a_gracegate_variable() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let mut checked = 0;
    let deployed = cli
        .get_subcommands()
        .filter(|c| !["plan", "audit"].contains(&c.get_name()));
    for command in std::iter::once(&cli).chain(deployed) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert!(
                env.as_deref().is_some_and(|e| e.starts_with("GRACEGATE_")),
                "{} --{id} reads {env:?}",
                command.get_name()
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "{checked}");
}

#[test]
fn default_addresses_are_dual_stack() {
    let cli =
        Cli::try_parse_from(["gracegate", "serve", "--tls-cert", "c", "--tls-key", "k"]).unwrap();
    let Command::Serve(args) = cli.command else {
        panic!("serve")
    };
    assert_eq!(args.webhook.listen.to_string(), "[::]:8443");
    assert_eq!(args.webhook.admin_listen.to_string(), "[::]:8080");
    let cli = Cli::try_parse_from(["gracegate", "watcher"]).unwrap();
    let Command::Watcher(args) = cli.command else {
        panic!("watcher")
    };
    assert_eq!(args.admin_listen.to_string(), "[::]:8080");
}

#[rstest]
#[case("Target-Health.example", false)]
#[case("target-health.example.com", true)]
#[case("-bad.example", false)]
#[case("", false)]
fn condition_prefix(#[case] prefix: &str, #[case] ok: bool) {
    let cli =
        Cli::try_parse_from(["gracegate", "webhook", "--tls-cert", "c", "--tls-key", "k"]).unwrap();
    let Command::Webhook(mut args) = cli.command else {
        panic!("webhook")
    };
    args.inject.condition_prefix = prefix.to_string();
    assert_eq!(args.inject.settings(PrestopAction::Sleep).is_ok(), ok);
    args.inject.condition_prefix = DEFAULT_CONDITION_PREFIX.into();
    args.inject.prestop_seconds = 500;
    assert!(args.inject.settings(PrestopAction::Sleep).is_err());
}

#[rstest]
#[case(&[], Some((5, 2)))]
#[case(&["--lease-duration", "15s", "--lease-renew-before", "5s"], Some((15, 5)))]
#[case(&["--lease-duration", "2s", "--lease-renew-before", "2s"], None)]
#[case(&["--lease-duration", "0", "--lease-renew-before", "0"], None)]
fn lease_timings(#[case] extra: &[&str], #[case] expected: Option<(u64, u64)>) {
    let mut argv = vec!["gracegate", "watcher"];
    argv.extend_from_slice(extra);
    let Command::Watcher(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("watcher")
    };
    assert_eq!(args.lease.timings().ok(), expected);
}
