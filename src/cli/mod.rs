//! Command line: every flag of the subcommands that run in a cluster (and `certs`) can also
//! come from a `GRACEGATE_*` environment variable; `plan` and `audit` take plain flags.
//!
//! The flags of every command live here, one file per command family, and the commands import
//! them from here: nothing in this folder imports a command.
//!
//! * `serve.rs`: `webhook`, `watcher` and `serve` (the webhook's, the watcher's and the Lease's flags);
//! * `plan.rs`, `audit.rs`, `certs.rs`: one command each.

mod audit;
mod certs;
mod plan;
mod serve;

pub use audit::{AuditArgs, FailOn};
pub use certs::CertsArgs;
pub use plan::{LoadBalancerArg, PlanArgs, PlanOutput};
pub use serve::{
    InjectArgs, LeaseArgs, LimitArgs, PrestopMode, ServeArgs, WatchArgs, WatcherArgs, WebhookArgs,
    parse_server_version,
};

use clap::{Parser, Subcommand};

pub use crate::logging::LogFormat;

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
    Audit(AuditArgs),
    /// Print the preStop sleep and grace period gracegate would inject, the time a new target
    /// needs to turn healthy and the rollout's duration, with the reasoning.
    Plan(PlanArgs),
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

/// A [`parse_duration`] that is not zero.
pub(crate) fn parse_positive_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("must be more than 0, got {s:?}")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests;
