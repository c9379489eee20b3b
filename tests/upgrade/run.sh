#!/usr/bin/env bash
# Upgrade test: a database created at the released 0.1.0 and filled the way 0.1.0 allowed
# (hostile job rows included) is updated with ALTER EXTENSION to the current version.
# Checks that the 0.2.0 workers refuse the old SQL (logging it once), that the update
# keeps the data and cleans what the new constraints forbid, that the workers then run
# jobs, and that the upgraded schema is exactly that of a fresh install
# (tests/upgrade/schema.sql in both databases, diffed).
#
# Assumes the current build is installed (scripts/test.sh does that); installs the
# released 0.1.0 install script next to it, with sudo when not root.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"

UP_DATA="$ROOT/target/upgrade/data"
UP_PORT=${UPGRADE_PORT:-54337}
UP_DB=attribution_upgrade
FRESH_DB=fresh
OUT="$ROOT/target/upgrade/out"
EXT_DIR="$("$PG_CONFIG" --sharedir)/extension"
OLD=0.1.0
NEW=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)
UPGRADE_SCRIPT="pg_attribution--$OLD--$NEW.sql"

TENANT_A=11111111-1111-4111-8111-111111111111
TENANT_B=22222222-2222-4222-8222-222222222222
USER_MODEL=2.0.0-paid
JOB_COUNTERS=0badc0de-0000-4000-8000-000000000001  # attempts = -1, run_count = -5
JOB_NEWLINE=0badc0de-0000-4000-8000-000000000002   # last_correlation_id = E'bad\nid'
JOB_INFINITE=0badc0de-0000-4000-8000-000000000003  # window -infinity .. infinity
DEAD_JOB_OK=0badc0de-0000-4000-8000-00000000000a   # a dead letter as a worker writes it
DEAD_JOB_BAD=0badc0de-0000-4000-8000-00000000000b  # attempts = -2, a tab in its correlation id

REFUSAL="installed SQL of pg_attribution is version $OLD"
READY="pg_attribution worker is ready to run jobs"

summary=()
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; summary+=("$*"); }
assert_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; ok "$3"; }

# The extension directory is root's: write to it directly as root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

sql() { cluster_psql "$UP_DATA" "$UP_PORT" -d "$UP_DB" -tA "$@"; }
admin() { cluster_psql "$UP_DATA" "$UP_PORT" -d postgres -tA "$@"; }

# wait_for SECONDS SQL: until the query returns t.
wait_for() {
    poll_until "$1" sql -c "$2" || fail "timed out after $1 s waiting for: $2"
}

# Lines of the server log containing a fixed string, as "LINE_NUMBER PID".
log_lines() {
    grep -nF -- "$1" "$UP_DATA/server.log" | sed -n 's/^\([0-9]*\):[^[]*\[\([0-9]*\)\].*/\1 \2/p' || true
}

# Every connected worker's pid, sorted.
worker_pids() {
    admin -c "SELECT string_agg(pid::text, ' ' ORDER BY pid::text) FROM pg_stat_activity
               WHERE backend_type = 'pg_attribution worker' AND datname = '$UP_DB'"
}

# The data that must come through the update unchanged: counts and a digest of every row.
snapshot() {
    sql <<'SQL'
SELECT 'tenants=' || (SELECT count(*) FROM attribution_tenants)
    || ' events=' || (SELECT count(*) FROM attribution_events)
    || ' allocations=' || (SELECT count(*) FROM attribution_allocations)
    || ' models=' || (SELECT count(*) FROM attribution_models);
SELECT 'events md5=' || md5(string_agg(format('%s %s %s %s %s', tenant_id, id, occurred_at, revenue_cents, raw_payload),
                                       E'\n' ORDER BY tenant_id, id))
  FROM attribution_events;
SELECT 'allocations md5=' || md5(string_agg(format('%s %s %s %s %s %s %s %s %s %s', tenant_id, id, event_id, model_version,
                                                   channel, allocation_ratio, allocated_revenue_cents, correlation_id,
                                                   created_at, updated_at),
                                            E'\n' ORDER BY tenant_id, id))
  FROM attribution_allocations;
SELECT 'tenants and models md5=' || md5((SELECT string_agg(format('%s %s %s', id, name, created_at), E'\n' ORDER BY id)
                                           FROM attribution_tenants)
                                     || (SELECT string_agg(format('%s %s %s %s %s', model_version, channels, weights, active,
                                                                  created_at), E'\n' ORDER BY model_version)
                                           FROM attribution_models));
SQL
}

