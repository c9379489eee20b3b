#!/usr/bin/env bash
# Incremental recompute on a hot day (release build, throwaway cluster, fsync and
# synchronous_commit on, default worker settings), side by side in one run:
# - the insert trigger's cost: the backfill's INSERT against the same INSERT into a copy
#   of the table without triggers;
# - the day's first computation (a full pass over EVENTS events: the backfill);
# - one event changed, then its job (incremental);
# - the unchanged day re-requested with schedule_recompute_window (incremental, nothing
#   recorded) against the same day with schedule_full_recompute (full pass), and
#   against a hand-written INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE
#   IS DISTINCT FROM over the same rows into a table of the same shape that holds them;
# - sustained ingest: 200 INSERTs of 1,000 rows from 2 clients; the events without
#   allocations right after the last commit, and the last job's finish;
# - what allocating costs an INSERT of 1,000 rows (attribution.allocate_on_insert on
#   against off);
# - live ingest into the hot day: one single-event INSERT every 200 ms for LIVE_SECONDS,
#   from the INSERT's start to its allocations being visible (looked for every
#   millisecond after its commit), and to the finish of the job it enqueued;
# - the change log's size at the end, the every-cent check, and every allocation
#   against a computation from scratch (missing/extra rows).
# Sizes: EVENTS (default 1,000,000), LIVE_SECONDS (default 30).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

DATA="$ROOT/target/bench-incremental/data"
PORT=${BENCH_PORT:-54336}
EVENTS=${EVENTS:-1000000}
LIVE_SECONDS=${LIVE_SECONDS:-30}

"$ROOT/scripts/setup.sh"
install_extension release
cluster_start "$DATA" "$PORT" "attribution.database = 'attribution_bench'" "shared_buffers = '1GB'" "max_wal_size = '4GB'"
trap 'cluster_stop "$DATA"' EXIT
q() { cluster_psql "$DATA" "$PORT" -d attribution_bench -tA "$@"; }
cluster_psql "$DATA" "$PORT" -d postgres -c "CREATE DATABASE attribution_bench" >/dev/null
q -c "CREATE EXTENSION pg_attribution" -c "$(tenants_sql)" >/dev/null
poll_until 60 q -c "SELECT workers = 2 FROM attribution_queue_health"
DAY="2026-09-01"
# job_ms CORRELATION_ID: waits for the job and prints its run time in ms.
job_ms() {
    POLL_PAUSE=0.2 poll_until 3600 q -c "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE last_correlation_id = '$1'"
    q -c "SELECT round(extract(epoch FROM finished_at - started_at)::numeric * 1000, 1) FROM attribution_recompute_jobs WHERE last_correlation_id = '$1'"
}

# The backfill's rows; the same ones go into a table without triggers first.
backfill_rows="SELECT gen_random_uuid(), '$TENANT_A', timestamptz '$DAY 00:00Z' + (g % 86400) * interval '1 second', (g::bigint * 7919) % 100000
        FROM generate_series(1, $EVENTS) g"
insert_ms() { grep -o 'Time: [0-9.]*' | tail -1 | awk '{print $2}'; }
log "the insert trigger's cost: $EVENTS rows into a copy of attribution_events without triggers, then into attribution_events"
plain_ms=$(q <<SQL | insert_ms
CREATE TABLE events_without_triggers (LIKE attribution_events INCLUDING ALL);
ALTER TABLE events_without_triggers ADD FOREIGN KEY (tenant_id) REFERENCES attribution_tenants (id);
ALTER TABLE events_without_triggers ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events_without_triggers USING (tenant_id = attribution_current_tenant());
CHECKPOINT;
\\timing on
INSERT INTO events_without_triggers (id, tenant_id, occurred_at, revenue_cents) $backfill_rows;
SQL
)
q -c "DROP TABLE events_without_triggers" -c "CHECKPOINT" >/dev/null
log "backfill: $EVENTS events into one day, one INSERT, its job (full pass)"
trigger_ms=$(q <<SQL | insert_ms
SET attribution.correlation_id = 'bench-backfill';
\\timing on
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) $backfill_rows;
SQL
)
echo "  INSERT of $EVENTS rows: $trigger_ms ms into attribution_events, $plain_ms ms into the same table without triggers ($(awk -v a="$trigger_ms" -v b="$plain_ms" 'BEGIN { printf "%.2f", a / b }')x)"
backfill=$(job_ms bench-backfill)
echo "  full pass over $EVENTS events: $backfill ms"
q -c "VACUUM ANALYZE attribution_allocations" -c "VACUUM ANALYZE attribution_events" >/dev/null

