//! Command line: every flag of the subcommands that run in a cluster (and `certs`) can also
//! come from a `GRACEGATE_*` environment variable; `plan` and `audit` take plain flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::inject::{DEFAULT_CONDITION_PREFIX, PrestopAction, Settings};
use crate::timing::TimingSettings;
use crate::{Error, Result};

#[derive(Debug, Parser)]
#[command(
    name = "gracegate",
    version,
    about = "Zero-downtime rolling updates behind AWS load balancers"
)]
pub struct Cli {
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "GRACEGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The command line as `main` parses it: [`Cli`], with `serve --help` not listing
/// `--objects`, which comes with the webhook's flags but which `serve` (it needs a cluster)
/// refuses.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().mut_subcommand("serve", |serve| serve.mut_arg("objects", |a| a.hide(true)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

// Parsed once at start-up: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mutating admission webhook (HTTPS) and its admin port (HTTP).
    Webhook(WebhookArgs),
    /// Set readiness gate conditions from ELB target health (on the replica holding the Lease).
    Watcher(WatcherArgs),
    /// The webhook on every replica and the watcher on the one holding the Lease.
    Serve(ServeArgs),
    /// Make a CA and a serving certificate for the webhook.
    Certs(CertsArgs),
    /// Report the workloads behind TargetGroupBindings that will drop requests on their next
    /// rollout, with the fix (read-only; exit code 3 when a finding reaches --fail-on).
    Audit(crate::audit::shell::AuditArgs),
    /// Print the preStop sleep and grace period gracegate would inject, the time a new target
    /// needs to turn healthy and the rollout's duration, with the reasoning.
    Plan(PlanArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanOutput {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadBalancerArg {
    Application,
    Network,
}

/// `gracegate plan`: from flags (no cluster needed), or `--from-cluster`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The target group's deregistration_delay.timeout_seconds (D).
    #[arg(long, value_name = "SECONDS")]
    pub deregistration_delay: Option<u32>,

    /// Health-check interval; the load balancer's default when unset (ALB 15, NLB 30).
    #[arg(long, value_name = "SECONDS")]
    pub health_check_interval: Option<u32>,

    /// Consecutive passing checks before a target is healthy (ALB 5, NLB 3 by default).
    #[arg(long)]
    pub healthy_threshold: Option<u32>,

    #[arg(long, value_enum, default_value_t = LoadBalancerArg::Application)]
    pub load_balancer: LoadBalancerArg,

    /// The target group's measured p99 drain (pod deleted → target gone).
    #[arg(long, value_name = "SECONDS")]
    pub measured_drain_p99: Option<f64>,

    /// How many drains that p99 is over (it counts from 5).
    #[arg(long, default_value_t = 50)]
    pub measured_drains: usize,

    /// slow_start.duration_seconds, if any.
    #[arg(long, value_name = "SECONDS")]
    pub slow_start: Option<u32>,

    #[arg(long, default_value_t = 3)]
    pub replicas: u32,

    /// A count or a percentage, as in a Deployment.
    #[arg(long, default_value = "25%")]
    pub max_surge: String,

    /// A count or a percentage, as in a Deployment.
    #[arg(long, default_value = "25%")]
    pub max_unavailable: String,

    /// Seconds from a new pod's creation to serving (image pull, start-up).
    #[arg(long, default_value_t = 10)]
    pub pod_start_seconds: u32,

    /// Read the Deployment, its bindings and gracegate's records from the cluster (kubeconfig
    /// or in-cluster) instead of the flags above.
    #[arg(long, requires_all = ["namespace", "deployment"])]
    pub from_cluster: bool,

    #[arg(long, short = 'n')]
    pub namespace: Option<String>,

    #[arg(long)]
    pub deployment: Option<String>,

    /// Where gracegate runs (its gracegate-target-groups ConfigMap).
    #[arg(long, env = "GRACEGATE_NAMESPACE", default_value = "gracegate-system")]
    pub gracegate_namespace: String,

    /// Path to the kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: the current one).
    #[arg(long)]
    pub context: Option<String>,

    /// With --from-cluster: also read the target groups from ELBv2 (DescribeTargetGroups and
    /// DescribeTargetGroupAttributes, with the default AWS credentials).
    #[arg(long, requires = "from_cluster")]
    pub aws: bool,

    #[arg(long, env = "GRACEGATE_AWS_REGION")]
    pub aws_region: Option<String>,

    #[arg(long, env = "GRACEGATE_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    #[arg(long, short = 'o', value_enum, default_value_t = PlanOutput::Text)]
    pub output: PlanOutput,

    /// preStop sleep when nothing else says (as the webhook's flag).
    #[arg(long, default_value_t = 40)]
    pub prestop_seconds: u32,

    /// Cap on the preStop sleep (as the webhook's flag).
    #[arg(long, default_value_t = 120)]
    pub max_prestop_seconds: u32,

    /// Added to the sleep for terminationGracePeriodSeconds (as the webhook's flag).
    #[arg(long, default_value_t = 30)]
    pub shutdown_budget_seconds: u32,

    /// Added to the measured p99 drain (as the webhook's flag).
    #[arg(long, default_value_t = 5)]
    pub drain_margin_seconds: u32,
}

impl PlanArgs {
    pub fn timing(&self) -> TimingSettings {
        TimingSettings {
            prestop_seconds: self.prestop_seconds,
            max_prestop_seconds: self.max_prestop_seconds,
            shutdown_budget_seconds: self.shutdown_budget_seconds,
            drain_margin_seconds: self.drain_margin_seconds,
        }
    }
}

#[derive(Debug, Args)]
pub struct WatcherArgs {
    /// Plain-HTTP address for /livez, /readyz and /metrics.
    #[arg(long, env = "GRACEGATE_ADMIN_LISTEN", default_value = "[::]:8080")]
    pub admin_listen: SocketAddr,

    /// gracegate's own namespace, where the leader keeps the `gracegate-target-groups`
    /// ConfigMap; else the downward API's POD_NAMESPACE, else the client's default namespace.
    #[arg(long, env = "GRACEGATE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Readiness gate condition type prefix, as given to the webhook.
    #[arg(long, env = "GRACEGATE_CONDITION_PREFIX", default_value = DEFAULT_CONDITION_PREFIX)]
    pub condition_prefix: String,

    #[command(flatten)]
    pub watch: WatchArgs,

    #[command(flatten)]
    pub lease: LeaseArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub webhook: WebhookArgs,

    #[command(flatten)]
    pub watch: WatchArgs,

    #[command(flatten)]
    pub lease: LeaseArgs,
}

#[derive(Clone, Debug, Args)]
pub struct WatchArgs {
    /// AWS region; from the SDK's default chain (AWS_REGION, profile, instance metadata) if unset.
    #[arg(long, env = "GRACEGATE_AWS_REGION")]
    pub aws_region: Option<String>,

    /// ELBv2 endpoint, for emulators such as moto.
    #[arg(long, env = "GRACEGATE_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Describe calls per second (token bucket rate).
    #[arg(long, env = "GRACEGATE_AWS_RATE", default_value_t = 20.0)]
    pub aws_rate: f64,

    /// Describe calls that may go out at once (token bucket size).
    #[arg(long, env = "GRACEGATE_AWS_BURST", default_value_t = 40)]
    pub aws_burst: u32,

    /// A gate still pending this long after pod creation is set True (reason GateTimeout);
    /// `0` = never. E.g. `10m`, `90s`.
    #[arg(long, env = "GRACEGATE_GATE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub gate_timeout: std::time::Duration,

    /// Time between target health checks while any gate is pending.
    #[arg(long, env = "GRACEGATE_TICK", default_value = "1s", value_parser = parse_duration)]
    pub tick: std::time::Duration,

    /// How often a gated target group's facts (DescribeTargetGroups and
    /// DescribeTargetGroupAttributes) are read again, at most.
    #[arg(long, env = "GRACEGATE_FACTS_REFRESH", default_value = "10m", value_parser = parse_duration)]
    pub facts_refresh: std::time::Duration,
}

#[derive(Clone, Debug, Args)]
pub struct LeaseArgs {
    /// Lease that elects the one replica that writes conditions.
    #[arg(long, env = "GRACEGATE_LEASE_NAME", default_value = "gracegate")]
    pub lease_name: String,

    /// Namespace of the Lease. Unset: `POD_NAMESPACE` (the Deployment's own, via the downward
    /// API), else the client's default (the service account's namespace in a cluster, the
    /// kubeconfig context's outside).
    #[arg(long, env = "GRACEGATE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease. Unset: `POD_NAME` (via the downward API), else
    /// `HOSTNAME`.
    #[arg(long, env = "GRACEGATE_IDENTITY")]
    pub identity: Option<String>,

    /// How long a Lease holds without renewal: a crashed leader is replaced at most this long
    /// (+ up to 1 s) later. Shorter means more Lease writes: one every duration − renew-before.
    #[arg(long, env = "GRACEGATE_LEASE_DURATION", default_value = "5s", value_parser = parse_duration)]
    pub lease_duration: std::time::Duration,

    /// The holder renews this long before the Lease expires; also the clock skew tolerated
    /// between nodes. Whole seconds, less than --lease-duration.
    #[arg(long, env = "GRACEGATE_LEASE_RENEW_BEFORE", default_value = "2s", value_parser = parse_duration)]
    pub lease_renew_before: std::time::Duration,
}

impl LeaseArgs {
    /// Lease duration and renewal grace in whole seconds, as the Lease stores them.
    pub fn timings(&self) -> Result<(u64, u64)> {
        let (duration, grace) = (
            self.lease_duration.as_secs(),
            self.lease_renew_before.as_secs(),
        );
        if duration == 0 || grace >= duration {
            return Err(Error::Settings(format!(
                "--lease-renew-before ({grace}s) must be shorter than --lease-duration ({duration}s), \
                 both in whole seconds"
            )));
        }
        Ok((duration, grace))
    }
}

/// `90s`, `10m`, `1h`, `500ms`, or bare seconds.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 90s or 10m, got {s:?}"))?;
    let seconds = |k: u64| std::time::Duration::from_secs(n.saturating_mul(k));
    match unit {
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "ms" => Ok(std::time::Duration::from_millis(n)),
        _ => Err(format!(
            "unknown duration unit {unit:?} in {s:?} (use ms, s, m or h)"
        )),
    }
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// HTTPS address for `POST /mutate`. `[::]` is dual-stack (IPv4 too); IPv4 only on hosts
    /// without IPv6.
    #[arg(long, env = "GRACEGATE_LISTEN", default_value = "[::]:8443")]
    pub listen: SocketAddr,

    /// Plain-HTTP address for /livez, /readyz and /metrics.
    #[arg(long, env = "GRACEGATE_ADMIN_LISTEN", default_value = "[::]:8080")]
    pub admin_listen: SocketAddr,

    /// PEM certificate chain; re-read when the file changes.
    #[arg(long, env = "GRACEGATE_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// PEM private key; re-read when the file changes.
    #[arg(long, env = "GRACEGATE_TLS_KEY")]
    pub tls_key: PathBuf,

    /// Read Namespaces, Services, Ingresses and TargetGroupBindings from this directory of
    /// YAML/JSON files instead of watching a cluster.
    #[arg(long, env = "GRACEGATE_OBJECTS")]
    pub objects: Option<PathBuf>,

    /// gracegate's own namespace, where the leader keeps the `gracegate-target-groups`
    /// ConfigMap; else the downward API's POD_NAMESPACE, else the client's default namespace.
    #[arg(long, env = "GRACEGATE_NAMESPACE")]
    pub namespace: Option<String>,

    /// How often the certificate files are checked for a change.
    #[arg(long, env = "GRACEGATE_CERT_RELOAD_SECONDS", default_value_t = 10)]
    pub cert_reload_seconds: u64,

    /// After SIGTERM, keep serving this long with /readyz false, so that the API server stops
    /// sending reviews here before the port closes.
    #[arg(long, env = "GRACEGATE_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,

    #[command(flatten)]
    pub inject: InjectArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The webhook's timeouts and caps on clients, the same on the HTTPS and the admin port.
#[derive(Clone, Debug, Args)]
pub struct LimitArgs {
    /// A new connection's TLS handshake, and then its first request's headers, each within this.
    #[arg(long, env = "GRACEGATE_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_timeout: std::time::Duration,

    /// From a request's headers to its answer, the body included; else 408 and the
    /// connection is closed.
    #[arg(long, env = "GRACEGATE_BODY_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub body_timeout: std::time::Duration,

    /// A connection the client sends nothing on for this long is closed.
    #[arg(long, env = "GRACEGATE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub idle_timeout: std::time::Duration,

    /// Open connections per port; one more is reset right after accept.
    #[arg(long, env = "GRACEGATE_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Requests being read or answered per port; one more is answered 503.
    #[arg(long, env = "GRACEGATE_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Largest request body; a larger one is answered 413 without being read whole.
    #[arg(long, env = "GRACEGATE_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1..=64 * 1024 * 1024))]
    pub max_body_bytes: u32,

    /// Concurrent streams on one HTTP/2 connection.
    #[arg(long, env = "GRACEGATE_HTTP2_MAX_STREAMS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,
}

impl LimitArgs {
    pub fn timeouts(&self) -> crate::webhook::conn::Timeouts {
        crate::webhook::conn::Timeouts {
            header: self.header_timeout,
            body: self.body_timeout,
            idle: self.idle_timeout,
        }
    }

    pub fn limits(&self) -> crate::webhook::conn::Limits {
        crate::webhook::conn::Limits {
            max_connections: self.max_connections as usize,
            max_in_flight: self.max_in_flight as usize,
            max_body_bytes: self.max_body_bytes as usize,
            http2_max_streams: self.http2_max_streams,
        }
    }
}

/// A [`parse_duration`] that is not zero.
fn parse_positive_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("must be more than 0, got {s:?}")),
        d => Ok(d),
    }
}

