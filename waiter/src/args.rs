//! The command line.
//!
//! `wait` never refuses to run: whatever is wrong with its arguments (the webhook built them,
//! so a problem here is a gracegate bug or a hand-edited pod), the safe thing for a preStop is
//! to keep the pod serving until the deadline, the fixed sleep the pod would otherwise get.
//! So `wait` collects every problem for one log line instead of exiting with a usage error.
//! The other commands fail fast with a usage error (exit 2).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::url::Endpoint;

/// The deadline when `--max-seconds` is missing or not a number: the documented default
/// ceiling of `--drain-wait-max-seconds`.
pub const DEFAULT_MAX_SECONDS: u64 = 300;

pub const ENV_POD_NAME: &str = "GRACEGATE_POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "GRACEGATE_POD_NAMESPACE";
pub const ENV_POD_UID: &str = "GRACEGATE_POD_UID";

pub const USAGE: &str = "\
usage:
  gracegate-wait install DEST
      copy this executable to DEST (mode 0755, atomically); the init container's command
  gracegate-wait wait --url URL --max-seconds N (--ca PEM | --ca-file PATH)
                      [--pod-name NAME] [--pod-namespace NS] [--pod-uid UID]
      the preStop: ask gracegate at URL whether this pod may stop, until it says so or N
      seconds have passed; always exits 0. The pod defaults to $GRACEGATE_POD_NAME,
      $GRACEGATE_POD_NAMESPACE and $GRACEGATE_POD_UID.
  gracegate-wait --version | --help";

#[derive(Debug, PartialEq)]
pub enum Command {
    Install(PathBuf),
    Wait(Wait),
    Help,
    Version,
}

#[derive(Debug, PartialEq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `wait` was asked to do.
#[derive(Debug, PartialEq)]
pub struct Wait {
    /// From `--max-seconds`, else [`DEFAULT_MAX_SECONDS`].
    pub max: Duration,
    /// Everything needed to ask gracegate, or every problem that prevents it.
    pub ask: Result<Ask, Vec<Problem>>,
}

#[derive(Debug, PartialEq)]
pub struct Ask {
    pub endpoint: Endpoint,
    pub ca: Ca,
    pub pod: Pod,
}

/// The CA bundle: inline PEM as the webhook injects it, or a file (tests only).
#[derive(Debug, PartialEq)]
pub enum Ca {
    Inline(String),
    File(PathBuf),
}

/// The terminating pod, from the downward API.
#[derive(Clone, Debug, PartialEq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// One thing wrong with `wait`'s arguments, as the log line says it.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem(pub String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads the arguments after the program name; `env` looks up environment variables.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Err(UsageError("no command given".into()));
    };
    match command.to_str() {
        Some("wait") => Ok(Command::Wait(wait(args.collect(), env))),
        Some("install") => {
            let rest: Vec<OsString> = args.collect();
            match rest.as_slice() {
                [dest] if !dest.is_empty() && !dest.to_string_lossy().starts_with('-') => {
                    Ok(Command::Install(PathBuf::from(dest)))
                }
                [] => Err(UsageError("install needs a destination path".into())),
                _ => Err(UsageError(
                    "install takes exactly one argument, the destination path".into(),
                )),
            }
        }
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version" | "version") => Ok(Command::Version),
        _ => Err(UsageError(format!(
            "unknown command {:?}",
            command.to_string_lossy()
        ))),
    }
}

const FLAGS: [&str; 7] = [
    "--url",
    "--max-seconds",
    "--ca",
    "--ca-file",
    "--pod-name",
    "--pod-namespace",
    "--pod-uid",
];

