//! DNS messages (RFC 1035): one question out, the addresses of one name back.
//!
//! Everything read from the network is bounds-checked: a short, truncated or hostile answer
//! (compression loops, lengths past the end) is an error, never a panic or a hang.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_NXDOMAIN: u8 = 3;

/// A CNAME chain longer than this is a loop or an attack (resolvers stop at 8-16).
const MAX_CHAIN: usize = 16;
/// Compression pointers followed for one name; a name has at most 127 labels.
const MAX_JUMPS: usize = 128;

/// A query for `name` (no trailing dot) of type `qtype`, recursion desired.
/// `None` when the name cannot be put in a DNS message (empty label, label over 63 bytes,
/// name over 255 bytes on the wire).
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut msg = Vec::with_capacity(18 + name.len());
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&FLAG_RD.to_be_bytes());
    msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD 1, AN 0, NS 0, AR 0
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        msg.push(label.len() as u8);
        msg.extend_from_slice(label.as_bytes());
    }
    msg.push(0);
    if msg.len() - 12 > 255 {
        return None;
    }
    msg.extend_from_slice(&qtype.to_be_bytes());
    msg.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(msg)
}

/// A response to our question.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// TC set: ask again over TCP. Nothing else in it is read.
    Truncated,
    /// The rcode and, for NOERROR, the addresses of the name (through CNAMEs) of the asked
    /// type; empty is NODATA.
    Answer { rcode: u8, addresses: Vec<IpAddr> },
}

#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// Not a response to this query (another id or question, or not a response at all):
    /// over UDP, a stray or forged datagram to skip.
    NotOurs,
    /// A response that does not parse.
    Malformed,
}