# Events (of every model with allocations) whose allocations do not sum to their revenue.
events_off() {
    sql -c "$(cents_off_sql "'1.0.0', '$USER_MODEL'")"
}

# insert_events TENANT PREFIX FIRST LAST START STEP: events FIRST..LAST of TENANT, as the
# application would insert them (tenant context set, one statement, so one trigger run).
insert_events() {
    sql >/dev/null <<SQL
BEGIN;
SELECT set_config('attribution.tenant_id', '$1', true);
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
SELECT md5('$2-' || g)::uuid, '$1', timestamptz '$5' + g * interval '$6',
       (g * 7919) % 100003 - 5000, jsonb_build_object('order', '$2-' || g)
  FROM generate_series($3, $4) g;
COMMIT;
SQL
}

# --- released scripts --------------------------------------------------------------------
log "upgrade: released scripts"
(cd "$ROOT" && sha256sum --quiet -c tests/upgrade/released.sha256) \
    || fail "the released $OLD install script changed; released scripts are frozen (fix forward in the next upgrade script)"
ok "the released $OLD install script is unchanged (tests/upgrade/released.sha256)"
cmp -s "$ROOT/sql/$UPGRADE_SCRIPT" "$EXT_DIR/$UPGRADE_SCRIPT" \
    || fail "$EXT_DIR/$UPGRADE_SCRIPT is not sql/$UPGRADE_SCRIPT: install the current build first (cargo pgrx install)"
if ! cmp -s "$ROOT/tests/upgrade/pg_attribution--$OLD.sql" "$EXT_DIR/pg_attribution--$OLD.sql"; then
    as_root install -m 0644 "$ROOT/tests/upgrade/pg_attribution--$OLD.sql" "$EXT_DIR/pg_attribution--$OLD.sql"
fi
ok "installed pg_attribution--$OLD.sql next to the $NEW build in $EXT_DIR"

# --- a cluster whose workers serve the database under test ------------------------------
cluster_start "$UP_DATA" "$UP_PORT" \
    "attribution.database = '$UP_DB'" \
    "attribution.retry_delay = '200ms'" \
    "attribution.retry_delay_max = '1s'" \
    "attribution.poll_interval = '1s'"
on_exit() {
    local status=$?
    if [ $status -ne 0 ] && [ -f "$UP_DATA/server.log" ]; then
        echo "--- last server log lines ($UP_DATA/server.log) ---" >&2
        tail -n 30 "$UP_DATA/server.log" >&2 || true
    fi
    cluster_stop "$UP_DATA" || true
    exit $status
}
trap on_exit EXIT

workers=$(admin -c "SHOW attribution.workers")
admin -c "CREATE DATABASE $UP_DB" >/dev/null

# --- 0.1.0, with the 0.2.0 library loaded -----------------------------------------------
log "upgrade: $OLD installed, $NEW library"
sql -c "CREATE EXTENSION pg_attribution VERSION '$OLD'" >/dev/null
assert_eq "$(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_attribution'")" "$OLD" \
    "CREATE EXTENSION pg_attribution VERSION '$OLD'"
created_at=$SECONDS
# The workers connect once the database and their role (created by CREATE EXTENSION) exist.
deadline=$((SECONDS + 60))
until [ "$(worker_pids | wc -w)" = "$workers" ]; do
    [ $SECONDS -lt $deadline ] || fail "the $workers workers did not connect to $UP_DB"
    sleep 0.2
done
pids=$(worker_pids)
deadline=$((SECONDS + 30))
until [ "$(log_lines "$REFUSAL" | awk '{print $2}' | sort -u | wc -l)" -ge "$workers" ]; do
    [ $SECONDS -lt $deadline ] || fail "the workers did not log \"$REFUSAL\""
    sleep 0.2
