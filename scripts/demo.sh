#!/usr/bin/env bash
# The main job, end to end, on a throwaway cluster under target/demo: install the
# extension, load sample tenants and events, let the insert trigger schedule recompute
# windows and the background workers drain them (progress shown from
# attribution_queue_health), then print per-tenant, per-channel totals with a check that
# every cent is accounted for.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DATA="$ROOT/target/demo/data"
PORT=${DEMO_PORT:-54329}
EVENTS_PER_TENANT=${DEMO_EVENTS_PER_TENANT:-20000}

"$ROOT/scripts/setup.sh"
install_extension release
log "starting a throwaway cluster in target/demo (port $PORT)"
cluster_start "$DATA" "$PORT" "attribution.database = 'attribution_demo'"
trap 'cluster_stop "$DATA"' EXIT

psql_demo() { cluster_psql "$DATA" "$PORT" "$@"; }
psql_demo -d postgres -c "DROP DATABASE IF EXISTS attribution_demo" -c "CREATE DATABASE attribution_demo"
psql_demo -d attribution_demo -c "CREATE EXTENSION pg_attribution"

log "loading 3 tenants x $EVENTS_PER_TENANT events over 7 days (the trigger schedules the windows)"
psql_demo -d attribution_demo -v n="$EVENTS_PER_TENANT" <<'SQL'
INSERT INTO attribution_tenants (id, name) VALUES
    ('11111111-1111-4111-8111-111111111111', 'acme'),
    ('22222222-2222-4222-8222-222222222222', 'globex'),
    ('33333333-3333-4333-8333-333333333333', 'initech');
-- One statement per tenant: each schedules 7 day-windows, not thousands of jobs.
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
SELECT gen_random_uuid(), t.id,
       timestamptz '2026-11-01 00:00+00' + (random() * interval '7 days'),
       CASE WHEN random() < 0.05 THEN -(1 + (random() * 5000)::bigint)   -- refunds
            ELSE (random() * 20000)::bigint END,
       jsonb_build_object('source', 'demo', 'n', g)
  FROM attribution_tenants t, generate_series(1, :n) g;
SELECT count(*) AS pending_jobs FROM attribution_recompute_jobs WHERE status = 'pending'
\gset
\echo :pending_jobs windows scheduled
SQL

log "the background workers drain the queue"
# The workers connect once the database exists (they retry every two seconds).
for _ in $(seq 1 100); do
    [ "$(psql_demo -d attribution_demo -tA -c "SELECT workers FROM attribution_queue_health")" -ge 1 ] && break
    sleep 0.1
done
while :; do
    row=$(psql_demo -d attribution_demo -tA -F ' ' -c "SELECT pending, running, succeeded, failed, workers FROM attribution_queue_health")
    read -r pending running succeeded failed workers <<< "$row"
    printf '  %s  pending %-4s running %-2s succeeded %-4s failed %-2s (workers: %s)\n' \
        "$(date +%T.%N | cut -c1-12)" "$pending" "$running" "$succeeded" "$failed" "$workers"
    [ "$pending" = 0 ] && [ "$running" = 0 ] && break
    sleep 0.25
done
psql_demo -d attribution_demo -P footer=off -c "
SELECT t.name AS tenant, count(*) AS jobs, sum(j.run_count) AS runs,
       round(avg(extract(epoch FROM j.finished_at - j.started_at)) * 1000, 1) AS avg_job_ms,
       round(max(extract(epoch FROM j.finished_at - j.enqueued_at)) * 1000, 1) AS max_enqueue_to_done_ms
  FROM attribution_recompute_jobs j JOIN attribution_tenants t ON t.id = j.tenant_id
 GROUP BY t.name ORDER BY t.name"

log "allocations per tenant and channel (model 1.0.0)"
psql_demo -d attribution_demo -P footer=off -v off_sql="$(cents_off_sql)" <<'SQL'
SELECT t.name AS tenant, a.channel,
       count(*) AS allocations,
       to_char(sum(a.allocated_revenue_cents) / 100.0, 'FM999,999,990.00') AS revenue
  FROM attribution_allocations a JOIN attribution_tenants t ON t.id = a.tenant_id
 GROUP BY t.name, a.channel ORDER BY t.name, a.channel;

-- Every cent: per event, the allocations must add up to the revenue exactly
-- (:off_sql is scripts/lib.sh's cents_off_sql, the check the tests use too).
SELECT count(*) AS events, (:off_sql) AS events_off_by_any_cent,
       sum(e.revenue_cents) AS revenue_cents,
       (SELECT sum(allocated_revenue_cents) FROM attribution_allocations
         WHERE model_version = '1.0.0') AS allocated_cents
  FROM attribution_events e
\gset
\echo events: :events, off by any cent: :events_off_by_any_cent, revenue: :revenue_cents, allocated: :allocated_cents
\if :{?events_off_by_any_cent}
SELECT (:events_off_by_any_cent = 0 AND :revenue_cents = :allocated_cents) AS every_cent_accounted_for
\gset
\if :every_cent_accounted_for
\echo OK: every cent of revenue is allocated
\else
\echo FAILED: allocations do not add up
\quit 1
\endif
\endif
SQL
