//! Randomness without another dependency: rustls's ring provider already carries the OS's
//! secure random source (getrandom).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A random u64 from the OS. DNS query ids come from here: a guessable id lets an off-path
/// host forge the answer that says where gracegate is.
pub fn u64() -> u64 {
    let mut bytes = [0u8; 8];
    match rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
    {
        Ok(()) => u64::from_ne_bytes(bytes),
        // getrandom(2) has not failed on Linux since 3.17; should it, the time and pid still
        // spread the jitter of a thousand waiters.
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// A small fast generator (SplitMix64) for jitter: spreading retries needs no secrecy.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Jitter(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `[low, high]`, at millisecond-or-better spread.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_nanos() as u64;
        let offset = if span == 0 {
            0
        } else {
            self.next_u64() % (span + 1)
        };
        low + Duration::from_nanos(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_stays_within_bounds_and_spreads() {
        let mut jitter = Jitter::seeded(42);
        let (low, high) = (Duration::from_millis(100), Duration::from_millis(500));
        let draws: Vec<_> = (0..10_000).map(|_| jitter.between(low, high)).collect();
        assert!(draws.iter().all(|d| (low..=high).contains(d)));
        let below_mid = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(300))
            .count();
        assert!((4_000..6_000).contains(&below_mid), "{below_mid}");
        assert_eq!(jitter.between(high, high), high);
        assert_eq!(
            jitter.between(high, low),
            high,
            "an empty range is its low end"
        );
    }

    #[test]
    fn os_randomness_differs() {
        assert_ne!(u64(), u64());
    }
}
