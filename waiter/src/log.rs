//! The waiter's log: one line per state change, on stderr and in the container's own log.
//!
//! The kubelet keeps an exec hook's output only to put it in the error of a hook that
//! failed (kubernetes/kubernetes `pkg/kubelet/lifecycle/handlers.go`), and `wait` always
//! exits 0, so its stderr alone goes nowhere anyone looks. The container's log is what its
//! PID 1 writes: the hook runs in the container's PID namespace, so `/proc/1/fd/2` is that
//! stream whenever the container's user may open it. Each line is copied there too; when
//! it cannot be opened or written, the copy is skipped, never waited for.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::OnceLock;

pub const PREFIX: &str = "gracegate-wait: ";
const PID1_STDERR: &str = "/proc/1/fd/2";

/// Test hook: the path the lines are copied to instead of `/proc/1/fd/2` (empty: no copy).
/// The tests run as root on machines whose PID 1 is not theirs to write to.
pub const ENV_COPY: &str = "GRACEGATE_WAIT_PID1_STDERR";

/// O_NONBLOCK on x86_64 and aarch64: opening a pipe whose reader is gone then fails at once
/// instead of blocking, and a full pipe drops a line instead of stalling the wait.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const O_NONBLOCK: i32 = 0o4000;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const O_NONBLOCK: i32 = 0;

static COPY: OnceLock<Option<File>> = OnceLock::new();

/// Opens the copy's destination: `/proc/1/fd/2`, or the test hook's path.
pub fn init(hook: Option<OsString>) {
    let path = match hook {
        Some(path) if path.is_empty() => None,
        Some(path) => Some(PathBuf::from(path)),
        None => Some(PathBuf::from(PID1_STDERR)),
    };
    COPY.get_or_init(|| path.and_then(|path| open_copy(&path)));
}

fn open_copy(path: &std::path::Path) -> Option<File> {
    // Started as a container's PID 1 (by hand, or in a test image): that is our own stderr.
    if std::process::id() == 1 {
        return None;
    }
    let copy = OpenOptions::new()
        .append(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .ok()?;
    // A shell in the container that runs the waiter by hand shares PID 1's stderr: one copy
    // of each line is enough.
    let theirs = copy.metadata().ok()?;
    let ours = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| File::from(fd).metadata().ok());
    if ours.is_some_and(|ours| ours.dev() == theirs.dev() && ours.ino() == theirs.ino()) {
        return None;
    }
    Some(copy)
}

/// Writes `gracegate-wait: {line}` to stderr and to the copy, each in one write, ignoring
/// failures (a log line is never a reason to stop waiting).
pub fn say(line: &str) {
    let text = format!("{PREFIX}{line}\n");
    let _ = io::stderr().write_all(text.as_bytes());
    if let Some(Some(mut copy)) = COPY.get().map(Option::as_ref) {
        let _ = copy.write_all(text.as_bytes());
    }
}
