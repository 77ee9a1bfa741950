//! The wait: ask gracegate until it releases this pod, or until the deadline.
//!
//! Why a preStop that waits, rather than a grace period shortened from outside: the kubelet
//! runs an `exec` hook with no timeout of its own (kubernetes/kubernetes
//! `pkg/kubelet/lifecycle/handlers.go`: `handlerRunner.Run` passes timeout 0 to
//! `RunInContainer`), bounded only by the grace period the termination started with
//! (`pkg/kubelet/kuberuntime/kuberuntime_container.go`: `executePreStopHook` waits for the
//! hook or `gracePeriod` seconds; issue 14 found in the v1.36 source that a later, shorter
//! grace period does not interrupt it).
//! Only the hook ending early shortens a pod's end, so the hook must know when to end.
//!
//! The rules, from the drain-wait contract: never end before the deadline unless gracegate
//! released *this* pod (its uid); at the deadline, end whatever is going on; retry
//! everything else. The loop takes its clock, its transport and its log as arguments, so
//! the rules are tested here without sockets or sleeping.

use std::time::{Duration, Instant};

use crate::answer::{Verdict, classify};
use crate::backoff::Backoff;
use crate::failure::Failure;
use crate::http::Response;
use crate::random::Jitter;

/// A long poll that comes back sooner than this was not a long poll: the next ask waits
/// until this long after the previous one started, so a server that answers "not yet" at
/// once (a new leader, a bug) is not asked in a busy loop by every terminating pod.
pub const MIN_ASK_INTERVAL: Duration = Duration::from_secs(1);

pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration);
}

/// The real clock (monotonic).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// One ask of gracegate, over a new connection, ending by `deadline`.
pub trait Gracegate {
    fn ask(&mut self, deadline: Instant) -> Result<Response, Failure>;
}

/// How the wait ended.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// gracegate released this pod, `after` the start, saying why.
    Released { after: Duration, reason: String },
    /// The deadline came first.
    Deadline,
}

/// Where the loop stands, for logging once per change.
#[derive(Clone, Debug, PartialEq)]
enum State {
    Starting,
    /// gracegate answers "not yet", for this reason.
    Answering(String),
    NotLeader,
    Failing(Failure),
}

pub struct Wait<'a, C: Clock, G: Gracegate> {
    pub clock: &'a C,
    pub gracegate: &'a mut G,
    pub uid: &'a str,
    pub started: Instant,
    pub deadline: Instant,
    pub jitter: Jitter,
    pub say: &'a mut dyn FnMut(&str),
}

impl<C: Clock, G: Gracegate> Wait<'_, C, G> {
    pub fn run(mut self) -> End {
        let mut state = State::Starting;
        let mut backoff = Backoff::default();
        loop {
            let asked = self.clock.now();
            if asked >= self.deadline {
                return End::Deadline;
            }
            let verdict = match self.gracegate.ask(self.deadline) {
                Ok(response) => classify(&response, self.uid),
                Err(failure) => Verdict::Failed(failure),
            };
            let pause = match verdict {
                Verdict::Released { reason } => {
                    return End::Released {
                        after: self.clock.now().saturating_duration_since(self.started),
                        reason,
                    };
                }
                Verdict::NotYet { reason } => {
                    let line = match &state {
                        State::Answering(before) if *before == reason => None,
                        State::Answering(_) | State::Starting => Some(not_yet(&reason)),
                        State::NotLeader | State::Failing(_) => Some(format!(
                            "gracegate is answering again; {}",
                            not_yet(&reason)
                        )),
                    };
                    self.transition(&mut state, State::Answering(reason), line);
                    backoff.reset();
                    (asked + MIN_ASK_INTERVAL).saturating_duration_since(self.clock.now())
                }
                Verdict::NotLeader { reason } => {
                    let line = (state != State::NotLeader).then(|| {
                        let reason = if reason.is_empty() { "503".into() } else { reason };
                        format!(
                            "reached a gracegate replica that is not the leader ({reason}); reconnecting"
                        )
                    });
                    self.transition(&mut state, State::NotLeader, line);
                    // Backoff, not a fixed short pause: while no replica leads (a crashed
                    // leader's Lease runs out), every waiter of the cluster gets 503s, each
                    // costing gracegate a TLS handshake; doubling keeps a thousand waiters at
                    // under one ask a second each after a few tries.
                    backoff.next(&mut self.jitter)
                }
                Verdict::Failed(failure) => {
                    let line = (state != State::Failing(failure.clone())).then(|| {
                        if failure.is_answer() {
                            format!("gracegate's answer is no release: {failure}; retrying until the deadline")
                        } else {
                            format!("cannot reach gracegate: {failure}; retrying until the deadline")
                        }
                    });
                    self.transition(&mut state, State::Failing(failure), line);
                    backoff.next(&mut self.jitter)
                }
            };
            let left = self.deadline.saturating_duration_since(self.clock.now());
            if !pause.is_zero() {
                self.clock.sleep(pause.min(left));
            }
        }
    }

    fn transition(&mut self, state: &mut State, next: State, line: Option<String>) {
        if let Some(line) = line {
            (self.say)(&line);
        }
        *state = next;
    }
}

