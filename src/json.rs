//! A JSON reader for the review path: it reads the few fields a review's decision needs,
//! borrowing strings from the body, and skips everything else by its structure alone.
//!
//! serde_json's `IgnoredAny` parses every token of a value it skips: ~15 instructions per
//! byte of a pod's `managedFields`, half of a large review (BENCHMARKS.md, "where the time
//! goes"). Skipping here looks only for quotes, backslashes and brackets. What is read is
//! read as RFC 8259 says (strings unescaped and checked as UTF-8, integers checked for
//! range); what is skipped is checked for its structure (strings closed, brackets balanced
//! and matching, at most [`MAX_DEPTH`] deep), not for number syntax or control characters,
//! since nothing in it is used. The types built on it (`inject::PodView`,
//! `webhook::review::PodReview`) are tested to read every recorded review as serde_json
//! reads it.
//!
//! [`write`] is the other direction: strings, JSON Pointer tokens and integers written as
//! serde_json writes them, for the JSONPatch and the answer.

use std::borrow::Cow;

mod blocks;
mod runs;
pub mod write;

/// Where reading stopped, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct Error {
    pub what: Cow<'static, str>,
    pub at: usize,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Nesting deeper than this is refused (serde_json's own recursion limit).
pub const MAX_DEPTH: usize = 128;

/// A cursor over one JSON text.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    /// The whole text when it is valid UTF-8 (checked once, word by word): strings are then
    /// sliced from it without checking each. Otherwise each string read is checked.
    text: Option<&'a str>,
    at: usize,
}

/// Bytes that end a run of skipped bytes outside strings.
const STRUCTURAL: [bool; 256] = table(b"\"{}[]");

