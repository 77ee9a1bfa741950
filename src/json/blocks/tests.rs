use std::path::Path;

use proptest::prelude::*;
use rstest::rstest;

use super::*;
use crate::json::Reader;

/// The byte-wise skipper's end for the value at `start`, or `None` for its error.
fn bytewise(bytes: &[u8], start: usize) -> Option<usize> {
    let mut r = Reader::new(bytes);
    r.at = start;
    r.skip_nested_bytewise().ok().map(|()| r.at)
}

/// The block skipper agrees with the byte-wise one wherever it answers, and answers for
/// every value the byte-wise one accepts unless it stepped aside for a backslash outside
/// a string (which only broken JSON has).
fn agrees(bytes: &[u8], start: usize) {
    let fast = skip_nested(bytes, start);
    let reference = bytewise(bytes, start);
    if let Some(end) = fast {
        assert_eq!(Some(end), reference, "{:?}", String::from_utf8_lossy(bytes));
    } else if reference.is_some() {
        assert!(
            bytes.contains(&b'\\'),
            "stepped aside on {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn every_recorded_review_and_each_of_its_nested_values_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut values = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read(&path).unwrap();
        let compact =
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&text).unwrap())
                .unwrap();
        for bytes in [&text, &compact] {
            assert_eq!(skip_nested(bytes, 0), Some(bytes.len()), "{path:?}");
            // Every object and array inside, strings' brackets included (the reference
            // says what a value starting there would be).
            for (start, &b) in bytes.iter().enumerate() {
                if b == b'{' || b == b'[' {
                    agrees(bytes, start);
                    values += 1;
                }
            }
        }
    }
    assert!(values > 1_000, "{values}");
}

#[rstest]
#[case::empty_object("{}", Some(2))]
#[case::empty_array("[] ", Some(2))]
#[case::brackets_in_a_string(r#"{"a":"}]{["}"#, Some(12))]
#[case::escaped_quote(r#"["\"]"]"#, Some(7))]
#[case::escaped_backslash_then_quote(r#"["\\"]"#, Some(6))]
#[case::three_backslashes(r#"["\\\"]"]"#, Some(9))]
#[case::mismatched("[}", None)]
#[case::empty_inside(r#"{"a":{},"b":[],"c":[{}]}"#, Some(24))]
#[case::mismatched_inside("[{]}]", None)]
#[case::mismatched_inside_square("[[}]", None)]
#[case::pair_after_the_end("[] {}", Some(2))]
#[case::unclosed("[[]", None)]
#[case::unterminated_string(r#"["]"#, None)]
#[case::backslash_outside_a_string(r#"[\"]"#, None)]
fn short_values(#[case] text: &str, #[case] end: Option<usize>) {
    assert_eq!(skip_nested(text.as_bytes(), 0), end);
    agrees(text.as_bytes(), 0);
}

/// Backslash runs, quotes and brackets placed across the 64-byte boundaries.
#[test]
fn escapes_and_strings_carry_across_blocks() {
    for pad in 0..BLOCK * 2 {
        for backslashes in 0..5 {
            let text = format!(
                "[\"{}{}\"]\", {{}}]",
                "x".repeat(pad),
                "\\".repeat(backslashes)
            );
            agrees(text.as_bytes(), 0);
            let text = format!("{{\"{}\":[{}]}}", "a".repeat(pad), "[]".repeat(backslashes));
            assert_eq!(skip_nested(text.as_bytes(), 0), Some(text.len()));
        }
    }
}

#[test]
fn nesting_is_bounded_as_the_byte_wise_skipper_bounds_it() {
    for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
        let text = "[{".repeat(depth / 2) + &"[".repeat(depth % 2);
        let text = text.clone() + &"]".repeat(depth % 2) + &"}]".repeat(depth / 2);
        agrees(text.as_bytes(), 0);
        assert_eq!(
            skip_nested(text.as_bytes(), 0).is_some(),
            depth <= MAX_DEPTH
        );
    }
}

/// Empty objects and arrays at the deepest level the byte-wise skipper allows, and one
/// deeper: they are dropped unvisited only where that cannot hide a depth it refuses.
#[test]
fn empty_values_at_the_depth_bound_agree() {
    for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
        for pairs in ["{}", "[]", "{}[]{}", &"[]".repeat(40)] {
            let text = "[".repeat(depth - 1) + pairs + &"]".repeat(depth - 1);
            agrees(text.as_bytes(), 0);
            assert_eq!(
                skip_nested(text.as_bytes(), 0).is_some(),
                depth <= MAX_DEPTH,
                "{depth} {pairs}"
            );
        }
    }
}

