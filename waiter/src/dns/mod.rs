//! The waiter's own DNS client: A and AAAA over UDP, TCP when the answer is truncated.
//!
//! The waiter runs inside application images it knows nothing about (distroless, scratch,
//! alpine): a static musl binary that called getaddrinfo would read `/etc/nsswitch.conf` and
//! `/etc/hosts` of whatever image it lands in, and glibc's NSS would even try to load shared
//! libraries. So it asks the name servers of `/etc/resolv.conf` itself, with the same search
//! list, ndots, timeout and attempts as the application's own lookups, and nothing else.

pub mod conf;
pub mod message;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Instant;

use crate::deadline::{self, left};
use crate::random;
use conf::ResolvConf;
use message::{ParseError, RCODE_NOERROR, RCODE_NXDOMAIN, Reply, TYPE_A, TYPE_AAAA};

#[derive(Clone, Debug, PartialEq)]
pub enum DnsFailure {
    /// Every name tried does not exist or has no A or AAAA record.
    NotFound(String),
    /// Name servers answered SERVFAIL, REFUSED or the like for every name tried.
    ServerFailure,
    /// No name server answered in time.
    TimedOut,
    /// A name server's answer did not parse.
    Malformed,
    /// Sending or receiving failed (a network unreachable, a port closed).
    Io(io::ErrorKind),
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsFailure::NotFound(host) => write!(f, "{host} not found"),
            DnsFailure::ServerFailure => f.write_str("the name servers failed to answer"),
            DnsFailure::TimedOut => f.write_str("no name server answered in time"),
            DnsFailure::Malformed => f.write_str("a name server's answer does not parse"),
            DnsFailure::Io(kind) => write!(f, "{kind}"),
        }
    }
}

/// What one name server said about one name and type.
enum Found {
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN: the name does not exist, whatever the type.
    NoName,
    /// NOERROR without an address of this type (NODATA).
    NoData,
}

/// The addresses of `host` (IPv4 first, then IPv6), trying the search list as libc does.
/// Ends by `until`.
pub fn resolve(conf: &ResolvConf, host: &str, until: Instant) -> Result<Vec<IpAddr>, DnsFailure> {
    let mut failure = None;
    for name in conf.candidates(host) {
        let mut addresses = Vec::new();
        for qtype in [TYPE_A, TYPE_AAAA] {
            match ask(conf, &name, qtype, until) {
                Ok(Found::Addresses(found)) => addresses.extend(found),
                // NXDOMAIN for A says the same of AAAA: skip the second question.
                Ok(Found::NoName) => break,
                Ok(Found::NoData) => {}
                // As glibc: a failing server for one name moves on to the next name (the
                // search list's first domains are often the ones that misbehave), while
                // silence or a broken network ends the lookup.
                Err(DnsFailure::ServerFailure) => failure = Some(DnsFailure::ServerFailure),
                Err(other) => return Err(other),
            }
        }
        if !addresses.is_empty() {
            return Ok(addresses);
        }
    }
    Err(failure.unwrap_or_else(|| DnsFailure::NotFound(host.to_string())))
}

/// One question to the name servers: `attempts` rounds over them, each try bounded by the
/// timeout, until one answers NOERROR or NXDOMAIN.
fn ask(conf: &ResolvConf, name: &str, qtype: u16, until: Instant) -> Result<Found, DnsFailure> {
    let mut failure = DnsFailure::TimedOut;
    for _ in 0..conf.attempts {
        for &server in &conf.nameservers {
            let Some(left) = left(until) else {
                return Err(DnsFailure::TimedOut);
            };
            let by = Instant::now() + left.min(conf.timeout);
            let id = random::u64() as u16;
            let Some(query) = message::query(id, name, qtype) else {
                return Ok(Found::NoName);
            };
            let reply = match over_udp(server, &query, id, name, qtype, by) {
                Ok(Reply::Truncated) => over_tcp(server, &query, id, name, qtype, by),
                other => other,
            };
            match reply {
                Ok(Reply::Answer { rcode, addresses }) => match rcode {
                    RCODE_NOERROR if addresses.is_empty() => return Ok(Found::NoData),
                    RCODE_NOERROR => return Ok(Found::Addresses(addresses)),
                    RCODE_NXDOMAIN => return Ok(Found::NoName),
                    _ => failure = DnsFailure::ServerFailure,
                },
                // A TCP answer that is truncated again is no answer.
                Ok(Reply::Truncated) => failure = DnsFailure::Malformed,
                Err(error) => failure = error,
            }
        }
    }
    Err(failure)
}

