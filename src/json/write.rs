//! The writing side: JSON text written by hand, byte for byte as serde_json writes it
//! (compact). A review's JSONPatch (`inject::Plan::write_patch`) and its answer
//! (`webhook::review::ResponseReview::to_json`) are written straight into their buffers
//! instead of being built as values first; the JSON log line's strings
//! (`logging::JsonLine`) are escaped here too.

/// `s` as a JSON string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escaped(out, s);
    out.push(b'"');
}

/// `s` as it goes between a JSON string's quotes, escaped as serde_json escapes: `"`, `\` and
/// the control characters (the short forms `\b \t \n \f \r`, else `\u00xx`); everything else,
/// DEL and non-ASCII included, as is.
pub fn escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        // The bytes to escape are the ones a string read may not hold as they are: the
        // plain run up to the next one is found 16 bytes at a time.
        let i = super::runs::run_end::<true>(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else {
            return;
        };
        start = i + 1;
        out.extend_from_slice(Escape::of(b).as_bytes());
    }
}

/// [`escaped`] into text (a log line's fields and values). The same loop: one generic over
/// both outputs cost the JSONPatch and the answer ~400 instructions a review.
pub fn escaped_text(out: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let i = super::runs::run_end::<true>(bytes, start);
        // The bytes escaped are ASCII: a run kept starts and ends at char boundaries.
        out.write_str(&s[start..i])?;
        let Some(&b) = bytes.get(i) else {
            return Ok(());
        };
        start = i + 1;
        out.write_str(Escape::of(b).as_str())?;
    }
}

/// One byte that a string may not hold as it is (a quote, a backslash or a control
/// character), escaped: `\"`, `\n`, `\u001b`.
struct Escape {
    text: [u8; 6],
    len: usize,
}

impl Escape {
    fn of(b: u8) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0c => b'f',
            b'\r' => b'r',
            // The other control characters: no other byte is escaped.
            _ => {
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                let text = [b'\\', b'u', b'0', b'0', hex[0], hex[1]];
                return Escape { text, len: 6 };
            }
        };
        Escape {
            text: [b'\\', short, 0, 0, 0, 0],
            len: 2,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }

    fn as_str(&self) -> &str {
        // ASCII, every byte of it.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// A JSON Pointer reference token (RFC 6901 §3: `~` as `~0`, `/` as `~1`), JSON-escaped, as
/// it goes inside a pointer's string.
///
/// One pass over the token's bytes against a table of the bytes either escape changes: a
/// patch's dozen tokens are short keys (`spec`, `containers`), where finding the two
/// escapes first and then the JSON ones cost ~250 instructions a token.
pub fn pointer_token(out: &mut Vec<u8>, token: &str) {
    let bytes = token.as_bytes();
    let mut start = 0;
    loop {
        let mut i = start;
        while i < bytes.len() && !POINTER_STOP[usize::from(bytes[i])] {
            i += 1;
        }
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else {
            return;
        };
        match b {
            b'~' => out.extend_from_slice(b"~0"),
            b'/' => out.extend_from_slice(b"~1"),
            _ => out.extend_from_slice(Escape::of(b).as_bytes()),
        }
        start = i + 1;
    }
}

/// The bytes a pointer token does not keep as they are: `~` and `/` (RFC 6901) and the ones
/// a JSON string escapes.
const POINTER_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'~' as usize] = true;
    t[b'/' as usize] = true;
    t
};

/// An integer, as serde_json writes it.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(Decimal::signed(n).as_bytes());
}

/// An integer in decimal digits, a `-` before a negative one (as `{}` and `{:?}` write it),
/// without the formatting machinery (`write!` of an integer costs a few hundred
/// instructions: the JSONPatch's integers and indexes and the log line's fields).
pub struct Decimal {
    /// Right-aligned: a `u64` has at most 20 digits, an `i64` at most 19 and its sign.
    text: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn unsigned(n: u64) -> Self {
        Self::new(n, false)
    }

    pub fn signed(n: i64) -> Self {
        Self::new(n.unsigned_abs(), n < 0)
    }

