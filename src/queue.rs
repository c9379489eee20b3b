//! The recompute job queue. [`enqueue`] is the one path by which work is scheduled: the
//! insert trigger, `schedule_recompute_window()` and any re-drive all go through it, so
//! the coalescing rules live in exactly one statement.

use crate::catalog;
use crate::convert::to_timestamptz;
use crate::engine::window::Window;
use crate::{gucs, wake};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::*;
use pgrx::prelude::*;

/// One request to (re)compute a window for a tenant and model.
#[derive(Debug, Clone)]
pub struct JobRequest {
    pub tenant_id: pgrx::Uuid,
    pub window: Window,
    pub model_version: String,
    pub correlation_id: String,
    /// Ask for a full pass over the window rather than only the recorded changes.
    pub full: bool,
}

/// Enqueues the requests in one statement and returns their job ids (not necessarily in
/// request order). Coalescing, per job identity (tenant, window, model):
/// - pending: stays the same single job, with the newest correlation id;
/// - running: stays running and is flagged to run once more when it finishes, so rows
///   committed during the run are picked up;
/// - succeeded or failed: becomes pending again with a fresh attempt budget.
pub fn enqueue(requests: &[JobRequest]) -> Vec<pgrx::Uuid> {
    if requests.is_empty() {
        return Vec::new();
    }
    let mut tenants = Vec::with_capacity(requests.len());
    let mut starts = Vec::with_capacity(requests.len());
    let mut ends = Vec::with_capacity(requests.len());
    let mut models = Vec::with_capacity(requests.len());
    let mut correlation_ids = Vec::with_capacity(requests.len());
    let mut full = Vec::with_capacity(requests.len());
    for r in requests {
        tenants.push(r.tenant_id);
        starts.push(to_timestamptz(r.window.start));
        ends.push(to_timestamptz(r.window.end));
        models.push(r.model_version.clone());
        correlation_ids.push(r.correlation_id.clone());
        full.push(r.full);
    }
    // The timestamps an update sets are the inserted row's defaults (now()), named as
    // excluded.*: Citus refuses functions that are not immutable in DO UPDATE SET.
    // Under the SQL of an older version (before ALTER EXTENSION UPDATE) the job table has
    // no full_requested column; a job enqueued then has never been computed by this
    // version, so its first run is a full pass anyway.
    let current = catalog::sql_is_current();
    let stmt = catalog::statement(
        if current { "enqueue" } else { "enqueue_before_update" },
        &catalog::types(&[
            UUIDARRAYOID,
            TIMESTAMPTZARRAYOID,
            TIMESTAMPTZARRAYOID,
            TEXTARRAYOID,
            TEXTARRAYOID,
            BOOLARRAYOID,
        ]),
        |schema| {
            let (full_column, full_value, full_update) = if current {
                (
                    ", full_requested",
                    ", $6::bool[]",
                    "full_requested = j.full_requested OR excluded.full_requested,",
                )
            } else {
                ("", "", "")
            };
            format!(
                "INSERT INTO {schema}.attribution_recompute_jobs AS j
                (tenant_id, window_start, window_end, model_version, last_correlation_id{full_column})
         SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[]{full_value})
         ON CONFLICT (tenant_id, window_start, window_end, model_version) DO UPDATE SET
                status = CASE WHEN j.status = 'running' THEN 'running' ELSE 'pending' END,
                rerun_requested = (j.status = 'running'),
                attempts = CASE WHEN j.status IN ('succeeded', 'failed') THEN 0 ELSE j.attempts END,
                run_after = CASE WHEN j.status IN ('succeeded', 'failed') THEN excluded.run_after ELSE j.run_after END,
                enqueued_at = CASE WHEN j.status IN ('succeeded', 'failed') THEN excluded.enqueued_at ELSE j.enqueued_at END,
                last_correlation_id = excluded.last_correlation_id,
                {full_update}
                updated_at = excluded.updated_at
         RETURNING j.id"
            )
        },
    );
    let ids = Spi::connect_mut(|client| {
        let rows = client
            .update(
                &*stmt,
                None,
                &[
                    tenants.into(),
                    starts.into(),
                    ends.into(),
                    models.into(),
                    correlation_ids.into(),
                    full.into(),
                ],
            )
            .expect("enqueueing recompute jobs");
        rows.map(|row| row.get::<pgrx::Uuid>(1).expect("job id").expect("job id is not null")).collect()
    });
    wake::on_commit(requests.len());
    warn_once_if_nothing_drains();
    ids
}

thread_local! {
    static WARNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Jobs only run where a worker serves the database; say so once per session otherwise.
fn warn_once_if_nothing_drains() {
    if WARNED.with(|w| w.get()) {
        return;
    }
    let reason = if !wake::available() {
        Some("pg_attribution is not in shared_preload_libraries, so no background worker runs".to_owned())
    } else if gucs::workers() == 0 {
        Some("attribution.workers is 0".to_owned())
    } else {
        // SAFETY: the name of the current database, palloc'd in the current context.
        let current = unsafe {
            let name = pg_sys::get_database_name(pg_sys::MyDatabaseId);
            (!name.is_null()).then(|| std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned())
        };
        let served = gucs::database();
        (current.as_deref() != Some(served.as_str())).then(|| {
            format!("the background workers serve database \"{served}\" (attribution.database), not this one")
        })
    };
    if let Some(reason) = reason {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!("recompute jobs are queued but will not run: {reason}"),
            "pg_attribution",
        )
        .set_hint("Add pg_attribution to shared_preload_libraries and set attribution.database (then restart), or run compute_allocations() yourself.")
        .report(PgLogLevel::WARNING);
    }
    WARNED.with(|w| w.set(true));
}
