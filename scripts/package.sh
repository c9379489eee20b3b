#!/usr/bin/env bash
# Builds the Debian package postgresql-15-pg-attribution_<version>_amd64.deb in
# target/package/: `cargo pgrx package` (release build) laid out as Postgres extension
# packages are (/usr/lib/postgresql/15/lib, /usr/share/postgresql/15/extension), plus
# the upgrade scripts, the server configuration fragment and the docs. Prints its path.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$ROOT/scripts/setup.sh"
cd "$ROOT"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
name="postgresql-$PG_MAJOR-pg-attribution"
stage="$ROOT/target/package/${name}_${version}_${arch}"
deb="$ROOT/target/package/${name}_${version}_${arch}.deb"

log "building the release package tree"
rm -rf "$stage"
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$stage" >/dev/null
# cargo pgrx package lays out $(pg_config --pkglibdir) and --sharedir under the out dir.
[ -f "$stage$("$PG_CONFIG" --pkglibdir)/pg_attribution.so" ] || { echo "no pg_attribution.so in $stage" >&2; exit 1; }
doc="$stage/usr/share/doc/$name"
mkdir -p "$doc"
cp README.md CHANGELOG.md LICENSE docs/postgres_exporter.yaml "$doc/"
cp pgrx-config/postgresql.conf "$doc/postgresql.conf.sample"

mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: pg_attribution maintainers <maintainers@pg-attribution.invalid>
Depends: postgresql-$PG_MAJOR
Section: database
Priority: optional
Homepage: https://github.com/pg-attribution/pg_attribution
Description: multi-tenant revenue attribution inside PostgreSQL $PG_MAJOR
 pg_attribution schedules recompute windows from a statement-level trigger and
 drains them with background workers inside the server, allocating each event's
 revenue across channels exactly to the cent, under row-level security per tenant.
 Add pg_attribution to shared_preload_libraries (see
 /usr/share/doc/$name/postgresql.conf.sample), restart, then CREATE EXTENSION.
CONTROL
# Files root-owned, directories 0755, as dpkg expects.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
log "packing $(basename "$deb")"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
