#!/usr/bin/env bash
# pg_isolation_regress specs for the queue's concurrency rules (tests/isolation), on a
# throwaway cluster with the extension preloaded and no workers, so every step runs
# exactly when the spec says. Assumes the extension is installed (scripts/test.sh does
# that). Pass --update to accept the current output as expected.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DATA="$ROOT/target/isolation/data"
PORT=${ISOLATION_PORT:-54332}
OUT="$ROOT/target/isolation/out"
PG_ISOLATION_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress"

cluster_start "$DATA" "$PORT" "attribution.workers = 0" "client_min_messages = error"
trap 'cluster_stop "$DATA"' EXIT

specs=()
for f in "$ROOT"/tests/isolation/specs/*.spec; do specs+=("$(basename "$f" .spec)"); done

rm -rf "$OUT"; mkdir -p "$OUT"
status=0
# pg_isolation_regress writes its results under --outputdir; the Postgres user runs
# nothing of it, so it runs as the caller.
"$PG_ISOLATION_REGRESS" --host="$DATA" --port="$PORT" --user=postgres \
    --inputdir="$ROOT/tests/isolation" --outputdir="$OUT" \
    --dbname=isolation_regression "${specs[@]}" || status=$?

if [ "${1:-}" = --update ]; then
    cp "$OUT"/results/*.out "$ROOT/tests/isolation/expected/"
    log "expected output updated; review it with git diff"
elif [ $status -ne 0 ]; then
    cat "$OUT/output_iso/regression.diffs" "$OUT/regression.diffs" 2>/dev/null >&2 || true
fi
exit $status
