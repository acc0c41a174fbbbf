"""harness.stats: the paired method comparison keeps its error rate, has power, and agrees
with textbook formulas in the cases that have one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.stats import adjust_p_values, paired_difference


def _null_pair(rng, seeds, examples=150, seed_sd=0.3, tilt_sd=0.0, shift=0.0):
    """Two methods with the same expected accuracy: shared difficulties, seed noise, and
    (tilt_sd > 0) per-example preferences that cancel in the population."""
    difficulty = rng.normal(0, 1.5, examples)
    tilt = rng.normal(0, tilt_sd, examples)

    def method(sign):
        logit = 0.5 + rng.normal(0, seed_sd, (seeds, 1)) - difficulty + sign * (tilt + shift)
        return (rng.random((seeds, examples)) < 1 / (1 + np.exp(-logit))).astype(float)

    return method(1.0), method(-1.0)


@pytest.mark.parametrize("seeds,tilt", [(3, 0.0), (5, 0.0), (5, 1.0), (10, 1.0)])
def test_false_positive_rate_under_the_null_stays_near_five_percent(seeds, tilt):
    rng = np.random.default_rng(seeds)
    draws = 400
    hits = sum(
        paired_difference(*_null_pair(rng, seeds, tilt_sd=tilt)).verdict != "not distinguishable"
        for _ in range(draws)
    )
    # 400 draws: a 5% rule lands in [0.02, 0.09] with probability > 0.99; the old
    # seed bootstrap gave 0.12-0.20 at 3 seeds and ~0.30 with per-example differences
    assert hits / draws <= 0.09


def test_two_seeds_are_conservative_and_a_clear_shift_is_found_at_five():
    rng = np.random.default_rng(1)
    fp = sum(
        paired_difference(*_null_pair(rng, 2)).verdict != "not distinguishable" for _ in range(200)
    )
    assert fp / 200 <= 0.06
    found = 0
    for _ in range(200):  # a difference of 3 per-seed standard deviations (logit 0.45 each way)
        found += paired_difference(*_null_pair(rng, 5, shift=0.45)).verdict == "better"
    assert found / 200 >= 0.8


def test_one_seed_is_a_model_level_paired_t_over_examples():
    rng = np.random.default_rng(2)
    a, b = rng.random((1, 50)), rng.random((1, 50))
    result = paired_difference(a, b)
    t = stats.ttest_rel(a[0], b[0])
    assert result.level == "model-level (1 seed)"
    assert result.p_value == pytest.approx(t.pvalue, rel=1e-12)
    ci = t.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_with_no_example_effect_the_test_is_students_t_over_seed_means():
    # d[s, i] = seed effect only: the crossed variance reduces to var(seed means) / S
    d = np.repeat(np.array([[0.1], [0.3], [-0.05], [0.2]]), 20, axis=1)
    result = paired_difference(d, np.zeros_like(d))
    t = stats.ttest_1samp(d[:, 0], 0.0)
    assert result.p_value == pytest.approx(t.pvalue, rel=1e-9)
    assert result.df == pytest.approx(3.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(np.zeros((2, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.full((2, 5), np.nan), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(np.zeros((2, 5)), np.zeros((2, 5)), confidence=95)


def test_holm_and_bh_adjustments():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    holm = adjust_p_values(p, "holm")
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, running maximum
    assert holm == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert adjust_p_values(p, "bh") == pytest.approx(stats.false_discovery_control(p))
    assert adjust_p_values(p, "none") == pytest.approx(p)
    with pytest.raises(ValueError, match="holm, bh or none"):
        adjust_p_values(p, "bonferoni")


def test_intervals_of_bounded_metrics_stay_in_their_range_and_say_so():
    import pandas as pd

    from harness.report.aggregate import aggregate, metric_range, metric_table

    values = {
        "accuracy": [0.99, 1.0, 0.9],  # t interval above 1
        "auroc_vs_id_test": [0.02, 0.0, 0.1],  # below 0
        "nll": [0.01, 0.5, 0.02],  # below 0, no upper bound
        "logit_gap": [-1.0, 0.0, 1.0],  # unbounded: left as computed
        "worst_group_accuracy": [0.5, 0.52, 0.51],  # inside: untouched
    }
    rows = [
        {
            "dataset": "d",
            "setting_id": "s",
            "eval_id": "e",
            "model": "m",
            "method": "erm",
            "tta": "none",
            "augment": "",
            "selection_rule": "x",
            "split": "test",
            "split_role": "id_test",
            "scorer": "",
            "metric": metric,
            "group_key": "",
            "group_value": "",
            "value": v,
            "run_id": f"r{k}",
        }  # fmt: skip
        for metric, vs in values.items()
        for k, v in enumerate(vs)
    ]
    agg = aggregate(pd.DataFrame(rows)).set_index("metric")
    t = stats.t.ppf(0.975, 2)
    for metric, vs in values.items():
        lo, hi = metric_range(metric)
        half = t * np.std(vs, ddof=1) / np.sqrt(3)
        raw = (np.mean(vs) - half, np.mean(vs) + half)
        row = agg.loc[metric]
        assert row["ci_low"] == pytest.approx(max(raw[0], lo))
        assert row["ci_high"] == pytest.approx(min(raw[1], hi))
        assert ("clipped" in row["interval"]) == (raw[0] < lo or raw[1] > hi)
    assert metric_range("logit_gap") == (-np.inf, np.inf)
    assert (
        agg.loc["accuracy", "ci_high"] == 1.0
        and "clipped to [0, 1]" in agg.loc["accuracy", "interval"]
    )
    cell = metric_table(agg.reset_index(), "accuracy", with_interval=True)["test"].iat[0]
    assert cell.endswith("1.000]†")


def test_seeds_for_power_matches_a_simulated_t_test():
    from harness.stats import seeds_for_power, seeds_needed, t_test_power

    sd, effect = 0.02, 0.025
    n = seeds_for_power(sd, effect)
    rng = np.random.default_rng(11)

    def simulated_power(k: int) -> float:
        d = rng.normal(effect, sd, (20_000, k))
        return float(np.mean(stats.ttest_1samp(d, 0, axis=1).pvalue < 0.05))

    assert simulated_power(n) >= 0.8 - 0.01  # Monte Carlo error ~0.003
    assert simulated_power(n - 1) < 0.8 + 0.01 or n == 2
    assert t_test_power(n, sd, effect) == pytest.approx(simulated_power(n), abs=0.015)
    # the plan uses the sd's upper bound: more seeds than the point estimate would ask for
    diffs = np.array([0.01, 0.03, 0.02])
    plan = seeds_needed(diffs, effect)
    assert plan.sd_upper > plan.sd_estimate == pytest.approx(np.std(diffs, ddof=1))
    assert plan.seeds >= seeds_for_power(plan.sd_estimate, effect)
    chi2_bound = np.sqrt(2 * plan.sd_estimate**2 / stats.chi2.ppf(0.05, 2))
    assert plan.sd_upper == pytest.approx(chi2_bound)
    assert seeds_needed(diffs[:1], effect).seeds is None
    with pytest.raises(ValueError, match="min_effect must be > 0"):
        seeds_for_power(sd, 0)
