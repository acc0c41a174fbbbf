"""The leaderboard's accuracy-estimator ranking (harness/report/estimators.py): mean absolute
error over the shifted splits per setting, recomputed here with plain loops from the
aggregated rows; only shift_test, overall (not per group) estimator rows count."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from harness.report.aggregate import SETTING_COLUMNS
from harness.report.estimators import estimator_ranking, estimators_section


def agg_rows():
    rng = np.random.default_rng(0)
    rows = []
    for setting, est, (split, role) in itertools.product(
        ["s1", "s2"],
        ["ac", "cot", "doc"],
        [("a", "shift_test"), ("b", "shift_test"), ("id_test", "id_test")],  # fmt: skip
    ):
        base = {c: "" for c in SETTING_COLUMNS} | {"dataset": "maze", "setting_id": setting,
                                                   "eval_id": "e", "model": "m", "method": setting}  # fmt: skip
        key = {
            "split": split,
            "split_role": role,
            "scorer": est,
            "group_key": "",
            "group_value": "",
        }
        rows.append(base | key | {"metric": "abs_error", "mean": float(rng.random())})
        rows.append(base | key | {"metric": "estimated_accuracy", "mean": 0.5})
        rows.append(base | key | {"metric": "abs_error", "mean": 9.0, "group_key": "label",
                                  "group_value": "1"})  # fmt: skip
    return pd.DataFrame(rows)


def test_ranking_is_the_mean_over_shifted_splits():
    agg = agg_rows()
    got = estimator_ranking(agg)
    assert len(got) == 6 and set(got["n_splits"]) == {2}
    for setting in ("s1", "s2"):
        maes = {}
        for est in ("ac", "cot", "doc"):
            vals = [
                r["mean"]
                for _, r in agg.iterrows()
                if r["setting_id"] == setting and r["scorer"] == est
                and r["metric"] == "abs_error" and r["split_role"] == "shift_test"
                and r["group_key"] == ""
            ]  # fmt: skip
            maes[est] = sum(vals) / len(vals)
        order = sorted(maes, key=maes.get)
        sub = got[got["setting_id"] == setting].set_index("estimator")
        for rank, est in enumerate(order, start=1):
            assert sub.loc[est, "rank"] == rank
            assert np.isclose(sub.loc[est, "mean_abs_error"], maes[est])
    text = "\n".join(estimators_section(got, "maze"))
    assert "Accuracy estimators" in text and "cot" in text
    assert estimators_section(got, "other") == []


def test_no_estimator_rows_no_ranking():
    agg = agg_rows()
    assert estimator_ranking(agg[agg["metric"] != "abs_error"]).empty
    assert estimator_ranking(agg.iloc[:0]).empty