/// Reads a response to the query `id` for `name` and `qtype`.
pub fn parse(msg: &[u8], id: u16, name: &str, qtype: u16) -> Result<Reply, ParseError> {
    let mut r = Reader { msg, pos: 0 };
    let got_id = r.u16()?;
    let flags = r.u16()?;
    if got_id != id || flags & FLAG_QR == 0 {
        return Err(ParseError::NotOurs);
    }
    if flags & FLAG_TC != 0 {
        return Ok(Reply::Truncated);
    }
    let rcode = (flags & 0x000f) as u8;
    let (qdcount, ancount) = (r.u16()?, r.u16()?);
    r.u16()?; // NS
    r.u16()?; // AR
    if qdcount != 1 {
        // Servers echo the question; one without it cannot be matched to ours.
        return Err(if qdcount == 0 && rcode != RCODE_NOERROR {
            ParseError::Malformed
        } else {
            ParseError::NotOurs
        });
    }
    let asked = r.name()?;
    let (asked_type, asked_class) = (r.u16()?, r.u16()?);
    if asked != name.to_ascii_lowercase() || asked_type != qtype || asked_class != CLASS_IN {
        return Err(ParseError::NotOurs);
    }
    if rcode != RCODE_NOERROR {
        return Ok(Reply::Answer {
            rcode,
            addresses: Vec::new(),
        });
    }

    let mut cnames = Vec::new();
    let mut records = Vec::new();
    for _ in 0..ancount {
        let owner = r.name()?;
        let (rtype, class) = (r.u16()?, r.u16()?);
        r.take(4)?; // TTL: one answer is used once
        let len = r.u16()? as usize;
        let rdata_at = r.pos;
        let rdata = r.take(len)?;
        if class != CLASS_IN {
            continue;
        }
        match rtype {
            TYPE_CNAME => {
                let mut at = Reader { msg, pos: rdata_at };
                let target = at.name()?;
                if at.pos != rdata_at + len {
                    return Err(ParseError::Malformed);
                }
                cnames.push((owner, target));
            }
            TYPE_A if rtype == qtype => {
                let octets: [u8; 4] = rdata.try_into().map_err(|_| ParseError::Malformed)?;
                records.push((owner, IpAddr::V4(Ipv4Addr::from(octets))));
            }
            TYPE_AAAA if rtype == qtype => {
                let octets: [u8; 16] = rdata.try_into().map_err(|_| ParseError::Malformed)?;
                records.push((owner, IpAddr::V6(Ipv6Addr::from(octets))));
            }
            _ => {}
        }
    }

    // The name's own records, or those of the end of its CNAME chain.
    let mut names = vec![asked];
    while names.len() <= MAX_CHAIN {
        let last = &names[names.len() - 1];
        match cnames.iter().find(|(owner, _)| owner == last) {
            Some((_, target)) if !names.contains(target) => names.push(target.clone()),
            _ => break,
        }
    }
    let addresses = records
        .into_iter()
        .filter(|(owner, _)| names.contains(owner))
        .map(|(_, address)| address)
        .collect();
    Ok(Reply::Answer { rcode, addresses })
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::Malformed)?;
        let bytes = self.msg.get(self.pos..end).ok_or(ParseError::Malformed)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, ParseError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A possibly compressed name, lower-cased, labels joined by dots (a dot or a
    /// non-printable byte inside a label is escaped, so such a name never equals ours).
    /// Leaves `pos` after the name as it appears here (after the first pointer).
    fn name(&mut self) -> Result<String, ParseError> {
        let mut name = String::new();
        let mut at = self.pos;
        let mut end_here = None;
        let mut jumps = 0;
        let mut wire_len = 0;
        loop {
            let len = *self.msg.get(at).ok_or(ParseError::Malformed)? as usize;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    self.pos = end_here.unwrap_or(at + 1);
                    return Ok(name);
                }
                0x00 => {
                    let label = self
                        .msg
                        .get(at + 1..at + 1 + len)
                        .ok_or(ParseError::Malformed)?;
                    wire_len += len + 1;
                    if wire_len > 255 {
                        return Err(ParseError::Malformed);
                    }
                    if !name.is_empty() {
                        name.push('.');
                    }
                    for &b in label {
                        match b.to_ascii_lowercase() {
                            b'.' | b'\\' => {
                                name.push('\\');
                                name.push(b as char);
                            }
                            b if b.is_ascii_graphic() => name.push(b as char),
                            b => name.push_str(&format!("\\{b:03}")),
                        }
                    }
                    at += 1 + len;
                }
                0xc0 => {
                    let low = *self.msg.get(at + 1).ok_or(ParseError::Malformed)? as usize;
                    jumps += 1;
                    if jumps > MAX_JUMPS {
                        return Err(ParseError::Malformed);
                    }
                    end_here.get_or_insert(at + 2);
                    at = ((len & 0x3f) << 8) | low;
                }
                // 0x40 and 0x80: extended label types, unused in answers (RFC 6891).
                _ => return Err(ParseError::Malformed),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A response to `query` as a server builds it: the question echoed, then `answers`
    /// as (owner, type, rdata), owners written in full or as a pointer to the question.
    pub(crate) fn response(query: &[u8], rcode: u8, answers: &[(&str, u16, Vec<u8>)]) -> Vec<u8> {
        let mut msg = query.to_vec();
        msg[2] |= 0x80; // QR
        msg[3] = 0x80 | rcode; // RA
        msg[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (owner, rtype, rdata) in answers {
            if *owner == "@" {
                msg.extend_from_slice(&[0xc0, 12]);
            } else {
                msg.extend_from_slice(&encode_name(owner));
            }
            msg.extend_from_slice(&rtype.to_be_bytes());
            msg.extend_from_slice(&CLASS_IN.to_be_bytes());
            msg.extend_from_slice(&30u32.to_be_bytes());
            msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            msg.extend_from_slice(rdata);
        }
        msg
    }

    pub(crate) fn encode_name(name: &str) -> Vec<u8> {
        let mut wire = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        wire
    }

    const NAME: &str = "gracegate.gracegate-system.svc.cluster.local";

    #[test]
    fn query_layout() {
        let q = query(0xbeef, "a.bc", TYPE_AAAA).unwrap();
        assert_eq!(
            q,
            [
                0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 28,
                0, 1
            ]
        );
    }

    #[test]
    fn names_dns_cannot_carry_are_refused() {
        assert!(query(1, "", TYPE_A).is_none());
        assert!(query(1, "a..b", TYPE_A).is_none());
        assert!(query(1, &"a".repeat(64), TYPE_A).is_none());
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(query(1, &long, TYPE_A).is_none(), "256 bytes on the wire");
        let fits = [
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(61),
        ]
        .join(".");
        assert!(query(1, &fits, TYPE_A).is_some(), "255 bytes on the wire");
    }

    #[test]
    fn addresses_of_the_name() {
        let q = query(7, NAME, TYPE_A).unwrap();
        let r = response(
            &q,
            RCODE_NOERROR,
            &[
                ("@", TYPE_A, vec![10, 0, 0, 1]),
                (NAME, TYPE_A, vec![10, 0, 0, 2]),
            ],
        );
        assert_eq!(
            parse(&r, 7, NAME, TYPE_A),
            Ok(Reply::Answer {
                rcode: 0,
                addresses: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]
            })
        );
    }

    #[test]
    fn names_compare_without_case() {
        let q = query(7, "GraceGate.Example", TYPE_A).unwrap();
        let r = response(&q, 0, &[("gracegate.example", TYPE_A, vec![10, 0, 0, 1])]);
        assert!(matches!(
            parse(&r, 7, "gracegate.example", TYPE_A),
            Ok(Reply::Answer { addresses, .. }) if addresses.len() == 1
        ));
    }

    #[test]
    fn cname_chains_are_followed_and_strangers_ignored() {
        let q = query(9, NAME, TYPE_AAAA).unwrap();
        let v6: Ipv6Addr = "fd00::7".parse().unwrap();
        let r = response(
            &q,
            0,
            &[
                ("@", TYPE_CNAME, encode_name("mid.example")),
                ("mid.example", TYPE_CNAME, encode_name("end.example")),
                ("end.example", TYPE_AAAA, v6.octets().to_vec()),
                (
                    "stranger.example",
                    TYPE_AAAA,
                    Ipv6Addr::LOCALHOST.octets().to_vec(),
                ),
                ("end.example", TYPE_A, vec![10, 0, 0, 9]),
            ],
        );
        assert_eq!(
            parse(&r, 9, NAME, TYPE_AAAA),
            Ok(Reply::Answer {
                rcode: 0,
                addresses: vec![IpAddr::V6(v6)]
            })
        );
    }

    #[test]
    fn cname_loops_end() {
        let q = query(9, "a.example", TYPE_A).unwrap();
        let r = response(
            &q,
            0,
            &[
                ("a.example", TYPE_CNAME, encode_name("b.example")),
                ("b.example", TYPE_CNAME, encode_name("a.example")),
            ],
        );
        assert_eq!(
            parse(&r, 9, "a.example", TYPE_A),
            Ok(Reply::Answer {
                rcode: 0,
                addresses: vec![]
            })
        );
    }

    #[test]
    fn nxdomain_truncation_and_strangers() {
        let q = query(3, NAME, TYPE_A).unwrap();
        assert_eq!(
            parse(&response(&q, RCODE_NXDOMAIN, &[]), 3, NAME, TYPE_A),
            Ok(Reply::Answer {
                rcode: RCODE_NXDOMAIN,
                addresses: vec![]
            })
        );
        let mut truncated = response(&q, 0, &[("@", TYPE_A, vec![10, 0, 0, 1])]);
        truncated[2] |= 0x02;
        truncated.truncate(20); // what follows TC is not read
        assert_eq!(parse(&truncated, 3, NAME, TYPE_A), Ok(Reply::Truncated));

        let answer = response(&q, 0, &[("@", TYPE_A, vec![10, 0, 0, 1])]);
        assert_eq!(
            parse(&answer, 4, NAME, TYPE_A),
            Err(ParseError::NotOurs),
            "id"
        );
        assert_eq!(
            parse(&answer, 3, "other.example", TYPE_A),
            Err(ParseError::NotOurs)
        );
        assert_eq!(parse(&answer, 3, NAME, TYPE_AAAA), Err(ParseError::NotOurs));
        assert_eq!(
            parse(&q, 3, NAME, TYPE_A),
            Err(ParseError::NotOurs),
            "a query"
        );
    }

    #[test]
    fn bad_address_lengths_are_malformed() {
        let q = query(3, NAME, TYPE_A).unwrap();
        let r = response(&q, 0, &[("@", TYPE_A, vec![10, 0, 0])]);
        assert_eq!(parse(&r, 3, NAME, TYPE_A), Err(ParseError::Malformed));
    }

    #[test]
    fn compression_loops_are_malformed() {
        let q = query(3, NAME, TYPE_A).unwrap();
        let mut r = response(&q, 0, &[]);
        r[7] = 1; // one answer, whose owner points at itself
        let at = r.len();
        r.extend_from_slice(&[0xc0 | (at >> 8) as u8, at as u8]);
        r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]);
        assert_eq!(parse(&r, 3, NAME, TYPE_A), Err(ParseError::Malformed));
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let q = query(5, NAME, TYPE_A).unwrap();
        let full = response(
            &q,
            0,
            &[
                ("@", TYPE_CNAME, vec![0xc0, 12]),
                (NAME, TYPE_A, vec![10, 0, 0, 1]),
                ("@", TYPE_AAAA, vec![0; 16]),
            ],
        );
        assert!(parse(&full, 5, NAME, TYPE_A).is_ok());
        for len in 0..full.len() {
            assert!(
                parse(&full[..len], 5, NAME, TYPE_A).is_err(),
                "cut at {len}"
            );
        }
        // Every single byte set to every value: no panic, whatever the result.
        for at in 0..full.len() {
            for value in 0..=255u8 {
                let mut bad = full.clone();
                bad[at] = value;
                let _ = parse(&bad, 5, NAME, TYPE_A);
            }
        }
        // Pseudo-random garbage.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (state % 600) as usize;
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = parse(&garbage, 5, NAME, TYPE_A);
        }
    }
}
