//! How a plain line is written: the line ([`PlainLine`]), its fields ([`PlainFields`]) and
//! its time ([`UtcTime`]), the same text as tracing-subscriber's own, with less formatting
//! machinery.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};

use crate::json::write::Decimal;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

// === impl PlainLine ===

/// The plain line as tracing-subscriber's default (`Full`) format writes it without colour
/// and outside spans: `{time} {level:>5} {target}: {fields}`, the level and target written
/// directly where that format `write!`s them through its (empty) styles. A line with colour
/// or inside a span (gracegate logs none) it hands to that format itself. The fields are
/// the subscriber's (`PlainFields`). The tests compare the two on the same events.
#[derive(Debug, Clone)]
pub struct PlainLine<T = UtcTime> {
    timer: T,
    /// tracing-subscriber's own format, for colour and spans.
    styled: Format<Full, T>,
}

impl<T: FormatTime + Clone> PlainLine<T> {
    pub fn new(timer: T) -> Self {
        let styled = tracing_subscriber::fmt::format().with_timer(timer.clone());
        PlainLine { timer, styled }
    }
}

impl<S, N, T> FormatEvent<S, N> for PlainLine<T>
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
        if writer.has_ansi_escapes() || ctx.event_scope().is_some() {
            return self.styled.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        if self.timer.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        // The level right-aligned in five columns, as `FmtLevel` pads it.
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

// === impl UtcTime ===

/// A line's time as tracing-subscriber's `SystemTime` writes it (RFC 3339 in UTC with
/// microseconds, `2026-12-04T18:33:16.465362Z`), its digits written directly: that one's
/// seven `write!`s were ~2,400 instructions of a review's log line (callgrind). Times it
/// would write another way (before 1970, after 9999) it writes itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct UtcTime;

impl FormatTime for UtcTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        match rfc3339(now) {
            Some(text) => w.write_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// `time` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, for 1970-01-01 to 9999-12-31.
fn rfc3339(time: std::time::SystemTime) -> Option<[u8; 27]> {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    let seconds = since.as_secs();
    if seconds > LAST {
        return None;
    }
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(0, 4, year);
    digits(5, 2, month);
    digits(8, 2, day);
    digits(11, 2, of_day / 3_600);
    digits(14, 2, of_day / 60 % 60);
    digits(17, 2, of_day % 60);
    digits(20, 6, u64::from(since.subsec_micros()));
    Some(text)
}

/// The proleptic Gregorian (year, month, day) of `days` after 1970-01-01: Howard Hinnant's
/// `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>), which counts
/// in 400-year eras from 0000-03-01 so that the leap day ends a year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March is 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

// === impl PlainFields ===

/// The plain format's fields, written exactly as tracing-subscriber's `DefaultFields` writes
/// them (`name=value`, space-separated), without its styling work when there is no colour.
///
/// `DefaultFields` writes every field as `write!("{}{}{:?}", italic(name), dimmed("="),
/// value)`, styles that are empty without colour but still formatted: that was ~1,300 of
/// the ~1,800 instructions per field of a review's log line (callgrind, BENCHMARKS.md).
/// Here a field is three writes. What this does not do the same way it hands to
/// `DefaultVisitor` itself, so it cannot drift from it: every field when writing colour,
/// the `message` (which it escapes), `r#` names and errors (their sources). The tests
/// compare the two on the same events.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> PlainVisitor<'a> {
        if writer.has_ansi_escapes() {
            PlainVisitor::Styled(DefaultVisitor::new(writer, true))
        } else {
            PlainVisitor::Plain {
                writer,
                is_empty: true,
                result: Ok(()),
            }
        }
    }
}

/// The visitor of [`PlainFields`].
#[derive(Debug)]
pub enum PlainVisitor<'a> {
    /// Colour: `DefaultVisitor` styles the names.
    Styled(DefaultVisitor<'a>),
    Plain {
        writer: Writer<'a>,
        /// No field written yet (the next needs no space before it).
        is_empty: bool,
        result: fmt::Result,
    },
}

