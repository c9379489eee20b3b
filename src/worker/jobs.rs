//! One worker's dealings with the job table: claim, run, record the outcome, recover jobs
//! orphaned by a crash, prune finished ones. Every step is its own short transaction, and
//! an error in a job is caught and recorded, never allowed to kill the worker.

use crate::catalog;
use crate::compute::{compute_window, LockWait, Pass};
use crate::engine::retry::backoff;
use crate::engine::window::{Window, WindowError, MICROS_PER_SECOND};
use crate::gucs;
use crate::names::{BACKEND_TYPE, EXTENSION_C, WORKER_ROLE, WORKER_ROLE_C};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::BuiltinOid::*;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// A claimed job, as the worker needs it.
struct Job {
    id: pgrx::Uuid,
    tenant_id: pgrx::Uuid,
    /// The row's window, or why it cannot run (the table's constraints make that rare,
    /// but a row that cannot run must be dead-lettered, not stall the queue).
    window: Result<Window, WindowError>,
    model_version: String,
    correlation_id: String,
    attempts: i32,
    inject_failure: Option<String>,
    /// A full pass was asked for (the claim consumed the request).
    full_requested: bool,
    /// When the window was last computed (Postgres microseconds); None: never.
    computed_at: Option<i64>,
    /// The table the row is in: the job table, or its shard under Citus (src/citus.rs).
    /// The worker updates the row there: Citus would refuse clock_timestamp() in an
    /// UPDATE of the distributed table, and the shard is on this node anyway.
    table: String,
}

