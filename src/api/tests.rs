// `#[pg_test]`s for the SQL surface. Each runs in a transaction that is rolled back, so
// they cover functions, triggers, errors and RLS, but never the background worker.

use pgrx::prelude::*;

const TENANT_A: &str = "00000000-0000-4000-8000-00000000000a";
const TENANT_B: &str = "00000000-0000-4000-8000-00000000000b";

fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn one<T: IntoDatum + FromDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or_else(|| panic!("{sql}: NULL"))
}

/// Runs `sql` in a subtransaction and returns the SQLSTATE it failed with, or None.
fn sqlstate_of(sql: &str) -> Option<String> {
    run("CREATE OR REPLACE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text
         LANGUAGE plpgsql AS $$
         BEGIN EXECUTE q; RETURN NULL;
         EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$");
    Spi::get_one_with_args::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()]).unwrap()
}

fn tenants() {
    run(&format!("INSERT INTO attribution_tenants (id, name) VALUES ('{TENANT_A}', 'a'), ('{TENANT_B}', 'b')"));
}

/// Inserts record their events for the workers, as with attribution.allocate_on_insert
/// off, for the tests of what the workers compute.
fn leave_inserts_to_the_workers() {
    run("SET LOCAL attribution.allocate_on_insert = off");
}

fn jobs(tenant: &str) -> i64 {
    one(&format!("SELECT count(*) FROM attribution_recompute_jobs WHERE tenant_id = '{tenant}'"))
}

fn schedule(tenant: &str, start: &str, end: &str) -> String {
    one::<pgrx::Uuid>(&format!(
        "SELECT schedule_recompute_window('{tenant}', '{start}', '{end}', 'corr-1')"
    ))
    .to_string()
}

#[pg_test]
fn schedule_returns_a_pending_job_with_the_callers_correlation_id() {
    tenants();
    let id = schedule(TENANT_A, "2026-01-01", "2026-01-02");
    let (status, corr): (String, String) = (
        one(&format!("SELECT status FROM attribution_recompute_jobs WHERE id = '{id}'")),
        one(&format!("SELECT last_correlation_id FROM attribution_recompute_jobs WHERE id = '{id}'")),
    );
    assert_eq!(status, "pending");
    assert_eq!(corr, "corr-1");
}

#[pg_test]
fn schedule_generates_a_correlation_id_when_none_is_given() {
    tenants();
    let id: pgrx::Uuid = one(&format!(
        "SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02')"
    ));
    let corr: String = one(&format!("SELECT last_correlation_id FROM attribution_recompute_jobs WHERE id = '{id}'"));
    // A generated id is a uuid; casting proves its shape.
    let _: pgrx::Uuid = one(&format!("SELECT '{corr}'::uuid"));
}

#[pg_test]
fn schedule_coalesces_pending_running_and_finished_jobs() {
    tenants();
    let first = schedule(TENANT_A, "2026-01-01", "2026-01-02");
    // Pending: the same job, not a second one.
    assert_eq!(schedule(TENANT_A, "2026-01-01", "2026-01-02"), first);
    assert_eq!(jobs(TENANT_A), 1);
    // Running: flagged to run once more afterwards.
    run(&format!("UPDATE attribution_recompute_jobs SET status = 'running' WHERE id = '{first}'"));
    assert_eq!(schedule(TENANT_A, "2026-01-01", "2026-01-02"), first);
    let (status, rerun): (String, bool) = (
        one(&format!("SELECT status FROM attribution_recompute_jobs WHERE id = '{first}'")),
        one(&format!("SELECT rerun_requested FROM attribution_recompute_jobs WHERE id = '{first}'")),
    );
    assert_eq!((status.as_str(), rerun), ("running", true));
    // Finished (even dead-lettered): pending again with a fresh attempt budget.
    run(&format!(
        "UPDATE attribution_recompute_jobs SET status = 'failed', attempts = 3, rerun_requested = false WHERE id = '{first}'"
    ));
    assert_eq!(schedule(TENANT_A, "2026-01-01", "2026-01-02"), first);
    let (status, attempts): (String, i32) = (
        one(&format!("SELECT status FROM attribution_recompute_jobs WHERE id = '{first}'")),
        one(&format!("SELECT attempts FROM attribution_recompute_jobs WHERE id = '{first}'")),
    );
    assert_eq!((status.as_str(), attempts), ("pending", 0));
    // A different window or model is a different job.
    assert_ne!(schedule(TENANT_A, "2026-01-02", "2026-01-03"), first);
    assert_eq!(jobs(TENANT_A), 2);
}

#[pg_test]
fn schedule_rejects_bad_input_with_precise_sqlstates_and_writes_nothing() {
    tenants();
    let cases = [
        ("SELECT schedule_recompute_window(NULL, '2026-01-01', '2026-01-02')".to_owned(), "22004"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', NULL, '2026-01-02')"), "22004"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', NULL)"), "22004"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02', NULL, NULL)"), "22004"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-02', '2026-01-02')"), "22023"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-03', '2026-01-02')"), "22023"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-03-01')"), "22023"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '-infinity', '2026-01-02')"), "22008"),
        ("SELECT schedule_recompute_window('00000000-0000-4000-8000-0000000000ff', '2026-01-01', '2026-01-02')".to_owned(), "23503"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02', NULL, '9.9.9')"), "42704"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02', repeat('x', 129))"), "22001"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02', 'two words')"), "22023"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02', E'a\\nb')"), "22023"),
        (format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02', '')"), "22023"),
    ];
    for (sql, expected) in cases {
        assert_eq!(sqlstate_of(&sql).as_deref(), Some(expected), "{sql}");
    }
    assert_eq!(jobs(TENANT_A), 0);
}

