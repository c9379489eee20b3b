//! Writing a window's allocations: one set-based statement per (tenant, window, model).
//! Shared by `compute_allocations()` and the background worker; the caller has already
//! validated the window and set the tenant context.

use crate::catalog;
use crate::convert::to_timestamptz;
use crate::engine::window::Window;
use crate::errors::AttributionError;
use pgrx::pg_sys::panic::CaughtError;
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
    let incremental = match pass {
        Pass::Full | Pass::First => false,
        Pass::IncrementalSince(computed_at) => model.changed_at.is_none_or(|changed| changed < computed_at),
    };
    // Before ALTER EXTENSION UPDATE from a version without attribution_event_changes
    // (only compute_allocations() runs then: the workers wait), there is nothing to
    // consume, and every pass is full.
    let current = catalog::sql_is_current();
    let incremental = incremental && current;
    let locks = WindowLocks { tenant_id, model_version, window, wait };
    if let Some(touch) = &model.touch {
        // Multi-touch: one statement, full or incremental, holding the days exclusively.
        // A data-driven model allocates with the tenant's latest fit (55000 without one).
        let fit_id =
            if touch.data_driven { Some(crate::fits::latest(tenant_id, model_version)?) } else { None };
        let touch = &TouchKind { fit_id, ..touch.clone() };
        locks.take_days(pg_sys::ExclusiveLock);
        let args = Args { tenant_id, window, model_version, model: &model, correlation_id };
        // On Citus the list is not kept: a first computation always clears.
        let allocated_before = crate::citus::distributed() || mark_touch_allocated(&args);
        let (events, written) = if pass == Pass::First {
            // As Variant::First: plain inserts, or the upsert if an allocation exists.
            // Unlike a weighted model's, a multi-touch model's channels differ from one
            // computation to the next, so an allocation made elsewhere (the event was in
            // another window then, or compute_allocations() computed it) would not
            // conflict: the window's events lose theirs first, unless the model never
            // had an allocation for the tenant.
            in_subtransaction(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, || {
                let removed = if allocated_before {
                    run_touch_statement(&args, touch, TouchVariant::ClearFirst).1
                } else {
                    0
                };
                let (events, written) = run_touch_statement(&args, touch, TouchVariant::First);
                (events, written + removed)
            })
            .unwrap_or_else(|| run_touch_statement(&args, touch, TouchVariant::Full))
        } else if incremental {
            run_touch_statement(&args, touch, TouchVariant::Incremental)
        } else {
            run_touch_statement(&args, touch, TouchVariant::Full)
        };
        return Ok(Computed { events, written, incremental });
    }
    // A full pass excludes every other writer of its days; so does an incremental run,
    // except that of a hot window, which shares its days and excludes the others slice
    // by slice (see Slices).
    if !incremental {
        // The insert guards first: an INSERT that holds one and then calls
        // compute_allocations() for the same days must not find them taken by us.
        locks.exclude_inserts();
        locks.take_days(pg_sys::ExclusiveLock);
    }

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
            run_statement(Variant::First, &args, Slices::All)
        })
        .unwrap_or_else(|| run_statement(Variant::Full, &args, Slices::All)),
        Variant::Incremental => {
            let recorded = recorded_changes(&args, Slices::All);
            if recorded.count <= SPLIT_ABOVE || !sliceable(window) {
                // The days exclusively, as a full pass. If a helper of this window's last
                // hot run still computes a slice, share the days and wait for the
                // slices instead: only runs hold them, and briefly.
                if !locks.try_days(pg_sys::ExclusiveLock) {
                    locks.take_days(pg_sys::ShareLock);
                    for slice in 0..SLICES {
                        locks.wait_for_slice(slice);
                    }
                }
                run_incremental(&args, Slices::All, recorded.only_inserts)
            } else {
                // A hot window: slice by slice, and an idle worker helps with the slices
                // this run has not reached yet (crate::worker::jobs::help). Slices it
                // finds busy it computes last, once their helper is done (which leaves
                // them empty or with what was recorded since).
                locks.take_days(pg_sys::ShareLock);
                // (On Citus each node's workers drain their own shards and do not help.)
                if !crate::citus::distributed() {
                    crate::wake::wake_idle_now(1);
                }
                let mut done = (0, 0);
                let mut busy = Vec::new();
                for slice in 0..SLICES {
                    if locks.take_slice(slice) {
                        let r = run_incremental(&args, Slices::One(slice), recorded.only_inserts);
                        done = (done.0 + r.0, done.1 + r.1);
                    } else {
                        busy.push(slice);
                    }
                }
                for slice in busy {
                    locks.wait_for_slice(slice);
                    let r = run_incremental(&args, Slices::One(slice), recorded.only_inserts);
                    done = (done.0 + r.0, done.1 + r.1);
                }
                done
            }
        }
        variant => run_statement(variant, &args, Slices::All),
    };
    Ok(Computed { events, written, incremental })
}

/// Incremental runs of one window exclude each other per slice of its events (by a hash
/// of the event id), so that several workers can compute a hot window's changes at once
/// while each event is only ever computed by one of them at a time.
pub const SLICES: u32 = 4;

