"""False-positive rate, power and coverage of harness.stats' paired comparisons by simulation:
paired_difference (methods, accuracy) and paired_auroc_difference (scorers, AUROC).

Nulls (no difference between the expected values the verdict is about):
  a  identical procedures: seed noise only
  b  equal population value with per-example differences on a shared test set
  c  seed-dominated (methods: per-seed accuracy sd ~ 0.09, like the maze demo's grid8)
  d  ceiling (accuracies near 1; AUROCs near 1)
plus a power row: a shift of 3 per-seed standard deviations, 5 seeds. Coverage: how often
the 95% interval holds the quantity it is labelled with: the expected difference over seeds
and test distributions ("method-level", 0 under a null), or, with one seed, that seed's
models' population difference ("model-level (1 seed)").

Aggregates: coverage of the stratified bootstrap intervals (expanded percentile, and the
plain percentile for comparison) of IQM and probability of improvement by runs per task
(at most 2000 draws).

Usage: python benchmarks/stats_simulation.py [draws] [methods|scorers|aggregates|both]
(default 2000 draws, both = all three; one stated seed, 0). The docs' tables: 10000 draws.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import stats

from harness.stats import paired_auroc_difference, paired_difference
from harness.stats.aggregate import improvement_interval, iqm_interval

EXAMPLES = 200
SEEDS = (2, 3, 5, 10)


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


# scorers: score = mu_ks * label + shared example part + run part + scorer noise, each unit
# variance apart from mu; mu_ks = separation of scorer k in the run of seed s
SCORER_SEED_SD = {"a": 0.15, "b": 0.15, "c": 0.5, "d": 0.15}
SCORER_MU = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 3.5}
SCORER_TILT = 0.7  # null b: sd of each example's preference for one scorer


def draw_scores(rng: np.random.Generator, null: str, seeds: int, shift: float = 0.0):
    """Scores of two scorers on EXAMPLES positives and EXAMPLES negatives (shared by every
    seed, like ID test vs a shifted split), and each seed's population AUROC difference."""
    labels = np.r_[np.ones(EXAMPLES), np.zeros(EXAMPLES)].astype(bool)
    shared = rng.normal(0, 1, 2 * EXAMPLES)  # the test set: fixed for every seed
    tilt = rng.normal(0, SCORER_TILT, 2 * EXAMPLES) if null == "b" else np.zeros(2 * EXAMPLES)
    run = rng.normal(0, 1, (seeds, 2 * EXAMPLES))  # one model: both scorers read it
    scale = np.sqrt(2 * (1 + (SCORER_TILT**2 if null == "b" else 0.0)))
    sd, mu = SCORER_SEED_SD[null], SCORER_MU[null]

    def scorer(sign: float, extra: float):
        sep = mu + extra + rng.normal(0, sd, (seeds, 1))
        noise = rng.normal(0, 1, (seeds, 2 * EXAMPLES))
        score = sep * labels + 0.6 * shared + 0.5 * run + np.sqrt(0.39) * noise
        return score + sign * tilt, stats.norm.cdf(sep[:, 0] / scale)

    (a, auc_a), (b, auc_b) = scorer(1.0, shift), scorer(-1.0, 0.0)
    return a, b, labels, auc_a - auc_b


def expected_auroc_difference(null: str, shift: float) -> float:
    """E over seeds of the population AUROC difference (the method-level quantity)."""
    scale = np.sqrt(2 * (1 + (SCORER_TILT**2 if null == "b" else 0.0)))
    z, w = np.polynomial.hermite_e.hermegauss(80)
    sd, mu = SCORER_SEED_SD[null], SCORER_MU[null]
    mean = lambda m: float((stats.norm.cdf((m + sd * z) / scale) * w).sum() / w.sum())  # noqa: E731
    return mean(mu + shift) - mean(mu)