log "one event of the day changed, then its job"
q -c "SET attribution.correlation_id = 'bench-one'" \
  -c "UPDATE attribution_events SET revenue_cents = revenue_cents + 1
       WHERE tenant_id = '$TENANT_A' AND id = (SELECT id FROM attribution_events WHERE tenant_id = '$TENANT_A' LIMIT 1)" >/dev/null
echo "  incremental job: $(job_ms bench-one) ms"

# The hand-written statement: the day's allocations for model 1.0.0 upserted into
# handwritten, writing only rows that differ, as compute_allocations does.
handwritten_sql() {
    cat <<SQL
SET attribution.tenant_id = '$TENANT_A';
INSERT INTO handwritten AS a (tenant_id, event_id, model_version, channel, allocation_ratio, allocated_revenue_cents, correlation_id)
SELECT e.tenant_id, e.id, '1.0.0', s.channel, s.ratio, s.cents, 'hand'
  FROM attribution_events e
 CROSS JOIN LATERAL unnest(ARRAY['google_search', 'direct', 'email'], ARRAY[0.3333333333, 0.3333333333, 0.3333333333]::numeric[],
                           attribution_split_cents(e.revenue_cents, ARRAY[1, 1, 1])) AS s(channel, ratio, cents)
 WHERE e.tenant_id = '$TENANT_A' AND e.occurred_at >= '$DAY' AND e.occurred_at < '$DAY'::timestamptz + interval '1 day'
ON CONFLICT (tenant_id, event_id, model_version, channel) DO UPDATE
   SET allocation_ratio = excluded.allocation_ratio, allocated_revenue_cents = excluded.allocated_revenue_cents
 WHERE (a.allocation_ratio, a.allocated_revenue_cents) IS DISTINCT FROM (excluded.allocation_ratio, excluded.allocated_revenue_cents);
SQL
}

log "unchanged day re-requested: incremental, full pass, hand-written statement"
q -c "SELECT schedule_recompute_window('$TENANT_A', '$DAY', '$DAY'::timestamptz + interval '1 day', 'bench-rerun')" >/dev/null
echo "  schedule_recompute_window (incremental): $(job_ms bench-rerun) ms"
q -c "SELECT schedule_full_recompute('$TENANT_A', '$DAY', '$DAY'::timestamptz + interval '1 day', 'bench-full')" >/dev/null
echo "  schedule_full_recompute (full pass):     $(job_ms bench-full) ms"
q >/dev/null <<SQL
CREATE TABLE handwritten (LIKE attribution_allocations INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY);
ALTER TABLE handwritten ADD PRIMARY KEY (tenant_id, id),
    ADD UNIQUE (tenant_id, event_id, model_version, channel),
    ADD FOREIGN KEY (tenant_id, event_id) REFERENCES attribution_events (tenant_id, id) ON DELETE CASCADE;
INSERT INTO handwritten SELECT * FROM attribution_allocations;
VACUUM ANALYZE handwritten;
SQL
handwritten=$(q <<SQL
\\timing on
$(handwritten_sql)
SQL
)
echo "  hand-written INSERT ... ON CONFLICT re-run: $(grep -o 'Time: [0-9.]* ms' <<< "$handwritten" | tail -1)"

