#!/usr/bin/env bash
# Cross-checks the engine's Markov, Shapley and first/last/linear/U-shaped models against
# the Python packages channelattribution and marketing-attribution-models on the same
# generated paths, without Postgres, and exits non-zero on any mismatch (criteria in
# compare.py). Also compares the Markov fit's speed with channelattribution.markov_model.
#
#   tests/crosscheck/run.sh                          # 1,000,000 paths, seed 42
#   CROSSCHECK_N=20000 MIN_SPEEDUP=1 tests/crosscheck/run.sh   # a quick run
#
# Everything it writes goes to ${CARGO_TARGET_DIR:-target}/crosscheck/: paths.csv,
# reference.json (the packages), engine-markov.json and engine-shapley.json (the engine).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/crosscheck
python=${CROSSCHECK_VENV:-$target/crosscheck-venv}/bin/python
n=${CROSSCHECK_N:-1000000}
seed=${CROSSCHECK_SEED:-42}
mkdir -p "$out"

"$here/setup-venv.sh"

echo "== generating $n paths (seed $seed)"
"$python" "$here/gen_paths.py" --paths "$n" --seed "$seed" --out "$out/paths.csv"

echo "== channelattribution and marketing_attribution_models"
"$python" "$here/reference.py" "$out/paths.csv" --out "$out/reference.json"

echo "== the engine (release build)"
rm -f "$out/engine-markov.json" "$out/engine-shapley.json"
# One test at a time, so that the two fits are not timed while competing for cores.
(cd "$root" && CROSSCHECK_PATHS="$out/paths.csv" CROSSCHECK_OUT="$out" \
    cargo test --release --lib --quiet -- --ignored crosscheck_from_file --test-threads=1 >/dev/null)

echo "== comparison"
"$python" "$here/compare.py" "$out"
