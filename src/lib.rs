//! pg_attribution: multi-tenant revenue attribution inside Postgres.
//!
//! `api` is the SQL surface, `engine` the pure allocation and window logic, `queue` the
//! one enqueue path shared by the trigger and the SQL functions.

use pgrx::prelude::*;

mod api;
mod catalog;
pub mod engine;
mod errors;
mod gucs;
mod queue;
mod tenancy;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
