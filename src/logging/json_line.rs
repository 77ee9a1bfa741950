//! The JSON line (`--log-format json`), written as tracing-subscriber's flattened `Json`
//! format writes it, byte for byte, without serde.
//!
//! tracing-subscriber serialises a line through serde_json into an `io::Write` adaptor over
//! the line's `fmt::Write` buffer: every piece of JSON is a separate write that checks its
//! bytes are UTF-8 again, the time is formatted into a `String` of its own first, and each
//! `%` field goes through `format_args!` and serde's `collect_str`. A review's line cost
//! ~1.9 µs that way, against ~0.5 µs for the plain line (criterion `log/`, BENCHMARKS.md).
//!
//! [`JsonLine`] writes the same keys in the same order (`timestamp`, `level`, the event's
//! fields in their order, `target`), the same values (strings escaped as serde_json escapes
//! them, integers and `bool`s as they are, floats as serde_json writes an `f64`, anything else
//! as its `Debug` text in a string) straight into the line. An event inside a span, which
//! adds `span` and `spans` objects, it hands to tracing-subscriber's own format (gracegate
//! logs none today). The tests hold the two formats to the same text on the same events.
//!
//! One difference, on purpose: a field whose `Debug` or `Display` fails (returns
//! `fmt::Error` by itself) makes serde_json panic (`collect_str`'s "there should be an
//! error"), where this returns the error and tracing-subscriber reports the line it could
//! not format.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::UtcTime;
use crate::json::write::{Decimal, escaped_text};

/// tracing-subscriber's `Format<Json>` with `flatten_event(true)`, written by hand (see the
/// module's documentation). `T` is the line's time ([`UtcTime`] in gracegate).
#[derive(Debug, Clone)]
pub struct JsonLine<T = UtcTime> {
    timer: T,
    /// tracing-subscriber's own format, for events inside a span.
    in_span: Format<Json, T>,
}

impl<T: FormatTime + Clone> JsonLine<T> {
    pub fn new(timer: T) -> Self {
        let in_span = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_timer(timer.clone());
        JsonLine { timer, in_span }
    }
}

impl<S, N, T> FormatEvent<S, N> for JsonLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The span tracing-subscriber's format would write (the same lookup as its own).
        let in_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current())
            .is_some();
        if in_span {
            return self.in_span.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        // Escaped like any string: the time is whatever the timer writes.
        self.timer
            .format_time(&mut Writer::new(&mut Escaping(&mut writer)))?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":\"")?;
        escaped_text(&mut writer, meta.target())?;
        writer.write_str("\"}\n")
    }
}

/// A `fmt::Write` that escapes what goes through it as a JSON string's contents.
struct Escaping<'a, W>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escaped_text(self.0, s)
    }
}

// === impl Fields ===

/// The event's fields as `,"name":value`, each after the last; the first error stops the
/// rest (as tracing-serde's `SerdeMapVisitor` does).
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl<'w> Fields<'_, 'w> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let out = &mut *self.out;
        self.result = out
            .write_str(",\"")
            .and_then(|()| escaped_text(out, field.name()))
            .and_then(|()| out.write_str("\":"))
            .and_then(|()| value(out));
    }
}

