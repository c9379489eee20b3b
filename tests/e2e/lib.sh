# Helpers for end-to-end tests: each test gets a fresh database on the shared e2e cluster
# and talks to it through real client connections, committing as an application would.

E2E_DATA=${E2E_DATA:-$ROOT/target/e2e/data}
# Scratch files of this cluster's tests (another cluster may run beside it).
E2E_DIR=$(dirname "$E2E_DATA")
E2E_PORT=${E2E_PORT:-54333}
E2E_DB=${E2E_DB:-attribution_e2e}

# sql [psql args...] < statement: runs against the test database, unaligned, no headers.
sql() { cluster_psql "$E2E_DATA" "$E2E_PORT" -d "$E2E_DB" -tA "$@"; }

# Settings every e2e cluster starts with: the workers serve the test database and retry
# quickly, so that failure paths finish in seconds.
E2E_CONF=(
    "attribution.database = '$E2E_DB'"
    "attribution.retry_delay = '200ms'"
    "attribution.retry_delay_max = '1s'"
    "attribution.poll_interval = '1s'"
)

admin() { cluster_psql "$E2E_DATA" "$E2E_PORT" -d postgres -tA "$@"; }

fresh_db() {
    admin -c "ALTER SYSTEM RESET ALL" -c "SELECT pg_reload_conf()" >/dev/null
    admin -c "DROP DATABASE IF EXISTS $E2E_DB WITH (FORCE)" -c "CREATE DATABASE $E2E_DB"
    sql -c "CREATE EXTENSION pg_attribution" >/dev/null
    wait_for_workers 2
}

# wait_for SECONDS SQL: until the query returns t.
wait_for() {
    poll_until "$1" sql -c "$2" || fail "timed out after $1 s waiting for: $2"
}

# Waits until N workers are connected to the test database (they restart within seconds
# after a crash or after the database was recreated).
wait_for_workers() {
    local deadline=$((SECONDS + 60))
    until [ "$(admin -c "SELECT count(*) FROM pg_stat_activity
                         WHERE backend_type = 'pg_attribution worker' AND datname = '$E2E_DB'" 2>/dev/null)" = "$1" ]; do
        [ $SECONDS -lt $deadline ] || fail "workers did not connect to $E2E_DB"
        sleep 0.2
    done
}

# Waits until no job is pending or running.
wait_for_drain() {
    wait_for "${1:-60}" "SELECT count(*) = 0 FROM attribution_recompute_jobs WHERE status IN ('pending', 'running')"
}

# Applies settings with ALTER SYSTEM and a reload (SIGHUP), as a DBA would.
reload_with() {
    for setting in "$@"; do admin -c "ALTER SYSTEM SET $setting" >/dev/null; done
    admin -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.3
}

fail() { echo "FAIL: $*" >&2; exit 1; }

# assert_eq ACTUAL EXPECTED MESSAGE
assert_eq() {
    [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"
    echo "  ok: $3"
}

# Every event's allocations for the model sum to its revenue; prints the number that don't.
events_off_by_a_cent() {
    sql -c "$(cents_off_sql "'${1:-1.0.0}'")"
}
