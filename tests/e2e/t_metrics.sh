# Monitoring: every query in docs/postgres_exporter.yaml runs as a pg_monitor login role
# and reports each tenant's queue; application roles cannot call attribution_metrics().

sql -c "$(tenants_sql)" >/dev/null
sql >/dev/null <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'e2e_monitor') THEN CREATE ROLE e2e_monitor LOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'e2e_metrics_app') THEN CREATE ROLE e2e_metrics_app LOGIN; END IF;
END $$;
GRANT pg_monitor TO e2e_monitor;
GRANT attribution_app TO e2e_metrics_app;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), t, timestamptz '2026-06-01 12:00Z' + g * interval '1 day', 100
  FROM generate_series(1, 3) g,
       unnest(ARRAY['aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002']::uuid[]) t;
SQL
wait_for_drain 20
as_role() { local role=$1; shift; "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=1 -h "$E2E_DATA" -p "$E2E_PORT" -U "$role" -d "$E2E_DB" "$@"; }

queries=$(sed -n 's/^  query: "\(.*\)"$/\1/p' "$ROOT/docs/postgres_exporter.yaml")
[ "$(printf '%s\n' "$queries" | wc -l)" -ge 2 ] || fail "found no queries in docs/postgres_exporter.yaml"
while IFS= read -r query; do
    as_role e2e_monitor -c "$query" >/dev/null || fail "exporter query failed as a pg_monitor role: $query"
done <<< "$queries"
echo "  ok: every exporter query runs as a pg_monitor role"
assert_eq "$(as_role e2e_monitor -c "SELECT string_agg(tenant_id || ' ' || succeeded || ' ' || pending || ' ' || workers, ',' ORDER BY tenant_id) FROM attribution_metrics()")" \
    "aaaaaaaa-0000-4000-8000-000000000001 3 0 2,bbbbbbbb-0000-4000-8000-000000000002 3 0 2" \
    "attribution_metrics() reports each tenant's jobs and the connected workers"
if as_role e2e_metrics_app -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" -c "SELECT * FROM attribution_metrics()" >/dev/null 2>&1; then
    fail "an application role read every tenant's metrics"
fi
echo "  ok: an application role cannot call attribution_metrics()"
