//! Every `attribution.*` setting: declared here, registered in [`init`], read through a
//! typed getter. No other module parses setting strings.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::time::Duration;

pub static TENANT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CORRELATION_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static WINDOW_WIDTH: GucSetting<i32> = GucSetting::<i32>::new(86_400);
pub static MAX_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(31 * 86_400);
pub static INCREMENTAL_MAX_ROWS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
pub static ALLOCATE_ON_INSERT: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn init() {
    GucRegistry::define_string_guc(
        c"attribution.tenant_id",
        c"Tenant the current transaction acts for.",
        c"Row-level security policies compare every tenant_id with this setting. Set it per transaction with set_config(..., true).",
        &TENANT_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"attribution.correlation_id",
        c"Correlation id recorded on jobs scheduled by the insert trigger and on allocations written.",
        c"When empty, a new uuid is generated per statement.",
        &CORRELATION_ID,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"attribution.window_width",
        c"Width of the UTC buckets the insert trigger schedules.",
        c"Buckets are aligned to the Unix epoch, so the default of one day is a UTC calendar day.",
        &WINDOW_WIDTH,
        60,
        31 * 86_400,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"attribution.allocate_on_insert",
        c"Allocate the events of a small INSERT in the inserting transaction.",
        c"An INSERT of at most attribution.incremental_max_rows events into at most 8 days allocates them under the weighted models as part of the statement, so they are allocated when it commits; off leaves them to the background workers.",
        &ALLOCATE_ON_INSERT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"attribution.incremental_max_rows",
        c"Largest statement whose changed events are recorded for incremental recompute.",
        c"A statement that inserts or updates more events asks for a full pass over their windows instead, which is cheaper for bulk loads.",
        &INCREMENTAL_MAX_ROWS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"attribution.max_window",
        c"Longest window schedule_recompute_window and compute_allocations accept.",
        c"Bounds the work one job or call can do.",
        &MAX_WINDOW,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
}

/// Whether a small INSERT allocates its events itself (src/api/trigger.rs).
pub fn allocate_on_insert() -> bool {
    ALLOCATE_ON_INSERT.get()
}

/// Statements changing at most this many events record them for incremental runs;
/// larger ones ask for a full pass.
pub fn incremental_max_rows() -> i64 {
    i64::from(INCREMENTAL_MAX_ROWS.get())
}

/// The caller's correlation id setting, `None` when unset or empty. Not yet validated.
pub fn correlation_id() -> Option<String> {
    non_empty(&CORRELATION_ID)
}

pub fn window_width_seconds() -> i64 {
    i64::from(WINDOW_WIDTH.get())
}

pub fn max_window_seconds() -> i64 {
    i64::from(MAX_WINDOW.get())
}

fn non_empty(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting.get().map(|v| v.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

// Background worker settings. The first three are read at server start.
pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static WORKER_ROLE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(crate::names::WORKER_ROLE_C));
pub static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static POLL_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(5_000);
pub static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(3);
pub static RETRY_DELAY: GucSetting<i32> = GucSetting::<i32>::new(30_000);
pub static RETRY_DELAY_MAX: GucSetting<i32> = GucSetting::<i32>::new(600_000);
pub static JOB_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(300_000);
pub static LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(5_000);
pub static FINISHED_JOB_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);
pub static FAILURE_INJECTION: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Upper bound for attribution.workers; also the size of the shared wake-up table.
pub const MAX_WORKERS: usize = 16;

/// Worker settings exist only where the workers can: when the library is preloaded
/// (Postgres refuses PGC_POSTMASTER settings defined after startup).
pub fn init_worker_settings() {
    GucRegistry::define_string_guc(
        c"attribution.database",
        c"Database whose job queue the background workers drain.",
        c"The extension must be installed in it. Takes effect at server start.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"attribution.worker_role",
        c"Role the background workers run jobs as.",
        c"Must be able to log in and must be neither superuser nor BYPASSRLS; CREATE EXTENSION creates attribution_worker for this.",
        &WORKER_ROLE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"attribution.workers",
        c"Number of background workers draining the job queue.",
        c"0 disables the workers; jobs then wait. Takes effect at server start.",
        &WORKERS,
        0,
        MAX_WORKERS as i32,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"attribution.poll_interval",
        c"Longest a worker sleeps between looks at the queue.",
        c"Workers are woken when a transaction that enqueued a job commits; polling is only the fallback.",
        &POLL_INTERVAL,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"attribution.max_attempts",
        c"Attempts per job before it moves to worker_failed_jobs.",
        c"A run interrupted by a crash counts as an attempt.",
        &MAX_ATTEMPTS,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"attribution.retry_delay",
        c"Delay before the first retry of a failed job; doubles with each further failure.",
        c"",
        &RETRY_DELAY,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"attribution.retry_delay_max",
        c"Longest delay between retries.",
        c"",
        &RETRY_DELAY_MAX,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"attribution.job_timeout",
        c"Longest one job may run before it is cancelled and counted as a failed attempt.",
        c"0 disables the limit.",
        &JOB_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"attribution.lock_timeout",
        c"Longest a worker waits for a lock before it puts the job back.",
        c"A job put back after a lock wait or a deadlock does not spend an attempt. 0 disables the limit.",
        &LOCK_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"attribution.finished_job_retention",
        c"How long succeeded jobs are kept before the workers delete them.",
        c"",
        &FINISHED_JOB_RETENTION,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"attribution.failure_injection",
        c"Lets attribution_recompute_jobs.inject_failure make a job fail or crash its worker. For tests only.",
        c"Off in production: the per-job flag is ignored unless this is on in the server configuration.",
        &FAILURE_INJECTION,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

pub fn database() -> String {
    non_empty(&DATABASE).unwrap_or_else(|| "postgres".into())
}

pub fn worker_role() -> String {
    non_empty(&WORKER_ROLE).unwrap_or_else(|| crate::names::WORKER_ROLE.into())
}

pub fn workers() -> usize {
    WORKERS.get().clamp(0, MAX_WORKERS as i32) as usize
}

pub fn poll_interval() -> Duration {
    Duration::from_millis(POLL_INTERVAL.get().max(10) as u64)
}

pub fn max_attempts() -> i32 {
    MAX_ATTEMPTS.get()
}

pub fn retry_delay() -> Duration {
    Duration::from_millis(RETRY_DELAY.get().max(0) as u64)
}

pub fn retry_delay_max() -> Duration {
    Duration::from_millis(RETRY_DELAY_MAX.get().max(0) as u64)
}

/// `None` when disabled.
pub fn job_timeout_ms() -> Option<i32> {
    Some(JOB_TIMEOUT.get()).filter(|ms| *ms > 0)
}

/// The worker's lock_timeout in milliseconds (0: no limit).
pub fn lock_timeout_ms() -> i32 {
    LOCK_TIMEOUT.get().max(0)
}

pub fn finished_job_retention_seconds() -> i64 {
    i64::from(FINISHED_JOB_RETENTION.get())
}

pub fn failure_injection() -> bool {
    FAILURE_INJECTION.get()
}
