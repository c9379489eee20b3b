# A hostile tenant: a login role in attribution_app that acts with tenant A's context (or
# with none) and tries to disturb the queue, the dead letters, the allocations and the
# workers, or to reach tenant B. Every attempt is refused with its SQLSTATE and leaves the
# tables exactly as they were; tenant B's work flows on regardless.

A=$TENANT_A
B=$TENANT_B

sql >/dev/null <<SQL
$(tenants_sql);
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'e2e_hostile') THEN
        CREATE ROLE e2e_hostile LOGIN;
    END IF;
END \$\$;
ALTER ROLE e2e_hostile NOSUPERUSER NOBYPASSRLS;
GRANT attribution_app TO e2e_hostile;
SQL

# as_app TENANT [psql args...]: the hostile login role with TENANT's context ('' for none),
# verbose errors so that every SQLSTATE shows.
as_app() {
    local tenant=$1; shift
    "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$E2E_DATA" -p "$E2E_PORT" \
        -U e2e_hostile -d "$E2E_DB" -c "SET attribution.tenant_id = '$tenant'" "$@"
}

# refused SQLSTATE WHAT TENANT [psql args...]: the statements fail with SQLSTATE, and the
# error carries no Rust panic or backtrace.
refused() {
    local want=$1 what=$2 out; shift 2
    if out=$(as_app "$@" 2>&1); then
        fail "$what: succeeded, expected SQLSTATE $want"
    fi
    grep -q "^ERROR:  $want:" <<< "$out" || fail "$what: expected SQLSTATE $want, got: $out"
    if grep -Eiq 'panic|backtrace|at /|^ +[0-9]+: ' <<< "$out"; then
        fail "$what: the error shows Rust internals: $out"
    fi
}

# Every row of the extension's tables, as one fingerprint per table.
fingerprint() {
    sql -c "SELECT string_agg(t || '=' || n || '/' || h, ' ' ORDER BY t) FROM (
              SELECT 'jobs' AS t, count(*) AS n, md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM attribution_recompute_jobs x
              UNION ALL SELECT 'dead', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM worker_failed_jobs x
              UNION ALL SELECT 'alloc', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM attribution_allocations x
              UNION ALL SELECT 'events', count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM attribution_events x) f"
}

# Both tenants have events, allocations and one dead letter each (made by the workers,
# with failure injection and one attempt).
sql >/dev/null <<SQL
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), t, timestamptz '2026-02-01 00:00Z' + g * interval '37 minutes', 100 + g
  FROM generate_series(1, 50) g, (VALUES ('$A'::uuid), ('$B'::uuid)) v(t);
SQL
reload_with "attribution.failure_injection = on" "attribution.max_attempts = 1"
sql >/dev/null <<SQL
BEGIN;
SET LOCAL attribution.correlation_id = 'req-dead';
-- Left to the workers (whose runs fail), not allocated by the INSERT.
SET LOCAL attribution.allocate_on_insert = off;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
VALUES (gen_random_uuid(), '$A', '2026-02-21 12:00Z', 100), (gen_random_uuid(), '$B', '2026-02-20 12:00Z', 100);
UPDATE attribution_recompute_jobs SET inject_failure = 'error' WHERE window_start IN ('2026-02-20Z', '2026-02-21Z');
COMMIT;
SQL
wait_for 20 "SELECT count(*) = 2 FROM worker_failed_jobs"
reload_with "attribution.failure_injection = off" "attribution.max_attempts = 3"
wait_for_drain 20
for table in attribution_recompute_jobs worker_failed_jobs attribution_allocations; do
    [ "$(as_app "$A" -c "SELECT count(*) > 0 FROM $table")" = t ] || fail "tenant A should see rows of its own in $table"
done
echo "  ok: tenant A reads its own jobs, dead letters and allocations (so RLS alone would not stop a write)"

