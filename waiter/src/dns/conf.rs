//! `/etc/resolv.conf`, read the way glibc and musl read it, and the names to try for a host.
//!
//! In a pod the kubelet writes it: the cluster DNS Service as `nameserver`, the namespace's
//! search list (`NS.svc.cluster.local svc.cluster.local cluster.local` and the node's) and
//! `options ndots:5`. So `gracegate.gracegate-system.svc` has fewer dots than `ndots` and is
//! tried with each search suffix before on its own, exactly as the application's own lookups
//! are; a name written with a trailing dot skips the list.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub const PATH: &str = "/etc/resolv.conf";

/// glibc's limits: MAXNS name servers, ndots ≤ 15, timeout ≤ 30 s, attempts ≤ 5.
const MAX_NAMESERVERS: usize = 3;
const MAX_NDOTS: usize = 15;
const MAX_TIMEOUT_SECONDS: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;
/// The kubelet allows 32 search domains (ExpandedDNSConfig); more is a broken file.
const MAX_SEARCH: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub struct ResolvConf {
    /// Port 53 of each `nameserver` (the tests use other ports).
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
    /// Per query and server.
    pub timeout: Duration,
    /// Rounds over the name servers.
    pub attempts: u32,
}

impl Default for ResolvConf {
    /// What libc assumes without a file: the local host's name server, no search list.
    fn default() -> Self {
        ResolvConf {
            nameservers: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)],
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

impl ResolvConf {
    /// The file at [`PATH`], or libc's defaults when it cannot be read (as libc does).
    pub fn read() -> Self {
        std::fs::read(PATH)
            .map(|bytes| Self::parse(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    /// Unknown keywords and options, bad values and scoped IPv6 addresses (`fe80::1%eth0`:
    /// naming an interface needs a lookup this client does not make) are skipped, as libc
    /// skips them.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf {
            nameservers: Vec::new(),
            ..ResolvConf::default()
        };
        for line in text.lines() {
            let mut words = line
                .split(|c: char| c.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword {
                "nameserver" => {
                    if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok())
                        && conf.nameservers.len() < MAX_NAMESERVERS
                    {
                        conf.nameservers.push(SocketAddr::new(ip, 53));
                    }
                }
                // The last `search` or `domain` line wins.
                "search" | "domain" => {
                    conf.search = words
                        .take_while(|w| !w.starts_with(['#', ';']))
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                        .filter(|w| !w.is_empty())
                        .take(MAX_SEARCH)
                        .collect();
                }
                "options" => {
                    for option in words {
                        conf.option(option);
                    }
                }
                _ => {}
            }
        }
        if conf.nameservers.is_empty() {
            conf.nameservers = ResolvConf::default().nameservers;
        }
        conf
    }

    fn option(&mut self, option: &str) {
        let Some((name, value)) = option.split_once(':') else {
            return;
        };
        let Ok(value) = value.parse::<u64>() else {
            return;
        };
        match name {
            "ndots" => self.ndots = value.min(MAX_NDOTS as u64) as usize,
            "timeout" => {
                self.timeout = Duration::from_secs(value.clamp(1, MAX_TIMEOUT_SECONDS));
            }
            "attempts" => self.attempts = value.clamp(1, MAX_ATTEMPTS as u64) as u32,
            _ => {}
        }
    }

    /// The names to ask for, in order (glibc's `res_search`): a name ending in a dot alone;
    /// a name with at least `ndots` dots first as given, then with each search domain; a
    /// shorter one with each search domain first, then as given. Names too long for DNS
    /// are left out.
    pub fn candidates(&self, host: &str) -> Vec<String> {
        if let Some(absolute) = host.strip_suffix('.') {
            return vec![absolute.to_string()];
        }
        let searched = self.search.iter().map(|domain| format!("{host}.{domain}"));
        let names: Vec<String> = if host.matches('.').count() >= self.ndots {
            std::iter::once(host.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(host.to_string())).collect()
        };
        names.into_iter().filter(|name| name.len() <= 253).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET: &str = "search gracegate-system.svc.cluster.local svc.cluster.local cluster.local ec2.internal\nnameserver 172.20.0.10\noptions ndots:5\n";

    #[test]
    fn a_kubelet_written_file() {
        let conf = ResolvConf::parse(KUBELET);
        assert_eq!(conf.nameservers, vec!["172.20.0.10:53".parse().unwrap()]);
        assert_eq!(conf.search.len(), 4);
        assert_eq!(conf.ndots, 5);
        assert_eq!(conf.timeout, Duration::from_secs(5));
        assert_eq!(conf.attempts, 2);
    }

    #[test]
    fn every_keyword_and_limit() {
        let conf = ResolvConf::parse(
            "# comment\n; another\n\
             nameserver 10.0.0.1\n\
             nameserver   fd00::53  # inline\n\
             nameserver fe80::1%eth0\n\
             nameserver not-an-ip\n\
             nameserver 10.0.0.2\n\
             nameserver 10.0.0.3\n\
             domain first.example\n\
             search A.Example. b.example # trailing comment\n\
             options rotate ndots:99 timeout:0 attempts:9 ndots:x\n\
             options timeout:2\n\
             sortlist 10.0.0.0/8\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "[fd00::53]:53".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap(),
            ],
            "three at most; scoped and bad addresses skipped"
        );
        assert_eq!(
            conf.search,
            ["a.example", "b.example"],
            "the last line wins"
        );
        assert_eq!(conf.ndots, 15);
        assert_eq!(conf.timeout, Duration::from_secs(2));
        assert_eq!(conf.attempts, 5);
    }

    #[test]
    fn empty_or_garbage_gives_the_defaults() {
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
        assert_eq!(
            ResolvConf::parse("\u{0}\u{ff}nameserver\noptions\nsearch\n:::"),
            ResolvConf::default()
        );
    }

    #[test]
    fn short_names_try_the_search_list_first() {
        let conf = ResolvConf::parse(KUBELET);
        assert_eq!(
            conf.candidates("gracegate.gracegate-system.svc"),
            [
                "gracegate.gracegate-system.svc.gracegate-system.svc.cluster.local",
                "gracegate.gracegate-system.svc.svc.cluster.local",
                "gracegate.gracegate-system.svc.cluster.local",
                "gracegate.gracegate-system.svc.ec2.internal",
                "gracegate.gracegate-system.svc",
            ]
        );
    }

    #[test]
    fn names_with_ndots_dots_go_first_as_given() {
        let conf = ResolvConf::parse("search a.example\noptions ndots:2\n");
        assert_eq!(
            conf.candidates("gracegate.b.example"),
            ["gracegate.b.example", "gracegate.b.example.a.example"]
        );
        assert_eq!(
            conf.candidates("gracegate.b"),
            ["gracegate.b.a.example", "gracegate.b"]
        );
    }

    #[test]
    fn absolute_names_skip_the_search_list() {
        let conf = ResolvConf::parse(KUBELET);
        assert_eq!(
            conf.candidates("gracegate.gracegate-system.svc.cluster.local."),
            ["gracegate.gracegate-system.svc.cluster.local"]
        );
    }

    #[test]
    fn names_too_long_for_dns_are_left_out() {
        let host = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(60),
        ]
        .join(".");
        let conf = ResolvConf::parse("search cluster.local\n");
        assert_eq!(conf.candidates(&host), [host]);
    }
}
