"""The headline table (harness/report/headline.py): one row per setting, test splits only,
ordered by the primary metric on the headline split, ranks with ties and verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.leaderboard import headline_of
from harness.report.aggregate import aggregate
from harness.report.headline import headline, headline_markdown
from tests.test_export import table as golden_table


def test_rows_are_settings_ordered_by_the_headline_split_and_carry_intervals():
    agg = aggregate(golden_table())
    comparisons = pd.DataFrame(
        {
            "dataset": "toy",
            "setting_id": sorted(agg.loc[agg["method"] != "erm", "setting_id"].unique()),
            "split": "id_test",
            "verdict": ["better", "not distinguishable"],
            "baseline": "erm",
        }
    )
    h = headline(agg, "toy", "accuracy", comparisons)
    acc = agg[
        (agg["metric"] == "accuracy") & (agg["split"] == "id_test") & (agg["group_value"] == "")
    ]
    means = acc.set_index("setting_id")["mean"].sort_values(ascending=False)
    assert list(h.table["setting"]) == [s[:8] for s in means.index]
    assert h.split == "id_test"
    # test splits only, then worst-group and the default scorer's OOD AUROC where present
    assert "val" not in h.table and {"id_test", "shifted"} <= set(h.table)
    for setting, cell, title in zip(
        means.index, h.table["id_test"], h.titles["id_test"], strict=True
    ):
        row = acc.set_index("setting_id").loc[setting]
        interval = f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if row["n_seeds"] > 1 else ""
        assert cell == f"{row['mean']:.3f}{interval}"
        assert title.startswith(f"{int(row['n_seeds'])} seed(s); ")
    by_setting = dict(zip(h.table["setting"], h.table["verdict"], strict=True))
    for sid, verdict in zip(comparisons["setting_id"], comparisons["verdict"], strict=True):
        assert by_setting[sid[:8]] == verdict
    erm = acc.loc[acc["method"] == "erm", "setting_id"].iat[0][:8]
    assert by_setting[erm] == "baseline"
    # ranks: 1 + the number of settings whose interval lies wholly above
    # (a setting without an interval counts as a point at its mean)
    by = acc.set_index("setting_id")
    lows, highs = by["ci_low"].fillna(by["mean"]), by["ci_high"].fillna(by["mean"])
    for setting, rank in zip(means.index, h.table["rank"], strict=True):
        assert int(rank) == 1 + int((lows > highs[setting]).sum())
    md = "\n".join(headline_markdown(h))
    assert "## Headline: accuracy" in md and headline_of(md + "\n## Next\n").count("|") > 10


def test_another_headline_split_reorders_and_a_wrong_one_warns():
    agg = aggregate(golden_table())
    h = headline(agg, "toy", "accuracy", None, headline_split="shifted")
    shifted = agg[
        (agg["metric"] == "accuracy") & (agg["split"] == "shifted") & (agg["group_value"] == "")
    ]
    order = shifted.set_index("setting_id")["mean"].sort_values(ascending=False).index
    assert list(h.table["setting"]) == [s[:8] for s in order] and h.split == "shifted"
    with pytest.warns(UserWarning, match="headline_split.toy='nope' is not a test split"):
        assert headline(agg, "toy", "accuracy", None, headline_split="nope").split == "id_test"
    assert headline(agg, "toy", "no_such_metric") is None
    lower = headline(agg, "toy", "ece")
    ece = agg[(agg["metric"] == "ece") & (agg["split"] == "id_test")]
    assert np.all(np.diff([float(c.split()[0]) for c in lower.table["id_test"]]) >= 0)
    assert len(lower.table) == ece["setting_id"].nunique()
