//! A writer the tests read back: what a subscriber wrote, and in how many writes. One for
//! every test that captures log lines (the batching writer's, the line format's, the
//! review's line). And the events both line formats' tests log, outside spans and inside,
//! and a fixed time for them.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Default)]
pub struct Captured(Arc<Mutex<(Vec<u8>, usize)>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut captured = self.0.lock().unwrap();
        captured.0.extend_from_slice(bytes);
        captured.1 += 1;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What a subscriber writing to a `Captured`, every level, `fields` for the fields and
    /// `line` for the line, with colour or without, writes for the events of `f`. The one
    /// subscriber the line formats' tests compare gracegate's formats with tracing's on.
    pub fn lines<N, E>(fields: N, line: E, ansi: bool, f: impl FnOnce()) -> String
    where
        N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
        E: tracing_subscriber::fmt::FormatEvent<tracing_subscriber::Registry, N>
            + Send
            + Sync
            + 'static,
    {
        let lines = Captured::default();
        let out = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(ansi)
            .fmt_fields(fields)
            .event_format(line)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        lines.text()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
    }
    pub fn writes(&self) -> usize {
        self.0.lock().unwrap().1
    }
}

/// An error with a source, its text in need of escapes.
#[derive(Debug)]
pub struct Failed(pub Option<Box<Failed>>);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "outer \x1b[31m \"q\""
        } else {
            "inner"
        })
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.as_deref().map(|e| e as _)
    }
}

/// Eight lines outside any span: a review-like line with every kind of value (strings in
/// need of escapes, integers at their limits, floats, 128-bit integers, bytes, `Debug`,
/// raw and dotted names, a formatted message), errors with and without sources, every
/// level, a message alone, an odd target, `message` as a field, a name given twice.
pub fn events() {
    let skip: Option<&str> = None;
    tracing::info!(
        uid = %"6f0c-11",
        namespace = %"shop",
        pod = %"web-7d9f\u{1b}[2J \"quoted\" sp ace \\ /",
        gates = Some(2u64),
        skip = skip.map(tracing::field::display),
        dry_run = true,
        off = false,
        grace = 45i64,
        low = i64::MIN,
        high = u64::MAX,
        zero = 0u64,
        ratio = 1.5f64,
        whole = 2.0f64,
        tiny = 1e-7f64,
        huge = 1e300f64,
        negative_zero = -0.0f64,
        nan = f64::NAN,
        infinite = f64::NEG_INFINITY,
        big = u128::MAX,
        small = i128::MIN,
        bytes = &b"\x00\xff ok"[..],
        text = "a \"str\"\n\u{9b}é\u{7f}😀",
        debug = ?vec!["x", "y\n"],
        r#type = "raw name",
        a.dotted = 1u64,
        "review \u{1b}[31m{} \u{85}", 7
    );
    tracing::warn!(error = &Failed(Some(Box::new(Failed(None)))) as &dyn std::error::Error, pod = %"p", "failed");
    tracing::error!(error = &Failed(None) as &dyn std::error::Error);
    tracing::debug!(only = 1u64);
    tracing::trace!("message only");
    tracing::info!(target: "odd \"target\"\n", "elsewhere");
    tracing::info!(message = %"message as a field", after = 1u64);
    tracing::info!(same = 1u64, same = 2u64);
}

/// Two lines inside nested spans (one span's field recorded late): one in the spans, one
/// a root event (`parent: None`) while they are entered.
pub fn events_in_spans() {
    let span = tracing::info_span!("review", uid = %"u-1", n = 3u64, late = tracing::field::Empty);
    let _in = span.enter();
    span.record("late", "later");
    let inner = tracing::debug_span!("plan", gates = 1i64);
    let _in = inner.enter();
    tracing::info!(pod = %"inside", "nested");
    tracing::info!(parent: None, "a root event, still in the current span");
}

/// A line's time fixed, so that two formats' lines can be compared: a text (with `"` and a
/// newline in it, it shows how a format escapes it), or a timer that fails.
#[derive(Clone, Copy, Debug)]
pub enum At {
    Text(&'static str),
    Unknown,
}

impl tracing_subscriber::fmt::time::FormatTime for At {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match self {
            At::Text(text) => w.write_str(text),
            At::Unknown => Err(std::fmt::Error),
        }
    }
}
