//! The flags of `gracegate webhook`, `watcher` and `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{parse_duration, parse_positive_duration};
use crate::inject::waiter::{self, DrainMode, DrainSettings};
use crate::inject::{DEFAULT_CONDITION_PREFIX, PrestopAction, Settings};
use crate::timing::TimingSettings;
use crate::{Error, Result};

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

    /// Drain-wait long polls held at once, each an open connection; one more is answered 503
    /// `busy` and its waiter asks again.
    #[arg(long, env = "GRACEGATE_MAX_DRAIN_WAITS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_drain_waits: u32,
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

#[derive(Clone, Debug, Args)]
pub struct InjectArgs {
    /// preStop sleep when no annotation and no deregistration delay says otherwise.
    #[arg(long, env = "GRACEGATE_PRESTOP_SECONDS", default_value_t = 40)]
    pub prestop_seconds: u32,

    /// Cap on the preStop sleep, from a deregistration delay or an annotation.
    #[arg(long, env = "GRACEGATE_MAX_PRESTOP_SECONDS", default_value_t = 120)]
    pub max_prestop_seconds: u32,

    /// Cap on the preStop sleep from measured drains and from --nlb-prestop-seconds.
    #[arg(
        long,
        env = "GRACEGATE_MAX_MEASURED_PRESTOP_SECONDS",
        default_value_t = 300
    )]
    pub max_measured_prestop_seconds: u32,

    /// preStop sleep behind a network load balancer target group with under 20 drains
    /// measured (NLBs are reported to route to draining targets ~2 min); 0 turns it off.
    #[arg(long, env = "GRACEGATE_NLB_PRESTOP_SECONDS", default_value_t = 135)]
    pub nlb_prestop_seconds: u32,

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

    /// How a pod behind a binding waits for the load balancer when it terminates: `sleep` a
    /// preStop of S, or `wait` until gracegate says its targets have left (at most
    /// --drain-wait-max-seconds). The annotation gracegate.io/drain on a pod or its namespace
    /// overrides it.
    #[arg(long, env = "GRACEGATE_DRAIN_MODE", default_value = "sleep", value_parser = parse_drain_mode)]
    pub drain_mode: DrainMode,

    /// The URL drain waiters ask (the webhook's Service, port 443).
    #[arg(long, env = "GRACEGATE_DRAIN_WAIT_URL", default_value = waiter::DEFAULT_URL)]
    pub drain_wait_url: String,

    /// PEM CA bundle handed to drain waiters to verify gracegate's certificate; default:
    /// `ca.crt` beside --tls-cert (cert-manager's Secret and `gracegate certs` both hold it).
    #[arg(long, env = "GRACEGATE_DRAIN_WAIT_CA")]
    pub drain_wait_ca: Option<PathBuf>,

    /// A drain wait's deadline, S: the waiter ends then whatever gracegate says or whether it
    /// answers at all.
    #[arg(long, env = "GRACEGATE_DRAIN_WAIT_MAX_SECONDS", default_value_t = waiter::DEFAULT_MAX_SECONDS)]
    pub drain_wait_max_seconds: u32,

    /// The image of the init container that puts the waiter into a drain-waiting pod; default:
    /// the image this replica runs (read from its own Pod, `POD_NAME`), else
    /// ghcr.io/gracegate/gracegate at this version.
    #[arg(long, env = "GRACEGATE_WAITER_IMAGE")]
    pub waiter_image: Option<String>,
}

pub(crate) fn parse_drain_mode(s: &str) -> std::result::Result<DrainMode, String> {
    match s {
        "sleep" => Ok(DrainMode::Sleep),
        "wait" => Ok(DrainMode::Wait),
        _ => Err(format!("expected sleep or wait, got {s:?}")),
    }
}

impl InjectArgs {
    /// Check the flags and turn them into decision settings.
    pub fn settings(&self, prestop_action: PrestopAction) -> Result<Settings> {
        let timing = TimingSettings {
            prestop_seconds: self.prestop_seconds,
            max_prestop_seconds: self.max_prestop_seconds,
            max_measured_prestop_seconds: self.max_measured_prestop_seconds,
            nlb_prestop_seconds: self.nlb_prestop_seconds,
            shutdown_budget_seconds: self.shutdown_budget_seconds,
            drain_margin_seconds: self.drain_margin_seconds,
        };
        timing.check().map_err(Error::Settings)?;
        if !is_dns_subdomain(&self.condition_prefix) {
            return Err(Error::Settings(format!(
                "--condition-prefix {:?} must be a DNS subdomain (lowercase letters, digits, '-' \
                 and '.', at most 253 characters), as the API server requires of a condition type's prefix",
                self.condition_prefix
            )));
        }
        let drain = DrainSettings {
            mode: self.drain_mode,
            url: self.drain_wait_url.clone(),
            ca_pem: None,
            max_seconds: self.drain_wait_max_seconds,
            image: self
                .waiter_image
                .clone()
                .unwrap_or_else(|| waiter::DEFAULT_IMAGE.to_string()),
        };
        drain.check().map_err(Error::Settings)?;
        Ok(Settings {
            timing,
            prestop_action,
            condition_prefix: self.condition_prefix.clone(),
            namespace_label: self.namespace_label.clone(),
            drain,
        })
    }
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

    /// A drain wait is released once every target of its pod has been unlisted this long.
    #[arg(long, env = "GRACEGATE_DRAIN_SETTLE_SECONDS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=600))]
    pub drain_settle_seconds: u32,
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
