//! Names the Rust code and the SQL scripts (sql/) share, defined once on the Rust side.
//! A #[pg_test] checks that the installed SQL uses the same ones.

use std::ffi::CStr;

/// The extension, as in CREATE EXTENSION and pg_extension.extname.
pub const EXTENSION: &str = "pg_attribution";
pub const EXTENSION_C: &CStr = c"pg_attribution";

/// What `pg_stat_activity.backend_type` shows for the background workers
/// (attribution_worker_count() in sql/schema.sql counts these).
pub const BACKEND_TYPE: &str = "pg_attribution worker";

/// The role the queue's policies and grants name (sql/schema.sql), and the default
/// attribution.worker_role. A custom worker role must have its privileges.
pub const WORKER_ROLE: &str = "attribution_worker";
pub const WORKER_ROLE_C: &CStr = c"attribution_worker";
