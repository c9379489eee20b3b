#!/usr/bin/env bash
# pg_attribution scaled out on Citus: a coordinator and two worker nodes, three throwaway
# clusters on this machine. An installation with data is distributed by tenant with
# attribution_distribute(), then checked as the application sees it through the
# coordinator: the old INSERT leads to allocations, exact to the cent for 20 tenants
# spread over both nodes; compute runs on the node holding the tenant's shard (EXPLAIN);
# each node's workers run the jobs of the tenants it holds and no others; RLS isolates
# tenants on the distributed tables and on the shards themselves; correlation ids,
# retries, dead letters and re-drive work; a worker node restarted in immediate mode in
# the middle of a drain loses and doubles nothing.
#
# Assumes Citus and the current build are installed (scripts/test-citus.sh does both).
# CITUS_PORT sets the coordinator's port (the worker nodes take the next two).
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"

started=$SECONDS
CITUS_DATA=${CITUS_DATA:-$ROOT/target/citus}
PORT=${CITUS_PORT:-54350}
DB=attribution_citus
NODES=(coordinator worker1 worker2)
declare -A NODE_PORT=([coordinator]=$PORT [worker1]=$((PORT + 1)) [worker2]=$((PORT + 2)))

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }
assert_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; ok "$3"; }

data() { echo "$CITUS_DATA/$1"; }
# on NODE [psql args...]: as the superuser, in the test database of NODE.
on() { local node=$1; shift; cluster_psql "$(data "$node")" "${NODE_PORT[$node]}" -d "$DB" -tA "$@"; }
sql() { on coordinator "$@"; }
# as_app [psql args...]: as an application login role (a member of attribution_app), on
# the coordinator, which is where the application connects.
as_app() { cluster_psql "$(data coordinator)" "$PORT" -d "$DB" -U app_loader -tA "$@"; }
wait_for() { poll_until "$1" sql -c "$2" || fail "timed out after $1 s waiting for: $2"; }
wait_for_drain() {
    wait_for "${1:-120}" "SELECT count(*) = 0 FROM attribution_recompute_jobs WHERE status IN ('pending', 'running')"
}

# Twenty tenants, t01 .. t20.
tenant() { printf 'c1705000-0000-4000-8000-%012d' "$1"; }
TENANTS=$(seq 1 20)

stop_all() { for n in "${NODES[@]}"; do cluster_stop "$(data "$n")" immediate 2>/dev/null || true; done; }
trap stop_all EXIT

log "starting a coordinator and two worker nodes on ports $PORT-$((PORT + 2))"
for n in "${NODES[@]}"; do
    # Citus first in shared_preload_libraries, as it requires. The workers' success
    # lines (DEBUG1) name each job's tenant: the test reads from them which node ran what.
    cluster_start "$(data "$n")" "${NODE_PORT[$n]}" \
        "shared_preload_libraries = 'citus,pg_attribution'" \
        "listen_addresses = '127.0.0.1'" \
        "max_prepared_transactions = 100" \
        "attribution.database = '$DB'" \
        "attribution.retry_delay = '200ms'" \
        "attribution.retry_delay_max = '1s'" \
        "attribution.poll_interval = '1s'" \
        "attribution.failure_injection = on"
    cluster_psql "$(data "$n")" "${NODE_PORT[$n]}" -d postgres -q <<SQL
CREATE ROLE attribution_worker LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
ALTER ROLE attribution_worker SET log_min_messages = debug1;
CREATE DATABASE $DB;
SQL
    on "$n" -q -c "CREATE EXTENSION citus"
