#!/usr/bin/env bash
# Worker benchmarks on a throwaway cluster (release build, fsync and synchronous_commit
# on, default worker settings): insert-commit -> allocations-visible latency with idle
# workers, queue drain rate for one-event windows, and worker memory over many jobs.
# Also: fair share (another tenant's latency behind a 100k-job backlog, beside its
# latency on an idle queue) and the job table's size while autovacuum keeps up with a
# long drain. Sizes: LATENCY_SAMPLES, DRAIN_JOBS, MEMORY_JOBS, BACKLOG_JOBS,
# FAIR_SAMPLES, VACUUM_JOBS (environment; VACUUM_JOBS=0 skips that part).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

DATA="$ROOT/target/bench/data"
PORT=${BENCH_PORT:-54335}
LATENCY_SAMPLES=${LATENCY_SAMPLES:-500}
DRAIN_JOBS=${DRAIN_JOBS:-10000}
MEMORY_JOBS=${MEMORY_JOBS:-100000}
BACKLOG_JOBS=${BACKLOG_JOBS:-100000}
FAIR_SAMPLES=${FAIR_SAMPLES:-100}
VACUUM_JOBS=${VACUUM_JOBS:-1000000}

"$ROOT/scripts/setup.sh"
install_extension release
cluster_start "$DATA" "$PORT" "attribution.database = 'attribution_bench'" "shared_buffers = '512MB'"
trap 'cluster_stop "$DATA"' EXIT
q() { cluster_psql "$DATA" "$PORT" -d attribution_bench -tA "$@"; }
cluster_psql "$DATA" "$PORT" -d postgres -c "CREATE DATABASE attribution_bench"
q -c "CREATE EXTENSION pg_attribution" \
  -c "$(tenants_sql)" >/dev/null
poll_until 60 q -c "SELECT workers = 2 FROM attribution_queue_health"

workers_private_kb() {
    local total=0
    for pid in $(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_attribution worker'"); do
        # Private memory only: VmRSS would also count shared buffers as a worker touches them.
        total=$((total + $(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")))
    done
    echo $total
}

# Drains one-event windows: the events commit in one transaction, so the jobs become
# visible (and the workers are woken) at once. The drain time runs from that commit to
# the last job's finished_at, both read from the server's clock; the client polls only
# twice a second so that it does not take CPU from the workers.
drain() {  # $1 = jobs, $2 = first day offset; prints the drain time in seconds
    local committed
    committed=$(q -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
                      SELECT gen_random_uuid(), 'aaaaaaaa-0000-4000-8000-000000000001',
                             timestamptz '2000-01-01 12:00Z' + ($2 + g) * interval '1 day', g
                        FROM generate_series(1, $1) g" \
                  -c "SELECT clock_timestamp()")
    POLL_PAUSE=0.5 poll_until 3600 q -c "SELECT pending + running = 0 FROM attribution_queue_health"
    q -c "SELECT extract(epoch FROM max(finished_at) - '$committed'::timestamptz)
            FROM attribution_recompute_jobs WHERE window_start >= timestamptz '2000-01-01Z' + $2 * interval '1 day'"
}

# latency TENANT SAMPLES FIRST_DAY: each sample inserts one event into a new day and
# commits. Two clocks start before the INSERT: one stops when the event's allocations
# are visible (looked for right after the commit, then every half millisecond; an
# INSERT allocates its own events, see README "Allocation on insert"), the other at
# the finished_at of the job the INSERT enqueued (clock_timestamp() in the worker's
# transaction right before its commit, so the worker's final WAL flush is not
# counted), read after the client slept so that it does not compete with the workers
# for the two cores. Prints p50, p99 and max of each.
latency() {
    q <<SQL
CREATE TEMP TABLE lat (visible float8, job float8);
DO \$\$
DECLARE t0 timestamptz; day timestamptz; seen timestamptz; done timestamptz; event uuid;
BEGIN
  FOR i IN 1..$2 LOOP
    day := timestamptz '1990-01-01Z' + ($3 + i) * interval '1 day';
    event := gen_random_uuid();
    t0 := clock_timestamp();
    INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
    VALUES (event, '$1', day + interval '1 hour', 100);
    COMMIT;
    LOOP
      PERFORM FROM attribution_allocations WHERE tenant_id = '$1' AND event_id = event;
      IF FOUND THEN seen := clock_timestamp(); EXIT; END IF;
      IF clock_timestamp() - t0 > interval '2 s' THEN
        RAISE EXCEPTION 'sample % not allocated within 2 s', i;
      END IF;
      PERFORM pg_sleep(0.0005);
    END LOOP;
    PERFORM pg_sleep(greatest(0, 0.02 - extract(epoch FROM clock_timestamp() - t0)));
    LOOP
      SELECT finished_at INTO done FROM attribution_recompute_jobs
       WHERE tenant_id = '$1' AND window_start = day AND status = 'succeeded';
      EXIT WHEN done IS NOT NULL;
      IF clock_timestamp() - t0 > interval '2 s' THEN
        RAISE EXCEPTION 'the job of sample % did not finish within 2 s', i;
      END IF;
      PERFORM pg_sleep(0.005);
    END LOOP;
    INSERT INTO lat VALUES (extract(epoch FROM seen - t0) * 1000, extract(epoch FROM done - t0) * 1000);
    COMMIT;
  END LOOP;
END \$\$;
SELECT format('allocations visible p50 %s ms, p99 %s ms, max %s ms; job finished p50 %s ms, p99 %s ms, max %s ms',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY visible)::numeric, 2),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY visible)::numeric, 2),
              round(max(visible)::numeric, 2),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY job)::numeric, 2),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY job)::numeric, 2),
              round(max(job)::numeric, 2)) FROM lat;
