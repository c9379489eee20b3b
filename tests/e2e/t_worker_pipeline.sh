# The whole pipeline with nothing but the old system's INSERT: trigger, wake-on-commit,
# worker, allocations. The correlation id travels from the session to the job, the
# allocations and the worker's log lines.

sql -c "$(tenants_sql)" >/dev/null
sql -c "SET attribution.correlation_id = 'req-e2e-1'" -c "
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload) VALUES
    ('cccccccc-0000-4000-8000-000000000001', 'aaaaaaaa-0000-4000-8000-000000000001', CAST('2026-02-10T08:00:00+00:00' AS timestamptz), 1000, '{}'::jsonb),
    ('cccccccc-0000-4000-8000-000000000002', 'aaaaaaaa-0000-4000-8000-000000000001', CAST('2026-02-11T08:00:00+00:00' AS timestamptz), 2999, '{}'::jsonb)
    ON CONFLICT DO NOTHING" >/dev/null

wait_for 10 "SELECT count(*) = 6 FROM attribution_allocations"
echo "  ok: the INSERT alone led to allocations"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue"
assert_eq "$(sql -c "SELECT string_agg(DISTINCT status || '/' || run_count || '/' || last_correlation_id, ',') FROM attribution_recompute_jobs")" \
    "succeeded/1/req-e2e-1" "both jobs succeeded once with the session's correlation id"
assert_eq "$(sql -c "SELECT string_agg(DISTINCT correlation_id, ',') FROM attribution_allocations")" "req-e2e-1" \
    "allocations carry the correlation id of the run that wrote them"
assert_eq "$(sql -c "SELECT bool_and(worker_pid IS NULL AND started_at IS NOT NULL AND finished_at >= started_at) FROM attribution_recompute_jobs")" t \
    "jobs record their start and finish times"

# Twenty one-event windows, each allocated with no further call (latency is measured
# by bench/run.sh, not here).
sql >/dev/null <<'SQL'
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', timestamptz '2026-03-01Z' + g * interval '1 day', 100
  FROM generate_series(1, 20) g;
SQL
wait_for 20 "SELECT count(*) = 22 FROM attribution_recompute_jobs WHERE status = 'succeeded'"
echo "  ok: every one-event window ran"
assert_eq "$(events_off_by_a_cent)" 0 "and every cent of them is allocated"

grep -q "correlation_id req-e2e-1" "$E2E_DATA/server.log" || \
    reload_with "log_min_messages = debug1"   # success lines are DEBUG1; make sure we can see one
sql -c "SET attribution.correlation_id = 'req-e2e-log'" \
    -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-05-01', 5)" >/dev/null
wait_for 10 "SELECT count(*) = 0 FROM attribution_recompute_jobs WHERE status <> 'succeeded'"
sleep 0.2
grep -q "tenant aaaaaaaa-0000-4000-8000-000000000001 correlation_id req-e2e-log" "$E2E_DATA/server.log" \
    || fail "the worker's log line lacks the tenant and correlation id"
echo "  ok: the worker logs the tenant and correlation id of each job"

assert_eq "$(sql -c "SELECT pending = 0 AND running = 0 AND workers = 2 AND finished_last_minute >= 23 FROM attribution_queue_health")" t \
    "attribution_queue_health shows an empty queue, two workers and recent work"

# SIGTERM (pg_terminate_backend) ends a worker the Postgres way; the postmaster brings it
# back and the pipeline carries on.
old_pids=$(admin -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'")
admin -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'" >/dev/null
sleep 0.5
wait_for_workers 2
new_pids=$(admin -c "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'")
[ "$old_pids" != "$new_pids" ] || fail "the workers were not replaced after SIGTERM"
grep -q 'terminating background worker "pg_attribution worker' "$E2E_DATA/server.log" || fail "SIGTERM was not handled by die()"
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-06-01', 9)" >/dev/null
wait_for_drain 10
echo "  ok: terminated workers are restarted and keep draining"

# Succeeded jobs older than attribution.finished_job_retention are pruned.
reload_with "attribution.finished_job_retention = '1s'"
sleep 1.5
admin -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'" >/dev/null
wait_for_workers 2   # a restarted worker does its housekeeping first thing
wait_for 20 "SELECT count(*) = 0 FROM attribution_recompute_jobs WHERE status = 'succeeded'"
echo "  ok: finished jobs are pruned after attribution.finished_job_retention"