fn over_udp(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &str,
    qtype: u16,
    by: Instant,
) -> Result<Reply, DnsFailure> {
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).map_err(io_failure)?;
    // Connected: the kernel drops datagrams from any other address and port, and an ICMP
    // port unreachable comes back as ECONNREFUSED instead of a timeout.
    socket.connect(server).map_err(io_failure)?;
    socket.send(query).map_err(io_failure)?;
    let mut buf = [0u8; 4096];
    loop {
        let left = left(by).ok_or(DnsFailure::TimedOut)?;
        socket.set_read_timeout(Some(left)).map_err(io_failure)?;
        let len = socket.recv(&mut buf).map_err(io_failure)?;
        match message::parse(&buf[..len], id, name, qtype) {
            // A late answer to an earlier query, or a forgery: keep listening.
            Err(ParseError::NotOurs) => continue,
            Err(ParseError::Malformed) => return Err(DnsFailure::Malformed),
            Ok(reply) => return Ok(reply),
        }
    }
}

/// RFC 1035 4.2.2: each message prefixed with its length in two bytes.
fn over_tcp(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &str,
    qtype: u16,
    by: Instant,
) -> Result<Reply, DnsFailure> {
    let left = left(by).ok_or(DnsFailure::TimedOut)?;
    let tcp = TcpStream::connect_timeout(&server, left).map_err(io_failure)?;
    let mut stream = deadline::Bounded { tcp, until: by };
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).map_err(io_failure)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(io_failure)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut msg).map_err(io_failure)?;
    message::parse(&msg, id, name, qtype).map_err(|_| DnsFailure::Malformed)
}

