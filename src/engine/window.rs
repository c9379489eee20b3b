//! Recompute windows: half-open `[start, end)` ranges of Postgres timestamps
//! (microseconds since 2000-01-01 UTC), their validation, and the UTC buckets the insert
//! trigger schedules.

use thiserror::Error;

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01 UTC).
/// Buckets are aligned to the Unix epoch, so a one-day bucket is a UTC calendar day.
const UNIX_TO_PG_EPOCH_US: i64 = 946_684_800_000_000;
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Postgres's END_TIMESTAMP (294277-01-01 00:00 UTC): every valid timestamp is below it.
pub const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("window bounds must be finite timestamps")]
    NotFinite,
    #[error("window_start must be before window_end")]
    Empty,
    #[error("window spans {span_seconds} seconds, more than attribution.max_window ({max_seconds} seconds)")]
    TooLong { span_seconds: i64, max_seconds: i64 },
    #[error("the window containing this timestamp would end after the largest timestamp Postgres supports")]
    BeyondRange,
}

impl Window {
    /// Validates a caller-supplied window. `max_seconds` comes from the settings.
    /// `is_finite` is passed in because infinity is represented by sentinel values
    /// the engine should not need to know.
    pub fn new(start: i64, end: i64, is_finite: bool, max_seconds: i64) -> Result<Self, WindowError> {
        if !is_finite {
            return Err(WindowError::NotFinite);
        }
        if start >= end {
            return Err(WindowError::Empty);
        }
        let span = i128::from(end) - i128::from(start);
        if span > i128::from(max_seconds) * i128::from(MICROS_PER_SECOND) {
            return Err(WindowError::TooLong {
                span_seconds: (span / i128::from(MICROS_PER_SECOND)) as i64,
                max_seconds,
            });
        }
        Ok(Window { start, end })
    }

    /// The bucket of `width_seconds` (aligned to the Unix epoch, so UTC) that contains
    /// `ts`, as a window the queue can store: `BeyondRange` when the bucket would end past
    /// the last valid timestamp (an `occurred_at` in the year 294276, say).
    pub fn schedulable_bucket(ts: i64, width_seconds: i64) -> Result<Self, WindowError> {
        let bucket = Self::bucket_containing(ts, width_seconds);
        if bucket.end >= END_TIMESTAMP {
            return Err(WindowError::BeyondRange);
        }
        Ok(bucket)
    }

    /// The bucket of `width_seconds` (aligned to the Unix epoch, so UTC) that contains `ts`.
    pub fn bucket_containing(ts: i64, width_seconds: i64) -> Self {
        assert!(width_seconds > 0, "bucket width must be positive");
        let width = i128::from(width_seconds) * i128::from(MICROS_PER_SECOND);
        let unix = i128::from(ts) + i128::from(UNIX_TO_PG_EPOCH_US);
        let start_unix = unix.div_euclid(width) * width;
        let start = start_unix - i128::from(UNIX_TO_PG_EPOCH_US);
        // Saturate at the edges of the timestamp range rather than overflow; Postgres
        // rejects such timestamps long before they get here.
        let clamp = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        Window { start: clamp(start), end: clamp(start + width) }
    }
}

/// Writers lock UTC days, not windows, so that overlapping windows of any alignment
/// exclude each other while different days of one tenant run in parallel.
pub const LOCK_GRANULE_SECONDS: i64 = 86_400;
/// A window covering more days than this takes one exclusive lock for its tenant and
/// model instead of a lock per day.
pub const MAX_GRANULE_LOCKS: i64 = 64;

