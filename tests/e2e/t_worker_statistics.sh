# The workers report what they do the way client backends do: table statistics (so that
# autovacuum sees the rows they update and insert) and their activity in
# pg_stat_activity ('active' with the job while one runs, 'idle' between jobs).

A=$TENANT_A
# What is tested here is the workers' runs: the inserts leave their events to them
# rather than allocating them themselves.
sql -c "ALTER DATABASE $E2E_DB SET attribution.allocate_on_insert = off" >/dev/null
sql -c "$(tenants_sql)" >/dev/null

wait_for 10 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker' AND state = 'idle'"
echo "  ok: idle workers show state 'idle'"

# Table statistics. Every job is one claim and one finish, so 2000 one-event windows are
# at least 4000 job-row updates and 6000 allocation inserts, all made by the workers.
stats() {
    sql -c "SELECT (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'attribution_recompute_jobs'::regclass)
                || ' ' || (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'attribution_allocations'::regclass)"
}
read -r upd_before ins_before <<< "$(stats)"
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
        SELECT gen_random_uuid(), '$A', timestamptz '2020-01-01 12:00Z' + g * interval '1 day', g
          FROM generate_series(1, 2000) g" >/dev/null
wait_for_drain 120
sleep 1.5   # statistics are flushed at most once a second, and when a worker goes idle
wait_for 15 "SELECT (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'attribution_recompute_jobs'::regclass) - $upd_before >= 4000
                AND (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'attribution_allocations'::regclass) - $ins_before >= 6000"
read -r upd_after ins_after <<< "$(stats)"
echo "  ok: pg_stat_user_tables counts the workers' writes: $((upd_after - upd_before)) job updates, $((ins_after - ins_before)) allocation inserts"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue"

# Activity. A session holds attribution_allocations in SHARE mode, so the next job's write
# waits for it: provably in the middle of its run. The worker's lock_timeout is raised so
# that it does not put the job back while we look.
reload_with "attribution.lock_timeout = '30s'"
PGAPPNAME=e2e_stats_holder sql -c "BEGIN" -c "LOCK TABLE attribution_allocations IN SHARE MODE" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
holder=$!
wait_for 10 "SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'e2e_stats_holder' AND l.relation = 'attribution_allocations'::regclass AND l.granted"
sql -c "SET attribution.correlation_id = 'req-stats'" \
    -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), '$A', '2030-01-01 12:00Z', 100)" >/dev/null
job=$(sql -c "SELECT id FROM attribution_recompute_jobs WHERE window_start = '2030-01-01Z'")
wait_for 10 "SELECT count(*) = 1 FROM pg_stat_activity
              WHERE backend_type = 'pg_attribution worker' AND state = 'active' AND wait_event_type = 'Lock'
                AND query = 'pg_attribution job $job tenant $A model 1.0.0 correlation_id req-stats'"
echo "  ok: the worker running the job shows state 'active' and the job, tenant, model and correlation id as its query"
assert_eq "$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker' AND state = 'idle'")" 1 \
    "the other worker shows state 'idle'"
admin -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'e2e_stats_holder'" >/dev/null
wait "$holder" || true
wait_for 10 "SELECT status = 'succeeded' AND run_count = 1 FROM attribution_recompute_jobs WHERE id = '$job'"
wait_for 10 "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker' AND state = 'idle'"
echo "  ok: once the lock is gone the job finishes in its one run and both workers show 'idle' again"