/// An incremental run with more recorded changes than this goes slice by slice, and
/// asks an idle worker to help.
const SPLIT_ABOVE: i64 = 4000;

/// Only windows of at most this many UTC days are sliced (each slice is a lock per day).
const MAX_SLICED_DAYS: i64 = 2;

fn sliceable(window: Window) -> bool {
    window.lock_granules().is_some_and(|days| days.end() - days.start() < MAX_SLICED_DAYS)
}

/// Which events' changes a statement consumes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Slices {
    All,
    One(u32),
}

/// Incremental, without the conflict check when every recorded change was an INSERT
/// (falling back to the upsert in a subtransaction, as for Variant::First).
fn run_incremental(args: &Args<'_>, slices: Slices, only_inserts: bool) -> (i64, i64) {
    if only_inserts {
        in_subtransaction(PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION, || {
            run_statement(Variant::IncrementalNew, args, slices)
        })
        .unwrap_or_else(|| run_statement(Variant::Incremental, args, slices))
    } else {
        run_statement(Variant::Incremental, args, slices)
    }
}

/// Helps a running incremental job of a hot window: computes one slice of its recorded
/// changes that no other run holds, under the caller's tenant context. Returns the
/// events computed, or None when there was nothing to take (the window is in a full
/// pass, every slice is taken, or nothing is recorded).
pub fn help_with_slice(
    tenant_id: pgrx::Uuid,
    window: Window,
    model_version: &str,
    correlation_id: &str,
) -> Result<Option<i64>, AttributionError> {
    if !sliceable(window) {
        return Ok(None);
    }
    let model = load_model(model_version)?;
    if model.touch.is_some() {
        return Ok(None);
    }
    let args = Args { tenant_id, window, model_version, model: &model, correlation_id };
    if recorded_changes(&args, Slices::All).count <= SPLIT_ABOVE {
        return Ok(None);
    }
    let locks = WindowLocks { tenant_id, model_version, window, wait: LockWait::NoWait };
    // In a subtransaction that is rolled back when there was nothing to take, so that a
    // worker that looks at several jobs keeps no lock of those it did not help with.
    Ok(in_subtransaction_if(|| {
        if !locks.try_days(pg_sys::ShareLock) {
            return None;
        }
        // From the last slice down, while the run it helps goes up.
        for slice in (0..SLICES).rev() {
            let recorded = recorded_changes(&args, Slices::One(slice));
            if recorded.count == 0 || !locks.take_slice(slice) {
                continue;
            }
            let (events, _) = run_incremental(&args, Slices::One(slice), recorded.only_inserts);
            return Some(events);
        }
        None
    }))
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

/// What is recorded for a window and model (or one slice of it).
struct Recorded {
    count: i64,
    /// Every recorded change is an INSERT (and there is at least one), so that an
    /// incremental run can insert without the conflict check.
    only_inserts: bool,
}

fn recorded_changes(args: &Args<'_>, slices: Slices) -> Recorded {
    let (name, slice) = match slices {
        Slices::All => ("recorded_changes", -1),
        Slices::One(slice) => ("recorded_changes_slice", slice as i32),
    };
    let stmt = catalog::statement(
        name,
        &catalog::types(&[UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, INT4OID]),
        |schema| {
            format!(
                "SELECT count(*), coalesce(bool_and(c.inserted), false)
                   FROM {schema}.attribution_event_changes c
                  WHERE c.tenant_id = $1 AND c.model_version = $4
                    AND c.occurred_at >= $2 AND c.occurred_at < $3 {}",
                slice_filter(slices, "$5")
            )
        },
    );
    Spi::connect(|client| {
        let row = client
            .select(
                &*stmt,
                Some(1),
                &[
                    args.tenant_id.into(),
                    to_timestamptz(args.window.start).into(),
                    to_timestamptz(args.window.end).into(),
                    args.model_version.into(),
                    slice.into(),
                ],
            )?
            .first();
        Ok::<_, pgrx::spi::SpiError>(Recorded {
            count: row.get::<i64>(1)?.unwrap_or(0),
            only_inserts: row.get::<bool>(2)?.unwrap_or(false),
        })
    })
    .expect("reading the recorded changes")
}

/// The condition on attribution_event_changes c that keeps one slice's rows; `param`
/// is the slice number's parameter.
fn slice_filter(slices: Slices, param: &str) -> String {
    match slices {
        Slices::All => String::new(),
        Slices::One(_) => format!(
            "AND (pg_catalog.hashtext(c.event_id::pg_catalog.text) OPERATOR(pg_catalog.&) {}) = {param}",
            SLICES - 1
        ),
    }
}

/// Runs one computation statement; returns (events computed, allocation rows written).
fn run_statement(variant: Variant, args: &Args<'_>, slices: Slices) -> (i64, i64) {
    let name = match (variant, slices) {
        (Variant::Incremental, Slices::One(_)) => "compute_window_incremental_slice",
        (Variant::IncrementalNew, Slices::One(_)) => "compute_window_incremental_new_slice",
        (Variant::Full, _) => "compute_window_full",
        (Variant::First, _) => "compute_window_first",
        (Variant::Incremental, _) => "compute_window_incremental",
        (Variant::IncrementalNew, _) => "compute_window_incremental_new",
        (Variant::BeforeUpdate, _) => "compute_window_before_update",
    };
    let slice = match slices {
        Slices::All => -1,
        Slices::One(slice) => slice as i32,
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
            INT4OID,
        ]),
        |schema| statement_sql(variant, slices, schema),
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
                    slice.into(),
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
/// whether the model's channel list ever changed, $9 the slice of the changes an
/// incremental run consumes (when `slices` is One).
///
/// Every variant reads the events it allocates FOR KEY SHARE: the allocations' foreign
/// key does not check inserts row by row (see sql/schema.sql), and the lock is what
/// keeps an event from being deleted, or its key changed, between this read and the
/// commit. An event deleted by a transaction that commits first is skipped (read
/// committed re-checks the row), so no allocation is ever left without its event.
fn statement_sql(variant: Variant, slices: Slices, schema: &str) -> String {
    // Upsert only what differs (no dead tuples, no updated_at churn on a re-run), and
    // drop allocations for channels the model no longer has. Allocations of deleted
    // events go with them through the foreign key.
    // Locked in a subquery, below the split into channels: once per event.
    let full_source = format!(
        "(SELECT * FROM {schema}.attribution_events e
           WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
             FOR KEY SHARE) AS e"
    );
    let full_filter = "true";
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
    let consume = match variant {
        Variant::BeforeUpdate => "SELECT NULL::uuid AS event_id WHERE false".to_owned(),
        _ => format!(
            "DELETE FROM {schema}.attribution_event_changes c
              WHERE c.tenant_id = $1 AND c.model_version = $4
                AND c.occurred_at >= $2 AND c.occurred_at < $3 {}
             RETURNING c.event_id",
            slice_filter(slices, "$9")
        ),
    };
    let computed = format!(
        "SELECT e.tenant_id, e.id AS event_id, s.channel, s.ratio, s.cents
           FROM model m
          CROSS JOIN {events_source}
          CROSS JOIN LATERAL unnest(m.channels, m.ratios,
                                    {schema}.attribution_split_cents(e.revenue_cents, m.weights))
                     AS s(channel, ratio, cents)
          WHERE {events_filter}"
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
        "WITH model AS MATERIALIZED ({model}),
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
                (SELECT count(*) FROM upserted) + (SELECT count(*) FROM removed)",
        model = model_sql("$5", "$6")
    )
}