/// Empty, mismatched and unbalanced pairs at every offset around the block boundaries, in
/// a value that starts at the text's start and in one that starts later.
#[test]
fn empty_values_across_blocks_agree() {
    for pad in 0..BLOCK * 2 {
        for inner in ["{}", "[]", "{]", "[}", "{}}", "[[]"] {
            let text = format!("[\"{}\",{inner}]", "x".repeat(pad));
            agrees(text.as_bytes(), 0);
            let text = format!("{}{{\"a\":{inner}}}", " ".repeat(pad));
            agrees(text.as_bytes(), pad);
        }
    }
}

#[test]
fn masks_mark_each_byte_of_interest() {
    let mut block = [b'a'; BLOCK];
    for (i, b) in [
        (0, b'"'),
        (9, b'\\'),
        (17, b'{'),
        (33, b'['),
        (48, b'}'),
        (63, b']'),
    ] {
        block[i] = b;
    }
    assert_eq!(
        Masks::of(&block),
        Masks {
            quote: 1,
            backslash: 1 << 9,
            open: 1 << 17 | 1 << 33,
            close: 1 << 48 | 1 << 63,
        }
    );
    // Nothing else folds onto a bracket: every other byte value marks nothing.
    for b in 0..=255u8 {
        if !b"\"\\{}[]".contains(&b) {
            assert_eq!(Masks::of(&[b; BLOCK]), Masks::default(), "{b:#x}");
        }
    }
}

proptest! {
    /// The SSE2 masks are the byte-by-byte ones, for any block.
    #[test]
    fn masks_are_the_byte_by_byte_masks(bytes in prop::collection::vec(any::<u8>(), BLOCK)) {
        let block: &[u8; BLOCK] = bytes.as_slice().try_into().unwrap();
        prop_assert_eq!(Masks::of(block), Masks::of_bytes(block));
    }

    /// Texts made mostly of the bytes that matter, at any offset: the same answer.
    #[test]
    fn structural_soup_agrees(
        bytes in prop::collection::vec(
            prop::sample::select(b"\"\\{}[]a ".to_vec()), 0..300),
        start in 0usize..8,
    ) {
        let mut bytes = bytes;
        let start = start.min(bytes.len());
        bytes.insert(start, b'[');
        agrees(&bytes, start);
    }

    /// Whatever serde_json writes is skipped to its end, as the byte-wise skipper does.
    #[test]
    fn every_nested_value_serde_writes_agrees(value in crate::json::tests::any_value(), pretty: bool) {
        let value = serde_json::json!([value]);
        let text = if pretty {
            serde_json::to_vec_pretty(&value).unwrap()
        } else {
            serde_json::to_vec(&value).unwrap()
        };
        prop_assert_eq!(skip_nested(&text, 0), Some(text.len()));
    }
}

/// The escapes found without visiting the backslashes, against one at a time: the same
/// escaped bytes, acting backslashes and carry, for every pattern of 16 bits at the start,
/// middle and end of a block, with and without a carry in.
#[test]
fn escapes_are_the_one_by_one_escapes() {
    for bits in 0..=u16::MAX {
        for shift in [0, 1, 24, 47, 48] {
            for carried in [false, true] {
                same_escapes(u64::from(bits) << shift, carried);
            }
        }
    }
    same_escapes(u64::MAX, false);
    same_escapes(u64::MAX, true);
}

fn same_escapes(backslash: u64, carried: bool) {
    let mut fast = Strings {
        escaping: carried,
        ..Strings::default()
    };
    let mut reference = Strings {
        escaping: carried,
        ..Strings::default()
    };
    assert_eq!(
        (fast.escapes(backslash), fast.escaping),
        (reference.escapes_one_by_one(backslash), reference.escaping),
        "{backslash:064b} carried {carried}"
    );
}

proptest! {
    #[test]
    fn escapes_agree_on_any_block(a: u64, b: u64, carried: bool) {
        // Runs of backslashes are the interesting case: dense masks have long ones.
        same_escapes(a | b, carried);
        same_escapes(a & b, carried);
        same_escapes(a, carried);
    }
}
