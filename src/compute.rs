//! Writing a window's allocations: one set-based statement per (tenant, window, model).
//! Shared by `compute_allocations()` and the background worker; the caller has already
//! validated the window and set the tenant context.

use crate::catalog;
use crate::convert::to_timestamptz;
use crate::engine::window::Window;
use crate::errors::AttributionError;
use pgrx::pg_sys::BuiltinOid::*;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;

/// Whether a writer waits for another writer of an overlapping window.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Wait, as a client calling compute_allocations() expects.
    Wait,
    /// Fail at once with lock_not_available (55P03). The workers use this: they put the
    /// job back without spending an attempt and run other tenants' jobs meanwhile, so a
    /// session that keeps a window busy (say, compute_allocations() in a transaction it
    /// leaves open) cannot tie up a worker.
    NoWait,
}

/// How much of the window a computation reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pass {
    /// Every event of the window (and allocations of channels a changed model dropped).
    Full,
    /// A full pass over a window that has never been computed: written with plain
    /// inserts, in a subtransaction, which saves the speculative insertion of an upsert
    /// (about a third of a large window's cost). If an allocation of one of its events
    /// exists after all (another window covering the same days computed it, or
    /// compute_allocations() did), the subtransaction is rolled back and the pass runs
    /// again as Full.
    First,
    /// Only the events recorded in attribution_event_changes for the window and model
    /// since the window was last computed at the given time (Postgres microseconds): its
    /// cost follows the change, not the window, and a window with no recorded change
    /// completes without reading its events. Full after all if the model's channels or
    /// weights changed since then.
    IncrementalSince(i64),
}

/// What a computation did.
pub struct Computed {
    /// Events computed: all of the window's in a full pass, the changed ones otherwise.
    pub events: i64,
    /// Allocation rows inserted, changed or removed.
    pub written: i64,
    /// Whether the pass was incremental.
    pub incremental: bool,
}

/// Computes the window and returns what it did. Either
/// pass consumes (deletes) the window's recorded changes it has seen, in the same
/// statement, so a change committed meanwhile is left for the next run.
pub fn compute_window(
    tenant_id: pgrx::Uuid,
    window: Window,
    model_version: &str,
    correlation_id: &str,
    wait: LockWait,
    pass: Pass,
) -> Result<Computed, AttributionError> {
    let model = load_model(model_version)?;
    lock_window(tenant_id, model_version, window, wait);
    let incremental = match pass {
        Pass::Full | Pass::First => false,
        Pass::IncrementalSince(computed_at) => model.changed_at.is_none_or(|changed| changed < computed_at),
    };
    // Before ALTER EXTENSION UPDATE from a version without attribution_event_changes
    // (only compute_allocations() runs then: the workers wait), there is nothing to
    // consume, and every pass is full.
    let current = catalog::sql_is_current();
    let incremental = incremental && current;

    let variant = match (incremental, current, pass) {
        (_, false, _) => Variant::BeforeUpdate,
        (true, true, _) => Variant::Incremental,
        (false, true, Pass::First) => Variant::First,
        (false, true, _) => Variant::Full,
    };
    let args = Args { tenant_id, window, model_version, model: &model, correlation_id };
    let (events, written) = match variant {
        // Plain inserts where the allocations cannot exist yet, in a subtransaction that
        // is rolled back on unique_violation (one exists after all): then the same pass
        // runs again as an upsert.
        Variant::First => in_subtransaction(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, || {
            run_statement(Variant::First, &args)
        })
        .unwrap_or_else(|| run_statement(Variant::Full, &args)),
        Variant::Incremental if only_inserts_recorded(&args) => {
            in_subtransaction(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, || {
                run_statement(Variant::IncrementalNew, &args)
            })
            .unwrap_or_else(|| run_statement(Variant::Incremental, &args))
        }
        variant => run_statement(variant, &args),
    };
    Ok(Computed { events, written, incremental })
}

/// The statements that compute a window.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Full,
    First,
    Incremental,
    /// Incremental, inserting without the conflict check: every change recorded for the
    /// window is an INSERT, so its events cannot have allocations yet (checked just
    /// before; a change committed in between falls back to Incremental).
    IncrementalNew,
    /// Full, with the installed SQL of a version without the change log.
    BeforeUpdate,
}

struct Args<'a> {
    tenant_id: pgrx::Uuid,
    window: Window,
    model_version: &'a str,
    model: &'a Model,
    correlation_id: &'a str,
}

