"""harness.stats.aggregate (rliable's IQM, probability of improvement, performance profiles
with stratified bootstrap intervals) against brute force and scipy, and aggregates.csv's
table over the shifted splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.stats.aggregate import (
    improvement_interval,
    iqm,
    iqm_interval,
    iqm_of_each,
    performance_profile,
    probability_of_improvement,
    profile_band,
    stratified_resamples,
)


def test_iqm_is_the_mean_of_the_middle_half():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (6, 4))  # 24 values: drop the 6 lowest and the 6 highest
    assert iqm(values) == pytest.approx(np.sort(values.ravel())[6:18].mean(), abs=1e-12)


def test_iqm_of_each_is_iqm_bit_for_bit():
    """Arrays of one size computed together: the very numbers of iqm (scipy's trim_mean),
    on shapes from one value up, ties included, in the arrays' order; bad input refused."""
    rng = np.random.default_rng(3)
    arrays = [rng.random((rng.integers(1, 9), rng.integers(1, 5))) for _ in range(400)]
    arrays += [np.round(rng.random((5, 3)), 1) for _ in range(100)]  # ties
    got = iqm_of_each(arrays)
    assert got.tolist() == [iqm(a) for a in arrays]
    assert iqm_of_each([]).shape == (0,)
    with pytest.raises(ValueError, match="finite"):
        iqm_of_each([np.array([[1.0, np.nan]])])


def test_probability_of_improvement_is_mann_whitney_per_task_averaged():
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(0.3, 1, (5, 3)), 1)  # rounded: ties count half
    y = np.round(rng.normal(0.0, 1, (7, 3)), 1)
    per_task = [stats.mannwhitneyu(x[:, t], y[:, t]).statistic / (5 * 7) for t in range(3)]
    assert probability_of_improvement(x, y) == pytest.approx(np.mean(per_task), abs=1e-12)
    assert probability_of_improvement(x, x) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(x, y[:, :2])


def test_performance_profile_counts_runs_above_each_threshold():
    values = np.array([[0.1, 0.5], [0.3, 0.9], [0.6, 0.9]])
    tau = np.array([0.0, 0.3, 0.9])
    brute = [np.mean([v > t for v in values.ravel()]) for t in tau]
    assert performance_profile(values, tau) == pytest.approx(brute)


def test_the_bootstrap_is_stratified_by_task():
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (6, 4)) + 10 * np.arange(4)
    boot = stratified_resamples(values, 200, rng)
    for t in range(4):  # every resampled value of task t is one of task t's runs
        assert np.isin(boot[:, :, t], values[:, t]).all()
    # runs equal within each task: every stratified resample is the data itself, so the
    # interval has no width (a bootstrap over all runs × tasks pooled would vary)
    constant = np.repeat(np.array([[0.2, 0.5, 0.7, 0.9]]), 6, axis=0)
    r = iqm_interval(constant)
    assert r.ci_low == pytest.approx(r.value) and r.ci_high == pytest.approx(r.value)
    low, high = profile_band(constant, np.array([0.6]))
    assert low == pytest.approx([0.5]) and high == pytest.approx([0.5])


def test_intervals_need_enough_runs_per_task_and_cover_their_statistic():
    rng = np.random.default_rng(3)
    r = iqm_interval(rng.normal(0, 1, (4, 3)))
    assert np.isnan(r.ci_low) and "fewer than 5 runs" in r.interval
    r = improvement_interval(rng.normal(0, 1, (4, 3)), rng.normal(0, 1, (6, 3)))
    assert np.isnan(r.ci_low) and "fewer than 5 runs" in r.interval and r.runs == 4
    # coverage of the population IQM (a mixture of the tasks' run distributions) at 10 runs
    means = np.array([0.0, 0.5, 1.0, 2.0])
    population = (rng.normal(0, 1, (200_000, 4)) + means).ravel()
    truth = stats.trim_mean(population, 0.25)
    covered = 0
    for k in range(150):
        r = iqm_interval(rng.normal(0, 1, (10, 4)) + means, reps=400, seed=k)
        covered += r.ci_low <= truth <= r.ci_high
    assert covered / 150 >= 0.85  # a percentile bootstrap at 10 runs: 0.92-0.94 measured
    x, y = rng.normal(1, 1, (6, 3)), rng.normal(0, 1, (6, 3))
    imp = improvement_interval(x, y)
    assert imp.ci_low <= imp.value <= imp.ci_high and imp.runs == 6 and imp.tasks == 3