/// What tracing-serde's `SerdeMapVisitor` records, the same way; the kinds it leaves to
/// `Visit`'s defaults (128-bit integers, bytes, errors) reach `record_debug` here as there.
impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| {
            out.write_char('"')?;
            escaped_text(out, value)?;
            out.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| {
            out.write_str(Decimal::unsigned(value).as_str())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| out.write_str(Decimal::signed(value).as_str()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes a finite `f64` as `Number` displays it, and NaN and the
        // infinities as `null`.
        self.field(field, |out| match serde_json::Number::from_f64(value) {
            Some(n) => write!(out, "{n}"),
            None => out.write_str("null"),
        });
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::format::JsonFields;

    use super::*;
    use crate::logging::captured::{At, Captured, events, events_in_spans};

    /// The lines `format` writes for the events of `f` (span fields as JSON, no colour: what
    /// tracing-subscriber's `json()` sets).
    fn written<E>(format: E, f: impl FnOnce()) -> String
    where
        E: FormatEvent<tracing_subscriber::Registry, JsonFields> + Send + Sync + 'static,
    {
        Captured::lines(JsonFields::new(), format, false, f)
    }

    /// Both formats on the same events: the same text, each line JSON.
    /// A time that fails makes both formats fail every line (reported as unformattable).
    fn same_as_tracing(events: impl Fn()) -> String {
        for at in [
            At::Text("2026-12-05T00:07:17.123456Z"),
            At::Text("t \"1\"\n\u{1}"),
            At::Unknown,
        ] {
            let tracing_json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_timer(at);
            let ours = written(JsonLine::new(at), &events);
            assert_eq!(ours, written(tracing_json, &events));
            for line in ours.lines() {
                match at {
                    At::Text(_) => drop(serde_json::from_str::<serde_json::Value>(line).unwrap()),
                    At::Unknown => assert!(line.starts_with("Unable to format"), "{line}"),
                }
            }
        }
        written(JsonLine::new(At::Text("now")), &events)
    }

    #[test]
    fn json_lines_are_tracings_json_lines() {
        let text = same_as_tracing(events);
        // Not vacuous: the fields are there, written by JsonLine.
        for expected in [
            r#"{"timestamp":"now","level":"INFO","message":"review \u001b[31m7 "#,
            r#""uid":"6f0c-11","namespace":"shop","pod":"web-7d9f\u001b[2J \"quoted\" sp ace \\ /","gates":2,"dry_run":true,"off":false,"grace":45,"low":-9223372036854775808,"high":18446744073709551615,"zero":0,"ratio":1.5,"whole":2.0,"tiny":1e-7,"huge":1e+300,"negative_zero":-0.0,"nan":null,"infinite":null,"big":"340282366920938463463374607431768211455""#,
            r#""type":"raw name","a.dotted":1,"target":"gracegate::logging::captured"}"#,
            r#"{"timestamp":"now","level":"ERROR","error":"inner","target""#,
            r#""level":"TRACE","message":"message only""#,
            r#""target":"odd \"target\"\n"}"#,
            r#""same":1,"same":2"#,
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
        assert!(!text.contains("skip"), "{text}");
        assert_eq!(text.lines().count(), 8, "{text}");
    }

    /// An event in a span is tracing-subscriber's to write, `span` and `spans` included.
    #[test]
    fn events_in_spans_are_written_by_tracing() {
        let text = same_as_tracing(events_in_spans);
        assert_eq!(text.lines().count(), 2, "{text}");
        for line in text.lines() {
            assert!(line.contains(r#""spans":[{"#), "{line}");
        }
        assert!(
            text.contains(r#""span":{"gates":1,"name":"plan"}"#),
            "{text}"
        );
    }

    /// Where serde_json panics (a `Display` that fails by itself), the line is reported
    /// as unformattable instead.
    #[test]
    fn a_value_that_fails_to_format_fails_the_line_not_the_process() {
        struct Fails;
        impl fmt::Display for Fails {
            fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
                Err(fmt::Error)
            }
        }
        let text = written(JsonLine::new(At::Text("now")), || {
            tracing::info!(bad = %Fails, after = 1u64, "x");
            tracing::info!(good = 1u64);
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("Unable to format"), "{text}");
        assert!(lines[1].contains(r#""good":1"#), "{text}");
    }

    proptest::proptest! {
        #[test]
        fn json_lines_agree_on_any_values(
            text in ".{0,40}",
            controls in "[\\x00-\\x1f\\x7f-\\u{9f}a\"\\\\/ ]{0,12}",
            u in proptest::num::u64::ANY,
            i in proptest::num::i64::ANY,
            b in proptest::bool::ANY,
            f in proptest::num::f64::ANY,
        ) {
            same_as_tracing(|| {
                tracing::info!(shown = %text, quoted = text.as_str(), raw = %controls, u, i, b, f, "{controls}");
                tracing::warn!(c = controls.as_str(), d = ?text);
            });
        }
    }
}
