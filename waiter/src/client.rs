//! One ask of gracegate: resolve, connect, TLS, one HTTP/1.1 request, its response.
//!
//! A new connection each time: after a 503 the contract wants one anyway (so the Service
//! may route to the leader), and a long poll that ran out is asked again at most every 25 s,
//! where a handshake costs nothing that matters. Every step is bounded twice: by its own
//! timeout and by the waiter's deadline.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::args::Pod;
use crate::deadline::{Bounded, left};
use crate::dns::{self, conf::ResolvConf};
use crate::failure::{Failure, Step};
use crate::http::{self, POLL_SECONDS, ReadError, Response};
use crate::url::{Endpoint, Host};
use crate::wait::Gracegate;

/// The contract's connect timeout, per address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// For the handshake and for sending the request (a few packets each way).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The response may take the long poll plus this.
pub const RESPONSE_GRACE: Duration = Duration::from_secs(10);

pub struct Client {
    pub endpoint: Endpoint,
    pub pod: Pod,
    pub tls: Arc<ClientConfig>,
    pub resolv: ResolvConf,
}

impl Gracegate for Client {
    fn ask(&mut self, deadline: Instant) -> Result<Response, Failure> {
        let addresses = match &self.endpoint.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => dns::resolve(&self.resolv, name, deadline).map_err(Failure::Dns)?,
        };
        let tcp = connect(&addresses, self.endpoint.port, deadline)?;
        // The request is one small write; it should not wait for an ACK.
        let _ = tcp.set_nodelay(true);

        let mut tls = ClientConnection::new(self.tls.clone(), self.endpoint.server_name.clone())
            .map_err(Failure::Tls)?;
        let mut socket = Bounded {
            tcp,
            until: soonest(HANDSHAKE_TIMEOUT, deadline),
        };
        while tls.is_handshaking() {
            tls.complete_io(&mut socket)
                .map_err(|e| Failure::from_io(Step::Handshake, e))?;
        }

        let mut stream = StreamOwned::new(tls, socket);
        stream.sock.until = soonest(HANDSHAKE_TIMEOUT, deadline);
        stream
            .write_all(http::request(&self.endpoint, &self.pod).as_bytes())
            .and_then(|()| stream.flush())
            .map_err(|e| Failure::from_io(Step::Send, e))?;

        stream.sock.until = soonest(Duration::from_secs(POLL_SECONDS) + RESPONSE_GRACE, deadline);
        http::read_response(&mut stream).map_err(|e| match e {
            ReadError::Io(e) => Failure::from_io(Step::Receive, e),
            ReadError::Http(failure) => Failure::Http(failure),
        })
    }
}

/// `timeout` from now, or the deadline if sooner.
fn soonest(timeout: Duration, deadline: Instant) -> Instant {
    (Instant::now() + timeout).min(deadline)
}

/// The first address that accepts, in order; the last failure when none does.
fn connect(addresses: &[IpAddr], port: u16, deadline: Instant) -> Result<TcpStream, Failure> {
    let mut failure = Failure::TimedOut(Step::Connect);
    for &ip in addresses {
        let Some(left) = left(deadline) else {
            return Err(Failure::TimedOut(Step::Connect));
        };
        match TcpStream::connect_timeout(&SocketAddr::new(ip, port), left.min(CONNECT_TIMEOUT)) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => failure = Failure::from_io(Step::Connect, e),
        }
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn connect_tries_each_address_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // ::1 may refuse (nothing there on this port) or be missing; 127.0.0.1 accepts.
        let tcp = connect(
            &["::1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
            port,
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(tcp.peer_addr().unwrap().port(), port);
    }

    #[test]
    fn connect_reports_the_failure() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let failure = connect(
            &["127.0.0.1".parse().unwrap()],
            port,
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(
            failure,
            Failure::Io {
                step: Step::Connect,
                kind: std::io::ErrorKind::ConnectionRefused
            }
        );
        assert_eq!(
            connect(&["127.0.0.1".parse().unwrap()], port, Instant::now()).unwrap_err(),
            Failure::TimedOut(Step::Connect),
            "no time left: no attempt"
        );
    }
}
