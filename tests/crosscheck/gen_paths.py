#!/usr/bin/env python3
"""Writes a reproducible CSV of aggregated customer paths for the cross-check.

Each journey touches 1 to 9 channels (5 on average) out of 20, with some channels far
more common than others, some more likely as the last touch, and consecutive repeats
now and then. Whether a journey converts depends on the distinct channels it touched
(each has its own propensity), so removal effects and Shapley values differ by channel.
Identical paths are aggregated: one row per path with its conversions and non-conversions,
the input format of channelattribution (`path,total_conversions,total_null`). Journeys are
drawn until there are as many distinct paths as asked for.

Only the standard library, and only `random.Random.random()` from it, whose sequence for a
given seed is stable across Python versions, so the same seed gives the same file.
"""

import argparse
import bisect
import random
import sys

CHANNELS = [
    "direct", "organic_search", "paid_search", "email", "social", "display", "affiliate",
    "video", "referral", "push", "sms", "podcast", "tv", "radio", "print", "partner",
    "retargeting", "app", "influencer", "events",
]
# Channels that tend to close a journey get their popularity raised for the last touch.
CLOSERS = {"direct": 3.0, "retargeting": 4.0, "email": 2.0, "paid_search": 1.5}


def cumulative(weights):
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def pick(rng, cum):
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def generate(rows, seed):
    rng = random.Random(seed)
    popularity = [1.0 / (i + 1) ** 0.8 for i in range(len(CHANNELS))]
    closing = [p * CLOSERS.get(c, 1.0) for c, p in zip(CHANNELS, popularity)]
    cum_any, cum_last = cumulative(popularity), cumulative(closing)
    # Per-channel conversion propensity between 0.5 % and 8 %; "events" never helps.
    propensity = [0.005 + 0.075 * rng.random() for _ in CHANNELS]
    propensity[CHANNELS.index("events")] = 0.0
    base = 0.01

    paths, journeys = {}, 0
    while len(paths) < rows:
        journeys += 1
        length = 1 + sum(rng.random() < 0.5 for _ in range(8))
        touches = []
        for k in range(length):
            if touches and rng.random() < 0.15:
                touches.append(touches[-1])
            else:
                touches.append(pick(rng, cum_last if k == length - 1 else cum_any))
        stay = 1.0 - base
        for c in set(touches):
            stay *= 1.0 - propensity[c]
        converted = rng.random() < 1.0 - stay
        key = " > ".join(CHANNELS[c] for c in touches)
        counts = paths.setdefault(key, [0, 0])
        counts[0 if converted else 1] += 1
    return paths, journeys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=1_000_000, help="distinct paths (CSV rows) to write")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="-", help="CSV file to write (default: standard output)")
    args = parser.parse_args()
    paths, journeys = generate(args.paths, args.seed)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    out.write("path,total_conversions,total_null\n")
    for path, (conversions, nulls) in paths.items():
        out.write(f"{path},{conversions},{nulls}\n")
    if out is not sys.stdout:
        out.close()
    conversions = sum(c for c, _ in paths.values())
    print(f"{journeys} journeys, {len(paths)} distinct paths, {conversions} conversions", file=sys.stderr)


if __name__ == "__main__":
    main()
