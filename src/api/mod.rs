//! The SQL surface. Functions here convert arguments, call the engine and the queue, and
//! convert results back; the rules themselves live in `engine` and `queue`.

pub mod compute;
pub mod fit;
pub mod redrive;
pub mod schedule;
pub mod split;
pub mod touch;
pub mod trigger;

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    include!("tests.rs");
}

use crate::engine::correlation;
use crate::engine::window::Window;
use crate::errors::AttributionError;
use crate::gucs;
use pgrx::prelude::*;

pub(crate) fn require<T>(value: Option<T>, name: &'static str) -> Result<T, AttributionError> {
    value.ok_or(AttributionError::NullArgument(name))
}

/// A caller-supplied window, validated against attribution.max_window.
pub(crate) fn window_arg(
    start: TimestampWithTimeZone,
    end: TimestampWithTimeZone,
) -> Result<Window, AttributionError> {
    let finite = start.is_finite() && end.is_finite();
    let (s, e): (i64, i64) = (start.into(), end.into());
    Ok(Window::new(s, e, finite, gucs::max_window_seconds())?)
}

/// The given correlation id after validation, or a new uuid when none is given.
pub(crate) fn correlation_id_or_new(given: Option<&str>) -> Result<String, AttributionError> {
    match given {
        Some(id) => {
            correlation::validate(id)?;
            Ok(id.to_owned())
        }
        None => Ok(new_correlation_id()),
    }
}

pub(crate) fn new_correlation_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is exactly the length passed.
    let ok = unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) };
    assert!(ok, "pg_strong_random failed");
    correlation::uuid_v4(bytes)
}

pub(crate) fn tenant_exists(tenant_id: pgrx::Uuid) -> bool {
    let schema = crate::catalog::schema();
    Spi::get_one_with_args::<bool>(
        &format!("SELECT EXISTS (SELECT FROM {schema}.attribution_tenants WHERE id = $1)"),
        &[tenant_id.into()],
    )
    .expect("reading attribution_tenants")
    .unwrap_or(false)
}
