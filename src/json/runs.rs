//! Runs of plain bytes inside a string, 16 at a time.
//!
//! A review's keys and values are short runs between quotes; the reader used to test each
//! byte against a table (three instructions a byte, a third of a 4 KB review's parse). The
//! SSE2 scan tests 16 bytes with a handful of instructions and jumps to the first byte that
//! ends the run. Other architectures test 8 bytes at a time in a `u64` ([`words`]).
//! [`bytewise`] is the reference both are tested against, and what finds the stop in the
//! last bytes of a text.

/// The first byte at or after `i` that ends a run of plain bytes in a string: a quote, a
/// backslash, and when `CONTROL` a control character (U+0000 to U+001F, which a string
/// that is read may not hold; a skipped one is not checked for them). `bytes.len()` when
/// no byte does.
#[inline]
pub(super) fn run_end<const CONTROL: bool>(bytes: &[u8], i: usize) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    let i = sse2::run_end::<CONTROL>(bytes, i);
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    let i = words::run_end::<CONTROL>(bytes, i);
    bytewise::<CONTROL>(bytes, i)
}

/// Byte by byte, against a table.
pub(super) fn bytewise<const CONTROL: bool>(bytes: &[u8], mut i: usize) -> usize {
    let stops = if CONTROL { &STRING_STOP } else { &STRING_END };
    while i < bytes.len() && !stops[bytes[i] as usize] {
        i += 1;
    }
    i
}

/// Bytes that end a run inside a string that is skipped.
const STRING_END: [bool; 256] = super::table(b"\"\\");

/// The same for a string that is read, which may not hold control characters.
const STRING_STOP: [bool; 256] = {
    let mut t = STRING_END;
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t
};

/// Eight bytes at a time in a `u64`, for architectures without the SSE2 scan.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
pub(super) mod words {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