    fn new(mut n: u64, negative: bool) -> Self {
        let mut text = [b'0'; 20];
        let mut start = text.len();
        loop {
            start -= 1;
            text[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if negative {
            start -= 1;
            text[start] = b'-';
        }
        Decimal { text, start }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text[self.start..]
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and a sign were written.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::jsonptr::PointerBuf;
    use proptest::prelude::*;
    use rstest::rstest;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = b"prefix".to_vec();
        f(&mut out);
        // What was there stays: the writers only append.
        assert_eq!(&out[..6], b"prefix");
        String::from_utf8(out[6..].to_vec()).unwrap()
    }

    #[rstest]
    #[case::empty("")]
    #[case::plain("target-health.elbv2.k8s.aws/k8s-game2048-service2-6f5e3c2a1b")]
    #[case::quotes_and_backslashes("a\"b\\c\"")]
    #[case::short_escapes("\u{8}\t\n\u{c}\r")]
    #[case::other_controls("\u{0}\u{1}\u{1f}x\u{b}")]
    #[case::not_escaped("\u{7f}é😀</\u{2028}'")]
    fn strings_as_serde_writes_them(#[case] s: &str) {
        assert_eq!(
            written(|out| string(out, s)),
            serde_json::to_string(s).unwrap()
        );
        assert_eq!(as_text(s), serde_json::to_string(s).unwrap());
    }

    /// `s` as a JSON string written by [`escaped_text`].
    fn as_text(s: &str) -> String {
        let mut text = String::from("\"");
        escaped_text(&mut text, s).unwrap();
        text + "\""
    }

    /// A byte to escape at every position of strings around the 16-byte scan.
    #[test]
    fn strings_of_every_length_as_serde_writes_them() {
        for len in 0..40 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é'] {
                    let mut s: String = "x".repeat(len);
                    s.replace_range(at..at + 1, special.encode_utf8(&mut [0; 4]));
                    let serde = serde_json::to_string(&s).unwrap();
                    assert_eq!(written(|out| string(out, &s)), serde);
                    assert_eq!(as_text(&s), serde);
                }
            }
        }
    }

    #[rstest]
    #[case::plain("containers")]
    #[case::slash("gracegate.io/prestop-source")]
    #[case::tilde("a~b")]
    #[case::escapes_that_look_escaped("~0~1/~")]
    #[case::json_escapes("\"q\"\n\\")]
    #[case::empty("")]
    fn pointer_tokens_as_json_patch_writes_them(#[case] token: &str) {
        let serde = serde_json::to_string(&PointerBuf::from_tokens(["spec", token])).unwrap();
        let mine = written(|out| {
            out.extend_from_slice(b"\"/spec/");
            pointer_token(out, token);
            out.push(b'"');
        });
        assert_eq!(mine, serde);
    }

    /// The widest texts fill the buffer: `u64::MAX`'s 20 digits, `i64::MIN`'s 19 and a sign.
    #[rstest]
    #[case(0)]
    #[case(9)]
    #[case(10)]
    #[case(u64::MAX)]
    fn unsigned_as_std_writes_them(#[case] n: u64) {
        assert_eq!(Decimal::unsigned(n).as_str(), n.to_string());
        assert_eq!(Decimal::unsigned(n).as_bytes(), n.to_string().as_bytes());
    }

    #[rstest]
    #[case(0)]
    #[case(-1)]
    #[case(30)]
    #[case(i64::MAX)]
    #[case(i64::MIN)]
    fn integers_as_serde_writes_them(#[case] n: i64) {
        assert_eq!(
            written(|out| integer(out, n)),
            serde_json::to_string(&n).unwrap()
        );
    }

    proptest! {
        #[test]
        fn any_string_as_serde_writes_it(s in any::<String>()) {
            let serde = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(written(|out| string(out, &s)), serde.clone());
            prop_assert_eq!(as_text(&s), serde);
        }

        #[test]
        fn any_integer_as_serde_writes_it(n in any::<i64>()) {
            prop_assert_eq!(written(|out| integer(out, n)), serde_json::to_string(&n).unwrap());
            let (signed, unsigned) = (Decimal::signed(n), Decimal::unsigned(n as u64));
            prop_assert_eq!(signed.as_str(), n.to_string());
            prop_assert_eq!(unsigned.as_str(), (n as u64).to_string());
        }

        /// Any string, and tokens made of the bytes either escape changes around plain runs
        /// (which any string seldom holds).
        #[test]
        fn any_pointer_token_as_json_patch_writes_it(token in prop_oneof![
            any::<String>(),
            "([~/\"\\\\\u{0}-\u{1f}\u{7f}é😀]|[a-z]{1,20}){0,12}",
        ]) {
            let serde = serde_json::to_string(&PointerBuf::from_tokens([token.as_str()])).unwrap();
            let mine = written(|out| {
                out.extend_from_slice(b"\"/");
                pointer_token(out, &token);
                out.push(b'"');
            });
            prop_assert_eq!(mine, serde);
        }
    }
}
