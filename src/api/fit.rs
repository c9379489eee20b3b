//! `attribution_fit_model()`: fits a tenant's data-driven model (Markov or Shapley) to its
//! journeys over a period, stores the fit, and schedules the tenant's windows for it.

use super::require;
use crate::catalog;
use crate::convert::to_timestamptz;
use crate::engine::markov::PathCount;
use crate::engine::touch::{counting_path, PathRules, Touchpoint};
use crate::engine::window::Window;
use crate::errors::{AttributionError, OrReport};
use crate::{fits, gucs, tenancy};
use pgrx::prelude::*;
use std::collections::BTreeMap;

/// Longest fitting period: a year and a day.
const MAX_PERIOD_SECONDS: i64 = 366 * 86_400;

/// Fits `model_version` (kind markov or shapley) for the tenant on its journeys in
/// [period_start, period_end) and returns the fit's id with each channel's value (Markov:
/// removal effect; Shapley: conversions credited) and share. A converting journey is a
/// conversion in the period with its path (the customer's touchpoints before it, by the
/// model's path rules); a non-converting one is a customer with touchpoints in the period
/// and no conversion in it, along all those touchpoints. Allocations use the tenant's
/// latest fit; fitting schedules a full pass of the tenant's windows for the model when
/// the tenant uses it.
#[pg_extern(volatile, parallel_unsafe)]
#[allow(clippy::type_complexity)]
fn attribution_fit_model(
    tenant_id: Option<pgrx::Uuid>,
    model_version: Option<&str>,
    period_start: Option<TimestampWithTimeZone>,
    period_end: Option<TimestampWithTimeZone>,
) -> TableIterator<'static, (name!(fit_id, i64), name!(channel, String), name!(value, f64), name!(share, f64))>
{
    let rows = fit_model(tenant_id, model_version, period_start, period_end).or_report();
    TableIterator::new(rows)
}

fn fit_model(
    tenant_id: Option<pgrx::Uuid>,
    model_version: Option<&str>,
    period_start: Option<TimestampWithTimeZone>,
    period_end: Option<TimestampWithTimeZone>,
) -> Result<Vec<(i64, String, f64, f64)>, AttributionError> {
    let tenant_id = require(tenant_id, "tenant_id")?;
    let model_version = require(model_version, "model_version")?;
    let start = require(period_start, "period_start")?;
    let end = require(period_end, "period_end")?;
    let period =
        Window::new(start.into(), end.into(), start.is_finite() && end.is_finite(), MAX_PERIOD_SECONDS)?;
    let correlation_id = super::correlation_id_or_new(gucs::correlation_id().as_deref())?;
    // Only for the tenant the session acts for: a fit reads the tenant's journeys and
    // changes its allocations, which a session without a context must not do for anyone.
    let scope = tenancy::enter_own(tenant_id)?;

    let model = crate::compute::load_model(model_version)?;
    let touch = model.touch.as_ref().filter(|t| t.data_driven).ok_or(AttributionError::ModelShape(
        "attribution_fit_model() fits the data-driven kinds only (markov, shapley)",
    ))?;
    let rules = crate::engine::model::parse(&touch.kind, &touch.params)?.path;
    let paths = journeys(tenant_id, period, touch.lookback, &rules);
    let fit = fits::fit(&touch.kind, &paths)?;
    let journeys_count: u64 = paths.iter().map(|p| p.conversions + p.nulls).sum();
    let conversions: u64 = paths.iter().map(|p| p.conversions).sum();

    let schema = catalog::schema();
    let fit_id: i64 = Spi::get_one_with_args(
        &format!(
            "INSERT INTO {schema}.attribution_model_fits
                    (tenant_id, model_version, kind, period_start, period_end, journeys, conversions,
                     channels, channel_values, conversion_probability, coalitions, correlation_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             RETURNING id"
        ),
        &[
            tenant_id.into(),
            model_version.into(),
            touch.kind.as_str().into(),
            to_timestamptz(period.start).into(),
            to_timestamptz(period.end).into(),
            (journeys_count as i64).into(),
            (conversions as i64).into(),
            fit.channels.clone().into(),
            fit.values.clone().into(),
            fit.conversion_probability.into(),
            fit.coalitions.clone().map(pgrx::JsonB).into(),
            correlation_id.as_str().into(),
        ],
    )
    .expect("storing the fit")
    .expect("the fit's id");

    // The tenant's windows, if it uses the model (active and turned on).
    let used: bool = Spi::get_one_with_args(
        &format!(
            "SELECT EXISTS (SELECT FROM {schema}.attribution_tenant_models tm
                              JOIN {schema}.attribution_models m ON m.model_version = tm.model_version
                             WHERE tm.tenant_id = $1 AND tm.model_version = $2 AND m.active)"
        ),
        &[tenant_id.into(), model_version.into()],
    )
    .expect("reading attribution_tenant_models")
    .unwrap_or(false);
    if used {
        super::trigger::enqueue_full(&[(model_version.to_owned(), Some(vec![tenant_id]))]);
    }
    scope.leave();
    Ok(fit
        .channels
        .into_iter()
        .zip(fit.values)
        .zip(fit.shares)
        .map(|((channel, value), share)| (fit_id, channel, value, share))
        .collect())
}

