//! Writing a window's allocations: one set-based statement per (tenant, window, model).
//! Shared by `compute_allocations()` and the background worker; the caller has already
//! validated the window and set the tenant context.

use crate::catalog;
use crate::engine::window::Window;
use crate::errors::AttributionError;
use crate::queue::to_timestamptz;
use pgrx::prelude::*;

/// Computes the window and returns (events in the window, allocation rows written).
pub fn compute_window(
    tenant_id: pgrx::Uuid,
    window: Window,
    model_version: &str,
    correlation_id: &str,
) -> Result<(i64, i64), AttributionError> {
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
    Ok((events, written))
}

/// The model's channels and weights, or UnknownModel.
pub fn load_model(model_version: &str) -> Result<(Vec<String>, Vec<i32>), AttributionError> {
    let schema = catalog::schema();
    let row = Spi::get_two_with_args::<Vec<String>, Vec<i32>>(
        &format!("SELECT channels, weights FROM {schema}.attribution_models WHERE model_version = $1"),
        &[model_version.into()],
    );
    match row {
        Ok((Some(channels), Some(weights))) => {
            crate::engine::allocation::validate_weights(&weights).map_err(|source| {
                AttributionError::ModelWeights { model_version: model_version.to_owned(), source }
            })?;
            Ok((channels, weights))
        }
        Ok(_) | Err(pgrx::spi::SpiError::InvalidPosition) => {
            Err(AttributionError::UnknownModel(model_version.to_owned()))
        }
        Err(e) => panic!("reading attribution_models: {e}"),
    }
}
