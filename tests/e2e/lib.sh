# Helpers for end-to-end tests: each test gets a fresh database on the shared e2e cluster
# and talks to it through real client connections, committing as an application would.

E2E_DATA="$ROOT/target/e2e/data"
E2E_PORT=${E2E_PORT:-54333}
E2E_DB=${E2E_DB:-attribution_e2e}

# sql [psql args...] < statement: runs against the test database, unaligned, no headers.
sql() { cluster_psql "$E2E_DATA" "$E2E_PORT" -d "$E2E_DB" -tA "$@"; }

fresh_db() {
    cluster_psql "$E2E_DATA" "$E2E_PORT" -d postgres \
        -c "DROP DATABASE IF EXISTS $E2E_DB WITH (FORCE)" -c "CREATE DATABASE $E2E_DB"
    sql -c "CREATE EXTENSION pg_attribution" >/dev/null
}

fail() { echo "FAIL: $*" >&2; exit 1; }

# assert_eq ACTUAL EXPECTED MESSAGE
assert_eq() {
    [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"
    echo "  ok: $3"
}

# Every event's allocations for the model sum to its revenue; prints the number that don't.
events_off_by_a_cent() {
    sql -c "SELECT count(*) FROM attribution_events e
             WHERE e.revenue_cents IS DISTINCT FROM (
                   SELECT sum(a.allocated_revenue_cents) FROM attribution_allocations a
                    WHERE a.tenant_id = e.tenant_id AND a.event_id = e.id
                      AND a.model_version = '${1:-1.0.0}')"
}
