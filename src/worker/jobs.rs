//! One worker's dealings with the job table: claim, run, record the outcome, recover jobs
//! orphaned by a crash, prune finished ones. Every step is its own short transaction, and
//! an error in a job is caught and recorded, never allowed to kill the worker.

use super::BACKEND_TYPE;
use crate::catalog;
use crate::compute::compute_window;
use crate::engine::retry::backoff;
use crate::engine::window::Window;
use crate::gucs;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::BuiltinOid::*;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// A claimed job, as the worker needs it.
struct Job {
    id: pgrx::Uuid,
    tenant_id: pgrx::Uuid,
    window: Window,
    model_version: String,
    correlation_id: String,
    attempts: i32,
    inject_failure: Option<String>,
}

impl Job {
    /// From a row of (id, tenant_id, window_start, window_end, model_version,
    /// last_correlation_id, attempts, inject_failure); all but the last are NOT NULL.
    fn from_row(row: &pgrx::spi::SpiHeapTupleData<'_>) -> Job {
        fn column<T: IntoDatum + FromDatum>(row: &pgrx::spi::SpiHeapTupleData<'_>, n: usize) -> T {
            row.get(n).ok().flatten().unwrap_or_else(|| panic!("job row column {n} is missing"))
        }
        let start: TimestampWithTimeZone = column(row, 3);
        let end: TimestampWithTimeZone = column(row, 4);
        Job {
            id: column(row, 1),
            tenant_id: column(row, 2),
            window: Window { start: start.into(), end: end.into() },
            model_version: column(row, 5),
            correlation_id: column(row, 6),
            attempts: column(row, 7),
            inject_failure: row.get(8).ok().flatten(),
        }
    }
}

/// Why a job run failed.
struct Failure {
    sqlstate: Option<String>,
    message: String,
}

/// What a worker carries from one job to the next: its readiness as last logged (so a
/// misconfiguration is logged once when it appears, not at every poll) and the job it
/// has already claimed.
#[derive(Default)]
pub struct WorkerState {
    /// Why the worker currently refuses to run jobs, as last logged.
    refusal: Option<String>,
    /// A job claimed (committed as running) together with the previous job's result.
    claimed: Option<Job>,
}

/// Why jobs may not run here right now, if they may not: the extension is missing, or
/// the worker's role is a superuser or has BYPASSRLS. Cheap (catalog caches), so it is
/// checked before every claim. Must run inside a transaction.
fn refusal() -> Option<String> {
    // SAFETY: catalog lookups through the system caches, inside the caller's transaction.
    unsafe {
        if pg_sys::get_extension_oid(c"pg_attribution".as_ptr(), true) == pg_sys::InvalidOid {
            return Some("extension pg_attribution is not installed in this database; jobs wait".to_owned());
        }
        if pg_sys::superuser() || pg_sys::has_bypassrls_privilege(pg_sys::GetUserId()) {
            return Some(format!(
                "role \"{}\" is a superuser or has BYPASSRLS; the worker refuses to run jobs as it. \
                 Set attribution.worker_role to a role subject to row-level security",
                gucs::worker_role()
            ));
        }
    }
    None
}

impl WorkerState {
    /// Records the latest refusal and logs when it changes.
    fn note(&mut self, refusal: Option<String>) {
        if refusal != self.refusal {
            match &refusal {
                Some(reason) => ereport!(
                    PgLogLevel::LOG,
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("pg_attribution worker is idle: {reason}")
                ),
                None => log!("pg_attribution worker is ready to run jobs"),
            }
            self.refusal = refusal;
        }
    }

    pub fn refused(&self) -> bool {
        self.refusal.is_some()
    }
}

