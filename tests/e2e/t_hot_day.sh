# A hot day is not one worker's problem: while two clients stream 1,000-row INSERTs
# into one day, the run of that day's job goes slice by slice once its backlog is large,
# and the idle worker computes slices of it at the same time. Every event is allocated
# exactly once, as a computation from scratch gives it, and the change log is consumed.
# The clients leave their events to the workers (attribution.allocate_on_insert off), as
# inserts that cannot allocate their own do (a full pass holds the day, say).

sql -c "$(tenants_sql)" >/dev/null
reload_with "log_min_messages = debug1"
# The day's first run (a full pass) before the stream.
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
        VALUES (gen_random_uuid(), '$TENANT_A', '2026-08-01 00:00Z', 1)" >/dev/null
wait_for_drain 30

client() {
    for i in $(seq 1 40); do
        sql -c "SET attribution.allocate_on_insert = off" -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
                SELECT gen_random_uuid(), '$TENANT_A', timestamptz '2026-08-01 06:00Z' + g * interval '1 second', g * $1 - 500
                  FROM generate_series(1, 1000) g" >/dev/null
    done
}
client 3 & c1=$!
client 7 & c2=$!
wait $c1 $c2
wait_for_drain 120

helped=$(grep -c "helped tenant $TENANT_A" "$E2E_DATA/server.log" || true)
[ "$helped" -gt 0 ] || fail "no worker helped with the hot day"
echo "  ok: the idle worker computed $helped slices of the hot day's runs"
expected="SELECT e.tenant_id, e.id, m.model_version, s.channel, s.cents
            FROM attribution_events e CROSS JOIN attribution_models m
           CROSS JOIN LATERAL unnest(m.channels, attribution_split_cents(e.revenue_cents, m.weights)) AS s(channel, cents)
           WHERE m.active"
actual="SELECT tenant_id, event_id, model_version, channel, allocated_revenue_cents FROM attribution_allocations"
assert_eq "$(sql -c "SELECT (SELECT count(*) FROM ($expected EXCEPT $actual) x) || '/' || (SELECT count(*) FROM ($actual EXCEPT $expected) y)")" \
    "0/0" "the allocations equal a computation from scratch, row for row (missing/extra)"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations")" 240003 "three allocations per event, none twice"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_event_changes")" 0 "every recorded change was consumed"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status <> 'succeeded'")" 0 "the day's job succeeded"
assert_eq "$(events_off_by_a_cent)" 0 "every cent allocated"
