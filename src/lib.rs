//! pg_attribution: multi-tenant revenue attribution inside Postgres.
//!
//! `api` is the SQL surface, `engine` the pure allocation and window logic, `queue` the
//! one enqueue path shared by the trigger and the SQL functions, `worker` the background
//! workers that drain the queue. Below them: `compute` (the allocation statement),
//! `wake` (wake-on-commit), `catalog`, `citus` (where the queue's shards are), `convert`, `gucs`, `names`, `tenancy`, `errors`.

use pgrx::prelude::*;

mod api;
mod catalog;
mod citus;
mod compute;
mod convert;
pub mod engine;
mod errors;
mod fits;
mod gucs;
mod names;
mod queue;
mod tenancy;
mod wake;
mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/citus.sql", name = "citus");
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx attaches a Rust backtrace to the DETAIL of every error that crosses Rust code
    // when RUST_BACKTRACE is set in the server's environment. Clients get a one-line
    // message and a SQLSTATE, never a backtrace: turn the library backtraces off.
    // SAFETY: library load runs single-threaded, before any backtrace is captured.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    gucs::init();
    // The workers and their wake-up table need shared memory, which exists only for
    // libraries loaded at server start. Loaded later, the SQL functions and the trigger
    // still work and jobs wait (queue.rs warns about that).
    // SAFETY: a plain read of a Postgres global during library load.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        gucs::init_worker_settings();
        wake::init_shmem();
        worker::register();
    }
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