log "backfill by hand: the hand-written statement writing the same rows into an empty table of the same shape"
handfresh=$(q <<SQL
TRUNCATE handwritten;
\\timing on
$(handwritten_sql)
SQL
)
handfresh_ms=$(grep -o 'Time: [0-9.]*' <<< "$handfresh" | tail -1 | awk '{print $2}')
echo "  hand-written, fresh: $handfresh_ms ms ($(awk -v n="$EVENTS" -v t="$handfresh_ms" 'BEGIN { printf "%.0f", n / t * 1000 }') events/s); the extension's first full pass: $backfill ms ($(awk -v n="$EVENTS" -v t="$backfill" 'BEGIN { printf "%.0f", n / t * 1000 }') events/s)"

log "sustained ingest: 200 INSERTs of 1,000 rows into the day, back to back from 2 clients"
start=$(q -c "SELECT clock_timestamp()")
# Each client is one session sending its 100 statements back to back (each its own
# transaction), as an application holding a pooled connection does.
for c in 1 2; do
    ( for i in $(seq 1 100); do
          echo "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
                SELECT gen_random_uuid(), '$TENANT_A', timestamptz '$DAY 06:00Z' + g * interval '1 second', g
                  FROM generate_series(1, 1000) g;"
      done | q >/dev/null ) &
done
wait
last_commit=$(q -c "SELECT clock_timestamp()")
# Right after the last commit, before any job can catch up: how many of the 200,000
# events have no allocation yet (those the INSERTs allocated themselves have theirs).
unallocated=$(q -c "SELECT count(*) FROM attribution_events e
                     WHERE e.tenant_id = '$TENANT_A' AND e.occurred_at >= timestamptz '$DAY 06:00:01Z' AND e.occurred_at <= timestamptz '$DAY 06:16:40Z'
                       AND NOT EXISTS (SELECT FROM attribution_allocations a
                                        WHERE a.tenant_id = e.tenant_id AND a.event_id = e.id AND a.model_version = '1.0.0')")
echo "  events of the day's 06:00-06:16 without allocations right after the last commit: $unallocated"
echo "  the clients' 200 INSERTs took $(q -c "SELECT round(extract(epoch FROM '$last_commit'::timestamptz - '$start'::timestamptz)::numeric * 1000)") ms"
POLL_PAUSE=0.05 poll_until 600 q -c "SELECT pending + running = 0 FROM attribution_queue_health"
lag=$(q -c "SELECT round(extract(epoch FROM max(finished_at) - '$last_commit'::timestamptz)::numeric * 1000, 1) FROM attribution_recompute_jobs")
rate=$(q -c "SELECT round(200000 / extract(epoch FROM max(finished_at) - '$start'::timestamptz)) FROM attribution_recompute_jobs")
echo "  last job finished $lag ms after the last commit; $rate events/s allocated over the run (hand-written backfill: $(awk -v n="$EVENTS" -v t="$handfresh_ms" 'BEGIN { printf "%.0f", n / t * 1000 }') events/s)"
echo "  change log after it: $(q -c "SELECT count(*) FROM attribution_event_changes") rows, $(q -c "SELECT pg_size_pretty(pg_total_relation_size('attribution_event_changes'))")"

log "what allocating costs the INSERT: 1,000-row INSERTs into the day, attribution.allocate_on_insert on and off in turn"
cost=$(q <<SQL
CREATE TEMP TABLE cost (allocating boolean, ms float8);
DO \$\$
DECLARE t0 timestamptz;
BEGIN
  FOR i IN 1..20 LOOP
    PERFORM set_config('attribution.allocate_on_insert', CASE WHEN i % 2 = 0 THEN 'on' ELSE 'off' END, false);
    t0 := clock_timestamp();
    INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
    SELECT gen_random_uuid(), '$TENANT_A', timestamptz '$DAY 18:00Z' + g * interval '1 second', g
      FROM generate_series(1, 1000) g;
    COMMIT;
    INSERT INTO cost VALUES (i % 2 = 0, extract(epoch FROM clock_timestamp() - t0) * 1000);
    COMMIT;
    -- Time for the workers to compute what the INSERT left them, off the clock.
    PERFORM pg_sleep(0.5);
  END LOOP;
  PERFORM set_config('attribution.allocate_on_insert', 'on', false);
END \$\$;
SELECT format('median %s ms allocating its events, %s ms leaving them to the workers (10 INSERTs each, with their commit)',
              round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE allocating))::numeric, 1),
              round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE NOT allocating))::numeric, 1)) FROM cost;