def test_the_expanded_interval_repairs_the_percentile_bootstraps_small_sample_coverage():
    # the small version of benchmarks/stats_simulation.py `aggregates`: 5 runs on 4 tasks,
    # the population IQM of the tasks' mixture as the truth (computed apart, by scipy)
    rng = np.random.default_rng(5)
    means = np.array([0.0, 0.5, 1.0, 2.0])
    truth = stats.trim_mean((rng.normal(0, 1, (200_000, 4)) + means).ravel(), 0.25)
    draws, hits = 300, {"iqm": 0, "percentile": 0, "improvement": 0}
    for k in range(draws):
        v = rng.normal(0, 1, (5, 4)) + means
        r, p = iqm_interval(v, reps=400, seed=k), iqm_interval(v, reps=400, seed=k, expanded=False)
        hits["iqm"] += r.ci_low <= truth <= r.ci_high
        hits["percentile"] += p.ci_low <= truth <= p.ci_high
        r = improvement_interval(rng.normal(0, 1, (5, 4)), rng.normal(0, 1, (5, 4)), reps=400)
        hits["improvement"] += r.ci_low <= 0.5 <= r.ci_high  # equal methods
    # 300 draws: a 95% interval lands in [0.92, 0.975] with probability ~0.99
    assert 0.92 <= hits["iqm"] / draws <= 0.98 and 0.92 <= hits["improvement"] / draws <= 0.98
    assert hits["percentile"] < hits["iqm"]  # rliable's percentile interval: ~0.90 here


def test_the_expanded_level_is_hesterbergs():
    from harness.stats.aggregate import expanded_level

    # alpha' / 2 = Phi(-sqrt(n / (n - 1)) t_{alpha/2, df}); large samples: no expansion
    n, df = 5, 16
    tail = stats.norm.sf(np.sqrt(n / (n - 1)) * stats.t.isf(0.025, df))
    assert expanded_level(0.95, n, df) == pytest.approx(1 - 2 * tail, abs=1e-12)
    assert expanded_level(0.95, 10**6, 10**7) == pytest.approx(0.95, abs=1e-5)
    rng = np.random.default_rng(6)
    v = rng.normal(0, 1, (5, 3))
    wide, plain = iqm_interval(v), iqm_interval(v, expanded=False)
    assert wide.ci_low < plain.ci_low and wide.ci_high > plain.ci_high