# 1. Direct writes to the extension's tables: refused by privilege (42501), with A's
#    context (whose rows it can see) and with none.
before=$(fingerprint)
nl=$'\n'
statements=(
    "INSERT INTO attribution_recompute_jobs (tenant_id, window_start, window_end, model_version, last_correlation_id) VALUES ('$A', '2026-03-01Z', '2026-03-02Z', '1.0.0', 'forged')"
    "INSERT INTO attribution_recompute_jobs (tenant_id, window_start, window_end, model_version, last_correlation_id, status, run_after, run_count) VALUES ('$A', '2026-03-01Z', '2026-03-02Z', '1.0.0', 'forged', 'running', '-infinity', 2147483647)"
    "UPDATE attribution_recompute_jobs SET run_count = 2147483647"
    "UPDATE attribution_recompute_jobs SET attempts = 2147483647"
    "UPDATE attribution_recompute_jobs SET run_after = '-infinity'"
    "UPDATE attribution_recompute_jobs SET status = 'running', worker_pid = 1"
    "UPDATE attribution_recompute_jobs SET inject_failure = 'crash'"
    "UPDATE attribution_recompute_jobs SET last_correlation_id = E'req-x\\nWARNING:  forged log line'"
    "DELETE FROM attribution_recompute_jobs"
    "TRUNCATE attribution_recompute_jobs"
    "INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, error_message, attempts) VALUES (gen_random_uuid(), '$A', '{\"window_start\": \"-infinity\"}', 'forged', 'forged', 0)"
    "UPDATE worker_failed_jobs SET redriven_at = now()"
    "UPDATE worker_failed_jobs SET payload = jsonb_set(payload, '{tenant_id}', '\"$B\"')"
    "UPDATE worker_failed_jobs SET correlation_id = E'req-x\\nforged'"
    "DELETE FROM worker_failed_jobs"
    "TRUNCATE worker_failed_jobs"
    "INSERT INTO attribution_allocations (tenant_id, event_id, model_version, channel, allocation_ratio, allocated_revenue_cents) SELECT tenant_id, id, '1.0.0', 'forged', 1, revenue_cents FROM attribution_events LIMIT 1"
    "UPDATE attribution_allocations SET allocated_revenue_cents = allocated_revenue_cents + 1"
    "DELETE FROM attribution_allocations"
    "TRUNCATE attribution_allocations"
)
for tenant in "$A" ""; do
    for statement in "${statements[@]}"; do
        refused 42501 "${tenant:-no context}: $statement" "$tenant" -c "$statement"
    done
done
echo "  ok: ${#statements[@]} direct writes to the queue, dead letters and allocations refused (42501), with A's context and with none"

# The correlation id reaches the queue only through validation.
refused 22023 "a correlation id with a newline" "$A" -c "SET attribution.correlation_id = E'req-x\\nforged'" \
    -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), '$A', '2026-03-05 12:00Z', 1)"
echo "  ok: an event inserted with a newline in attribution.correlation_id is refused (22023)"

# 2. Table and row locks that would stall the workers: LOCK TABLE in any mode above
#    ACCESS SHARE, and SELECT ... FOR UPDATE / SHARE, on every table the workers write or
#    whose rows the queue's foreign keys lock.
n=0
for table in attribution_recompute_jobs worker_failed_jobs attribution_allocations attribution_tenants attribution_models; do
    for mode in "ROW SHARE" "ROW EXCLUSIVE" "SHARE UPDATE EXCLUSIVE" "SHARE" "SHARE ROW EXCLUSIVE" "EXCLUSIVE" "ACCESS EXCLUSIVE"; do
        refused 42501 "LOCK TABLE $table IN $mode MODE" "$A" -c "BEGIN" -c "LOCK TABLE $table IN $mode MODE" -c "COMMIT"
        n=$((n + 1))
    done
    for clause in "FOR UPDATE" "FOR NO KEY UPDATE" "FOR SHARE" "FOR KEY SHARE"; do
        refused 42501 "SELECT ... $clause on $table" "$A" -c "SELECT 1 FROM $table $clause"
        refused 42501 "SELECT ... $clause on $table, no context" "" -c "SELECT 1 FROM $table $clause"
        n=$((n + 2))
    done
done
echo "  ok: $n LOCK TABLE and SELECT ... FOR UPDATE/SHARE attempts refused (42501)"
assert_eq "$(fingerprint)" "$before" "the refused statements changed nothing"

# 3. redrive_failed_job for tenant B's dead letter: invisible without B's context.
b_dead=$(sql -c "SELECT id FROM worker_failed_jobs WHERE tenant_id = '$B'")
[ -n "$b_dead" ] || fail "tenant B has no dead letter"
refused P0002 "redrive of B's dead letter with no context" "" -c "SELECT redrive_failed_job($b_dead)"
refused P0002 "redrive of B's dead letter with A's context" "$A" -c "SELECT redrive_failed_job($b_dead)"
refused P0002 "redrive of B's dead letter with A's context in a transaction" "$A" \
    -c "BEGIN" -c "SELECT set_config('attribution.tenant_id', '$A', true)" -c "SELECT redrive_failed_job($b_dead)" -c "COMMIT"