/// Runs the next runnable job. Returns false when there was none.
pub fn run_next(state: &mut WorkerState) -> bool {
    let job = match state.claimed.take() {
        Some(job) => job,
        None => {
            let claimed = in_transaction(AssertUnwindSafe(|| claim_if_allowed(state))).unwrap_or_else(|f| {
                warning!("pg_attribution worker could not claim a job: {}", f.message);
                None
            });
            match claimed {
                Some(job) => job,
                None => return false,
            }
        }
    };

    let started = Instant::now();
    // The following job is claimed in the same transaction, so its claim commits with
    // this job's result: one transaction and one WAL flush per job instead of two. The
    // claim is still durable before that job runs, which is what crash accounting needs.
    match in_transaction(AssertUnwindSafe(|| (run(&job), claim_if_allowed(state)))) {
        Ok(((events, written), next)) => {
            debug1!(
                "pg_attribution job {} tenant {} correlation_id {}: {} events, {} allocation rows written in {:.1} ms",
                job.id,
                job.tenant_id,
                job.correlation_id,
                events,
                written,
                started.elapsed().as_secs_f64() * 1000.0
            );
            state.claimed = next;
        }
        Err(failure) => {
            let delay = backoff(job.attempts.max(1) as u32, gucs::retry_delay(), gucs::retry_delay_max());
            let outcome = in_transaction(AssertUnwindSafe(|| record_failure(&job, &failure, delay)));
            if let Err(f) = outcome {
                warning!(
                    "pg_attribution worker could not record the failure of job {}: {}",
                    job.id,
                    f.message
                );
            }
        }
    }
    true
}

/// Claims the next runnable job unless the worker must refuse to run jobs.
fn claim_if_allowed(state: &mut WorkerState) -> Option<Job> {
    let refusal = refusal();
    let refused = refusal.is_some();
    state.note(refusal);
    if refused {
        None
    } else {
        claim()
    }
}

fn claim() -> Option<Job> {
    // The claim commits on its own: a run that crashes the worker has then already
    // counted as an attempt, so a job that always crashes ends in the dead-letter table.
    let stmt = catalog::statement("claim_job", &[], |schema| {
        format!(
            "UPDATE {schema}.attribution_recompute_jobs j
                SET status = 'running', attempts = j.attempts + 1, run_count = j.run_count + 1,
                    rerun_requested = false, started_at = clock_timestamp(), finished_at = NULL,
                    worker_pid = pg_backend_pid(), updated_at = now()
              WHERE (j.tenant_id, j.id) IN (
                    SELECT tenant_id, id FROM {schema}.attribution_recompute_jobs
                     WHERE status = 'pending' AND run_after <= now()
                     ORDER BY run_after
                     LIMIT 1
                       FOR UPDATE SKIP LOCKED)
          RETURNING j.id, j.tenant_id, j.window_start, j.window_end, j.model_version,
                    j.last_correlation_id, j.attempts, j.inject_failure"
        )
    });
    Spi::connect_mut(|client| {
        let rows = client.update(&*stmt, Some(1), &[]).expect("claiming a job");
        rows.into_iter().next().map(|row| Job::from_row(&row))
    })
}

/// Runs a claimed job: compute under the job's tenant context and correlation id, then
/// mark it done, all in the caller's transaction so the allocations and the job's
/// status commit together.
fn run(job: &Job) -> (i64, i64) {
    let context = catalog::statement("set_job_context", &catalog::types(&[TEXTOID, TEXTOID]), |_| {
        "SELECT pg_catalog.set_config('attribution.tenant_id', $1, true),
                pg_catalog.set_config('attribution.correlation_id', $2, true)"
            .into()
    });
    Spi::connect_mut(|client| {
        client
            .update(&*context, None, &[job.tenant_id.to_string().into(), job.correlation_id.as_str().into()])
            .map(|_| ())
    })
    .expect("setting the job's tenant context and correlation id");
    inject_failure(job);

    let result = compute_window(job.tenant_id, job.window, &job.model_version, &job.correlation_id)
        .unwrap_or_else(|e| e.report());

    // A request that arrived during the run set rerun_requested: run once more.
    let finish = catalog::statement("finish_job", &catalog::types(&[UUIDOID, UUIDOID]), |schema| {
        format!(
            "UPDATE {schema}.attribution_recompute_jobs
                SET status = CASE WHEN rerun_requested THEN 'pending' ELSE 'succeeded' END,
                    run_after = now(), rerun_requested = false, attempts = 0,
                    finished_at = clock_timestamp(), worker_pid = NULL, last_error = NULL,
                    last_sqlstate = NULL, updated_at = now()
              WHERE tenant_id = $1 AND id = $2"
        )
    });
    Spi::connect_mut(|client| {
        client.update(&*finish, None, &[job.tenant_id.into(), job.id.into()]).map(|_| ())
    })
    .expect("marking the job done");
    result
}