#[pg_test]
fn max_window_is_a_setting() {
    tenants();
    run("SET LOCAL attribution.max_window = '1h'");
    assert_eq!(
        sqlstate_of(&format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01 00:00', '2026-01-01 01:00:01')")).as_deref(),
        Some("22023")
    );
    schedule(TENANT_A, "2026-01-01 00:00", "2026-01-01 01:00");
}

#[pg_test]
fn functions_refuse_a_different_tenant_context() {
    tenants();
    run(&format!("SELECT set_config('attribution.tenant_id', '{TENANT_B}', true)"));
    for sql in [
        format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02')"),
        format!("SELECT * FROM compute_allocations('{TENANT_A}', '2026-01-01', '2026-01-02')"),
    ] {
        assert_eq!(sqlstate_of(&sql).as_deref(), Some("42501"), "{sql}");
    }
    run("SELECT set_config('attribution.tenant_id', 'not-a-uuid', true)");
    assert_eq!(
        sqlstate_of(&format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02')")).as_deref(),
        Some("22P02")
    );
}

fn insert_events(tenant: &str, rows: &[(&str, &str, i64)]) {
    let values: Vec<String> = rows
        .iter()
        .map(|(id, ts, rev)| format!("('{id}', '{tenant}', '{ts}', {rev}, '{{}}'::jsonb)"))
        .collect();
    run(&format!(
        "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload) VALUES {}",
        values.join(", ")
    ));
}

const E1: &str = "10000000-0000-4000-8000-000000000001";
const E2: &str = "10000000-0000-4000-8000-000000000002";
const E3: &str = "10000000-0000-4000-8000-000000000003";

fn compute(tenant: &str, start: &str, end: &str) -> (i64, i64) {
    let row = Spi::get_two::<i64, i64>(&format!(
        "SELECT event_count, allocation_count FROM compute_allocations('{tenant}', '{start}', '{end}')"
    ))
    .unwrap();
    (row.0.unwrap(), row.1.unwrap())
}

fn assert_cents_conserved() {
    let bad: i64 = one(
        "SELECT count(*) FROM attribution_events e
          WHERE e.revenue_cents <> (SELECT coalesce(sum(a.allocated_revenue_cents), 0)
                                      FROM attribution_allocations a
                                     WHERE a.event_id = e.id AND a.model_version = '1.0.0')",
    );
    assert_eq!(bad, 0, "some event's allocations do not sum to its revenue");
}

#[pg_test]
fn an_insert_allocates_its_events_itself_and_records_only_the_rest() {
    tenants();
    run("INSERT INTO attribution_models (model_version, channels, weights) VALUES ('2.0.0', ARRAY['a', 'b'], ARRAY[2, 1])");
    run("SET LOCAL attribution.correlation_id = 'insert-1'");
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100), (E2, "2026-01-01 11:00Z", 7)]);
    // Allocated by the statement, under both weighted models, with its correlation id.
    let rows = |filter: &str| one::<i64>(&format!("SELECT count(*) FROM attribution_allocations WHERE {filter}"));
    assert_eq!(rows("correlation_id = 'insert-1' AND model_version = '1.0.0'"), 6);
    assert_eq!(rows("correlation_id = 'insert-1' AND model_version = '2.0.0'"), 4);
    assert_cents_conserved();
    assert_eq!(
        one::<i64>(&format!(
            "SELECT allocated_revenue_cents FROM attribution_allocations WHERE model_version = '2.0.0' AND event_id = '{E1}' AND channel = 'a'"
        )),
        67
    );
    // Nothing is recorded for the workers; the jobs are enqueued as for any statement.
    let changes = || one::<i64>("SELECT count(*) FROM attribution_event_changes");
    assert_eq!(changes(), 0);
    assert_eq!(jobs(TENANT_A), 2);
    // A full pass finds nothing to change: they are what a computation from scratch gives.
    assert_eq!(compute(TENANT_A, "2026-01-01Z", "2026-01-02Z"), (2, 0));
    assert_eq!(
        Spi::get_two::<i64, i64>(&format!(
            "SELECT event_count, allocation_count FROM compute_allocations('{TENANT_A}', '2026-01-01Z', '2026-01-02Z', '2.0.0')"
        ))
        .unwrap(),
        (Some(2), Some(0))
    );
    // Updates and deletes are left to the workers.
    run(&format!("UPDATE attribution_events SET revenue_cents = 101 WHERE id = '{E1}'"));
    assert_eq!(changes(), 2, "one record per model");
    // Events over more than 8 days are recorded instead (each day is a lock until commit).
    let days: Vec<(String, String, i64)> =
        (1..=9).map(|d| (format!("20000000-0000-4000-8000-{d:012}"), format!("2026-02-{d:02} 10:00Z"), 5)).collect();
    let rows_of: Vec<(&str, &str, i64)> = days.iter().map(|(id, ts, rev)| (id.as_str(), ts.as_str(), *rev)).collect();
    insert_events(TENANT_A, &rows_of);
    assert_eq!(changes(), 2 + 18);
    assert_eq!(rows("event_id::text LIKE '20000000-%'"), 0);
    // So are an insert's events with the setting off.
    run("SET LOCAL attribution.allocate_on_insert = off");
    insert_events(TENANT_A, &[(E3, "2026-01-01 12:00Z", 5)]);
    assert_eq!(changes(), 2 + 18 + 2);
    assert_eq!(rows(&format!("event_id = '{E3}'")), 0);
}

#[pg_test]
fn an_insert_leaves_its_events_to_a_queued_full_pass_and_past_its_guard_budget() {
    tenants();
    let changes = || one::<i64>("SELECT count(*) FROM attribution_event_changes");
    let allocations = || one::<i64>("SELECT count(*) FROM attribution_allocations");
    // A full pass of the day is queued: it will read the event, so the INSERT records it.
    run(&format!("SELECT schedule_full_recompute('{TENANT_A}', '2026-01-01Z', '2026-01-02Z')"));
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    assert_eq!((changes(), allocations()), (1, 0));
    // One transaction of one-event INSERTs into ever new days: each takes two guards
    // (the tenant's model, the day) until 64 are held, then records its event.
    let budget = crate::compute::MAX_INSERT_GUARDS_PER_TRANSACTION as i64;
    for d in 0..budget / 2 + 5 {
        let id = format!("30000000-0000-4000-8000-{d:012}");
        run(&format!(
            "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
             VALUES ('{id}', '{TENANT_A}', '2027-01-01Z'::timestamptz + {d} * interval '1 day', 10)"
        ));
    }
    assert_eq!(allocations(), 3 * (budget / 2));
    assert_eq!(changes(), 1 + 5);
    assert_eq!(
        one::<i64>("SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND pid = pg_backend_pid() AND mode = 'RowExclusiveLock'"),
        budget / 2 + 1,
        "one guard per day and one for the tenant's model"
    );
}

#[pg_test]
fn compute_allocates_every_cent_and_is_idempotent() {
    tenants();
    leave_inserts_to_the_workers();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100), (E2, "2026-01-01 11:00Z", 0), (E3, "2026-01-01 12:00Z", -1)]);
    assert_eq!(compute(TENANT_A, "2026-01-01Z", "2026-01-02Z"), (3, 9));
    assert_cents_conserved();
    let shares: Vec<i64> = Spi::connect(|c| {
        c.select(
            &format!("SELECT allocated_revenue_cents FROM attribution_allocations WHERE event_id = '{E1}' ORDER BY channel"),
            None,
            &[],
        )
        .unwrap()
        .map(|r| r.get::<i64>(1).unwrap().unwrap())
        .collect()
    });
    // direct, email, google_search: google_search is listed first in the model and wins the tie.
    assert_eq!(shares, vec![33, 33, 34]);

    // Re-running writes nothing: same row versions, same updated_at.
    let before: String = one("SELECT string_agg(xmin::text || updated_at::text, ',' ORDER BY id) FROM attribution_allocations");
    assert_eq!(compute(TENANT_A, "2026-01-01Z", "2026-01-02Z"), (3, 0));
    let after: String = one("SELECT string_agg(xmin::text || updated_at::text, ',' ORDER BY id) FROM attribution_allocations");
    assert_eq!(before, after);

    // A changed event rewrites only its own rows.
    run(&format!("UPDATE attribution_events SET revenue_cents = 101 WHERE id = '{E1}'"));
    // 100 = 34+33+33 becomes 101 = 34+34+33: one row changes.
    assert_eq!(compute(TENANT_A, "2026-01-01Z", "2026-01-02Z"), (3, 1));
    assert_cents_conserved();
}

