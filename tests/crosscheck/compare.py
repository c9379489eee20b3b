#!/usr/bin/env python3
"""Compares the engine's JSON (engine-markov.json, engine-shapley.json) with the Python
packages' (reference.json) in one directory; exits 1 on any mismatch.

Criteria, channel by channel (every side must name the same channels):

- Markov shares (removal effect / sum of removal effects) within 0.01 absolute of
  channelattribution's, which simulates the chain (see reference.py);
- Markov removal effects within 1e-9 absolute of marketing_attribution_models', which
  solves the same chain exactly;
- first/last/linear conversions per channel within 1e-6 (relative to max(1, |value|)) of
  channelattribution's heuristic_models and of marketing_attribution_models', and the
  U-shaped (40/20/40) one of the latter;
- Shapley conversions per channel within 1e-6 (relative to max(1, |value|)) of
  marketing_attribution_models', and shares within 1e-9;
- the engine's Markov fit at least MIN_SPEEDUP (environment, default 10) times faster
  than channelattribution.markov_model.
"""

import json
import os
import sys

SHARE_TOLERANCE = 0.01
EXACT_TOLERANCE = 1e-9
HEURISTIC_TOLERANCE = 1e-6


def main():
    directory = sys.argv[1]

    def load(name):
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            return json.load(f)

    ref, markov, shapley = load("reference.json"), load("engine-markov.json"), load("engine-shapley.json")
    engine = {**markov, **shapley}
    failures = []

    def compare(label, ours, theirs, tolerance, relative=False):
        if set(ours) != set(theirs):
            failures.append(f"{label}: channels differ: {sorted(set(ours) ^ set(theirs))}")
            return
        worst, channel = 0.0, None
        for c in sorted(ours):
            diff = abs(ours[c] - theirs[c])
            if relative:
                diff /= max(1.0, abs(theirs[c]))
            if diff > worst:
                worst, channel = diff, c
        ok = worst <= tolerance
        kind = "relative" if relative else "absolute"
        print(f"{'ok  ' if ok else 'FAIL'} {label}: max {kind} difference {worst:.3g} (limit {tolerance:g}){f' at {channel}' if channel else ''}")
        if not ok:
            failures.append(label)

    print(f"{ref['rows']} paths, {ref['journeys']} journeys, {ref['conversions']} conversions, {len(engine['markov']['shares'])} channels")
    for key in ("rows", "journeys", "conversions"):
        if ref[key] != engine[key]:
            failures.append(f"{key}: {engine[key]} read by the engine, {ref[key]} by pandas")

    compare("Markov shares vs channelattribution", engine["markov"]["shares"], ref["markov"]["shares"], SHARE_TOLERANCE)
    effects_ca = ref["markov"]["removal_effects"]
    worst = max(abs(engine["markov"]["removal_effects"][c] - effects_ca[c]) for c in effects_ca)
    print(f"     (removal effects vs channelattribution's simulation: max difference {worst:.3g}, not a criterion)")
    compare(
        "Markov removal effects vs marketing_attribution_models (exact)",
        engine["markov"]["removal_effects"], ref["markov_exact"]["removal_effects"], EXACT_TOLERANCE,
    )
    compare("Markov shares vs marketing_attribution_models (exact)", engine["markov"]["shares"], ref["markov_exact"]["shares"], EXACT_TOLERANCE)
    for model in ("first_touch", "last_touch", "linear_touch"):
        compare(f"{model} vs channelattribution", engine["heuristics"][model], ref["heuristics"][model], HEURISTIC_TOLERANCE, True)
    for model in ("first_touch", "last_touch", "linear_touch", "position_based"):
        compare(
            f"{model} vs marketing_attribution_models",
            engine["heuristics"][model], ref["heuristics_mam"][model], HEURISTIC_TOLERANCE, True,
        )
    compare("Shapley conversions vs marketing_attribution_models", engine["shapley"]["totals"], ref["shapley"]["totals"], HEURISTIC_TOLERANCE, True)
    compare("Shapley shares vs marketing_attribution_models", engine["shapley"]["shares"], ref["shapley"]["shares"], EXACT_TOLERANCE)
    clamped = engine["shapley"]["allocated"]
    moved = sum(abs(clamped.get(c, 0.0) - v) for c, v in engine["shapley"]["totals"].items()) / 2
    print(f"     (Shapley cents without negative values move {moved:.1f} of {ref['conversions']} conversions, not a criterion)")

    rust, python = engine["markov"]["fit_seconds"], ref["markov"]["fit_seconds"]
    minimum = float(os.environ.get("MIN_SPEEDUP", "10"))
    speedup = python / rust if rust > 0 else float("inf")
    print(f"Markov fit: engine {rust:.3f} s (+ {engine['markov']['parse_seconds']:.3f} s reading the CSV), "
          f"channelattribution.markov_model {python:.3f} s, marketing_attribution_models {ref['markov_exact']['fit_seconds']:.3f} s")
    print(f"{'ok  ' if speedup >= minimum else 'FAIL'} speed-up {speedup:.1f}x (at least {minimum:g}x)")
    if speedup < minimum:
        failures.append("speed-up")
    print(f"Shapley fit: engine {engine['shapley']['fit_seconds']:.3f} s ({engine['shapley']['coalitions']} converting coalitions), "
          f"marketing_attribution_models {ref['shapley']['fit_seconds']:.3f} s")

    print("\nchannel            markov share  (channelattribution)  shapley share  linear")
    for c in sorted(engine["markov"]["shares"], key=lambda c: -engine["markov"]["shares"][c]):
        print(f"{c:<18} {engine['markov']['shares'][c]:>12.4f}  ({ref['markov']['shares'][c]:>18.4f})  "
              f"{engine['shapley']['shares'][c]:>13.4f}  {engine['heuristics']['linear_touch'].get(c, 0.0):>9.1f}")
    if failures:
        print(f"\n{len(failures)} mismatch(es): {', '.join(failures)}")
        sys.exit(1)
    print("\nall checks passed")


if __name__ == "__main__":
    main()