/// A weighted model's one row: its channels, weights and each channel's ratio (weight /
/// sum of weights, rounded to 10 places), from the parameters holding its channels and
/// weights. Every statement that allocates under a weighted model reads it.
fn model_sql(channels: &str, weights: &str) -> String {
    format!(
        "SELECT {channels}::text[] AS channels, {weights}::int[] AS weights,
                ARRAY(SELECT round(u.w::numeric / (SELECT sum(x) FROM unnest({weights}::int[]) x), 10)
                        FROM unnest({weights}::int[]) WITH ORDINALITY AS u(w, ord) ORDER BY u.ord) AS ratios"
    )
}

// Allocation on insert.
//
// The insert trigger (src/api/trigger.rs) allocates the events of a small INSERT
// statement in the inserting transaction, under the weighted models, instead of recording
// them for the workers: they are allocated when the statement commits, and nobody reads
// them again. This is safe without the locks the workers take because no other
// transaction can see, change or delete those events before they commit, so nobody else
// can be computing them. What remains is the model: the statement reads it as it is when
// the statement runs, and a full pass of the same days (a changed model's, a repair, a
// window's first) must not miss events allocated under an older version. So each such
// statement holds an insert guard on the days of its events (and one per tenant and
// model) in ROW EXCLUSIVE mode, which only full passes conflict with: a full pass holds
// the days' guards EXCLUSIVE (waiting for the inserts that hold them, which then commit
// before it reads the events), and a statement that finds a guard held or waited for
// does not wait: its events go to the change log, as before, for the workers.

/// The most UTC days an INSERT statement's events may fall in for it to allocate them
/// itself (each is a lock held until commit); beyond, the change log takes them.
pub const ALLOCATE_ON_INSERT_MAX_DAYS: i64 = 8;

/// The most insert guards one transaction takes: each is a slot of the server's shared
/// lock table until it ends, so a transaction of many small INSERTs over many days (a
/// backfill in one transaction, say) records its later events for the workers instead
/// of filling that table for everyone.
pub const MAX_INSERT_GUARDS_PER_TRANSACTION: usize = 64;

thread_local! {
    /// The insert guards taken so far by the current transaction: (its top-level xid,
    /// how many).
    static INSERT_GUARDS: std::cell::Cell<(u32, usize)> = const { std::cell::Cell::new((0, 0)) };
}

fn insert_guard_key(tenant_id: pgrx::Uuid, model_version: &str, day: Option<i64>) -> String {
    match day {
        Some(day) => format!("{tenant_id}/{model_version}/{day}/inserts"),
        None => format!("{tenant_id}/{model_version}/inserts"),
    }
}

