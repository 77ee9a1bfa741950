//! The flags of `gracegate plan`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::inject::waiter::{self, DrainMode, DrainSettings};
use crate::timing::TimingSettings;

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

    /// Cap on the preStop sleep from measured drains and the NLB default (as the webhook's flag).
    #[arg(long, default_value_t = 300)]
    pub max_measured_prestop_seconds: u32,

    /// preStop sleep for an NLB with under 20 drains measured; 0 off (as the webhook's flag).
    #[arg(long, default_value_t = 135)]
    pub nlb_prestop_seconds: u32,

    /// Added to the sleep for terminationGracePeriodSeconds (as the webhook's flag).
    #[arg(long, default_value_t = 30)]
    pub shutdown_budget_seconds: u32,

    /// Added to the measured p99 drain (as the webhook's flag).
    #[arg(long, default_value_t = 5)]
    pub drain_margin_seconds: u32,

    /// `wait`: plan the drain wait (the pod stops when its target leaves, at most
    /// --drain-wait-max-seconds) instead of a sleep; with --from-cluster the workload's and its
    /// namespace's gracegate.io/drain annotations win (as the webhook's flag).
    #[arg(long, default_value = "sleep", value_parser = super::serve::parse_drain_mode)]
    pub drain_mode: DrainMode,

    /// A drain wait's deadline S (as the webhook's flag).
    #[arg(long, default_value_t = waiter::DEFAULT_MAX_SECONDS)]
    pub drain_wait_max_seconds: u32,
}

impl PlanArgs {
    /// The drain wait's settings as far as `S` goes (no CA, URL or image: nothing is injected).
    pub fn drain(&self) -> DrainSettings {
        DrainSettings {
            mode: self.drain_mode,
            max_seconds: self.drain_wait_max_seconds,
            ..DrainSettings::default()
        }
    }

    pub fn timing(&self) -> TimingSettings {
        TimingSettings {
            prestop_seconds: self.prestop_seconds,
            max_prestop_seconds: self.max_prestop_seconds,
            max_measured_prestop_seconds: self.max_measured_prestop_seconds,
            nlb_prestop_seconds: self.nlb_prestop_seconds,
            shutdown_budget_seconds: self.shutdown_budget_seconds,
            drain_margin_seconds: self.drain_margin_seconds,
        }
    }
}
