//! The statement-level trigger on `attribution_events`. It reads the statement's transition
//! tables once, groups the touched rows by (tenant, UTC bucket), and enqueues one job per
//! bucket and active model, so a million-row COPY schedules a handful of jobs.
//!
//! It schedules nothing in a session with `row_security = off`, which is how pg_dump's
//! output and pg_restore load data: a restore brings the job queue back as it was dumped
//! instead of adding jobs for rows whose allocations it restores too.

use crate::catalog;
use crate::engine::window::{Window, WindowError};
use crate::errors::{AttributionError, OrReport};
use crate::gucs;
use crate::queue::{self, JobRequest};
use pgrx::prelude::*;
use std::collections::BTreeSet;

/// Transition table names; sql/finalize.sql creates the triggers with these.
const NEW_ROWS: &str = "attribution_new_events";
const OLD_ROWS: &str = "attribution_old_events";

#[pg_trigger]
fn attribution_events_schedule<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, AttributionError> {
    if !on_the_events_table(trigger) {
        AttributionError::TriggerMisplaced("attribution_events_schedule").report();
    }
    if restoring() {
        return Ok(None);
    }
    let correlation_id = super::correlation_id_or_new(gucs::correlation_id().as_deref()).or_report();
    let width = gucs::window_width_seconds();
    let (buckets, new_rows) = touched_buckets(trigger, width).or_report();
    if buckets.is_empty() {
        return Ok(None);
    }
    let models = active_models();
    // Small statements record which events changed, so the runs compute only those; a
    // bulk load asks for a full pass instead, which costs the load nothing per row.
    let full = new_rows > gucs::incremental_max_rows();
    if !full && new_rows > 0 && !models.is_empty() && catalog::sql_is_current() {
        record_changes(trigger, &models);
    }
    let mut requests = Vec::with_capacity(buckets.len() * models.len());
    for (tenant_id, window) in &buckets {
        for model_version in &models {
            requests.push(JobRequest {
                tenant_id: *tenant_id,
                window: *window,
                model_version: model_version.clone(),
                correlation_id: correlation_id.clone(),
                full,
            });
        }
    }
    queue::enqueue(&requests);
    Ok(None)
}

/// Records every inserted or updated event (its new version) for each model, for the
/// incremental runs of its window (src/compute.rs).
fn record_changes(trigger: &PgTrigger<'_>, models: &[String]) {
    let schema = catalog::schema();
    let inserted = matches!(trigger.op(), Ok(pgrx::trigger_support::PgTriggerOperation::Insert));
    let on_a_shard = trigger.relid().is_ok_and(|relid| relid != catalog::events_relid());
    Spi::connect_mut(|client| {
        // SAFETY: as in touched_buckets: the trigger data outlives this call.
        let rc = unsafe {
            pg_sys::SPI_register_trigger_data(std::ptr::from_ref(trigger.trigger_data()).cast_mut())
        };
        assert!(rc >= 0, "SPI_register_trigger_data failed: {rc}");
        if !on_a_shard {
            let sql = format!(
                "INSERT INTO {schema}.attribution_event_changes (tenant_id, model_version, occurred_at, event_id, inserted)
                 SELECT n.tenant_id, m.model_version, n.occurred_at, n.id, $2
                   FROM {NEW_ROWS} n CROSS JOIN pg_catalog.unnest($1::text[]) AS m(model_version)"
            );
            return client.update(&sql, None, &[models.to_vec().into(), inserted.into()]).map(|_| ());
        }
        // Under Citus the trigger fires on a shard of the events, and Citus plans the
        // insert into the (distributed) change table apart from this statement, where
        // the transition table cannot be seen: read it first, write from arrays.
        let read = format!(
            "SELECT pg_catalog.array_agg(n.tenant_id), pg_catalog.array_agg(n.occurred_at), pg_catalog.array_agg(n.id)
               FROM {NEW_ROWS} n"
        );
        let write = format!(
            "INSERT INTO {schema}.attribution_event_changes (tenant_id, model_version, occurred_at, event_id, inserted)
             SELECT n.tenant_id, m.model_version, n.occurred_at, n.event_id, $5
               FROM ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($2::timestamptz[]),
                               pg_catalog.unnest($3::uuid[])) AS n(tenant_id, occurred_at, event_id)
              CROSS JOIN pg_catalog.unnest($4::text[]) AS m(model_version)"
        );
        let row = client.select(&read, Some(1), &[])?.first();
        let tenants = row.get::<Vec<pgrx::Uuid>>(1)?.unwrap_or_default();
        let occurred = row.get::<Vec<TimestampWithTimeZone>>(2)?.unwrap_or_default();
        let ids = row.get::<Vec<pgrx::Uuid>>(3)?.unwrap_or_default();
        client
            .update(
                &write,
                None,
                &[tenants.into(), occurred.into(), ids.into(), models.to_vec().into(), inserted.into()],
            )
            .map(|_| ())
    })
    .expect("recording changed events");
}

