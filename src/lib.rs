//! gracegate: rolling updates behind AWS load balancers that lose no requests.
//!
//! A pure core with thin shells around it, on four floors (ARCHITECTURE.md); a module imports
//! only from its own floor or below, and nothing of the pure core imports a shell:
//!
//! 0. words: [`elb`] (target groups, targets, health, load balancer kinds, facts), [`binding`]
//!    (the TargetGroupBinding), [`facts`] (measured drains, the records), [`objects`] (a
//!    namespace's objects);
//! 1. decisions, no I/O: [`timing`], [`inject`], [`health`], [`targets`], [`drain`],
//!    [`release`], [`plan`], [`audit`]'s checks;
//! 2. shells: [`webhook`], [`watcher`], [`waits`], [`cluster`], [`aws`], [`election`], [`certs`],
//!    [`metrics`], [`logging`];
//! 3. commands: [`cli`] (every flag), [`serve`] (`webhook`, `watcher`, `serve`), [`plugin`],
//!    `audit::shell`, `plan::cluster`.

pub mod audit;
pub mod aws;
pub mod binding;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod drain;
pub mod elb;
pub mod election;
pub mod facts;
pub mod health;
pub mod inject;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod objects;
pub mod plan;
pub mod plugin;
pub mod release;
pub mod serve;
pub mod targets;
pub mod timing;
pub mod waits;
pub mod watcher;
pub mod webhook;

/// Everything that can go wrong in gracegate's shells. The pure core does not fail: it turns
/// odd input into warnings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Sources are not repeated in the messages: error reports print the chain.
    #[error("Kubernetes API")]
    Kube(#[from] kube::Error),

    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    Objects { path: String, message: String },

    #[error("TLS: {0}")]
    Tls(String),

    #[error("certificate generation")]
    Certificate(#[from] rcgen::Error),

    #[error("invalid setting: {0}")]
    Settings(String),

    #[error("leader election: {0}")]
    Lease(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, one line: `certs/tls.crt: No such file or directory (os error 2)`.
/// For log lines: `Error`'s own messages leave the source out, so that reports which walk
/// the chain (anyhow's) do not repeat it.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !line.ends_with(&cause_text) {
            line.push_str(": ");
            line.push_str(&cause_text);
        }
        source = cause.source();
    }
    line
}

impl Error {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_carries_the_os_error_behind_a_path() {
        let error = Error::io(
            "certs/tls.crt",
            std::io::Error::from_raw_os_error(2), // ENOENT
        );
        assert_eq!(error.to_string(), "certs/tls.crt");
        let line = report(&error);
        assert!(line.starts_with("certs/tls.crt: "), "{line}");
        assert!(line.contains("os error 2"), "{line}");
        // A message that already ends with its source is not repeated.
        let settings = Error::Settings("x".into());
        assert_eq!(report(&settings), "invalid setting: x");
    }
}
