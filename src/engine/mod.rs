//! Pure attribution logic: cent allocation, window arithmetic and correlation ids.
//! Nothing in here knows about Postgres, so it is tested with plain `cargo test`
//! in milliseconds and reused by the SQL functions, the trigger and the worker.

pub mod allocation;
pub mod correlation;
pub mod markov;
pub mod model;
pub mod retry;
pub mod shapley;
pub mod touch;
pub mod window;
