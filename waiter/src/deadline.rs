//! Socket I/O that cannot outlive a deadline.
//!
//! Blocking sockets take a timeout per call, not per exchange: a peer that trickles one byte
//! per timeout would keep a read going forever. Every read and write here sets the timeout
//! to what is left until the deadline, so a whole exchange ends by it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What is left until `until`, or `None` once it has passed. Below a millisecond counts as
/// passed: a zero socket timeout would mean "no timeout".
pub fn left(until: Instant) -> Option<Duration> {
    let left = until.saturating_duration_since(Instant::now());
    (left >= Duration::from_millis(1)).then_some(left)
}

/// A timeout as an `io::Error` of kind `TimedOut`, whatever the kernel said (a socket
/// timeout reads as EAGAIN, `WouldBlock`).
pub fn timed_out() -> io::Error {
    io::ErrorKind::TimedOut.into()
}

fn normalise(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::WouldBlock {
        timed_out()
    } else {
        error
    }
}

/// A TCP stream whose reads and writes end by `until` (which the caller moves per step).
pub struct Bounded {
    pub tcp: TcpStream,
    pub until: Instant,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = left(self.until).ok_or_else(timed_out)?;
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.read(buf).map_err(normalise)
    }
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = left(self.until).ok_or_else(timed_out)?;
        self.tcp.set_write_timeout(Some(left))?;
        self.tcp.write(buf).map_err(normalise)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn left_is_none_once_passed() {
        assert_eq!(left(Instant::now()), None);
        assert!(left(Instant::now() + Duration::from_secs(5)).unwrap() > Duration::from_secs(4));
    }

    #[test]
    fn a_silent_peer_times_out_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        let started = Instant::now();
        let mut bounded = Bounded {
            tcp,
            until: started + Duration::from_millis(200),
        };
        let error = bounded.read(&mut [0; 8]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Once passed, no call reaches the socket.
        assert_eq!(
            bounded.read(&mut [0; 8]).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }
}
