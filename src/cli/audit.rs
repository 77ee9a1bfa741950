//! The flags of `gracegate audit` (also `kubectl gracegate audit`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{InjectArgs, parse_duration};
use crate::audit::Severity;
use crate::audit::output::Format;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Audit this namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,

    /// Audit every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// Exit with code 3 when a finding is at least this severe.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,

    /// Path to the kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,

    /// gracegate's namespace, where the `gracegate-target-groups` ConfigMap lives.
    #[arg(long, env = "GRACEGATE_NAMESPACE", default_value = "gracegate-system")]
    pub gracegate_namespace: String,

    /// The watcher's --gate-timeout: gates pending longer than half of it are reported stuck.
    #[arg(long, env = "GRACEGATE_GATE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub gate_timeout: Duration,

    /// Also ask ELBv2 (DescribeTargetGroups, DescribeTargetGroupAttributes) for the
    /// deregistration delays the ConfigMap and annotations do not give. Off by default: audit
    /// makes no AWS call unless asked.
    #[arg(long)]
    pub aws: bool,

    /// AWS region for --aws; from the SDK's default chain if unset.
    #[arg(long, env = "GRACEGATE_AWS_REGION", requires = "aws")]
    pub aws_region: Option<String>,

    /// ELBv2 endpoint for --aws (emulators).
    #[arg(long, env = "GRACEGATE_AWS_ENDPOINT_URL", requires = "aws")]
    pub aws_endpoint_url: Option<String>,

    /// The webhook's settings, to compute what it would inject (same flags and variables).
    #[command(flatten)]
    pub inject: InjectArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Warn,
    Risk,
}

impl FailOn {
    pub fn severity(self) -> Severity {
        match self {
            FailOn::Warn => Severity::Warn,
            FailOn::Risk => Severity::Risk,
        }
    }
}
