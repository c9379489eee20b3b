#!/usr/bin/env bash
# The whole test suite: lint gates (rustfmt, clippy), engine unit tests and #[pg_test]s
# (cargo pgrx test), pg_regress and pg_isolation_regress
# for the documented SQL behaviour, the upgrade from the released 0.1.0, end-to-end
# tests on a real cluster, the distributed layout on Citus, and the Debian package.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

"$ROOT/scripts/setup.sh"
cd "$ROOT"

log "lint gates: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

log "unit tests and #[pg_test]s"
pg_owned_dir "$ROOT/target/pgrx-test"
cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$ROOT/target/pgrx-test/data"

# cargo pgrx test installs a build with the test functions in it; put a plain one back.
install_extension debug

log "pg_regress"
"$ROOT/scripts/regress.sh"

log "isolation specs"
"$ROOT/scripts/isolation.sh"

log "upgrade from the released 0.1.0"
"$ROOT/tests/upgrade/run.sh"

log "end-to-end"
"$ROOT/tests/e2e/run.sh"

# Citus is built from its source tarball (CITUS_SOURCE_DIR, see scripts/test-citus.sh);
# without it, and without Citus installed, this part is skipped, loudly.
CITUS_SOURCE_DIR=${CITUS_SOURCE_DIR:-$ROOT/../shared/vendor/citus}
if [ -x "$CITUS_SOURCE_DIR/build.sh" ] || [ -f "$("$PG_CONFIG" --sharedir 2>/dev/null)/extension/citus.control" ]; then
    log "Citus: a coordinator and two worker nodes"
    CITUS_SOURCE_DIR=$CITUS_SOURCE_DIR "$ROOT/scripts/test-citus.sh"
else
    log "SKIPPED the Citus test: no Citus installed and no source in $CITUS_SOURCE_DIR (set CITUS_SOURCE_DIR)"
fi

# Last: it installs the packaged release build over the debug build the tests above use.
log "the Debian package"
"$ROOT/tests/package/run.sh"

log "all tests passed"