impl PlainVisitor<'_> {
    /// Write one field with `value`, or hand it to `DefaultVisitor` (see [`PlainFields`]).
    fn field(
        &mut self,
        field: &Field,
        value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
        otherwise: impl FnOnce(&mut DefaultVisitor<'_>),
    ) {
        let name = field.name();
        match self {
            PlainVisitor::Plain {
                writer,
                is_empty,
                result,
            } if name != "message" && !name.starts_with("r#") => {
                if result.is_err() {
                    return;
                }
                let padded = if *is_empty {
                    *is_empty = false;
                    Ok(())
                } else {
                    writer.write_char(' ')
                };
                *result = padded
                    .and_then(|()| writer.write_str(name))
                    .and_then(|()| writer.write_char('='))
                    .and_then(|()| value(writer));
            }
            _ => self.delegate(otherwise),
        }
    }

    /// Hand one field to `DefaultVisitor`: the styled one itself, or one over this writer
    /// that starts where this visitor stands.
    fn delegate(&mut self, f: impl FnOnce(&mut DefaultVisitor<'_>)) {
        match self {
            PlainVisitor::Styled(v) => f(v),
            PlainVisitor::Plain {
                writer,
                is_empty,
                result,
            } => {
                if result.is_ok() {
                    let mut v = DefaultVisitor::new(writer.by_ref(), *is_empty);
                    f(&mut v);
                    *result = v.finish();
                    *is_empty = false;
                }
            }
        }
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(
            field,
            |w| write!(w, "{value:?}"),
            |v| v.record_debug(field, value),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(
            field,
            |w| write!(w, "{value:?}"),
            |v| v.record_str(field, value),
        );
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(
            field,
            |w| w.write_str(Decimal::unsigned(value).as_str()),
            |v| v.record_u64(field, value),
        );
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(
            field,
            |w| w.write_str(Decimal::signed(value).as_str()),
            |v| v.record_i64(field, value),
        );
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(
            field,
            |w| w.write_str(if value { "true" } else { "false" }),
            |v| v.record_bool(field, value),
        );
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Errors and their sources are DefaultVisitor's to write, always.
        self.delegate(|v| v.record_error(field, value));
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        match self {
            PlainVisitor::Styled(v) => v.finish(),
            PlainVisitor::Plain { result, .. } => result,
        }
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        match self {
            PlainVisitor::Styled(v) => v.writer(),
            PlainVisitor::Plain { writer, .. } => writer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logging::captured::{At, Captured, events, events_in_spans};

    // === UtcTime ===

    /// What jiff writes for the same instant, truncated to microseconds.
    fn jiff_rfc3339(seconds: u64, nanos: u32) -> String {
        let t = k8s_openapi::jiff::Timestamp::new(seconds as i64, nanos as i32).unwrap();
        let text = t.strftime("%Y-%m-%dT%H:%M:%S.%f").to_string();
        // %f writes nanoseconds without trailing zeros; the line has six digits.
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
        format!("{whole}.{:0<9}", fraction)[..whole.len() + 7].to_string() + "Z"
    }

    fn ours(seconds: u64, nanos: u32) -> Option<String> {
        let t = std::time::UNIX_EPOCH + Duration::new(seconds, nanos);
        rfc3339(t).map(|text| String::from_utf8(text.to_vec()).unwrap())
    }

    #[test]
    fn times_are_written_as_jiff_writes_them() {
        // The epoch, leap days, ends of months and years, the last second it writes.
        for (seconds, nanos) in [
            (0, 0),
            (951_782_400, 999_999_999), // 2000-02-29
            (4_107_542_399, 1_000),     // 2100-02-28T23:59:59
            (4_107_542_400, 0),         // 2100-03-01, not a leap year
            (1_798_675_200, 123_456_789),
            (253_402_207_200, 999_999_999), // jiff's last second
        ] {
            assert_eq!(
                ours(seconds, nanos),
                Some(jiff_rfc3339(seconds, nanos)),
                "{seconds}"
            );
        }
        assert_eq!(
            ours(253_402_300_799, 999_999_999).as_deref(),
            Some("9999-12-31T23:59:59.999999Z")
        );
        assert_eq!(
            ours(253_402_300_800, 0),
            None,
            "year 10000 is left to tracing"
        );
        // Every day of 1970 to 2400 at one time of day.
        for day in 0..156_000u64 {
            let seconds = day * 86_400 + 45_296;
            assert_eq!(
                ours(seconds, 7_000),
                Some(jiff_rfc3339(seconds, 7_000)),
                "day {day}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_time_is_written_as_jiff_writes_it(
            seconds in 0u64..=253_402_207_200,
            nanos in 0u32..1_000_000_000,
        ) {
            proptest::prop_assert_eq!(ours(seconds, nanos), Some(jiff_rfc3339(seconds, nanos)));
        }
    }

    /// The subscriber writes the time as tracing-subscriber's own timer does, now.
    #[test]
    fn the_lines_time_is_tracings_time() {
        let mut by_tracing = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut by_tracing))
            .unwrap();
        let mut by_us = String::new();
        UtcTime.format_time(&mut Writer::new(&mut by_us)).unwrap();
        assert_eq!(by_us.len(), by_tracing.len(), "{by_us} {by_tracing}");
        let parse = |t: &str| t.parse::<k8s_openapi::jiff::Timestamp>().unwrap();
        let apart = parse(&by_us).duration_since(parse(&by_tracing));
        assert!(apart.as_secs().abs() < 5, "{by_us} {by_tracing}");
    }

    // === PlainLine against tracing-subscriber's Full format ===

    /// Both line formats on the same events, plain and in colour, with a time and with a
    /// timer that fails (`<unknown time>`): the same text.
    fn same_as_full(events: impl Fn()) -> String {
        for at in [At::Text("2026-12-05T01:10:00.000001Z"), At::Unknown] {
            for ansi in [false, true] {
                let full = tracing_subscriber::fmt::format().with_timer(at);
                assert_eq!(
                    Captured::lines(PlainFields, PlainLine::new(at), ansi, &events),
                    Captured::lines(PlainFields, full, ansi, &events),
                    "{at:?}, ansi {ansi}"
                );
            }
        }
        Captured::lines(PlainFields, PlainLine::new(At::Text("now")), false, &events)
    }

    #[test]
    fn plain_lines_are_tracings_full_lines() {
        let text = same_as_full(|| {
            events();
            events_in_spans();
        });
        // Not vacuous: every level, the target, the fields after them.
        for expected in [
            "now  INFO gracegate::logging::captured: review ",
            "now  WARN gracegate::logging::captured: failed error=",
            "now ERROR gracegate::logging::captured: error=inner",
            "now DEBUG gracegate::logging::captured: only=1",
            "now TRACE gracegate::logging::captured: message only",
            "now  INFO odd \"target\"\n: elsewhere",
            "now  INFO review{uid=u-1 n=3 late=\"later\"}:plan{gates=1}: gracegate::logging::captured: nested pod=inside",
            "now  INFO gracegate::logging::captured: a root event, still in the current span",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
    }

    // === PlainFields against DefaultFields ===

    /// What `fields` writes for the events of `f`, plain or in colour, without timestamps.
    fn written<N>(fields: N, ansi: bool, f: impl FnOnce()) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let line = tracing_subscriber::fmt::format().without_time();
        Captured::lines(fields, line, ansi, f)
    }

    /// Both field formatters on the same events: the same text, plain and in colour.
    fn same_as_default(events: impl Fn()) -> String {
        let default = tracing_subscriber::fmt::format::DefaultFields::new;
        for ansi in [true, false] {
            assert_eq!(
                written(PlainFields, ansi, &events),
                written(default(), ansi, &events),
                "ansi {ansi}"
            );
        }
        written(PlainFields, false, &events)
    }

    #[test]
    fn plain_fields_write_what_default_fields_write() {
        let text = same_as_default(|| {
            events();
            events_in_spans();
        });
        // Not vacuous: the fields are there, written by PlainFields.
        for expected in [
            "uid=6f0c-11 namespace=shop",
            "gates=2 dry_run=true off=false grace=45 low=-9223372036854775808 high=18446744073709551615 zero=0",
            "type=\"raw name\"",
            "review{uid=u-1 n=3 late=\"later\"}:plan{gates=1}",
            "only=1",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
        assert!(!text.contains("skip="), "{text}");
        // Ten events; the plain format writes the odd target's newline as it is.
        assert_eq!(text.lines().count(), 11, "{text}");
    }

    proptest::proptest! {
        #[test]
        fn plain_fields_agree_on_any_values(
            text in ".{0,40}",
            controls in "[\\x00-\\x1f\\x7f-\\u{9f}a\"\\\\ ]{0,12}",
            u in proptest::num::u64::ANY,
            i in proptest::num::i64::ANY,
            b in proptest::bool::ANY,
        ) {
            same_as_default(|| {
                tracing::info!(shown = %text, quoted = text.as_str(), raw = %controls, u, i, b, "{controls}");
                tracing::info!(c = controls.as_str(), d = ?text);
                let span = tracing::info_span!("s", v = %controls, n = u);
                let _in = span.enter();
                tracing::info!(i, "{text}");
            });
        }
    }
}