done

sql >/dev/null <<SQL
INSERT INTO attribution_tenants (id, name) VALUES ('$TENANT_A', 'Acme'), ('$TENANT_B', 'Globex');
INSERT INTO attribution_models (model_version, channels, weights, description)
VALUES ('$USER_MODEL', ARRAY['google_search', 'paid_social', 'email'], ARRAY[5, 3, 2], 'a user model');
SQL
# 100 events a tenant over four days, in several statements a second apart: each one
# enqueues jobs and wakes the workers, which must keep refusing without logging again.
insert_events "$TENANT_A" a 1 50 "2026-01-05 00:00Z" "53 minutes"; sleep 1
insert_events "$TENANT_B" b 1 50 "2026-01-05 00:00Z" "53 minutes"; sleep 1
insert_events "$TENANT_A" a 51 100 "2026-01-05 00:00Z" "53 minutes"; sleep 1
insert_events "$TENANT_B" b 51 100 "2026-01-05 00:00Z" "53 minutes"
# compute_allocations under the 0.1.0 SQL, for both models, so that the jobs the
# trigger enqueued have nothing left to change once they run.
computed=$(sql <<SQL
SELECT string_agg(r::text, ' ' ORDER BY t, m)
  FROM unnest(ARRAY['$TENANT_A', '$TENANT_B']::uuid[]) t, unnest(ARRAY['1.0.0', '$USER_MODEL']) m,
       LATERAL compute_allocations(t, '2026-01-05 00:00Z', '2026-01-10 00:00Z', m) r;
SQL
)
assert_eq "$computed" "(100,300) (100,300) (100,300) (100,300)" \
    "compute_allocations under the $OLD SQL: 100 events and 300 allocations per tenant and model"
# A dead letter, and rows 0.1.0 let roles write that 0.2.0's constraints forbid.
sql >/dev/null <<SQL
INSERT INTO worker_failed_jobs (job_id, tenant_id, payload, correlation_id, sqlstate, error_message, attempts)
VALUES ('$DEAD_JOB_OK', '$TENANT_A',
        jsonb_build_object('tenant_id', '$TENANT_A', 'window_start', '2026-01-06 00:00Z'::timestamptz,
                           'window_end', '2026-01-07 00:00Z'::timestamptz, 'model_version', '1.0.0',
                           'correlation_id', 'dead-letter-ok'),
        'dead-letter-ok', 'XX000', 'a failure under 0.1.0', 3),
       ('$DEAD_JOB_BAD', '$TENANT_B', '{}', E'bad dead\tletter', NULL, 'a hostile dead letter', -2);
INSERT INTO attribution_recompute_jobs
       (id, tenant_id, window_start, window_end, model_version, status, run_count, attempts, last_correlation_id)
VALUES ('$JOB_COUNTERS', '$TENANT_A', '2025-12-01 00:00Z', '2025-12-02 00:00Z', '1.0.0', 'failed', -5, -1, 'negative-counters'),
       ('$JOB_NEWLINE', '$TENANT_A', '2025-12-02 00:00Z', '2025-12-03 00:00Z', '1.0.0', 'pending', 0, 0, E'bad\nid'),
       ('$JOB_INFINITE', '$TENANT_B', '-infinity', 'infinity', '1.0.0', 'pending', 1, 1, 'infinite-window');
SQL
# Some seconds with pending jobs and more enqueues: still one refusal per worker.
while [ $((SECONDS - created_at)) -lt 6 ]; do sleep 0.5; done
sql -c "SELECT schedule_recompute_window('$TENANT_A', '2026-01-05 00:00Z', '2026-01-06 00:00Z', 'late-request')" >/dev/null
sleep 3
assert_eq "$(sql -c "SELECT count(*) FILTER (WHERE status = 'pending') || ' pending, '
                            || count(*) FILTER (WHERE started_at IS NOT NULL) || ' started'
                       FROM attribution_recompute_jobs WHERE id NOT IN ('$JOB_COUNTERS', '$JOB_NEWLINE', '$JOB_INFINITE')")" \
    "16 pending, 0 started" "the workers run no job under the $OLD SQL (16 trigger-enqueued jobs wait)"
