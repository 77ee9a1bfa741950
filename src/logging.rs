//! Logging setup: `tracing` to stderr, plain or JSON.
//!
//! Plain logs carry ANSI colour codes only when stderr is a terminal and `NO_COLOR` is unset
//! or empty (<https://no-color.org>): in files and `kubectl logs` escape codes are noise.
//! Stdout is left to commands' results (`audit`, `certs`).
//!
//! Field names are the same in every message, so JSON logs can be filtered on them: `pod`,
//! `namespace`, `target_group` (the target group's name or ARN), `reason`, `error`. A
//! review's line adds `uid`, `outcome` and, when they say something, what it changed
//! (`webhook::log_review`).

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Whether plain logs may use colour.
pub fn ansi(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber; the level comes from `RUST_LOG` (default `info`).
/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = ansi(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // Set once, at start: a second subscriber would be a bug.
    tracing::dispatcher::set_global_default(dispatch(format, ansi, filter, std::io::stderr))
        .expect("the global subscriber is set once");
}

/// The subscriber [`init`] installs, writing to `writer` (the benchmarks give it a sink).
pub fn dispatch<W>(format: LogFormat, ansi: bool, filter: EnvFilter, writer: W) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Plain => builder.with_ansi(ansi).finish().into(),
        LogFormat::Json => builder.json().flatten_event(true).finish().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi(true, None));
        assert!(ansi(true, Some(OsStr::new(""))));
        assert!(!ansi(true, Some(OsStr::new("1"))));
        assert!(!ansi(false, None));
        assert!(!ansi(false, Some(OsStr::new("1"))));
    }
}
