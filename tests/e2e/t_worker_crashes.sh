# kill -9 of a worker in the middle of a job, a job that crashes its worker every time,
# and an immediate shutdown during a drain: nothing lost, nothing doubled.

# What is tested here is the workers' runs: the inserts leave their events to them
# rather than allocating them themselves.
sql -c "ALTER DATABASE $E2E_DB SET attribution.allocate_on_insert = off" >/dev/null
sql -c "$(tenants_sql)" >/dev/null

# 1. kill -9 mid-job. A session holds attribution_allocations in SHARE mode, so the job
#    waits to write its allocations and is provably in the middle of its run when the
#    worker is killed. (Advisory locks no longer hold up a job: the workers take none.)
#    The worker's lock_timeout is raised so that it does not put the job back first.
reload_with "attribution.lock_timeout = '60s'"
( PGAPPNAME=e2e_lock_holder sql -c "BEGIN" -c "LOCK TABLE attribution_allocations IN SHARE MODE" -c "SELECT pg_sleep(60)" >/dev/null 2>&1 || true ) &
holder=$!
wait_for 10 "SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'e2e_lock_holder' AND l.relation = 'attribution_allocations'::regclass AND l.granted"
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
        SELECT gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', timestamptz '2026-02-01 00:00Z' + g * interval '1 minute', g
          FROM generate_series(1, 500) g" >/dev/null
wait_for 10 "SELECT status = 'running' FROM attribution_recompute_jobs"
pid=$(sql -c "SELECT worker_pid FROM attribution_recompute_jobs")
kill -9 "$pid"
echo "  killed worker $pid mid-job (the server restarts all backends after a crash)"
wait "$holder" || true
sleep 1
wait_for_workers 2
wait_for_drain 30
assert_eq "$(sql -c "SELECT status || '/' || run_count FROM attribution_recompute_jobs")" "succeeded/2" \
    "the interrupted job ran again and succeeded"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations")" 1500 "500 events, 3 allocations each"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue after the crash"

# 2. A job that crashes its worker every time ends in the dead-letter table.
reload_with "attribution.failure_injection = on"
sql >/dev/null <<'SQL'
BEGIN;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-03-01 12:00Z', 100);
UPDATE attribution_recompute_jobs SET inject_failure = 'crash' WHERE window_start = '2026-03-01Z';
COMMIT;
SQL
wait_for 120 "SELECT status = 'failed' FROM attribution_recompute_jobs WHERE window_start = '2026-03-01Z'"
assert_eq "$(sql -c "SELECT attempts || '/' || (error_message LIKE 'the worker running this job exited%') FROM worker_failed_jobs")" "3/true" \
    "after 3 crashed attempts the job is dead-lettered, not looping"
reload_with "attribution.failure_injection = off"
wait_for_workers 2
sql -c "UPDATE attribution_recompute_jobs SET inject_failure = NULL" \
    -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" -c "SELECT redrive_failed_job(id) FROM worker_failed_jobs" >/dev/null
wait_for_drain 30
echo "  ok: re-driven once fixed, the job completes"

# 3. Immediate shutdown in the middle of a drain of 300 windows.
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
        SELECT gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', timestamptz '2027-01-01 12:00Z' + (g % 300) * interval '1 day', g
          FROM generate_series(1, 3000) g" >/dev/null
sleep 0.3
done_before=$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status = 'succeeded' AND window_start >= '2027-01-01Z'")
cluster_stop "$E2E_DATA" immediate
echo "  stopped the server in immediate mode with $done_before of 300 windows done"
cluster_restart "$E2E_DATA"
wait_for_workers 2
wait_for_drain 60
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE window_start >= '2027-01-01Z' AND status = 'succeeded'")" 300 \
    "every window completed after the restart"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations a JOIN attribution_events e ON e.id = a.event_id WHERE e.occurred_at >= '2027-01-01Z'")" 9000 \
    "3000 events, exactly 3 allocations each: nothing lost, nothing doubled"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue for every event"
