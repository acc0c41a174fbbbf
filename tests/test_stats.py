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


# --- scorers: paired AUROC differences (DeLong) ---


def test_structural_components_agree_with_brute_force_and_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from harness.stats import structural_components

    rng = np.random.default_rng(3)
    pos, neg = np.round(rng.normal(1, 1, 37), 1), np.round(rng.normal(0, 1, 23), 1)  # ties
    v10, v01 = structural_components(pos, neg)
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    assert v10 == pytest.approx(kernel.mean(axis=1), abs=1e-15)
    assert v01 == pytest.approx(kernel.mean(axis=0), abs=1e-15)
    auc = roc_auc_score(np.r_[np.ones(37), np.zeros(23)], np.r_[pos, neg])
    assert v10.mean() == pytest.approx(auc, abs=1e-12) and v01.mean() == pytest.approx(auc)


def _delong_textbook(pos_a, neg_a, pos_b, neg_b):
    """DeLong et al. (1988) as printed: the 2 × 2 covariance matrices S10, S01 of the two
    AUROCs' components from the full kernel matrices, var = L (S10/m + S01/n) L'."""
    comps = []
    for pos, neg in ((pos_a, neg_a), (pos_b, neg_b)):
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        comps.append((psi.mean(axis=1), psi.mean(axis=0)))
    s10 = np.cov(np.stack([c[0] for c in comps]))
    s01 = np.cov(np.stack([c[1] for c in comps]))
    contrast = np.array([1.0, -1.0])
    aucs = [c[0].mean() for c in comps]
    return aucs[0] - aucs[1], contrast @ (s10 / len(pos_a) + s01 / len(neg_a)) @ contrast


def _scores(rng, seeds, m=150, n=150, seed_sd=0.15, tilt_sd=0.0, shift=0.0):
    """Two scorers on shared positives and negatives: equal expected AUROC unless shift."""
    labels = np.r_[np.ones(m), np.zeros(n)].astype(bool)
    shared, tilt = rng.normal(0, 1, m + n), rng.normal(0, tilt_sd, m + n)
    run = rng.normal(0, 1, (seeds, m + n))

    def scorer(sign, extra):
        sep = 1.0 + extra + rng.normal(0, seed_sd, (seeds, 1))
        return (
            sep * labels
            + 0.6 * shared
            + 0.5 * run
            + 0.6 * rng.normal(0, 1, run.shape)
            + (sign * tilt)
        )

    return scorer(1.0, shift), scorer(-1.0, 0.0), labels


def test_one_seed_is_delongs_test_as_printed():
    from harness.stats import paired_auroc_difference

    rng = np.random.default_rng(4)
    a, b, labels = _scores(rng, 1, m=40, n=60, shift=0.5)
    a, b = np.round(a, 1), np.round(b, 1)  # ties
    diff, var = _delong_textbook(a[0, labels], a[0, ~labels], b[0, labels], b[0, ~labels])
    r = paired_auroc_difference(a, b, labels)
    assert r.level == "model-level (1 seed)" and r.interval == "DeLong z"
    assert r.difference == pytest.approx(diff, abs=1e-12)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(diff) / np.sqrt(var)), rel=1e-9)
    half = stats.norm.ppf(0.975) * np.sqrt(var)
    assert (r.ci_low, r.ci_high) == pytest.approx((diff - half, diff + half), rel=1e-9)


def test_delong_variance_matches_the_spread_over_redrawn_test_sets():
    from harness.stats import delong_difference

    rng = np.random.default_rng(5)
    diffs, variances = [], []
    for _ in range(1500):  # one fixed pair of scoring rules, a new test set each time
        x = rng.normal(0, 1, 160)
        labels = np.r_[np.ones(70), np.zeros(90)].astype(bool)
        a = labels + 0.7 * x + rng.normal(0, 0.7, 160)
        b = 0.8 * labels + 0.7 * x + rng.normal(0, 0.9, 160)
        d, v = delong_difference(a[labels], a[~labels], b[labels], b[~labels])
        diffs.append(d)
        variances.append(v)
    # Monte Carlo error of a variance from 1,500 draws: ~4%
    assert np.mean(variances) == pytest.approx(np.var(diffs), rel=0.12)


def test_several_seeds_keep_the_error_rate_and_find_a_clear_difference():
    from sklearn.metrics import roc_auc_score

    from harness.stats import paired_auroc_difference

    rng = np.random.default_rng(6)
    a, b, labels = _scores(rng, 4)
    r = paired_auroc_difference(a, b, labels)
    per_seed = [roc_auc_score(labels, a[s]) - roc_auc_score(labels, b[s]) for s in range(4)]
    assert r.difference == pytest.approx(np.mean(per_seed), abs=1e-12)
    assert r.level == "method-level (4 seeds)"
    draws = 300
    for seeds, tilt in ((3, 0.0), (5, 0.7)):
        hits = sum(
            paired_auroc_difference(*_scores(rng, seeds, tilt_sd=tilt)).verdict
            != "not distinguishable"
            for _ in range(draws)
        )
        # a 5% rule lands in [0.02, 0.09] with probability > 0.99 at 300 draws; plain t over
        # per-seed differences gives ~0.2 with per-example preferences (tilt) at 5 seeds
        assert hits / draws <= 0.09, (seeds, tilt, hits / draws)
    found = sum(  # 3 per-seed sds of the separation
        paired_auroc_difference(*_scores(rng, 5, shift=0.45)).verdict == "better"
        for _ in range(150)
    )
    assert found / 150 >= 0.8


