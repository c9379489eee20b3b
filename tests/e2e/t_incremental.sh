# Incremental recompute: runs compute only the events recorded as changed since their
# window was last computed, and the result is exactly what a full computation from
# scratch gives, after a random mix of inserts, revenue updates and refunds, moves
# between days, deletes and bulk statements, from two concurrent writer sessions while
# two workers drain, for two models, one of which changes meanwhile (weights, then a
# channel dropped). The change log is consumed (empty at the end).

sql -c "$(tenants_sql)" >/dev/null
sql -c "INSERT INTO attribution_models (model_version, channels, weights) VALUES ('2.0.0', ARRAY['search', 'social', 'email', 'affiliate'], ARRAY[5, 3, 1, 1])" >/dev/null
reload_with "log_min_messages = debug1" "attribution.incremental_max_rows = 500"

# Seed: 5 days per tenant, 4,000 events in one statement (over the limit: full passes).
sql -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
        SELECT gen_random_uuid(), t, timestamptz '2026-07-01Z' + (g % 5) * interval '1 day' + (g % 997) * interval '1 minute', (g * 7919) % 100000 - 3000
          FROM generate_series(1, 2000) g, unnest(ARRAY['$TENANT_A', '$TENANT_B']::uuid[]) t" >/dev/null
wait_for_drain 60
assert_eq "$(sql -c "SELECT count(*) FROM attribution_event_changes")" 0 "a bulk statement records no changes: its windows get a full pass"

# Two writers, each 60 transactions of random work on both tenants' five days.
writer() {
    local seed=$1
    for i in $(seq 1 60); do
        sql >/dev/null 2>&1 <<SQL || true
SELECT setseed(($seed * 1000 + $i) / 1000000.0);
BEGIN;
-- a few new events, some refunds
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT gen_random_uuid(), (ARRAY['$TENANT_A', '$TENANT_B']::uuid[])[1 + (random() * 1)::int],
       timestamptz '2026-07-01Z' + (random() * 5 * 86399) * interval '1 second',
       (random() * 20000)::int - 2000
  FROM generate_series(1, 1 + (random() * 20)::int);
-- revenue changes
UPDATE attribution_events SET revenue_cents = revenue_cents + (random() * 500)::int - 250
 WHERE id IN (SELECT id FROM attribution_events ORDER BY random() LIMIT 5);
-- moves to another day (within the five)
UPDATE attribution_events
   SET occurred_at = timestamptz '2026-07-01Z' + (random() * 5 * 86399) * interval '1 second'
 WHERE id IN (SELECT id FROM attribution_events ORDER BY random() LIMIT 3);
-- deletes
DELETE FROM attribution_events WHERE id IN (SELECT id FROM attribution_events ORDER BY random() LIMIT 2);
COMMIT;
SQL
    done
}
# Meanwhile the second model changes: new weights twice, then a channel dropped. Each
# change schedules a full pass of every window with events.
modeller() {
    for change in "weights = ARRAY[1, 1, 1, 7]" "weights = ARRAY[2, 3, 5, 7]" \
                  "channels = ARRAY['search', 'social', 'email'], weights = ARRAY[3, 2, 1]"; do
        sleep 1
        # Its enqueue locks job rows the writers' transactions lock too, in another
        # order: retried on deadlock, as an application would.
        until sql -c "UPDATE attribution_models SET $change WHERE model_version = '2.0.0'" >/dev/null 2>&1; do
            sleep 0.2
        done
    done
}
writer 1 & w1=$!
writer 2 & w2=$!
modeller & m=$!
# Meanwhile a bulk statement over the limit.
# The writers update random rows in random order, so a bulk update would deadlock with
# them; taking the table in SHARE ROW EXCLUSIVE first makes it wait for them, and them
# for it, instead.
sql -c "BEGIN" -c "LOCK TABLE attribution_events IN SHARE ROW EXCLUSIVE MODE" \
    -c "UPDATE attribution_events SET revenue_cents = revenue_cents + 1 WHERE occurred_at < '2026-07-02Z'" \
    -c "COMMIT" >/dev/null
wait $w1 $w2 $m
wait_for_drain 120
# An explicit full recompute, once the writers are done (while they write, their own
# requests coalesce into the job and take over its correlation id).
sql -c "SELECT schedule_full_recompute('$TENANT_A', '2026-07-03Z', '2026-07-04Z', 'req-repair')" >/dev/null
wait_for_drain 60

# From scratch: every event's split, for every model, by the same rule.
expected="SELECT e.tenant_id, e.id, m.model_version, s.channel, s.cents
            FROM attribution_events e CROSS JOIN attribution_models m
           CROSS JOIN LATERAL unnest(m.channels, attribution_split_cents(e.revenue_cents, m.weights)) AS s(channel, cents)
           WHERE m.active"
actual="SELECT tenant_id, event_id, model_version, channel, allocated_revenue_cents FROM attribution_allocations"
assert_eq "$(sql -c "SELECT (SELECT count(*) FROM ($expected EXCEPT $actual) x) || '/' || (SELECT count(*) FROM ($actual EXCEPT $expected) y)")" \
    "0/0" "the allocations equal a from-scratch computation, row for row (missing/extra)"
assert_eq "$(sql -c "SELECT count(*) > 4000 FROM attribution_events")" t "the writers did their work"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_event_changes")" 0 "every recorded change was consumed"
assert_eq "$(events_off_by_a_cent)" 0 "every cent allocated (model 1.0.0)"
assert_eq "$(events_off_by_a_cent 2.0.0)" 0 "every cent allocated (model 2.0.0)"
incremental=$(grep -c "incremental pass" "$E2E_DATA/server.log" || true)
full=$(grep -c "full pass" "$E2E_DATA/server.log" || true)
[ "$incremental" -gt 0 ] || fail "no run was incremental"
echo "  ok: $incremental incremental and $full full runs"

# A window with no recorded change completes without reading its events.
sql -c "SELECT schedule_recompute_window('$TENANT_A', '2026-07-02Z', '2026-07-03Z', 'req-unchanged')" >/dev/null
wait_for 20 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE last_correlation_id = 'req-unchanged'"
wait_for 5 "SELECT true" >/dev/null
grep -q "correlation_id req-unchanged: incremental pass, 0 events, 0 allocation rows written" "$E2E_DATA/server.log" \
    || fail "the unchanged window's run read events"
echo "  ok: an unchanged window's run computes 0 events"
grep -q "correlation_id req-repair: full pass" "$E2E_DATA/server.log" || fail "schedule_full_recompute did not get a full pass"
echo "  ok: schedule_full_recompute gets a full pass"
