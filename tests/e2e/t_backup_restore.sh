# pg_dump keeps everything the extension holds: tenants, the models users added (the
# built-in 1.0.0 comes with CREATE EXTENSION), events, allocations, the job queue as it
# was (pending retries included), the dead letters and the identity sequences' positions.
# Restored with pg_restore, or as a plain dump into a database that already has the
# extension, every table is identical and new rows do not collide with restored ids.
# Restored in place of the database the workers serve, the pipeline carries on.

A=$TENANT_A
B=$TENANT_B
dump_fc="$E2E_DIR/backup.dump"
dump_plain="$E2E_DIR/backup.sql"
dump() { "$PG_BIN/pg_dump" -h "$E2E_DATA" -p "$E2E_PORT" -U postgres "$@"; }

# The source: 2 tenants, a user-added model (active, so the trigger schedules it too),
# events over six days, computed by the workers.
sql >/dev/null <<SQL
$(tenants_sql);
INSERT INTO attribution_models (model_version, channels, weights) VALUES ('2.0.0', ARRAY['a','b'], ARRAY[1,2]);
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), t, timestamptz '2026-02-01 00:00Z' + (g % 6) * interval '1 day' + g * interval '1 minute', g * 7 - 40
  FROM generate_series(1, 300) g, (VALUES ('$A'::uuid), ('$B'::uuid)) v(t);
SQL
wait_for_drain 60
# Jobs due tomorrow (a retry, say): committed with their events, never runnable today.
sql >/dev/null <<SQL
BEGIN;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES
    (gen_random_uuid(), '$A', '2026-03-01 10:00Z', 1234), (gen_random_uuid(), '$B', '2026-03-01 11:00Z', 4321);
UPDATE attribution_recompute_jobs SET run_after = now() + interval '1 day' WHERE window_start = '2026-03-01Z';
COMMIT;
SQL
# Two dead letters, one per tenant (model 1.0.0 fails, 2.0.0 succeeds).
reload_with "attribution.failure_injection = on" "attribution.max_attempts = 1"
sql >/dev/null <<SQL
BEGIN;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES
    (gen_random_uuid(), '$A', '2026-03-05 10:00Z', 500), (gen_random_uuid(), '$B', '2026-03-06 10:00Z', 600);
UPDATE attribution_recompute_jobs SET inject_failure = 'error'
 WHERE window_start IN ('2026-03-05Z', '2026-03-06Z') AND model_version = '1.0.0';
COMMIT;
SQL
wait_for 30 "SELECT count(*) = 2 FROM worker_failed_jobs"
reload_with "attribution.failure_injection = off"
wait_for 30 "SELECT count(*) = 0 FROM attribution_recompute_jobs WHERE status = 'running' OR (status = 'pending' AND run_after <= now())"
assert_eq "$(sql -c "SELECT format('%s pending/%s failed/%s succeeded', count(*) FILTER (WHERE status = 'pending'),
                                   count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'succeeded'))
                       FROM attribution_recompute_jobs")" "4 pending/2 failed/26 succeeded" "the source queue holds pending, failed and succeeded jobs"

# Everything a restore must bring back: per table its row count and a hash of its rows
# (the built-in model's created_at is the installing transaction's, so it is left out),
# and the identity sequences' positions.
snapshot() {
    E2E_DB=$1 sql -c "SELECT string_agg(t || ' ' || n || ' ' || h, E'\n' ORDER BY t) FROM (
        SELECT 'attribution_tenants' t, count(*) n, md5(string_agg(x::text, '|' ORDER BY x::text)) h FROM attribution_tenants x
        UNION ALL SELECT 'attribution_models', count(*), md5(string_agg(
                  (model_version, kind, channels, weights, active, description, channels_changed_at,
                   CASE WHEN model_version <> '1.0.0' THEN created_at END)::text, '|' ORDER BY model_version))
                  FROM attribution_models
        UNION ALL SELECT 'attribution_events', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM attribution_events x
        UNION ALL SELECT 'attribution_allocations', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM attribution_allocations x
        UNION ALL SELECT 'attribution_recompute_jobs', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM attribution_recompute_jobs x
        UNION ALL SELECT 'worker_failed_jobs', count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM worker_failed_jobs x
        UNION ALL SELECT 'attribution_allocations_id_seq', last_value, is_called::text FROM attribution_allocations_id_seq
        UNION ALL SELECT 'worker_failed_jobs_id_seq', last_value, is_called::text FROM worker_failed_jobs_id_seq) s"
}
# Events whose allocations do not add up, outside the windows still pending (03-01) or
# dead-lettered (03-05, 03-06, model 1.0.0): must be none.
unallocated() {
    E2E_DB=$1 sql -c "$(cents_off_sql "'1.0.0', '2.0.0'" "e.occurred_at < '2026-03-01Z'")"
}
source=$(snapshot "$E2E_DB")
echo "  source:"; sed 's/^/    /' <<< "$source"
assert_eq "$(unallocated "$E2E_DB")" 0 "the source's computed windows are fully allocated"

