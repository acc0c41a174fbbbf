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
