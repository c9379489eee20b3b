//! `compute_allocations()`: compute one window for one tenant and model, synchronously,
//! in one set-based statement.

use super::{load_model, require, window_arg};
use crate::catalog;
use crate::errors::{AttributionError, OrReport};
use crate::gucs;
use crate::queue::to_timestamptz;
use crate::tenancy;
use pgrx::prelude::*;

/// Computes `[window_start, window_end)` for a tenant and model. Returns the number of
/// events in the window and the number of allocation rows this call wrote (inserted,
/// changed or removed): 0 on a re-run where nothing changed.
#[pg_extern(volatile, parallel_unsafe)]
fn compute_allocations(
    tenant_id: Option<pgrx::Uuid>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    model_version: default!(Option<&str>, "'1.0.0'"),
) -> TableIterator<'static, (name!(event_count, i64), name!(allocation_count, i64))> {
    let row = compute(tenant_id, window_start, window_end, model_version).or_report();
    TableIterator::once(row)
}

fn compute(
    tenant_id: Option<pgrx::Uuid>,
    window_start: Option<TimestampWithTimeZone>,
    window_end: Option<TimestampWithTimeZone>,
    model_version: Option<&str>,
) -> Result<(i64, i64), AttributionError> {
    let tenant_id = require(tenant_id, "tenant_id")?;
    let window = window_arg(require(window_start, "window_start")?, require(window_end, "window_end")?)?;
    let model_version = require(model_version, "model_version")?;
    let correlation_id = match gucs::correlation_id() {
        Some(id) => {
            crate::engine::correlation::validate(&id)?;
            id
        }
        None => super::new_correlation_id(),
    };

    let scope = tenancy::enter(tenant_id)?;
    let (channels, weights) = load_model(model_version)?;
    let schema = catalog::schema();

    // Writers of one tenant and model take turns, so overlapping windows computed at once
    // (by the worker and a direct call, say) can neither deadlock nor interleave.
    Spi::run_with_args(
        "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1, 0))",
        &[format!("pg_attribution/{tenant_id}/{model_version}").into()],
    )
    .expect("taking the tenant/model lock");

    // Upsert only what differs (no dead tuples, no updated_at churn on a re-run), and
    // drop allocations for channels the model no longer has. Allocations of deleted
    // events go with them through the foreign key.
    let sql = format!(
        "WITH model AS MATERIALIZED (
             SELECT $5::text[] AS channels, $6::int[] AS weights,
                    ARRAY(SELECT round(u.w::numeric / (SELECT sum(x) FROM unnest($6::int[]) x), 10)
                            FROM unnest($6::int[]) WITH ORDINALITY AS u(w, ord) ORDER BY u.ord) AS ratios
         ),
         computed AS (
             SELECT e.tenant_id, e.id AS event_id, s.channel, s.ratio, s.cents
               FROM {schema}.attribution_events e
              CROSS JOIN model m
              CROSS JOIN LATERAL unnest(m.channels, m.ratios,
                                        {schema}.attribution_split_cents(e.revenue_cents, m.weights))
                         AS s(channel, ratio, cents)
              WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
         ),
         upserted AS (
             INSERT INTO {schema}.attribution_allocations AS a
                    (tenant_id, event_id, model_version, channel, allocation_ratio,
                     allocated_revenue_cents, correlation_id)
             SELECT tenant_id, event_id, $4, channel, ratio, cents, $7 FROM computed
             ON CONFLICT (tenant_id, event_id, model_version, channel) DO UPDATE
                SET allocation_ratio = excluded.allocation_ratio,
                    allocated_revenue_cents = excluded.allocated_revenue_cents,
                    correlation_id = excluded.correlation_id,
                    updated_at = now()
              WHERE (a.allocation_ratio, a.allocated_revenue_cents)
                    IS DISTINCT FROM (excluded.allocation_ratio, excluded.allocated_revenue_cents)
             RETURNING 1
         ),
         removed AS (
             DELETE FROM {schema}.attribution_allocations a
              USING {schema}.attribution_events e
              WHERE a.tenant_id = $1 AND a.model_version = $4
                AND e.tenant_id = a.tenant_id AND e.id = a.event_id
                AND e.occurred_at >= $2 AND e.occurred_at < $3
                AND a.channel <> ALL ($5::text[])
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM {schema}.attribution_events e
                  WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3),
                (SELECT count(*) FROM upserted) + (SELECT count(*) FROM removed)"
    );
    let (events, written) = Spi::connect_mut(|client| {
        let row = client
            .update(
                &sql,
                Some(1),
                &[
                    tenant_id.into(),
                    to_timestamptz(window.start).into(),
                    to_timestamptz(window.end).into(),
                    model_version.into(),
                    channels.into(),
                    weights.into(),
                    correlation_id.into(),
                ],
            )
            .expect("computing allocations")
            .first();
        (
            row.get::<i64>(1).expect("event_count").unwrap_or(0),
            row.get::<i64>(2).expect("allocation_count").unwrap_or(0),
        )
    });
    scope.leave();
    Ok((events, written))
}