fn io_failure(error: io::Error) -> DnsFailure {
    match error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => DnsFailure::TimedOut,
        kind => DnsFailure::Io(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::message::tests::response;
    use super::*;
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Duration;

    /// What a test name server does with a question (name, type, over TCP?).
    #[derive(Clone)]
    enum Act {
        Answer(u8, Vec<IpAddr>),
        Truncate,
        Garbage,
        Stray,
        Silent,
    }

    /// A name server on 127.0.0.1 (UDP and TCP on the same port) that answers with `act`
    /// and records every question as "name type udp|tcp".
    struct Server {
        addr: SocketAddr,
        asked: Arc<Mutex<Vec<String>>>,
    }

    fn qname(query: &[u8]) -> (String, u16) {
        let mut at = 12;
        let mut labels = Vec::new();
        while query[at] != 0 {
            let len = query[at] as usize;
            labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + len]).into_owned());
            at += 1 + len;
        }
        (
            labels.join("."),
            u16::from_be_bytes([query[at + 1], query[at + 2]]),
        )
    }

    fn answer(query: &[u8], act: &Act) -> Option<Vec<u8>> {
        let (_, qtype) = qname(query);
        match act {
            Act::Answer(rcode, ips) => {
                let records: Vec<_> = ips
                    .iter()
                    .filter_map(|ip| match (ip, qtype) {
                        (IpAddr::V4(v4), TYPE_A) => Some(("@", TYPE_A, v4.octets().to_vec())),
                        (IpAddr::V6(v6), TYPE_AAAA) => Some(("@", TYPE_AAAA, v6.octets().to_vec())),
                        _ => None,
                    })
                    .collect();
                Some(response(query, *rcode, &records))
            }
            Act::Truncate => {
                let mut r = response(query, 0, &[]);
                r[2] |= 0x02;
                Some(r)
            }
            Act::Garbage => Some(vec![query[0], query[1], 0x80, 0, 0, 9]),
            Act::Stray => {
                let mut r = response(query, 0, &[("@", TYPE_A, vec![6, 6, 6, 6])]);
                r[0] ^= 0xff;
                Some(r)
            }
            Act::Silent => None,
        }
    }

    /// A UDP socket and a TCP listener on one ephemeral port. The port the kernel picks for
    /// UDP may be taken for TCP (by another test or process), so try again on another.
    fn same_port() -> (UdpSocket, TcpListener, SocketAddr) {
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr) {
                return (udp, tcp, addr);
            }
        }
        panic!("no port free for both UDP and TCP in 50 tries");
    }

    fn server(act: impl Fn(&str, u16, bool) -> Act + Send + Sync + 'static) -> Server {
        let (udp, tcp, addr) = same_port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let act = Arc::new(act);
        {
            let (asked, act) = (asked.clone(), act.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok((len, from)) = udp.recv_from(&mut buf) {
                    let query = &buf[..len];
                    let (name, qtype) = qname(query);
                    asked.lock().unwrap().push(format!("{name} {qtype} udp"));
                    let act = act(&name, qtype, false);
                    if matches!(act, Act::Stray) {
                        // A forged answer first, then the real one.
                        udp.send_to(&answer(query, &act).unwrap(), from).unwrap();
                        let real = Act::Answer(0, vec!["10.1.1.1".parse().unwrap()]);
                        udp.send_to(&answer(query, &real).unwrap(), from).unwrap();
                    } else if let Some(reply) = answer(query, &act) {
                        udp.send_to(&reply, from).unwrap();
                    }
                }
            });
        }
        let log = asked.clone();
        thread::spawn(move || {
            for stream in tcp.incoming() {
                let mut stream = stream.unwrap();
                let mut len = [0u8; 2];
                stream.read_exact(&mut len).unwrap();
                let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                stream.read_exact(&mut query).unwrap();
                let (name, qtype) = qname(&query);
                log.lock().unwrap().push(format!("{name} {qtype} tcp"));
                if let Some(reply) = answer(&query, &act(&name, qtype, true)) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    stream.write_all(&framed).unwrap();
                }
            }
        });
        Server { addr, asked }
    }

    impl Server {
        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    fn conf(servers: &[&Server], search: &str, timeout_ms: u64) -> ResolvConf {
        ResolvConf {
            nameservers: servers.iter().map(|s| s.addr).collect(),
            timeout: Duration::from_millis(timeout_ms),
            ..ResolvConf::parse(&format!("search {search}\noptions ndots:5"))
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn walks_the_search_list_and_asks_both_types() {
        let dns = server(|name, _, _| match name {
            "gracegate.gracegate-system.svc.cluster.local" => {
                Act::Answer(0, vec![ip("10.0.0.1"), ip("fd00::1")])
            }
            _ => Act::Answer(RCODE_NXDOMAIN, vec![]),
        });
        let conf = conf(
            &[&dns],
            "gracegate-system.svc.cluster.local svc.cluster.local cluster.local",
            1000,
        );
        let found = resolve(&conf, "gracegate.gracegate-system.svc", soon()).unwrap();
        assert_eq!(found, [ip("10.0.0.1"), ip("fd00::1")], "IPv4 first");
        assert_eq!(
            dns.asked(),
            [
                "gracegate.gracegate-system.svc.gracegate-system.svc.cluster.local 1 udp",
                "gracegate.gracegate-system.svc.svc.cluster.local 1 udp",
                "gracegate.gracegate-system.svc.cluster.local 1 udp",
                "gracegate.gracegate-system.svc.cluster.local 28 udp",
            ],
            "NXDOMAIN for A skips AAAA; the search stops at the first name found"
        );
    }

    #[test]
    fn ipv6_only_names_resolve() {
        let dns = server(|_, _, _| Act::Answer(0, vec![ip("fd00::9")]));
        let found = resolve(&conf(&[&dns], "x", 1000), "g.example.", soon()).unwrap();
        assert_eq!(found, [ip("fd00::9")]);
    }

    #[test]
    fn truncated_answers_are_asked_again_over_tcp() {
        let dns = server(|_, _, tcp| {
            if tcp {
                Act::Answer(0, vec![ip("10.0.0.2")])
            } else {
                Act::Truncate
            }
        });
        let found = resolve(&conf(&[&dns], "x", 1000), "g.example.", soon()).unwrap();
        assert_eq!(found, [ip("10.0.0.2")]);
        assert_eq!(
            dns.asked(),
            [
                "g.example 1 udp",
                "g.example 1 tcp",
                "g.example 28 udp",
                "g.example 28 tcp"
            ]
        );
    }

    #[test]
    fn stray_datagrams_are_skipped() {
        let dns = server(|_, qtype, _| {
            if qtype == TYPE_A {
                Act::Stray
            } else {
                Act::Answer(0, vec![])
            }
        });
        let found = resolve(&conf(&[&dns], "x", 1000), "g.example.", soon()).unwrap();
        assert_eq!(found, [ip("10.1.1.1")], "the forged 6.6.6.6 is not taken");
    }

    #[test]
    fn a_failing_server_hands_over_to_the_next() {
        let bad = server(|_, _, _| Act::Answer(2, vec![])); // SERVFAIL
        let garbage = server(|_, _, _| Act::Garbage);
        let good = server(|_, _, _| Act::Answer(0, vec![ip("10.0.0.3")]));
        let found = resolve(
            &conf(&[&bad, &garbage, &good], "x", 1000),
            "g.example.",
            soon(),
        );
        assert_eq!(found.unwrap(), [ip("10.0.0.3")]);
        assert_eq!(bad.asked().len(), 2, "A and AAAA, each once");
    }

    #[test]
    fn failures_are_classed() {
        let nx = server(|_, _, _| Act::Answer(RCODE_NXDOMAIN, vec![]));
        assert_eq!(
            resolve(&conf(&[&nx], "a.example b.example", 1000), "g", soon()),
            Err(DnsFailure::NotFound("g".into()))
        );
        assert_eq!(nx.asked().len(), 3, "g.a.example, g.b.example, g");

        let nodata = server(|_, _, _| Act::Answer(0, vec![]));
        assert_eq!(
            resolve(&conf(&[&nodata], "x", 1000), "g.example.", soon()),
            Err(DnsFailure::NotFound("g.example.".into()))
        );

        let servfail = server(|_, _, _| Act::Answer(2, vec![]));
        assert_eq!(
            resolve(&conf(&[&servfail], "a.example", 1000), "g", soon()),
            Err(DnsFailure::ServerFailure)
        );
        assert_eq!(
            servfail.asked().len(),
            2 * 2 * 2,
            "2 names × 2 types × 2 attempts"
        );

        let garbage = server(|_, _, _| Act::Garbage);
        assert_eq!(
            resolve(&conf(&[&garbage], "x", 1000), "g.example.", soon()),
            Err(DnsFailure::Malformed)
        );
    }

    #[test]
    fn silence_times_out_by_the_deadline() {
        let silent = server(|_, _, _| Act::Silent);
        let started = Instant::now();
        let conf = conf(&[&silent], "a.example b.example", 5000);
        let got = resolve(&conf, "g", started + Duration::from_millis(300));
        assert_eq!(got, Err(DnsFailure::TimedOut));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "bounded by the deadline: {took:?}"
        );
        assert_eq!(
            silent.asked().len(),
            1,
            "silence ends the lookup: no next name"
        );
    }

    #[test]
    fn per_try_timeout_then_the_next_attempt() {
        let silent = server(|_, _, _| Act::Silent);
        let started = Instant::now();
        let got = resolve(&conf(&[&silent], "x", 100), "g.example.", soon());
        assert_eq!(got, Err(DnsFailure::TimedOut));
        assert_eq!(silent.asked().len(), 2, "attempts:2");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_closed_port_is_an_io_failure() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let conf = ResolvConf {
            nameservers: vec![addr],
            ..ResolvConf::default()
        };
        assert_eq!(
            resolve(&conf, "g.example.", soon()),
            Err(DnsFailure::Io(io::ErrorKind::ConnectionRefused))
        );
    }
}
