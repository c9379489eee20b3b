//! The statement-level trigger on `attribution_events`. It reads the statement's transition
//! tables once, groups the touched rows by (tenant, UTC bucket), and enqueues one job per
//! bucket and active model, so a million-row COPY schedules a handful of jobs.
//!
//! It schedules nothing in a session with `row_security = off`, which is how pg_dump's
//! output and pg_restore load data: a restore brings the job queue back as it was dumped
//! instead of adding jobs for rows whose allocations it restores too.

use crate::catalog;
use crate::compute;
use crate::engine::window::{Window, WindowError};
use crate::errors::{AttributionError, OrReport};
use crate::gucs;
use crate::queue::{self, JobRequest};
use pgrx::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

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
    let tenants: BTreeSet<pgrx::Uuid> = buckets.iter().map(|(tenant, _)| *tenant).collect();
    let (models, multi_touch) = models_by_tenant(&tenants);
    // Conversions of tenants with multi-touch models hold their customers' buckets until
    // commit, so that a concurrent touchpoint statement sees them (see lock_customers).
    if !multi_touch.is_empty() && new_rows > 0 {
        lock_customers(trigger, NEW_ROWS, &multi_touch, pg_sys::RowExclusiveLock);
    }
    // Small statements record which events changed, so the runs compute only those; a
    // bulk load asks for a full pass instead, which costs the load nothing per row. A
    // small INSERT allocates its events itself where it can (allocate_inserted), and
    // records only the rest.
    let full = new_rows > gucs::incremental_max_rows();
    if !full && new_rows > 0 && !models.is_empty() && catalog::sql_is_current() {
        let inserted = matches!(trigger.op(), Ok(pgrx::trigger_support::PgTriggerOperation::Insert));
        let allocated = if inserted {
            allocate_inserted(trigger, &buckets, &models, &correlation_id)
        } else {
            BTreeSet::new()
        };
        let rest: BTreeMap<pgrx::Uuid, Vec<String>> = models
            .iter()
            .map(|(tenant, versions)| {
                let left = versions.iter().filter(|v| !allocated.contains(&(*tenant, (*v).clone()))).cloned();
                (*tenant, left.collect::<Vec<_>>())
            })
            .filter(|(_, versions)| !versions.is_empty())
            .collect();
        if !rest.is_empty() {
            record_changes(trigger, &rest);
        }
    }
    let mut requests = Vec::with_capacity(buckets.len());
    for (tenant_id, window) in &buckets {
        for model_version in models.get(tenant_id).into_iter().flatten() {
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

/// Allocates the events an INSERT statement added, under their tenants' weighted models,
/// in the statement's own transaction (see "Allocation on insert" in src/compute.rs), so
/// they are allocated when it commits. Returns the (tenant, model) pairs it allocated;
/// the caller records the other pairs' events for the workers. It allocates nothing:
/// - with attribution.allocate_on_insert off;
/// - under Citus (the trigger runs on a shard there);
/// - in a REPEATABLE READ or SERIALIZABLE transaction, whose snapshot may predate a
///   model change that a full pass has already made;
/// - when the events fall in more than ALLOCATE_ON_INSERT_MAX_DAYS days;
/// - for a multi-touch model (a conversion's credit depends on other rows);
/// - for a pair with a full pass of one of those windows queued (it will read them);
/// - for a pair whose days a full pass holds or waits for, or once the transaction
///   holds MAX_INSERT_GUARDS_PER_TRANSACTION guards.
///
/// The jobs are enqueued as for any statement: they keep their meaning (correlation id,
/// a window's first computation), and find nothing recorded for these events.
fn allocate_inserted(
    trigger: &PgTrigger<'_>,
    buckets: &BTreeSet<(pgrx::Uuid, Window)>,
    models: &BTreeMap<pgrx::Uuid, Vec<String>>,
    correlation_id: &str,
) -> BTreeSet<(pgrx::Uuid, String)> {
    let mut allocated = BTreeSet::new();
    // SAFETY: reads the backend's current isolation level.
    let transaction_snapshot = unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32;
    if !gucs::allocate_on_insert() || crate::citus::distributed() || transaction_snapshot {
        return allocated;
    }
    let days = buckets
        .iter()
        .map(|(_, window)| window.lock_granules().map_or(i64::MAX, |days| days.end() - days.start() + 1))
        .fold(0i64, i64::saturating_add);
    if days > compute::ALLOCATE_ON_INSERT_MAX_DAYS {
        return allocated;
    }
    let mut tenants_of: BTreeMap<&str, Vec<pgrx::Uuid>> = BTreeMap::new();
    for (tenant, versions) in models {
        for version in versions {
            tenants_of.entry(version.as_str()).or_default().push(*tenant);
        }
    }
    let schema = catalog::schema();
    for (version, tenants) in tenants_of {
        // A model that cannot be loaded is left to the workers, whose job reports why.
        if !compute::load_model(version).is_ok_and(|model| model.touch.is_none()) {
            continue;
        }
        let guarded: Vec<pgrx::Uuid> = tenants
            .into_iter()
            .filter(|tenant| {
                let windows: Vec<Window> =
                    buckets.iter().filter(|(t, _)| t == tenant).map(|(_, window)| *window).collect();
                !compute::full_pass_pending(*tenant, version, &windows)
                    && compute::guard_inserts(*tenant, version, &windows)
            })
            .collect();
        if guarded.is_empty() {
            continue;
        }
        // The model as it is now that the guards are held (a fresh snapshot): a change
        // that committed before, and whose full passes may already have run, is seen; one
        // that commits after has full passes that wait for this transaction.
        let Ok(model) = compute::load_model(version) else { continue };
        if model.touch.is_some() {
            continue;
        }
        Spi::connect_mut(|client| {
            register_transition_tables(trigger);
            client
                .update(
                    &compute::allocate_inserted_sql(&schema, NEW_ROWS),
                    None,
                    &[
                        guarded.clone().into(),
                        version.into(),
                        model.channels.clone().into(),
                        model.weights.clone().into(),
                        correlation_id.into(),
                    ],
                )
                .map(|_| ())
        })
        .expect("allocating inserted events");
        allocated.extend(guarded.into_iter().map(|tenant| (tenant, version.to_owned())));
    }
    allocated
}

/// Records every inserted or updated event (its new version) for each of its tenant's
/// models, for the incremental runs of its window (src/compute.rs).
fn record_changes(trigger: &PgTrigger<'_>, models: &BTreeMap<pgrx::Uuid, Vec<String>>) {
    let schema = catalog::schema();
    let (model_tenants, model_versions): (Vec<pgrx::Uuid>, Vec<String>) =
        models.iter().flat_map(|(tenant, versions)| versions.iter().map(|v| (*tenant, v.clone()))).unzip();
    let inserted = matches!(trigger.op(), Ok(pgrx::trigger_support::PgTriggerOperation::Insert));
    let on_a_shard = trigger.relid().is_ok_and(|relid| relid != catalog::events_relid());
    Spi::connect_mut(|client| {
        register_transition_tables(trigger);
        if !on_a_shard {
            let sql = format!(
                "INSERT INTO {schema}.attribution_event_changes (tenant_id, model_version, occurred_at, event_id, inserted)
                 SELECT n.tenant_id, m.model_version, n.occurred_at, n.id, $2
                   FROM {NEW_ROWS} n
                   JOIN ROWS FROM (pg_catalog.unnest($1::uuid[]), pg_catalog.unnest($3::text[])) AS m(tenant_id, model_version)
                     ON m.tenant_id OPERATOR(pg_catalog.=) n.tenant_id"
            );
            return client
                .update(
                    &sql,
                    None,
                    &[model_tenants.clone().into(), inserted.into(), model_versions.clone().into()],
                )
                .map(|_| ());
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
               JOIN ROWS FROM (pg_catalog.unnest($6::uuid[]), pg_catalog.unnest($4::text[])) AS m(tenant_id, model_version)
                 ON m.tenant_id OPERATOR(pg_catalog.=) n.tenant_id"
        );
        let row = client.select(&read, Some(1), &[])?.first();
        let tenants = row.get::<Vec<pgrx::Uuid>>(1)?.unwrap_or_default();
        let occurred = row.get::<Vec<TimestampWithTimeZone>>(2)?.unwrap_or_default();
        let ids = row.get::<Vec<pgrx::Uuid>>(3)?.unwrap_or_default();
        client
            .update(
                &write,
                None,
                &[
                    tenants.into(),
                    occurred.into(),
                    ids.into(),
                    model_versions.into(),
                    inserted.into(),
                    model_tenants.into(),
                ],
            )
            .map(|_| ())
    })
    .expect("recording changed events");
}

/// Makes the trigger's transition tables visible to queries on the current SPI
/// connection (call it inside Spi::connect, before the queries that read them).
fn register_transition_tables(trigger: &PgTrigger<'_>) {
    // SAFETY: the trigger data is Postgres's and outlives the trigger call, and so the
    // SPI connection this registers it on.
    let rc =
        unsafe { pg_sys::SPI_register_trigger_data(std::ptr::from_ref(trigger.trigger_data()).cast_mut()) };
    assert!(rc >= 0, "SPI_register_trigger_data failed: {rc}");
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
        register_transition_tables(trigger);
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

/// The models each tenant's events are computed for: every active weighted model, and
/// the active multi-touch models the tenant turned on in attribution_tenant_models.
/// Tenants without any model are left out. Also: the tenants using a multi-touch model.
pub fn models_by_tenant(
    tenants: &BTreeSet<pgrx::Uuid>,
) -> (BTreeMap<pgrx::Uuid, Vec<String>>, BTreeSet<pgrx::Uuid>) {
    let current = catalog::sql_is_current();
    let stmt = catalog::statement(
        if current { "models_by_tenant" } else { "models_by_tenant_before_update" },
        &catalog::types(&[pg_sys::BuiltinOid::UUIDARRAYOID]),
        |schema| {
            // Before ALTER EXTENSION UPDATE there are only weighted models.
            let chosen = if current {
                format!(
                    "m.kind OPERATOR(pg_catalog.=) 'weighted'
                     OR EXISTS (SELECT FROM {schema}.attribution_tenant_models tm
                                 WHERE tm.tenant_id OPERATOR(pg_catalog.=) t.tenant_id
                                   AND tm.model_version OPERATOR(pg_catalog.=) m.model_version)"
                )
            } else {
                "true".to_owned()
            };
            format!(
                "SELECT t.tenant_id, pg_catalog.array_agg(m.model_version ORDER BY m.model_version),
                        pg_catalog.bool_or(m.kind OPERATOR(pg_catalog.<>) 'weighted')
                   FROM pg_catalog.unnest($1::uuid[]) AS t(tenant_id)
                   JOIN {schema}.attribution_models m ON m.active
                  WHERE {chosen}
                  GROUP BY t.tenant_id"
            )
        },
    );
    let tenants: Vec<pgrx::Uuid> = tenants.iter().copied().collect();
    Spi::connect(|client| {
        let mut models = BTreeMap::new();
        let mut multi_touch = BTreeSet::new();
        for row in client.select(&*stmt, None, &[tenants.into()]).expect("reading attribution_models") {
            let tenant = row.get::<pgrx::Uuid>(1).expect("tenant_id").expect("not null");
            models.insert(tenant, row.get::<Vec<String>>(2).expect("model_version").expect("not null"));
            if row.get::<bool>(3).expect("multi-touch").unwrap_or(false) {
                multi_touch.insert(tenant);
            }
        }
        (models, multi_touch)
    })
}

/// Buckets of a tenant's customers, for lock_customers.
const CUSTOMER_BUCKETS: i32 = 64;

/// Locks the (tenant, customer bucket) pairs of the rows in `table` (a transition table
/// of events or touchpoints) of `tenants`, in ascending order, until the transaction
/// ends. Conversions take them ROW EXCLUSIVE and touchpoints SHARE: neither waits for
/// its own kind, but a touchpoint statement waits for the uncommitted conversions of its
/// customers (and the other way round), so its late-data query, which takes a new
/// snapshot afterwards, sees every conversion that can commit before it; and a
/// conversion that commits after it is computed after it, with it.
fn lock_customers(trigger: &PgTrigger<'_>, table: &str, tenants: &BTreeSet<pgrx::Uuid>, mode: u32) {
    let customer = if table == NEW_ROWS {
        "coalesce(t.customer_key, t.raw_payload OPERATOR(pg_catalog.->>) 'customer_key')"
    } else {
        "t.customer_key"
    };
    let sql = format!(
        "SELECT DISTINCT t.tenant_id,
                pg_catalog.hashtext({customer}) OPERATOR(pg_catalog.&) {mask} AS bucket
           FROM {table} t
          WHERE {customer} IS NOT NULL AND t.tenant_id OPERATOR(pg_catalog.=) ANY ($1::uuid[])
          ORDER BY 1, 2",
        mask = CUSTOMER_BUCKETS - 1
    );
    let tenants: Vec<pgrx::Uuid> = tenants.iter().copied().collect();
    let buckets: Vec<(pgrx::Uuid, i32)> = Spi::connect(|client| {
        register_transition_tables(trigger);
        client
            .select(&sql, None, &[tenants.into()])
            .expect("reading the customers")
            .map(|row| {
                (
                    row.get::<pgrx::Uuid>(1).expect("tenant_id").expect("not null"),
                    row.get::<i32>(2).expect("bucket").unwrap_or(0),
                )
            })
            .collect()
    });
    for (tenant, bucket) in buckets {
        crate::compute::lock_object(&format!("{tenant}/customers/{bucket}"), mode);
    }
}

/// Models whose allocations a statement on attribution_models made stale: inserted
/// active, or updated so that their kind, channels, weights or parameters differ or they
/// became active. With them, the tenants they apply to: NULL for a weighted model (every
/// tenant), the tenants that turned a multi-touch model on otherwise.
const CHANGED_MODELS: &str = "SELECT n.model_version,
           CASE WHEN n.kind OPERATOR(pg_catalog.<>) 'weighted' THEN
                ARRAY(SELECT tm.tenant_id FROM @extschema@.attribution_tenant_models tm
                       WHERE tm.model_version OPERATOR(pg_catalog.=) n.model_version) END
      FROM attribution_new_models n
      LEFT JOIN attribution_old_models o ON o.model_version OPERATOR(pg_catalog.=) n.model_version
     WHERE n.active AND (o.model_version IS NULL
           OR (o.kind, o.channels, o.weights, o.params, o.active)
              IS DISTINCT FROM (n.kind, n.channels, n.weights, n.params, n.active))";

/// The statement-level trigger on `attribution_models`: a model that is added active, or
/// whose kind, channels, weights or parameters change (or that becomes active), gets a
/// full recompute of every window that holds events, for every tenant it applies to,
/// through the same enqueue as everything else. Its cost is one scan of
/// attribution_events (grouped by tenant and bucket) per such statement; the runs then
/// cost what full passes cost.
#[pg_trigger]
fn attribution_models_schedule<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, AttributionError> {
    if !on_own_table(trigger, "attribution_models") {
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
        CHANGED_MODELS.replace(
            "LEFT JOIN attribution_old_models o",
            "LEFT JOIN (SELECT * FROM attribution_new_models WHERE false) o",
        )
    }
    .replace("@extschema@", &catalog::schema());
    enqueue_full_passes(trigger, &changed_sql);
    Ok(None)
}

/// The statement-level trigger on `attribution_tenant_models`: a tenant that turns an
/// active model on gets a full pass of each of its windows that hold events for it.
/// (Turning a model off stops its scheduling; the allocations it made stay.)
#[pg_trigger]
fn attribution_tenant_models_schedule<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, AttributionError> {
    if !on_own_table(trigger, "attribution_tenant_models") {
        if trigger.relid().is_ok_and(|relid| crate::citus::is_shard_of(relid, "attribution_tenant_models")) {
            return Ok(None);
        }
        AttributionError::TriggerMisplaced("attribution_tenant_models_schedule").report();
    }
    if restoring() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT n.model_version, pg_catalog.array_agg(n.tenant_id)
           FROM attribution_new_tenant_models n
           JOIN {}.attribution_models m ON m.model_version OPERATOR(pg_catalog.=) n.model_version
          WHERE m.active
          GROUP BY n.model_version",
        catalog::schema()
    );
    enqueue_full_passes(trigger, &sql);
    Ok(None)
}

/// Whether the trigger fires on the extension's own `table` (these functions run as the
/// extension's owner, so they must not read another table's transition tables).
fn on_own_table(trigger: &PgTrigger<'_>, table: &str) -> bool {
    let relid: Option<pg_sys::Oid> = Spi::get_one(&format!(
        "SELECT pg_catalog.to_regclass('{}.{table}')::pg_catalog.oid",
        catalog::schema()
    ))
    .expect("looking up the extension's table");
    relid.is_some() && trigger.relid().ok() == relid
}

/// Enqueues a full pass of every window holding events, for each model `targets_sql`
/// (run with the trigger's transition tables) returns, for the tenants it returns with it
/// (NULL: every tenant).
fn enqueue_full_passes(trigger: &PgTrigger<'_>, targets_sql: &str) {
    let targets = Spi::connect(|client| {
        register_transition_tables(trigger);
        client
            .select(targets_sql, None, &[])
            .expect("reading the changed models")
            .map(|row| {
                (
                    row.get::<String>(1).expect("model_version").expect("not null"),
                    row.get::<Vec<pgrx::Uuid>>(2).expect("tenants"),
                )
            })
            .collect::<Vec<_>>()
    });
    enqueue_full(&targets);
}

/// Enqueues a full pass of every window holding events, for each (model, tenants) of
/// `targets` (tenants None: every tenant). Runs as the extension's owner (the callers
/// are SECURITY DEFINER) and reads every tenant's events, grouped by tenant and bucket.
pub fn enqueue_full(targets: &[(String, Option<Vec<pgrx::Uuid>>)]) {
    if targets.is_empty() {
        return;
    }
    let width = gucs::window_width_seconds();
    let schema = catalog::schema();
    let correlation_id = super::correlation_id_or_new(gucs::correlation_id().as_deref()).or_report();
    // Only the tenants some target names, unless one applies to every tenant.
    let tenants: Option<Vec<pgrx::Uuid>> = targets
        .iter()
        .map(|(_, tenants)| tenants.clone())
        .collect::<Option<Vec<_>>>()
        .map(|lists| lists.into_iter().flatten().collect());
    let sql = format!(
        "SELECT DISTINCT tenant_id, {BUCKET} FROM {schema}.attribution_events
          WHERE $2::uuid[] IS NULL OR tenant_id OPERATOR(pg_catalog.=) ANY ($2::uuid[])"
    );
    let buckets = Spi::connect(|client| {
        let mut buckets = BTreeSet::new();
        for row in
            client.select(&sql, None, &[width.into(), tenants.into()]).expect("reading the event buckets")
        {
            let tenant: pgrx::Uuid = row.get(1).expect("tenant_id").expect("tenant_id is NOT NULL");
            let start: Option<TimestampWithTimeZone> = row.get(2).expect("bucket");
            let start = start.ok_or(WindowError::BeyondRange)?;
            buckets.insert((tenant, Window::schedulable_bucket(start.into(), width)?));
        }
        Ok::<_, AttributionError>(buckets)
    })
    .or_report();
    let requests: Vec<JobRequest> = buckets
        .iter()
        .flat_map(|(tenant_id, window)| {
            targets.iter().filter(|(_, tenants)| tenants.as_ref().is_none_or(|t| t.contains(tenant_id))).map(
                |(model_version, _)| JobRequest {
                    tenant_id: *tenant_id,
                    window: *window,
                    model_version: model_version.clone(),
                    correlation_id: correlation_id.clone(),
                    full: true,
                },
            )
        })
        .collect();
    queue::enqueue(&requests);
}

/// What a touchpoints statement asks for.
enum Late {
    /// Full passes of these models' windows for these tenants.
    Full(Vec<(String, Option<Vec<pgrx::Uuid>>)>),
    /// Incremental runs of these (tenant, model, window start), the changes recorded.
    Changed(Vec<(pgrx::Uuid, String, Option<TimestampWithTimeZone>)>),
}

/// The touchpoints a statement inserted, updated (old and new versions) or deleted, as
/// (tenant, customer, time) columns.
struct Touched {
    tenants: Vec<pgrx::Uuid>,
    customers: Vec<String>,
    at: Vec<TimestampWithTimeZone>,
}

/// The conversions a touchpoint of `customer` at `occurred_at` can change under a
/// model with `lookback`: same customer, at or after it, within the lookback. A join
/// condition on attribution_events e, t (customer_key, occurred_at) and m (lookback).
const LATE_HIT: &str = "pg_catalog.length(coalesce(e.customer_key, e.raw_payload OPERATOR(pg_catalog.->>) 'customer_key')) OPERATOR(pg_catalog.<=) 200
            AND coalesce(e.customer_key, e.raw_payload OPERATOR(pg_catalog.->>) 'customer_key') OPERATOR(pg_catalog.=) t.customer_key
            AND e.occurred_at OPERATOR(pg_catalog.>=) t.occurred_at
            AND (m.lookback IS NULL
                 OR e.occurred_at OPERATOR(pg_catalog.<=)
                    (t.occurred_at OPERATOR(pg_catalog.+)
                     pg_catalog.make_interval(secs => m.lookback::float8 OPERATOR(pg_catalog./) 1000000)))";

/// Records, for each multi-touch model `tenant` uses (its entries in `tenants`, `models`
/// and `lookbacks`, in step), the conversions its touched touchpoints can change
/// (LATE_HIT). Returns the (tenant, model, window start) of the recorded changes.
///
/// One tenant at a time, each statement naming it: under Citus that routes them to the
/// tenant's co-located shards on this node (the conversions are found by one statement
/// and recorded by another, since Citus plans the CTEs of one statement apart).
fn record_late_changes_of(
    touched: &Touched,
    tenant: pgrx::Uuid,
    tenants: &[pgrx::Uuid],
    models: &[String],
    lookbacks: &[Option<i64>],
    width: i64,
) -> Vec<(pgrx::Uuid, String, Option<TimestampWithTimeZone>)> {
    let schema = catalog::schema();
    let pick = |t: &pgrx::Uuid| *t == tenant;
    let (customers, at): (Vec<String>, Vec<TimestampWithTimeZone>) = touched
        .tenants
        .iter()
        .zip(touched.customers.iter().zip(&touched.at))
        .filter(|(t, _)| pick(t))
        .map(|(_, (c, a))| (c.clone(), *a))
        .unzip();
    let (tenant_models, tenant_lookbacks): (Vec<String>, Vec<Option<i64>>) = tenants
        .iter()
        .zip(models.iter().zip(lookbacks))
        .filter(|(t, _)| pick(t))
        .map(|(_, (m, l))| (m.clone(), *l))
        .unzip();
    let find = format!(
        "SELECT hit.model_version, hit.occurred_at, hit.id, {BUCKET}
           FROM (SELECT DISTINCT m.model_version, e.occurred_at, e.id
                   FROM ROWS FROM (pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::timestamptz[]))
                        AS t(customer_key, occurred_at)
                  CROSS JOIN ROWS FROM (pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::int8[]))
                        AS m(model_version, lookback)
                   JOIN {schema}.attribution_events e
                     ON e.tenant_id OPERATOR(pg_catalog.=) $2::uuid AND {LATE_HIT}) AS hit"
    );
    let record = format!(
        "INSERT INTO {schema}.attribution_event_changes (tenant_id, model_version, occurred_at, event_id)
         SELECT $1::uuid, x.model_version, x.occurred_at, x.event_id
           FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::timestamptz[]),
                           pg_catalog.unnest($4::uuid[])) AS x(model_version, occurred_at, event_id)"
    );
    Spi::connect_mut(|client| {
        let mut hit_models = Vec::new();
        let mut hit_at = Vec::new();
        let mut hit_ids = Vec::new();
        let mut jobs = BTreeMap::new();
        for row in client.select(
            &find,
            None,
            &[
                width.into(),
                tenant.into(),
                customers.into(),
                at.into(),
                tenant_models.into(),
                tenant_lookbacks.into(),
            ],
        )? {
            let model: String = row.get(1)?.expect("model_version");
            hit_at.push(row.get::<TimestampWithTimeZone>(2)?.expect("occurred_at"));
            hit_ids.push(row.get::<pgrx::Uuid>(3)?.expect("id"));
            let start: Option<TimestampWithTimeZone> = row.get(4)?;
            jobs.insert((model.clone(), start.map(i64::from)), start);
            hit_models.push(model);
        }
        if !hit_ids.is_empty() {
            client.update(
                &record,
                None,
                &[tenant.into(), hit_models.into(), hit_at.into(), hit_ids.into()],
            )?;
        }
        Ok::<_, pgrx::spi::SpiError>(
            jobs.into_iter().map(|((model, _), start)| (tenant, model, start)).collect(),
        )
    })
    .expect("recording the conversions late touchpoints change")
}