/// Takes, without waiting, the insert guards of a tenant's model for an INSERT that
/// allocates its events in these windows. False when one is held or waited for by a
/// full pass, or when the transaction would hold more than
/// MAX_INSERT_GUARDS_PER_TRANSACTION (the guards taken so far stay until the
/// transaction ends; they only make full passes of those days wait for its commit).
pub fn guard_inserts(tenant_id: pgrx::Uuid, model_version: &str, windows: &[Window]) -> bool {
    let mut keys = vec![insert_guard_key(tenant_id, model_version, None)];
    for window in windows {
        let Some(days) = window.lock_granules() else { return false };
        keys.extend(days.into_iter().map(|day| insert_guard_key(tenant_id, model_version, Some(day))));
    }
    // SAFETY: reads the current transaction's top-level xid (assigned: it inserted).
    let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() }.into_inner();
    let taken = INSERT_GUARDS.with(|g| match g.get() {
        (x, n) if x == xid => n,
        _ => 0,
    });
    if taken + keys.len() > MAX_INSERT_GUARDS_PER_TRANSACTION {
        return false;
    }
    INSERT_GUARDS.with(|g| g.set((xid, taken + keys.len())));
    let try_lock = |key: &str| {
        let (objid, subid) = lock_tag(key, DAY_LOCK);
        // SAFETY: a transaction-scoped lock of the extension's class, not waited for.
        unsafe {
            pg_sys::ConditionalLockDatabaseObject(
                catalog::extension_oid(),
                objid.into(),
                subid,
                pg_sys::RowExclusiveLock as pg_sys::LOCKMODE,
            )
        }
    };
    keys.iter().all(|key| try_lock(key))
}

/// Whether one of these windows of the tenant's model has a full pass queued (asked for
/// by a bulk statement or schedule_full_recompute(), or its first): that pass will read
/// the events anyway, and allocations written before it would only make a first pass's
/// plain inserts fail and run again as an upsert.
pub fn full_pass_pending(tenant_id: pgrx::Uuid, model_version: &str, windows: &[Window]) -> bool {
    let stmt = catalog::statement(
        "full_pass_pending",
        &catalog::types(&[UUIDOID, TEXTOID, TIMESTAMPTZARRAYOID]),
        |schema| {
            format!(
                "SELECT EXISTS (SELECT FROM {schema}.attribution_recompute_jobs j
                                 WHERE j.tenant_id = $1 AND j.window_start = ANY ($3) AND j.model_version = $2
                                   AND j.status = 'pending' AND (j.full_requested OR j.computed_at IS NULL))"
            )
        },
    );
    let starts: Vec<TimestampWithTimeZone> = windows.iter().map(|w| to_timestamptz(w.start)).collect();
    Spi::connect(|client| {
        client
            .select(&*stmt, Some(1), &[tenant_id.into(), model_version.into(), starts.into()])?
            .first()
            .get_one::<bool>()
    })
    .expect("looking for queued full passes")
    .unwrap_or(false)
}

/// The statement that allocates the new events in `table` (an INSERT's transition
/// table) of the tenants in $1 under the weighted model $2 (channels $3, weights $4),
/// with correlation id $5, as a full pass would. Plain inserts: events this statement
/// inserted cannot have allocations yet. Returns the rows written.
pub fn allocate_inserted_sql(schema: &str, table: &str) -> String {
    format!(
        "WITH model AS MATERIALIZED ({model})
         INSERT INTO {schema}.attribution_allocations
                (tenant_id, event_id, model_version, channel, allocation_ratio,
                 allocated_revenue_cents, correlation_id)
         SELECT n.tenant_id, n.id, $2, s.channel, s.ratio, s.cents, $5
           FROM model m
          CROSS JOIN {table} n
          CROSS JOIN LATERAL unnest(m.channels, m.ratios,
                                    {schema}.attribution_split_cents(n.revenue_cents, m.weights))
                     AS s(channel, ratio, cents)
          WHERE n.tenant_id = ANY ($1::uuid[])",
        model = model_sql("$3", "$4")
    )
}

/// Records in attribution_touch_allocated that the tenant's model has allocations (as
/// of this transaction's commit); returns whether it already had them before this
/// statement. Runs after the window's day locks are taken, so that a computation of the
/// same days that committed meanwhile is seen.
fn mark_touch_allocated(args: &Args<'_>) -> bool {
    let stmt = catalog::statement("mark_touch_allocated", &catalog::types(&[UUIDOID, TEXTOID]), |schema| {
        format!(
            "WITH before AS (
                 SELECT EXISTS (SELECT FROM {schema}.attribution_touch_allocated
                                 WHERE tenant_id = $1 AND model_version = $2) AS listed
             ),
             marked AS (
                 INSERT INTO {schema}.attribution_touch_allocated (tenant_id, model_version)
                 SELECT $1, $2 FROM before WHERE NOT before.listed
             )
             SELECT listed FROM before"
        )
    });
    Spi::connect_mut(|client| {
        client
            .update(&*stmt, Some(1), &[args.tenant_id.into(), args.model_version.into()])
            .expect("recording the model's allocations")
            .first()
            .get::<bool>(1)
            .expect("listed")
            .unwrap_or(true)
    })
}

