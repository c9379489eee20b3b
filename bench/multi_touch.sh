#!/usr/bin/env bash
# Multi-touch models against the fixed-weight baseline, side by side in one run (release
# build, throwaway cluster, fsync on, the default 2 workers): CONVERSIONS conversions
# (default 100,000) of as many customers over 10 days, with about 5 touchpoints each over
# 20 channels. Each model computes the tenant's 10 daily windows for the first time
# through the workers, as in production: turning a multi-touch model on for the tenant
# (or registering a weighted model) schedules them. Its throughput is the conversions
# over the time from its first job's start to its last job's end. The baseline, a
# weighted model identical to 1.0.0 (three channels, one third each), runs right before
# each model, so that each comparison is made at the same size of the allocations table
# (every model adds its rows, and inserts slow down as the table grows: the first
# baseline is faster than the last). Each model's share is against the baseline run just
# before it; the share of the first baseline is shown too. Then every model's
# allocations are checked to add up to each conversion's revenue.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"

DATA="$ROOT/target/bench-multi-touch/data"
PORT=${BENCH_PORT:-54338}
CONVERSIONS=${CONVERSIONS:-100000}

"$ROOT/scripts/setup.sh"
install_extension release
cluster_start "$DATA" "$PORT" "attribution.database = 'attribution_bench'" "shared_buffers = '1GB'" "max_wal_size = '4GB'" \
    "checkpoint_timeout = '1h'"
trap 'cluster_stop "$DATA"' EXIT
q() { cluster_psql "$DATA" "$PORT" -d attribution_bench -tA "$@"; }
cluster_psql "$DATA" "$PORT" -d postgres -c "CREATE DATABASE attribution_bench" >/dev/null
q -c "CREATE EXTENSION pg_attribution" -c "$(tenants_sql)" >/dev/null
poll_until 60 q -c "SELECT workers = 2 FROM attribution_queue_health"

MODELS="first_touch last_touch last_non_direct linear position_based time_decay markov shapley"
log "$CONVERSIONS conversions, about 5 touchpoints each over 20 channels (and half as many customers who did not convert)"
q >/dev/null <<SQL
INSERT INTO attribution_models (model_version, kind) VALUES $(for m in $MODELS; do printf "('mt-%s', '%s')," "$m" "$m"; done | sed 's/,$//');
INSERT INTO attribution_touchpoints (tenant_id, customer_key, occurred_at, channel)
SELECT '$TENANT_A', 'c' || c, timestamptz '2026-03-01Z' + ((c::bigint * 7919 + k * 104729) % (10 * 24 * 60)) * interval '1 minute',
       'channel_' || ((c * 31 + k * 17) % 20)
  FROM generate_series(1, $CONVERSIONS * 3 / 2) c, generate_series(1, 9) k
 WHERE k <= 1 + c % 9;
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, customer_key)
SELECT gen_random_uuid(), '$TENANT_A', timestamptz '2026-03-05Z' + ((c::bigint * 15485863) % (10 * 24 * 60)) * interval '1 minute',
       100 + (c * 7919) % 100000, 'c' || c
  FROM generate_series(1, $CONVERSIONS) c;
SQL
POLL_PAUSE=0.5 poll_until 600 q -c "SELECT pending + running = 0 FROM attribution_queue_health"
q -c "VACUUM ANALYZE" >/dev/null
echo "  $(q -c "SELECT count(*) FROM attribution_touchpoints") touchpoints, $(q -c "SELECT count(*) FROM attribution_events") conversions"

# run MODEL SQL: runs SQL (which schedules MODEL's first computation of every window),
# waits for the workers; prints "ms events/s" from the first job's start to the last's end.
# Each run starts right after a checkpoint (and none is timed to start during it), so
# that every run pays the same full-page writes.
run() {
    q -c "CHECKPOINT" >/dev/null
    q -c "$2" >/dev/null
    POLL_PAUSE=0.2 poll_until 1200 q -c "SELECT pending + running = 0 FROM attribution_queue_health"
    local ms
    ms=$(q -c "SELECT round(extract(epoch FROM max(finished_at) - min(started_at))::numeric * 1000)
                 FROM attribution_recompute_jobs WHERE model_version = '$1'")
    echo "$ms $(awk -v n="$CONVERSIONS" -v t="$ms" 'BEGIN { printf "%.0f", n / t * 1000 }')"
}
weighted() { echo "INSERT INTO attribution_models (model_version, channels, weights) SELECT '$1', channels, weights FROM attribution_models WHERE model_version = '1.0.0'"; }
log "each model's first computation of the $CONVERSIONS conversions (10 daily windows, 2 workers), beside a baseline run just before it"
printf '  %-18s %9s %10s   %-28s %9s %10s %10s %9s\n' model ms events/s "" "baseline ms" events/s "vs it" "vs first"
first_rate=
for m in $MODELS; do
    read -r base_ms base_rate < <(run "baseline-$m" "$(weighted "baseline-$m")")
    first_rate=${first_rate:-$base_rate}
    if [ "$m" = markov ] || [ "$m" = shapley ]; then
        fit=$(q <<SQL
SET attribution.tenant_id = '$TENANT_A';
\\timing on
SELECT count(*) FROM attribution_fit_model('$TENANT_A', 'mt-$m', '2026-02-01Z', '2026-04-01Z');
SQL
)
        fitted="fitted in $(grep -o 'Time: [0-9.]*' <<< "$fit" | tail -1 | awk '{print $2}') ms"
    else
        fitted=""
    fi
    read -r ms r < <(run "mt-$m" "INSERT INTO attribution_tenant_models (tenant_id, model_version) VALUES ('$TENANT_A', 'mt-$m')")
    printf '  %-18s %9s %10s   %-28s %9s %10s %10s %9s\n' "$m" "$ms" "$r" "$fitted" "$base_ms" "$base_rate" \
        "$(awk -v a="$r" -v b="$base_rate" 'BEGIN { printf "%.0f%%", a / b * 100 }')" \
        "$(awk -v a="$r" -v b="$first_rate" 'BEGIN { printf "%.0f%%", a / b * 100 }')"
done
echo "  (fits: attribution_fit_model, the journeys read from the tables, then the fit)"
echo "  jobs that did not succeed: $(q -c "SELECT count(*) FROM attribution_recompute_jobs WHERE status <> 'succeeded'")"

bad=$(q -c "$(cents_off_sql "$(for m in $MODELS; do printf "'mt-%s', 'baseline-%s'," "$m" "$m"; done)'1.0.0'" "e.tenant_id = '$TENANT_A'")")
echo "  conversions whose allocations do not add up to their revenue, over all models: $bad"
[ "$bad" = 0 ]