SQL
}

log "latency: insert -> allocations committed, idle workers, $LATENCY_SAMPLES samples"
echo "  $(latency "$TENANT_A" "$LATENCY_SAMPLES" 0)"

log "fair share: tenant B's latency, idle queue vs behind tenant A's $BACKLOG_JOBS-job backlog ($FAIR_SAMPLES samples each)"
idle=$(latency "$TENANT_B" "$FAIR_SAMPLES" 0)
q -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
      SELECT gen_random_uuid(), '$TENANT_A', timestamptz '1600-01-01 12:00Z' + g * interval '1 day', g
        FROM generate_series(1, $BACKLOG_JOBS) g" >/dev/null
behind=$(latency "$TENANT_B" "$FAIR_SAMPLES" 1000)
left=$(q -c "SELECT count(*) FROM attribution_recompute_jobs WHERE tenant_id = '$TENANT_A' AND status = 'pending'")
echo "  idle queue:          $idle"
echo "  behind A's backlog:  $behind  (A still had $left jobs pending at the end)"
POLL_PAUSE=0.5 poll_until 3600 q -c "SELECT pending + running = 0 FROM attribution_queue_health"

log "drain: $DRAIN_JOBS one-event windows, default settings (2 workers)"
secs=$(drain "$DRAIN_JOBS" 0)
echo "  $(awk -v n="$DRAIN_JOBS" -v t="$secs" 'BEGIN { printf "%.0f jobs/s (%d jobs in %.2f s)", n / t, n, t }')"

log "worker memory over $MEMORY_JOBS jobs"
rss0=$(workers_private_kb)
secs=$(drain "$MEMORY_JOBS" 20000)
rss1=$(workers_private_kb)
echo "  workers' private memory (RssAnon, both workers): $((rss0 / 1024)) MB before, $((rss1 / 1024)) MB after, growth $(((rss1 - rss0) / 1024)) MB over $MEMORY_JOBS jobs"
echo "  $(awk -v n="$MEMORY_JOBS" -v t="$secs" 'BEGIN { printf "drain rate on this run: %.0f jobs/s", n / t }')"

if [ "$VACUUM_JOBS" -gt 0 ]; then
    log "job table size during a $VACUUM_JOBS-job drain (autovacuum at its defaults)"
    q -c "DELETE FROM attribution_recompute_jobs" -c "VACUUM attribution_recompute_jobs" >/dev/null
    q -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
          SELECT gen_random_uuid(), '$TENANT_A', timestamptz '1000-01-01 12:00Z' + g * interval '1 day', 1
            FROM generate_series(1, $VACUUM_JOBS) g" >/dev/null
    size() { q -c "SELECT pg_size_pretty(pg_total_relation_size('attribution_recompute_jobs')) || ' (heap ' ||
                         pg_size_pretty(pg_relation_size('attribution_recompute_jobs')) || ')'"; }
    echo "  after enqueueing: $(size)"
    start=$SECONDS
    until [ "$(q -c "SELECT pending + running FROM attribution_queue_health")" = 0 ]; do
        [ $((SECONDS - start)) -lt 7200 ] || { echo "the drain did not finish within 2 hours" >&2; exit 1; }
        sleep 30
        echo "  after $((SECONDS - start)) s: $(size), $(q -c "SELECT pending FROM attribution_queue_health") pending, autovacuum runs on the job table so far: $(q -c "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'attribution_recompute_jobs'")"
    done
    echo "  drained: $(size); n_tup_upd $(q -c "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'attribution_recompute_jobs'"), n_dead_tup $(q -c "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'attribution_recompute_jobs'"), autovacuum runs $(q -c "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'attribution_recompute_jobs'")"
fi

bad=$(q -c "$(cents_off_sql)")
echo "  events whose allocations do not sum to their revenue: $bad"
[ "$bad" = 0 ]
