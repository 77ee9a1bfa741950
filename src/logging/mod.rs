//! Logging setup: `tracing` to stderr, plain or JSON.
//!
//! Plain logs carry ANSI colour codes only when stderr is a terminal and `NO_COLOR` is unset
//! or empty (<https://no-color.org>): in files and `kubectl logs` escape codes are noise.
//! Stdout is left to commands' results (`audit`, `certs`).
//!
//! Field names are the same in every message, so JSON logs can be filtered on them: `pod`,
//! `namespace`, `target_group` (the target group's name or ARN), `reason`, `error`. A
//! review's line adds `uid`, `outcome` and, when they say something, what it changed
//! (`webhook::log_review`).
//!
//! Lines reach stderr in batches ([`Batched`]): a `write` per line was a quarter of the
//! webhook's time per review under load (BENCHMARKS.md). A batch is written every
//! [`FLUSH_EVERY`], when it holds [`BATCH_BYTES`], at once for a warning or an error (with
//! everything before it, in order), before a panic's message, and when the command ends.

use std::ffi::OsStr;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tracing::{Dispatch, Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

#[cfg(test)]
pub(crate) mod captured;
mod format;
mod json_line;

pub use format::{PlainFields, PlainLine, PlainVisitor, UtcTime};
pub use json_line::JsonLine;

/// Whether text for a stream may use colour (ANSI escapes): the stream is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>). Plain logs on stderr and `audit`'s
/// table on stdout.
pub fn ansi(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber; the level comes from `RUST_LOG` (default `info`).
/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Install the global subscriber, writing to stderr in batches; the returned guard writes
/// what is left when it is dropped (hold it until the command ends).
#[must_use = "dropping the guard writes out the logs; hold it until the command ends"]
pub fn init(format: LogFormat) -> Logs {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = ansi(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let stderr = Batched::new(io::stderr());
    stderr.flush_every(FLUSH_EVERY);
    // A panic's message comes after the lines logged before it, not before them.
    let on_panic = stderr.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        on_panic.write_out();
        previous(info);
    }));
    let _ = STDERR.set(stderr.clone());
    // Set once, at start: a second subscriber would be a bug.
    tracing::dispatcher::set_global_default(dispatch(format, ansi, filter, stderr))
        .expect("the global subscriber is set once");
    Logs(())
}

/// Writes out the logs still in the batch when dropped (see [`init`]).
#[derive(Debug)]
pub struct Logs(());

impl Drop for Logs {
    fn drop(&mut self) {
        flush();
    }
}

/// Write out the logs still in the batch (before `std::process::exit`, which drops nothing).
pub fn flush() {
    if let Some(stderr) = STDERR.get() {
        stderr.write_out();
    }
}

static STDERR: OnceLock<Batched<io::Stderr>> = OnceLock::new();

/// The subscriber [`init`] installs, writing to `writer` (the benchmarks give it a sink).
pub fn dispatch<W>(format: LogFormat, ansi: bool, filter: EnvFilter, writer: W) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // The time is the line formats' (`UtcTime` in each).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Plain => builder
            .with_ansi(ansi)
            .fmt_fields(PlainFields)
            .event_format(PlainLine::new(UtcTime))
            .finish()
            .into(),
        // `json()` for its span fields (`JsonFields`), which `JsonLine` hands spans to.
        LogFormat::Json => builder
            .json()
            .event_format(JsonLine::new(UtcTime))
            .finish()
            .into(),
    }
}

// === impl Batched ===

/// How long an info or debug line may wait in the batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A batch this large is written at once.
pub const BATCH_BYTES: usize = 64 * 1024;

/// A `MakeWriter` that gathers lines and writes them to `W` in batches. Warnings and errors
/// are written at once, after the lines before them. `W` sees whole lines only: a line is
/// one `write` from the subscriber, and a batch holds whole lines.
#[derive(Debug)]
pub struct Batched<W: Write> {
    shared: Arc<Mutex<Batch<W>>>,
}

#[derive(Debug)]
struct Batch<W> {
    lines: Vec<u8>,
    out: W,
}

impl<W: Write> Clone for Batched<W> {
    fn clone(&self) -> Self {
        Batched {
            shared: self.shared.clone(),
        }
    }
}