/// Whether every change recorded for the window and model is an INSERT (and there is
/// at least one), so that an incremental run can insert without the conflict check.
fn only_inserts_recorded(args: &Args<'_>) -> bool {
    let stmt = catalog::statement(
        "only_inserts_recorded",
        &catalog::types(&[UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID]),
        |schema| {
            format!(
                "SELECT bool_and(c.inserted) FROM {schema}.attribution_event_changes c
                  WHERE c.tenant_id = $1 AND c.model_version = $4
                    AND c.occurred_at >= $2 AND c.occurred_at < $3"
            )
        },
    );
    Spi::connect(|client| {
        client
            .select(
                &*stmt,
                Some(1),
                &[
                    args.tenant_id.into(),
                    to_timestamptz(args.window.start).into(),
                    to_timestamptz(args.window.end).into(),
                    args.model_version.into(),
                ],
            )
            .and_then(|rows| rows.first().get::<bool>(1))
    })
    .expect("reading the recorded changes")
    .unwrap_or(false)
}

/// Runs one computation statement; returns (events computed, allocation rows written).
fn run_statement(variant: Variant, args: &Args<'_>) -> (i64, i64) {
    let name = match variant {
        Variant::Full => "compute_window_full",
        Variant::First => "compute_window_first",
        Variant::Incremental => "compute_window_incremental",
        Variant::IncrementalNew => "compute_window_incremental_new",
        Variant::BeforeUpdate => "compute_window_before_update",
    };
    let stmt = catalog::statement(
        name,
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
        |schema| statement_sql(variant, schema),
    );
    Spi::connect_mut(|client| {
        let row = client
            .update(
                &*stmt,
                Some(1),
                &[
                    args.tenant_id.into(),
                    to_timestamptz(args.window.start).into(),
                    to_timestamptz(args.window.end).into(),
                    args.model_version.into(),
                    args.model.channels.clone().into(),
                    args.model.weights.clone().into(),
                    args.correlation_id.into(),
                    args.model.channels_ever_changed.into(),
                ],
            )
            .expect("computing allocations")
            .first();
        (
            row.get::<i64>(1).expect("event_count").unwrap_or(0),
            row.get::<i64>(2).expect("allocation_count").unwrap_or(0),
        )
    })
}

