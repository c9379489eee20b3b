//! Conversions between the engine's plain values and Postgres types, shared by the
//! queue, the computation and the SQL functions.

use pgrx::prelude::*;

/// A window bound (microseconds since 2000-01-01 UTC) as a timestamptz. Bounds come
/// from validated windows, so they are always in range.
pub fn to_timestamptz(us: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(us).expect("window bounds are valid timestamps")
}