#[pg_test]
fn compute_removes_allocations_that_no_longer_belong() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100), (E2, "2026-01-01 11:00Z", 7)]);
    compute(TENANT_A, "2026-01-01Z", "2026-01-02Z");
    // Deleted event: its allocations go with it.
    run(&format!("DELETE FROM attribution_events WHERE id = '{E2}'"));
    assert_eq!(one::<i64>(&format!("SELECT count(*) FROM attribution_allocations WHERE event_id = '{E2}'")), 0);
    // A channel the model no longer gives is removed; the rest is re-split exactly.
    run("UPDATE attribution_models SET channels = ARRAY['google_search', 'direct'], weights = ARRAY[1, 1] WHERE model_version = '1.0.0'");
    assert_eq!(compute(TENANT_A, "2026-01-01Z", "2026-01-02Z"), (1, 3));
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_allocations WHERE channel = 'email'"), 0);
    assert_cents_conserved();
}

#[pg_test]
fn compute_is_read_only_on_events_and_rejects_bad_input() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    let before: String = one("SELECT string_agg(xmin::text, ',') FROM attribution_events");
    compute(TENANT_A, "2026-01-01Z", "2026-01-02Z");
    assert_eq!(before, one::<String>("SELECT string_agg(xmin::text, ',') FROM attribution_events"));
    for (sql, code) in [
        ("SELECT * FROM compute_allocations(NULL, '2026-01-01', '2026-01-02')".to_owned(), "22004"),
        (format!("SELECT * FROM compute_allocations('{TENANT_A}', '2026-01-02', '2026-01-01')"), "22023"),
        (format!("SELECT * FROM compute_allocations('{TENANT_A}', '2026-01-01', '2026-01-02', 'nope')"), "42704"),
    ] {
        assert_eq!(sqlstate_of(&sql).as_deref(), Some(code), "{sql}");
    }
}

#[pg_test]
fn bad_events_are_rejected_with_check_violations() {
    tenants();
    for sql in [
        format!("INSERT INTO attribution_events VALUES ('{E1}', '{TENANT_A}', now(), 1000000000000001, '{{}}')"),
        format!("INSERT INTO attribution_events VALUES ('{E1}', '{TENANT_A}', now(), -9223372036854775808, '{{}}')"),
        format!("INSERT INTO attribution_events VALUES ('{E1}', '{TENANT_A}', now(), 1, '[1, 2]')"),
        format!("INSERT INTO attribution_events VALUES ('{E1}', '{TENANT_A}', 'infinity', 1, '{{}}')"),
    ] {
        assert_eq!(sqlstate_of(&sql).as_deref(), Some("23514"), "{sql}");
    }
    assert_eq!(
        sqlstate_of(&format!("INSERT INTO attribution_events VALUES ('{E1}', '{TENANT_A}', now(), 1, '{{bad')")).as_deref(),
        Some("22P02")
    );
    assert_eq!(
        sqlstate_of(&format!("INSERT INTO attribution_events VALUES ('{E1}', '00000000-0000-4000-8000-0000000000ff', now(), 1, '{{}}')")).as_deref(),
        Some("23503")
    );
    assert_eq!(jobs(TENANT_A), 0);
}

#[pg_test]
fn the_old_systems_insert_statement_schedules_one_job_per_tenant_and_day() {
    tenants();
    let stmt = format!(
        "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload) VALUES
            ('{E1}', '{TENANT_A}', CAST('2026-01-01T10:00:00+00:00' AS timestamptz), 1000, '{{}}'::jsonb),
            ('{E2}', '{TENANT_A}', CAST('2026-01-01T23:59:59+00:00' AS timestamptz), 2500, '{{}}'::jsonb),
            ('{E3}', '{TENANT_A}', CAST('2026-01-02T00:00:00+00:00' AS timestamptz), 1, '{{}}'::jsonb)
         ON CONFLICT DO NOTHING"
    );
    run(&stmt);
    run(&stmt); // a replay conflicts on every row and must still succeed
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_events"), 3);
    assert_eq!(jobs(TENANT_A), 2);
    assert_eq!(
        one::<i64>(&format!(
            "SELECT count(*) FROM attribution_recompute_jobs WHERE tenant_id = '{TENANT_A}' AND status = 'pending'
               AND window_end - window_start = interval '1 day'
               AND window_start IN ('2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z')"
        )),
        2
    );
}

#[pg_test]
fn updates_and_deletes_reschedule_the_windows_they_touch() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    run("UPDATE attribution_recompute_jobs SET status = 'succeeded'");
    run(&format!("UPDATE attribution_events SET occurred_at = '2026-01-05 10:00Z' WHERE id = '{E1}'"));
    // Both the day it left and the day it moved to.
    assert_eq!(
        one::<i64>("SELECT count(*) FROM attribution_recompute_jobs WHERE status = 'pending'
                     AND window_start IN ('2026-01-01Z', '2026-01-05Z')"),
        2
    );
    run("UPDATE attribution_recompute_jobs SET status = 'succeeded'");
    run(&format!("DELETE FROM attribution_events WHERE id = '{E1}'"));
    assert_eq!(
        one::<i64>("SELECT count(*) FROM attribution_recompute_jobs WHERE status = 'pending' AND window_start = '2026-01-05Z'"),
        1
    );
}