/// The SQL of a computation statement. Parameters: $1 tenant, $2 and $3 the window, $4
/// the model version, $5 and $6 its channels and weights, $7 the correlation id, $8
/// whether the model's channel list ever changed.
///
/// Every variant reads the events it allocates FOR KEY SHARE: the allocations' foreign
/// key does not check inserts row by row (see sql/schema.sql), and the lock is what
/// keeps an event from being deleted, or its key changed, between this read and the
/// commit. An event deleted by a transaction that commits first is skipped (read
/// committed re-checks the row), so no allocation is ever left without its event.
fn statement_sql(variant: Variant, schema: &str) -> String {
    // Upsert only what differs (no dead tuples, no updated_at churn on a re-run), and
    // drop allocations for channels the model no longer has. Allocations of deleted
    // events go with them through the foreign key.
    let full_source = format!("{schema}.attribution_events e");
    let full_filter = "e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3";
    let full_count = format!(
        "SELECT count(*) FROM {schema}.attribution_events e
          WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3"
    );
    // Only for models whose channel list has ever changed ($8): nothing else can have
    // allocations for a channel it no longer gives.
    let full_removal = format!(
        "DELETE FROM {schema}.attribution_allocations a
          USING {schema}.attribution_events e
          WHERE $8
            AND a.tenant_id = $1 AND a.model_version = $4
            AND e.tenant_id = a.tenant_id AND e.id = a.event_id
            AND e.occurred_at >= $2 AND e.occurred_at < $3
            AND a.channel <> ALL ($5::text[])
         RETURNING 1"
    );
    let (events_source, events_filter, event_count, removal) = match variant {
        Variant::Full | Variant::First | Variant::BeforeUpdate => {
            (full_source, full_filter, full_count, full_removal)
        }
        Variant::Incremental | Variant::IncrementalNew => (
            // One primary-key lookup per changed event; an event that moved out of the
            // window since is computed by its new window's run. The window is checked
            // above the lookup (OFFSET 0 keeps the planner from pushing it down), so
            // that no plan can look the events up through the (tenant_id, occurred_at)
            // index instead: one scan of the whole window per changed event, which a
            // generic plan made while the table was small chose (20,000 changes of a new
            // day took 52 s instead of 0.3 s).
            format!(
                "(SELECT DISTINCT c.event_id FROM consumed c) AS ch
                  CROSS JOIN LATERAL (SELECT * FROM {schema}.attribution_events e
                                       WHERE e.tenant_id = $1 AND e.id = ch.event_id
                                      OFFSET 0 FOR KEY SHARE) AS e"
            ),
            "e.occurred_at >= $2 AND e.occurred_at < $3",
            "SELECT count(DISTINCT c.event_id) FROM consumed c".to_owned(),
            // A run is incremental only while the model has not changed since the
            // window was last computed, so only a changed event can still have an
            // allocation for a channel the model dropped: one that another window
            // computed before the change and that moved here since.
            format!(
                "DELETE FROM {schema}.attribution_allocations a
                  WHERE $8
                    AND a.tenant_id = $1 AND a.model_version = $4
                    AND a.event_id IN (SELECT c.event_id FROM consumed c)
                    AND a.channel <> ALL ($5::text[])
                 RETURNING 1"
            ),
        ),
    };
    let lock = match variant {
        Variant::Incremental | Variant::IncrementalNew => "",
        _ => "FOR KEY SHARE OF e",
    };
    let consume = match variant {
        Variant::BeforeUpdate => "SELECT NULL::uuid AS event_id WHERE false".to_owned(),
        _ => format!(
            "DELETE FROM {schema}.attribution_event_changes c
              WHERE c.tenant_id = $1 AND c.model_version = $4
                AND c.occurred_at >= $2 AND c.occurred_at < $3
             RETURNING c.event_id"
        ),
    };
    let computed = format!(
        "SELECT e.tenant_id, e.id AS event_id, s.channel, s.ratio, s.cents
           FROM model m
          CROSS JOIN {events_source}
          CROSS JOIN LATERAL unnest(m.channels, m.ratios,
                                    {schema}.attribution_split_cents(e.revenue_cents, m.weights))
                     AS s(channel, ratio, cents)
          WHERE {events_filter}
          {lock}"
    );
    // The computed rows stream from the events into the insert (a subquery, not a CTE,
    // which would materialise them).
    let on_conflict = match variant {
        Variant::First | Variant::IncrementalNew => "",
        _ => {
            "ON CONFLICT (tenant_id, event_id, model_version, channel) DO UPDATE
                SET allocation_ratio = excluded.allocation_ratio,
                    allocated_revenue_cents = excluded.allocated_revenue_cents,
                    correlation_id = excluded.correlation_id,
                    -- the default, now(): Citus refuses stable functions here
                    updated_at = excluded.updated_at
              WHERE (a.allocation_ratio, a.allocated_revenue_cents)
                    IS DISTINCT FROM (excluded.allocation_ratio, excluded.allocated_revenue_cents)"
        }
    };
    format!(
        "WITH model AS MATERIALIZED (
             SELECT $5::text[] AS channels, $6::int[] AS weights,
                    ARRAY(SELECT round(u.w::numeric / (SELECT sum(x) FROM unnest($6::int[]) x), 10)
                            FROM unnest($6::int[]) WITH ORDINALITY AS u(w, ord) ORDER BY u.ord) AS ratios
         ),
         consumed AS (
             {consume}
         ),
         upserted AS (
             INSERT INTO {schema}.attribution_allocations AS a
                    (tenant_id, event_id, model_version, channel, allocation_ratio,
                     allocated_revenue_cents, correlation_id)
             SELECT tenant_id, event_id, $4, channel, ratio, cents, $7 FROM ({computed}) AS computed
             {on_conflict}
             RETURNING 1
         ),
         removed AS (
             {removal}
         )
         SELECT ({event_count}),
                (SELECT count(*) FROM upserted) + (SELECT count(*) FROM removed)"
    )
}

/// Runs `body` in a subtransaction. Some(result) if it succeeded (the subtransaction is
/// kept); None if it failed with `code` (the subtransaction is rolled back, so nothing
/// it wrote remains). Any other error rolls the subtransaction back and propagates.
fn in_subtransaction<R>(code: PgSqlErrorCode, body: impl FnOnce() -> R) -> Option<R> {
    // SAFETY: what PL/pgSQL does around a block with an EXCEPTION clause: the memory
    // context and resource owner are restored whichever way the subtransaction ends.
    let (context, owner) = unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        (context, owner)
    };
    let restore = move || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    PgTryBuilder::new(AssertUnwindSafe(|| {
        let result = body();
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        restore();
        Some(result)
    }))
    .catch_when(code, |_| {
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        None
    })
    .catch_others(|e| {
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        e.rethrow()
    })
    .execute()
}