const fn table(stops: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < stops.len() {
        t[stops[i] as usize] = true;
        i += 1;
    }
    t
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            text: std::str::from_utf8(bytes).ok(),
            at: 0,
        }
    }

    /// An error at the current position (for what the caller found wrong with a value).
    pub fn error(&self, what: impl Into<Cow<'static, str>>) -> Error {
        Error {
            what: what.into(),
            at: self.at,
        }
    }

    fn fail<T>(&self, what: &'static str) -> Result<T> {
        Err(self.error(what))
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Result<u8> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
        match self.bytes.get(self.at) {
            Some(&b) => Ok(b),
            None => self.fail("unexpected end of JSON"),
        }
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Result<()> {
        match self.peek() {
            Err(_) => Ok(()),
            Ok(_) => self.fail("trailing characters"),
        }
    }

    /// Consumes a `null` if one is next.
    pub fn null(&mut self) -> Result<bool> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// `read` of the next value, or `None` for a `null`.
    pub fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.null()? {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            self.fail("expected a value")
        }
    }

    /// An object: `each` gets every key in turn and must read or skip its value.
    pub fn object(
        &mut self,
        mut each: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>,
    ) -> Result<()> {
        if self.peek()? != b'{' {
            return self.fail("expected an object");
        }
        self.at += 1;
        if self.peek()? == b'}' {
            self.at += 1;
            return Ok(());
        }
        loop {
            if self.peek()? != b'"' {
                return self.fail("expected a key");
            }
            let key = self.string()?;
            if self.peek()? != b':' {
                return self.fail("expected ':'");
            }
            self.at += 1;
            each(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return self.fail("expected ',' or '}'"),
            }
        }
    }

    /// An array: `each` reads or skips every item in turn.
    pub fn array(&mut self, mut each: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        if self.peek()? != b'[' {
            return self.fail("expected an array");
        }
        self.at += 1;
        if self.peek()? == b']' {
            self.at += 1;
            return Ok(());
        }
        loop {
            each(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return self.fail("expected ',' or ']'"),
            }
        }
    }

    /// The items of an array, each read by `read`.
    pub fn vec<T>(&mut self, mut read: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        self.array(|r| {
            items.push(read(r)?);
            Ok(())
        })?;
        Ok(items)
    }

    /// A string, borrowed from the text unless it holds an escape.
    ///
    /// Inlined where it is called (every key of every object read goes through it): the
    /// common case, a string without escapes in checked text, is a few dozen instructions,
    /// and the rest is [`Self::string_rest`]'s. With the unescaping inlined too, every call
    /// saved and restored six registers and a frame, a fifth of its cost for a short key.
    #[inline]
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        if self.peek()? != b'"' {
            return self.fail("expected a string");
        }
        let start = self.at + 1;
        let i = runs::run_end::<true>(self.bytes, start);
        // Both ends are quotes, so on char boundaries: the slice of checked text is found.
        if self.bytes.get(i) == Some(&b'"')
            && let Some(s) = self.text.and_then(|t| t.get(start..i))
        {
            self.at = i + 1;
            return Ok(Cow::Borrowed(s));
        }
        self.string_rest(start, i)
    }

    /// [`Self::string`] from `i`, the first byte after `start` that ends a run, when that is
    /// not a closing quote in checked text.
    #[inline(never)]
    fn string_rest(&mut self, start: usize, i: usize) -> Result<Cow<'a, str>> {
        let bytes = self.bytes;
        match bytes.get(i) {
            // The body as a whole is not UTF-8: this string is checked alone.
            Some(b'"') => match std::str::from_utf8(&bytes[start..i]) {
                Ok(s) => {
                    self.at = i + 1;
                    Ok(Cow::Borrowed(s))
                }
                Err(_) => self.fail("invalid UTF-8 in a string"),
            },
            Some(b'\\') => self.unescape(start, i).map(Cow::Owned),
            Some(_) => {
                self.at = i;
                self.fail("control character in a string")
            }
            None => {
                self.at = i;
                self.fail("unterminated string")
            }
        }
    }

    /// The rest of a string from its first escape at `i`, copied and unescaped.
    fn unescape(&mut self, start: usize, mut i: usize) -> Result<String> {
        let bytes = self.bytes;
        let mut out = Vec::with_capacity(i - start + 16);
        out.extend_from_slice(&bytes[start..i]);
        loop {
            self.at = i;
            let Some(&b) = bytes.get(i) else {
                return self.fail("unterminated string");
            };
            match b {
                b'"' => break,
                b'\\' => {
                    let plain = match bytes.get(i + 1) {
                        Some(b'"') => b'"',
                        Some(b'\\') => b'\\',
                        Some(b'/') => b'/',
                        Some(b'b') => 0x08,
                        Some(b'f') => 0x0c,
                        Some(b'n') => b'\n',
                        Some(b'r') => b'\r',
                        Some(b't') => b'\t',
                        Some(b'u') => {
                            let c = self.escaped_char(i)?;
                            i = self.at;
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                            continue;
                        }
                        _ => return self.fail("invalid escape"),
                    };
                    out.push(plain);
                    i += 2;
                }
                0..=0x1f => return self.fail("control character in a string"),
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.at = i + 1;
        String::from_utf8(out).or_else(|_| self.fail("invalid UTF-8 in a string"))
    }

    /// A `\uXXXX` escape at `i` (a surrogate pair is two); leaves `at` after it.
    fn escaped_char(&mut self, i: usize) -> Result<char> {
        let first = self.hex4(i + 2)?;
        let (code, end) = match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(i + 6..i + 8) != Some(b"\\u") {
                    self.at = i;
                    return self.fail("lone leading surrogate in a string");
                }
                let second = self.hex4(i + 8)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    self.at = i;
                    return self.fail("lone leading surrogate in a string");
                }
                (
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00),
                    i + 12,
                )
            }
            0xDC00..=0xDFFF => {
                self.at = i;
                return self.fail("lone trailing surrogate in a string");
            }
            _ => (first, i + 6),
        };
        self.at = end;
        // Every value left is a scalar value: surrogates were handled above.
        char::from_u32(code).map_or_else(|| self.fail("invalid escape"), Ok)
    }

    fn hex4(&mut self, i: usize) -> Result<u32> {
        let digits = self.bytes.get(i..i + 4).unwrap_or_default();
        let value = (digits.len() == 4)
            .then(|| {
                (digits.iter()).try_fold(0, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
            })
            .flatten();
        match value {
            Some(n) => Ok(n),
            None => {
                self.at = i;
                self.fail("invalid \\u escape")
            }
        }
    }

    /// A boolean.
    pub fn bool(&mut self) -> Result<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => self.fail("expected a boolean"),
        }
    }

    /// An integer that fits an `i64`; a fraction or an exponent is not one.
    pub fn i64(&mut self) -> Result<i64> {
        self.peek()?;
        let bytes = self.bytes;
        let start = self.at;
        let negative = bytes[start] == b'-';
        let mut i = start + usize::from(negative);
        let digits = i;
        let mut n: i64 = 0;
        while let Some(&d @ b'0'..=b'9') = bytes.get(i) {
            let d = i64::from(d - b'0');
            // Accumulated negatively, so that i64::MIN fits.
            match n.checked_mul(10).and_then(|n| n.checked_sub(d)) {
                Some(m) => n = m,
                None => return self.fail("integer out of range"),
            }
            i += 1;
        }
        if i == digits {
            return self.fail("expected an integer");
        }
        if bytes[digits] == b'0' && i - digits > 1 {
            return self.fail("leading zero in a number");
        }
        if let Some(b'.' | b'e' | b'E') = bytes.get(i) {
            return self.fail("expected an integer, not a fraction or an exponent");
        }
        let n = if negative {
            n
        } else {
            match n.checked_neg() {
                Some(n) => n,
                None => return self.fail("integer out of range"),
            }
        };
        self.at = i;
        Ok(n)
    }

    /// Skips the next value.
    pub fn skip(&mut self) -> Result<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_nested(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                self.at += 1;
                while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') =
                    self.bytes.get(self.at)
                {
                    self.at += 1;
                }
                Ok(())
            }
            _ => self.fail("expected a value"),
        }
    }

    /// The text of the next value, skipped (for serde to read a value the reader does not).
    pub fn raw(&mut self) -> Result<&'a [u8]> {
        self.peek()?;
        let start = self.at;
        self.skip()?;
        Ok(&self.bytes[start..self.at])
    }

    /// Skips a string whose opening quote is at `at`.
    fn skip_string(&mut self) -> Result<()> {
        match skip_string_at(self.bytes, self.at + 1) {
            Some(end) => {
                self.at = end;
                Ok(())
            }
            None => self.fail("unterminated string"),
        }
    }

    /// Skips an object or array, looking only at quotes, backslashes and brackets: a block
    /// of 64 bytes at a time ([`blocks`]) where SSE2 builds its masks, byte by byte where
    /// that one steps aside (for the exact error) and on other architectures (see
    /// [`blocks`]).
    fn skip_nested(&mut self) -> Result<()> {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        if let Some(end) = blocks::skip_nested(self.bytes, self.at) {
            self.at = end;
            return Ok(());
        }
        self.skip_nested_bytewise()
    }

    /// Skips an object or array one byte at a time: the reference [`blocks`] is tested
    /// against, and the one that says what is wrong with a value.
    fn skip_nested_bytewise(&mut self) -> Result<()> {
        let bytes = self.bytes;
        let mut open = [0u8; MAX_DEPTH];
        let mut depth = 0;
        let mut i = self.at;
        loop {
            while i < bytes.len() && !STRUCTURAL[bytes[i] as usize] {
                i += 1;
            }
            let Some(&b) = bytes.get(i) else {
                self.at = i;
                return self.fail("unexpected end of JSON");
            };
            match b {
                b'"' => match skip_string_at(bytes, i + 1) {
                    Some(end) => i = end,
                    None => {
                        self.at = i;
                        return self.fail("unterminated string");
                    }
                },
                b'{' | b'[' => {
                    if depth == MAX_DEPTH {
                        self.at = i;
                        return self.fail("nested too deep");
                    }
                    // `{` + 2 is `}`, `[` + 2 is `]`.
                    open[depth] = b + 2;
                    depth += 1;
                    i += 1;
                }
                _ => {
                    if depth == 0 || open[depth - 1] != b {
                        self.at = i;
                        return self.fail("mismatched bracket");
                    }
                    depth -= 1;
                    i += 1;
                    if depth == 0 {
                        self.at = i;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Past the closing quote of a string whose content starts at `i`.
fn skip_string_at(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = runs::run_end::<false>(bytes, i);
        match bytes.get(i)? {
            b'"' => return Some(i + 1),
            _ => i += 2, // a backslash and the byte it escapes
        }
    }
}

#[cfg(test)]
mod tests;