/// The statements of a multi-touch computation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TouchVariant {
    Full,
    /// A window never computed: plain inserts streamed from the paths, nothing to remove.
    First,
    /// Before First: removes the model's allocations of the window's events.
    ClearFirst,
    Incremental,
}

/// Runs a multi-touch model's statement over the window (incremental: over its recorded
/// changes); returns (events computed, allocation rows written or removed).
fn run_touch_statement(args: &Args<'_>, touch: &TouchKind, variant: TouchVariant) -> (i64, i64) {
    let distributed = crate::citus::distributed();
    let name = match (variant, distributed) {
        (TouchVariant::Full, false) => "compute_touch_full",
        (TouchVariant::Full, true) => "compute_touch_full citus",
        (TouchVariant::First, _) => "compute_touch_first",
        (TouchVariant::ClearFirst, _) => "compute_touch_clear_first",
        (TouchVariant::Incremental, false) => "compute_touch_incremental",
        (TouchVariant::Incremental, true) => "compute_touch_incremental citus",
    };
    let stmt = catalog::statement(
        name,
        &catalog::types(&[
            UUIDOID,
            TIMESTAMPTZOID,
            TIMESTAMPTZOID,
            TEXTOID,
            TEXTOID,
            TEXTOID,
            TEXTOID,
            INT8OID,
            INT8OID,
        ]),
        |schema| touch_statement_sql(variant, schema, distributed),
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
                    touch.kind.as_str().into(),
                    touch.params.as_str().into(),
                    args.correlation_id.into(),
                    touch.lookback.into(),
                    touch.fit_id.into(),
                ],
            )
            .expect("computing multi-touch allocations")
            .first();
        (
            row.get::<i64>(1).expect("event_count").unwrap_or(0),
            row.get::<i64>(2).expect("allocation_count").unwrap_or(0),
        )
    })
}

