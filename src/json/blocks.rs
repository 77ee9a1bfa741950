//! Skipping an object or array 64 bytes at a time.
//!
//! Each block is classified into bit masks (quotes, backslashes, opening and closing
//! brackets); escapes and strings are resolved with bit arithmetic over the whole block, so
//! only the brackets outside strings are visited one by one. A pod's `managedFields` has a
//! bracket every few bytes, but most of its bytes are keys in quotes, which the byte-wise
//! skipper walked one at a time.
//!
//! The result is the byte-wise skipper's ([`super::Reader`]'s reference): the same end for
//! every text it accepts. Anything unusual (a bracket that does not match, nesting deeper
//! than [`MAX_DEPTH`], the text ending inside the value, a backslash outside a string)
//! answers `None`, and the byte-wise skipper reads the value again for the exact error.
//! Tested against it on every recorded review, on generated texts and by the `review` fuzz
//! target.
//!
//! Only x86_64 skips this way (SSE2 masks, part of every x86_64 CPU). Elsewhere the masks
//! would be built byte by byte, four tests for each byte where the byte-wise skipper makes
//! one table lookup: the reader skips byte-wise there, and this module is left to its tests
//! (no NEON masks yet).
#![cfg_attr(
    not(all(target_arch = "x86_64", target_feature = "sse2")),
    allow(dead_code)
)]

use super::MAX_DEPTH;

const BLOCK: usize = 64;

/// Past the end of the object or array whose opening bracket is at `start`, or `None` when
/// the byte-wise skipper must decide.
pub(super) fn skip_nested(bytes: &[u8], start: usize) -> Option<usize> {
    let mut strings = Strings::default();
    // One bit per open bracket, the innermost lowest: 1 for `[`, 0 for `{`.
    let mut stack: u128 = 0;
    let mut depth = 0;
    let mut base = start;
    // Only the last block, past the text's end, is padded (with spaces: nothing of interest).
    let mut padded = [b' '; BLOCK];
    while base < bytes.len() {
        let block: &[u8; BLOCK] = match bytes.get(base..base + BLOCK) {
            Some(block) => block.try_into().ok()?,
            None => {
                let tail = &bytes[base..];
                padded[..tail.len()].copy_from_slice(tail);
                &padded
            }
        };
        let masks = Masks::of(block);
        let in_string = strings.resolve(&masks)?;
        let (open, close) = (masks.open & !in_string, masks.close & !in_string);
        let mut brackets = open | close;
        // An empty object or array, `{}` or `[]` (half the brackets of a pod's
        // `managedFields`), leaves the depth as it was: both brackets are dropped unvisited,
        // a few instructions a pair instead of a visit each. Not the value's own opening
        // bracket, whose closing one ends the value (bit 0 of the first block); not `{]` or
        // `[}`, which are refused below; and not where a pair could be nested deeper than
        // the byte-wise skipper allows (at most `BLOCK` opening brackets in a block).
        if depth + BLOCK <= MAX_DEPTH {
            let mut pairs = open & (close >> 1) & !u64::from(base == start);
            while pairs != 0 {
                let i = pairs.trailing_zeros() as usize;
                pairs &= pairs - 1;
                // `i` < 63 (`close >> 1` has no bit 63); `{` + 2 is `}`, `[` + 2 is `]`.
                if block[i] + 2 == block[i + 1] {
                    brackets &= !(0b11 << i);
                }
            }
        }
        while brackets != 0 {
            let i = brackets.trailing_zeros() as usize;
            brackets &= brackets - 1;
            // `[` and `]` are `{` and `}` without the 0x20 bit.
            let square = u128::from(block[i] & 0x20 == 0);
            if open & (1 << i) != 0 {
                if depth == MAX_DEPTH {
                    return None;
                }
                stack = stack << 1 | square;
                depth += 1;
            } else {
                if depth == 0 || stack & 1 != square {
                    return None;
                }
                stack >>= 1;
                depth -= 1;
                if depth == 0 {
                    return Some(base + i + 1);
                }
            }
        }
        base += BLOCK;
    }
    None
}

/// A block's bytes of interest, one bit per byte (bit `i` is byte `i`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// `{` and `[`.
    open: u64,
    /// `}` and `]`.
    close: u64,
}