def test_one_seed_interval_covers_the_models_population_difference():
    from harness.stats import paired_auroc_difference

    rng = np.random.default_rng(7)
    covered, draws = 0, 400
    for _ in range(draws):
        labels = np.r_[np.ones(120), np.zeros(120)].astype(bool)
        a = 1.2 * labels + rng.normal(0, 1, 240)  # population AUROC Φ(1.2 / √2)
        b = 0.9 * labels + 0.8 * (a - 1.2 * labels) + 0.6 * rng.normal(0, 1, 240)
        truth = stats.norm.cdf(1.2 / np.sqrt(2)) - stats.norm.cdf(0.9 / np.sqrt(2))
        r = paired_auroc_difference(a, b, labels)
        covered += r.ci_low <= truth <= r.ci_high
    assert 0.91 <= covered / draws <= 0.99  # 95% ± 4 points (400 draws: sd 1.1 points)


def test_auroc_bad_input_is_named():
    from harness.stats import paired_auroc_difference

    with pytest.raises(ValueError, match="one shape"):
        paired_auroc_difference(np.zeros((2, 5)), np.zeros((3, 5)), np.ones(5, bool))
    with pytest.raises(ValueError, match="a positive and a negative"):
        paired_auroc_difference(np.zeros((2, 5)), np.zeros((2, 5)), np.ones(5, bool))


def test_the_seed_component_estimated_negative_keeps_the_unbiased_combination():
    # 3 seeds whose means agree (MS_seed < MS_residual) and per-example differences
    # (MS_example large): the variance stays MS_seed + MS_example - MS_residual, and the
    # Satterthwaite df puts MS_residual (MS_seed's lower bound) in the seed term's place
    rng = np.random.default_rng(8)
    example = rng.normal(0, 0.5, 60)
    d = example + rng.normal(0, 0.3, (3, 60))
    d -= d.mean(axis=1, keepdims=True) - d.mean()  # equal seed means: MS_seed = 0 ...
    d[:, 0] += np.array([0.01, -0.01, 0.0])  # ... almost
    s, n = d.shape
    ms_seed, ms_example, ms_res = _anova_by_loops(d)
    assert ms_seed < ms_res < ms_example  # the case
    combined = ms_seed + ms_example - ms_res
    df = combined**2 / (
        ms_res**2 / (s - 1) + ms_example**2 / (n - 1) + ms_res**2 / ((s - 1) * (n - 1))
    )
    assert df > s - 1  # the floor is not what is tested here
    r = paired_difference(d, np.zeros_like(d))
    assert r.df == pytest.approx(df, rel=1e-9)
    se = np.sqrt(combined / (s * n))
    assert r.p_value == pytest.approx(2 * stats.t.sf(abs(d.mean()) / se, df), rel=1e-9)


def test_noise_in_the_example_part_is_not_cut_at_zero_and_the_df_floor_is_s_minus_1():
    # no example effect, MS_example < MS_residual: the example part is negative and kept
    rng = np.random.default_rng(9)
    for _ in range(50):
        d = rng.normal(0, 1, (4, 40)) + rng.normal(0, 0.5, (4, 1))
        ms_seed, ms_example, ms_res = _anova_by_loops(d)
        if ms_example < ms_res < ms_seed:
            break
    combined = ms_seed + ms_example - ms_res
    assert combined < ms_seed
    s, n = d.shape
    df = combined**2 / (
        ms_seed**2 / (s - 1) + ms_example**2 / (n - 1) + ms_res**2 / ((s - 1) * (n - 1))
    )
    r = paired_difference(d, np.zeros_like(d))
    assert r.df == pytest.approx(max(df, s - 1), rel=1e-9)
    se = np.sqrt(combined / (s * n))
    assert (r.ci_high - r.ci_low) / 2 == pytest.approx(stats.t.ppf(0.975, r.df) * se, rel=1e-9)


def _anova_by_loops(d):
    """The two-way ANOVA mean squares (seed, example, residual), written out with loops."""
    s, n = d.shape
    grand = sum(d[i, j] for i in range(s) for j in range(n)) / (s * n)
    rows = [sum(d[i]) / n for i in range(s)]
    cols = [sum(d[:, j]) / s for j in range(n)]
    ms_seed = n * sum((r - grand) ** 2 for r in rows) / (s - 1)
    ms_example = s * sum((c - grand) ** 2 for c in cols) / (n - 1)
    ms_res = sum((d[i, j] - rows[i] - cols[j] + grand) ** 2 for i in range(s) for j in range(n))
    return ms_seed, ms_example, ms_res / ((s - 1) * (n - 1))


@pytest.mark.parametrize("null", ["seed_noise", "ceiling"])
def test_three_seeds_keep_the_error_rate_at_the_ceiling_too(null):
    # the small version of benchmarks/stats_simulation.py's nulls a and d at 3 seeds (too
    # few draws to tell 0.03 from 0.05: the benchmark's 10,000 draws measure that)
    rng = np.random.default_rng(10 if null == "ceiling" else 11)
    base = 4.0 if null == "ceiling" else 0.5
    draws, hits = 600, 0
    for _ in range(draws):
        difficulty = rng.normal(0, 1.5, 200)

        def method(difficulty=difficulty):
            logit = base + rng.normal(0, 0.3, (3, 1)) - difficulty
            return (rng.random((3, 200)) < 1 / (1 + np.exp(-logit))).astype(float)

        hits += paired_difference(method(), method()).verdict != "not distinguishable"
    # 600 draws of a 5% rule: [0.025, 0.08] with probability ~0.99
    assert 0.025 <= hits / draws <= 0.08
