//! The deadline is absolute: at it the waiter exits 0, whatever the loop is doing.
//!
//! The loop bounds every step by the deadline and ends there on its own. Two backstops make
//! that hold even when something unforeseen blocks or breaks: a watchdog thread that exits
//! at the deadline (plus a moment, so the loop's own ending wins the race when it can), and
//! a panic hook that waits for the deadline instead of letting the process die early (the
//! waiter's profile builds with `panic = "abort"`, where a panic would otherwise end the
//! preStop at once and the pod with it). Exactly one of them writes the last line.

use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::deadline::left;
use crate::log;

const WATCHDOG_GRACE: Duration = Duration::from_millis(250);

static ENDING: AtomicBool = AtomicBool::new(false);

/// Sleeps until `deadline`.
pub fn sleep_until(deadline: Instant) {
    while let Some(left) = left(deadline) {
        thread::sleep(left);
    }
}

/// Writes the last line, if nothing else is ending the process; otherwise blocks until
/// whatever is ending it does (another thread is about to exit 0).
pub fn finish(line: &str) {
    if ENDING.swap(true, Ordering::SeqCst) {
        loop {
            thread::park();
        }
    }
    log::say(line);
}

fn finish_and_exit(line: &str) -> ! {
    finish(line);
    process::exit(0)
}

pub fn start_watchdog(deadline: Instant, seconds: u64) {
    thread::spawn(move || {
        sleep_until(deadline + WATCHDOG_GRACE);
        finish_and_exit(&format!(
            "deadline of {seconds}s reached; stopping (an ask was still under way)"
        ));
    });
}

pub fn on_panic_wait_for(deadline: Instant, seconds: u64) {
    std::panic::set_hook(Box::new(move |info| {
        log::say(&format!(
            "internal error: {info}; waiting until the deadline"
        ));
        sleep_until(deadline);
        finish_and_exit(&format!("deadline of {seconds}s reached; stopping"));
    }));
}