# check_restored DB HOW: the restored database equals the source, and its sequences go on
# from where the source's were.
check_restored() {
    local db=$1 how=$2
    assert_eq "$(snapshot "$db")" "$source" "$how: every table and sequence equals the source's"
    assert_eq "$(E2E_DB=$db sql -c "SELECT count(*) FROM attribution_models WHERE model_version = '1.0.0'")" 1 \
        "$how: exactly one built-in model row"
    assert_eq "$(E2E_DB=$db sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status = 'pending'")" 4 \
        "$how: the restore scheduled nothing: only the 4 dumped pending jobs"
    assert_eq "$(unallocated "$db")" 0 "$how: allocations sum to revenue"
    assert_eq "$(E2E_DB=$db sql <<SQL
WITH a AS (INSERT INTO attribution_allocations (tenant_id, event_id, model_version, channel, allocation_ratio, allocated_revenue_cents)
           SELECT tenant_id, id, '9.9.9', 'probe', 1, 0 FROM attribution_events ORDER BY occurred_at LIMIT 1 RETURNING id),
     f AS (INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, error_message, attempts)
           VALUES (gen_random_uuid(), '$A', '{}', 'probe', 'probe', 0) RETURNING id)
SELECT (SELECT id FROM a) > (SELECT max(id) FROM attribution_allocations WHERE model_version <> '9.9.9')
   AND (SELECT id FROM f) > (SELECT max(id) FROM worker_failed_jobs WHERE correlation_id <> 'probe');
SQL
)" t "$how: new allocations and dead letters get ids past the restored ones"
}

# (a) Custom format, pg_restore into a new database.
dump -Fc -f "$dump_fc" "$E2E_DB"
admin -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS restored_fc" -c "CREATE DATABASE restored_fc" >/dev/null
"$PG_BIN/pg_restore" -h "$E2E_DATA" -p "$E2E_PORT" -U postgres --exit-on-error -d restored_fc "$dump_fc"
check_restored restored_fc "pg_dump -Fc | pg_restore"

# (b) Plain SQL, into a database where CREATE EXTENSION ran first.
dump -f "$dump_plain" "$E2E_DB"
admin -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS restored_plain" -c "CREATE DATABASE restored_plain" >/dev/null
admin -d restored_plain -c "CREATE EXTENSION pg_attribution" >/dev/null
admin -d restored_plain -f "$dump_plain" >/dev/null
check_restored restored_plain "plain pg_dump | psql after CREATE EXTENSION"
admin -c "DROP DATABASE restored_fc" -c "DROP DATABASE restored_plain" >/dev/null

# (c) In place: the database the workers serve is dropped and restored from the dump. The
#     restore is one transaction, so the workers, reconnecting meanwhile, never see half a
#     queue.
admin -c "DROP DATABASE $E2E_DB WITH (FORCE)" -c "CREATE DATABASE $E2E_DB" >/dev/null
"$PG_BIN/pg_restore" -h "$E2E_DATA" -p "$E2E_PORT" -U postgres --exit-on-error --single-transaction -d "$E2E_DB" "$dump_fc"
rm -f "$dump_fc" "$dump_plain"
wait_for_workers 2
assert_eq "$(snapshot "$E2E_DB")" "$source" "restored in place: every table and sequence equals the source's"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status = 'pending'")" 4 \
    "restored in place: only the 4 dumped pending jobs"

# New events are allocated by the workers (for both models, with fresh allocation ids).
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES
            ('cccccccc-0000-4000-8000-000000000001', '$A', '2026-03-10 10:00Z', 1000),
            ('cccccccc-0000-4000-8000-000000000002', '$B', '2026-03-10 11:00Z', 2001)" >/dev/null
wait_for 10 "SELECT count(*) = 10 FROM attribution_allocations WHERE event_id IN ('cccccccc-0000-4000-8000-000000000001', 'cccccccc-0000-4000-8000-000000000002')"
echo "  ok: the workers allocate new events in the restored database"

# Time passes: the restored pending jobs fall due and drain; the restored dead letters are
# re-driven (injection is off now) and succeed.
sql -c "UPDATE attribution_recompute_jobs SET run_after = now() WHERE status = 'pending'" >/dev/null
for t in "$A" "$B"; do
    sql -c "SELECT set_config('attribution.tenant_id', '$t', false)" \
        -c "SELECT redrive_failed_job(id) FROM worker_failed_jobs WHERE tenant_id = '$t'" >/dev/null
done
wait_for_drain 30
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status <> 'succeeded'")" 0 \
    "the restored pending and dead-lettered jobs ran"
assert_eq "$(events_off_by_a_cent 1.0.0)/$(events_off_by_a_cent 2.0.0)" 0/0 "allocations sum to revenue for every event and both models"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs WHERE redriven_at IS NULL")" 0 "no dead letter is left"