impl Job {
    /// From a row of (id, tenant_id, window_start, window_end, model_version,
    /// last_correlation_id, attempts, inject_failure); all but the last are NOT NULL.
    fn from_row(row: &pgrx::spi::SpiHeapTupleData<'_>, table: &str) -> Job {
        fn column<T: IntoDatum + FromDatum>(row: &pgrx::spi::SpiHeapTupleData<'_>, n: usize) -> T {
            row.get(n).ok().flatten().unwrap_or_else(|| panic!("job row column {n} is missing"))
        }
        let start: TimestampWithTimeZone = column(row, 3);
        let end: TimestampWithTimeZone = column(row, 4);
        let finite = start.is_finite() && end.is_finite();
        Job {
            id: column(row, 1),
            tenant_id: column(row, 2),
            window: Window::new(start.into(), end.into(), finite, i64::MAX / MICROS_PER_SECOND),
            model_version: column(row, 5),
            correlation_id: column(row, 6),
            attempts: column(row, 7),
            inject_failure: row.get(8).ok().flatten(),
            full_requested: row.get(9).ok().flatten().unwrap_or(true),
            computed_at: row.get::<TimestampWithTimeZone>(10).ok().flatten().map(i64::from),
            table: table.to_owned(),
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
    /// The tenant of the last job this worker claimed: the round-robin cursor.
    last_tenant: Option<pgrx::Uuid>,
    /// Which of this node's job tables (src/citus.rs) the next claim looks at first.
    next_table: usize,
}

/// Why jobs may not run here right now, if they may not: the extension is missing or
/// installed at another version than this library's, or the worker's role is a
/// superuser, has BYPASSRLS, or lacks the privileges of attribution_worker. Cheap
/// (catalog caches, a version read at most once a second), so it is checked before every
/// claim. Must run inside a transaction.
fn refusal() -> Option<String> {
    // SAFETY: catalog lookups through the system caches, inside the caller's transaction.
    unsafe {
        if pg_sys::get_extension_oid(EXTENSION_C.as_ptr(), true) == pg_sys::InvalidOid {
            return Some("extension pg_attribution is not installed in this database; jobs wait".to_owned());
        }
        let installed = catalog::installed_version();
        if installed != catalog::LIBRARY_VERSION {
            return Some(format!(
                "the installed SQL of pg_attribution is version {installed} but the library is version \
                 {}; jobs wait. Run ALTER EXTENSION pg_attribution UPDATE",
                catalog::LIBRARY_VERSION
            ));
        }
        let queue_role = pg_sys::get_role_oid(WORKER_ROLE_C.as_ptr(), true);
        if queue_role == pg_sys::InvalidOid || !pg_sys::has_privs_of_role(pg_sys::GetUserId(), queue_role) {
            return Some(format!(
                "role \"{}\" does not have the privileges of role \"{}\", which the queue's policies \
                 and grants name; jobs wait. GRANT {} TO {}",
                gucs::worker_role(),
                WORKER_ROLE,
                WORKER_ROLE,
                gucs::worker_role()
            ));
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

    /// The job this worker has claimed and not yet run, if any.
    pub fn claimed_next(&self) -> Option<pgrx::Uuid> {
        self.claimed.as_ref().map(|job| job.id)
    }
}

/// Runs the next runnable job. Returns false when there was none.
pub fn run_next(state: &mut WorkerState) -> bool {
    let job = match state.claimed.take() {
        Some(job) => job,
        None => {
            let claimed = in_transaction(AssertUnwindSafe(|| claim_if_allowed(state))).unwrap_or_else(|f| {
                // Citus may have just distributed the queue: look where it is again.
                crate::citus::forget_placement();
                warning!("pg_attribution worker could not claim a job: {}", f.message);
                None
            });
            match claimed {
                Some(job) => job,
                None => return false,
            }
        }
    };

    if let Err(reason) = &job.window {
        // Nothing about this row will change by retrying it.
        let failure =
            Failure { sqlstate: Some("22023".into()), message: format!("the job row cannot run: {reason}") };
        record_outcome(&job, &failure, Outcome::DeadLetter);
        return true;
    }
    report_activity(
        pg_sys::BackendState::STATE_RUNNING,
        &format!(
            "pg_attribution job {} tenant {} model {} correlation_id {}",
            job.id, job.tenant_id, job.model_version, job.correlation_id
        ),
    );
    let started = Instant::now();
    // The following job is claimed in the same transaction, so its claim commits with
    // this job's result: one transaction and one WAL flush per job instead of two.
    //
    // The run commits without waiting for its WAL flush (synchronous_commit off, set by
    // set_context): its allocations are visible at commit, one flush sooner. They are
    // derived data: a crash that loses the commit leaves the job claimed (the claim
    // committed durably before the run) with its change log unconsumed, and crash
    // recovery runs it again. A claim of the next job that rode in this transaction
    // must be durable before that job runs (a job that crashes the server must have
    // spent its attempt), so then the WAL is flushed here, after the results are
    // already visible.
    match in_transaction(AssertUnwindSafe(|| (run(&job), claim_if_allowed(state)))) {
        Ok((computed, next)) => {
            if next.is_some() {
                flush_wal();
            }
            debug1!(
                "pg_attribution job {} tenant {} correlation_id {}: {} pass, {} events, {} allocation rows written in {:.1} ms",
                job.id,
                job.tenant_id,
                job.correlation_id,
                if computed.incremental { "incremental" } else { "full" },
                computed.events,
                computed.written,
                started.elapsed().as_secs_f64() * 1000.0
            );
            state.claimed = next;
        }
        Err(failure) => {
            let outcome = if failure.is_lock_wait() {
                Outcome::PutBack
            } else if job.attempts >= gucs::max_attempts() {
                Outcome::DeadLetter
            } else {
                Outcome::Retry(backoff(
                    job.attempts.max(1) as u32,
                    gucs::retry_delay(),
                    gucs::retry_delay_max(),
                ))
            };
            record_outcome(&job, &failure, outcome);
        }
    }
    true
}

/// What becomes of a job whose run failed.
#[derive(Clone, Copy)]
enum Outcome {
    /// Pending again after the delay; the attempt counts.
    Retry(Duration),
    /// Failed for good, with a row in worker_failed_jobs.
    DeadLetter,
    /// It waited for a lock too long, was chosen to break a deadlock, or hit a failure
    /// of the server rather than of the job (see Failure::is_lock_wait): pending again
    /// shortly, and the attempt does not count. Whoever held the lock is at fault, not
    /// the job, so a session that holds a lock on purpose cannot dead-letter jobs.
    PutBack,
}

/// How long a job put back after a lock wait waits before it runs again.
const PUT_BACK_DELAY: Duration = Duration::from_secs(1);

impl Failure {
    /// Failures that say nothing about the job, so they must not spend its attempts
    /// (or a session could dead-letter other tenants' jobs by causing them):
    /// - lock_not_available (lock_timeout, or a window another transaction computes)
    ///   and deadlock_detected;
    /// - insufficient resources (class 53: out of shared memory for locks, disk full),
    ///   which any session can cause for everyone;
    /// - ambiguous_function and undefined_function: the extension's own functions
    ///   cannot be resolved (a look-alike overload in its schema), which every job
    ///   hits until a DBA fixes the schema.
    fn is_lock_wait(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some("55P03" | "40P01" | "42725" | "42883"))
            || self.sqlstate.as_deref().is_some_and(|s| s.starts_with("53"))
    }
}

fn record_outcome(job: &Job, failure: &Failure, outcome: Outcome) {
    match in_transaction(AssertUnwindSafe(|| record_failure(job, failure, outcome))) {
        Ok(()) => {}
        // A client transaction holds the job's row (an enqueue that coalesced into it):
        // the job stays 'running' under this worker, which recovers it at its next
        // housekeeping once the row is free (recover_orphans).
        Err(f) if f.is_lock_wait() => log!(
            "pg_attribution job {} tenant {} correlation_id {}: its outcome waits for a lock on the job row ({}); it will be recovered",
            job.id, job.tenant_id, job.correlation_id, f.message
        ),
        Err(f) => {
            warning!("pg_attribution worker could not record the failure of job {}: {}", job.id, f.message)
        }
    }
}

/// Shows what the worker does in pg_stat_activity (state and query).
pub fn report_activity(state: pg_sys::BackendState::Type, what: &str) {
    let text = std::ffi::CString::new(what).unwrap_or_default();
    // SAFETY: Postgres copies the string into this backend's shared status entry.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}

/// Claims the next runnable job unless the worker must refuse to run jobs.
fn claim_if_allowed(state: &mut WorkerState) -> Option<Job> {
    let refusal = refusal();
    let refused = refusal.is_some();
    state.note(refusal);
    if refused {
        return None;
    }
    // Once Citus distributes the queue, each of this node's shards of it is a table of
    // its own: go round them too, starting after the one a job last came from.
    let tables = crate::citus::job_tables();
    super::plan_for_citus(crate::citus::distributed());
    for k in 0..tables.len() {
        let i = (state.next_table + k) % tables.len();
        if let Some(job) = claim(&tables[i], state.last_tenant) {
            state.last_tenant = Some(job.tenant_id);
            state.next_table = i + 1;
            return Some(job);
        }
    }
    None
}

fn claim(table: &str, after_tenant: Option<pgrx::Uuid>) -> Option<Job> {
    // The claim commits on its own: a run that crashes the worker has then already
    // counted as an attempt, so a job that always crashes ends in the dead-letter table.
    //
    // Fair share: each worker goes round the tenants with runnable jobs in tenant_id
    // order, taking the oldest runnable job of the first tenant after the one it served
    // last, and wrapping round. A tenant's backlog therefore delays another tenant's job
    // by at most one job per worker. Each start point is one probe of the per-tenant
    // runnable index; the second (wrapping round to the first tenant) is only probed
    // when the first finds nothing. A job another worker is claiming is skipped (SKIP
    // LOCKED), not waited for.
    // Counters saturate instead of overflowing, so no row can make the claim fail.
    let stmt =
        catalog::statement(&format!("claim_job {table}"), &catalog::types(&[UUIDOID]), |_| claim_sql(table));
    let from = pgrx::Uuid::from_bytes(round_robin_start(after_tenant.map(|t| *t.as_bytes())));
    Spi::connect_mut(|client| {
        let rows = client.update(&*stmt, Some(1), &[from.into()]).expect("claiming a job");
        rows.into_iter().next().map(|row| Job::from_row(&row, table))
    })
}

/// The claim statement on `table` (the job table or, under Citus, one of its shards on
/// this node). Also run, with the smallest uuid for $1 and the unqualified table, by
/// tests/isolation/specs/claim_skips_uncommitted.spec (a unit test keeps the two the same).
fn claim_sql(table: &str) -> String {
    format!(
        "WITH next AS (
                 SELECT c.tenant_id, c.id, c.full_requested
                   FROM (VALUES ($1::uuid), ('00000000-0000-0000-0000-000000000000'::uuid))
                        AS start(from_tenant)
                  CROSS JOIN LATERAL (
                        SELECT j.tenant_id, j.id, j.full_requested FROM {table} j
                         WHERE j.status = 'pending' AND j.run_after <= now()
                           AND j.tenant_id >= start.from_tenant
                         ORDER BY j.tenant_id, j.run_after
                         LIMIT 1
                           FOR UPDATE SKIP LOCKED) c
                  LIMIT 1
             )
             UPDATE {table} j
                SET status = 'running',
                    attempts = least(j.attempts, 2147483646) + 1,
                    run_count = least(j.run_count, 2147483646) + 1,
                    rerun_requested = false, full_requested = false,
                    started_at = clock_timestamp(), finished_at = NULL,
                    worker_pid = pg_backend_pid(), updated_at = now()
               FROM next
              WHERE j.tenant_id = next.tenant_id AND j.id = next.id
          RETURNING j.id, j.tenant_id, j.window_start, j.window_end, j.model_version,
                    j.last_correlation_id, j.attempts, j.inject_failure, next.full_requested, j.computed_at"
    )
}

/// Where the round-robin claim starts looking: the uuid right after the last tenant
/// served (uuids compare as 128-bit big-endian numbers in Postgres), or the smallest
/// uuid when none was served yet or the last one was the largest.
fn round_robin_start(last_tenant: Option<[u8; 16]>) -> [u8; 16] {
    match last_tenant.map(u128::from_be_bytes).and_then(|t| t.checked_add(1)) {
        Some(next) => next.to_be_bytes(),
        None => [0; 16],
    }
}

/// Runs a claimed job: compute under the job's tenant context and correlation id, then
/// mark it done, all in the caller's transaction so the allocations and the job's
/// status commit together.
/// Sets the tenant context and correlation id for the rest of the transaction.
/// Also makes the transaction commit without waiting for its WAL flush (see run_next).
fn set_context(tenant_id: pgrx::Uuid, correlation_id: &str) {
    let context = catalog::statement("set_job_context", &catalog::types(&[TEXTOID, TEXTOID]), |_| {
        "SELECT pg_catalog.set_config('attribution.tenant_id', $1, true),
                pg_catalog.set_config('attribution.correlation_id', $2, true),
                pg_catalog.set_config('synchronous_commit', 'off', true)"
            .into()
    });
    Spi::connect_mut(|client| {
        client.update(&*context, None, &[tenant_id.to_string().into(), correlation_id.into()]).map(|_| ())
    })
    .expect("setting the job's tenant context and correlation id");
}

fn run(job: &Job) -> crate::compute::Computed {
    set_context(job.tenant_id, &job.correlation_id);
    inject_failure(job);

    let window = job.window.clone().unwrap_or_else(|e| crate::errors::AttributionError::from(e).report());
    let pass = match job.computed_at {
        Some(computed_at) if !job.full_requested => Pass::IncrementalSince(computed_at),
        Some(_) => Pass::Full,
        None => Pass::First,
    };
    let result = compute_window(
        job.tenant_id,
        window,
        &job.model_version,
        &job.correlation_id,
        LockWait::NoWait,
        pass,
    )
    .unwrap_or_else(|e| e.report());

    // A request that arrived during the run set rerun_requested: run once more.
    let finish = catalog::statement(
        &format!("finish_job {}", job.table),
        &catalog::types(&[UUIDOID, UUIDOID]),
        |_| {
            format!(
                "UPDATE {}
                SET status = CASE WHEN rerun_requested THEN 'pending' ELSE 'succeeded' END,
                    run_after = now(), rerun_requested = false, attempts = 0, computed_at = now(),
                    finished_at = clock_timestamp(), worker_pid = NULL, last_error = NULL,
                    last_sqlstate = NULL, updated_at = now()
              WHERE tenant_id = $1 AND id = $2",
                job.table
            )
        },
    );
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

/// Records a failed run: a retry after a delay, a dead letter, or a put-back that does
/// not spend the attempt. The same path serves errors and crash-orphaned runs.
fn record_failure(job: &Job, failure: &Failure, outcome: Outcome) {
    let schema = catalog::schema();
    let max_attempts = gucs::max_attempts();
    let (dead, delay, spent) = match outcome {
        Outcome::Retry(delay) => (false, delay, true),
        Outcome::DeadLetter => (true, Duration::ZERO, true),
        Outcome::PutBack => (false, PUT_BACK_DELAY, false),
    };
    match outcome {
        Outcome::DeadLetter => warning!(
            "pg_attribution job {} tenant {} correlation_id {} failed after {} attempts and moved to worker_failed_jobs: {}",
            job.id, job.tenant_id, job.correlation_id, job.attempts, failure.message
        ),
        Outcome::Retry(_) => log!(
            "pg_attribution job {} tenant {} correlation_id {} failed (attempt {} of {}), retrying in {:?}: {}",
            job.id, job.tenant_id, job.correlation_id, job.attempts, max_attempts, delay, failure.message
        ),
        Outcome::PutBack => log!(
            "pg_attribution job {} tenant {} correlation_id {} put back without spending an attempt, retrying in {:?}: {}",
            job.id, job.tenant_id, job.correlation_id, delay, failure.message
        ),
    }
    // The job row is updated where it is (see Job::table), the dead letter written
    // through the dead-letter table, which under Citus routes it to the co-located shard.
    let failed = Spi::connect_mut(|client| {
        let row = client
            .update(
                &format!(
                    "UPDATE {}
                        SET status = CASE WHEN $3 THEN 'failed' ELSE 'pending' END,
                            attempts = CASE WHEN $7 THEN attempts ELSE greatest(attempts - 1, 0) END,
                            full_requested = full_requested OR $8,
                            run_after = now() + make_interval(secs => $4),
                            rerun_requested = CASE WHEN $3 THEN false ELSE rerun_requested END,
                            finished_at = clock_timestamp(), worker_pid = NULL,
                            last_error = $5, last_sqlstate = $6, updated_at = now()
                      WHERE tenant_id = $1 AND id = $2
                  RETURNING status = 'failed', window_start, window_end, model_version,
                            last_correlation_id, attempts",
                    job.table
                ),
                Some(1),
                &[
                    job.tenant_id.into(),
                    job.id.into(),
                    dead.into(),
                    delay.as_secs_f64().into(),
                    failure.message.as_str().into(),
                    failure.sqlstate.as_deref().into(),
                    spent.into(),
                    job.full_requested.into(),
                ],
            )?
            .first();
        if row.is_empty() || row.get::<bool>(1)? != Some(true) {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        Ok(Some((
            row.get::<TimestampWithTimeZone>(2)?,
            row.get::<TimestampWithTimeZone>(3)?,
            row.get::<String>(4)?,
            row.get::<String>(5)?,
            row.get::<i32>(6)?,
        )))
    })
    .expect("recording a job failure");
    let Some((window_start, window_end, model_version, correlation_id, attempts)) = failed else { return };
    // As the job's tenant, as the run was: the dead-letter table's policies are checked
    // against the context (under Citus even where the worker's own policy admits the row).
    crate::tenancy::set_context(Some(&job.tenant_id.to_string()));
    Spi::run_with_args(
        &format!(
            "INSERT INTO {schema}.worker_failed_jobs
                    (job_id, tenant_id, payload, correlation_id, sqlstate, error_message, attempts)
             VALUES ($1, $2,
                     jsonb_build_object('tenant_id', $2, 'window_start', $3, 'window_end', $4,
                                        'model_version', $5, 'correlation_id', $6),
                     $6, $7, $8, $9)"
        ),
        &[
            job.id.into(),
            job.tenant_id.into(),
            window_start.into(),
            window_end.into(),
            model_version.into(),
            correlation_id.into(),
            failure.sqlstate.as_deref().into(),
            failure.message.as_str().into(),
            attempts.into(),
        ],
    )
    .expect("recording a dead letter");
}

/// Jobs left 'running' by a worker that is gone (killed, crashed, terminated, or the
/// server stopped in immediate mode) are failed attempts: retried at once, or
/// dead-lettered after the last. So are this worker's own running jobs other than the
/// one it has claimed next: it is between jobs, so their outcome was never recorded.
pub fn recover_orphans(claimed_next: Option<pgrx::Uuid>) {
    let result = in_transaction(|| {
        // FOR UPDATE needs a read-write SPI call, hence update().
        let mut orphans: Vec<(Job, bool)> = Vec::new();
        for table in crate::citus::job_tables() {
            orphans.extend(Spi::connect_mut(|client| {
                client
                    .update(
                        &format!(
                            "SELECT id, tenant_id, window_start, window_end, model_version,
                                last_correlation_id, attempts, inject_failure,
                                -- the claim consumed the run's full-pass request: ask again
                                true, computed_at,
                                worker_pid = pg_backend_pid() AND started_at >= pg_postmaster_start_time()
                           FROM {table}
                          WHERE status = 'running'
                            AND (started_at < pg_postmaster_start_time()
                                 OR worker_pid IS NULL
                                 OR worker_pid NOT IN (SELECT pid FROM pg_stat_activity
                                                        WHERE backend_type = $1)
                                 -- this worker's own, but not the one it has claimed
                                 -- next: its outcome could not be recorded (a client
                                 -- transaction held the job row past lock_timeout)
                                 OR (worker_pid = pg_backend_pid() AND id IS DISTINCT FROM $2))
                            FOR UPDATE SKIP LOCKED"
                        ),
                        None,
                        &[BACKEND_TYPE.into(), claimed_next.into()],
                    )
                    .expect("finding orphaned jobs")
                    .map(|row| {
                        (Job::from_row(&row, &table), row.get::<bool>(11).ok().flatten().unwrap_or(false))
                    })
                    .collect::<Vec<_>>()
            }));
        }
        let crashed = Failure {
            sqlstate: None,
            message: "the worker running this job exited before finishing it (crash, kill or shutdown)"
                .into(),
        };
        let unrecorded = Failure {
            sqlstate: Some("55P03".into()),
            message: "the outcome of this run could not be recorded: a transaction held the job row past \
                      lock_timeout"
                .into(),
        };
        for (job, own) in &orphans {
            let (failure, outcome) = if *own {
                // Not the job's fault: run it again without spending an attempt.
                (&unrecorded, Outcome::PutBack)
            } else if job.attempts >= gucs::max_attempts() {
                (&crashed, Outcome::DeadLetter)
            } else {
                (&crashed, Outcome::Retry(Duration::ZERO))
            };
            record_failure(job, failure, outcome);
        }
    });
    if let Err(f) = result {
        warning!("pg_attribution worker could not recover orphaned jobs: {}", f.message);
    }
}

/// Deletes succeeded jobs older than attribution.finished_job_retention.
pub fn prune_finished() {
    let result = in_transaction(|| {
        for table in crate::citus::job_tables() {
            Spi::run_with_args(
                &format!(
                    "DELETE FROM {table}
                      WHERE status = 'succeeded' AND finished_at < now() - make_interval(secs => $1)"
                ),
                &[(gucs::finished_job_retention_seconds() as f64).into()],
            )
            .expect("pruning finished jobs");
        }
    });
    if let Err(f) = result {
        warning!("pg_attribution worker could not prune finished jobs: {}", f.message);
    }
}

/// With nothing to claim, helps another worker's running job with one slice of its
/// window's recorded changes (compute::help_with_slice): a hot day is then computed by
/// several workers at once. Returns whether it computed anything. On one server only:
/// under Citus each node's workers drain their own shards.
pub fn help(state: &WorkerState) -> bool {
    if state.refused() {
        return false;
    }
    let outcome = in_transaction(|| {
        if crate::citus::distributed() {
            return false;
        }
        let schema = catalog::schema();
        let running = Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT tenant_id, window_start, window_end, model_version, last_correlation_id
                           FROM {schema}.attribution_recompute_jobs
                          WHERE status = 'running' AND computed_at IS NOT NULL
                            AND worker_pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                          ORDER BY started_at LIMIT 8"
                    ),
                    None,
                    &[],
                )
                .expect("reading running jobs")
                .map(|row| {
                    let start: TimestampWithTimeZone = row.get(2).ok().flatten().expect("window_start");
                    let end: TimestampWithTimeZone = row.get(3).ok().flatten().expect("window_end");
                    (
                        row.get::<pgrx::Uuid>(1).ok().flatten().expect("tenant_id"),
                        Window::new(
                            start.into(),
                            end.into(),
                            start.is_finite() && end.is_finite(),
                            i64::MAX / MICROS_PER_SECOND,
                        ),
                        row.get::<String>(4).ok().flatten().expect("model_version"),
                        row.get::<String>(5).ok().flatten().expect("last_correlation_id"),
                    )
                })
                .collect::<Vec<_>>()
        });
        for (tenant_id, window, model_version, correlation_id) in running {
            let Ok(window) = window else { continue };
            set_context(tenant_id, &correlation_id);
            if let Ok(Some(events)) =
                crate::compute::help_with_slice(tenant_id, window, &model_version, &correlation_id)
            {
                debug1!(
                    "pg_attribution helped tenant {tenant_id} model {model_version} correlation_id {correlation_id}: {events} events of one slice"
                );
                return true;
            }
        }
        false
    });
    outcome.unwrap_or_else(|f| {
        debug1!("pg_attribution worker could not help with a running job: {}", f.message);
        false
    })
}

/// Time until the earliest pending job scheduled in the future (a retry) becomes due.
pub fn until_next_due() -> Option<Duration> {
    in_transaction(|| {
        let mut earliest: Option<f64> = None;
        for table in crate::citus::job_tables() {
            let stmt = catalog::statement(&format!("next_due {table}"), &[], |_| {
                format!(
                    "SELECT extract(epoch FROM min(run_after) - now())::float8
                       FROM {table}
                      WHERE status = 'pending' AND run_after > now()"
                )
            });
            let due = Spi::connect(|client| client.select(&*stmt, Some(1), &[])?.first().get_one::<f64>())
                .expect("reading the next retry time");
            earliest = match (earliest, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        earliest
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
                // As Postgres's own workers do: report table statistics (inserted,
                // updated, dead tuples) so that autovacuum sees what the workers write.
                // Rate-limited inside Postgres to one flush a second.
                pg_sys::pgstat_report_stat(false);
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

/// Waits until the commit record of the transaction that just committed is flushed, as
/// a synchronous commit would have.
///
/// Not GetXLogInsertRecPtr(): when the insert position is exactly at a page boundary it
/// points past the next page's header, which is not written yet, and XLogFlush fails
/// with "xlog flush request ... is not satisfied" (which ended the worker).
fn flush_wal() {
    // SAFETY: outside any transaction, right after the commit that set
    // XactLastCommitEnd; XLogFlush only writes and syncs WAL.
    unsafe { pg_sys::XLogFlush(pg_sys::XactLastCommitEnd) };
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
    /// Whitespace-collapsed SQL up to RETURNING, without comments.
    fn normalized(sql: &str) -> String {
        let text: Vec<&str> = sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect();
        let text = text.join(" ");
        let text = text.split("RETURNING").next().unwrap_or("");
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_isolation_spec_claims_with_the_workers_statement() {
        let spec = include_str!("../../tests/isolation/specs/claim_skips_uncommitted.spec");
        let worker = super::claim_sql("attribution_recompute_jobs")
            .replace("$1::uuid", "'00000000-0000-0000-0000-000000000000'::uuid");
        assert!(
            normalized(spec).contains(&normalized(&worker)),
            "tests/isolation/specs/claim_skips_uncommitted.spec no longer runs the worker's claim:\n{}",
            normalized(&worker)
        );
    }

    #[test]
    fn round_robin_starts_right_after_the_last_tenant() {
        let start = super::round_robin_start;
        assert_eq!(start(None), [0; 16]);
        assert_eq!(start(Some([0; 16])), 1u128.to_be_bytes());
        let mut t = [0xaa; 16];
        t[15] = 0xff;
        let mut expected = [0xaa; 16];
        expected[14] = 0xab;
        expected[15] = 0x00;
        assert_eq!(start(Some(t)), expected, "carries into the next byte");
        assert_eq!(start(Some([0xff; 16])), [0; 16], "wraps round after the largest uuid");
    }

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