/// Transition table names of the touchpoints trigger (sql/finalize.sql).
const NEW_TOUCHPOINTS: &str = "attribution_new_touchpoints";
const OLD_TOUCHPOINTS: &str = "attribution_old_touchpoints";

/// The statement-level trigger on `attribution_touchpoints`: late data. A touchpoint
/// inserted, updated (its old and new versions) or deleted changes the conversions of the
/// same customer at or after it, within the lookback of each multi-touch model the tenant
/// uses. Those conversions are recorded as changed for that model, and their windows
/// enqueued, so the incremental runs re-allocate exactly them.
#[pg_trigger]
fn attribution_touchpoints_schedule<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, AttributionError> {
    // Under Citus the trigger fires on the shards of the touchpoints, on the node that
    // holds them (and the tenants' events, changes and jobs: they are co-located).
    let on_a_shard = !on_own_table(trigger, "attribution_touchpoints");
    if on_a_shard
        && !trigger.relid().is_ok_and(|relid| crate::citus::is_shard_of(relid, "attribution_touchpoints"))
    {
        AttributionError::TriggerMisplaced("attribution_touchpoints_schedule").report();
    }
    if restoring() {
        return Ok(None);
    }
    let schema = catalog::schema();
    let width = gucs::window_width_seconds();
    let correlation_id = super::correlation_id_or_new(gucs::correlation_id().as_deref()).or_report();
    let mut sources = Vec::new();
    if trigger.new_transition_table_name().ok().flatten().is_some() {
        sources.push(NEW_TOUCHPOINTS);
    }
    if trigger.old_transition_table_name().ok().flatten().is_some() {
        sources.push(OLD_TOUCHPOINTS);
    }
    let touched = sources
        .iter()
        .map(|t| format!("SELECT tenant_id, customer_key, occurred_at FROM {t}"))
        .collect::<Vec<_>>()
        .join(" UNION ");
    // The touched (tenant, customer, time)s, read first: under Citus the statements on
    // the distributed tables below are planned apart from this one, where the
    // transition tables cannot be seen.
    let touched_rows = Spi::connect(|client| {
        register_transition_tables(trigger);
        let row = client
            .select(
                &format!(
                    "SELECT pg_catalog.array_agg(t.tenant_id), pg_catalog.array_agg(t.customer_key),
                            pg_catalog.array_agg(t.occurred_at)
                       FROM ({touched}) AS t"
                ),
                Some(1),
                &[],
            )?
            .first();
        Ok::<_, pgrx::spi::SpiError>(Touched {
            tenants: row.get::<Vec<pgrx::Uuid>>(1)?.unwrap_or_default(),
            customers: row.get::<Vec<String>>(2)?.unwrap_or_default(),
            at: row.get::<Vec<TimestampWithTimeZone>>(3)?.unwrap_or_default(),
        })
    })
    .expect("reading the touched touchpoints");
    let touched_tenants: Vec<pgrx::Uuid> =
        touched_rows.tenants.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let found = Spi::connect(|client| {
        // The multi-touch models of the tenants touched, with their lookbacks.
        let models_sql = format!(
            "SELECT tm.tenant_id, m.model_version, m.kind, m.params::text
               FROM {schema}.attribution_tenant_models tm
               JOIN {schema}.attribution_models m ON m.model_version OPERATOR(pg_catalog.=) tm.model_version
              WHERE m.active AND m.kind OPERATOR(pg_catalog.<>) 'weighted'
                AND tm.tenant_id OPERATOR(pg_catalog.=) ANY ($1::uuid[])"
        );
        let mut tenants = Vec::new();
        let mut models = Vec::new();
        let mut lookbacks: Vec<Option<i64>> = Vec::new();
        for row in client.select(&models_sql, None, &[touched_tenants.clone().into()])? {
            let kind: String = row.get(3)?.expect("kind");
            let params: String = row.get(4)?.expect("params");
            tenants.push(row.get::<pgrx::Uuid>(1)?.expect("tenant_id"));
            models.push(row.get::<String>(2)?.expect("model_version"));
            lookbacks.push(crate::engine::model::parse(&kind, &params).or_report().path.lookback);
        }
        Ok::<_, pgrx::spi::SpiError>((tenants, models, lookbacks))
    })
    .expect("reading the tenants' multi-touch models");
    let (tenants, models, lookbacks) = found;
    if models.is_empty() {
        return Ok(None);
    }
    // Wait for uncommitted conversions of these customers (lock_customers), then look.
    let using: BTreeSet<pgrx::Uuid> = tenants.iter().copied().collect();
    if sources.contains(&NEW_TOUCHPOINTS) {
        lock_customers(trigger, NEW_TOUCHPOINTS, &using, pg_sys::ShareLock);
    }
    if sources.contains(&OLD_TOUCHPOINTS) {
        lock_customers(trigger, OLD_TOUCHPOINTS, &using, pg_sys::ShareLock);
    }
    // A large statement asks for full passes of its tenants' windows instead, as a bulk
    // load of events does: recording each conversion it reaches would cost a join of its
    // touchpoints with their customers' conversions and a change-log row per conversion
    // and model.
    let jobs = if touched_rows.tenants.len() as i64 > gucs::incremental_max_rows() {
        let mut targets: BTreeMap<String, Vec<pgrx::Uuid>> = BTreeMap::new();
        for (tenant, model) in tenants.iter().zip(&models) {
            targets.entry(model.clone()).or_default().push(*tenant);
        }
        Late::Full(targets.into_iter().map(|(m, t)| (m, Some(t))).collect())
    } else {
        let mut jobs = Vec::new();
        for tenant in tenants.iter().copied().collect::<BTreeSet<_>>() {
            jobs.extend(record_late_changes_of(&touched_rows, tenant, &tenants, &models, &lookbacks, width));
        }
        Late::Changed(jobs)
    };
    let jobs = match jobs {
        Late::Full(targets) => {
            // One tenant at a time, so that Citus routes each read of the events.
            for (model, tenants) in targets {
                for tenant in tenants.unwrap_or_default() {
                    enqueue_full(&[(model.clone(), Some(vec![tenant]))]);
                }
            }
            return Ok(None);
        }
        Late::Changed(jobs) => jobs,
    };
    let requests = jobs
        .into_iter()
        .map(|(tenant_id, model_version, start)| {
            let start = start.ok_or(WindowError::BeyondRange).or_report();
            Ok(JobRequest {
                tenant_id,
                window: Window::schedulable_bucket(start.into(), width)?,
                model_version,
                correlation_id: correlation_id.clone(),
                full: false,
            })
        })
        .collect::<Result<Vec<_>, AttributionError>>()
        .or_report();
    queue::enqueue(&requests);
    Ok(None)
}