/// The start of an event's bucket ($1 seconds wide, from the Unix epoch). date_bin
/// overflows within a few decades of the end of the timestamp range (year 294276); such
/// a row has no window the queue can store, and NULL here becomes a clear 22008.
const BUCKET: &str = "CASE WHEN occurred_at OPERATOR(pg_catalog.<) '294000-01-01 00:00:00+00' \
     THEN pg_catalog.date_bin(pg_catalog.make_interval(secs => $1), occurred_at, \
     '1970-01-01 00:00:00+00') END";

/// Distinct (tenant, bucket) pairs among the rows the statement inserted, updated (before
/// and after) or deleted, and how many rows it inserted or updated (the new versions).
fn touched_buckets(
    trigger: &PgTrigger<'_>,
    width_seconds: i64,
) -> Result<(BTreeSet<(pgrx::Uuid, Window)>, i64), AttributionError> {
    let mut sources = Vec::new();
    if trigger.new_transition_table_name().ok().flatten().is_some() {
        sources.push((NEW_ROWS, 1));
    }
    if trigger.old_transition_table_name().ok().flatten().is_some() {
        sources.push((OLD_ROWS, 0));
    }
    if sources.is_empty() {
        return Ok((BTreeSet::new(), 0));
    }
    // date_bin does the per-row work in C and the grouping happens in SQL; the engine
    // turns each bucket start into the same window the rest of the extension uses.
    let rows = sources
        .iter()
        .map(|(t, is_new)| format!("SELECT tenant_id, {BUCKET} AS bucket, {is_new} AS is_new FROM {t}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let sql = format!(
        "SELECT tenant_id, bucket, pg_catalog.sum(is_new)::int8 FROM ({rows}) AS touched GROUP BY tenant_id, bucket"
    );
    Spi::connect(|client| {
        // SAFETY: the trigger data is Postgres's and outlives this call; registering it
        // makes the transition tables visible to queries on this SPI connection.
        let rc = unsafe {
            pg_sys::SPI_register_trigger_data(std::ptr::from_ref(trigger.trigger_data()).cast_mut())
        };
        assert!(rc >= 0, "SPI_register_trigger_data failed: {rc}");
        let rows = client.select(&sql, None, &[width_seconds.into()]).expect("reading transition tables");
        let mut buckets = BTreeSet::new();
        let mut new_rows = 0i64;
        for row in rows {
            let tenant: pgrx::Uuid = row.get(1).expect("tenant_id").expect("tenant_id is NOT NULL");
            let start: Option<TimestampWithTimeZone> = row.get(2).expect("bucket");
            let start = start.ok_or(WindowError::BeyondRange)?;
            new_rows += row.get::<i64>(3).expect("row count").unwrap_or(0);
            buckets.insert((tenant, Window::schedulable_bucket(start.into(), width_seconds)?));
        }
        Ok((buckets, new_rows))
    })
}

/// The function runs as the extension's owner, so it must only ever read the transition
/// tables of the extension's own events table: a trigger someone attached to another
/// table (0.1.0 let any role create one) could otherwise feed it rows of any shape.
fn on_the_events_table(trigger: &PgTrigger<'_>) -> bool {
    trigger.relid().is_ok_and(|relid| {
        relid == catalog::events_relid() || crate::citus::is_shard_of(relid, "attribution_events")
    })
}

/// Whether this session loads data the way pg_dump's output and pg_restore do.
fn restoring() -> bool {
    // SAFETY: reads a built-in setting's current value; missing_ok is false because
    // row_security always exists.
    let value = unsafe { pg_sys::GetConfigOption(c"row_security".as_ptr(), false, false) };
    !value.is_null() && unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() == b"off"
}

fn active_models() -> Vec<String> {
    let stmt = catalog::statement("active_models", &[], |schema| {
        format!("SELECT model_version FROM {schema}.attribution_models WHERE active ORDER BY 1")
    });
    Spi::connect(|client| {
        client
            .select(&*stmt, None, &[])
            .expect("reading attribution_models")
            .map(|row| row.get::<String>(1).expect("model_version").expect("not null"))
            .collect()
    })
}

/// Models whose allocations a statement on attribution_models made stale: inserted
/// active, or updated so that their channels or weights differ or they became active.
const CHANGED_MODELS: &str = "SELECT n.model_version FROM attribution_new_models n
      LEFT JOIN attribution_old_models o ON o.model_version OPERATOR(pg_catalog.=) n.model_version
     WHERE n.active AND (o.model_version IS NULL
           OR (o.channels, o.weights, o.active) IS DISTINCT FROM (n.channels, n.weights, n.active))";

/// The statement-level trigger on `attribution_models`: a model that is added active, or
/// whose channels or weights change (or that becomes active), gets a full recompute of
/// every window that holds events, for every tenant, through the same enqueue as
/// everything else. Its cost is one scan of attribution_events (grouped by tenant and
/// bucket) per such statement; the runs then cost what full passes cost.
#[pg_trigger]
fn attribution_models_schedule<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, AttributionError> {
    let models_relid: Option<pg_sys::Oid> = Spi::get_one(&format!(
        "SELECT '{}.attribution_models'::pg_catalog.regclass::pg_catalog.oid",
        catalog::schema()
    ))
    .expect("looking up attribution_models");
    if trigger.relid().ok() != models_relid {
        // Under Citus the registry is a reference table, whose triggers fire on each
        // node's copy of it. Those copies schedule nothing: a distributed installation
        // does not schedule a changed model's windows (README, "Scaling out with Citus");
        // its next run of each window is still a full pass.
        if trigger.relid().is_ok_and(|relid| crate::citus::is_shard_of(relid, "attribution_models")) {
            return Ok(None);
        }
        AttributionError::TriggerMisplaced("attribution_models_schedule").report();
    }
    if restoring() {
        return Ok(None);
    }
    let has_old = trigger.old_transition_table_name().ok().flatten().is_some();
    let changed_sql = if has_old {
        CHANGED_MODELS.to_owned()
    } else {
        "SELECT n.model_version FROM attribution_new_models n WHERE n.active".to_owned()
    };
    let width = gucs::window_width_seconds();
    let schema = catalog::schema();
    let correlation_id = super::correlation_id_or_new(gucs::correlation_id().as_deref()).or_report();
    let (models, buckets) = Spi::connect(|client| {
        // SAFETY: as in touched_buckets.
        let rc = unsafe {
            pg_sys::SPI_register_trigger_data(std::ptr::from_ref(trigger.trigger_data()).cast_mut())
        };
        assert!(rc >= 0, "SPI_register_trigger_data failed: {rc}");
        let models: Vec<String> = client
            .select(&changed_sql, None, &[])
            .expect("reading the changed models")
            .map(|row| row.get::<String>(1).expect("model_version").expect("not null"))
            .collect();
        if models.is_empty() {
            return Ok((models, BTreeSet::new()));
        }
        // Runs as the extension's owner: every tenant's events.
        let sql = format!("SELECT DISTINCT tenant_id, {BUCKET} FROM {schema}.attribution_events");
        let mut buckets = BTreeSet::new();
        for row in client.select(&sql, None, &[width.into()]).expect("reading the event buckets") {
            let tenant: pgrx::Uuid = row.get(1).expect("tenant_id").expect("tenant_id is NOT NULL");
            let start: Option<TimestampWithTimeZone> = row.get(2).expect("bucket");
            let start = start.ok_or(WindowError::BeyondRange)?;
            buckets.insert((tenant, Window::schedulable_bucket(start.into(), width)?));
        }
        Ok::<_, AttributionError>((models, buckets))
    })
    .or_report();
    let requests: Vec<JobRequest> = buckets
        .iter()
        .flat_map(|(tenant_id, window)| {
            models.iter().map(|model_version| JobRequest {
                tenant_id: *tenant_id,
                window: *window,
                model_version: model_version.clone(),
                correlation_id: correlation_id.clone(),
                full: true,
            })
        })
        .collect();
    queue::enqueue(&requests);
    Ok(None)
}