/// Serialises writers whose windows overlap, for one tenant and model, so that the
/// workers and direct calls never deadlock or interleave on the same allocation rows,
/// while different days of a tenant still compute in parallel. Each writer holds the
/// tenant/model lock shared and every UTC day its window touches exclusively, in
/// ascending order; a window of more than MAX_GRANULE_LOCKS days holds the tenant/model
/// lock exclusively instead.
///
/// These are heavyweight object locks whose class id is the extension's own OID, not
/// advisory locks: any session can take any advisory lock (and read the keys in
/// pg_locks), so a hostile session could hold a tenant's key and stall its jobs. No SQL
/// command takes an object lock of this class. They are transaction-scoped, show in
/// pg_locks as locktype 'object', and honour lock_timeout and the deadlock detector.
fn lock_window(tenant_id: pgrx::Uuid, model_version: &str, window: Window, wait: LockWait) {
    let class = catalog::extension_oid();
    let key = format!("{tenant_id}/{model_version}");
    let take = |key: &str, kind: u16, mode: u32| {
        let (objid, subid) = lock_tag(key, kind);
        let mode = mode as pg_sys::LOCKMODE;
        // SAFETY: transaction-scoped locks; an ERROR (timeout, deadlock) unwinds as usual.
        if wait == LockWait::Wait {
            unsafe { pg_sys::LockDatabaseObject(class, objid.into(), subid, mode) };
        } else if !unsafe { pg_sys::ConditionalLockDatabaseObject(class, objid.into(), subid, mode) } {
            ereport!(
                PgLogLevel::ERROR,
                PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                format!("window of tenant {tenant_id} and model {model_version} is being computed by another transaction")
            );
        }
    };
    match window.lock_granules() {
        Some(days) => {
            take(&key, TENANT_LOCK, pg_sys::ShareLock);
            for day in days {
                take(&format!("{key}/{day}"), DAY_LOCK, pg_sys::ExclusiveLock);
            }
        }
        None => take(&key, TENANT_LOCK, pg_sys::ExclusiveLock),
    }
}

const TENANT_LOCK: u16 = 0;
const DAY_LOCK: u16 = 1;

/// The object-lock tag (objid, objsubid) of a lock key: 32 bits of FNV-1a hash and, in
/// the sub-id, the lock kind and 15 more bits of it. A collision only makes two unrelated
/// windows wait for each other now and then.
fn lock_tag(key: &str, kind: u16) -> (u32, u16) {
    let hash =
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash as u32, (((hash >> 32) as u16) & 0x7fff) << 1 | kind)
}

/// A model as the computation needs it.
pub struct Model {
    pub channels: Vec<String>,
    pub weights: Vec<i32>,
    /// Whether the channel list was ever changed, so that allocations for channels the
    /// model no longer gives may exist.
    pub channels_ever_changed: bool,
    /// When the channels or weights last changed (Postgres microseconds), if ever.
    pub changed_at: Option<i64>,
}

/// The model, or UnknownModel.
pub fn load_model(model_version: &str) -> Result<Model, AttributionError> {
    // 0.1.0's models have no changed_at (before ALTER EXTENSION UPDATE every pass is full).
    let current = catalog::sql_is_current();
    let name = if current { "load_model" } else { "load_model_before_update" };
    let stmt = catalog::statement(name, &catalog::types(&[TEXTOID]), |schema| {
        let changed_at = if current { "changed_at" } else { "NULL::timestamptz" };
        format!(
            "SELECT channels, weights, channels_changed_at IS NOT NULL, {changed_at}
               FROM {schema}.attribution_models WHERE model_version = $1"
        )
    });
    let row = Spi::connect(|client| {
        let row = client.select(&*stmt, Some(1), &[model_version.into()])?.first();
        let (channels, weights, ever) = row.get_three::<Vec<String>, Vec<i32>, bool>()?;
        let changed_at = row.get::<TimestampWithTimeZone>(4)?;
        Ok::<_, pgrx::spi::SpiError>((channels, weights, ever, changed_at))
    });
    match row {
        Ok((Some(channels), Some(weights), Some(channels_ever_changed), changed_at)) => {
            crate::engine::allocation::validate_weights(&weights).map_err(|source| {
                AttributionError::ModelWeights { model_version: model_version.to_owned(), source }
            })?;
            Ok(Model { channels, weights, channels_ever_changed, changed_at: changed_at.map(i64::from) })
        }
        Ok(_) | Err(pgrx::spi::SpiError::InvalidPosition) => {
            Err(AttributionError::UnknownModel(model_version.to_owned()))
        }
        Err(e) => panic!("reading attribution_models: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::lock_tag;

    #[test]
    fn lock_tags_separate_kinds_and_keys() {
        let t = "aaaaaaaa-0000-4000-8000-000000000001/1.0.0";
        assert_ne!(lock_tag(t, super::TENANT_LOCK), lock_tag(t, super::DAY_LOCK));
        assert_eq!(lock_tag(t, super::DAY_LOCK).1 & 1, 1);
        assert_ne!(lock_tag(&format!("{t}/20000"), 1), lock_tag(&format!("{t}/20001"), 1));
        assert_eq!(lock_tag(t, 0), lock_tag(t, 0));
    }
}
