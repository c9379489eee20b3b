# A lock someone else holds never costs a job an attempt: an application role that
# locks attribution_events (Postgres lets any role with UPDATE do that) makes the
# workers time out after attribution.lock_timeout and put the job back, again and again,
# without dead-lettering it even with max_attempts = 1; once the lock is gone the job
# succeeds. The window locks themselves are object locks no session can take.

# What is tested here is the workers' runs: the inserts leave their events to them
# rather than allocating them themselves.
sql -c "ALTER DATABASE $E2E_DB SET attribution.allocate_on_insert = off" >/dev/null
sql -c "$(tenants_sql)" >/dev/null
sql >/dev/null <<'SQL'
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-04-01 12:00Z', 100);
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'e2e_locker') THEN CREATE ROLE e2e_locker LOGIN; END IF;
END $$;
GRANT attribution_app TO e2e_locker;
SQL
wait_for_drain 20
reload_with "attribution.max_attempts = 1" "attribution.lock_timeout = '300ms'"

# The hostile session holds the table lock for 4 seconds.
"$PG_BIN/psql" -X -q -h "$E2E_DATA" -p "$E2E_PORT" -U e2e_locker -d "$E2E_DB" \
    -c "BEGIN" -c "LOCK TABLE attribution_events IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(4)" -c "COMMIT" >/dev/null &
locker=$!
wait_for 10 "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                             WHERE c.relname = 'attribution_events' AND l.mode = 'AccessExclusiveLock' AND l.granted)"
sql -c "SELECT schedule_recompute_window('aaaaaaaa-0000-4000-8000-000000000001', '2026-04-01', '2026-04-02', 'req-locked')" >/dev/null
wait $locker
wait_for 20 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE last_correlation_id = 'req-locked'"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs")" 0 "lock waits dead-lettered nothing, even with max_attempts = 1"
puts=$(grep -c "correlation_id req-locked put back without spending an attempt" "$E2E_DATA/server.log" || true)
[ "$puts" -ge 2 ] || fail "expected the job to be put back at least twice while the lock was held, saw $puts"
echo "  ok: the job was put back $puts times while the table was locked, then succeeded"
assert_eq "$(events_off_by_a_cent)" 0 "its allocations add up"

# A session that keeps one of its windows busy (compute_allocations in a transaction it
# leaves open) does not tie up a worker: the worker does not wait for window locks, it
# puts the job back at once, and another tenant's job runs meanwhile.
"$PG_BIN/psql" -X -q -h "$E2E_DATA" -p "$E2E_PORT" -U e2e_locker -d "$E2E_DB" \
    -c "BEGIN" -c "SET LOCAL attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" \
    -c "SELECT FROM compute_allocations('aaaaaaaa-0000-4000-8000-000000000001', '2026-04-01', '2026-04-02')" \
    -c "SELECT pg_sleep(8)" -c "COMMIT" >/dev/null &
locker=$!
# (Three locks: the tenant's model, the day, and the day's insert guard.)
wait_for 10 "SELECT count(*) = 3 FROM pg_locks l JOIN pg_extension e ON e.extname = 'pg_attribution'
              WHERE l.locktype = 'object' AND l.classid = e.oid AND l.granted"
sql -c "SELECT schedule_recompute_window('aaaaaaaa-0000-4000-8000-000000000001', '2026-04-01', '2026-04-02', 'req-busy')" \
    -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
        VALUES (gen_random_uuid(), 'bbbbbbbb-0000-4000-8000-000000000002', '2026-04-01 12:00Z', 100)" >/dev/null
wait_for 3 "SELECT status = 'succeeded' FROM attribution_recompute_jobs
             WHERE tenant_id = 'bbbbbbbb-0000-4000-8000-000000000002' AND window_start = '2026-04-01Z'"
kill -0 $locker 2>/dev/null || fail "the lock holder finished too early for this check to mean anything"
echo "  ok: the other tenant's job ran while the window was busy"
# Between tries the job waits a second as pending, its attempt given back.
wait_for 5 "SELECT status = 'pending' AND attempts = 0 AND run_count >= 1 FROM attribution_recompute_jobs WHERE last_correlation_id = 'req-busy'"
grep -q "correlation_id req-busy put back without spending an attempt" "$E2E_DATA/server.log" \
    || fail "the busy window's job was not put back"
echo "  ok: the busy window's job is put back with no attempt spent"
wait $locker
wait_for 20 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE last_correlation_id = 'req-busy'"
echo "  ok: once the window is free, its job succeeds"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs")" 0 "still nothing dead-lettered"

# A client transaction that coalesces a request into a running job row-locks that row
# until it commits. Held past twice lock_timeout, neither the job's result nor its
# put-back can be written; the job stays 'running' under a live worker, which recovers
# it at its next housekeeping once the row is free, instead of leaving it stuck.
reload_with "attribution.lock_timeout = '2s'"
"$PG_BIN/psql" -X -q -h "$E2E_DATA" -p "$E2E_PORT" -U postgres -d "$E2E_DB" \
    -c "BEGIN" -c "LOCK TABLE attribution_allocations IN SHARE MODE" -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null &
holder=$!
wait_for 10 "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                             WHERE c.relname = 'attribution_allocations' AND l.mode = 'ShareLock' AND l.granted)"
sql -c "SELECT schedule_recompute_window('aaaaaaaa-0000-4000-8000-000000000001', '2026-04-03', '2026-04-04', 'req-strand')" >/dev/null
wait_for 5 "SELECT status = 'running' FROM attribution_recompute_jobs WHERE last_correlation_id = 'req-strand'"
# Coalesce into the running job and keep its row locked for 7 s.
"$PG_BIN/psql" -X -q -h "$E2E_DATA" -p "$E2E_PORT" -U postgres -d "$E2E_DB" \
    -c "BEGIN" -c "SELECT schedule_recompute_window('aaaaaaaa-0000-4000-8000-000000000001', '2026-04-03', '2026-04-04', 'req-strand')" \
    -c "SELECT pg_sleep(7)" -c "COMMIT" >/dev/null &
client=$!
wait $holder
wait $client
grep -q "correlation_id req-strand: its outcome waits for a lock on the job row" "$E2E_DATA/server.log" \
    || fail "the job's outcome was never blocked, so this check proves nothing"
wait_for 30 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE last_correlation_id = 'req-strand'"
echo "  ok: a job whose outcome a client transaction kept from being written is recovered and succeeds"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs")" 0 "and nothing was dead-lettered"

# The window locks are object locks of the extension's own class (no SQL command takes
# one), not advisory locks anyone could take first.
assert_eq "$(sql <<'SQL'
BEGIN;
SELECT FROM compute_allocations('aaaaaaaa-0000-4000-8000-000000000001', '2026-04-01', '2026-04-02');
SELECT (SELECT count(*) FROM pg_locks l JOIN pg_extension e ON e.extname = 'pg_attribution'
         WHERE l.locktype = 'object' AND l.classid = e.oid AND l.pid = pg_backend_pid())
       || '/' ||
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid());
ROLLBACK;
SQL
)" "3/0" "compute_allocations holds the tenant, day and insert-guard object locks, and no advisory lock"