#[derive(Clone, Debug, Args)]
pub struct InjectArgs {
    /// preStop sleep when no annotation and no deregistration delay says otherwise.
    #[arg(long, env = "GRACEGATE_PRESTOP_SECONDS", default_value_t = 40)]
    pub prestop_seconds: u32,

    /// Cap on the preStop sleep, from a deregistration delay or an annotation.
    #[arg(long, env = "GRACEGATE_MAX_PRESTOP_SECONDS", default_value_t = 120)]
    pub max_prestop_seconds: u32,

    /// Added to the preStop sleep to give terminationGracePeriodSeconds.
    #[arg(long, env = "GRACEGATE_SHUTDOWN_BUDGET_SECONDS", default_value_t = 30)]
    pub shutdown_budget_seconds: u32,

    /// Added to a target group's measured p99 drain (once 5 drains are measured) for the
    /// preStop sleep.
    #[arg(long, env = "GRACEGATE_DRAIN_MARGIN_SECONDS", default_value_t = 5)]
    pub drain_margin_seconds: u32,

    /// `sleep`: native preStop sleep action (Kubernetes ≥ 1.30); `exec`: /bin/sh -c "sleep S";
    /// `auto`: by the API server's version, read once at start (`sleep` with --objects).
    #[arg(long, env = "GRACEGATE_PRESTOP_MODE", value_enum, default_value_t = PrestopMode::Auto)]
    pub prestop_mode: PrestopMode,