fn not_yet(reason: &str) -> String {
    if reason.is_empty() {
        "not released yet".into()
    } else {
        format!("not released yet: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Step;
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::io;

    const UID: &str = "uid-1";

    /// A clock that only moves when slept on or when an ask takes time.
    struct FakeClock {
        now: Cell<Instant>,
        slept: Cell<Vec<Duration>>,
    }

    impl FakeClock {
        fn new(start: Instant) -> Self {
            FakeClock {
                now: Cell::new(start),
                slept: Cell::new(Vec::new()),
            }
        }
        fn advance(&self, d: Duration) {
            self.now.set(self.now.get() + d);
        }
        fn slept(&self) -> Vec<Duration> {
            let slept = self.slept.take();
            self.slept.set(slept.clone());
            slept
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.now.get()
        }
        fn sleep(&self, d: Duration) {
            let mut slept = self.slept.take();
            slept.push(d);
            self.slept.set(slept);
            self.advance(d);
        }
    }

    /// A scripted gracegate: each ask takes `took` of the fake clock (capped by the
    /// deadline, as the real transport is) and returns the next scripted result; the last
    /// one repeats.
    struct Script<'c> {
        clock: &'c FakeClock,
        results: VecDeque<(Duration, Result<Response, Failure>)>,
        asks: Vec<Instant>,
    }

    impl Gracegate for Script<'_> {
        fn ask(&mut self, deadline: Instant) -> Result<Response, Failure> {
            self.asks.push(self.clock.now());
            let (took, result) = if self.results.len() > 1 {
                self.results.pop_front().unwrap()
            } else {
                self.results[0].clone()
            };
            let left = deadline.saturating_duration_since(self.clock.now());
            self.clock.advance(took.min(left));
            if took > left {
                return Err(Failure::TimedOut(Step::Receive));
            }
            result
        }
    }

    fn json(status: u16, body: &str) -> Result<Response, Failure> {
        Ok(Response {
            status,
            body: body.as_bytes().to_vec(),
        })
    }

    fn release(uid: &str) -> Result<Response, Failure> {
        json(
            200,
            &format!(r#"{{"release":true,"uid":"{uid}","reason":"targets-gone"}}"#),
        )
    }

    fn not_yet(reason: &str) -> Result<Response, Failure> {
        json(
            200,
            &format!(r#"{{"release":false,"uid":"{UID}","reason":"{reason}"}}"#),
        )
    }

    fn refused() -> Result<Response, Failure> {
        Err(Failure::Io {
            step: Step::Connect,
            kind: io::ErrorKind::ConnectionRefused,
        })
    }

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    struct Outcome {
        end: End,
        lines: Vec<String>,
        asks: Vec<Duration>,
        slept: Vec<Duration>,
        ended_at: Duration,
    }

    fn run(max: Duration, script: Vec<(Duration, Result<Response, Failure>)>) -> Outcome {
        let start = Instant::now();
        let clock = FakeClock::new(start);
        let mut gracegate = Script {
            clock: &clock,
            results: script.into(),
            asks: Vec::new(),
        };
        let mut lines = Vec::new();
        let end = Wait {
            clock: &clock,
            gracegate: &mut gracegate,
            uid: UID,
            started: start,
            deadline: start + max,
            jitter: Jitter::seeded(1),
            say: &mut |line| lines.push(line.to_string()),
        }
        .run();
        Outcome {
            end,
            lines,
            asks: gracegate.asks.iter().map(|t| *t - start).collect(),
            slept: clock.slept(),
            ended_at: clock.now() - start,
        }
    }

    #[test]
    fn a_release_of_our_pod_ends_at_once() {
        let o = run(300 * S, vec![(3 * S, release(UID))]);
        assert_eq!(
            o.end,
            End::Released {
                after: 3 * S,
                reason: "targets-gone".into()
            }
        );
        assert_eq!(o.asks.len(), 1);
        assert!(o.lines.is_empty(), "main() logs the end");
    }

    #[test]
    fn long_polls_that_run_out_are_asked_again_at_once() {
        let o = run(
            300 * S,
            vec![
                (25 * S, not_yet("targets-draining")),
                (25 * S, not_yet("targets-draining")),
                (10 * S, not_yet("settling")),
                (2 * S, release(UID)),
            ],
        );
        assert_eq!(o.asks, [Duration::ZERO, 25 * S, 50 * S, 60 * S]);
        assert!(o.slept.is_empty());
        assert_eq!(
            o.end,
            End::Released {
                after: 62 * S,
                reason: "targets-gone".into()
            }
        );
        assert_eq!(
            o.lines,
            [
                "not released yet: targets-draining",
                "not released yet: settling"
            ],
            "one line per change of reason"
        );
    }

    #[test]
    fn quick_not_yets_are_asked_at_most_once_a_second() {
        let o = run(10 * S, vec![(5 * MS, not_yet("cold"))]);
        assert_eq!(o.end, End::Deadline);
        assert_eq!(o.ended_at, 10 * S);
        assert_eq!(o.asks.len(), 10);
        for pair in o.asks.windows(2) {
            assert_eq!(pair[1] - pair[0], MIN_ASK_INTERVAL);
        }
    }

    #[test]
    fn failures_back_off_up_to_2s_and_end_exactly_at_the_deadline() {
        let o = run(30 * S, vec![(MS, refused())]);
        assert_eq!(o.end, End::Deadline);
        assert_eq!(o.ended_at, 30 * S, "never earlier, and not later");
        assert!(
            o.slept.iter().all(|d| *d <= crate::backoff::CEILING),
            "{:?}",
            o.slept
        );
        assert!(o.slept[0] <= 100 * MS && o.slept[0] >= 50 * MS);
        assert!(o.asks.len() >= 15, "{} asks in 30 s", o.asks.len());
        assert_eq!(
            o.lines,
            ["cannot reach gracegate: connect: connection refused; retrying until the deadline"],
            "one line for one class of failure"
        );
    }

    #[test]
    fn a_release_for_another_uid_is_not_a_release() {
        let o = run(20 * S, vec![(10 * MS, release("someone-else"))]);
        assert_eq!(o.end, End::Deadline);
        assert_eq!(o.ended_at, 20 * S);
        assert!(o.asks.len() > 5);
        assert_eq!(
            o.lines,
            [
                "gracegate's answer is no release: a release for uid someone-else, not ours; retrying until the deadline"
            ]
        );
    }

    #[test]
    fn errors_of_every_kind_wait_for_the_deadline() {
        for result in [
            json(500, "oops"),
            json(400, r#"{"reason":"bad uid"}"#),
            json(200, "not json"),
            json(200, r#"{"release":true}"#),
            Err(Failure::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))),
            Err(Failure::TimedOut(Step::Connect)),
        ] {
            let o = run(15 * S, vec![(20 * MS, result.clone())]);
            assert_eq!(o.end, End::Deadline, "{result:?}");
            assert_eq!(o.ended_at, 15 * S, "{result:?}");
        }
    }

    #[test]
    fn a_hanging_ask_is_cut_by_the_deadline() {
        let o = run(10 * S, vec![(3600 * S, release(UID))]);
        assert_eq!(o.end, End::Deadline);
        assert_eq!(o.ended_at, 10 * S);
    }

    #[test]
    fn a_leader_change_reconnects_quickly_then_releases() {
        let not_leader = json(503, r#"{"release":false,"reason":"not-leader"}"#);
        let o = run(
            300 * S,
            vec![
                (5 * S, not_yet("targets-draining")),
                (5 * MS, refused()),
                (5 * MS, not_leader.clone()),
                (5 * MS, not_leader.clone()),
                (5 * MS, not_leader),
                (4 * S, release(UID)),
            ],
        );
        assert!(matches!(o.end, End::Released { .. }));
        assert_eq!(o.asks.len(), 6);
        // The refusal and the 503s after it share one backoff, doubling from 100 ms: the
        // n-th pause is within [c/2, c], c = 100 ms × 2ⁿ.
        assert_eq!(o.slept.len(), 4);
        for (n, pause) in o.slept.iter().enumerate() {
            let cap = (100 * MS * 2u32.pow(n as u32)).min(2 * S);
            assert!(*pause >= cap / 2 && *pause <= cap, "pause {n}: {pause:?}");
        }
        assert_eq!(
            o.lines,
            [
                "not released yet: targets-draining",
                "cannot reach gracegate: connect: connection refused; retrying until the deadline",
                "reached a gracegate replica that is not the leader (not-leader); reconnecting",
            ]
        );
    }

    #[test]
    fn recovery_is_logged_and_resets_the_backoff() {
        let o = run(
            300 * S,
            vec![
                (MS, refused()),
                (MS, refused()),
                (MS, refused()),
                (MS, refused()),
                (MS, refused()),
                (20 * S, not_yet("targets-draining")),
                (MS, json(500, "")),
                (MS, release(UID)),
            ],
        );
        assert!(matches!(o.end, End::Released { .. }));
        assert!(
            o.slept[5] <= 100 * MS,
            "the backoff starts over: {:?}",
            o.slept
        );
        assert_eq!(
            o.lines,
            [
                "cannot reach gracegate: connect: connection refused; retrying until the deadline",
                "gracegate is answering again; not released yet: targets-draining",
                "gracegate's answer is no release: HTTP status 500; retrying until the deadline",
            ]
        );
    }

    #[test]
    fn a_zero_deadline_never_asks() {
        let o = run(Duration::ZERO, vec![(MS, release(UID))]);
        assert_eq!(o.end, End::Deadline);
        assert!(o.asks.is_empty());
    }
}