/// For tests: with attribution.failure_injection on in the server configuration, a job
/// whose inject_failure is 'error' fails, and one whose inject_failure is 'crash' kills
/// its worker mid-run. Without the server setting the flag is ignored.
fn inject_failure(job: &Job) {
    let Some(mode) = job.inject_failure.as_deref() else { return };
    if !gucs::failure_injection() {
        warning!(
            "pg_attribution job {} has inject_failure = '{mode}' but attribution.failure_injection is off; ignoring it",
            job.id
        );
        return;
    }
    match mode {
        "crash" => {
            log!("pg_attribution job {} correlation_id {}: injected crash", job.id, job.correlation_id);
            std::process::abort();
        }
        _ => ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_TRIGGERED_ACTION_EXCEPTION,
            format!("injected failure for job {}", job.id)
        ),
    }
}

/// Schedules a retry after `delay`, or after the last attempt moves the job to
/// worker_failed_jobs. The same path serves errors and crash-orphaned runs.
fn record_failure(job: &Job, failure: &Failure, delay: Duration) {
    let schema = catalog::schema();
    let max_attempts = gucs::max_attempts();
    let dead = job.attempts >= max_attempts;
    if dead {
        warning!(
            "pg_attribution job {} tenant {} correlation_id {} failed after {} attempts and moved to worker_failed_jobs: {}",
            job.id, job.tenant_id, job.correlation_id, job.attempts, failure.message
        );
    } else {
        log!(
            "pg_attribution job {} tenant {} correlation_id {} failed (attempt {} of {}), retrying in {:?}: {}",
            job.id, job.tenant_id, job.correlation_id, job.attempts, max_attempts, delay, failure.message
        );
    }
    Spi::run_with_args(
        &format!(
            "WITH failed AS (
                 UPDATE {schema}.attribution_recompute_jobs
                    SET status = CASE WHEN $3 THEN 'failed' ELSE 'pending' END,
                        run_after = now() + make_interval(secs => $4),
                        rerun_requested = CASE WHEN $3 THEN false ELSE rerun_requested END,
                        finished_at = clock_timestamp(), worker_pid = NULL,
                        last_error = $5, last_sqlstate = $6, updated_at = now()
                  WHERE tenant_id = $1 AND id = $2
              RETURNING *
             )
             INSERT INTO {schema}.worker_failed_jobs
                    (job_id, tenant_id, payload, correlation_id, sqlstate, error_message, attempts)
             SELECT id, tenant_id,
                    jsonb_build_object('tenant_id', tenant_id, 'window_start', window_start,
                                       'window_end', window_end, 'model_version', model_version,
                                       'correlation_id', last_correlation_id),
                    coalesce(last_correlation_id, id::text), $6, $5, attempts
               FROM failed
              WHERE status = 'failed'"
        ),
        &[
            job.tenant_id.into(),
            job.id.into(),
            dead.into(),
            delay.as_secs_f64().into(),
            failure.message.as_str().into(),
            failure.sqlstate.as_deref().into(),
        ],
    )
    .expect("recording a job failure");
}

/// Jobs left 'running' by a worker that is gone (killed, crashed, terminated, or the
/// server stopped in immediate mode) are failed attempts: retried at once, or
/// dead-lettered after the last.
pub fn recover_orphans() {
    let result = in_transaction(|| {
        let schema = catalog::schema();
        // FOR UPDATE needs a read-write SPI call, hence update().
        let orphans: Vec<Job> = Spi::connect_mut(|client| {
            client
                .update(
                    &format!(
                        "SELECT id, tenant_id, window_start, window_end, model_version,
                                last_correlation_id, attempts, inject_failure
                           FROM {schema}.attribution_recompute_jobs
                          WHERE status = 'running'
                            AND (started_at < pg_postmaster_start_time()
                                 OR worker_pid IS NULL
                                 OR worker_pid NOT IN (SELECT pid FROM pg_stat_activity
                                                        WHERE backend_type = $1))
                            FOR UPDATE SKIP LOCKED"
                    ),
                    None,
                    &[BACKEND_TYPE.into()],
                )
                .expect("finding orphaned jobs")
                .map(|row| Job::from_row(&row))
                .collect()
        });
        for job in &orphans {
            record_failure(
                job,
                &Failure {
                    sqlstate: None,
                    message:
                        "the worker running this job exited before finishing it (crash, kill or shutdown)"
                            .into(),
                },
                Duration::ZERO,
            );
        }
    });
    if let Err(f) = result {
        warning!("pg_attribution worker could not recover orphaned jobs: {}", f.message);
    }
}

