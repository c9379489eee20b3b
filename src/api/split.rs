//! `attribution_split_cents()`: the engine's largest-remainder split as a SQL function.
//! `compute_allocations` calls it per event inside one set-based statement.

use crate::engine::allocation;
use crate::errors::{AttributionError, OrReport};
use pgrx::prelude::*;

/// Splits `revenue_cents` over positive integer `weights`; the shares sum to the revenue.
#[pg_extern(immutable, strict, parallel_safe)]
fn attribution_split_cents(revenue_cents: i64, weights: Array<'_, i32>) -> Vec<i64> {
    // Refuse an oversized array before copying it into Rust memory, where a failed
    // allocation would abort the backend instead of raising an ERROR.
    if weights.len() > allocation::MAX_CHANNELS {
        AttributionError::Split(allocation::SplitError::TooManyWeights(weights.len())).report();
    }
    let weights: Vec<i32> = match weights.as_slice() {
        Ok(slice) => slice.to_vec(),
        // Arrays with NULLs have no slice view; a NULL weight is not a positive weight.
        Err(_) => weights.iter().map(|w| w.unwrap_or(0)).collect(),
    };
    allocation::split_cents(revenue_cents, &weights).or_report()
}