/// The SQL of a multi-touch computation. Parameters: $1 tenant, $2 and $3 the window, $4
/// the model version, $5 and $6 its kind and parameters, $7 the correlation id, $8 its
/// lookback in microseconds (NULL: unlimited), $9 the fit of a data-driven model.
///
/// Each conversion's path is its customer's touchpoints up to the conversion (within the
/// lookback), read through attribution_touchpoints_path_idx; attribution_touch_split_e10
/// applies the rest of the model, called in a select list so that its rows stream. The
/// events are locked FOR KEY SHARE, as in statement_sql. Allocations of the computed
/// events for channels the conversion no longer credits (a late touchpoint changed its
/// path) are removed.
fn touch_statement_sql(variant: TouchVariant, schema: &str, distributed: bool) -> String {
    if variant == TouchVariant::ClearFirst {
        // Event by event (OFFSET 0), as the removal below (the statement is prepared with
        // the same parameter types; it uses only some).
        return format!(
            "WITH removed AS (
                 DELETE FROM {schema}.attribution_allocations a
                  WHERE a.tenant_id = $1 AND a.model_version = $4
                    AND a.ctid = ANY (ARRAY(
                        SELECT x.ctid FROM {schema}.attribution_events e
                         CROSS JOIN LATERAL (SELECT a2.ctid FROM {schema}.attribution_allocations a2
                                              WHERE a2.tenant_id = $1 AND a2.event_id = e.id
                                                AND a2.model_version = $4
                                             OFFSET 0) AS x
                         WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3))
                 RETURNING 1
             )
             SELECT 0::int8, count(*) FROM removed"
        );
    }
    let customer = "coalesce(e.customer_key, e.raw_payload OPERATOR(pg_catalog.->>) 'customer_key')";
    let events = if variant == TouchVariant::Incremental {
        format!(
            "SELECT e.tenant_id, e.id, e.occurred_at, e.revenue_cents, e.customer
               FROM (SELECT DISTINCT c.event_id FROM consumed c) AS ch
              CROSS JOIN LATERAL (SELECT e.*, {customer} AS customer FROM {schema}.attribution_events e
                                   WHERE e.tenant_id = $1 AND e.id = ch.event_id
                                  OFFSET 0 FOR KEY SHARE) AS e
              WHERE e.occurred_at >= $2 AND e.occurred_at < $3"
        )
    } else {
        format!(
            "SELECT e.tenant_id, e.id, e.occurred_at, e.revenue_cents, {customer} AS customer
               FROM {schema}.attribution_events e
              WHERE e.tenant_id = $1 AND e.occurred_at >= $2 AND e.occurred_at < $3
                FOR KEY SHARE"
        )
    };
    let (materialized, on_conflict, removal) = match variant {
        TouchVariant::ClearFirst => unreachable!("returned above"),
        // Nothing to remove (ClearFirst ran), nothing to conflict with: the rows stream
        // into the insert.
        TouchVariant::First => ("NOT MATERIALIZED", String::new(), "SELECT 1 WHERE false".to_owned()),
        TouchVariant::Full | TouchVariant::Incremental if distributed => (
            "MATERIALIZED",
            TOUCH_UPSERT.to_owned(),
            // Citus plans the CTEs apart (as intermediate results) and cannot plan a
            // modification of a distributed table by ctid against them: by key instead.
            format!(
                "DELETE FROM {schema}.attribution_allocations a
                  WHERE a.tenant_id = $1 AND a.model_version = $4
                    AND a.event_id IN (SELECT e.id FROM events e)
                    AND (a.event_id, a.channel) NOT IN (SELECT c.event_id, c.channel FROM computed c)
                 RETURNING 1"
            ),
        ),
        TouchVariant::Full | TouchVariant::Incremental => (
            "MATERIALIZED",
            TOUCH_UPSERT.to_owned(),
            // Looked up event by event (OFFSET 0 keeps it that way): a join let the
            // planner hash every allocation of the model, 0.4 s for a day of 10,000
            // conversions among 2.4 million allocations.
            format!(
                "DELETE FROM {schema}.attribution_allocations a
                  WHERE a.tenant_id = $1 AND a.model_version = $4
                    AND a.ctid = ANY (ARRAY(
                        SELECT x.ctid FROM events e
                         CROSS JOIN LATERAL (SELECT a2.ctid, a2.channel
                                               FROM {schema}.attribution_allocations a2
                                              WHERE a2.tenant_id = $1 AND a2.event_id = e.id
                                                AND a2.model_version = $4
                                             OFFSET 0) AS x
                         WHERE NOT EXISTS (SELECT FROM computed c
                                            WHERE c.event_id = e.id AND c.channel = x.channel)))
                 RETURNING 1"
            ),
        ),
    };
    format!(
        "WITH consumed AS (
             DELETE FROM {schema}.attribution_event_changes c
              WHERE c.tenant_id = $1 AND c.model_version = $4
                AND c.occurred_at >= $2 AND c.occurred_at < $3
             RETURNING c.event_id
         ),
         events AS MATERIALIZED (
             {events}
         ),
         computed AS {materialized} (
             SELECT x.tenant_id, x.event_id, (x.s).channel,
                    (x.s).ratio_e10 * 0.0000000001 AS ratio, (x.s).cents
               FROM (SELECT e.tenant_id, e.id AS event_id,
                            {schema}.attribution_touch_split_e10(e.revenue_cents, e.occurred_at,
                                tp.touch_at, tp.touch_channels, $5, $6, $9) AS s
                       FROM events e
                       LEFT JOIN LATERAL (
                            SELECT pg_catalog.array_agg(t.occurred_at) AS touch_at,
                                   pg_catalog.array_agg(t.channel) AS touch_channels
                              FROM {schema}.attribution_touchpoints t
                             WHERE e.customer IS NOT NULL
                               AND t.tenant_id = $1 AND t.customer_key = e.customer
                               AND t.occurred_at <= e.occurred_at
                               AND ($8::int8 IS NULL
                                    OR t.occurred_at >= e.occurred_at
                                       - pg_catalog.make_interval(secs => $8::float8 / 1000000))
                            ) AS tp ON true
                     OFFSET 0) AS x
         ),
         upserted AS (
             INSERT INTO {schema}.attribution_allocations AS a
                    (tenant_id, event_id, model_version, channel, allocation_ratio,
                     allocated_revenue_cents, correlation_id)
             SELECT tenant_id, event_id, $4, channel, ratio, cents, $7 FROM computed
             {on_conflict}
             RETURNING 1
         ),
         removed AS (
             {removal}
         )
         SELECT (SELECT count(*) FROM events),
                (SELECT count(*) FROM upserted) + (SELECT count(*) FROM removed)"
    )
}

/// The conflict clause of a multi-touch upsert: only what differs is written.
const TOUCH_UPSERT: &str = "ON CONFLICT (tenant_id, event_id, model_version, channel) DO UPDATE
                SET allocation_ratio = excluded.allocation_ratio,
                    allocated_revenue_cents = excluded.allocated_revenue_cents,
                    correlation_id = excluded.correlation_id,
                    updated_at = excluded.updated_at
              WHERE (a.allocation_ratio, a.allocated_revenue_cents)
                    IS DISTINCT FROM (excluded.allocation_ratio, excluded.allocated_revenue_cents)";

/// Runs `body` in a subtransaction. Some(result) if it succeeded (the subtransaction is
/// kept); None if it failed with `code` (the subtransaction is rolled back, so nothing
/// it wrote remains). Any other error rolls the subtransaction back and propagates.
fn in_subtransaction<R>(code: PgSqlErrorCode, body: impl FnOnce() -> R) -> Option<R> {
    subtransaction(Some(code), || Some(body()))
}

/// Runs `body` in a subtransaction that is kept when it returns Some and rolled back
/// (with the locks it took) when it returns None. Errors roll it back and propagate.
fn in_subtransaction_if<R>(body: impl FnOnce() -> Option<R>) -> Option<R> {
    subtransaction(None, body)
}

