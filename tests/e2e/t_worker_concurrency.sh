# Two workers drain while eight sessions insert concurrently into overlapping windows:
# every committed event ends up with exactly one allocation per channel, summing to its
# revenue, and no job ever ran twice at once.

sql -c "$(tenants_sql)" >/dev/null
sql >/dev/null <<'SQL'
SQL

writers=()
for w in 1 2 3 4 5 6 7 8; do
    (
        for i in $(seq 1 40); do
            tenant=aaaaaaaa-0000-4000-8000-000000000001
            [ $(( (w + i) % 2 )) = 0 ] && tenant=bbbbbbbb-0000-4000-8000-000000000002
            echo "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
                  SELECT gen_random_uuid(), '$tenant', '2026-04-0$(( i % 3 + 1 )) 00:00Z'::timestamptz + g * interval '7 minutes', $w * 1000 + $i + g
                    FROM generate_series(1, 5) g;"
        done | sql >/dev/null
    ) &
    writers+=($!)
done
for p in "${writers[@]}"; do wait "$p"; done
wait_for_drain 60

assert_eq "$(sql -c "SELECT count(*) FROM attribution_events")" 1600 "1600 events committed by 8 sessions"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations")" 4800 "exactly 3 allocations per committed event"
assert_eq "$(sql -c "SELECT count(*) FROM (SELECT event_id, channel FROM attribution_allocations GROUP BY 1, 2 HAVING count(*) > 1) d")" 0 \
    "no allocation was written twice"
assert_eq "$(events_off_by_a_cent)" 0 "allocations sum to revenue for every event"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs")" 6 "inserts coalesced into one job per tenant and day"
assert_eq "$(sql -c "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'")" 2 "two workers served the queue"
