"""Effective robustness (harness/report/robustness.py): leave-one-out lines on logit or
probit accuracies, recomputed here with numpy's polyfit and scipy.stats.norm, and end to end
on a pool of four timm models on digits_c."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import harness.run as run_mod
from harness.report.build import write_leaderboard
from harness.report.robustness import check_options, effective_robustness

from .conftest import TINY, compose_config


def logit(p):
    return np.log(p / (1 - p))


def expected(points: pd.DataFrame, scale: str, pool: list[str] | None) -> dict[str, float]:
    """Per setting: shifted accuracy minus the least-squares line (numpy.polyfit) of the other
    pool members, on the transformed axes, transformed back."""
    fwd, inv = (logit, lambda z: 1 / (1 + np.exp(-z))) if scale == "logit" else (norm.ppf, norm.cdf)
    out = {}
    for s, row in points.iterrows():
        others = points.drop(index=s)
        if pool:
            others = others[others["model"].isin(pool)]
        if len(others) < 3:
            continue
        slope, intercept = np.polyfit(fwd(others["id"]), fwd(others["shift"]), 1)
        out[s] = row["shift"] - inv(intercept + slope * fwd(row["id"]))
    return out


def agg_frame(points: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for s, r in points.iterrows():
        base = {"dataset": "d", "setting_id": s, "eval_id": "e", "model": r["model"],
                "method": "erm", "tta": "none", "augment": "", "selection_rule": "last_epoch",
                "scorer": "", "group_key": "", "group_value": "", "std": np.nan,
                "n_seeds": 1, "ci_low": np.nan, "ci_high": np.nan, "interval": ""}  # fmt: skip
        rows.append({**base, "split": "test", "split_role": "id_test", "metric": "accuracy",
                     "mean": r["id"]})  # fmt: skip
        rows.append({**base, "split": "shifted", "split_role": "shift_test", "metric": "accuracy",
                     "mean": r["shift"]})  # fmt: skip
        rows.append({**base, "split": "shifted", "split_role": "shift_test", "metric": "ece",
                     "mean": 0.5})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("scale", ["logit", "probit"])
@pytest.mark.parametrize("pool", [None, ["a", "b", "c", "d"]])
def test_leave_one_out_lines_match_an_independent_fit(scale, pool):
    rng = np.random.default_rng(3)
    ids = rng.uniform(0.5, 0.95, 7)
    points = pd.DataFrame(
        {
            "model": list("abcdefg"),
            "id": ids,
            "shift": np.clip(ids - 0.2 + rng.normal(0, 0.05, 7), 0.05, 0.95),
        },
        index=[f"s{k}" for k in range(7)],
    )
    frame = effective_robustness(agg_frame(points), scale=scale, pool=pool)
    want = expected(points, scale, pool)
    got = frame.set_index("setting_id")["effective_robustness"]
    assert set(got.index) == set(want)  # every setting, pool member or not, with 3+ others
    for s, value in want.items():
        assert got[s] == pytest.approx(value, abs=1e-9)
    assert (frame["split"] == "shifted").all() and (frame["scale"] == scale).all()
    # a pool too small for a fit gives no rows rather than a line through two points
    assert effective_robustness(agg_frame(points), pool=["a", "b"]).empty


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("yes", "must be null or a mapping"),
        ({"scale": "linear"}, "scale must be one of"),
        ({"pool": "resnet"}, "pool must be null"),
        ({"min_pool": 1}, "min_pool must be an integer >= 2"),
        ({"scales": "logit"}, "unknown entries"),
    ],
)
def test_bad_effective_robustness_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        check_options(options)


def test_a_pool_of_four_timm_models_on_digits_c(tmp_path):
    models = ["test_resnet", "test_vit", "test_convnext", "test_efficientnet"]
    for model in models:
        run_mod.run(
            compose_config(
                [
                    *TINY,
                    "dataset=digits_c",
                    "dataset.families=[noise]",
                    "dataset.severities=[3]",
                    f"results_dir={tmp_path}",
                    f"model.name={model}",
                    "eval=minimal",
                ]
            )
        )
    write_leaderboard(
        tmp_path,
        outputs=["markdown"],
        scorer_baseline=None,
        effective_robustness_options={"scale": "probit", "pool": models},
    )
    board = tmp_path / "leaderboard"
    frame = pd.read_csv(board / "effective_robustness.csv")
    summary = pd.read_csv(board / "summary.csv", keep_default_na=False)
    acc = summary[(summary["metric"] == "accuracy") & (summary["scorer"] == "")]
    points = (
        acc[acc["split_role"] == "id_test"]
        .set_index("setting_id")[["model", "mean"]]
        .rename(columns={"mean": "id"})
        .join(acc[acc["split"] == "gen-noise-3"].set_index("setting_id")["mean"].rename("shift"))
    )
    points[["id", "shift"]] = points[["id", "shift"]].astype(float).clip(1e-4, 1 - 1e-4)
    want = expected(points, "probit", models)
    assert sorted(frame["model"]) == sorted(models) and len(want) == 4
    for _, row in frame.iterrows():
        assert row["effective_robustness"] == pytest.approx(want[row["setting_id"]], abs=1e-9)
        assert row["pool_size"] == 3
    assert "## Effective robustness" in (board / "digits_c.md").read_text()