/// The tenant's journeys in the period, aggregated by path after the model's path rules.
fn journeys(
    tenant_id: pgrx::Uuid,
    period: Window,
    lookback: Option<i64>,
    rules: &PathRules,
) -> Vec<PathCount> {
    let schema = catalog::schema();
    let customer = "coalesce(e.customer_key, e.raw_payload OPERATOR(pg_catalog.->>) 'customer_key')";
    // Runs as the extension's owner: every name is qualified and every row filtered by
    // the tenant explicitly.
    let sql = format!(
        "WITH conv AS (
             SELECT e.occurred_at, {customer} AS customer
               FROM {schema}.attribution_events e
              WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
         ),
         journeys AS (
             SELECT (SELECT pg_catalog.array_agg(t.channel ORDER BY t.occurred_at, t.channel)
                       FROM {schema}.attribution_touchpoints t
                      WHERE c.customer IS NOT NULL AND t.tenant_id = $1 AND t.customer_key = c.customer
                        AND t.occurred_at <= c.occurred_at
                        AND ($4::int8 IS NULL
                             OR t.occurred_at >= c.occurred_at - pg_catalog.make_interval(secs => $4::float8 / 1000000)))
                    AS path, 1 AS conversions, 0 AS nulls
               FROM conv c
             UNION ALL
             SELECT pg_catalog.array_agg(t.channel ORDER BY t.occurred_at, t.channel), 0, 1
               FROM {schema}.attribution_touchpoints t
              WHERE t.tenant_id = $1 AND t.occurred_at >= $2 AND t.occurred_at < $3
                AND NOT EXISTS (SELECT FROM conv c WHERE c.customer = t.customer_key)
              GROUP BY t.customer_key
         )
         SELECT coalesce(path, '{{}}'::text[]), sum(conversions)::int8, sum(nulls)::int8
           FROM journeys GROUP BY path"
    );
    let rows: Vec<(Vec<String>, i64, i64)> = Spi::connect(|client| {
        client
            .select(
                &sql,
                None,
                &[
                    tenant_id.into(),
                    to_timestamptz(period.start).into(),
                    to_timestamptz(period.end).into(),
                    lookback.into(),
                ],
            )
            .expect("reading the journeys")
            .map(|row| {
                (
                    row.get::<Vec<String>>(1).expect("path").unwrap_or_default(),
                    row.get::<i64>(2).expect("conversions").unwrap_or(0),
                    row.get::<i64>(3).expect("nulls").unwrap_or(0),
                )
            })
            .collect()
    });
    // The lookback was applied above; the other rules depend on the sequence only.
    let sequence_rules = PathRules { lookback: None, ..rules.clone() };
    let mut by_path: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    for (channels, conversions, nulls) in rows {
        let touches: Vec<Touchpoint> = channels
            .into_iter()
            .enumerate()
            .map(|(i, channel)| Touchpoint { at: i as i64, channel })
            .collect();
        let kept: Vec<String> =
            counting_path(i64::MAX, &touches, &sequence_rules).into_iter().map(|t| t.channel).collect();
        let entry = by_path.entry(kept).or_default();
        entry.0 += conversions.max(0) as u64;
        entry.1 += nulls.max(0) as u64;
    }
    by_path
        .into_iter()
        .map(|(channels, (conversions, nulls))| PathCount { channels, conversions, nulls })
        .collect()
}

/// Turns a multi-touch model off for the caller's tenant: its changes are no longer
/// recorded nor its windows scheduled; its allocations stay. Returns whether it was on.
/// A function rather than DELETE on attribution_tenant_models, so that application roles
/// hold no privilege that lets them lock that table (every insert into the events reads it).
#[pg_extern(volatile, parallel_unsafe)]
fn attribution_disable_model(tenant_id: Option<pgrx::Uuid>, model_version: Option<&str>) -> bool {
    disable_model(tenant_id, model_version).or_report()
}

fn disable_model(
    tenant_id: Option<pgrx::Uuid>,
    model_version: Option<&str>,
) -> Result<bool, AttributionError> {
    let tenant_id = require(tenant_id, "tenant_id")?;
    let model_version = require(model_version, "model_version")?;
    let scope = tenancy::enter_own(tenant_id)?;
    let removed: Option<i64> = Spi::get_one_with_args(
        &format!(
            "WITH gone AS (DELETE FROM {}.attribution_tenant_models WHERE tenant_id = $1 AND model_version = $2 RETURNING 1)
             SELECT count(*) FROM gone",
            catalog::schema()
        ),
        &[tenant_id.into(), model_version.into()],
    )
    .expect("turning the model off");
    scope.leave();
    Ok(removed.unwrap_or(0) > 0)
}
