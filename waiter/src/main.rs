//! `gracegate-wait`: the drain-wait preStop of the pods gracegate serves.
//!
//! The webhook injects an init container that runs `gracegate-wait install` (copying this
//! static executable into an emptyDir) and a preStop `exec` of `gracegate-wait wait`, which
//! asks gracegate (a long poll) whether the pod's targets have left the load balancer, and
//! ends when they have, or at its deadline `--max-seconds`. It follows issue 14's drain-wait
//! contract between the webhook, the waiter and the leader; `waiter/README.md` maps that
//! contract to the code.

mod answer;
mod args;
mod backoff;
mod client;
mod deadline;
mod dns;
mod end;
mod failure;
mod http;
mod install;
mod log;
mod random;
mod tls;
mod url;
mod wait;

use std::process::ExitCode;
use std::time::Instant;

use args::{Ask, Ca, Command, Problem, USAGE};
use wait::{End, SystemClock, Wait};

fn main() -> ExitCode {
    // The deadline counts from here, the earliest the process can see.
    let started = Instant::now();
    match args::parse(std::env::args_os().skip(1), &|name| std::env::var_os(name)) {
        Ok(Command::Wait(wait)) => {
            drain_wait(started, wait);
            // Always 0: a failing preStop only adds a FailedPreStopHook event, and the
            // deadline having come is not a failure.
            ExitCode::SUCCESS
        }
        Ok(Command::Install(dest)) => match install::install(&dest) {
            Ok(bytes) => {
                eprintln!(
                    "{}installed {} ({bytes} bytes)",
                    log::PREFIX,
                    dest.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                // The kubelet restarts a failed init container and the pod does not start:
                // right, since its preStop could not run.
                eprintln!("{}cannot install {}: {error}", log::PREFIX, dest.display());
                ExitCode::FAILURE
            }
        },
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("gracegate-wait {}", http::VERSION);
            ExitCode::SUCCESS
        }
        Err(usage) => {
            eprintln!("{}{usage}\n{USAGE}", log::PREFIX);
            ExitCode::from(2)
        }
    }
}

fn drain_wait(started: Instant, wait: args::Wait) {
    log::init(std::env::var_os(log::ENV_COPY));
    let seconds = wait.max.as_secs();
    // --max-seconds fits in a u32, so this cannot overflow.
    let deadline = started + wait.max;
    end::start_watchdog(deadline, seconds);
    end::on_panic_wait_for(deadline, seconds);

    let ready = wait.ask.and_then(|ask| {
        let tls = trust(&ask.ca).map_err(|problem| vec![problem])?;
        Ok((ask, tls))
    });
    let end = match ready {
        Err(problems) => {
            let problems: Vec<String> = problems.iter().map(Problem::to_string).collect();
            log::say(&format!(
                "cannot ask gracegate: {}; waiting until the deadline of {seconds}s",
                problems.join("; ")
            ));
            end::sleep_until(deadline);
            End::Deadline
        }
        Ok((Ask { endpoint, pod, .. }, tls)) => {
            log::say(&format!(
                "waiting for gracegate to release pod {pod} at {endpoint}, at most {seconds}s"
            ));
            let uid = pod.uid.clone();
            // The only file `wait` reads (besides --ca-file): and only for a name to resolve.
            let resolv = match endpoint.host {
                url::Host::Name(_) => dns::conf::ResolvConf::read(),
                url::Host::Ip(_) => dns::conf::ResolvConf::default(),
            };
            let mut client = client::Client {
                endpoint,
                pod,
                tls,
                resolv,
            };
            Wait {
                clock: &SystemClock,
                gracegate: &mut client,
                uid: &uid,
                started,
                deadline,
                jitter: random::Jitter::seeded(random::u64()),
                say: &mut log::say,
            }
            .run()
        }
    };
    end::finish(&match end {
        End::Released { after, reason } if reason.is_empty() => {
            format!("released after {:.1}s", after.as_secs_f64())
        }
        End::Released { after, reason } => {
            format!("released after {:.1}s: {reason}", after.as_secs_f64())
        }
        End::Deadline => format!("deadline of {seconds}s reached; stopping"),
    });
}

/// The TLS client config for the CA bundle handed over.
fn trust(ca: &Ca) -> Result<std::sync::Arc<rustls::ClientConfig>, Problem> {
    let pem = match ca {
        Ca::Inline(pem) => pem.as_bytes().to_vec(),
        Ca::File(path) => std::fs::read(path)
            .map_err(|e| Problem(format!("cannot read --ca-file {}: {e}", path.display())))?,
    };
    tls::client_config(&pem).map_err(|e| Problem(e.to_string()))
}

#[cfg(test)]
mod tests {
    /// The image ships both binaries and the webhook's default `--waiter-image` is
    /// gracegate's own version: the User-Agent should say the same version.
    #[test]
    fn version_is_gracegates() {
        let root = include_str!("../../Cargo.toml");
        let version = root
            .lines()
            .find_map(|l| l.strip_prefix("version = \""))
            .and_then(|v| v.strip_suffix('"'))
            .expect("a version line in ../Cargo.toml");
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
    }
}