    /// Where the first word holding a stop starts, or where the last whole word ends: the
    /// stop itself is then found byte by byte.
    #[inline]
    pub(in crate::json) fn run_end<const CONTROL: bool>(bytes: &[u8], mut i: usize) -> usize {
        while let Some(word) = bytes.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
            let word = u64::from_le_bytes(*word);
            let mut stops = has_byte(word, b'"') | has_byte(word, b'\\');
            if CONTROL {
                stops |= has_less(word, 0x20);
            }
            if stops != 0 {
                break;
            }
            i += 8;
        }
        i
    }

    /// Non-zero when some byte of `word` is `byte` (the classic "has zero byte" test on
    /// `word ^ byte…byte`: exact as a yes or no for the word, though not for which byte).
    pub(in crate::json) const fn has_byte(word: u64, byte: u8) -> u64 {
        has_less(word ^ (ONES * byte as u64), 1)
    }

    /// Non-zero when some byte of `word` is less than `n` (at most 0x80; exact as a yes or
    /// no, like [`has_byte`]).
    pub(in crate::json) const fn has_less(word: u64, n: u8) -> u64 {
        word.wrapping_sub(ONES * n as u64) & !word & HIGHS
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// The first stop in the whole 16-byte chunks from `i` on, or where the last whole
    /// chunk ends (fewer than 16 bytes are left to look at).
    #[inline]
    pub(super) fn run_end<const CONTROL: bool>(bytes: &[u8], mut i: usize) -> usize {
        while let Some(chunk) = bytes.get(i..).and_then(|rest| rest.first_chunk::<16>()) {
            let stops = stops::<CONTROL>(chunk);
            if stops != 0 {
                return i + stops.trailing_zeros() as usize;
            }
            i += 16;
        }
        i
    }

    /// One bit per byte of `chunk` that ends a run.
    #[inline]
    pub(super) fn stops<const CONTROL: bool>(chunk: &[u8; 16]) -> u32 {
        // SAFETY: SSE2 is enabled for the target (the `cfg` on this module), so its
        // intrinsics may be called; the load reads the 16 bytes of `chunk`, and `loadu` has
        // no alignment requirement.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
            let mut hits = _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
            );
            if CONTROL {
                // Unsigned `v <= 0x1f`: the minimum of the two is `v` itself.
                let low = _mm_min_epu8(v, _mm_set1_epi8(0x1f));
                hits = _mm_or_si128(hits, _mm_cmpeq_epi8(low, v));
            }
            // 16 bits, one a byte: the `i32`'s upper half is always zero.
            u32::from(_mm_movemask_epi8(hits) as u16)
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Each scan, finished byte by byte as [`run_end`] does, against the table alone.
    fn agree(text: &[u8], start: usize) -> Result<(), String> {
        agree_for::<false>(text, start)?;
        agree_for::<true>(text, start)
    }

    fn agree_for<const CONTROL: bool>(text: &[u8], start: usize) -> Result<(), String> {
        let reference = bytewise::<CONTROL>(text, start);
        let mut scans = vec![(
            "words",
            bytewise::<CONTROL>(text, words::run_end::<CONTROL>(text, start)),
        )];
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        scans.push((
            "sse2",
            bytewise::<CONTROL>(text, sse2::run_end::<CONTROL>(text, start)),
        ));
        scans.push(("run_end", run_end::<CONTROL>(text, start)));
        for (scan, end) in scans {
            if end != reference {
                return Err(format!(
                    "{scan} (control {CONTROL}) from {start}: {end}, the table: {reference}"
                ));
            }
        }
        Ok(())
    }

    /// Every byte value at every position of texts around the chunk size, from every start.
    #[test]
    fn every_byte_at_every_position_agrees_with_the_table() {
        for len in 0..48 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    for start in [0, at.saturating_sub(1), at, (at + 1).min(len)] {
                        if let Err(e) = agree(&text, start) {
                            panic!("{byte:#x} at {at} of {len}: {e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_word_tests_find_a_byte_in_every_lane() {
        use words::{has_byte, has_less};
        for lane in 0..8 {
            for byte in [b'"', b'\\', 0x00, 0x1f] {
                let mut word = [b'a'; 8];
                word[lane] = byte;
                let w = u64::from_le_bytes(word);
                assert_ne!(
                    has_byte(w, b'"') | has_byte(w, b'\\') | has_less(w, 0x20),
                    0,
                    "{lane} {byte}"
                );
            }
        }
        // Bytes next to the sought ones (0x21, 0x23, 0x5b, 0x5d, 0x20) and high bytes are
        // not them.
        let w = u64::from_le_bytes(*b"!#[] \xff\x80a");
        assert_eq!(
            has_byte(w, b'"') | has_byte(w, b'\\') | has_less(w, 0x20),
            0
        );
        assert_ne!(has_less(u64::from_le_bytes(*b"aaaaaaa\x1f"), 0x20), 0);
    }

    #[test]
    fn what_stops_a_run() {
        let text = b"ab\x1fc\"d\\\x7f\xff";
        assert_eq!(run_end::<true>(text, 0), 2);
        assert_eq!(run_end::<false>(text, 0), 4);
        assert_eq!(run_end::<false>(text, 5), 6);
        assert_eq!(run_end::<true>(text, 7), text.len());
        assert_eq!(run_end::<true>(&[], 0), 0);
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[test]
    fn the_chunk_mask_has_one_bit_per_stop() {
        let chunk = *b"\"a\\b\x00c\x1f \x20\x7f\x80\xff!#[]";
        assert_eq!(sse2::stops::<false>(&chunk), 0b101);
        assert_eq!(sse2::stops::<true>(&chunk), 0b101_0101);
    }

    proptest! {
        #[test]
        fn runs_agree_with_the_table(
            // Mostly plain bytes, so that runs cross the 8- and 16-byte chunks.
            text in proptest::collection::vec(
                prop_oneof![
                    40 => b' '..=b'~',
                    8 => 0x80u8..=0xff,
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x20,
                ],
                0..200,
            ),
            start in 0usize..200,
        ) {
            let start = start.min(text.len());
            agree(&text, start).map_err(TestCaseError::fail)?;
        }
    }
}
