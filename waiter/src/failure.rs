//! Why one ask of gracegate got no usable answer.
//!
//! The waiter logs one line per change of failure, not one per retry (a backoff of at most 2 s
//! over a 300 s deadline would otherwise write ~150 identical lines into the container's log),
//! so a failure's value is its *class*: what went wrong and at which step, never the address,
//! the port or the attempt. Two failures that compare equal are logged once.

use std::fmt;
use std::io;

use crate::dns::DnsFailure;
use crate::http::HttpFailure;

/// The step of one exchange with gracegate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Connect,
    Handshake,
    Send,
    Receive,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::Handshake => "TLS handshake",
            Step::Send => "send request",
            Step::Receive => "read response",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The URL's host name did not resolve.
    Dns(DnsFailure),
    /// A socket error at some step: refused, reset, unreachable, closed early.
    Io { step: Step, kind: io::ErrorKind },
    /// A step did not finish within its own timeout or before the deadline.
    TimedOut(Step),
    /// The TLS handshake failed: a certificate the CA bundle does not vouch for, a name
    /// mismatch, an alert from the server.
    Tls(rustls::Error),
    /// The response is not HTTP/1.x that this client can read.
    Http(HttpFailure),
    /// An HTTP status other than 200 (the answer) and 503 (not the leader).
    Status(u16),
    /// A 200 whose body is not gracegate's answer.
    BadAnswer(&'static str),
    /// A release for a pod with another uid (or none): not ours to act on. A pod deleted and
    /// recreated under the same name has a new uid; its predecessor's release is not its own.
    OtherUid(Option<String>),
}

impl Failure {
    /// Whether gracegate (or something at its address) answered, as opposed to not being
    /// reachable at all: the two read differently in the log.
    pub fn is_answer(&self) -> bool {
        matches!(
            self,
            Failure::Http(_) | Failure::Status(_) | Failure::BadAnswer(_) | Failure::OtherUid(_)
        )
    }

    /// An I/O error at `step`: a timeout, a TLS error carried in an `io::Error` (rustls's
    /// blocking stream reports them so), or a plain socket error.
    pub fn from_io(step: Step, error: io::Error) -> Self {
        if matches!(
            error.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            return Failure::TimedOut(step);
        }
        if let Some(tls) = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Failure::Tls(tls.clone());
        }
        Failure::Io {
            step,
            kind: error.kind(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Dns(dns) => write!(f, "DNS: {dns}"),
            Failure::Io { step, kind } => write!(f, "{step}: {kind}"),
            Failure::TimedOut(step) => write!(f, "{step}: timed out"),
            Failure::Tls(tls) => write!(f, "TLS: {tls}"),
            Failure::Http(http) => write!(f, "HTTP: {http}"),
            Failure::Status(status) => write!(f, "HTTP status {status}"),
            Failure::BadAnswer(why) => write!(f, "not gracegate's answer: {why}"),
            Failure::OtherUid(Some(uid)) => write!(f, "a release for uid {uid}, not ours"),
            Failure::OtherUid(None) => write!(f, "a release that names no pod uid"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classed_by_kind_and_step_only() {
        let refused = |port: u16| {
            Failure::from_io(
                Step::Connect,
                io::Error::new(io::ErrorKind::ConnectionRefused, format!("port {port}")),
            )
        };
        assert_eq!(
            refused(1),
            refused(2),
            "the detail is not part of the class"
        );
        assert_eq!(refused(1).to_string(), "connect: connection refused");
        assert_eq!(
            Failure::from_io(Step::Receive, io::ErrorKind::WouldBlock.into()),
            Failure::TimedOut(Step::Receive),
            "a socket timeout reads as EAGAIN"
        );
    }

    #[test]
    fn tls_errors_inside_io_errors_are_tls_failures() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let failure = Failure::from_io(
            Step::Handshake,
            io::Error::new(io::ErrorKind::InvalidData, inner.clone()),
        );
        assert_eq!(failure, Failure::Tls(inner));
        assert!(
            failure
                .to_string()
                .starts_with("TLS: invalid peer certificate")
        );
        assert!(!failure.is_answer());
        assert!(Failure::Status(500).is_answer());
    }
}
