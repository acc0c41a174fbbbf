"""False-positive rate, power and coverage of harness.stats.paired_difference by simulation.

Nulls (no difference between the methods' expected accuracy):
  a  identical procedures: each seed's per-example correctness from the same model
  b  equal population accuracy with per-example differences on a shared test set
  c  seed-dominated (per-seed accuracy sd ~ 0.09, like the maze demo's grid8)
  d  accuracies near 1 (ceiling)
plus a power row: a shift of 3 per-seed standard deviations, 5 seeds.

Usage: python benchmarks/stats_simulation.py [draws] (default 2000; one stated seed, 0).
"""

from __future__ import annotations

import sys

import numpy as np

from harness.stats import paired_difference

EXAMPLES = 200


def draw(rng: np.random.Generator, null: str, seeds: int, shift: float = 0.0):
    """Two (seeds, EXAMPLES) 0/1 arrays under the named null (plus `shift` in logit units
    added to method a's per-seed logit, for power)."""
    difficulty = rng.normal(0, 1.5, EXAMPLES)  # shared test set
    seed_sd = {"a": 0.3, "b": 0.3, "c": 1.0, "d": 0.3}[null]
    base = {"a": 0.5, "b": 0.5, "c": 0.0, "d": 4.0}[null]
    # b: each method prefers other examples (same population accuracy)
    tilt = rng.normal(0, 1.0, EXAMPLES) if null == "b" else np.zeros(EXAMPLES)

    def method(sign: float, extra: float):
        logit = base + extra + rng.normal(0, seed_sd, (seeds, 1)) - difficulty + sign * tilt
        return (rng.random((seeds, EXAMPLES)) < 1 / (1 + np.exp(-logit))).astype(float)

    return method(1.0, shift), method(-1.0, 0.0)


def main(draws: int = 2000) -> None:
    rng = np.random.default_rng(0)
    print(f"{draws} draws per cell, {EXAMPLES} examples, 95% intervals")
    print("null  seeds  false_positive_rate")
    for null in "abcd":
        for seeds in (2, 3, 5, 10):
            hits = sum(
                paired_difference(*draw(rng, null, seeds)).verdict != "not distinguishable"
                for _ in range(draws)
            )
            print(f"{null:4}  {seeds:5}  {hits / draws:.3f}")
    # power: 3 per-seed sds of shift (seed_sd 0.3 in logits -> shift 0.9), 5 seeds
    hits = sum(
        paired_difference(*draw(rng, "a", 5, shift=0.9)).verdict == "better" for _ in range(draws)
    )
    print(f"power, null a, 5 seeds, shift of 3 per-seed sd: {hits / draws:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
