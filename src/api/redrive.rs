//! `redrive_failed_job()`: put a dead-lettered job back in the queue through the one
//! enqueue path, keeping its correlation id.

use crate::catalog;
use crate::engine::window::Window;
use crate::errors::{AttributionError, OrReport};
use crate::queue::{self, JobRequest};
use crate::tenancy;
use pgrx::prelude::*;

/// Re-enqueues the job recorded in `worker_failed_jobs.id = failed_job_id` with a fresh
/// attempt budget and marks the dead letter as redriven. Returns the job id. Only a dead
/// letter of the transaction's tenant (`attribution.tenant_id`) is visible: the function
/// runs as the extension's owner, so it applies the tenant rule itself.
#[pg_extern(volatile, parallel_unsafe)]
fn redrive_failed_job(failed_job_id: Option<i64>) -> pgrx::Uuid {
    redrive(failed_job_id).or_report()
}

fn redrive(failed_job_id: Option<i64>) -> Result<pgrx::Uuid, AttributionError> {
    let failed_job_id = super::require(failed_job_id, "failed_job_id")?;
    let schema = catalog::schema();
    let row = Spi::connect(|client| {
        let rows = client
            .select(
                &format!(
                    "SELECT tenant_id, (payload->>'window_start')::timestamptz,
                            (payload->>'window_end')::timestamptz, payload->>'model_version',
                            correlation_id
                       FROM {schema}.worker_failed_jobs
                      WHERE id = $1
                        AND tenant_id = NULLIF(pg_catalog.current_setting('attribution.tenant_id', true), '')::uuid"
                ),
                Some(1),
                &[failed_job_id.into()],
            )
            .expect("reading worker_failed_jobs");
        rows.into_iter().next().map(|r| {
            (
                r.get::<pgrx::Uuid>(1).unwrap().unwrap(),
                r.get::<TimestampWithTimeZone>(2).unwrap().unwrap(),
                r.get::<TimestampWithTimeZone>(3).unwrap().unwrap(),
                r.get::<String>(4).unwrap().unwrap(),
                r.get::<String>(5).unwrap().unwrap(),
            )
        })
    });
    let Some((tenant_id, start, end, model_version, correlation_id)) = row else {
        return Err(AttributionError::UnknownFailedJob(failed_job_id));
    };
    let scope = tenancy::enter(tenant_id)?;
    let ids = queue::enqueue(&[JobRequest {
        tenant_id,
        window: Window { start: start.into(), end: end.into() },
        model_version,
        correlation_id,
        full: false,
    }]);
    Spi::run_with_args(
        &format!(
            "UPDATE {schema}.worker_failed_jobs SET redriven_at = now() WHERE tenant_id = $1 AND id = $2"
        ),
        &[tenant_id.into(), failed_job_id.into()],
    )
    .expect("marking the dead letter redriven");
    scope.leave();
    Ok(ids[0])
}
