//! Retry backoff for failed jobs: exponential from a base delay, capped.

use std::time::Duration;

/// The delay before the next attempt, after `attempts` failed ones (1 = the first
/// failure): `base * 2^(attempts - 1)`, never more than `cap`.
pub fn backoff(attempts: u32, base: Duration, cap: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    base.checked_mul(1u32 << exponent).unwrap_or(cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn doubles_from_the_base_and_stops_at_the_cap() {
        assert_eq!(backoff(1, S(30), S(600)), S(30));
        assert_eq!(backoff(2, S(30), S(600)), S(60));
        assert_eq!(backoff(3, S(30), S(600)), S(120));
        assert_eq!(backoff(6, S(30), S(600)), S(600));
        assert_eq!(backoff(1_000, S(30), S(600)), S(600));
    }

    #[test]
    fn zero_attempts_and_zero_base_are_harmless() {
        assert_eq!(backoff(0, S(30), S(600)), S(30));
        assert_eq!(backoff(5, S(0), S(600)), S(0));
        assert_eq!(backoff(u32::MAX, Duration::MAX, S(1)), S(1));
    }
}
