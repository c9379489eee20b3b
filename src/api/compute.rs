//! `compute_allocations()`: compute one window for one tenant and model, synchronously,
//! in one set-based statement.

use super::{require, window_arg};
use crate::errors::{AttributionError, OrReport};
use crate::gucs;
use crate::tenancy;
use pgrx::prelude::*;

/// Computes `[window_start, window_end)` for a tenant and model. Returns the number of
/// events in the window and the number of allocation rows this call wrote (inserted,
/// changed or removed): 0 on a re-run where nothing changed.
#[pg_extern(volatile, parallel_unsafe)]
fn compute_allocations(
    tenant_id: Option<pgrx::Uuid>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    model_version: default!(Option<&str>, "'1.0.0'"),
) -> TableIterator<'static, (name!(event_count, i64), name!(allocation_count, i64))> {
    let row = compute(tenant_id, window_start, window_end, model_version).or_report();
    TableIterator::once(row)
}

fn compute(
    tenant_id: Option<pgrx::Uuid>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    model_version: Option<&str>,
) -> Result<(i64, i64), AttributionError> {
    let tenant_id = require(tenant_id, "tenant_id")?;
    let window = window_arg(require(window_start, "window_start")?, require(window_end, "window_end")?)?;
    let model_version = require(model_version, "model_version")?;
    let correlation_id = super::correlation_id_or_new(gucs::correlation_id().as_deref())?;

    let scope = tenancy::enter(tenant_id)?;
    let result = crate::compute::compute_window(
        tenant_id,
        window,
        model_version,
        &correlation_id,
        crate::compute::LockWait::Wait,
        crate::compute::Pass::Full,
    );
    scope.leave();
    result.map(|c| (c.events, c.written))
}
