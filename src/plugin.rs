//! Running as a kubectl plugin: kubectl runs `kubectl-gracegate` from `PATH` for
//! `kubectl gracegate ...` (<https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/>),
//! so the binary, installed under both names (`make install`), checks what it was called.

use std::ffi::OsString;
use std::path::Path;

use clap::FromArgMatches;

use crate::cli::Cli;

/// The plugin's binary name.
pub const PLUGIN_BINARY: &str = "kubectl-gracegate";

/// Whether `argv0` names the plugin binary (any directory, `.exe` or not).
pub fn is_plugin(argv0: &OsString) -> bool {
    Path::new(argv0)
        .file_stem()
        .is_some_and(|stem| stem == PLUGIN_BINARY)
}

/// Parse the command line; help and usage say `kubectl gracegate` when run as the plugin.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = crate::cli::command();
    if args.first().is_some_and(is_plugin) {
        command = command.bin_name("kubectl gracegate");
    }
    let mut matches = command.try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

/// [`try_parse_from`] on the process's arguments; exits with clap's message on error.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("kubectl-gracegate", true)]
    #[case("/home/me/.local/bin/kubectl-gracegate", true)]
    #[case("kubectl-gracegate.exe", true)]
    #[case("gracegate", false)]
    #[case("/usr/bin/gracegate", false)]
    #[case("kubectl-gracegate-old", false)]
    fn plugin_name(#[case] argv0: &str, #[case] expected: bool) {
        assert_eq!(is_plugin(&OsString::from(argv0)), expected);
    }

    #[test]
    fn help_names_the_plugin_command() {
        let err = try_parse_from(["kubectl-gracegate", "audit", "--help"]).unwrap_err();
        assert!(
            err.to_string().contains("Usage: kubectl gracegate audit"),
            "{err}"
        );
        let err = try_parse_from(["gracegate", "audit", "--help"]).unwrap_err();
        assert!(err.to_string().contains("Usage: gracegate audit"), "{err}");
    }

    #[test]
    fn audit_flags() {
        let cli = try_parse_from([
            "kubectl-gracegate",
            "audit",
            "-A",
            "-o",
            "json",
            "--fail-on",
            "risk",
        ])
        .unwrap();
        let crate::cli::Command::Audit(args) = cli.command else {
            panic!("audit")
        };
        assert!(args.all_namespaces);
        assert_eq!(args.output, crate::audit::output::Format::Json);
        assert!(try_parse_from(["gracegate", "audit", "-A", "-n", "x"]).is_err());
        assert!(try_parse_from(["gracegate", "audit", "--fail-on", "info"]).is_err());
    }
}
