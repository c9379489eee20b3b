//! Writing a window's allocations: one set-based statement per (tenant, window, model).
//! Shared by `compute_allocations()` and the background worker; the caller has already
//! validated the window and set the tenant context.

use crate::catalog;
use crate::engine::window::Window;
use crate::errors::AttributionError;
use crate::queue::to_timestamptz;
use pgrx::pg_sys::BuiltinOid::*;
use pgrx::prelude::*;

/// Computes the window and returns (events in the window, allocation rows written).
pub fn compute_window(
    tenant_id: pgrx::Uuid,
    window: Window,
    model_version: &str,
    correlation_id: &str,
) -> Result<(i64, i64), AttributionError> {
    let model = load_model(model_version)?;
    lock_window(tenant_id, model_version, window);

    // Upsert only what differs (no dead tuples, no updated_at churn on a re-run), and
    // drop allocations for channels the model no longer has. Allocations of deleted
    // events go with them through the foreign key.
    let stmt = catalog::statement(
        "compute_window",
        &catalog::types(&[
            UUIDOID,
            TIMESTAMPTZOID,
            TIMESTAMPTZOID,
            TEXTOID,
            TEXTARRAYOID,
            INT4ARRAYOID,
            TEXTOID,
            BOOLOID,
        ]),
        |schema| {
            format!(
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
             -- Only for models whose channel list has ever changed ($8): nothing else
             -- can have allocations for a channel it no longer gives.
             DELETE FROM {schema}.attribution_allocations a
              USING {schema}.attribution_events e
              WHERE $8
                AND a.tenant_id = $1 AND a.model_version = $4
                AND e.tenant_id = a.tenant_id AND e.id = a.event_id
                AND e.occurred_at >= $2 AND e.occurred_at < $3
                AND a.channel <> ALL ($5::text[])
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM {schema}.attribution_events e
                  WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3),
                (SELECT count(*) FROM upserted) + (SELECT count(*) FROM removed)"
            )
        },
    );
    let (events, written) = Spi::connect_mut(|client| {
        let row = client
            .update(
                &*stmt,
                Some(1),
                &[
                    tenant_id.into(),
                    to_timestamptz(window.start).into(),
                    to_timestamptz(window.end).into(),
                    model_version.into(),
                    model.channels.into(),
                    model.weights.into(),
                    correlation_id.into(),
                    model.channels_ever_changed.into(),
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

/// Serialises writers whose windows overlap, for one tenant and model, so that the
/// workers and direct calls never deadlock or interleave on the same allocation rows,
/// while different days of a tenant still compute in parallel. Transaction-scoped
/// advisory locks: each writer holds the tenant/model lock shared and every UTC day its
/// window touches exclusively, in ascending order; a window of more than
/// MAX_GRANULE_LOCKS days holds the tenant/model lock exclusively instead.
fn lock_window(tenant_id: pgrx::Uuid, model_version: &str, window: Window) {
    let key = format!("pg_attribution/{tenant_id}/{model_version}");
    let (first_day, last_day, per_day) = match window.lock_granules() {
        Some(days) => (*days.start(), *days.end(), true),
        None => (0, -1, false),
    };
    let stmt = catalog::statement(
        "lock_window",
        &catalog::types(&[TEXTOID, INT8OID, INT8OID, BOOLOID]),
        |_| {
            "SELECT CASE WHEN $4 THEN pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtextextended($1, 0))
                     ELSE pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1, 0)) END,
                (SELECT count(pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1 || '/' || day, 0)))
                   FROM generate_series($2, $3) AS day)"
            .into()
        },
    );
    Spi::connect_mut(|client| {
        client
            .update(&*stmt, None, &[key.into(), first_day.into(), last_day.into(), per_day.into()])
            .map(|_| ())
    })
    .expect("locking the window");
}

/// A model as the computation needs it.
pub struct Model {
    pub channels: Vec<String>,
    pub weights: Vec<i32>,
    /// Whether the channel list was ever changed, so that allocations for channels the
    /// model no longer gives may exist.
    pub channels_ever_changed: bool,
}

/// The model, or UnknownModel.
pub fn load_model(model_version: &str) -> Result<Model, AttributionError> {
    let stmt = catalog::statement("load_model", &catalog::types(&[TEXTOID]), |schema| {
        format!(
            "SELECT channels, weights, channels_changed_at IS NOT NULL
               FROM {schema}.attribution_models WHERE model_version = $1"
        )
    });
    let row = Spi::connect(|client| {
        client
            .select(&*stmt, Some(1), &[model_version.into()])?
            .first()
            .get_three::<Vec<String>, Vec<i32>, bool>()
    });
    match row {
        Ok((Some(channels), Some(weights), Some(channels_ever_changed))) => {
            crate::engine::allocation::validate_weights(&weights).map_err(|source| {
                AttributionError::ModelWeights { model_version: model_version.to_owned(), source }
            })?;
            Ok(Model { channels, weights, channels_ever_changed })
        }
        Ok(_) | Err(pgrx::spi::SpiError::InvalidPosition) => {
            Err(AttributionError::UnknownModel(model_version.to_owned()))
        }
        Err(e) => panic!("reading attribution_models: {e}"),
    }
}