    /// Namespace label (KEY=VALUE) that opts a namespace in.
    #[arg(long, env = "GRACEGATE_NAMESPACE_LABEL", default_value = "elbv2.k8s.aws/pod-readiness-gate-inject=enabled", value_parser = parse_label)]
    pub namespace_label: (String, String),

    /// Readiness gate condition type prefix; the gate is PREFIX/<TargetGroupBinding name>.
    #[arg(long, env = "GRACEGATE_CONDITION_PREFIX", default_value = DEFAULT_CONDITION_PREFIX)]
    pub condition_prefix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrestopMode {
    Auto,
    Sleep,
    Exec,
}

impl PrestopMode {
    /// The action to inject, given the API server's version when it is known.
    /// The native sleep action is on by default from Kubernetes 1.30 (PodLifecycleSleepAction).
    pub fn resolve(self, server_version: Option<(u32, u32)>) -> PrestopAction {
        match (self, server_version) {
            (PrestopMode::Sleep, _) | (PrestopMode::Auto, None) => PrestopAction::Sleep,
            (PrestopMode::Exec, _) => PrestopAction::Exec,
            (PrestopMode::Auto, Some(version)) if version >= (1, 30) => PrestopAction::Sleep,
            (PrestopMode::Auto, Some(_)) => PrestopAction::Exec,
        }
    }
}

/// `major`/`minor` as `/version` reports them; EKS says e.g. minor `"30+"`.
pub fn parse_server_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    Some((digits(major)?, digits(minor)?))
}