#[pg_test]
fn the_trigger_uses_the_window_width_and_correlation_settings() {
    tenants();
    run("SET LOCAL attribution.window_width = '1h'");
    run("SET LOCAL attribution.correlation_id = 'import-7'");
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:15Z", 1), (E2, "2026-01-01 10:45Z", 1), (E3, "2026-01-01 11:00Z", 1)]);
    assert_eq!(
        one::<i64>("SELECT count(*) FROM attribution_recompute_jobs
                     WHERE window_end - window_start = interval '1 hour' AND last_correlation_id = 'import-7'"),
        2
    );
    run("SET LOCAL attribution.correlation_id = 'bad id'");
    assert_eq!(
        sqlstate_of(&format!("INSERT INTO attribution_events VALUES ('{}', '{TENANT_A}', now(), 1, '{{}}')", "10000000-0000-4000-8000-000000000009")).as_deref(),
        Some("22023")
    );
}

#[pg_test]
fn the_trigger_schedules_every_active_model() {
    tenants();
    run("INSERT INTO attribution_models (model_version, channels, weights) VALUES ('2.0.0', ARRAY['x', 'y'], ARRAY[3, 1])");
    run("INSERT INTO attribution_models (model_version, channels, weights, active) VALUES ('0.9.0', ARRAY['x'], ARRAY[1], false)");
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 1)]);
    assert_eq!(
        one::<String>("SELECT string_agg(model_version, ',' ORDER BY model_version) FROM attribution_recompute_jobs"),
        "1.0.0,2.0.0"
    );
}

#[pg_test]
fn split_cents_is_exact_and_validates_weights() {
    assert_eq!(one::<Vec<i64>>("SELECT attribution_split_cents(100, ARRAY[1, 1, 1])"), vec![34, 33, 33]);
    assert_eq!(
        one::<Vec<i64>>("SELECT attribution_split_cents(-9223372036854775808, ARRAY[1, 1, 1])").iter().map(|v| *v as i128).sum::<i128>(),
        i64::MIN as i128
    );
    assert_eq!(sqlstate_of("SELECT attribution_split_cents(1, ARRAY[1, 0])").as_deref(), Some("22023"));
    assert_eq!(sqlstate_of("SELECT attribution_split_cents(1, ARRAY[]::int[])").as_deref(), Some("22023"));
    assert_eq!(sqlstate_of("SELECT attribution_split_cents(1, ARRAY[1, NULL])").as_deref(), Some("22023"));
}

#[pg_test]
fn a_tenant_context_sees_only_its_own_rows_in_every_table() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    insert_events(TENANT_B, &[(E2, "2026-01-01 10:00Z", 200)]);
    compute(TENANT_A, "2026-01-01Z", "2026-01-02Z");
    compute(TENANT_B, "2026-01-01Z", "2026-01-02Z");
    run(&format!(
        "INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, error_message, attempts)
         VALUES (gen_random_uuid(), '{TENANT_B}', '{{}}', 'c', 'boom', 3)"
    ));
    run("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'attribution_test_app') THEN
            CREATE ROLE attribution_test_app NOLOGIN; END IF; END $$");
    run("GRANT attribution_app TO attribution_test_app");
    run("SET LOCAL ROLE attribution_test_app");
    run(&format!("SELECT set_config('attribution.tenant_id', '{TENANT_A}', true)"));
    for table in [
        "attribution_tenants",
        "attribution_events",
        "attribution_allocations",
        "attribution_recompute_jobs",
        "worker_failed_jobs",
    ] {
        let column = if table == "attribution_tenants" { "id" } else { "tenant_id" };
        let foreign: i64 = one(&format!("SELECT count(*) FROM {table} WHERE {column} <> '{TENANT_A}'"));
        assert_eq!(foreign, 0, "{table} shows another tenant's rows");
    }
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_allocations"), 3);
    // Writing another tenant's rows is refused, not silently dropped.
    assert_eq!(
        sqlstate_of(&format!("INSERT INTO attribution_events VALUES ('{E3}', '{TENANT_B}', now(), 1, '{{}}')")).as_deref(),
        Some("42501")
    );
    assert_eq!(one::<i64>(&format!("WITH u AS (UPDATE attribution_events SET revenue_cents = 0 WHERE id = '{E2}' RETURNING 1) SELECT count(*) FROM u")), 0);
    // With no context at all, a role subject to RLS sees nothing.
    run("SELECT set_config('attribution.tenant_id', '', true)");
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_events"), 0);
    run("RESET ROLE");
}