impl<W: Write> Batched<W> {
    pub fn new(out: W) -> Self {
        Batched {
            shared: Arc::new(Mutex::new(Batch {
                lines: Vec::with_capacity(BATCH_BYTES),
                out,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Batch<W>> {
        // A panic while holding the lock leaves whole lines behind: keep writing them.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write out every line gathered so far.
    pub fn write_out(&self) {
        self.lock().write_out();
    }

    /// The bytes waiting to be written.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().lines.len()
    }
}

impl<W: Write + Send + 'static> Batched<W> {
    /// Write out the batch every `every` from a thread of its own, which ends when the last
    /// `Batched` handle is dropped.
    pub fn flush_every(&self, every: Duration) {
        let shared: Weak<Mutex<Batch<W>>> = Arc::downgrade(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    Batched { shared }.write_out();
                }
            });
        if let Err(error) = spawned {
            // Without the thread lines still go out with every full batch, warning or exit.
            let _ = writeln!(
                self.lock().out,
                "cannot start the log flusher thread ({error}); info lines are written late"
            );
        }
    }
}

impl<W: Write> Batch<W> {
    fn write_out(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        // Nowhere to report a failed write to stderr: the lines are dropped, as
        // tracing-subscriber drops a line it cannot write.
        let _ = self.out.write_all(&self.lines);
        let _ = self.out.flush();
        self.lines.clear();
    }
}

/// One line from the subscriber into the batch.
#[derive(Debug)]
pub struct BatchWriter<'a, W: Write> {
    batched: &'a Batched<W>,
    /// A warning or an error (or a line of unknown level): written out at once.
    urgent: bool,
}

impl<'a, W: Write + 'a> MakeWriter<'a> for Batched<W> {
    type Writer = BatchWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchWriter {
            batched: self,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        BatchWriter {
            batched: self,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

impl<W: Write> Write for BatchWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut batch = self.batched.lock();
        batch.lines.extend_from_slice(bytes);
        if self.urgent || batch.lines.len() >= BATCH_BYTES {
            batch.write_out();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::captured::Captured;
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi(true, None));
        assert!(ansi(true, Some(OsStr::new(""))));
        assert!(!ansi(true, Some(OsStr::new("1"))));
        assert!(!ansi(false, None));
        assert!(!ansi(false, Some(OsStr::new("1"))));
    }

    fn logged(batched: &Batched<Captured>, f: impl FnOnce()) {
        let dispatch = dispatch(
            LogFormat::Plain,
            false,
            EnvFilter::new("debug"),
            batched.clone(),
        );
        tracing::dispatcher::with_default(&dispatch, f);
    }

    #[test]
    fn info_lines_wait_and_a_warning_takes_them_out_in_order() {
        let sink = Captured::default();
        let batched = Batched::new(sink.clone());
        logged(&batched, || {
            tracing::info!(pod = "a", "first");
            tracing::debug!(pod = "b", "second");
        });
        assert_eq!(sink.text(), "");
        assert!(batched.pending() > 0);
        logged(&batched, || tracing::warn!(pod = "c", "third"));
        let text = sink.text();
        let order: Vec<_> = ["first", "second", "third"]
            .iter()
            .map(|w| text.find(w).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(sink.writes(), 1, "one write for the batch");
        assert_eq!(batched.pending(), 0);
    }

    #[test]
    fn a_full_batch_is_written_in_whole_lines() {
        let sink = Captured::default();
        let batched = Batched::new(sink.clone());
        let long = "x".repeat(1000);
        logged(&batched, || {
            for i in 0..100 {
                tracing::info!(i, long, "line");
            }
        });
        let written = sink.text();
        assert!(written.len() >= BATCH_BYTES, "{}", written.len());
        assert!(written.ends_with('\n'));
        assert!(sink.writes() >= 1 && sink.writes() < 100 / 2);
        batched.write_out();
        assert_eq!(sink.text().lines().count(), 100);
    }

    #[test]
    fn the_flusher_writes_a_waiting_line_and_ends_with_the_last_handle() {
        let sink = Captured::default();
        let batched = Batched::new(sink.clone());
        batched.flush_every(Duration::from_millis(5));
        logged(&batched, || tracing::info!("waiting"));
        // Written by the flusher thread, not by this one: wait for it (bounded).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !sink.text().contains("waiting") {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let weak = Arc::downgrade(&batched.shared);
        drop(batched);
        assert!(
            weak.upgrade().is_none() || {
                // The flusher may hold it for the length of one write; then it lets go.
                std::thread::sleep(Duration::from_millis(50));
                weak.upgrade().is_none()
            }
        );
    }

    /// Both formats carry the time as UtcTime writes it: RFC 3339 in UTC, microseconds.
    #[test]
    fn lines_carry_their_utc_time() {
        for format in [LogFormat::Plain, LogFormat::Json] {
            let sink = Captured::default();
            let batched = Batched::new(sink.clone());
            let dispatch = dispatch(format, false, EnvFilter::new("info"), batched.clone());
            tracing::dispatcher::with_default(&dispatch, || tracing::warn!("now"));
            let line = sink.text();
            let time = match format {
                LogFormat::Plain => &line[..27],
                LogFormat::Json => {
                    let at = line.find("\"timestamp\":\"").unwrap() + 13;
                    &line[at..at + 27]
                }
            };
            let parsed: k8s_openapi::jiff::Timestamp = time.parse().unwrap();
            let apart = k8s_openapi::jiff::Timestamp::now().duration_since(parsed);
            assert!(time.ends_with('Z') && apart.as_secs().abs() < 60, "{line}");
        }
    }

    #[test]
    fn a_line_of_unknown_level_is_written_at_once() {
        let sink = Captured::default();
        let batched = Batched::new(sink.clone());
        batched.make_writer().write_all(b"plain\n").unwrap();
        assert_eq!(sink.text(), "plain\n");
    }
}
