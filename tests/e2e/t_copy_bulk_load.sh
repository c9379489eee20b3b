# A COPY of 100k events over 3 days for 2 tenants schedules exactly 6 jobs (one per
# tenant and day), and computing them gives every event 3 allocations that sum to its
# revenue. Also: the old system's INSERT ... ON CONFLICT DO NOTHING, unchanged.

sql -c "$(tenants_sql)" >/dev/null

# Generate the rows client-side and stream them through COPY, as a loader would.
sql -c "COPY (SELECT gen_random_uuid(),
                     CASE WHEN g % 2 = 0 THEN 'aaaaaaaa-0000-4000-8000-000000000001'::uuid
                          ELSE 'bbbbbbbb-0000-4000-8000-000000000002'::uuid END,
                     timestamptz '2026-02-01 00:00+00' + (g % 3) * interval '1 day' + (g % 86400) * interval '1 second',
                     (g * 7919) % 100000 - 5000,
                     '{}'::jsonb
                FROM generate_series(1, 100000) g) TO STDOUT" > "$E2E_DIR/events.copy"
# COPY and count in one transaction, before the workers can see (and drain) the jobs.
pending=$(sql -1 -c "\\copy attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload) FROM '$E2E_DIR/events.copy'" \
                 -c "SELECT count(*) FILTER (WHERE status = 'pending') || '/' || count(DISTINCT (tenant_id, window_start))
                       FROM attribution_recompute_jobs WHERE window_end - window_start = interval '1 day'")
rm -f "$E2E_DIR/events.copy"
assert_eq "$pending" "6/6" "the COPY left exactly 6 pending jobs, one per tenant and UTC day"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_events")" 100000 "COPY loaded 100k events"

wait_for_drain 120

assert_eq "$(sql -c "SELECT count(*) FROM (SELECT event_id FROM attribution_allocations
                      WHERE model_version = '1.0.0' GROUP BY event_id HAVING count(*) = 3) x")" 100000 \
    "every event has exactly 3 allocations"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue for every event"

# The old system's statement, unchanged (literal values), twice: the replay is a no-op.
OLD_INSERT="INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload) VALUES
    ('cccccccc-0000-4000-8000-000000000001', 'aaaaaaaa-0000-4000-8000-000000000001', CAST('2026-02-10T08:00:00+00:00' AS timestamptz), 1999, '{}'::jsonb),
    ('cccccccc-0000-4000-8000-000000000002', 'aaaaaaaa-0000-4000-8000-000000000001', CAST('2026-02-11T08:00:00+00:00' AS timestamptz), 2999, '{}'::jsonb)
    ON CONFLICT DO NOTHING"
assert_eq "$(sql -1 -c "$OLD_INSERT" -c "$OLD_INSERT" -c "SELECT count(*) FROM attribution_recompute_jobs
                      WHERE status = 'pending' AND window_start IN ('2026-02-10Z', '2026-02-11Z')" | tail -n 1)" 2 \
    "the old INSERT statement, twice, leaves one pending job per tenant and day"
wait_for_drain 30
assert_eq "$(events_off_by_a_cent)" 0 "the workers allocated those events too"