/// Deletes succeeded jobs older than attribution.finished_job_retention.
pub fn prune_finished() {
    let result = in_transaction(|| {
        let schema = catalog::schema();
        Spi::run_with_args(
            &format!(
                "DELETE FROM {schema}.attribution_recompute_jobs
                  WHERE status = 'succeeded' AND finished_at < now() - make_interval(secs => $1)"
            ),
            &[(gucs::finished_job_retention_seconds() as f64).into()],
        )
        .expect("pruning finished jobs");
    });
    if let Err(f) = result {
        warning!("pg_attribution worker could not prune finished jobs: {}", f.message);
    }
}

/// Time until the earliest pending job scheduled in the future (a retry) becomes due.
pub fn until_next_due() -> Option<Duration> {
    in_transaction(|| {
        let stmt = catalog::statement("next_due", &[], |schema| {
            format!(
                "SELECT extract(epoch FROM min(run_after) - now())::float8
                   FROM {schema}.attribution_recompute_jobs
                  WHERE status = 'pending' AND run_after > now()"
            )
        });
        Spi::connect(|client| client.select(&*stmt, Some(1), &[])?.first().get_one::<f64>())
            .expect("reading the next retry time")
    })
    .ok()
    .flatten()
    .map(|secs| Duration::from_secs_f64(secs.max(0.001)))
}

/// Runs `body` in its own transaction. An ERROR (or panic) inside is caught, the
/// transaction is rolled back, and the error is returned instead of killing the worker.
fn in_transaction<R>(body: impl FnOnce() -> R) -> Result<R, Failure> {
    let timeout = gucs::job_timeout_ms();
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        if let Some(ms) = timeout {
            statement_timeout::enable(ms);
        }
    }
    let outcome =
        PgTryBuilder::new(AssertUnwindSafe(|| Ok(body()))).catch_others(|e| Err(failure_from(e))).execute();
    unsafe {
        if timeout.is_some() {
            statement_timeout::disable();
        }
        // A timeout that fired after the body finished must not cancel the commit.
        pg_sys::QueryCancelPending = 0;
        match outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => {
                // What PostgresMain does after an ERROR: roll back and start clean.
                pg_sys::InterruptHoldoffCount += 1;
                pg_sys::AbortCurrentTransaction();
                pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
                pg_sys::FlushErrorState();
                pg_sys::InterruptHoldoffCount -= 1;
            }
        }
    }
    outcome
}

fn failure_from(e: CaughtError) -> Failure {
    let report = match &e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
        CaughtError::RustPanic { ereport, .. } => ereport,
    };
    Failure {
        sqlstate: Some(sqlstate_text(report.sql_error_code() as i32)),
        message: report.message().to_owned(),
    }
}

/// The five-character SQLSTATE packed into an error code (Postgres's PGUNSIXBIT).
fn sqlstate_text(code: i32) -> String {
    (0..5).map(|i| (((code >> (6 * i)) & 0x3F) as u8 + b'0') as char).collect()
}

/// Postgres arms statement_timeout only for client statements, so a worker arms the
/// same timer itself around each transaction. timeout.h is not in pgrx's bindings.
mod statement_timeout {
    // TimeoutId::STATEMENT_TIMEOUT in Postgres 15's utils/timeout.h.
    const STATEMENT_TIMEOUT: std::ffi::c_int = 3;

    unsafe extern "C-unwind" {
        fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
        fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
    }

    pub unsafe fn enable(ms: i32) {
        unsafe { enable_timeout_after(STATEMENT_TIMEOUT, ms) }
    }

    pub unsafe fn disable() {
        unsafe { disable_timeout(STATEMENT_TIMEOUT, false) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sqlstate_text_unpacks_codes() {
        // MAKE_SQLSTATE('2','2','0','0','4'): each character minus '0' in six bits, first lowest.
        let pack =
            |s: &str| s.bytes().enumerate().fold(0i32, |acc, (i, b)| acc | (((b - b'0') as i32) << (6 * i)));
        assert_eq!(super::sqlstate_text(pack("22004")), "22004");
        assert_eq!(super::sqlstate_text(pack("XX000")), "XX000");
        assert_eq!(super::sqlstate_text(pack("42P01")), "42P01");
    }
}