fn wait(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<OsString>) -> Wait {
    let mut problems = Vec::new();
    let mut values: [Option<String>; FLAGS.len()] = Default::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        let Some(slot) = FLAGS.iter().position(|&known| known == flag) else {
            problems.push(Problem(if flag.starts_with('-') {
                format!("unknown flag {flag}")
            } else {
                format!("unexpected argument {arg:?}")
            }));
            continue;
        };
        let value = match inline {
            Some(value) => Some(OsString::from(value)),
            None => args.next(),
        };
        let Some(value) = value else {
            problems.push(Problem(format!("{flag} needs a value")));
            continue;
        };
        let Some(value) = value.to_str() else {
            problems.push(Problem(format!("{flag} is not UTF-8")));
            continue;
        };
        if values[slot].is_some() {
            problems.push(Problem(format!("{flag} is given twice")));
            continue;
        }
        values[slot] = Some(value.to_string());
    }
    let [
        url,
        max_seconds,
        ca,
        ca_file,
        pod_name,
        pod_namespace,
        pod_uid,
    ] = values;

    let max_seconds = match max_seconds {
        Some(text) => match seconds(&text) {
            Some(seconds) => seconds,
            None => {
                problems.push(Problem(format!(
                    "--max-seconds {text:?} is not a whole number of seconds; the deadline is {DEFAULT_MAX_SECONDS}s"
                )));
                DEFAULT_MAX_SECONDS
            }
        },
        None => {
            problems.push(Problem(format!(
                "--max-seconds is missing; the deadline is {DEFAULT_MAX_SECONDS}s"
            )));
            DEFAULT_MAX_SECONDS
        }
    };

    let endpoint = match url {
        Some(url) => Endpoint::parse(&url)
            .map_err(|e| problems.push(Problem(format!("--url {url:?}: {e}"))))
            .ok(),
        None => {
            problems.push(Problem("--url is missing".into()));
            None
        }
    };

    let ca = match (ca, ca_file) {
        (Some(pem), None) => Some(Ca::Inline(pem)),
        (None, Some(path)) => Some(Ca::File(PathBuf::from(path))),
        (Some(_), Some(_)) => {
            problems.push(Problem("give --ca or --ca-file, not both".into()));
            None
        }
        (None, None) => {
            problems.push(Problem("the CA bundle is missing (--ca)".into()));
            None
        }
    };

    let mut identity =
        |flag: Option<String>, flag_name: &str, var: &str, what: &str, valid: fn(&str) -> bool| {
            let value = flag.or_else(|| env(var).map(|v| v.to_string_lossy().into_owned()));
            match value {
                Some(value) if valid(&value) => Some(value),
                Some(value) if value.is_empty() => {
                    problems.push(Problem(format!(
                        "the pod {what} is empty ({flag_name} or {var})"
                    )));
                    None
                }
                Some(value) => {
                    problems.push(Problem(format!("the pod {what} {value:?} is not valid")));
                    None
                }
                None => {
                    problems.push(Problem(format!(
                        "the pod {what} is missing ({flag_name} or {var})"
                    )));
                    None
                }
            }
        };
    let namespace = identity(
        pod_namespace,
        "--pod-namespace",
        ENV_POD_NAMESPACE,
        "namespace",
        dns_label,
    );
    let name = identity(pod_name, "--pod-name", ENV_POD_NAME, "name", dns_subdomain);
    let uid = identity(pod_uid, "--pod-uid", ENV_POD_UID, "uid", uid);

    let ask = match (endpoint, ca, namespace, name, uid) {
        (Some(endpoint), Some(ca), Some(namespace), Some(name), Some(uid))
            if problems.is_empty() =>
        {
            Ok(Ask {
                endpoint,
                ca,
                pod: Pod {
                    namespace,
                    name,
                    uid,
                },
            })
        }
        _ => Err(problems),
    };
    Wait {
        max: Duration::from_secs(max_seconds),
        ask,
    }
}

/// A whole number of seconds, up to about 136 years (an `Instant` that far ahead cannot
/// overflow; a grace period is far shorter anyway).
fn seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().map(u64::from)
}

/// RFC 1123 label, as Kubernetes checks namespace names: a-z 0-9 -, 63 at most,
/// alphanumeric at both ends.
fn dns_label(text: &str) -> bool {
    text.len() <= 63 && subdomain_chars(text, false)
}

/// RFC 1123 subdomain, as Kubernetes checks pod names: also dots, 253 at most.
fn dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && subdomain_chars(text, true)
}

fn subdomain_chars(text: &str, dots: bool) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) if alnum(first) && alnum(last) => bytes
            .iter()
            .all(|&b| alnum(b) || b == b'-' || (dots && b == b'.')),
        _ => false,
    }
}