/// The subtransaction both of the above run: kept when `body` returns Some; rolled back
/// when it returns None or fails with `caught` (then None); rolled back on any other
/// error, which propagates.
fn subtransaction<R>(caught: Option<PgSqlErrorCode>, body: impl FnOnce() -> Option<R>) -> Option<R> {
    // SAFETY: what PL/pgSQL does around a block with an EXCEPTION clause: the memory
    // context and resource owner are restored whichever way the subtransaction ends.
    let (context, owner) = unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        (context, owner)
    };
    let end = move |keep: bool| unsafe {
        if keep {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    PgTryBuilder::new(AssertUnwindSafe(|| {
        let result = body();
        end(result.is_some());
        result
    }))
    .catch_others(move |e| {
        end(false);
        let is_caught = match &e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
                caught.is_some_and(|code| r.sql_error_code() == code)
            }
            CaughtError::RustPanic { .. } => false,
        };
        if is_caught {
            None
        } else {
            e.rethrow()
        }
    })
    .execute()
}

/// Serialises writers whose windows overlap, for one tenant and model, so that the
/// workers and direct calls never deadlock or interleave on the same allocation rows,
/// while different days of a tenant still compute in parallel. Each writer holds the
/// tenant/model lock shared and every UTC day its window touches, in ascending order:
/// exclusively for a full pass, shared for an incremental run, which then holds slices
/// of those days (Slices) exclusively. A window of more than MAX_GRANULE_LOCKS days
/// holds the tenant/model lock exclusively instead (and no day or slice locks).
///
/// These are heavyweight object locks whose class id is the extension's own OID, not
/// advisory locks: any session can take any advisory lock (and read the keys in
/// pg_locks), so a hostile session could hold a tenant's key and stall its jobs. No SQL
/// command takes an object lock of this class. They are transaction-scoped, show in
/// pg_locks as locktype 'object', and honour lock_timeout and the deadlock detector.
struct WindowLocks<'a> {
    tenant_id: pgrx::Uuid,
    model_version: &'a str,
    window: Window,
    wait: LockWait,
}

impl WindowLocks<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.tenant_id, self.model_version)
    }

    /// Takes one lock; false when it is busy and `skip` allows giving up, an ERROR
    /// (lock_not_available) when it is busy and the writer does not wait.
    fn take(&self, key: &str, kind: u16, mode: u32, wait: LockWait, skip: bool) -> bool {
        let class = catalog::extension_oid();
        let (objid, subid) = lock_tag(key, kind);
        let mode = mode as pg_sys::LOCKMODE;
        // SAFETY: transaction-scoped locks; an ERROR (timeout, deadlock) unwinds as usual.
        if wait == LockWait::Wait && !skip {
            unsafe { pg_sys::LockDatabaseObject(class, objid.into(), subid, mode) };
            return true;
        }
        if unsafe { pg_sys::ConditionalLockDatabaseObject(class, objid.into(), subid, mode) } {
            return true;
        }
        if skip {
            return false;
        }
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            format!(
                "window of tenant {} and model {} is being computed by another transaction",
                self.tenant_id, self.model_version
            )
        );
        unreachable!("ereport(ERROR) does not return")
    }

    /// The tenant/model lock and the days, in `day_mode`, waiting or not as the writer
    /// does.
    fn take_days(&self, day_mode: u32) {
        self.days(day_mode, false);
    }

    /// Like take_days, but false instead of an ERROR when one is busy (the locks taken
    /// so far stay until the transaction ends).
    fn try_days(&self, day_mode: u32) -> bool {
        self.days(day_mode, true)
    }

    fn days(&self, day_mode: u32, skip: bool) -> bool {
        let key = self.key();
        match self.window.lock_granules() {
            Some(days) => {
                if !self.take(&key, TENANT_LOCK, pg_sys::ShareLock, self.wait, skip) {
                    return false;
                }
                days.into_iter()
                    .all(|day| self.take(&format!("{key}/{day}"), DAY_LOCK, day_mode, self.wait, skip))
            }
            None => self.take(&key, TENANT_LOCK, pg_sys::ExclusiveLock, self.wait, skip),
        }
    }

    /// The insert guards of the window's days, exclusively (see guard_inserts): waits for
    /// the statements that allocate inserted events of those days to commit, and keeps
    /// new ones from doing so until this transaction ends. Unlike the other window
    /// locks, a worker waits for them (at most attribution.lock_timeout, then it puts
    /// the job back): inserts that come while it waits leave their events to the change
    /// log, so only the transactions already holding a guard delay it, whereas a worker
    /// that tried without waiting could miss its turn as long as inserts keep coming.
    fn exclude_inserts(&self) {
        let keys: Vec<String> = match self.window.lock_granules() {
            Some(days) => days
                .into_iter()
                .map(|day| insert_guard_key(self.tenant_id, self.model_version, Some(day)))
                .collect(),
            None => vec![insert_guard_key(self.tenant_id, self.model_version, None)],
        };
        for key in keys {
            self.take(&key, DAY_LOCK, pg_sys::ExclusiveLock, LockWait::Wait, false);
        }
    }

    /// One slice of every day of the window, exclusively (after take_days in share
    /// mode), if no other transaction holds it; false otherwise (the slice locks of the
    /// days taken so far stay until the transaction ends).
    fn take_slice(&self, slice: u32) -> bool {
        let Some(days) = self.window.lock_granules() else { return true };
        let key = self.key();
        days.into_iter().all(|day| {
            self.take(
                &format!("{key}/{day}/slice{slice}"),
                DAY_LOCK,
                pg_sys::ExclusiveLock,
                LockWait::NoWait,
                true,
            )
        })
    }

    /// One slice, once whoever holds it is done. Only runs and helpers hold slices, and
    /// for one statement, but it asks again rather than queueing for the lock, so that
    /// two runs that each hold a slice the other wants (overlapping windows) cannot
    /// deadlock: after lock_timeout it fails with lock_not_available (and a worker puts
    /// the job back).
    fn wait_for_slice(&self, slice: u32) {
        let started = std::time::Instant::now();
        let limit = match crate::gucs::lock_timeout_ms() {
            0 => std::time::Duration::from_secs(60),
            ms => std::time::Duration::from_millis(u64::from(ms.unsigned_abs())),
        };
        while !self.take_slice(slice) {
            if started.elapsed() >= limit {
                ereport!(
                    PgLogLevel::ERROR,
                    PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                    format!(
                        "a slice of the window of tenant {} and model {} is being computed by another transaction",
                        self.tenant_id, self.model_version
                    )
                );
            }
            pgrx::check_for_interrupts!();
            // SAFETY: a plain sleep; interrupts are checked around it.
            unsafe { pg_sys::pg_usleep(1000) };
        }
    }
}

