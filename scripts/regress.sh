#!/usr/bin/env bash
# pg_regress for the documented SQL behaviour (tests/pg_regress), against a throwaway
# cluster with the extension preloaded. Assumes the extension is installed
# (scripts/test.sh does that). Pass --update to accept the current output as expected.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DATA="$ROOT/target/regress/data"
PORT=${REGRESS_PORT:-54331}
OUT="$ROOT/target/regress/out"
PG_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress"

cluster_start "$DATA" "$PORT" "client_min_messages = warning" "attribution.database = 'pg_attribution_regress'"
trap 'cluster_stop "$DATA"' EXIT

tests=()
while read -r f; do
    name=$(basename "$f" .sql)
    [ "$name" = setup ] || tests+=("$name")
done < <(ls "$ROOT"/tests/pg_regress/sql/*.sql)

mkdir -p "$OUT"
status=0
"$PG_REGRESS" --host="$DATA" --port="$PORT" --user=postgres \
    --inputdir="$ROOT/tests/pg_regress" --outputdir="$OUT" \
    --dbname=pg_attribution_regress setup "${tests[@]}" || status=$?

if [ "${1:-}" = --update ]; then
    cp "$OUT"/results/*.out "$ROOT/tests/pg_regress/expected/"
    log "expected output updated; review it with git diff"
elif [ $status -ne 0 ]; then
    cat "$OUT/regression.diffs" >&2 || true
fi
exit $status
