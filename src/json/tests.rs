use proptest::prelude::*;
use rstest::rstest;
use serde_json::{Value, json};

use super::*;

/// Skips `text` whole and says where it stopped.
fn skipped(text: &str) -> Result<usize> {
    let mut r = Reader::new(text.as_bytes());
    r.skip()?;
    Ok(r.at)
}

#[rstest]
#[case::string(r#""a\"b\\" , 1"#, 8)]
#[case::object(r#"{"a":[1,{"b":"]}"}],"c":null} x"#, 29)]
#[case::array(r#"[[],[[]],"[",{}]"#, 16)]
#[case::number("-12.5e+3,", 8)]
#[case::literal("true ", 4)]
#[case::escaped_quote_in_key(r#"{"a\"}":1}"#, 10)]
fn a_value_is_skipped_to_its_end(#[case] text: &str, #[case] end: usize) {
    assert_eq!(skipped(text), Ok(end));
}

#[rstest]
#[case::unterminated_string(r#""abc"#, "unterminated string")]
#[case::unterminated_in_object(r#"{"a":"b}"#, "unterminated string")]
#[case::unclosed(r#"{"a":[1,2]"#, "unexpected end of JSON")]
#[case::mismatched("[1,2}", "mismatched bracket")]
#[case::mismatched_inner(r#"{"a":[}]"#, "mismatched bracket")]
#[case::not_a_value("x", "expected a value")]
#[case::bad_literal("nul", "expected a value")]
#[case::empty("", "unexpected end of JSON")]
fn a_broken_value_is_an_error(#[case] text: &str, #[case] what: &str) {
    assert_eq!(skipped(text).unwrap_err().what, what);
}

#[test]
fn nesting_is_bounded() {
    let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
    assert_eq!(skipped(&deep), Ok(deep.len()));
    let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
    assert_eq!(skipped(&deeper).unwrap_err().what, "nested too deep");
}

#[rstest]
#[case::plain(r#""pod-1""#, "pod-1", true)]
#[case::empty(r#""""#, "", true)]
#[case::utf8(r#""grüße""#, "grüße", true)]
#[case::escapes(r#""a\"b\\c\/d\n\t\r\b\f""#, "a\"b\\c/d\n\t\r\u{8}\u{c}", false)]
#[case::unicode(r#""\u00fc\u20AC""#, "ü€", false)]
#[case::surrogate_pair(r#""x\ud83d\ude00y""#, "x😀y", false)]
fn a_string_is_read(#[case] text: &str, #[case] expected: &str, #[case] borrowed: bool) {
    let mut r = Reader::new(text.as_bytes());
    let s = r.string().unwrap();
    assert_eq!(s, expected);
    assert_eq!(matches!(s, Cow::Borrowed(_)), borrowed);
    assert_eq!(r.at, text.len());
}

#[rstest]
#[case::lone_leading(r#""\ud83d""#, "lone leading surrogate in a string")]
#[case::leading_then_other(r#""\ud83d\u0041""#, "lone leading surrogate in a string")]
#[case::lone_trailing(r#""\ude00""#, "lone trailing surrogate in a string")]
#[case::short_hex(r#""\u12""#, "invalid \\u escape")]
#[case::bad_hex(r#""\u12g4""#, "invalid \\u escape")]
#[case::bad_escape(r#""\q""#, "invalid escape")]
#[case::control("\"a\nb\"", "control character in a string")]
#[case::control_after_escape("\"\\n\u{1}\"", "control character in a string")]
#[case::unterminated(r#""abc\""#, "unterminated string")]
#[case::not_a_string("12", "expected a string")]
fn a_bad_string_is_an_error(#[case] text: &str, #[case] what: &str) {
    assert_eq!(
        Reader::new(text.as_bytes()).string().unwrap_err().what,
        what
    );
}

#[test]
fn invalid_utf8_is_an_error() {
    for text in [&b"\"\xff\""[..], b"\"\\n\xc3\""] {
        assert_eq!(
            Reader::new(text).string().unwrap_err().what,
            "invalid UTF-8 in a string"
        );
    }
}

#[rstest]
#[case("0", Ok(0))]
#[case("-0", Ok(0))]
#[case("30 ", Ok(30))]
#[case("-45,", Ok(-45))]
#[case("9223372036854775807", Ok(i64::MAX))]
#[case("-9223372036854775808", Ok(i64::MIN))]
#[case("9223372036854775808", Err("integer out of range"))]
#[case("-9223372036854775809", Err("integer out of range"))]
#[case("30.0", Err("expected an integer, not a fraction or an exponent"))]
#[case("3e1", Err("expected an integer, not a fraction or an exponent"))]
#[case("012", Err("leading zero in a number"))]
#[case("-", Err("expected an integer"))]
#[case("\"30\"", Err("expected an integer"))]
fn an_integer_is_read(#[case] text: &str, #[case] expected: Result<i64, &str>) {
    let got = Reader::new(text.as_bytes()).i64();
    assert_eq!(
        got.map_err(|e| e.what.into_owned()),
        expected.map_err(String::from)
    );
}