#[pg_test]
fn an_rls_bound_role_can_schedule_and_compute_for_its_tenant() {
    tenants();
    leave_inserts_to_the_workers();
    run("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'attribution_test_app') THEN
            CREATE ROLE attribution_test_app NOLOGIN; END IF; END $$");
    run("GRANT attribution_app TO attribution_test_app");
    run("SET LOCAL ROLE attribution_test_app");
    // No context set: the functions set it for the call and clear it afterwards.
    insert_events_as_tenant(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    schedule(TENANT_A, "2026-01-01", "2026-01-02");
    assert_eq!(compute(TENANT_A, "2026-01-01Z", "2026-01-02Z"), (1, 3));
    assert_eq!(one::<String>("SELECT coalesce(current_setting('attribution.tenant_id', true), '')"), "");
    run("RESET ROLE");
}

fn insert_events_as_tenant(tenant: &str, rows: &[(&str, &str, i64)]) {
    run(&format!("SELECT set_config('attribution.tenant_id', '{tenant}', true)"));
    insert_events(tenant, rows);
    run("SELECT set_config('attribution.tenant_id', '', true)");
}

#[pg_test]
fn redrive_requeues_a_dead_letter_with_its_correlation_id() {
    tenants();
    let id = schedule(TENANT_A, "2026-01-01", "2026-01-02");
    run(&format!("UPDATE attribution_recompute_jobs SET status = 'failed', attempts = 3 WHERE id = '{id}'"));
    let failed: i64 = one(&format!(
        "INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, sqlstate, error_message, attempts)
         SELECT id, tenant_id, jsonb_build_object('window_start', window_start, 'window_end', window_end,
                                                  'model_version', model_version),
                'corr-dead', '09000', 'boom', 3
           FROM attribution_recompute_jobs WHERE id = '{id}' RETURNING id"
    ));
    // Only a dead letter of the transaction's own tenant is visible: none with no
    // context, none with another tenant's.
    assert_eq!(sqlstate_of(&format!("SELECT redrive_failed_job({failed})")).as_deref(), Some("P0002"));
    run(&format!("SELECT set_config('attribution.tenant_id', '{TENANT_B}', true)"));
    assert_eq!(sqlstate_of(&format!("SELECT redrive_failed_job({failed})")).as_deref(), Some("P0002"));
    assert!(one::<bool>(&format!("SELECT redriven_at IS NULL FROM worker_failed_jobs WHERE id = {failed}")));
    run(&format!("SELECT set_config('attribution.tenant_id', '{TENANT_A}', true)"));
    let redriven: pgrx::Uuid = one(&format!("SELECT redrive_failed_job({failed})"));
    assert_eq!(redriven.to_string(), id);
    let state: String = one(&format!(
        "SELECT status || '/' || attempts || '/' || last_correlation_id FROM attribution_recompute_jobs WHERE id = '{id}'"
    ));
    assert_eq!(state, "pending/0/corr-dead");
    assert!(one::<bool>(&format!("SELECT redriven_at IS NOT NULL FROM worker_failed_jobs WHERE id = {failed}")));
    assert_eq!(sqlstate_of("SELECT redrive_failed_job(NULL)").as_deref(), Some("22004"));
    assert_eq!(sqlstate_of("SELECT redrive_failed_job(-1)").as_deref(), Some("P0002"));
}

#[pg_test]
fn queue_health_counts_jobs_by_status() {
    tenants();
    schedule(TENANT_A, "2026-01-01", "2026-01-02");
    schedule(TENANT_A, "2026-01-02", "2026-01-03");
    run("UPDATE attribution_recompute_jobs SET status = 'succeeded', finished_at = now() WHERE window_start = '2026-01-02'");
    let row: String = one(
        "SELECT pending || '/' || runnable || '/' || succeeded || '/' || finished_last_minute || '/' || dead_letters
           FROM attribution_queue_health",
    );
    assert_eq!(row, "1/1/1/1/0");
}

fn as_app_role(tenant: &str) {
    run("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'attribution_test_app') THEN
            CREATE ROLE attribution_test_app NOLOGIN; END IF; END $$");
    run("GRANT attribution_app TO attribution_test_app");
    run("SET LOCAL ROLE attribution_test_app");
    run(&format!("SELECT set_config('attribution.tenant_id', '{tenant}', true)"));
}

#[pg_test]
fn app_roles_read_but_never_write_the_queue_the_dead_letters_or_the_allocations() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    let job = schedule(TENANT_A, "2026-01-01", "2026-01-02");
    compute(TENANT_A, "2026-01-01Z", "2026-01-02Z");
    as_app_role(TENANT_A);
    assert_eq!(jobs(TENANT_A), 1, "the tenant reads its own jobs");
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_allocations"), 3);
    for statement in [
        format!("UPDATE attribution_recompute_jobs SET run_count = 2147483647 WHERE id = '{job}'"),
        format!("UPDATE attribution_recompute_jobs SET run_after = '-infinity' WHERE id = '{job}'"),
        format!(
            "INSERT INTO attribution_recompute_jobs (tenant_id, window_start, window_end, model_version, last_correlation_id)
             VALUES ('{TENANT_A}', '-infinity', 'infinity', '1.0.0', 'x')"
        ),
        format!("DELETE FROM attribution_recompute_jobs WHERE id = '{job}'"),
        "SELECT * FROM attribution_recompute_jobs FOR UPDATE".to_owned(),
        "LOCK TABLE attribution_recompute_jobs IN ACCESS EXCLUSIVE MODE".to_owned(),
        "UPDATE attribution_allocations SET allocated_revenue_cents = 0".to_owned(),
        "DELETE FROM attribution_allocations".to_owned(),
        format!(
            "INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, error_message, attempts)
             VALUES (gen_random_uuid(), '{TENANT_A}', '{{}}', 'c', 'x', 1)"
        ),
        "UPDATE worker_failed_jobs SET redriven_at = now()".to_owned(),
        // The change log: neither readable nor writable (forging or deleting a record
        // would skip or add work in a tenant's incremental runs).
        "SELECT count(*) FROM attribution_event_changes".to_owned(),
        format!(
            "INSERT INTO attribution_event_changes VALUES ('{TENANT_A}', '1.0.0', '2026-01-01', gen_random_uuid())"
        ),
        "DELETE FROM attribution_event_changes".to_owned(),
    ] {
        assert_eq!(sqlstate_of(&statement).as_deref(), Some("42501"), "{statement}");
    }
    // What they may do goes through the functions, for their own tenant only.
    schedule(TENANT_A, "2026-01-02", "2026-01-03");
    assert_eq!(compute(TENANT_A, "2026-01-01Z", "2026-01-02Z"), (1, 0));
    assert_eq!(
        sqlstate_of(&format!("SELECT schedule_recompute_window('{TENANT_B}', '2026-01-01', '2026-01-02')")).as_deref(),
        Some("42501")
    );
    assert_eq!(
        sqlstate_of(&format!("SELECT compute_allocations('{TENANT_B}', '2026-01-01', '2026-01-02')")).as_deref(),
        Some("42501")
    );
    run("RESET ROLE");
    assert_eq!(jobs(TENANT_B), 0);
}

#[pg_test]
fn event_ids_belong_to_their_tenant() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    // The old system's statement, for tenant B, with an id tenant A already uses.
    run(&format!(
        "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
         VALUES ('{E1}', '{TENANT_B}', '2026-01-01 11:00Z', 250, '{{}}') ON CONFLICT DO NOTHING"
    ));
    assert_eq!(one::<i64>(&format!("SELECT count(*) FROM attribution_events WHERE id = '{E1}'")), 2);
    compute(TENANT_B, "2026-01-01Z", "2026-01-02Z");
    assert_eq!(
        one::<i64>(&format!(
            "SELECT sum(allocated_revenue_cents)::bigint FROM attribution_allocations WHERE tenant_id = '{TENANT_B}' AND event_id = '{E1}'"
        )),
        250
    );
    // Replaying it is still a no-op, and tenant A's row is untouched.
    run(&format!(
        "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
         VALUES ('{E1}', '{TENANT_B}', '2026-01-01 11:00Z', 999, '{{}}') ON CONFLICT DO NOTHING"
    ));
    assert_eq!(
        one::<String>(&format!(
            "SELECT string_agg(revenue_cents::text, ',' ORDER BY revenue_cents) FROM attribution_events WHERE id = '{E1}'"
        )),
        "100,250"
    );
}

#[pg_test]
fn timestamps_with_no_storable_window_are_refused_with_22008() {
    tenants();
    for ts in ["294247-01-11", "294276-12-31 12:00Z", "294276-12-31 23:59:59.999999Z"] {
        assert_eq!(
            sqlstate_of(&format!(
                "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES ('{E1}', '{TENANT_A}', '{ts}', 1)"
            ))
            .as_deref(),
            Some("22008"),
            "{ts}"
        );
    }
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_events"), 0);
    // A malformed tenant context is a clean 22P02, not a panic.
    run("SELECT set_config('attribution.tenant_id', 'not-a-uuid', true)");
    assert_eq!(
        sqlstate_of(&format!("SELECT schedule_recompute_window('{TENANT_A}', '2026-01-01', '2026-01-02')")).as_deref(),
        Some("22P02")
    );
}

#[pg_test]
fn the_trigger_schedules_nothing_while_a_dump_is_restored() {
    tenants();
    // pg_dump's output and pg_restore run with row_security = off.
    run("SET LOCAL row_security = off");
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    assert_eq!(jobs(TENANT_A), 0);
    run("SET LOCAL row_security = on");
    insert_events(TENANT_A, &[(E2, "2026-01-01 10:00Z", 100)]);
    assert_eq!(jobs(TENANT_A), 1);
}

#[pg_test]
fn every_table_of_the_extension_is_dumped_with_its_rows() {
    // pg_dump skips the rows of an extension's tables unless they are registered with
    // pg_extension_config_dump (sql/schema.sql): a table left out loses them on restore.
    let undumped: Option<String> = Spi::get_one(
        "SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
           FROM pg_class c
           JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_attribution'
          WHERE c.relkind IN ('r', 'p', 'S') AND NOT c.oid = ANY (e.extconfig)",
    )
    .expect("reading the catalog");
    assert_eq!(undumped, None, "tables and sequences whose rows pg_dump would lose");
}

#[pg_test]
fn functions_that_run_sql_pin_their_search_path() {
    let unpinned: i64 = one(
        "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_attribution'
          WHERE d.deptype = 'e' AND p.pronamespace = e.extnamespace
            AND p.proname NOT IN ('attribution_split_cents', 'attribution_current_tenant',
                                  'attribution_check_model', 'attribution_touch_split',
                                  'attribution_touch_split_e10')
            AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)",
    );
    assert_eq!(unpinned, 0);
    let public_execute: i64 = one(
        "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
           JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_attribution'
          WHERE d.deptype = 'e' AND p.pronamespace = e.extnamespace AND p.prosecdef AND has_function_privilege('public', p.oid, 'EXECUTE')",
    );
    assert_eq!(public_execute, 0, "SECURITY DEFINER functions revoke EXECUTE from PUBLIC");
}