assert_eq "$(fingerprint)" "$before" "the refused re-drives changed nothing"
assert_eq "$(sql -c "SELECT status FROM attribution_recompute_jobs WHERE tenant_id = '$B' AND window_start = '2026-02-20Z'")" failed \
    "tenant B's dead-lettered job is still failed"

# 4. Acting for tenant B with A's context.
refused 42501 "schedule_recompute_window for B with A's context" "$A" \
    -c "SELECT schedule_recompute_window('$B', '2026-03-10Z', '2026-03-11Z')"
refused 42501 "compute_allocations for B with A's context" "$A" \
    -c "SELECT * FROM compute_allocations('$B', '2026-02-01Z', '2026-02-02Z')"
refused 42501 "compute_allocations for B with A's context, transaction-local" "$A" \
    -c "BEGIN" -c "SELECT set_config('attribution.tenant_id', '$A', true)" \
    -c "SELECT * FROM compute_allocations('$B', '2026-02-01Z', '2026-02-02Z')" -c "COMMIT"
assert_eq "$(fingerprint)" "$before" "acting for tenant B scheduled and computed nothing"
echo "  ok: schedule_recompute_window and compute_allocations refuse to act for B with A's context (42501)"

# 5. Advisory locks are no weapon: the hostile session holds every advisory lock the old
#    computation took for tenant B (the 64-bit key of the tenant/model and of the day, and
#    the two-int forms of both), yet B's new event is allocated at once.
key="pg_attribution/$B/1.0.0"
day=$(sql -c "SELECT (extract(epoch FROM timestamptz '2026-02-10Z') / 86400)::int")
two_int() { echo "pg_advisory_lock(($1 >> 32)::int, (($1 & 4294967295) - CASE WHEN ($1 & 2147483648) = 0 THEN 0 ELSE 4294967296 END)::int)"; }
hk="hashtextextended('$key', 0)"
hd="hashtextextended('$key/$day', 0)"
PGAPPNAME=e2e_lock_holder as_app "$A" \
    -c "SELECT pg_advisory_lock($hk), pg_advisory_lock_shared($hk), pg_advisory_lock($hd), $(two_int "$hk"), $(two_int "$hd"),
               pg_advisory_lock(hashtext('$B'), hashtext('1.0.0')), pg_advisory_lock(hashtext('$key')::bigint)" \
    -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
holder=$!
wait_for 10 "SELECT count(*) >= 6 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'e2e_lock_holder' AND l.locktype = 'advisory' AND l.granted"
sql -c "SET attribution.correlation_id = 'req-b-locked'" \
    -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES ('cccccccc-0000-4000-8000-00000000000b', '$B', '2026-02-10 12:00Z', 999)" >/dev/null
wait_for 5 "SELECT count(*) = 3 FROM attribution_allocations WHERE tenant_id = '$B' AND event_id = 'cccccccc-0000-4000-8000-00000000000b'"
assert_eq "$(sql -c "SELECT count(*) >= 6 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                     WHERE a.application_name = 'e2e_lock_holder' AND l.locktype = 'advisory' AND l.granted")" t \
    "the hostile session still holds its advisory locks"
assert_eq "$(sql -c "SELECT status || '/' || run_count FROM attribution_recompute_jobs WHERE tenant_id = '$B' AND window_start = '2026-02-10Z'")" \
    succeeded/1 "tenant B's event was allocated within 5 s, in one run, while the locks were held"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs")" 2 "nothing new was dead-lettered"
admin -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'e2e_lock_holder'" >/dev/null
wait "$holder" || true

# 6. Event-id squatting: tenant A takes id X first; tenant B's insert of X with the old
#    system's statement still lands, and each tenant sees only its own X.
X=eeeeeeee-0000-4000-8000-000000000001
Y=eeeeeeee-0000-4000-8000-000000000002
OLD_INSERT="INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload) VALUES
    ('$X', '%s', CAST('2026-02-11T08:00:00+00:00' AS timestamptz), %s, '{}'::jsonb) ON CONFLICT DO NOTHING"
