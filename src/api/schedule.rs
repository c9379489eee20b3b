//! `schedule_recompute_window()`: validate a caller's request and enqueue it.

use super::{correlation_id_or_new, require, tenant_exists, window_arg};
use crate::compute::load_model;
use crate::errors::{AttributionError, OrReport};
use crate::queue::{self, JobRequest};
use crate::tenancy;
use pgrx::prelude::*;

/// Schedules a recompute of `[window_start, window_end)` for a tenant and model and
/// returns the job id. Coalesces with an identical pending or running job.
#[pg_extern(volatile, parallel_unsafe)]
fn schedule_recompute_window(
    tenant_id: Option<pgrx::Uuid>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    correlation_id: default!(Option<&str>, "NULL"),
    model_version: default!(Option<&str>, "'1.0.0'"),
) -> pgrx::Uuid {
    schedule(tenant_id, window_start, window_end, correlation_id, model_version, false).or_report()
}

/// Like `schedule_recompute_window`, but the run computes every event of the window
/// instead of only those changed since its last computation: for repairs (allocations
/// changed by hand, say). It costs as much as the window holds events.
#[pg_extern(volatile, parallel_unsafe)]
fn schedule_full_recompute(
    tenant_id: Option<pgrx::Uuid>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    correlation_id: default!(Option<&str>, "NULL"),
    model_version: default!(Option<&str>, "'1.0.0'"),
) -> pgrx::Uuid {
    schedule(tenant_id, window_start, window_end, correlation_id, model_version, true).or_report()
}

fn schedule(
    tenant_id: Option<pgrx::Uuid>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    correlation_id: Option<&str>,
    model_version: Option<&str>,
    full: bool,
) -> Result<pgrx::Uuid, AttributionError> {
    let tenant_id = require(tenant_id, "tenant_id")?;
    let window = window_arg(require(window_start, "window_start")?, require(window_end, "window_end")?)?;
    let model_version = require(model_version, "model_version")?;
    let correlation_id = correlation_id_or_new(correlation_id)?;

    let scope = tenancy::enter(tenant_id)?;
    if !tenant_exists(tenant_id) {
        return Err(AttributionError::UnknownTenant(tenant_id.to_string()));
    }
    load_model(model_version)?;
    let ids = queue::enqueue(&[JobRequest {
        tenant_id,
        window,
        model_version: model_version.to_owned(),
        correlation_id,
        full,
    }]);
    scope.leave();
    Ok(ids[0])
}
