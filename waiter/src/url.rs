//! gracegate's URL, as the webhook hands it over (`--drain-wait-url`): `https://HOST[:PORT][/PREFIX]`.
//!
//! Only what the waiter needs is accepted: https (the answer releases a pod, so it must come
//! from a server the CA bundle vouches for), a DNS name or an IP literal, an optional port and
//! an optional path prefix. No user info, query or fragment: they have no meaning here and a
//! typo is better caught than sent.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use rustls::pki_types::ServerName;

/// Where gracegate listens.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
    /// The path before `/drain/v1/...`, without a trailing slash (usually empty).
    pub prefix: String,
    /// The name the server's certificate must carry: the URL's host (an IP address is
    /// checked against the certificate's IP SANs).
    pub server_name: ServerName<'static>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Host {
    /// A DNS name, lower-cased; a trailing dot (an absolute name: no search list) is kept.
    Name(String),
    Ip(IpAddr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct UrlError(&'static str);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url
            .get(..8)
            .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
            .map(|_| &url[8..])
            .ok_or(UrlError("not an https:// URL"))?;
        if rest.contains(['?', '#']) {
            return Err(UrlError("a query or fragment has no meaning here"));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(UrlError("user info has no meaning here"));
        }
        let (host, port) = split_port(authority)?;
        let host = if let Some(v6) = host.strip_prefix('[') {
            let v6 = v6.strip_suffix(']').ok_or(UrlError("unclosed [ in host"))?;
            Host::Ip(IpAddr::V6(
                v6.parse::<Ipv6Addr>()
                    .map_err(|_| UrlError("not an IPv6 address in [ ]"))?,
            ))
        } else if let Ok(v4) = host.parse() {
            Host::Ip(IpAddr::V4(v4))
        } else {
            Host::Name(valid_name(host)?)
        };
        let server_name = match &host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(name) => ServerName::try_from(name.trim_end_matches('.').to_string())
                .map_err(|_| UrlError("the host is not a DNS name a certificate can carry"))?,
        };
        let prefix = path.trim_end_matches('/');
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
        {
            return Err(UrlError("the path may only hold letters, digits and -._~/"));
        }
        Ok(Endpoint {
            host,
            port,
            prefix: prefix.to_string(),
            server_name,
        })
    }

    /// The `Host` header: the host, bracketed when IPv6, with the port unless it is 443.
    pub fn authority(&self) -> String {
        let host = match &self.host {
            Host::Name(name) => name.trim_end_matches('.').to_string(),
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            Host::Ip(ip) => ip.to_string(),
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}{}", self.authority(), self.prefix)
    }
}

fn split_port(authority: &str) -> Result<(&str, u16), UrlError> {
    // A colon after the closing bracket of an IPv6 literal, or any colon otherwise.
    let colon = match authority.rfind(']') {
        Some(close) => authority[close..].find(':').map(|i| close + i),
        None => authority.rfind(':'),
    };
    let Some(colon) = colon else {
        return Ok((authority, 443));
    };
    let port = &authority[colon + 1..];
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError("the port is not a number"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((&authority[..colon], port)),
        _ => Err(UrlError("the port is not in 1-65535")),
    }
}

/// A host name of letters, digits, `-` and `_` in dot-separated labels of 1-63 characters,
/// 253 at most; lower-cased.
fn valid_name(host: &str) -> Result<String, UrlError> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(UrlError("no host"));
    }
    if name.len() > 253 {
        return Err(UrlError("the host name is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(UrlError(
                "a host name label is empty or longer than 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(UrlError(
                "the host name holds a character other than a-z 0-9 - _ .",
            ));
        }
    }
    Ok(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn names_ports_and_prefixes() {
        let e = ok("https://gracegate.gracegate-system.svc");
        assert_eq!(e.host, Host::Name("gracegate.gracegate-system.svc".into()));
        assert_eq!((e.port, e.prefix.as_str()), (443, ""));
        assert_eq!(e.authority(), "gracegate.gracegate-system.svc");

        let e = ok("HTTPS://GraceGate.Example:8443/");
        assert_eq!(e.host, Host::Name("gracegate.example".into()));
        assert_eq!(e.authority(), "gracegate.example:8443");
        assert_eq!(e.prefix, "");

        let e = ok("https://gracegate.example.:443/base/v0/");
        assert_eq!(e.host, Host::Name("gracegate.example.".into()));
        assert_eq!(
            e.authority(),
            "gracegate.example",
            "no trailing dot in Host"
        );
        assert_eq!(e.prefix, "/base/v0");
        assert_eq!(e.to_string(), "https://gracegate.example/base/v0");
    }

    #[test]
    fn ip_literals() {
        let e = ok("https://10.0.0.7:8443");
        assert_eq!(e.host, Host::Ip("10.0.0.7".parse().unwrap()));
        assert_eq!(e.authority(), "10.0.0.7:8443");
        assert!(matches!(e.server_name, ServerName::IpAddress(_)));

        let e = ok("https://[fd00::1]:8443/");
        assert_eq!(e.host, Host::Ip("fd00::1".parse().unwrap()));
        assert_eq!(e.authority(), "[fd00::1]:8443");
        assert_eq!(ok("https://[::1]").port, 443);
    }

    #[test]
    fn bad_urls_are_errors_not_panics() {
        for url in [
            "",
            "http://gracegate",
            "https://",
            "https:/gracegate",
            "https://:443",
            "https://gracegate:",
            "https://gracegate:0",
            "https://gracegate:65536",
            "https://gracegate:-1",
            "https://gracegate:44x",
            "https://user@gracegate",
            "https://gracegate/?uid=1",
            "https://gracegate/#x",
            "https://grace gate",
            "https://gracegate..svc",
            "https://[fd00::1",
            "https://[not-v6]:8443",
            "https://fd00::1",
            "https://gracegate/a%20b",
            "https://é.example",
            "https://ab\u{0}c",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url:?} was accepted");
        }
        let long = format!("https://{}.example", "a".repeat(64));
        assert!(Endpoint::parse(&long).is_err());
    }
}
