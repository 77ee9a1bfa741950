//! The one HTTP/1.1 exchange: the drain-wait request, and a bounded reader for its response.
//!
//! gracegate answers with a small JSON body framed by Content-Length; chunked and
//! close-delimited bodies are read too, so a proxy in between does not break the waiter.
//! Every size is capped: whatever sits at the URL cannot make the waiter buffer without end.

use std::fmt;
use std::io::{self, Read};

use crate::args::Pod;
use crate::url::Endpoint;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What the waiter asks the leader to hold the long poll for (the leader caps it at 25).
pub const POLL_SECONDS: u64 = 25;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// `GET {prefix}/drain/v1/namespaces/{ns}/pods/{name}?uid={uid}&timeout=25`. The pod's
/// names and uid were validated to need no escaping. `Connection: close`: the waiter opens a
/// new connection for every ask, so the server need not keep this one.
pub fn request(endpoint: &Endpoint, pod: &Pod) -> String {
    format!(
        "GET {prefix}/drain/v1/namespaces/{ns}/pods/{name}?uid={uid}&timeout={POLL_SECONDS} HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: gracegate-wait/{VERSION}\r\n\
         Accept: application/json\r\n\
         Connection: close\r\n\
         \r\n",
        prefix = endpoint.prefix,
        ns = pod.namespace,
        name = pod.name,
        uid = pod.uid,
        host = endpoint.authority(),
    )
}

#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HttpFailure {
    StatusLine,
    Header,
    HeadTooLarge,
    BodyTooLarge,
    Length,
    Chunk,
    /// The connection ended before the response did.
    Truncated,
    /// A transfer coding other than chunked, or a protocol switch.
    Unsupported,
}

impl fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpFailure::StatusLine => "not an HTTP/1.x status line",
            HttpFailure::Header => "a malformed header",
            HttpFailure::HeadTooLarge => "headers over 16 KiB",
            HttpFailure::BodyTooLarge => "a body over 64 KiB",
            HttpFailure::Length => "a bad Content-Length",
            HttpFailure::Chunk => "a bad chunk",
            HttpFailure::Truncated => "the connection closed mid-response",
            HttpFailure::Unsupported => "an unsupported transfer coding or upgrade",
        })
    }
}

/// Why no response was read: the socket (or TLS) failed, or what came is not HTTP.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Http(HttpFailure),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        ReadError::Io(error)
    }
}

impl From<HttpFailure> for ReadError {
    fn from(failure: HttpFailure) -> Self {
        ReadError::Http(failure)
    }
}

/// Reads one response to a GET (interim 1xx responses are skipped).
pub fn read_response(reader: &mut impl Read) -> Result<Response, ReadError> {
    let mut input = Input {
        reader,
        buf: Vec::new(),
        pos: 0,
        read_total: 0,
    };
    loop {
        let status = status_line(&input.line(MAX_HEAD)?)?;
        let mut length = None;
        let mut chunked = false;
        let mut head = 0;
        loop {
            let line = input.line(MAX_HEAD)?;
            head += line.len();
            if head > MAX_HEAD {
                return Err(HttpFailure::HeadTooLarge.into());
            }
            if line.is_empty() {
                break;
            }
            let (name, value) = header(&line)?;
            if name.eq_ignore_ascii_case("content-length") {
                let value: usize = value
                    .parse()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(HttpFailure::Length)?;
                if length.is_some_and(|seen| seen != value) {
                    return Err(HttpFailure::Length.into());
                }
                length = Some(value);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only `chunked` (possibly listed alone after identity) is read.
                let codings: Vec<_> = value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty() && c != "identity")
                    .collect();
                match codings.as_slice() {
                    [] => {}
                    [only] if only == "chunked" => chunked = true,
                    _ => return Err(HttpFailure::Unsupported.into()),
                }
            }
        }
        match status {
            101 => return Err(HttpFailure::Unsupported.into()),
            100..=199 => continue,
            204 | 304 => {
                return Ok(Response {
                    status,
                    body: Vec::new(),
                });
            }
            _ => {}
        }
        let body = if chunked {
            input.chunked()?
        } else if let Some(length) = length {
            if length > MAX_BODY {
                return Err(HttpFailure::BodyTooLarge.into());
            }
            input.exact(length)?
        } else {
            input.until_closed()?
        };
        return Ok(Response { status, body });
    }
}

