# Shared shell helpers for the project's scripts: pinned versions, running Postgres
# binaries as an unprivileged user, and throwaway clusters under target/.
# Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../pgrx-config/versions.env
. "$ROOT/pgrx-config/versions.env"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}
export PATH="$HOME/.cargo/bin:$PATH"

# The tenants the tests, the benchmark and the package test work with.
TENANT_A=aaaaaaaa-0000-4000-8000-000000000001
TENANT_B=bbbbbbbb-0000-4000-8000-000000000002
# SQL registering them, as acme and globex.
tenants_sql() {
    printf "INSERT INTO attribution_tenants (id, name) VALUES ('%s', 'acme'), ('%s', 'globex')" "$TENANT_A" "$TENANT_B"
}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Postgres refuses to run as root; run its binaries as the postgres system user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# A directory the Postgres user can write, under target/.
pg_owned_dir() {
    mkdir -p "$1"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$1"; fi
}

# cluster_start DATADIR PORT [extra postgresql.conf lines...]
# Creates a new cluster (replacing any old one in DATADIR), appends the project's server
# configuration and the extra lines, and starts it.
cluster_start() {
    local data=$1 port=$2; shift 2
    cluster_stop "$data" immediate 2>/dev/null || true
    rm -rf "$data"
    pg_owned_dir "$(dirname "$data")"
    if [ ! -f "$data/PG_VERSION" ]; then
        as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        {
            cat "$ROOT/pgrx-config/postgresql.conf"
            echo "port = $port"
            echo "listen_addresses = ''"
            echo "unix_socket_directories = '$data'"
            echo "logging_collector = off"
            for line in "$@"; do echo "$line"; done
        } | as_pg tee -a "$data/postgresql.conf" >/dev/null
    fi
    cluster_restart "$data"
}

# Starts a cluster that cluster_start created (after a stop or a crash).
cluster_restart() {
    as_pg "$PG_BIN/pg_ctl" -D "$1" -l "$1/server.log" -w -t 60 start >/dev/null
}

cluster_stop() {
    local data=$1 mode=${2:-fast}
    if [ -f "$data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null
    fi
}

# psql against a cluster started by cluster_start: cluster_psql DATADIR PORT [psql args...]
cluster_psql() {
    local data=$1 port=$2; shift 2
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$data" -p "$port" -U postgres "$@"
}

# Builds and installs the extension into the Postgres that $PG_CONFIG belongs to.
install_extension() {
    log "building and installing pg_attribution (${1:-release})"
    local profile_flag=--release
    [ "${1:-release}" = debug ] && profile_flag=
    local out
    if ! out=$(cd "$ROOT" && cargo pgrx install $profile_flag --pg-config "$PG_CONFIG" 2>&1); then
        echo "$out" >&2
        return 1
    fi
}

# poll_until SECONDS COMMAND...: runs COMMAND until it prints "t"; returns 1 (after
# saying what it waited for) when SECONDS pass first. POLL_PAUSE sets the pause between
# tries (default 0.1 s; benchmarks use more, so as not to take CPU from the workers).
poll_until() {
    local deadline=$((SECONDS + $1)); shift
    until [ "$("$@" 2>/dev/null)" = t ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "timed out waiting for: ${*: -1}" >&2
            return 1
        fi
        sleep "${POLL_PAUSE:-0.1}"
    done
}

# cents_off_sql [MODELS] [CONDITION]: SQL counting the events whose allocations, for each
# model in MODELS (a list of quoted versions, default '1.0.0'), do not sum to their
# revenue; CONDITION (on events e) narrows the events checked (names are qualified: the
# search_path test plants look-alikes in public). The one "every cent"
# check of the test suite, the benchmarks and the upgrade test.
cents_off_sql() {
    printf '%s' "SELECT count(*) FROM attribution_events e
                  CROSS JOIN pg_catalog.unnest(ARRAY[${1:-'1.0.0'}]::text[]) AS m(model_version)
                 WHERE (${2:-true})
                   AND e.revenue_cents IS DISTINCT FROM (
                       SELECT sum(a.allocated_revenue_cents) FROM attribution_allocations a
                        WHERE a.tenant_id = e.tenant_id AND a.event_id = e.id
                          AND a.model_version = m.model_version)"
}
