#!/usr/bin/env bash
# The Debian package: build it (scripts/package.sh), install it with apt on this
# machine's Postgres, check what it put where, then run the documented SQL behaviour
# (pg_regress, quickstart included) and the insert -> workers -> allocations pipeline
# against the packaged build in throwaway clusters.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"

deb=$("$ROOT/scripts/package.sh")
name=$(dpkg-deb --field "$deb" Package)
version=$(dpkg-deb --field "$deb" Version)
case "$(basename "$deb")" in
    "postgresql-$PG_MAJOR-pg-attribution_${version}_$(dpkg --print-architecture).deb") ;;
    *) echo "FAIL: unexpected package file name $(basename "$deb")" >&2; exit 1 ;;
esac
echo "  ok: built $(basename "$deb")"

SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
log "apt install ./$(basename "$deb")"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --reinstall "$deb" >/dev/null
[ "$(dpkg-query -W -f='${Status} ${Version}' "$name")" = "install ok installed $version" ] \
    || { echo "FAIL: $name $version is not installed" >&2; exit 1; }
for f in "$("$PG_CONFIG" --pkglibdir)/pg_attribution.so" \
         "$("$PG_CONFIG" --sharedir)/extension/pg_attribution.control" \
         "$("$PG_CONFIG" --sharedir)/extension/pg_attribution--$version.sql" \
         "$("$PG_CONFIG" --sharedir)/extension/pg_attribution--0.1.0--0.2.0.sql" \
         "/usr/share/doc/$name/postgresql.conf.sample"; do
    dpkg -S "$f" >/dev/null 2>&1 || { echo "FAIL: $f is not in the package" >&2; exit 1; }
done
echo "  ok: $name $version installed: library, control file, install and upgrade scripts, docs"

log "pg_regress against the packaged build"
"$ROOT/scripts/regress.sh"

log "the pipeline against the packaged build"
DATA="$ROOT/target/package/cluster"
PORT=${PACKAGE_TEST_PORT:-54339}
cluster_start "$DATA" "$PORT" "attribution.database = 'attribution_package'"
trap 'cluster_stop "$DATA"' EXIT
q() { cluster_psql "$DATA" "$PORT" -d attribution_package -tA "$@"; }
cluster_psql "$DATA" "$PORT" -d postgres -c "CREATE DATABASE attribution_package" >/dev/null
q -c "CREATE EXTENSION pg_attribution" >/dev/null
[ "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_attribution'")" = "$version" ] \
    || { echo "FAIL: the extension is not at version $version" >&2; exit 1; }
poll_until 60 q -c "SELECT workers = 2 FROM attribution_queue_health" || { echo "FAIL: no workers" >&2; exit 1; }
q -c "$(tenants_sql)" \
  -c "INSERT INTO attribution_events (id, tenant_id, occurred_at, revenue_cents, raw_payload)
      VALUES ('e0000000-0000-4000-8000-000000000001', '$TENANT_A', '2026-03-01T10:00Z', 100, '{}')
      ON CONFLICT DO NOTHING" >/dev/null
poll_until 30 q -c "SELECT count(*) = 3 FROM attribution_allocations" || { echo "FAIL: no allocations" >&2; exit 1; }
[ "$(q -c "$(cents_off_sql)")" = 0 ] || { echo "FAIL: allocations do not add up" >&2; exit 1; }
echo "  ok: with the packaged build, the old system's INSERT leads to allocations: $(q -c "SELECT string_agg(channel || '=' || allocated_revenue_cents, ' ' ORDER BY channel) FROM attribution_allocations")"
log "package test passed"