class _Lines(list):
    """A list of output lines that prints each as it comes (a 10,000-draw run is long)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        for line in lines:
            self.append(line)

    def append(self, line: str) -> None:
        print(line, flush=True)
        super().append(line)


def simulate_methods(rng: np.random.Generator, draws: int) -> list[str]:
    lines = _Lines(["methods (accuracy): null  seeds  false_positive_rate  coverage_of_0"])
    for null in "abcd":
        for seeds in SEEDS:
            hits = sum(
                paired_difference(*draw(rng, null, seeds)).verdict != "not distinguishable"
                for _ in range(draws)
            )
            lines.append(f"{null:4}  {seeds:5}  {hits / draws:.3f}  {1 - hits / draws:.3f}")
    # power: 3 per-seed sds of shift (seed_sd 0.3 in logits -> shift 0.9), 5 seeds
    hits = sum(
        paired_difference(*draw(rng, "a", 5, shift=0.9)).verdict == "better" for _ in range(draws)
    )
    lines.append(f"power, null a, 5 seeds, shift of 3 per-seed sd: {hits / draws:.3f}")
    return lines


def simulate_scorers(rng: np.random.Generator, draws: int) -> list[str]:
    lines = _Lines(["scorers (AUROC): null  seeds  false_positive_rate  coverage (of what)"])
    for null in "abcd":
        for seeds in (1, *SEEDS):
            hits = covered = 0
            for _ in range(draws):
                a, b, labels, per_seed = draw_scores(rng, null, seeds)
                r = paired_auroc_difference(a, b, labels)
                hits += r.verdict != "not distinguishable"
                truth = per_seed[0] if seeds == 1 else 0.0
                covered += r.ci_low <= truth <= r.ci_high
            what = "this model's difference" if seeds == 1 else "0"
            lines.append(f"{null:4}  {seeds:5}  {hits / draws:.3f}  {covered / draws:.3f} ({what})")
    shift = 3 * SCORER_SEED_SD["a"]
    truth = expected_auroc_difference("a", shift)
    hits = covered = 0
    for _ in range(draws):
        r = paired_auroc_difference(*draw_scores(rng, "a", 5, shift)[:3])
        hits += r.verdict == "better"
        covered += r.ci_low <= truth <= r.ci_high
    lines.append(
        f"power, null a, 5 seeds, shift of 3 per-seed sd: {hits / draws:.3f} "
        f"(coverage of E[difference] = {truth:.4f}: {covered / draws:.3f})"
    )
    return lines


AGGREGATE_RUNS = (3, 5, 10, 20)


def aggregate_coverage(
    rng: np.random.Generator, runs: int, draws: int, reps: int = 1000
) -> dict[str, float]:
    """Coverage of the IQM interval (4 tasks, runs N(task mean, 1)) and of the probability
    of improvement of two equal methods (truth 0.5) at `runs` runs per task, for the
    expanded percentile interval the leaderboard prints and the plain percentile one."""
    means = np.array([0.0, 0.5, 1.0, 2.0])
    truth = stats.trim_mean((rng.normal(0, 1, (400_000, 4)) + means).ravel(), 0.25)
    hits = dict.fromkeys(("iqm", "iqm_percentile", "improvement", "improvement_percentile"), 0)
    for k in range(draws):
        v = rng.normal(0, 1, (runs, 4)) + means
        x, y = rng.normal(0, 1, (runs, 4)), rng.normal(0, 1, (runs, 4))
        for expanded, tail in ((True, ""), (False, "_percentile")):
            r = iqm_interval(v, reps=reps, seed=k, min_runs=1, expanded=expanded)
            hits["iqm" + tail] += r.ci_low <= truth <= r.ci_high
            r = improvement_interval(x, y, reps=reps, seed=k, min_runs=1, expanded=expanded)
            hits["improvement" + tail] += r.ci_low <= 0.5 <= r.ci_high
    return {key: n / draws for key, n in hits.items()}


def simulate_aggregates(rng: np.random.Generator, draws: int) -> list[str]:
    """Coverage of harness.stats.aggregate's stratified bootstrap intervals: IQM over 4
    tasks (runs N(task mean, 1)) and probability of improvement of two equal methods (truth
    0.5), by runs per task; expanded percentile (printed from MIN_RUNS = 5 runs per task)
    and, for comparison, rliable's plain percentile interval."""
    lines = _Lines(
        [
            "aggregates: runs_per_task  iqm_coverage (expanded, percentile)  "
            "improvement_coverage (expanded, percentile)"
        ]
    )
    for runs in AGGREGATE_RUNS:
        c = aggregate_coverage(rng, runs, draws)
        lines.append(
            f"{runs:5}  {c['iqm']:.3f} {c['iqm_percentile']:.3f}  "
            f"{c['improvement']:.3f} {c['improvement_percentile']:.3f}"
        )
    return lines


def main(draws: int = 2000, which: str = "both") -> None:
    rng = np.random.default_rng(0)
    print(f"{draws} draws per cell, {EXAMPLES} examples (per class for scorers), 95% intervals")
    if which in ("methods", "both"):
        simulate_methods(rng, draws)
    if which in ("scorers", "both"):
        simulate_scorers(rng, draws)
    if which in ("aggregates", "both"):
        simulate_aggregates(rng, min(draws, 2000))


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 2000,
        sys.argv[2] if len(sys.argv) > 2 else "both",
    )
