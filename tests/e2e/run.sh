#!/usr/bin/env bash
# End-to-end tests against a real cluster with the extension preloaded. Each
# tests/e2e/t_*.sh runs in its own fresh database; pass names to run a subset.
set -euo pipefail
. "$(dirname "$0")/../../scripts/lib.sh"
. "$ROOT/tests/e2e/lib.sh"

# pgrx attaches a Rust backtrace to errors when RUST_BACKTRACE is set in the server's
# environment; set it so that the tests checking that clients never see one mean something.
export RUST_BACKTRACE=1
cluster_start "$E2E_DATA" "$E2E_PORT" "${E2E_CONF[@]}"
trap 'cluster_stop "$E2E_DATA"' EXIT

if [ $# -gt 0 ]; then
    tests=("$@")
else
    tests=()
    for f in "$ROOT"/tests/e2e/t_*.sh; do tests+=("$(basename "$f" .sh)"); done
fi
failed=0
for t in "${tests[@]}"; do
    log "e2e: $t"
    log_start=$(wc -l < "$E2E_DATA/server.log")
    # A separate shell per test: errexit would be ignored inside an if-tested subshell.
    if ! bash -c 'set -euo pipefail; . "$1/scripts/lib.sh"; . "$1/tests/e2e/lib.sh"; fresh_db >/dev/null; . "$1/tests/e2e/$2.sh"' _ "$ROOT" "$t"; then
        failed=$((failed + 1))
        echo "--- last server log lines ---" >&2
        tail -n 30 "$E2E_DATA/server.log" >&2 || true
    elif tail -n +"$((log_start + 1))" "$E2E_DATA/server.log" | grep "pg_attribution worker could not"; then
        # The worker survives its own housekeeping errors, so they would pass unnoticed.
        echo "FAIL: $t: the workers logged errors (above)" >&2
        failed=$((failed + 1))
    fi
done
[ $failed -eq 0 ] || { echo "$failed end-to-end test(s) failed" >&2; exit 1; }
log "all ${#tests[@]} end-to-end tests passed"