SQL
)
echo "  $cost"

log "live ingest into the $EVENTS-event day: one INSERT every 200 ms for $LIVE_SECONDS s"
samples=$((LIVE_SECONDS * 5))
live=$(q <<SQL
CREATE TEMP TABLE lat (visible float8, job float8);
DO \$\$
DECLARE t0 timestamptz; seen timestamptz; done timestamptz; event uuid;
BEGIN
  FOR i IN 1..$samples LOOP
    event := gen_random_uuid();
    t0 := clock_timestamp();
    INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
    VALUES (event, '$TENANT_A', timestamptz '$DAY 12:00Z' + i * interval '1 second', 100);
    COMMIT;
    -- Visible: the first look (every millisecond) that finds the event's allocations
    -- committed, whether the INSERT allocated them itself or a worker did.
    LOOP
      PERFORM FROM attribution_allocations
        WHERE tenant_id = '$TENANT_A' AND event_id = event AND model_version = '1.0.0';
      IF FOUND THEN seen := clock_timestamp(); EXIT; END IF;
      IF clock_timestamp() - t0 > interval '2 s' THEN
        RAISE EXCEPTION 'sample % not allocated within 2 s', i;
      END IF;
      PERFORM pg_sleep(0.001);
    END LOOP;
    -- The job the INSERT enqueued, as bench/run.sh measures it: its finished_at (taken
    -- just before its commit), read after the client slept.
    PERFORM pg_sleep(greatest(0, 0.15 - extract(epoch FROM clock_timestamp() - t0)));
    LOOP
      SELECT finished_at INTO done FROM attribution_recompute_jobs
       WHERE tenant_id = '$TENANT_A' AND window_start = '$DAY' AND finished_at > t0;
      EXIT WHEN done IS NOT NULL;
      IF clock_timestamp() - t0 > interval '2 s' THEN
        RAISE EXCEPTION 'the job of sample % did not finish within 2 s', i;
      END IF;
      PERFORM pg_sleep(0.005);
    END LOOP;
    INSERT INTO lat VALUES (extract(epoch FROM seen - t0) * 1000, extract(epoch FROM done - t0) * 1000);
    COMMIT;
    PERFORM pg_sleep(greatest(0, 0.2 - extract(epoch FROM clock_timestamp() - t0)));
  END LOOP;
END \$\$;
SELECT format('allocations visible p50 %s ms, p99 %s ms, max %s ms; its job finished p50 %s ms, p99 %s ms; over %s inserts',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY visible)::numeric, 2),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY visible)::numeric, 2),
              round(max(visible)::numeric, 2),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY job)::numeric, 2),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY job)::numeric, 2), count(*)) FROM lat;
SQL
)
echo "  insert -> $live"

POLL_PAUSE=0.5 poll_until 600 q -c "SELECT pending + running = 0 FROM attribution_queue_health"
echo "  change log at the end: $(q -c "SELECT count(*) FROM attribution_event_changes") rows, $(q -c "SELECT pg_size_pretty(pg_total_relation_size('attribution_event_changes'))")"
bad=$(q -c "$(cents_off_sql)")
echo "  events whose allocations do not sum to their revenue: $bad"
# Every allocation as a computation from scratch gives it, row for row.
expected="SELECT e.tenant_id, e.id, m.model_version, s.channel, s.cents
            FROM attribution_events e CROSS JOIN attribution_models m
           CROSS JOIN LATERAL unnest(m.channels, attribution_split_cents(e.revenue_cents, m.weights)) AS s(channel, cents)
           WHERE m.active"
actual="SELECT tenant_id, event_id, model_version, channel, allocated_revenue_cents FROM attribution_allocations"
echo "  allocations missing/extra against a computation from scratch: $(q -c "SELECT (SELECT count(*) FROM ($expected EXCEPT $actual) x) || '/' || (SELECT count(*) FROM ($actual EXCEPT $expected) y)")"
[ "$bad" = 0 ]
