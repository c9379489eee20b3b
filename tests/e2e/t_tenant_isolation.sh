# A login role in attribution_app, with tenant A's context, sees none of tenant B's rows
# in any table, and cannot COPY into attribution_events (RLS forbids COPY FROM for it).

sql -c "$(tenants_sql)" >/dev/null
sql >/dev/null <<'SQL'
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), t, timestamptz '2026-02-01 00:00+00' + g * interval '1 minute', g
  FROM generate_series(1, 100) g,
       unnest(ARRAY['aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002']::uuid[]) t;
SELECT count(*) AS computed FROM attribution_recompute_jobs j,
       LATERAL compute_allocations(j.tenant_id, j.window_start, j.window_end);
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'e2e_loader') THEN
        CREATE ROLE e2e_loader LOGIN;
    END IF;
END $$;
GRANT attribution_app TO e2e_loader;
SQL

as_loader() { "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=1 -h "$E2E_DATA" -p "$E2E_PORT" -U e2e_loader -d "$E2E_DB" "$@"; }
for table in attribution_tenants attribution_events attribution_allocations attribution_recompute_jobs worker_failed_jobs; do
    column=tenant_id; [ $table = attribution_tenants ] && column=id
    seen=$(as_loader -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" \
                     -c "SELECT count(*) FROM $table WHERE $column <> 'aaaaaaaa-0000-4000-8000-000000000001'")
    assert_eq "$seen" 0 "tenant A's context sees no other tenant's rows in $table"
done
assert_eq "$(as_loader -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" \
                       -c "SELECT count(*) FROM attribution_allocations")" 300 "tenant A sees its own 300 allocations"

if as_loader -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" \
             -c "COPY attribution_events (id, tenant_id, occurred_at, revenue_cents) FROM STDIN" \
             <<< "$(printf 'dddddddd-0000-4000-8000-000000000001\taaaaaaaa-0000-4000-8000-000000000001\t2026-02-01\t1\n')" 2>/dev/null; then
    fail "an RLS-bound role was allowed to COPY FROM"
fi
echo "  ok: an RLS-bound role cannot COPY FROM into attribution_events"

# The bulk path for RLS-bound loaders: COPY into a temporary table (no RLS there), then
# one INSERT ... SELECT, which RLS checks row by row and the trigger schedules as one statement.
printf 'dddddddd-0000-4000-8000-00000000000%s\taaaaaaaa-0000-4000-8000-000000000001\t2026-02-05T10:00:00Z\t%s\n' 1 100 2 200 > "$E2E_DIR/staged.tsv"
as_loader -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" \
          -c "CREATE TEMP TABLE staged (LIKE attribution_events INCLUDING DEFAULTS)" \
          -c "\\copy staged (id, tenant_id, occurred_at, revenue_cents) FROM '$E2E_DIR/staged.tsv'" \
          -c "INSERT INTO attribution_events SELECT * FROM staged"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_events WHERE id::text LIKE 'dddddddd%'")" 2 \
    "a loader's staged rows reach attribution_events through INSERT ... SELECT"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE window_start = '2026-02-05Z'")" 1 \
    "the staged insert scheduled its window"
printf 'dddddddd-0000-4000-8000-000000000009\tbbbbbbbb-0000-4000-8000-000000000002\t2026-02-05T10:00:00Z\t1\n' > "$E2E_DIR/staged.tsv"
if as_loader -c "SET attribution.tenant_id = 'aaaaaaaa-0000-4000-8000-000000000001'" \
             -c "CREATE TEMP TABLE staged (LIKE attribution_events INCLUDING DEFAULTS)" \
             -c "\\copy staged (id, tenant_id, occurred_at, revenue_cents) FROM '$E2E_DIR/staged.tsv'" \
             -c "INSERT INTO attribution_events SELECT * FROM staged" 2>/dev/null; then
    fail "a loader inserted another tenant's staged rows"
fi
echo "  ok: RLS still checks staged rows: another tenant's row is refused"
rm -f "$E2E_DIR/staged.tsv"