#[pg_test]
fn the_schedule_trigger_refuses_to_fire_on_any_other_table() {
    tenants();
    // 0.1.0 let any role attach the function to a table of its own; it runs as the
    // extension's owner, so it must refuse to read anyone else's transition tables.
    run("CREATE TABLE pg_temp.bait (tenant_id uuid, occurred_at timestamptz)");
    run("CREATE TRIGGER bait AFTER INSERT ON pg_temp.bait REFERENCING NEW TABLE AS attribution_new_events
         FOR EACH STATEMENT EXECUTE FUNCTION attribution_events_schedule()");
    assert_eq!(
        sqlstate_of(&format!("INSERT INTO pg_temp.bait VALUES ('{TENANT_B}', '2026-01-01')")).as_deref(),
        Some("42501")
    );
    assert_eq!(jobs(TENANT_B), 0);
}

#[pg_test]
fn split_cents_refuses_oversized_weights_before_copying_them() {
    assert_eq!(sqlstate_of("SELECT attribution_split_cents(1, array_fill(1, ARRAY[1000000]))").as_deref(), Some("22023"));
}

#[pg_test]
fn metrics_count_jobs_and_dead_letters_per_tenant_for_pg_monitor_only() {
    tenants();
    schedule(TENANT_A, "2026-01-01", "2026-01-02");
    schedule(TENANT_A, "2026-01-02", "2026-01-03");
    let failed = schedule(TENANT_B, "2026-01-01", "2026-01-02");
    run(&format!("UPDATE attribution_recompute_jobs SET status = 'failed', attempts = 3 WHERE id = '{failed}'"));
    run(&format!(
        "INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, error_message, attempts)
         VALUES ('{failed}', '{TENANT_B}', '{{}}', 'c', 'boom', 3)"
    ));
    let rows: String = one(
        "SELECT string_agg(tenant_id || ':' || pending || '/' || runnable || '/' || failed || '/' || dead_letters, ' ' ORDER BY tenant_id)
           FROM attribution_metrics()",
    );
    assert_eq!(rows, format!("{TENANT_A}:2/2/0/0 {TENANT_B}:0/0/1/1"));
    assert!(one::<bool>("SELECT has_function_privilege('pg_monitor', 'attribution_metrics()', 'EXECUTE')"));
    assert!(!one::<bool>("SELECT has_function_privilege('attribution_app', 'attribution_metrics()', 'EXECUTE')"));
}

#[pg_test]
fn the_sql_uses_the_names_the_rust_code_defines() {
    use crate::names::{BACKEND_TYPE, EXTENSION, WORKER_ROLE};
    assert!(one::<bool>(&format!("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = '{EXTENSION}')")));
    assert!(one::<bool>(&format!(
        "SELECT pg_get_functiondef('attribution_worker_count()'::regprocedure) LIKE '%''{BACKEND_TYPE}''%'"
    )));
    let policies: i64 = one(&format!(
        "SELECT count(*) FROM pg_policy WHERE '{WORKER_ROLE}'::regrole = ANY (polroles)"
    ));
    assert_eq!(policies, 2, "the queue and dead-letter policies name the worker role");
}

#[pg_test]
fn small_statements_record_changed_events_and_bulk_ones_ask_for_a_full_pass() {
    tenants();
    leave_inserts_to_the_workers();
    let changes = |filter: &str| one::<i64>(&format!("SELECT count(*) FROM attribution_event_changes WHERE {filter}"));
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100), (E2, "2026-01-01 11:00Z", 7)]);
    assert_eq!(changes("true"), 2, "one record per event and active model");
    assert!(!one::<bool>("SELECT bool_or(full_requested) FROM attribution_recompute_jobs"));
    // A move records the event where it now is; a delete records nothing.
    run(&format!("UPDATE attribution_events SET occurred_at = '2026-01-02 10:00Z' WHERE id = '{E1}'"));
    assert_eq!(changes("occurred_at >= '2026-01-02Z'"), 1);
    run(&format!("DELETE FROM attribution_events WHERE id = '{E2}'"));
    assert_eq!(changes("true"), 3);
    // A statement over attribution.incremental_max_rows asks for a full pass instead.
    run("SET LOCAL attribution.incremental_max_rows = 1");
    insert_events(
        TENANT_A,
        &[(E3, "2026-01-03 10:00Z", 1), ("10000000-0000-4000-8000-000000000004", "2026-01-03 11:00Z", 2)],
    );
    assert_eq!(changes("occurred_at >= '2026-01-03Z'"), 0);
    assert!(one::<bool>("SELECT full_requested FROM attribution_recompute_jobs WHERE window_start = '2026-01-03Z'"));
    // Computing a window consumes its records, and only its own.
    compute(TENANT_A, "2026-01-01Z", "2026-01-02Z");
    assert_eq!(changes("occurred_at < '2026-01-02Z'"), 0);
    assert_eq!(changes("occurred_at >= '2026-01-02Z'"), 1);
    // schedule_full_recompute asks for a full pass on an existing job.
    assert!(!one::<bool>("SELECT full_requested FROM attribution_recompute_jobs WHERE window_start = '2026-01-02Z'"));
    run(&format!("SELECT schedule_full_recompute('{TENANT_A}', '2026-01-02', '2026-01-03')"));
    assert!(one::<bool>("SELECT full_requested FROM attribution_recompute_jobs WHERE window_start = '2026-01-02Z'"));
}

