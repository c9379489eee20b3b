# A job that fails: retried with backoff, then dead-lettered with its correlation id,
# SQLSTATE, message and payload; the worker survives; a re-drive succeeds. The failure
# flag is ignored unless the server enables attribution.failure_injection (SIGHUP).

# What is tested here is the workers' runs: the inserts leave their events to them
# rather than allocating them themselves.
sql -c "ALTER DATABASE $E2E_DB SET attribution.allocate_on_insert = off" >/dev/null
sql -c "$(tenants_sql)" >/dev/null
enqueue_failing() {  # $1 = day, $2 = mode: enqueue and flag in one transaction
    sql >/dev/null <<SQL
BEGIN;
SET LOCAL attribution.correlation_id = 'req-fail-$1';
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-02-$1 12:00Z', 100);
UPDATE attribution_recompute_jobs SET inject_failure = '$2' WHERE window_start = '2026-02-$1Z';
COMMIT;
SQL
}

# Injection off: the flag is ignored and the job succeeds.
enqueue_failing 01 error
wait_for_drain 20
assert_eq "$(sql -c "SELECT status FROM attribution_recompute_jobs WHERE window_start = '2026-02-01Z'")" succeeded \
    "without attribution.failure_injection the flag is ignored"

reload_with "attribution.failure_injection = on"
enqueue_failing 02 error
wait_for 30 "SELECT status = 'failed' FROM attribution_recompute_jobs WHERE window_start = '2026-02-02Z'"
assert_eq "$(sql -c "SELECT attempts || '/' || run_count || '/' || last_sqlstate FROM attribution_recompute_jobs WHERE window_start = '2026-02-02Z'")" \
    "3/3/09000" "three attempts, then failed with the error's SQLSTATE"
assert_eq "$(sql -c "SELECT correlation_id || '|' || sqlstate || '|' || attempts || '|' || (error_message LIKE 'injected failure%') || '|' || (payload->>'model_version') || '|' || (payload->>'window_start')::timestamptz FROM worker_failed_jobs")" \
    "req-fail-02|09000|3|true|1.0.0|2026-02-02 00:00:00+00" "the dead letter keeps correlation id, SQLSTATE, message and payload"
grep -q "failed (attempt 1 of 3), retrying" "$E2E_DATA/server.log" || fail "no retry was logged"
grep -q "correlation_id req-fail-02 failed after 3 attempts" "$E2E_DATA/server.log" || fail "the dead-lettering was not logged with its correlation id"
echo "  ok: retries and the final failure are logged with the correlation id"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations a JOIN attribution_events e ON e.id = a.event_id WHERE e.occurred_at >= '2026-02-02Z' AND e.occurred_at < '2026-02-03Z'")" 0 \
    "a failed run leaves no partial allocations"

# The workers survived: other work still flows.
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-02-03 12:00Z', 7)" >/dev/null
wait_for 10 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE window_start = '2026-02-03Z'"
echo "  ok: the workers keep draining after a dead-lettered job"

# Re-drive once the cause is fixed.
sql -c "UPDATE attribution_recompute_jobs SET inject_failure = NULL WHERE window_start = '2026-02-02Z'" >/dev/null
# redrive_failed_job runs as the extension's owner and shows only the context's tenant's
# dead letters, for a superuser too.
job=$(sql -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" -c "SELECT redrive_failed_job(id) FROM worker_failed_jobs")
wait_for 10 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE id = '$job'"
assert_eq "$(sql -c "SELECT last_correlation_id || '/' || (SELECT redriven_at IS NOT NULL FROM worker_failed_jobs) FROM attribution_recompute_jobs WHERE id = '$job'")" \
    "req-fail-02/true" "a re-driven job keeps its correlation id and succeeds"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue"
assert_eq "$(sql -c "SELECT dead_letters FROM attribution_queue_health")" 0 "re-driven dead letters no longer count"

# attribution.job_timeout cancels a run that takes too long; it counts as a failed
# attempt with SQLSTATE 57014 and is retried. The job is held up writing its allocations:
# another session holds attribution_allocations in SHARE mode. (Advisory locks no longer
# hold up a job: the workers do not take any.)
reload_with "attribution.failure_injection = off" "attribution.job_timeout = '300ms'" "attribution.max_attempts = 1"
( PGAPPNAME=e2e_lock_holder sql -c "BEGIN" -c "LOCK TABLE attribution_allocations IN SHARE MODE" -c "SELECT pg_sleep(3)" >/dev/null 2>&1 || true ) &
holder=$!
wait_for 3 "SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'e2e_lock_holder' AND l.relation = 'attribution_allocations'::regclass AND l.granted"
sql -c "SET attribution.correlation_id = 'req-slow'" \
    -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-02-20 12:00Z', 1)" >/dev/null
wait_for 10 "SELECT status = 'failed' FROM attribution_recompute_jobs WHERE window_start = '2026-02-20Z'"
assert_eq "$(sql -c "SELECT sqlstate || '/' || correlation_id FROM worker_failed_jobs WHERE correlation_id = 'req-slow'")" "57014/req-slow" \
    "a run longer than attribution.job_timeout is cancelled and recorded with SQLSTATE 57014"
wait "$holder" || true
