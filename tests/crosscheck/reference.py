#!/usr/bin/env python3
"""Runs the third-party attribution packages on a CSV of paths and prints JSON.

Input: `path,total_conversions,total_null`, channels separated by " > " (gen_paths.py).
Output (standard output or --out), per channel:

- "markov": channelattribution.markov_model (simulated first-order chain): its removal
  effects, its shares (total_conversions / all conversions) and its wall time. Called
  with max_step=MAX_STEP: its default cuts every simulated journey at the longest observed
  path and counts a cut journey as a non-conversion, which biases the shares by more than
  1 % on gen_paths.py's data (the chain loops, so journeys can be longer than any
  observed); with the cut out of the way it estimates the exact chain's numbers, up to
  simulation noise (it reports one fold of nsim_start / nfold = 10,000 simulated journeys);
- "markov_exact": marketing_attribution_models' Markov model, which inverts the
  transition matrix: removal effects, shares (removal effect / sum of removal effects, as
  channelattribution's), wall time;
- "heuristics": channelattribution.heuristic_models, conversions per channel for
  first_touch, last_touch and linear_touch;
- "heuristics_mam": marketing_attribution_models' first/last/linear/position-based;
- "shapley": marketing_attribution_models' Shapley model (conversion rate as the value,
  max_size=None so no coalition is cut), total conversions per channel and shares.

The marketing-attribution-models package imports as `mam` since 2.0 (class `MAM`, method
`run_shapley`); 1.x was `marketing_attribution_models.MAM.attribution_shapley`, with the
same characteristic function.
"""

import argparse
import contextlib
import io
import json
import sys
import time

import pandas as pd

# Steps of a simulated journey in channelattribution.markov_model; see "markov" above.
MAX_STEP = 200


def timed(fn):
    started = time.perf_counter()
    # Both packages print progress and banners; keep standard output for the JSON.
    with contextlib.redirect_stdout(io.StringIO()):
        result = fn()
    return result, time.perf_counter() - started


def shares(values):
    total = sum(values.values())
    return {k: (v / total if total else 0.0) for k, v in values.items()}


def channel_attribution(data, out):
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
        import ChannelAttribution as ca

    heuristics, _ = timed(lambda: ca.heuristic_models(data, "path", "total_conversions", sep=">", flg_pro=False))
    out["heuristics"] = {
        model: dict(zip(heuristics["channel_name"], map(float, heuristics[model])))
        for model in ("first_touch", "last_touch", "linear_touch")
    }

    markov, seconds = timed(
        lambda: ca.markov_model(
            data, "path", "total_conversions", var_null="total_null", out_more=True,
            sep=">", seed=0, max_step=MAX_STEP, verbose=False, flg_pro=False,
        )
    )
    result, effects = markov["result"], markov["removal_effects"]
    conversions = dict(zip(result["channel_name"], map(float, result["total_conversions"])))
    out["markov"] = {
        "removal_effects": dict(zip(effects["channel_name"], map(float, effects["removal_effect"]))),
        "shares": shares(conversions),
        "fit_seconds": seconds,
    }


def marketing_attribution_models(data, out):
    import polars as pl
    from mam import MAM

    # The grouped-journey format: one row per path and outcome, weighted by occurrences.
    converting = data[data.total_conversions > 0].assign(has_conversion=True, occurrences=data.total_conversions)
    failing = data[data.total_null > 0].assign(has_conversion=False, occurrences=data.total_null)
    grouped = pl.from_pandas(pd.concat([converting, failing])[["path", "has_conversion", "occurrences"]])
    model = MAM(
        grouped, format_type="grouped_journey", channels_colname="path",
        journey_with_conv_colname="has_conversion", occurrences_colname="occurrences", path_separator=" > ",
    )

    def by_channel(result):
        table = result.to_dict()
        return dict(zip(table["channels"], map(float, table["attribution"])))

    markov, seconds = timed(model.run_markov)
    effects = {k: float(v) for k, v in markov.metadata["removal_effect"]["removal_effect"].items()}
    # Its own aggregate is a per-journey split (repeats counted again), not the shares.
    out["markov_exact"] = {"removal_effects": effects, "shares": shares(effects), "fit_seconds": seconds}
    out["heuristics_mam"] = {
        "first_touch": by_channel(timed(model.run_first_click)[0]),
        "last_touch": by_channel(timed(model.run_last_click)[0]),
        "linear_touch": by_channel(timed(model.run_linear)[0]),
        "position_based": by_channel(timed(model.run_position_based)[0]),
    }
    shapley, seconds = timed(lambda: model.run_shapley(max_size=None, value_column="conv_rate"))
    totals = by_channel(shapley)
    out["shapley"] = {"totals": totals, "shares": shares(totals), "fit_seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--out", default="-", help="JSON file to write (default: standard output)")
    args = parser.parse_args()
    data = pd.read_csv(args.csv, dtype={"path": str, "total_conversions": "int64", "total_null": "int64"})
    out = {
        "rows": len(data),
        "journeys": int(data.total_conversions.sum() + data.total_null.sum()),
        "conversions": int(data.total_conversions.sum()),
    }
    channel_attribution(data, out)
    marketing_attribution_models(data, out)
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
