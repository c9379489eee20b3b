# The worker's role is subject to RLS: no superuser, no BYPASSRLS, sees only the job's
# tenant. Misconfigured to a bypassing role, the worker logs an error and runs nothing.

assert_eq "$(sql -c "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = 'attribution_worker'")" f \
    "attribution_worker is neither superuser nor BYPASSRLS"
assert_eq "$(admin -c "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'")" \
    attribution_worker "the workers run as attribution_worker"

sql -c "$(tenants_sql)" >/dev/null
sql >/dev/null <<'SQL'
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), t, '2026-02-01 10:00Z', 100
  FROM unnest(ARRAY['aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002']::uuid[]) t;
SQL
wait_for_drain 20

as_worker_role() { sql -c "SET ROLE attribution_worker" -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" -c "$1"; }
assert_eq "$(as_worker_role "SELECT count(*) FROM attribution_events WHERE tenant_id <> 'aaaaaaaa-0000-4000-8000-000000000001'")" 0 \
    "the worker's role with tenant A's context reads none of tenant B's events"
assert_eq "$(as_worker_role "SELECT count(*) FROM attribution_allocations WHERE tenant_id <> 'aaaaaaaa-0000-4000-8000-000000000001'")" 0 \
    "... nor tenant B's allocations"
if as_worker_role "INSERT INTO attribution_allocations (tenant_id, event_id, model_version, channel, allocation_ratio, allocated_revenue_cents)
                   SELECT tenant_id, id, 'x', 'x', 1, 1 FROM attribution_events LIMIT 1" >/dev/null 2>&1; then
    :
fi
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations WHERE model_version = 'x' AND tenant_id = 'bbbbbbbb-0000-4000-8000-000000000002'")" 0 \
    "... nor write tenant B's rows"

# Misconfigured: the role gains BYPASSRLS. The worker refuses and says why; jobs wait.
admin -c "ALTER ROLE attribution_worker BYPASSRLS" >/dev/null
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-02-05 10:00Z', 1)" >/dev/null
sleep 2
assert_eq "$(sql -c "SELECT status FROM attribution_recompute_jobs WHERE window_start = '2026-02-05Z'")" pending \
    "a worker whose role bypasses RLS runs nothing"
grep -q "worker is idle: role \"attribution_worker\" is a superuser or has BYPASSRLS" "$E2E_DATA/server.log" \
    || fail "the refusal was not logged"
echo "  ok: the refusal is logged"
admin -c "ALTER ROLE attribution_worker NOBYPASSRLS" >/dev/null
wait_for 15 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE window_start = '2026-02-05Z'"
echo "  ok: once the role is fixed, the worker resumes"

# The hardening README suggests: application roles that only insert events. The workers
# lock the events they read FOR KEY SHARE, which needs UPDATE on the table; they hold it
# themselves (on tenant_id), not through attribution_app, so jobs keep running.
sql -c "REVOKE UPDATE, DELETE ON attribution_events FROM attribution_app" >/dev/null
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001', '2026-02-06 10:00Z', 300)" >/dev/null
wait_for 15 "SELECT status IN ('succeeded', 'failed') FROM attribution_recompute_jobs WHERE window_start = '2026-02-06Z' AND model_version = '1.0.0'"
assert_eq "$(sql -c "SELECT status || ' ' || attempts FROM attribution_recompute_jobs WHERE window_start = '2026-02-06Z' AND model_version = '1.0.0'")" "succeeded 0" \
    "with UPDATE and DELETE on events revoked from attribution_app, jobs still succeed"
assert_eq "$(sql -c "SELECT coalesce(sum(allocated_revenue_cents), 0) FROM attribution_allocations a JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id WHERE e.occurred_at >= '2026-02-06Z' AND a.model_version = '1.0.0'")" 300 \
    "... and allocate every cent"
sql -c "GRANT UPDATE, DELETE ON attribution_events TO attribution_app" >/dev/null