refusals=$(log_lines "$REFUSAL")
assert_eq "$(echo "$refusals" | awk '{print $2}' | sort | tr '\n' ' ')" "$(echo "$pids" | tr ' ' '\n' | sort | tr '\n' ' ')" \
    "each of the $workers workers logged \"$REFUSAL\" exactly once in $((SECONDS - created_at)) s and 5 enqueues"
echo "    $(grep -F -m 1 -- "$REFUSAL" "$UP_DATA/server.log" | sed 's/^.*LOG: *//')"

before=$(snapshot)
pending_before=$(sql -c "SELECT string_agg(quote_literal(id::text), ',' ORDER BY id) FROM attribution_recompute_jobs
                          WHERE status = 'pending' AND id NOT IN ('$JOB_NEWLINE', '$JOB_INFINITE')")

# --- the update --------------------------------------------------------------------------
log "upgrade: ALTER EXTENSION pg_attribution UPDATE"
sql -c "ALTER EXTENSION pg_attribution UPDATE" >/dev/null
assert_eq "$(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_attribution'")" "$NEW" \
    "ALTER EXTENSION pg_attribution UPDATE: $OLD -> $NEW"
after=$(snapshot)
[ "$after" = "$before" ] || fail "the update changed data: before: $before; after: $after"
ok "data intact: $(echo "$before" | head -n 1), and every row of events, allocations, tenants and models unchanged"
assert_eq "$(events_off)" 0 "every event's allocations sum to its revenue, for both models"
assert_eq "$(sql -c "SELECT run_count || '/' || attempts || '/' || status FROM attribution_recompute_jobs WHERE id = '$JOB_COUNTERS'")" \
    "0/0/failed" "the job with run_count -5, attempts -1 now has 0 and 0"
assert_eq "$(sql -c "SELECT last_correlation_id = id::text FROM attribution_recompute_jobs WHERE id = '$JOB_NEWLINE'")" \
    t "the correlation id with a newline is replaced by the job id"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE id = '$JOB_INFINITE'")" 0 \
    "the job with the window -infinity..infinity left the queue"
assert_eq "$(sql -c "SELECT tenant_id || '|' || correlation_id || '|' || sqlstate || '|' || attempts || '|'
                            || (error_message LIKE '%0.2.0 upgrade%') || '|' || (payload->>'window_start')
                            || '|' || (payload->>'window_end') || '|' || (payload->>'model_version')
                       FROM worker_failed_jobs WHERE job_id = '$JOB_INFINITE'")" \
    "$TENANT_B|infinite-window|22008|1|true|-infinity|infinity|1.0.0" \
    "...and is a dead letter whose message names the 0.2.0 upgrade"
echo "    $(sql -c "SELECT error_message FROM worker_failed_jobs WHERE job_id = '$JOB_INFINITE'")"
assert_eq "$(sql -c "SELECT (correlation_id = job_id::text) || '/' || attempts FROM worker_failed_jobs WHERE job_id = '$DEAD_JOB_BAD'")" \
    "true/0" "the dead letter with attempts -2 and a tab in its correlation id is fixed"

# --- the workers run jobs again ----------------------------------------------------------
log "upgrade: the workers"
deadline=$((SECONDS + 30))
for pid in $pids; do
    refused_at=$(log_lines "$REFUSAL" | awk -v p="$pid" '$2 == p {print $1}')
    until log_lines "$READY" | awk -v p="$pid" -v r="$refused_at" '$2 == p && $1 > r {found = 1} END {exit !found}'; do
        [ $SECONDS -lt $deadline ] || fail "worker $pid did not log \"$READY\" after its refusal"
        sleep 0.2
    done