fn status_line(line: &str) -> Result<u16, HttpFailure> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(HttpFailure::StatusLine);
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..=599).contains(c) && code.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(HttpFailure::StatusLine)
}

fn header(line: &str) -> Result<(&str, &str), HttpFailure> {
    let (name, value) = line.split_once(':').ok_or(HttpFailure::Header)?;
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(HttpFailure::Header);
    }
    Ok((name, value.trim_matches([' ', '\t'])))
}

struct Input<'r, R> {
    reader: &'r mut R,
    buf: Vec<u8>,
    pos: usize,
    read_total: usize,
}

impl<R: Read> Input<'_, R> {
    /// Reads more; `Ok(false)` at the end of the stream. rustls reports a peer that closed
    /// without close_notify as UnexpectedEof: for a close-delimited body that is its end (a
    /// truncated JSON body does not parse, so nothing is released by a cut).
    fn fill(&mut self) -> Result<bool, ReadError> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        if self.read_total > MAX_HEAD + MAX_BODY * 2 {
            return Err(HttpFailure::BodyTooLarge.into());
        }
        let mut chunk = [0u8; 4096];
        match self.reader.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.read_total += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// A line without its `\r\n` (or bare `\n`), as text; `max` bytes at most.
    fn line(&mut self, max: usize) -> Result<String, ReadError> {
        loop {
            if let Some(at) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + at];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let text = String::from_utf8_lossy(line).into_owned();
                self.pos += at + 1;
                return Ok(text);
            }
            if self.buf.len() - self.pos > max {
                return Err(HttpFailure::HeadTooLarge.into());
            }
            if !self.fill()? {
                return Err(HttpFailure::Truncated.into());
            }
        }
    }

    fn exact(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() - self.pos < n {
            if !self.fill()? {
                return Err(HttpFailure::Truncated.into());
            }
        }
        let bytes = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(bytes)
    }

    fn until_closed(&mut self) -> Result<Vec<u8>, ReadError> {
        while self.fill()? {
            if self.buf.len() - self.pos > MAX_BODY {
                return Err(HttpFailure::BodyTooLarge.into());
            }
        }
        let bytes = self.buf[self.pos..].to_vec();
        self.pos = self.buf.len();
        Ok(bytes)
    }

    fn chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.line(1024)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            if size.is_empty() || size.len() > 8 {
                return Err(HttpFailure::Chunk.into());
            }
            let size = usize::from_str_radix(size, 16).map_err(|_| HttpFailure::Chunk)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line(MAX_HEAD)?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(HttpFailure::BodyTooLarge.into());
            }
            body.extend(self.exact(size)?);
            match self.line(2) {
                Ok(end) if end.is_empty() => {}
                Ok(_) | Err(ReadError::Http(HttpFailure::HeadTooLarge)) => {
                    return Err(HttpFailure::Chunk.into());
                }
                Err(other) => return Err(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::Endpoint;

    fn read(bytes: &[u8]) -> Result<Response, ReadError> {
        read_response(&mut &bytes[..])
    }

    fn ok(bytes: &[u8]) -> Response {
        read(bytes).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn http(bytes: &[u8]) -> HttpFailure {
        match read(bytes) {
            Err(ReadError::Http(failure)) => failure,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_request() {
        let pod = Pod {
            namespace: "shop".into(),
            name: "web-7d9f-x2x".into(),
            uid: "0b9c-11".into(),
        };
        let endpoint = Endpoint::parse("https://gracegate.gracegate-system.svc:8443").unwrap();
        assert_eq!(
            request(&endpoint, &pod),
            format!(
                "GET /drain/v1/namespaces/shop/pods/web-7d9f-x2x?uid=0b9c-11&timeout=25 HTTP/1.1\r\n\
                 Host: gracegate.gracegate-system.svc:8443\r\n\
                 User-Agent: gracegate-wait/{VERSION}\r\n\
                 Accept: application/json\r\n\
                 Connection: close\r\n\r\n"
            )
        );
        let prefixed = Endpoint::parse("https://10.0.0.1/gg/").unwrap();
        assert!(request(&prefixed, &pod).starts_with("GET /gg/drain/v1/namespaces/shop/"));
        assert!(request(&prefixed, &pod).contains("\r\nHost: 10.0.0.1\r\n"));
    }

    #[test]
    fn content_length_bodies() {
        let r = ok(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"release\":true}trailing junk");
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"{\"release\":true}".to_vec()
            }
        );
        let r = ok(b"HTTP/1.0 503 Service Unavailable\nContent-Length:2\n\n{}");
        assert_eq!((r.status, r.body.as_slice()), (503, &b"{}"[..]), "bare LF");
    }

    #[test]
    fn chunked_and_close_delimited_bodies() {
        let r = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n{\"rel\r\nB\r\nease\":true}\r\n0\r\nX-Trailer: 1\r\n\r\n");
        assert_eq!(r.body, b"{\"release\":true}");
        let r = ok(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"release\":false}");
        assert_eq!(r.body, b"{\"release\":false}");
        let r = ok(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(
            r,
            Response {
                status: 204,
                body: vec![]
            }
        );
    }

    #[test]
    fn broken_responses_are_failures_not_panics() {
        assert_eq!(http(b""), HttpFailure::Truncated);
        assert_eq!(http(b"SSH-2.0-OpenSSH\r\n\r\n"), HttpFailure::StatusLine);
        assert_eq!(http(b"HTTP/2 200\r\n\r\n"), HttpFailure::StatusLine);
        assert_eq!(http(b"HTTP/1.1 20 OK\r\n\r\n"), HttpFailure::StatusLine);
        assert_eq!(http(b"HTTP/1.1 +20 OK\r\n\r\n"), HttpFailure::StatusLine);
        assert_eq!(http(b"HTTP/1.1 999 OK\r\n\r\n"), HttpFailure::StatusLine);
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"),
            HttpFailure::Header
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            HttpFailure::Length
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx"),
            HttpFailure::Length
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx"),
            HttpFailure::Length
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            HttpFailure::Truncated
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n"),
            HttpFailure::BodyTooLarge
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HttpFailure::Unsupported
        );
        assert_eq!(
            http(b"HTTP/1.1 101 Switching\r\n\r\n"),
            HttpFailure::Unsupported
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            HttpFailure::Chunk
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"),
            HttpFailure::Chunk
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFF\r\n"),
            HttpFailure::Chunk
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"),
            HttpFailure::Truncated
        );
        assert_eq!(
            http(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabcdef"),
            HttpFailure::Chunk
        );
        let huge_header = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert_eq!(http(huge_header.as_bytes()), HttpFailure::HeadTooLarge);
        let many_headers = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: aaaaaaaaaa\r\n".repeat(2_000)
        );
        assert_eq!(http(many_headers.as_bytes()), HttpFailure::HeadTooLarge);
        let endless = format!("HTTP/1.1 200 OK\r\n\r\n{}", "a".repeat(200_000));
        assert_eq!(http(endless.as_bytes()), HttpFailure::BodyTooLarge);
        let endless_chunks = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            format!("1000\r\n{}\r\n", "a".repeat(4096)).repeat(20)
        );
        assert_eq!(http(endless_chunks.as_bytes()), HttpFailure::BodyTooLarge);
    }

    #[test]
    fn every_cut_of_a_response_is_an_error_or_a_shorter_body() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"release\":true}";
        for len in 0..full.len() {
            assert!(read(&full[..len]).is_err(), "cut at {len}");
        }
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"release\":true}\r\n0\r\n\r\n";
        for len in 0..chunked.len() {
            assert!(read(&chunked[..len]).is_err(), "cut at {len}");
        }
    }

    /// A reader that fails like rustls when the peer closes without close_notify.
    struct NoCloseNotify<'a>(&'a [u8]);

    impl Read for NoCloseNotify<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = buf.len().min(self.0.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn unexpected_eof_ends_a_close_delimited_body() {
        let mut reader = NoCloseNotify(b"HTTP/1.1 200 OK\r\n\r\n{\"release\":false}");
        let r = read_response(&mut reader).unwrap();
        assert_eq!(r.body, b"{\"release\":false}");
        let mut cut = NoCloseNotify(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n{}");
        assert!(matches!(
            read_response(&mut cut),
            Err(ReadError::Http(HttpFailure::Truncated))
        ));
    }
}
