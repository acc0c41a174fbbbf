"""Leaderboard aggregation."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.leaderboard import aggregate, metric_table


def rows(metric, values, group_value=""):
    return pd.DataFrame(
        [
            {
                "dataset": "d",
                "setting_id": "s" * 20,
                "eval_id": "e" * 16,
                "model": "m",
                "method": "erm",
                "tta": "",
                "selection_rule": "id_val_accuracy",
                "split": "test",
                "split_role": "shift_test",
                "scorer": "",
                "metric": metric,
                "group_key": "label" if metric != "accuracy" else "",
                "group_value": group_value,
                "value": v,
                "run_id": f"r{i}",
                "seed": i,
            }
            for i, v in enumerate(values)
        ]
    )


def test_worst_group_accuracy_aggregates_over_every_seed():
    agg = aggregate(rows("worst_group_accuracy", [0.04, 0.10, 0.06]))
    [row] = agg.itertuples()
    assert row.n_seeds == 3 and row.mean == pytest.approx(0.0666666, abs=1e-6)
    assert row.std == pytest.approx(pd.Series([0.04, 0.10, 0.06]).std(ddof=1))


def test_lower_is_better_metrics_sort_best_first():
    table = pd.concat(
        [rows("ece", [0.3, 0.3]), rows("ece", [0.1, 0.1]).assign(setting_id="t" * 20)]
    )
    wide = metric_table(aggregate(table), "ece")
    assert wide["setting_id"].tolist() == ["tttttttt", "ssssssss"]


def test_intervals_t_over_seeds_and_bootstrap_for_one_seed(tmp_path):
    from scipy import stats

    from harness.store import atomic_write_parquet

    several = aggregate(rows("accuracy", [0.80, 0.84, 0.88]))
    [row] = several.itertuples()
    half = stats.t.ppf(0.975, 2) * 0.04 / 3**0.5
    assert (row.ci_low, row.ci_high) == pytest.approx((0.84 - half, 0.84 + half))
    assert row.interval == "t over seeds"

    one = rows("accuracy", [0.7])
    correct = [True] * 700 + [False] * 300
    scores = tmp_path / "runs" / "r0" / "posthoc" / ("e" * 16) / "scores" / "test.parquet"
    atomic_write_parquet(pd.DataFrame({"correct": correct}), scores)
    [boot] = aggregate(one, tmp_path).itertuples()
    assert boot.interval == "bootstrap over examples"
    se = (0.7 * 0.3 / 1000) ** 0.5
    assert boot.ci_low == pytest.approx(0.7 - 1.96 * se, abs=0.006)
    assert boot.ci_high == pytest.approx(0.7 + 1.96 * se, abs=0.006)
    [none] = aggregate(one).itertuples()  # no per-example scores at hand: no interval
    assert none.interval == "" and pd.isna(none.ci_low)


def test_paired_comparisons_against_the_baseline(tmp_path):
    import numpy as np

    from harness.leaderboard import paired_comparisons
    from harness.store import atomic_write_parquet

    rng = np.random.default_rng(0)
    records = []
    for method, rate in (("erm", 0.6), ("better", 0.8), ("same", 0.6)):
        for seed in (0, 1, 2):
            run_id = f"{method}{seed}"
            correct = rng.random(500) < rate
            path = tmp_path / "runs" / run_id / "posthoc" / "e" / "scores" / "test.parquet"
            atomic_write_parquet(pd.DataFrame({"index": np.arange(500), "correct": correct}), path)
            records.append(
                {
                    "dataset": "d",
                    "model": "m",
                    "eval_id": "e",
                    "method": method,
                    "setting_id": f"s-{method}",
                    "split": "test",
                    "seed": seed,
                    "run_id": run_id,
                    "metric": "accuracy",
                    "scorer": "",
                    "group_key": "",
                    "value": correct.mean(),
                }
            )
    comp = paired_comparisons(pd.DataFrame(records), tmp_path).set_index("method")
    assert comp.loc["better", "verdict"] == "better" and comp.loc["better", "seeds"] == 3
    assert comp.loc["better", "difference"] == pytest.approx(0.2, abs=0.05)
    assert (
        comp.loc["better", "ci_low"]
        < comp.loc["better", "difference"]
        < comp.loc["better", "ci_high"]
    )
    assert comp.loc["same", "verdict"] == "not distinguishable"
    assert "erm" not in comp.index


def test_entries_not_distinguishable_from_the_best_share_its_rank():
    from harness.leaderboard import uncertain_ranks

    bounds = pd.DataFrame(
        {
            "mean": [0.85, 0.90, 0.55, 0.70],
            "ci_low": [0.80, 0.85, 0.50, None],
            "ci_high": [0.90, 0.95, 0.60, None],
        },
        index=list("ABCD"),
    )
    assert uncertain_ranks(bounds).to_dict() == {"A": 1, "B": 1, "C": 4, "D": 3}


def test_a_tta_run_of_the_baseline_is_compared_with_it_not_mistaken_for_it(tmp_path):
    import numpy as np

    from harness.leaderboard import paired_comparisons
    from harness.store import atomic_write_parquet

    rng = np.random.default_rng(0)
    records = []
    for method, tta, rate in (("erm", "", 0.6), ("erm", "tent", 0.8)):
        for seed in (0, 1, 2):
            run_id = f"{method}{tta}{seed}"
            correct = rng.random(500) < rate
            path = tmp_path / "runs" / run_id / "posthoc" / "e" / "scores" / "test.parquet"
            atomic_write_parquet(pd.DataFrame({"index": np.arange(500), "correct": correct}), path)
            records.append(
                {
                    "dataset": "d",
                    "model": "m",
                    "eval_id": "e",
                    "method": method,
                    "tta": tta,
                    "setting_id": f"s-{method}-{tta}",
                    "split": "test",
                    "seed": seed,
                    "run_id": run_id,
                    "metric": "accuracy",
                    "scorer": "",
                    "group_key": "",
                    "value": correct.mean(),
                }
            )
    comp = paired_comparisons(pd.DataFrame(records), tmp_path)
    assert list(comp["method"]) == ["erm+tent"] and list(comp["verdict"]) == ["better"]
