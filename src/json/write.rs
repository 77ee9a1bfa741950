//! The writing side: JSON text written by hand, byte for byte as serde_json writes it
//! (compact). A review's JSONPatch (`inject::Plan::write_patch`) and its answer
//! (`webhook::review::ResponseReview::to_json`) are written straight into their buffers
//! instead of being built as values first.

use std::io::Write;

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
    const HEX: &[u8; 16] = b"0123456789abcdef";
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
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0c => b'f',
            b'\r' => b'r',
            // The other control characters: nothing else ends a run.
            _ => {
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex[0], hex[1]]);
                continue;
            }
        };
        out.extend_from_slice(&[b'\\', short]);
    }
}

/// A JSON Pointer reference token (RFC 6901 §3: `~` as `~0`, `/` as `~1`), JSON-escaped, as
/// it goes inside a pointer's string.
pub fn pointer_token(out: &mut Vec<u8>, token: &str) {
    let mut start = 0;
    for (i, b) in token.bytes().enumerate() {
        let replacement: &[u8] = match b {
            b'~' => b"~0",
            b'/' => b"~1",
            _ => continue,
        };
        // `~` and `/` are ASCII: `i` is a character boundary.
        escaped(out, &token[start..i]);
        out.extend_from_slice(replacement);
        start = i + 1;
    }
    escaped(out, &token[start..]);
}

/// An integer, as serde_json writes it.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
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
    }

    /// A byte to escape at every position of strings around the 16-byte scan.
    #[test]
    fn strings_of_every_length_as_serde_writes_them() {
        for len in 0..40 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é'] {
                    let mut s: String = "x".repeat(len);
                    s.replace_range(at..at + 1, special.encode_utf8(&mut [0; 4]));
                    assert_eq!(
                        written(|out| string(out, &s)),
                        serde_json::to_string(&s).unwrap()
                    );
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
            prop_assert_eq!(written(|out| string(out, &s)), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn any_pointer_token_as_json_patch_writes_it(token in any::<String>()) {
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