done
sql -q <<SQL
SELECT citus_set_coordinator_host('127.0.0.1', $PORT);
SELECT citus_add_node('127.0.0.1', ${NODE_PORT[worker1]});
SELECT citus_add_node('127.0.0.1', ${NODE_PORT[worker2]});
SQL
# Citus creates the extension on the worker nodes too.
sql -q -c "CREATE EXTENSION pg_attribution"
for n in worker1 worker2; do
    assert_eq "$(on "$n" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_attribution'")" \
        "$(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_attribution'")" \
        "CREATE EXTENSION on the coordinator installed pg_attribution on $n"
done
sql -q -c "CREATE ROLE app_loader LOGIN" -c "GRANT attribution_app TO app_loader"

log "an installation in use before distribution: 20 tenants, 600 events, allocations computed"
sql -q -c "INSERT INTO attribution_tenants (id, name)
           SELECT ('c1705000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'tenant ' || g
             FROM generate_series(1, 20) g"
sql -q -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
           SELECT gen_random_uuid(), t.id, timestamptz '2026-01-01Z' + (e % 3) * interval '1 day' + e * interval '1 minute',
                  1000 + e * 7
             FROM attribution_tenants t, generate_series(1, 30) e"
wait_for_drain 60
before=$(sql -c "SELECT (SELECT count(*) FROM attribution_events) || '/' || (SELECT count(*) FROM attribution_allocations)
                     || '/' || (SELECT count(*) FROM attribution_recompute_jobs)")
assert_eq "$before" "600/1800/60" "600 events, 1800 allocations and 60 jobs on the coordinator"

log "attribution_distribute()"
distributed_at=$SECONDS
sql -c "SELECT table_name || ': ' || layout FROM attribution_distribute()" | sed 's/^/    /'
echo "    (took $((SECONDS - distributed_at)) s)"
layout=$(sql -c "SELECT string_agg(logicalrelid::text || ':' || partmethod::text || ':' ||
                                   CASE WHEN partmethod = 'h' THEN column_to_column_name(logicalrelid, partkey) ELSE '' END,
                                   ',' ORDER BY logicalrelid::text)
                   FROM pg_dist_partition")
assert_eq "$layout" "attribution_allocations:h:tenant_id,attribution_event_changes:h:tenant_id,attribution_events:h:tenant_id,attribution_model_fits:h:tenant_id,attribution_models:n:,attribution_recompute_jobs:h:tenant_id,attribution_tenant_models:n:,attribution_tenants:n:,attribution_touchpoints:h:tenant_id,worker_failed_jobs:h:tenant_id" \
    "tenant tables are distributed by tenant_id, registries are reference tables"
assert_eq "$(sql -c "SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE partmethod = 'h'")" 1 \
    "the tenant tables are co-located"
again=$(sql -c "SELECT count(*) FROM attribution_distribute()")
assert_eq "$again" 10 "attribution_distribute() again changes nothing and reports the same ten tables"
assert_eq "$(sql -c "SELECT (SELECT count(*) FROM attribution_events) || '/' || (SELECT count(*) FROM attribution_allocations)
                     || '/' || (SELECT count(*) FROM attribution_recompute_jobs)")" "$before" \
    "every event, allocation and job moved into the shards"
assert_eq "$(sql -c "$(cents_off_sql)")" 0 "the allocations still add up to every event's revenue"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_events" 2>/dev/null)" 600 \
    "the coordinator answers queries on the distributed tables"
# sqlstate SQL...: the SQLSTATE the statement fails with, as the superuser on NODE.
sqlstate() { local node=$1; shift; on "$node" -v VERBOSITY=verbose -c "$*" 2>&1 | sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\):.*/\1/p' | head -1; }
assert_eq "$(sqlstate coordinator "SELECT attribution_distribute(0)")" 22023 "a shard count of 0 is refused (22023)"
assert_eq "$(sqlstate worker1 "SELECT attribution_distribute()")" 55000 "attribution_distribute() on a worker node is refused (55000)"
cluster_psql "$(data coordinator)" "$PORT" -d postgres -q -c "CREATE DATABASE no_citus"
cluster_psql "$(data coordinator)" "$PORT" -d no_citus -q -c "CREATE EXTENSION pg_attribution"
err=$(cluster_psql "$(data coordinator)" "$PORT" -d no_citus -v VERBOSITY=verbose -c "SELECT attribution_distribute()" 2>&1 || true)
[[ $err == *"55000"*"Citus is not installed in this database"* ]] || fail "attribution_distribute() without Citus: $err"
ok "attribution_distribute() where Citus is not installed is refused (55000)"
err=$(cluster_psql "$(data coordinator)" "$PORT" -d "$DB" -U app_loader -v VERBOSITY=verbose -c "SELECT attribution_distribute()" 2>&1 || true)
[[ $err == *"42501"* ]] || fail "an application role could call attribution_distribute(): $err"
ok "an application role may not call it (42501)"

# tenant -> port of the node holding its shards
placement_sql="SELECT t.id, n.nodeport
                 FROM attribution_tenants t
                 JOIN pg_dist_placement p ON p.shardid = get_shard_id_for_distribution_column('attribution_events', t.id)
                 JOIN pg_dist_node n ON n.groupid = p.groupid"
spread=$(sql -c "SELECT string_agg(nodeport || ':' || c, ' ' ORDER BY nodeport)
                   FROM (SELECT nodeport, count(*) c FROM ($placement_sql) x GROUP BY 1) y")
echo "    tenants per node (port:tenants): $spread"
[[ $spread =~ ^${NODE_PORT[worker1]}:[0-9]+\ ${NODE_PORT[worker2]}:[0-9]+$ ]] \
    || fail "the 20 tenants are not spread over both worker nodes: $spread"
ok "the 20 tenants are spread over both worker nodes, none on the coordinator"

log "the old system's INSERT, through the coordinator, as an application role"
insert_started=$(sql -c "SELECT now()")
for i in $TENANTS; do
    as_app -q <<SQL
BEGIN;
SET LOCAL attribution.tenant_id = '$(tenant "$i")';
SET LOCAL attribution.correlation_id = 'citus-insert-$i';
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
SELECT gen_random_uuid(), '$(tenant "$i")', timestamptz '2026-02-01Z' + g * interval '5 hours', 999 + g * $i, '{}'::jsonb
  FROM generate_series(1, 50) g
    ON CONFLICT DO NOTHING;
COMMIT;
SQL
done
wait_for_drain 60
assert_eq "$(sql -c "SELECT count(*) FROM attribution_events")" 1600 "1000 events more"
assert_eq "$(sql -c "$(cents_off_sql)")" 0 "every event's allocations add up to its revenue, to the cent"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations")" 4800 "three allocations per event, none twice"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations a JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id
                     WHERE e.occurred_at >= '2026-02-01Z' AND a.correlation_id IS DISTINCT FROM 'citus-insert-' || right(a.tenant_id::text, 2)::int")" 0 \
    "the allocations carry the correlation id of the INSERT that caused them"

# A small statement into a window computed already: the run computes only the event
# that changed (incremental), on the tenant's node too.
t5=$(tenant 5)
as_app -q <<SQL
BEGIN;
SET LOCAL attribution.tenant_id = '$t5';
SET LOCAL attribution.correlation_id = 'citus-incremental';
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), '$t5', '2026-02-01 12:30Z', 4321);
COMMIT;
SQL
wait_for_drain 30
assert_eq "$(sql -c "$(cents_off_sql)")" 0 "an event added to a computed window is allocated too"
grep -aqE "tenant $t5 correlation_id citus-incremental: incremental pass, 1 events" "$(data worker1)/server.log" "$(data worker2)/server.log" \
    || fail "the run for one new event was not an incremental pass over that event"
ok "by an incremental pass over that one event"
sql -q -c "DELETE FROM attribution_events WHERE tenant_id = '$t5' AND revenue_cents = 4321"
wait_for_drain 30

assert_eq "$(sql -c "SELECT pending || '/' || running || '/' || succeeded FROM attribution_queue_health")" "0/0/280" \
    "attribution_queue_health counts the jobs of every node"
assert_eq "$(sql -c "SELECT count(*) || '/' || sum(succeeded) FROM attribution_metrics()")" "20/280" \
    "attribution_metrics() reports every tenant"

log "which node ran which tenants' jobs"
# Each worker's success line: "pg_attribution job <id> tenant <tenant> correlation_id ...".
ran_on() {
    grep -ao 'pg_attribution job [0-9a-f-]* tenant [0-9a-f-]* correlation_id citus-insert-[0-9]*' "$(data "$1")/server.log" \
        | awk '{print $5}' | sort | uniq -c | awk '{print $2 ":" $1}' || true
}
expected_nodes=$(sql -c "SELECT string_agg(id || '=' || nodeport, ' ' ORDER BY id) FROM ($placement_sql) x")
for n in coordinator worker1 worker2; do
    runs=$(ran_on "$n")
    echo "    $n (port ${NODE_PORT[$n]}): $(echo "$runs" | grep -c . || true) tenants, $(echo "$runs" | awk -F: '{s += $2} END {print s + 0}') jobs"
    for line in $runs; do
        t=${line%%:*}
        echo "      tenant $t: ${line##*:} jobs"
        [[ " $expected_nodes " == *" $t=${NODE_PORT[$n]} "* ]] || fail "tenant $t's job ran on $n, which does not hold its shard"
    done
done
[ -z "$(ran_on coordinator)" ] || fail "the coordinator ran jobs after distribution"
for i in $TENANTS; do
    t=$(tenant "$i")
    grep -aq "tenant $t correlation_id citus-insert-$i" "$(data worker1)/server.log" "$(data worker2)/server.log" \
        || fail "no node logged a job of tenant $t"
done
ok "each tenant's jobs ran on the node holding its shard, and only there"

log "compute runs on the tenant's node: the plan of compute_allocations() from the coordinator"
t1=$(tenant 1)
t1_port=$(sql -c "SELECT nodeport FROM ($placement_sql) x WHERE id = '$t1'")
plan=$(sql 2>&1 <<SQL
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET citus.explain_all_tasks = on;
SET client_min_messages = notice;
SELECT * FROM compute_allocations('$t1', '2026-02-01Z', '2026-02-02Z');
SQL
)
compute_plan=$(echo "$plan" | awk '/Query Text: WITH model AS MATERIALIZED/,/^NOTICE|^[0-9]+\|/' | sed '$d')
echo "$compute_plan" | sed 's/^/    /' | grep -v "^    *$"
echo "$compute_plan" | grep -q "Custom Scan (Citus Adaptive)" || fail "the compute statement is not planned by Citus"
! echo "$compute_plan" | grep -qiE "pull to coordinator|repartition" \
    || fail "the compute statement pulls rows through the coordinator"
ok "no part of it pulls or repartitions rows through the coordinator"
[ -z "$(echo "$compute_plan" | grep -o 'Task Count: [0-9]*' | grep -v 'Task Count: [01]$')" ] \
    || fail "a part of the compute statement runs on several shards"
ok "each part of it runs as one task (a router query) or none"
nodes=$(echo "$compute_plan" | grep -o 'Node: host=[^ ]* port=[0-9]*' | sed 's/.*port=//' | sort -u | tr '\n' ' ')
assert_eq "$nodes" "$PORT $t1_port " "the tasks run on tenant 1's node ($t1_port), and the coordinator only adds up their counts"
echo "$compute_plan" | awk -v p="port=$t1_port" '/Node: host=/ {on = index($0, p) > 0} on && /Insert on attribution_allocations_/ {found = 1} END {exit !found}' \
    || fail "the allocations are not written by a task on tenant 1's node"
echo "$compute_plan" | awk -v p="port=$t1_port" '/Node: host=/ {on = index($0, p) > 0} on && /Scan .*on attribution_events_/ {found = 1} END {exit !found}' \
    || fail "the events are not read by a task on tenant 1's node"
ok "the events are read and the allocations written by one INSERT ... SELECT on the shards of tenant 1's node"

log "row-level security on the distributed tables"
t2=$(tenant 2)
rls=$(as_app <<SQL
BEGIN;
SET LOCAL attribution.tenant_id = '$t1';
SELECT count(*) FROM attribution_events;
SELECT count(*) FROM attribution_events WHERE tenant_id = '$t2';
SELECT count(DISTINCT tenant_id) || '/' || count(*) FROM attribution_allocations;
SELECT count(DISTINCT tenant_id) FROM attribution_recompute_jobs;
COMMIT;
SQL
)
assert_eq "$(echo "$rls" | tr '\n' ' ')" "80 0 1/240 1 " \
    "tenant 1 sees its 80 events, its allocations and jobs only; tenant 2's rows do not exist for it"
assert_eq "$(as_app -c "SELECT count(*) FROM attribution_events")" 0 "no tenant context: no rows"
assert_eq "$(as_app -c "SELECT set_config('attribution.tenant_id', '$t1', false)" -c "SELECT count(*) FROM attribution_events" | tail -1)" 0 \
    "a context set with set_config() stays on the coordinator, so the shards show nothing (fail closed)"
err=$(as_app 2>&1 <<SQL || true
BEGIN;
SET LOCAL attribution.tenant_id = '$t1';
INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents) VALUES (gen_random_uuid(), '$t2', now(), 1);
SQL
)
[[ $err == *"new row violates row-level security policy"* ]] || fail "an insert for another tenant was not refused: $err"
ok "an insert for another tenant is refused by the policy on its shard"
err=$(as_app -v VERBOSITY=verbose 2>&1 <<SQL || true
BEGIN;
SET LOCAL attribution.tenant_id = '$t1';
SELECT * FROM compute_allocations('$t2', '2026-02-01Z', '2026-02-02Z');
SQL
)
[[ $err == *"42501"* ]] || fail "compute_allocations() for another tenant was not refused with 42501: $err"
ok "compute_allocations() for another tenant is refused (42501)"
# The application role on a worker node, at the shards themselves.
t1_node=worker1; [ "$t1_port" = "${NODE_PORT[worker1]}" ] || t1_node=worker2
shard=$(on "$t1_node" -c "SELECT 'attribution_events_' || get_shard_id_for_distribution_column('attribution_events', '$t1')")
alloc_shard=$(on "$t1_node" -c "SELECT 'attribution_allocations_' || get_shard_id_for_distribution_column('attribution_allocations', '$t1')")
at_shard() { cluster_psql "$(data "$t1_node")" "$t1_port" -d "$DB" -U app_loader -tA "$@"; }
assert_eq "$(at_shard -c "SELECT count(*) FROM $shard")" 0 "on the worker node, tenant 1's shard shows nothing without a context"
assert_eq "$(at_shard -c "SET attribution.tenant_id = '$t2'" -c "SELECT count(*) FROM $shard WHERE tenant_id = '$t1'")" 0 \
    "nor to another tenant's context"
assert_eq "$(at_shard -c "SET attribution.tenant_id = '$t1'" -c "SELECT count(*) FROM $shard WHERE tenant_id = '$t1'")" 80 \
    "only to tenant 1's"
err=$(at_shard -c "DELETE FROM $alloc_shard" 2>&1 || true)
[[ $err == *"permission denied"* ]] || fail "an application role changed an allocation shard directly: $err"
ok "an application role cannot write the allocation shards directly either"

log "schedule_recompute_window, retries, dead letters and re-drive, through the coordinator"
t3=$(tenant 3)
# The next run of this window fails (failure injection is on in this test's servers).
sql -q -c "UPDATE attribution_recompute_jobs SET inject_failure = 'error'
            WHERE tenant_id = '$t3' AND window_start = '2026-02-01Z'"
job=$(as_app -c "BEGIN" -c "SET LOCAL attribution.tenant_id = '$t3'" \
             -c "SELECT schedule_recompute_window('$t3', '2026-02-01Z', '2026-02-02Z', 'citus-retry-1')" -c "COMMIT" | grep -E '^[0-9a-f-]{36}$')
wait_for 60 "SELECT count(*) = 1 FROM worker_failed_jobs WHERE job_id = '$job'"
assert_eq "$(sql -c "SELECT status || '/' || attempts || '/' || last_correlation_id FROM attribution_recompute_jobs WHERE tenant_id = '$t3' AND id = '$job'")" \
    "failed/3/citus-retry-1" "the job was retried, then dead-lettered after 3 attempts, with its correlation id"
dead=$(as_app -c "BEGIN" -c "SET LOCAL attribution.tenant_id = '$t3'" \
              -c "SELECT id || '/' || correlation_id FROM worker_failed_jobs WHERE job_id = '$job'" -c "COMMIT")
[[ $dead == *"/citus-retry-1" ]] || fail "tenant 3 does not see its dead letter: $dead"
ok "tenant 3 sees its dead letter"
assert_eq "$(as_app -c "BEGIN" -c "SET LOCAL attribution.tenant_id = '$t1'" -c "SELECT count(*) FROM worker_failed_jobs" -c "COMMIT")" 0 \
    "tenant 1 does not"
err=$(as_app -v VERBOSITY=verbose -c "BEGIN" -c "SET LOCAL attribution.tenant_id = '$t1'" -c "SELECT redrive_failed_job(${dead%%/*})" 2>&1 || true)
[[ $err == *"P0002"* ]] || fail "tenant 1 could re-drive tenant 3's dead letter: $err"
ok "nor can it re-drive it (P0002)"
sql -q -c "UPDATE attribution_recompute_jobs SET inject_failure = NULL WHERE tenant_id = '$t3' AND id = '$job'"
assert_eq "$(as_app -c "BEGIN" -c "SET LOCAL attribution.tenant_id = '$t3'" -c "SELECT redrive_failed_job(${dead%%/*})" -c "COMMIT" | grep -E '^[0-9a-f-]{36}$')" \
    "$job" "tenant 3 re-drives it"
wait_for 30 "SELECT status = 'succeeded' FROM attribution_recompute_jobs WHERE tenant_id = '$t3' AND id = '$job'"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs WHERE job_id = '$job' AND redriven_at IS NOT NULL")" 1 \
    "the re-driven job succeeded and its dead letter is marked re-driven"
assert_eq "$(sql -c "$(cents_off_sql)")" 0 "every cent is still allocated"

log "a worker node restarted in immediate mode in the middle of a drain"
# 20 tenants x 40 days x 25 events: 800 jobs, each one window.
sql -q -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents)
           SELECT gen_random_uuid(), t.id, timestamptz '2026-04-01Z' + d * interval '1 day' + e * interval '13 minutes', 100 + d * e
             FROM attribution_tenants t, generate_series(0, 39) d, generate_series(1, 25) e"
w1_tenants="SELECT id FROM ($placement_sql) x WHERE nodeport = ${NODE_PORT[worker1]}"
progress_sql="SELECT count(*) FILTER (WHERE status = 'succeeded') || '/' || count(*) FILTER (WHERE status IN ('pending', 'running'))
                FROM attribution_recompute_jobs WHERE window_start >= '2026-04-01Z' AND tenant_id IN ($w1_tenants)"
poll_until 30 sql -c "SELECT split_part(($progress_sql), '/', 1)::int > 0" || fail "worker1 did not start on the new jobs"
at_crash=$(sql -c "$progress_sql")
[ "${at_crash#*/}" -gt 0 ] || fail "worker1 finished its jobs before the restart ($at_crash): nothing was tested"
as_pg "$PG_BIN/pg_ctl" -D "$(data worker1)" -m immediate -w -t 60 restart -l "$(data worker1)/server.log" >/dev/null
echo "    worker1 restarted with $at_crash of its jobs succeeded/pending or running"
wait_for_drain 120
assert_eq "$(sql -c "SELECT count(*) FROM attribution_events")" 21600 "every event is there"
assert_eq "$(sql -c "$(cents_off_sql)")" 0 "every event's allocations add up to its revenue"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_allocations")" 64800 "three allocations per event: nothing lost, nothing doubled"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_recompute_jobs WHERE window_start >= '2026-04-01Z' AND status = 'succeeded'")" 800 \
    "all 800 jobs succeeded"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs WHERE redriven_at IS NULL")" 0 "no dead letter"
recovered=$(grep -ac "exited before finishing it" "$(data worker1)/server.log" || true)
echo "    jobs worker1 found running after its restart and ran again: $recovered"

log "multi-touch models: conversions, late touchpoints and a fitted model, through the coordinator"
t7=$(tenant 7)
t7_node=worker1; [ "$(sql -c "SELECT nodeport FROM ($placement_sql) x WHERE id = '$t7'")" = "${NODE_PORT[worker1]}" ] || t7_node=worker2
sql -q -c "INSERT INTO attribution_models (model_version, kind) VALUES ('mt-linear', 'linear'), ('mt-markov', 'markov')"
app7() { as_app -c "BEGIN" -c "SET LOCAL attribution.tenant_id = '$t7'" "$@" -c "COMMIT"; }
# Turned on by the superuser: an application role's insert into this reference table
# makes Citus lock the reference tables it references, which needs more than SELECT.
sql -q -c "INSERT INTO attribution_tenant_models (tenant_id, model_version) VALUES ('$t7', 'mt-linear'), ('$t7', 'mt-markov')"
# (ON CONFLICT: without it Citus sends an INSERT ... SELECT's rows with COPY, which the
# tables' row-level security refuses.) Customers c1..c20: touchpoints on 2026-06-01 (email, then search for even customers),
# a conversion each on 2026-06-02; c21..c40 touched but never converting (for the fit).
app7 -c "INSERT INTO attribution_touchpoints (tenant_id, customer_key, occurred_at, channel)
         SELECT '$t7', 'c' || c, timestamptz '2026-06-01 08:00Z' + k * interval '1 hour', CASE k WHEN 0 THEN 'email' ELSE 'search' END
           FROM generate_series(1, 40) c, generate_series(0, 1) k WHERE k = 0 OR c % 2 = 0
             ON CONFLICT DO NOTHING" >/dev/null
app7 -c "SELECT count(*) FROM attribution_fit_model('$t7', 'mt-markov', '2026-05-01Z', '2026-07-01Z')" >/dev/null
app7 -c "SET LOCAL attribution.correlation_id = 'citus-conversions'" \
     -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, customer_key)
         SELECT gen_random_uuid(), '$t7', timestamptz '2026-06-02 10:00Z' + c * interval '1 minute', 1000 + c, 'c' || c
           FROM generate_series(1, 20) c
             ON CONFLICT DO NOTHING" >/dev/null
wait_for_drain 60
linear_c() {
    sql -c "SELECT string_agg(a.channel || ':' || a.allocated_revenue_cents, ',' ORDER BY a.channel)
              FROM attribution_allocations a JOIN attribution_events e ON e.tenant_id = a.tenant_id AND e.id = a.event_id
             WHERE e.tenant_id = '$t7' AND e.customer_key = '$1' AND a.model_version = 'mt-linear'"
}
assert_eq "$(linear_c c1)" "email:1001" "linear: a conversion after one touchpoint credits it whole"
assert_eq "$(linear_c c2)" "email:501,search:501" "linear: after two, half each (cents exact)"
assert_eq "$(sql -c "$(cents_off_sql "'mt-linear', 'mt-markov'" "e.tenant_id = '$t7' AND e.customer_key IS NOT NULL")")" 0 \
    "every conversion's cents add up under the linear and the fitted Markov model"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_model_fits WHERE tenant_id = '$t7' AND model_version = 'mt-markov'")" 1 \
    "attribution_fit_model() stored tenant 7's fit in the distributed table"
# A late touchpoint: c1 was also reached by social before converting.
app7 -c "SET LOCAL attribution.correlation_id = 'citus-late'" \
     -c "INSERT INTO attribution_touchpoints (tenant_id, customer_key, occurred_at, channel) VALUES ('$t7', 'c1', '2026-06-01 20:00Z', 'social')" >/dev/null
wait_for_drain 60
assert_eq "$(linear_c c1)" "email:501,social:500" "a late touchpoint re-attributes its customer's conversion"
assert_eq "$(linear_c c3)" "email:1003" "... and no other customer's"
grep -aqE "tenant $t7 correlation_id citus-late: incremental pass, 1 events" "$(data "$t7_node")/server.log" \
    || fail "the late touchpoint's run was not an incremental pass over its one conversion on tenant 7's node"
ok "by an incremental pass over that one conversion, on tenant 7's node"
app7 -c "DELETE FROM attribution_touchpoints WHERE tenant_id = '$t7' AND channel = 'social'" >/dev/null
wait_for_drain 60
assert_eq "$(linear_c c1)" "email:1001" "a deleted touchpoint's credit goes away"
assert_eq "$(sql -c "SELECT count(*) FROM attribution_event_changes")" 0 "every recorded change was consumed"
app7 -c "SELECT schedule_full_recompute('$t7', '2026-06-02Z', '2026-06-03Z', 'citus-full', 'mt-linear')" >/dev/null
wait_for_drain 60
assert_eq "$(sql -c "SELECT status FROM attribution_recompute_jobs WHERE last_correlation_id = 'citus-full'")" succeeded \
    "a full pass of a multi-touch window succeeds"
assert_eq "$(linear_c c2)" "email:501,search:501" "... and changes nothing"
assert_eq "$(sql -c "SELECT count(*) FROM worker_failed_jobs WHERE tenant_id = '$t7'")" 0 "no multi-touch job failed"

log "all Citus checks passed in $((SECONDS - started)) s"
