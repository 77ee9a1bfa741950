//! How long to wait before asking again.
//!
//! A thousand pods terminating in one rollout all lose gracegate at once when it restarts (or
//! all hear 503 while no replica leads); jitter keeps their retries from arriving in waves, and
//! the 2 s ceiling keeps a pod from noticing a recovered gracegate much later than it could.

use std::time::Duration;

use crate::random::Jitter;

pub const FIRST: Duration = Duration::from_millis(100);
pub const CEILING: Duration = Duration::from_secs(2);

/// Exponential backoff with "equal jitter": the n-th delay is drawn from `[c/2, c]` where
/// `c = min(100 ms × 2ⁿ, 2 s)`.
#[derive(Clone, Debug)]
pub struct Backoff {
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { cap: FIRST }
    }
}

impl Backoff {
    pub fn next(&mut self, jitter: &mut Jitter) -> Duration {
        let cap = self.cap;
        self.cap = (cap * 2).min(CEILING);
        jitter.between(cap / 2, cap)
    }

    /// After an answer: the next failure starts again at 100 ms.
    pub fn reset(&mut self) {
        self.cap = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_100ms_and_never_exceeds_2s() {
        let mut jitter = Jitter::seeded(7);
        let mut backoff = Backoff::default();
        let caps = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for cap in caps {
            let cap = Duration::from_millis(cap);
            let delay = backoff.next(&mut jitter);
            assert!(
                delay >= cap / 2 && delay <= cap,
                "{delay:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        for _ in 0..10_000 {
            assert!(backoff.next(&mut jitter) <= CEILING);
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut jitter = Jitter::seeded(7);
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next(&mut jitter);
        }
        backoff.reset();
        assert!(backoff.next(&mut jitter) <= FIRST);
    }

    #[test]
    fn different_seeds_spread() {
        let mut a = Backoff::default();
        let mut b = Backoff::default();
        let (mut ja, mut jb) = (Jitter::seeded(1), Jitter::seeded(2));
        let da: Vec<_> = (0..6).map(|_| a.next(&mut ja)).collect();
        let db: Vec<_> = (0..6).map(|_| b.next(&mut jb)).collect();
        assert_ne!(da, db);
    }
}