impl InjectArgs {
    /// Check the flags and turn them into decision settings.
    pub fn settings(&self, prestop_action: PrestopAction) -> Result<Settings> {
        if self.prestop_seconds > self.max_prestop_seconds {
            return Err(Error::Settings(format!(
                "--prestop-seconds {} is above --max-prestop-seconds {}",
                self.prestop_seconds, self.max_prestop_seconds
            )));
        }
        if !is_dns_subdomain(&self.condition_prefix) {
            return Err(Error::Settings(format!(
                "--condition-prefix {:?} must be a DNS subdomain (lowercase letters, digits, '-' \
                 and '.', at most 253 characters), as the API server requires of a condition type's prefix",
                self.condition_prefix
            )));
        }
        Ok(Settings {
            timing: TimingSettings {
                prestop_seconds: self.prestop_seconds,
                max_prestop_seconds: self.max_prestop_seconds,
                shutdown_budget_seconds: self.shutdown_budget_seconds,
                drain_margin_seconds: self.drain_margin_seconds,
            },
            prestop_action,
            condition_prefix: self.condition_prefix.clone(),
            namespace_label: self.namespace_label.clone(),
        })
    }
}

fn parse_label(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The webhook's Service name.
    #[arg(long, env = "GRACEGATE_SERVICE", default_value = "gracegate")]
    pub service: String,

    /// The webhook's namespace.
    #[arg(long, env = "GRACEGATE_NAMESPACE", default_value = "gracegate-system")]
    pub namespace: String,

    /// Directory for ca.crt, ca.key, tls.crt, tls.key and ca-bundle.
    #[arg(long, env = "GRACEGATE_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,

    /// Validity of the serving certificate.
    #[arg(long, env = "GRACEGATE_CERT_VALID_DAYS", default_value_t = 365)]
    pub valid_days: i64,

    /// Start a CA rotation: a new CA, and a ca-bundle trusting the old and the new one; the
    /// serving certificate is left as it is. Without it, the CA in --out is kept.
    #[arg(
        long,
        env = "GRACEGATE_CERTS_NEW_CA",
        conflicts_with = "drop_previous_ca"
    )]
    pub new_ca: bool,

    /// Finish a CA rotation: the ca-bundle trusts the current CA only.
    #[arg(long, env = "GRACEGATE_CERTS_DROP_PREVIOUS_CA")]
    pub drop_previous_ca: bool,
}

impl CertsArgs {
    pub fn step(&self) -> crate::certs::CaStep {
        match (self.new_ca, self.drop_previous_ca) {
            (true, _) => crate::certs::CaStep::NewCa,
            (false, true) => crate::certs::CaStep::DropPreviousCa,
            (false, false) => crate::certs::CaStep::Reuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn server_version(
        #[case] major: &str,
        #[case] minor: &str,
        #[case] expected: Option<(u32, u32)>,
    ) {
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
            Cli::try_parse_from(["gracegate", "webhook", "--tls-cert", "c", "--tls-key", "k"])
                .unwrap();
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
        let cli = Cli::try_parse_from(["gracegate", "serve", "--tls-cert", "c", "--tls-key", "k"])
            .unwrap();
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
            Cli::try_parse_from(["gracegate", "webhook", "--tls-cert", "c", "--tls-key", "k"])
                .unwrap();
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
}