impl Window {
    /// The UTC day numbers (since the Unix epoch) this window touches, in ascending order
    /// (the order locks must be taken in), or `None` when there are more than
    /// [`MAX_GRANULE_LOCKS`].
    pub fn lock_granules(&self) -> Option<std::ops::RangeInclusive<i64>> {
        let first = Window::bucket_containing(self.start, LOCK_GRANULE_SECONDS);
        let last = Window::bucket_containing(self.end - 1, LOCK_GRANULE_SECONDS);
        let day = |w: Window| {
            (i128::from(w.start) + i128::from(UNIX_TO_PG_EPOCH_US))
                .div_euclid(i128::from(LOCK_GRANULE_SECONDS * MICROS_PER_SECOND)) as i64
        };
        let (a, b) = (day(first), day(last));
        (b - a < MAX_GRANULE_LOCKS).then_some(a..=b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const DAY_US: i64 = DAY * MICROS_PER_SECOND;

    #[test]
    fn day_bucket_is_the_utc_day() {
        // 2000-01-01 00:00 UTC is Postgres time 0.
        assert_eq!(Window::bucket_containing(0, DAY), Window { start: 0, end: DAY_US });
        assert_eq!(Window::bucket_containing(DAY_US - 1, DAY), Window { start: 0, end: DAY_US });
        assert_eq!(Window::bucket_containing(DAY_US, DAY), Window { start: DAY_US, end: 2 * DAY_US });
        // Before 2000 rounds down, not toward zero.
        assert_eq!(Window::bucket_containing(-1, DAY), Window { start: -DAY_US, end: 0 });
    }

    #[test]
    fn hour_buckets_align_to_the_hour() {
        let hour_us = 3_600 * MICROS_PER_SECOND;
        let ts = 5 * hour_us + 17;
        assert_eq!(Window::bucket_containing(ts, 3_600), Window { start: 5 * hour_us, end: 6 * hour_us });
    }

    #[test]
    fn lock_granules_are_the_utc_days_touched() {
        let unix_day_2000 = 10_957; // 2000-01-01 is day 10957 since 1970-01-01
        assert_eq!(Window { start: 0, end: DAY_US }.lock_granules(), Some(unix_day_2000..=unix_day_2000));
        // An hour straddling midnight touches two days.
        let w = Window { start: DAY_US - 1_800_000_000, end: DAY_US + 1_800_000_000 };
        assert_eq!(w.lock_granules(), Some(unix_day_2000..=unix_day_2000 + 1));
        // Half-open: ending exactly at midnight does not touch the next day.
        assert_eq!(
            Window { start: 0, end: 2 * DAY_US }.lock_granules(),
            Some(unix_day_2000..=unix_day_2000 + 1)
        );
        assert_eq!(Window { start: 0, end: 64 * DAY_US }.lock_granules().map(|r| r.count()), Some(64));
        assert_eq!(Window { start: 0, end: 65 * DAY_US }.lock_granules(), None);
    }

    #[test]
    fn buckets_past_the_last_timestamp_are_refused() {
        let last_day = END_TIMESTAMP - DAY_US;
        assert_eq!(
            Window::schedulable_bucket(last_day - 1, DAY),
            Ok(Window { start: last_day - DAY_US, end: last_day })
        );
        assert_eq!(Window::schedulable_bucket(last_day, DAY), Err(WindowError::BeyondRange));
        assert_eq!(Window::schedulable_bucket(END_TIMESTAMP - 1, DAY), Err(WindowError::BeyondRange));
    }

    #[test]
    fn validation() {
        assert_eq!(Window::new(0, 1, true, DAY), Ok(Window { start: 0, end: 1 }));
        assert_eq!(Window::new(1, 1, true, DAY), Err(WindowError::Empty));
        assert_eq!(Window::new(2, 1, true, DAY), Err(WindowError::Empty));
        assert_eq!(Window::new(0, 1, false, DAY), Err(WindowError::NotFinite));
        assert_eq!(Window::new(0, DAY_US, true, DAY), Ok(Window { start: 0, end: DAY_US }));
        assert_eq!(
            Window::new(0, DAY_US + 1, true, DAY),
            Err(WindowError::TooLong { span_seconds: DAY, max_seconds: DAY })
        );
        assert!(Window::new(i64::MIN + 1, i64::MAX - 1, true, DAY).is_err());
    }
}