#[test]
fn objects_and_arrays_hand_over_their_items() {
    let text = br#" { "a" : [ 1 , "x" ] , "b" : { } , "c" : [ ] , "d" : null } "#;
    let mut r = Reader::new(text);
    let mut seen = Vec::new();
    r.object(|r, key| {
        match &*key {
            "a" => r.array(|r| {
                seen.push(format!("a:{}", String::from_utf8_lossy(r.raw()?)));
                Ok(())
            })?,
            "d" => seen.push(format!("d null:{}", r.null()?)),
            _ => {
                seen.push(key.into_owned());
                r.skip()?
            }
        }
        Ok(())
    })
    .unwrap();
    r.end().unwrap();
    assert_eq!(seen, ["a:1", "a:\"x\"", "b", "c", "d null:true"]);
}

#[rstest]
#[case::trailing_comma(r#"{"a":1,}"#, "expected a key")]
#[case::missing_colon(r#"{"a" 1}"#, "expected ':'")]
#[case::missing_comma(r#"{"a":1 "b":2}"#, "expected ',' or '}'")]
#[case::not_an_object("[]", "expected an object")]
fn a_bad_object_is_an_error(#[case] text: &str, #[case] what: &str) {
    let got = Reader::new(text.as_bytes()).object(|r, _| r.skip());
    assert_eq!(got.unwrap_err().what, what);
}

#[test]
fn trailing_characters_are_an_error() {
    let mut r = Reader::new(b"{} {}");
    r.skip().unwrap();
    assert_eq!(r.end().unwrap_err().what, "trailing characters");
}

pub(super) fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[\"\\\\/{}\\[\\]a-z]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map("[\"\\\\{}a-z]{0,6}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Whatever serde_json writes, compact or pretty, is skipped to its exact end.
    #[test]
    fn every_value_serde_writes_is_skipped_whole(value in any_value(), pretty: bool) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            serde_json::to_string(&value).unwrap()
        };
        let mut r = Reader::new(text.as_bytes());
        let raw = r.raw().unwrap();
        prop_assert_eq!(r.at, text.len());
        prop_assert_eq!(raw, text.as_bytes());
    }

    /// Every string serde_json writes reads back as the same string.
    #[test]
    fn every_string_serde_writes_reads_back(s: String) {
        let text = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(Reader::new(text.as_bytes()).string().unwrap(), s.as_str());
        // Escaped the long way round, too (`\uXXXX` for every character).
        let escaped: String = s.encode_utf16().map(|u| format!("\\u{u:04x}")).collect();
        let text = format!("\"{escaped}\"");
        prop_assert_eq!(Reader::new(text.as_bytes()).string().unwrap(), s.as_str());
    }

    /// Any bytes: an answer or an error, never a panic, and an error points into the text.
    #[test]
    fn any_bytes_end_in_a_value_or_an_error(bytes: Vec<u8>) {
        let mut r = Reader::new(&bytes);
        if let Err(e) = r.skip() {
            prop_assert!(e.at <= bytes.len());
        }
        let _ = Reader::new(&bytes).string();
        let _ = Reader::new(&bytes).i64();
    }
}

#[test]
fn a_number_that_serde_reads_as_an_integer_reads_the_same() {
    for v in [
        json!(0),
        json!(7),
        json!(-7),
        json!(i64::MAX),
        json!(i64::MIN),
    ] {
        let text = v.to_string();
        assert_eq!(Reader::new(text.as_bytes()).i64().ok(), v.as_i64());
    }
}

#[test]
fn strings_of_every_length_are_skipped_and_read_with_a_quote_or_escape_anywhere() {
    for len in 0..40 {
        for at in 0..len {
            for special in ["\\\"", "\\\\", "\\u00e9", "é"] {
                let mut s: String = "x".repeat(len);
                s.replace_range(at..at + 1, special);
                let text = format!("\"{s}\" ");
                assert_eq!(skipped(&text), Ok(text.len() - 1), "{text}");
                let expected: String = serde_json::from_str(&text).unwrap();
                assert_eq!(Reader::new(text.as_bytes()).string().unwrap(), expected);
            }
        }
    }
}

#[test]
fn invalid_utf8_elsewhere_does_not_stop_a_valid_string() {
    // The text as a whole is not UTF-8: each string read is checked on its own.
    let text = b"[\"\xff\", \"ok\"]";
    let mut r = Reader::new(text);
    let mut read = Vec::new();
    r.array(|r| {
        match r.string() {
            Ok(s) => read.push(s.into_owned()),
            Err(e) => {
                read.push(e.what.into_owned());
                r.skip()?;
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(read, ["invalid UTF-8 in a string", "ok"]);
}