# shellcheck disable=SC2059
as_app "$A" -c "$(printf "$OLD_INSERT" "$A" 1000)" >/dev/null
# shellcheck disable=SC2059
as_app "$B" -c "$(printf "$OLD_INSERT" "$B" 2999)" >/dev/null
assert_eq "$(as_app "$B" -c "SELECT count(*) || '/' || sum(revenue_cents) FROM attribution_events WHERE id = '$X'")" 1/2999 \
    "tenant B's event X exists although tenant A squatted the id"
assert_eq "$(as_app "$A" -c "SELECT count(*) || '/' || sum(revenue_cents) FROM attribution_events WHERE id = '$X'")" 1/1000 \
    "tenant A sees only its own X"
wait_for 10 "SELECT count(*) = 6 FROM attribution_allocations WHERE event_id = '$X'"
assert_eq "$(as_app "$A" -c "SELECT count(*) || '/' || sum(allocated_revenue_cents) FROM attribution_allocations WHERE event_id = '$X'")" 3/1000 \
    "both X were allocated; tenant A sees only its own allocations"
assert_eq "$(as_app "$B" -c "SELECT count(*) || '/' || sum(allocated_revenue_cents) FROM attribution_allocations WHERE event_id = '$X'")" 3/2999 \
    "... and tenant B its own"
# Nor does an id reveal another tenant's event: B has Y, A inserts Y without ON CONFLICT.
as_app "$B" -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES ('$Y', '$B', '2026-02-11 09:00Z', 5)" >/dev/null
as_app "$A" -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES ('$Y', '$A', '2026-02-11 09:00Z', 7)" >/dev/null \
    || fail "tenant A's insert of an id tenant B uses failed"
echo "  ok: an id tenant B uses is no conflict for tenant A (no 23505 to probe with)"
wait_for_drain 20
assert_eq "$(sql -c "$(cents_off_sql)")" 2 \
    "allocations sum to revenue for every event of both tenants but the two in dead-lettered windows"

# 7. Queue health for the app role counts the workers.
assert_eq "$(as_app "$A" -c "SELECT workers FROM attribution_queue_health")" 2 "attribution_queue_health.workers is 2 for the app role"
assert_eq "$(as_app "" -c "SELECT workers FROM attribution_queue_health")" 2 "... also with no context"

# 8. Malformed input: a clean SQLSTATE, never a Rust panic or backtrace (the cluster runs
#    with RUST_BACKTRACE=1, see run.sh).
before=$(fingerprint)
refused 22P02 "schedule_recompute_window with a malformed attribution.tenant_id" "not-a-uuid" \
    -c "SELECT schedule_recompute_window('$B', '2026-03-10Z', '2026-03-11Z')"
refused 22P02 "compute_allocations with a malformed attribution.tenant_id" "not-a-uuid" \
    -c "SELECT * FROM compute_allocations('$B', '2026-02-01Z', '2026-02-02Z')"
refused 22P02 "redrive_failed_job with a malformed attribution.tenant_id" "not-a-uuid" \
    -c "SELECT redrive_failed_job($b_dead)"
refused 22P02 "an event insert with a malformed attribution.tenant_id" "not-a-uuid" \
    -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), '$A', '2026-03-05 12:00Z', 1)"
echo "  ok: a malformed attribution.tenant_id gives 22P02, without a backtrace"
for ts in '294247-01-11' '294276-12-31 12:00'; do
    refused 22008 "an event at $ts" "$A" \
        -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), '$A', '$ts', 1)"
done
echo "  ok: events past the last schedulable window give 22008, without a backtrace"
assert_eq "$(fingerprint)" "$before" "the refused statements changed nothing"

# Tenant B, with its own context, can re-drive its dead letter: the id refused above was
# a real one.
job=$(as_app "$B" -c "SELECT redrive_failed_job($b_dead)")
wait_for 10 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE id = '$job'"
echo "  ok: tenant B's own context re-drives the dead letter that tenant A could not"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations a JOIN attribution_events e ON (e.tenant_id, e.id) = (a.tenant_id, a.event_id)
                     WHERE e.tenant_id = '$B' AND e.occurred_at >= '2026-02-20Z' AND e.occurred_at < '2026-02-21Z'")" 3 \
    "the re-driven window of tenant B is allocated"
