#!/usr/bin/env bash
# The Citus test (tests/citus/run.sh): builds and installs Citus 13.2.2 into the system
# Postgres when it is not there yet, installs the current build of pg_attribution, and
# runs the test on a coordinator and two worker nodes started on this machine.
#
# Citus (AGPL-3.0) is a test dependency only, built from the source tarball and script in
# CITUS_SOURCE_DIR (default: ../shared/vendor/citus beside the project root).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CITUS_SOURCE_DIR=${CITUS_SOURCE_DIR:-$ROOT/../shared/vendor/citus}
if [ -f "$("$PG_CONFIG" --sharedir 2>/dev/null)/extension/citus.control" ] && [ ! -x "$CITUS_SOURCE_DIR/build.sh" ]; then
    log "Citus is installed and no source is at hand: using the installed Citus"
elif [ ! -x "$CITUS_SOURCE_DIR/build.sh" ]; then
    echo "Citus build script not found: $CITUS_SOURCE_DIR/build.sh" >&2
    echo "Set CITUS_SOURCE_DIR to the directory holding Citus 13.2.2's build.sh and source tarball." >&2
    exit 1
fi

"$ROOT/scripts/setup.sh"
log "Citus 13.2.2"
if [ -x "$CITUS_SOURCE_DIR/build.sh" ]; then
    if [ "$(id -u)" = 0 ]; then "$CITUS_SOURCE_DIR/build.sh"; else sudo "$CITUS_SOURCE_DIR/build.sh"; fi
fi
install_extension debug
"$ROOT/tests/citus/run.sh"