/// A pod uid is a UUID; anything of letters, digits and dashes is passed on (the server
/// compares it, the waiter only must not need to escape it).
fn uid(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const UID: &str = "5f0c3a52-6f4e-4b8e-9f51-3c1b2f0e7a11";
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, UsageError> {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        parse(args.iter().map(OsString::from), &|k| env.get(k).cloned())
    }

    fn wait(args: &[&str], env: &[(&str, &str)]) -> Wait {
        let mut all = vec!["wait"];
        all.extend_from_slice(args);
        match run(&all, env) {
            Ok(Command::Wait(wait)) => wait,
            other => panic!("{other:?}"),
        }
    }

    fn pod_env() -> Vec<(&'static str, &'static str)> {
        vec![
            (ENV_POD_NAME, "web-7d9f8-x2x9z"),
            (ENV_POD_NAMESPACE, "shop"),
            (ENV_POD_UID, UID),
        ]
    }

    fn problems(wait: &Wait) -> Vec<String> {
        match &wait.ask {
            Err(problems) => problems.iter().map(|p| p.0.clone()).collect(),
            Ok(ask) => panic!("no problem found: {ask:?}"),
        }
    }

    #[test]
    fn the_injected_command_line() {
        let w = wait(
            &[
                "--url",
                "https://gracegate.gracegate-system.svc",
                "--max-seconds",
                "300",
                "--ca",
                PEM,
            ],
            &pod_env(),
        );
        assert_eq!(w.max, Duration::from_secs(300));
        let ask = w.ask.unwrap();
        assert_eq!(
            ask.endpoint,
            Endpoint::parse("https://gracegate.gracegate-system.svc").unwrap()
        );
        assert_eq!(ask.ca, Ca::Inline(PEM.into()));
        assert_eq!(
            ask.pod,
            Pod {
                namespace: "shop".into(),
                name: "web-7d9f8-x2x9z".into(),
                uid: UID.into()
            }
        );
    }

    #[test]
    fn flags_win_over_env_and_equals_form_works() {
        let w = wait(
            &[
                "--url=https://10.0.0.1:8443",
                "--max-seconds=5",
                "--ca-file=/tmp/ca.pem",
                "--pod-name",
                "other",
                "--pod-namespace=ns2",
                "--pod-uid",
                "abc-1",
            ],
            &pod_env(),
        );
        let ask = w.ask.unwrap();
        assert_eq!(ask.ca, Ca::File("/tmp/ca.pem".into()));
        assert_eq!(
            ask.pod,
            Pod {
                namespace: "ns2".into(),
                name: "other".into(),
                uid: "abc-1".into()
            }
        );
        assert_eq!(w.max, Duration::from_secs(5));
    }

    #[test]
    fn a_pem_with_equals_signs_stays_whole() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB==\n-----END CERTIFICATE-----\n";
        let w = wait(
            &["--url", "https://g", "--max-seconds", "1", "--ca", pem],
            &pod_env(),
        );
        assert_eq!(w.ask.unwrap().ca, Ca::Inline(pem.into()));
    }

    #[test]
    fn missing_pod_identity_is_a_problem_not_an_exit() {
        let w = wait(
            &["--url", "https://g", "--max-seconds", "30", "--ca", PEM],
            &[],
        );
        assert_eq!(w.max, Duration::from_secs(30), "the deadline still holds");
        assert_eq!(
            problems(&w),
            [
                "the pod namespace is missing (--pod-namespace or GRACEGATE_POD_NAMESPACE)",
                "the pod name is missing (--pod-name or GRACEGATE_POD_NAME)",
                "the pod uid is missing (--pod-uid or GRACEGATE_POD_UID)",
            ]
        );
    }

    #[test]
    fn bad_values_are_problems() {
        let w = wait(
            &[
                "--url",
                "http://g",
                "--max-seconds",
                "30",
                "--ca",
                PEM,
                "--pod-name",
                "Web_1",
                "--pod-uid",
                "a/b",
            ],
            &[(ENV_POD_NAMESPACE, "")],
        );
        assert_eq!(
            problems(&w),
            [
                "--url \"http://g\": not an https:// URL",
                "the pod namespace is empty (--pod-namespace or GRACEGATE_POD_NAMESPACE)",
                "the pod name \"Web_1\" is not valid",
                "the pod uid \"a/b\" is not valid",
            ]
        );
    }

    #[test]
    fn unparseable_or_missing_max_seconds_means_300() {
        for value in ["", "abc", "-1", "1.5", " 30", "+30", "99999999999", "0x10"] {
            let w = wait(
                &["--url", "https://g", "--max-seconds", value, "--ca", PEM],
                &pod_env(),
            );
            assert_eq!(w.max, Duration::from_secs(300), "{value:?}");
            assert_eq!(problems(&w).len(), 1, "{value:?}");
            assert!(problems(&w)[0].contains("not a whole number"), "{value:?}");
        }
        let w = wait(&["--url", "https://g", "--ca", PEM], &pod_env());
        assert_eq!(w.max, Duration::from_secs(300));
        assert_eq!(
            problems(&w),
            ["--max-seconds is missing; the deadline is 300s"]
        );
        let w = wait(
            &["--url", "https://g", "--max-seconds", "0", "--ca", PEM],
            &pod_env(),
        );
        assert_eq!(w.max, Duration::ZERO);
        assert!(w.ask.is_ok());
        let w = wait(
            &[
                "--url",
                "https://g",
                "--max-seconds",
                "4294967295",
                "--ca",
                PEM,
            ],
            &pod_env(),
        );
        assert_eq!(w.max, Duration::from_secs(u64::from(u32::MAX)));
    }

    #[test]
    fn flag_mistakes_are_problems() {
        let w = wait(
            &[
                "--url",
                "https://g",
                "--url",
                "https://h",
                "--max-seconds",
                "3",
                "--ca",
                PEM,
                "--ca-file",
                "x",
                "--verbose",
                "stray",
                "--pod-uid",
            ],
            &pod_env(),
        );
        assert_eq!(
            problems(&w),
            [
                "--url is given twice",
                "unknown flag --verbose",
                "unexpected argument \"stray\"",
                "--pod-uid needs a value",
                "give --ca or --ca-file, not both",
            ]
        );
        assert_eq!(w.max, Duration::from_secs(3));
    }

    #[test]
    fn no_ca_is_a_problem() {
        let w = wait(&["--url", "https://g", "--max-seconds", "3"], &pod_env());
        assert_eq!(problems(&w), ["the CA bundle is missing (--ca)"]);
    }

    #[test]
    fn non_utf8_is_a_problem() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from("wait"),
            OsString::from("--url"),
            OsString::from_vec(vec![0xff, 0xfe]),
        ];
        let Ok(Command::Wait(w)) = parse(args, &|_| None) else {
            panic!()
        };
        assert!(problems(&w).contains(&"--url is not UTF-8".to_string()));
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            run(&["install", "/.gracegate/gracegate-wait"], &[]),
            Ok(Command::Install("/.gracegate/gracegate-wait".into()))
        );
        assert!(
            run(&["install"], &[])
                .unwrap_err()
                .0
                .contains("destination")
        );
        assert!(
            run(&["install", "a", "b"], &[])
                .unwrap_err()
                .0
                .contains("exactly one")
        );
        assert!(run(&["install", "--force"], &[]).is_err());
        assert_eq!(run(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(run(&["--version"], &[]), Ok(Command::Version));
        assert_eq!(run(&[], &[]).unwrap_err().0, "no command given");
        assert_eq!(
            run(&["sleep"], &[]).unwrap_err().0,
            "unknown command \"sleep\""
        );
    }

    #[test]
    fn kubernetes_names() {
        assert!(dns_label("kube-system") && dns_label("a") && dns_label(&"a".repeat(63)));
        assert!(
            !dns_label(&"a".repeat(64))
                && !dns_label("-a")
                && !dns_label("a-")
                && !dns_label("a.b")
                && !dns_label("A")
        );
        assert!(dns_subdomain("web-7d9f8.x2x9z") && !dns_subdomain("web."));
        assert!(uid(UID) && !uid("") && !uid("a b") && !uid("a?b"));
    }
}