impl Masks {
    /// SSE2 compares and mask extractions, 16 bytes at a time (SSE2 is part of every
    /// x86_64 CPU: no detection needed).
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline]
    fn of(block: &[u8; BLOCK]) -> Self {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        // SAFETY: SSE2 is enabled for the target (the `cfg`), so its intrinsics may be
        // called; each load reads 16 bytes inside `block` (lane * 16 + 16 <= 64), and
        // `loadu` has no alignment requirement.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let fold = _mm_set1_epi8(0x20);
            let open = _mm_set1_epi8(b'{' as i8);
            let close = _mm_set1_epi8(b'}' as i8);
            let mut m = Self::default();
            for lane in 0..BLOCK / 16 {
                let v = _mm_loadu_si128(block.as_ptr().add(lane * 16).cast::<__m128i>());
                let folded = _mm_or_si128(v, fold);
                let bits = |x| u64::from(_mm_movemask_epi8(x) as u16) << (lane * 16);
                m.quote |= bits(_mm_cmpeq_epi8(v, quote));
                m.backslash |= bits(_mm_cmpeq_epi8(v, backslash));
                m.open |= bits(_mm_cmpeq_epi8(folded, open));
                m.close |= bits(_mm_cmpeq_epi8(folded, close));
            }
            m
        }
    }

    /// Byte by byte elsewhere (and the reference the SSE2 masks are tested against).
    #[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
    fn of_bytes(block: &[u8; BLOCK]) -> Self {
        let mut m = Self::default();
        for (i, &b) in block.iter().enumerate() {
            // `b | 0x20` folds `[` onto `{` and `]` onto `}`, and nothing else onto them.
            let folded = b | 0x20;
            m.quote |= u64::from(b == b'"') << i;
            m.backslash |= u64::from(b == b'\\') << i;
            m.open |= u64::from(folded == b'{') << i;
            m.close |= u64::from(folded == b'}') << i;
        }
        m
    }

    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    #[inline]
    fn of(block: &[u8; BLOCK]) -> Self {
        Self::of_bytes(block)
    }
}

/// Where strings are, carried from one block to the next.
#[derive(Debug, Default)]
struct Strings {
    /// All ones when the previous block ended inside a string.
    inside: u64,
    /// The previous block ended with a backslash that escapes this block's first byte.
    escaping: bool,
}

impl Strings {
    /// The block's bytes inside strings (an opening quote counts as inside, a closing quote
    /// as outside), or `None` when a backslash stands outside a string.
    fn resolve(&mut self, masks: &Masks) -> Option<u64> {
        let (escaped, acting) = self.escapes(masks.backslash);
        let in_string = prefix_xor(masks.quote & !escaped) ^ self.inside;
        // The byte-wise skipper treats a backslash as an escape only inside a string.
        if acting & !in_string != 0 {
            return None;
        }
        self.inside = ((in_string as i64) >> 63) as u64;
        Some(in_string)
    }

    /// The bytes escaped by a backslash, and the backslashes that escape (not themselves
    /// escaped), without visiting them: a run of backslashes escapes every other byte
    /// after its start, so which bytes depends only on where each run starts, odd or even.
    /// Adding a run's odd start to the run carries through it and leaves its end marked;
    /// the carry out of bit 63 is a backslash that escapes the next block's first byte.
    /// (The technique of simdjson, Langdale and Lemire, "Parsing Gigabytes of JSON per
    /// Second", 2019.) The 26 KB review's `managedFields` hold ~580 backslashes
    /// (`k:{\"name\":…}` keys): they were visited one by one.
    fn escapes(&mut self, backslash: u64) -> (u64, u64) {
        let carried = u64::from(std::mem::take(&mut self.escaping));
        if backslash == 0 {
            return (carried, 0);
        }
        const EVEN: u64 = 0x5555_5555_5555_5555;
        // A backslash escaped from the previous block escapes nothing.
        let backslash = backslash & !carried;
        // The bytes after a backslash: the ones a run may escape.
        let follows = backslash << 1 | carried;
        // Runs that start on an odd bit become, added to their start, a bit past their end;
        // runs that start on an even bit stay as they are.
        let odd_starts = backslash & !EVEN & !follows;
        let (even_runs, carry) = odd_starts.overflowing_add(backslash);
        self.escaping = carry;
        // After an even start the odd bits are escaped, after an odd start the even bits.
        let escaped = (EVEN ^ even_runs << 1) & follows;
        (escaped, backslash & !escaped)
    }

    /// [`Strings::escapes`] one backslash at a time: the reference it is tested against.
    #[cfg(test)]
    fn escapes_one_by_one(&mut self, backslash: u64) -> (u64, u64) {
        let mut escaped = u64::from(self.escaping);
        self.escaping = false;
        if backslash == 0 {
            return (escaped, 0);
        }
        let mut rest = backslash & !escaped;
        let mut acting = 0;
        while rest != 0 {
            let i = rest.trailing_zeros();
            rest &= rest - 1;
            acting |= 1 << i;
            if i == 63 {
                self.escaping = true;
            } else {
                // The escaped byte, a backslash or not, escapes nothing.
                escaped |= 1 << (i + 1);
                rest &= !(1 << (i + 1));
            }
        }
        (escaped, acting)
    }
}

/// Bit `i` of the result is the parity of bits `0..=i` of `x`: with `x` the unescaped
/// quotes, the bytes from an opening quote up to (not including) its closing quote.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

#[cfg(test)]
mod tests;
