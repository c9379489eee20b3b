//! The background workers that drain `attribution_recompute_jobs` inside the database.
//!
//! Each worker connects to `attribution.database` as `attribution.worker_role` (a role
//! subject to RLS), then loops: claim a runnable job (`FOR UPDATE SKIP LOCKED`), run it in
//! one transaction under the job's tenant context (claiming the next job in that same
//! transaction), record the outcome, and sleep on its latch when the queue is empty.
//! Commits that enqueue jobs set the latches of idle workers.

mod jobs;

use crate::names::BACKEND_TYPE;
use crate::{gucs, wake};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// How long the postmaster waits before restarting a worker that exited abnormally.
const RESTART_DELAY: Duration = Duration::from_secs(2);

/// How often a worker looks for jobs orphaned by a crash and prunes finished jobs.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

/// Registers the static workers. Only possible while shared_preload_libraries is loaded.
pub fn register() {
    for slot in 0..gucs::workers() {
        BackgroundWorkerBuilder::new(&format!("pg_attribution worker {slot}"))
            .set_type(BACKEND_TYPE)
            .set_library(crate::names::EXTENSION)
            .set_function("pg_attribution_worker_main")
            .set_argument((slot as i32).into_datum())
            .enable_spi_access()
            .set_restart_time(Some(RESTART_DELAY))
            .load();
    }
}

unsafe extern "C-unwind" {
    /// Postgres's own SIGTERM handler (tcop/postgres.c), unwrapped: it runs in signal
    /// context and only sets flags and the latch.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_attribution_worker_main(arg: pg_sys::Datum) {
    let slot = unsafe { i32::from_polymorphic_datum(arg, false, pg_sys::INT4OID) }.unwrap_or(0) as usize;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    // SIGTERM as in Postgres's own workers: die() makes the next interrupt check exit
    // with FATAL (code 1), cancelling a job in progress, whose transaction rolls back.
    // The postmaster restarts the worker unless the server is shutting down, and the
    // interrupted job is recovered as an orphan.
    // SAFETY: installing a Postgres signal handler in our own process.
    unsafe { pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(postgres_die)) };
    let database = gucs::database();
    let role = gucs::worker_role();
    BackgroundWorker::connect_worker_to_spi(Some(&database), Some(&role));
    // The worker runs the same few statements thousands of times a second with different
    // parameters. Left to choose, the plan cache keeps making custom plans for some of
    // them (planning each run, RLS policies included); the generic plan is always fine
    // here, and catalog::statement re-plans it every few seconds as the tables grow.
    // SAFETY: setting a GUC for this process's session.
    unsafe {
        pg_sys::SetConfigOption(
            c"plan_cache_mode".as_ptr(),
            c"force_generic_plan".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        )
    };
    apply_session_settings();
    wake::publish(slot);
    log!("pg_attribution worker {slot} started in database \"{database}\" as role \"{role}\"");

    let mut state = jobs::WorkerState::default();
    let mut last_maintenance: Option<Instant> = None;
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration file is what a worker does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            apply_session_settings();
        }
        pgrx::check_for_interrupts!();
        // Drain what is runnable now, then sleep until the next retry is due, a commit
        // wakes us, or the poll interval passes. Housekeeping also runs while the queue
        // never empties.
        // With nothing to claim, help another worker's hot window (jobs::help).
        while jobs::run_next(&mut state) || jobs::help(&state) {
            pgrx::check_for_interrupts!();
            maintain(&state, &mut last_maintenance);
        }
        // Announce idleness, then look once more: a commit that saw this worker busy
        // woke nobody, and its job must not wait for the poll interval.
        wake::set_idle(slot, true);
        if jobs::run_next(&mut state) {
            wake::set_idle(slot, false);
            continue;
        }
        maintain(&state, &mut last_maintenance);
        let sleep = jobs::until_next_due().map_or(gucs::poll_interval(), |d| d.min(gucs::poll_interval()));
        jobs::report_activity(pg_sys::BackendState::STATE_IDLE, "");
        // SAFETY: outside any transaction, as after a client's statement.
        unsafe { pg_sys::pgstat_report_stat(true) };
        let alive = BackgroundWorker::wait_latch(Some(sleep));
        wake::set_idle(slot, false);
        if !alive {
            break;
        }
    }
    // Only reached when the postmaster died. Exit code 1, never 0: 0 would unregister
    // the worker for good.
    wake::withdraw(slot);
    unsafe { pg_sys::proc_exit(1) };
}

/// Session settings every job runs with: a search_path that no role can put objects in
/// (the worker's SQL names the extension's objects with their schema),
/// attribution.lock_timeout as lock_timeout, so that a lock someone holds puts the job
/// back instead of stalling the worker, and transaction defaults pinned.
fn apply_session_settings() {
    let lock_timeout = std::ffi::CString::new(gucs::lock_timeout_ms().to_string()).expect("digits");
    // Also the settings a database or role default (ALTER DATABASE ... SET) could turn
    // against the workers: read-only transactions, row_security = off (every job would
    // fail), serializable isolation (serialization failures would spend attempts).
    for (name, value) in [
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"lock_timeout", lock_timeout.as_c_str()),
        (c"default_transaction_read_only", c"off"),
        (c"row_security", c"on"),
        (c"default_transaction_isolation", c"read committed"),
    ] {
        // SAFETY: setting GUCs for this process's session.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
            )
        };
    }
}

/// Citus routes a statement on the distributed tables to the tenant's shard only with the
/// parameters' values in hand, so it cannot use the generic plans the workers otherwise
/// force (see pg_attribution_worker_main): once the tables are distributed, let Postgres
/// plan with the values (it then keeps custom plans for these statements).
pub fn plan_for_citus(distributed: bool) {
    let mode = if distributed { c"auto" } else { c"force_generic_plan" };
    // SAFETY: setting a GUC for this process's session, inside a transaction: an abort
    // undoes it, and the next claim sets it again.
    unsafe {
        pg_sys::SetConfigOption(
            c"plan_cache_mode".as_ptr(),
            mode.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        )
    };
}

/// Every MAINTENANCE_INTERVAL: recover jobs orphaned by a crash and prune finished ones.
/// Only once run_next has confirmed that jobs may run here.
fn maintain(state: &jobs::WorkerState, last: &mut Option<Instant>) {
    if !state.refused() && last.is_none_or(|t| t.elapsed() >= MAINTENANCE_INTERVAL) {
        jobs::recover_orphans(state.claimed_next());
        jobs::prune_finished();
        *last = Some(Instant::now());
    }
}