#[pg_test]
fn changing_a_model_schedules_a_full_pass_of_every_window_with_events() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100), (E2, "2026-01-03 11:00Z", 7)]);
    insert_events(TENANT_B, &[(E3, "2026-01-02 10:00Z", 5)]);
    run("UPDATE attribution_recompute_jobs SET status = 'succeeded', computed_at = now()");
    let full_jobs = |model: &str| {
        one::<String>(&format!(
            "SELECT coalesce(string_agg(tenant_id::text || '@' || window_start::date::text, ',' ORDER BY tenant_id, window_start), '')
               FROM attribution_recompute_jobs
              WHERE model_version = '{model}' AND status = 'pending' AND full_requested"
        ))
    };
    // A description is not a change.
    run("UPDATE attribution_models SET description = 'renamed' WHERE model_version = '1.0.0'");
    assert_eq!(full_jobs("1.0.0"), "");
    // New weights: every tenant's windows with events, for that model only.
    run("UPDATE attribution_models SET weights = ARRAY[2, 1, 1] WHERE model_version = '1.0.0'");
    let expected = format!("{TENANT_A}@2026-01-01,{TENANT_A}@2026-01-03,{TENANT_B}@2026-01-02");
    assert_eq!(full_jobs("1.0.0"), expected);
    // A new active model gets its windows; an inactive one does not, until activated.
    run("INSERT INTO attribution_models (model_version, channels, weights) VALUES ('2.0.0', ARRAY['x'], ARRAY[1])");
    assert_eq!(full_jobs("2.0.0"), expected);
    run("INSERT INTO attribution_models (model_version, channels, weights, active) VALUES ('3.0.0', ARRAY['x'], ARRAY[1], false)");
    assert_eq!(full_jobs("3.0.0"), "");
    run("UPDATE attribution_models SET active = true WHERE model_version = '3.0.0'");
    assert_eq!(full_jobs("3.0.0"), expected);
    // The trigger function refuses to run for any other table.
    run("CREATE TABLE not_models (model_version text, channels text[], weights int[], active bool)");
    run("CREATE TRIGGER t AFTER INSERT ON not_models REFERENCING NEW TABLE AS attribution_new_models FOR EACH STATEMENT EXECUTE FUNCTION attribution_models_schedule()");
    assert_eq!(
        sqlstate_of("INSERT INTO not_models VALUES ('9', ARRAY['x'], ARRAY[1], true)").as_deref(),
        Some("42501")
    );
}

#[pg_test]
fn a_first_pass_inserts_and_falls_back_to_an_upsert_when_allocations_exist() {
    use crate::compute::{compute_window, LockWait, Pass};
    tenants();
    leave_inserts_to_the_workers();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100), (E2, "2026-01-01 11:00Z", 7)]);
    let micros = |ts: &str| i64::from(one::<TimestampWithTimeZone>(&format!("SELECT '{ts}'::timestamptz")));
    let window = crate::engine::window::Window::new(micros("2026-01-01Z"), micros("2026-01-02Z"), true, 86400)
        .expect("a valid window");
    let tenant = one::<pgrx::Uuid>(&format!("SELECT '{TENANT_A}'::uuid"));
    let first = || {
        let c = compute_window(tenant, window, "1.0.0", "first", LockWait::Wait, Pass::First).expect("computed");
        (c.events, c.written)
    };
    // A window never computed: plain inserts.
    assert_eq!(first(), (2, 6));
    assert_cents_conserved();
    // Its allocations exist now: the insert hits the unique key, its subtransaction is
    // rolled back, and the upsert writes only the rows that differ (100 -> 101 cents
    // changes one channel's share).
    run(&format!("UPDATE attribution_events SET revenue_cents = 101 WHERE id = '{E1}'"));
    assert_eq!(first(), (2, 1));
    assert_cents_conserved();
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_allocations"), 6);
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_event_changes WHERE occurred_at < '2026-01-02Z'"), 0);
    // An incremental run inserts the allocations of events recorded as inserted without
    // the conflict check, and falls back to the upsert when they exist after all.
    let incremental = || {
        let c = compute_window(tenant, window, "1.0.0", "inc", LockWait::Wait, Pass::IncrementalSince(0))
            .expect("computed");
        (c.events, c.written, c.incremental)
    };
    insert_events(TENANT_A, &[(E3, "2026-01-01 12:00Z", 30)]);
    assert_eq!(incremental(), (1, 3, true));
    // (A record that says "inserted" for an event that has allocations.)
    run(&format!("UPDATE attribution_events SET revenue_cents = 31 WHERE id = '{E3}'"));
    run("DELETE FROM attribution_event_changes");
    run(&format!(
        "INSERT INTO attribution_event_changes (tenant_id, model_version, occurred_at, event_id, inserted)
         VALUES ('{TENANT_A}', '1.0.0', '2026-01-01 12:00Z', '{E3}', true)"
    ));
    assert_eq!(incremental(), (1, 1, true));
    assert_cents_conserved();
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_allocations"), 9);
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_event_changes"), 0);
    // The foreign key's insert check is off; its update check and cascade are not.
    assert_eq!(
        one::<String>(
            "SELECT string_agg(t.tgfoid::regproc::text || '=' || t.tgenabled::text, ',' ORDER BY t.tgfoid::regproc::text)
               FROM pg_trigger t JOIN pg_constraint c ON c.oid = t.tgconstraint
              WHERE c.conname = 'attribution_allocations_event_fkey'
                AND t.tgrelid = 'attribution_allocations'::regclass"
        ),
        "\"RI_FKey_check_ins\"=D,\"RI_FKey_check_upd\"=O"
    );
    assert_eq!(
        sqlstate_of(&format!(
            "UPDATE attribution_allocations SET event_id = '10000000-0000-4000-8000-0000000000ff' WHERE event_id = '{E2}'"
        ))
        .as_deref(),
        Some("23503")
    );
    run(&format!("DELETE FROM attribution_events WHERE id = '{E1}'"));
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_allocations"), 6);
}