done
ok "each worker logged \"$READY\" after its refusal"
wait_for 60 "SELECT count(*) = 0 FROM attribution_recompute_jobs WHERE status IN ('pending', 'running')"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs
                      WHERE status = 'succeeded' AND id IN ($pending_before, '$JOB_NEWLINE')")" \
    "$(($(echo "$pending_before" | tr ',' '\n' | wc -l) + 1))" "every job pending before the update ran and succeeded"
[ "$(snapshot)" = "$before" ] || fail "the jobs pending since $OLD changed data: before: $before; after: $(snapshot)"
ok "those jobs had nothing to change: every allocation row is as compute_allocations wrote it under $OLD"

job=$(sql -c "BEGIN" -c "SELECT set_config('attribution.tenant_id', '$TENANT_A', true)" \
          -c "SELECT redrive_failed_job(id) FROM worker_failed_jobs WHERE job_id = '$DEAD_JOB_OK'" -c "COMMIT" | sed -n 2p)
wait_for 30 "SELECT status = 'succeeded' AND last_correlation_id = 'dead-letter-ok' FROM attribution_recompute_jobs WHERE id = '$job'"
ok "the dead letter written under $OLD is re-driven and its job succeeds"

admin -c "CREATE ROLE upgrade_loader LOGIN IN ROLE attribution_app" >/dev/null
cluster_psql "$UP_DATA" "$UP_PORT" -U upgrade_loader -d "$UP_DB" -tA >/dev/null <<SQL
BEGIN;
SELECT set_config('attribution.tenant_id', '$TENANT_A', true);
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT md5('new-a-' || g)::uuid, '$TENANT_A', timestamptz '2026-02-01 00:00Z' + g * interval '3 hours', 1000 + g
  FROM generate_series(1, 20) g;
COMMIT;
BEGIN;
SELECT set_config('attribution.tenant_id', '$TENANT_B', true);
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
SELECT md5('new-b-' || g)::uuid, '$TENANT_B', timestamptz '2026-02-01 00:00Z' + g * interval '3 hours', 1001 * g
  FROM generate_series(1, 20) g;
COMMIT;
SQL
wait_for 30 "SELECT count(*) = 12 AND bool_and(status = 'succeeded') FROM attribution_recompute_jobs
              WHERE window_start >= '2026-02-01 00:00Z'"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations WHERE event_id IN (
                         SELECT id FROM attribution_events WHERE occurred_at >= '2026-02-01 00:00Z')")" 240 \
    "40 events inserted by an application role after the update: their 12 jobs succeeded, 240 allocations"
assert_eq "$(events_off)" 0 "every event's allocations sum to its revenue, for both models, old events and new"
if grep -F "pg_attribution worker could not" "$UP_DATA/server.log"; then
    fail "the workers logged errors (above)"
fi
assert_eq "$(log_lines "$REFUSAL" | wc -l)" "$workers" "no further refusal was logged after the update"

# --- the upgraded schema is the fresh schema ---------------------------------------------
log "upgrade: schema of the upgraded database against a fresh $NEW install"
admin -c "CREATE DATABASE $FRESH_DB" >/dev/null
cluster_psql "$UP_DATA" "$UP_PORT" -d "$FRESH_DB" -c "CREATE EXTENSION pg_attribution" >/dev/null
mkdir -p "$OUT"
sql -f "$ROOT/tests/upgrade/schema.sql" > "$OUT/upgraded.txt"
cluster_psql "$UP_DATA" "$UP_PORT" -d "$FRESH_DB" -tA -f "$ROOT/tests/upgrade/schema.sql" > "$OUT/fresh.txt"
if ! diff -u --label "fresh $NEW install" --label "upgraded from $OLD" "$OUT/fresh.txt" "$OUT/upgraded.txt"; then
    fail "the upgraded schema differs from a fresh install (above; full listings in $OUT)"
fi
counts=$(awk '{print $1}' "$OUT/fresh.txt" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
ok "the upgraded schema equals a fresh install: $(wc -l < "$OUT/fresh.txt") lines identical ($counts)"

log "upgrade test passed"
echo "Summary of the upgrade test ($OLD -> $NEW):"
for line in "${summary[@]}"; do echo "  - $line"; done