def _table(seeds=5):
    rng = np.random.default_rng(4)
    rows = []
    for method, shift in (("erm", 0.0), ("mixup", 0.05)):
        for seed in range(seeds):
            for split, role in (
                ("id_test", "id_test"),
                ("a", "shift_test"),
                ("b", "shift_test"),
                ("c", "shift_test"),
                ("pooled_test", "pooled"),
            ):
                rows.append(
                    {
                        "dataset": "d", "model": "m", "eval_id": "e", "method": method,
                        "tta": "", "setting_id": f"s_{method}", "seed": seed,
                        "run_id": f"{method}{seed}", "split": split, "split_role": role,
                        "scorer": "", "metric": "accuracy", "group_key": "",
                        "group_value": "", "value": 0.7 + shift + rng.normal(0, 0.02),
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_aggregates_table_over_shifted_splits_only():
    from harness.report.task_aggregates import aggregates_table

    table = _table()
    out = aggregates_table(table, {"d": "accuracy"}, "erm")
    assert set(out["task_names"]) == {"a|b|c"}  # neither the ID test split nor pooled rows
    for method in ("erm", "mixup"):
        wide = table[(table["method"] == method) & (table["split_role"] == "shift_test")]
        wide = wide.pivot(index="seed", columns="split", values="value").to_numpy()
        row = out[(out["method"] == method) & (out["statistic"] == "iqm")].iloc[0]
        assert row["value"] == pytest.approx(stats.trim_mean(wide.ravel(), 0.25))
        assert row["runs"] == 5 and row["tasks"] == 3 and row["ci_low"] <= row["value"]
        assert row["interval"].startswith("stratified bootstrap, expanded percentile")
    improvement = out[out["statistic"] == "probability_of_improvement"]
    assert list(improvement["method"]) == ["mixup"] and list(improvement["versus"]) == ["erm"]
    assert improvement["value"].iat[0] > 0.9  # 0.05 better with run sd 0.02


def test_the_aggregates_option_is_validated():
    from harness.report.options import validate_leaderboard

    with pytest.raises(ValueError, match="aggregates must be true or false"):
        validate_leaderboard({"results_dir": "results", "baseline": "erm", "aggregates": "yes"})
    with pytest.raises(ValueError, match="scorer_multiple_comparisons"):
        validate_leaderboard(
            {"results_dir": "results", "baseline": "erm", "scorer_multiple_comparisons": "x"}
        )


def test_write_leaderboard_writes_aggregates_only_when_asked(tmp_path):
    import json

    from harness.leaderboard import write_leaderboard
    from harness.rundir import RunDir
    from harness.store import atomic_write_parquet, atomic_write_text

    table = _table(seeds=5)
    for run_id, rows in table.groupby("run_id"):
        rid = run_id.encode().hex()  # hex, as run ids are
        rows = rows.assign(run_id=rid, n=100, selection_rule="x")
        rd = RunDir(tmp_path, rid)
        atomic_write_parquet(rows, rd / "posthoc" / "e" / "rows.parquet")
        atomic_write_text(rd / "posthoc" / "e" / "DONE", "{}")
        first = rows.iloc[0]
        payload = {
            "dataset": {"name": "d"},
            "model": {"name": "m"},
            "method": {"name": first["method"]},
            "seed": int(first["seed"]),
        }
        atomic_write_text(rd / "key.json", json.dumps({"payload": payload}))
        rd.mark_complete({"run_id": rid})
    write_leaderboard(tmp_path, outputs=["markdown"], model_selection=None)
    assert not (tmp_path / "leaderboard" / "aggregates.csv").exists()  # opt-in
    write_leaderboard(tmp_path, outputs=["markdown"], model_selection=None, aggregates=True)
    out = pd.read_csv(tmp_path / "leaderboard" / "aggregates.csv")
    assert set(out["statistic"]) == {"iqm", "probability_of_improvement"}
    assert set(out["task_names"]) == {"a|b|c"} and (out["runs"] == 5).all()
    with pytest.raises(ValueError, match="aggregates must be true or false"):
        write_leaderboard(tmp_path, outputs=["markdown"], aggregates="yes")


def _two_datasets():
    """Datasets p (shifted splits a, b) and q (x, y, z) with one model and eval config, and
    r on another metric; erm and mixup on 5 seeds (q's seed 4 lacks split z for mixup),
    mixup twice on r (two settings); ID test and pooled rows that are never tasks."""
    rng = np.random.default_rng(7)
    rows = []
    plan = {"p": ["a", "b"], "q": ["x", "y", "z"], "r": ["u", "v"]}
    for dataset, splits in plan.items():
        metric = "worst_group_accuracy" if dataset == "r" else "accuracy"
        settings = [("erm", "0"), ("mixup", "0")] + ([("mixup", "1")] if dataset == "r" else [])
        for method, variant in settings:
            for seed in range(5):
                for split in ["id_test", *splits, "pooled"]:
                    if dataset == "q" and method == "mixup" and seed == 4 and split == "z":
                        continue
                    role = {"id_test": "id_test", "pooled": "pooled"}.get(split, "shift_test")
                    rows.append(
                        {
                            "dataset": dataset, "model": "m", "eval_id": "e", "method": method,
                            "tta": "", "setting_id": f"{dataset}_{method}{variant}",
                            "seed": seed, "run_id": f"{dataset}{method}{variant}{seed}",
                            "split": split, "split_role": role, "scorer": "", "metric": metric,
                            "group_key": "", "group_value": "",
                            "value": float(np.round(rng.uniform(0.5, 0.9), 2)),
                        }
                    )  # fmt: skip
    return pd.DataFrame(rows)


def test_rows_across_datasets_against_brute_force():
    from harness.report.task_aggregates import aggregates_table

    table = _two_datasets()
    metric_of = {"p": "accuracy", "q": "accuracy", "r": "worst_group_accuracy"}
    out = aggregates_table(table, metric_of, "erm")
    across = out[out["dataset"] == "all"]
    # only p and q share a metric; r (another metric, and two mixup settings) is not in it
    assert set(across["task_names"]) == {"p/a|p/b|q/x|q/y|q/z"}
    assert set(across["metric"]) == {"accuracy"} and (across["tasks"] == 5).all()

    def brute(method):  # seeds with every (dataset, split) task: a dict per task
        shifted = table[(table["split_role"] == "shift_test") & table["dataset"].isin(["p", "q"])]
        shifted = shifted[shifted["method"] == method]
        tasks = {}
        for (dataset, split), rows in shifted.groupby(["dataset", "split"]):
            tasks[(dataset, split)] = dict(zip(rows["seed"], rows["value"], strict=True))
        seeds = set.intersection(*(set(t) for t in tasks.values()))
        return [[task[s] for s in sorted(seeds)] for task in tasks.values()], seeds

    for method, runs in (("erm", 5), ("mixup", 4)):  # mixup lacks q/z on seed 4
        values, seeds = brute(method)
        assert len(seeds) == runs
        flat = sorted(v for task in values for v in task)
        cut = len(flat) // 4  # the interquartile mean: drop a quarter at each end
        row = across[(across["method"] == method) & (across["statistic"] == "iqm")].iloc[0]
        assert row["value"] == pytest.approx(np.mean(flat[cut : len(flat) - cut]), abs=1e-12)
        assert row["runs"] == runs and row["setting_id"] == f"p_{method}0|q_{method}0"
    (mixup, _), (erm, _) = brute("mixup"), brute("erm")
    wins = [
        np.mean([(x > y) + 0.5 * (x == y) for x in xs for y in ys])
        for xs, ys in zip(mixup, erm, strict=True)
    ]
    row = across[across["statistic"] == "probability_of_improvement"].iloc[0]
    assert row["method"] == "mixup" and row["versus"] == "erm"
    assert row["value"] == pytest.approx(np.mean(wins), abs=1e-12)
    assert np.isnan(row["ci_low"])  # 4 runs of mixup: fewer than 5 per task
    # the per-dataset rows are still there, one set per dataset
    assert set(out["dataset"]) == {"p", "q", "r", "all"}