#[pg_test]
fn a_hot_window_is_computed_slice_by_slice_and_others_can_take_a_slice() {
    use crate::compute::{compute_window, help_with_slice, LockWait, Pass};
    tenants();
    leave_inserts_to_the_workers();
    // More changes than one statement takes at once: 5,000 new events of one day.
    run(&format!(
        "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
         SELECT gen_random_uuid(), '{TENANT_A}', '2026-01-01Z'::timestamptz + g * interval '1 second', g
           FROM generate_series(1, 5000) g"
    ));
    let changes = || one::<i64>("SELECT count(*) FROM attribution_event_changes");
    assert_eq!(changes(), 5000);
    let micros = |ts: &str| i64::from(one::<TimestampWithTimeZone>(&format!("SELECT '{ts}'::timestamptz")));
    let window = crate::engine::window::Window::new(micros("2026-01-01Z"), micros("2026-01-02Z"), true, 86400)
        .expect("a valid window");
    let tenant = one::<pgrx::Uuid>(&format!("SELECT '{TENANT_A}'::uuid"));
    // Another worker takes one slice (the last): about a quarter of the changes.
    let helped = help_with_slice(tenant, window, "1.0.0", "helper").expect("helped").expect("a slice");
    assert!((800..=1700).contains(&helped), "one slice of four: {helped} events");
    assert_eq!(changes(), 5000 - helped);
    // The run computes the rest, slice by slice.
    let c = compute_window(tenant, window, "1.0.0", "owner", LockWait::Wait, Pass::IncrementalSince(0))
        .expect("computed");
    assert_eq!((c.events, c.written, c.incremental), (5000 - helped, (5000 - helped) * 3, true));
    assert_eq!(changes(), 0);
    assert_eq!(one::<i64>("SELECT count(*) FROM attribution_allocations"), 15000);
    assert_cents_conserved();
    // Nothing left to help with.
    assert_eq!(help_with_slice(tenant, window, "1.0.0", "helper").expect("helped"), None);
}

#[pg_test]
fn touch_split_allocates_exact_cents_along_the_path() {
    // Linear over search, email, search: search 2/3, email 1/3; 1001 cents.
    let rows: String = one(
        "SELECT string_agg(channel || ':' || cents || ':' || round(ratio::numeric, 4), ',' ORDER BY channel)
           FROM attribution_touch_split(1001, '2026-03-10Z',
                ARRAY['2026-03-01Z', '2026-03-05Z', '2026-03-09Z']::timestamptz[],
                ARRAY['search', 'email', 'search'], 'linear', '{}')",
    );
    assert_eq!(rows, "email:334:0.3333,search:667:0.6667");
    // A refund mirrors it.
    let refund: String = one(
        "SELECT string_agg(channel || ':' || cents, ',' ORDER BY channel)
           FROM attribution_touch_split(-1001, '2026-03-10Z',
                ARRAY['2026-03-01Z', '2026-03-05Z', '2026-03-09Z']::timestamptz[],
                ARRAY['search', 'email', 'search'], 'linear', '{}')",
    );
    assert_eq!(refund, "email:-334,search:-667");
    // No path, or none within the lookback: the no-touch channel takes it all.
    let none: String = one(
        "SELECT string_agg(channel || ':' || cents, ',') FROM attribution_touch_split(500, '2026-03-10Z', NULL, NULL, 'first_touch', '{\"no_touch_channel\": \"unknown\"}')",
    );
    assert_eq!(none, "unknown:500");
    let old: String = one(
        "SELECT string_agg(channel || ':' || cents, ',') FROM attribution_touch_split(500, '2026-03-10Z',
                ARRAY['2026-01-01Z']::timestamptz[], ARRAY['email'], 'last_touch', '{\"lookback_days\": 30}')",
    );
    assert_eq!(old, "direct:500");
    // Bad input is a clear 22023 (or 22004 for a NULL revenue), never a wrong split.
    for bad in [
        "SELECT * FROM attribution_touch_split(1, now(), ARRAY[now()], ARRAY['a', 'b'], 'linear', '{}')",
        "SELECT * FROM attribution_touch_split(1, now(), ARRAY[now()], ARRAY[NULL::text], 'linear', '{}')",
        "SELECT * FROM attribution_touch_split(1, now(), NULL, NULL, 'markow', '{}')",
        "SELECT * FROM attribution_touch_split(1, now(), NULL, NULL, 'linear', '{\"last_n\": 0}')",
    ] {
        assert_eq!(sqlstate_of(bad).as_deref(), Some("22023"), "{bad}");
    }
    assert_eq!(
        sqlstate_of("SELECT * FROM attribution_touch_split(NULL, now(), NULL, NULL, 'linear', '{}')").as_deref(),
        Some("22004")
    );
}

#[pg_test]
fn a_multi_touch_model_is_scheduled_only_for_the_tenants_that_use_it() {
    tenants();
    insert_events(TENANT_A, &[(E1, "2026-01-01 10:00Z", 100)]);
    insert_events(TENANT_B, &[(E2, "2026-01-01 10:00Z", 100)]);
    run(&format!("INSERT INTO attribution_tenant_models (tenant_id, model_version) SELECT '{TENANT_B}', '1.0.0'"));
    run("INSERT INTO attribution_models (model_version, kind, params) VALUES ('mt', 'linear', '{}')");
    let mt_jobs = |tenant: &str| -> i64 {
        one(&format!(
            "SELECT count(*) FROM attribution_recompute_jobs WHERE tenant_id = '{tenant}' AND model_version = 'mt'"
        ))
    };
    assert_eq!((mt_jobs(TENANT_A), mt_jobs(TENANT_B)), (0, 0), "no tenant uses it yet");
    run(&format!("INSERT INTO attribution_tenant_models (tenant_id, model_version) VALUES ('{TENANT_A}', 'mt')"));
    assert_eq!((mt_jobs(TENANT_A), mt_jobs(TENANT_B)), (1, 0), "turning it on schedules the tenant's window");
    let full: bool = one(&format!(
        "SELECT full_requested FROM attribution_recompute_jobs WHERE tenant_id = '{TENANT_A}' AND model_version = 'mt'"
    ));
    assert!(full, "as a full pass");
    // New events of A are recorded for it; B's are not.
    insert_events(TENANT_A, &[("00000000-0000-4000-8000-0000000000a3", "2026-01-02 10:00Z", 100)]);
    insert_events(TENANT_B, &[("00000000-0000-4000-8000-0000000000b3", "2026-01-02 10:00Z", 100)]);
    assert_eq!((mt_jobs(TENANT_A), mt_jobs(TENANT_B)), (2, 0));
    let recorded: i64 = one("SELECT count(*) FROM attribution_event_changes WHERE model_version = 'mt'");
    assert_eq!(recorded, 1);
}

#[pg_test]
fn the_touchpoint_trigger_refuses_to_fire_on_any_other_table() {
    tenants();
    run("CREATE TABLE pg_temp.bait (tenant_id uuid, customer_key text, occurred_at timestamptz)");
    run("CREATE TRIGGER bait AFTER INSERT ON pg_temp.bait REFERENCING NEW TABLE AS attribution_new_touchpoints
         FOR EACH STATEMENT EXECUTE FUNCTION attribution_touchpoints_schedule()");
    assert_eq!(
        sqlstate_of(&format!("INSERT INTO pg_temp.bait VALUES ('{TENANT_B}', 'c', '2026-01-01')")).as_deref(),
        Some("42501")
    );
}