const TENANT_LOCK: u16 = 0;
const DAY_LOCK: u16 = 1;

/// Takes a transaction-scoped lock of the extension's class on `key` (with TENANT_LOCK's
/// kind; keys of other uses contain a '/' that no model version has), waiting for it.
pub fn lock_object(key: &str, mode: u32) {
    let (objid, subid) = lock_tag(key, TENANT_LOCK);
    // SAFETY: as in WindowLocks::take.
    unsafe {
        pg_sys::LockDatabaseObject(catalog::extension_oid(), objid.into(), subid, mode as pg_sys::LOCKMODE)
    };
}

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
    /// A weighted model's channels and weights (empty for a multi-touch model).
    pub channels: Vec<String>,
    pub weights: Vec<i32>,
    /// A multi-touch model's kind, parameters (JSON text) and lookback (microseconds;
    /// None: unlimited).
    pub touch: Option<TouchKind>,
    /// Whether the channel list was ever changed, so that allocations for channels the
    /// model no longer gives may exist.
    pub channels_ever_changed: bool,
    /// When the channels or weights last changed (Postgres microseconds), if ever.
    pub changed_at: Option<i64>,
}

#[derive(Clone)]
pub struct TouchKind {
    pub kind: String,
    pub params: String,
    pub lookback: Option<i64>,
    /// Markov or Shapley: allocations need the tenant's latest fit.
    pub data_driven: bool,
    /// The fit a computation uses (set just before it runs).
    pub fit_id: Option<i64>,
}

/// The model, or UnknownModel.
pub fn load_model(model_version: &str) -> Result<Model, AttributionError> {
    // 0.1.0's models have no changed_at (before ALTER EXTENSION UPDATE every pass is full)
    // and only the weighted kind.
    let current = catalog::sql_is_current();
    let name = if current { "load_model" } else { "load_model_before_update" };
    let stmt = catalog::statement(name, &catalog::types(&[TEXTOID]), |schema| {
        let (changed_at, params) =
            if current { ("changed_at", "params::text") } else { ("NULL::timestamptz", "'{}'::text") };
        format!(
            "SELECT channels, weights, channels_changed_at IS NOT NULL, {changed_at}, kind, {params}
               FROM {schema}.attribution_models WHERE model_version = $1"
        )
    });
    let row = Spi::connect(|client| {
        let row = client.select(&*stmt, Some(1), &[model_version.into()])?.first();
        let (channels, weights, ever) = row.get_three::<Vec<String>, Vec<i32>, bool>()?;
        let changed_at = row.get::<TimestampWithTimeZone>(4)?;
        let kind = row.get::<String>(5)?;
        let params = row.get::<String>(6)?;
        Ok::<_, pgrx::spi::SpiError>((channels, weights, ever, changed_at, kind, params))
    });
    match row {
        Ok((_, _, Some(channels_ever_changed), changed_at, Some(kind), Some(params)))
            if kind != "weighted" =>
        {
            let parsed = crate::engine::model::parse(&kind, &params)?;
            let (lookback, data_driven) = (parsed.path.lookback, parsed.data_driven());
            Ok(Model {
                channels: Vec::new(),
                weights: Vec::new(),
                touch: Some(TouchKind { kind, params, lookback, data_driven, fit_id: None }),
                channels_ever_changed,
                changed_at: changed_at.map(i64::from),
            })
        }
        Ok((Some(channels), Some(weights), Some(channels_ever_changed), changed_at, _, _)) => {
            crate::engine::allocation::validate_weights(&weights).map_err(|source| {
                AttributionError::ModelWeights { model_version: model_version.to_owned(), source }
            })?;
            Ok(Model {
                channels,
                weights,
                touch: None,
                channels_ever_changed,
                changed_at: changed_at.map(i64::from),
            })
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
