"""The headline of a dataset's leaderboard: one row per setting (model, method, TTA,
augmentation), one column per test split (ID, each shift, then worst-group and the default
scorer's OOD AUROC where the runs have them), the primary metric's mean with its 95%
interval, the rank with ties and the verdict against the baseline on the headline split;
ordered by the mean on that split. Train and validation splits are never shown here.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pandas as pd

from harness.report.aggregate import LOWER_IS_BETTER, split_order, uncertain_ranks
from harness.report.mdtable import markdown_table

TEST_ROLES = ("id_test", "shift_test")
HOVER = "(hover a cell for the number of seeds and how the interval was made)"


@dataclass
class Headline:
    table: pd.DataFrame  # display strings: setting columns, seeds, rank, verdict, one per split
    titles: pd.DataFrame  # same shape: what a hover says (seeds, how the interval was made)
    split: str  # the headline split (sorting, rank, verdict)
    metric: str
    caption: str


def _records(frame: pd.DataFrame, columns: list[str]) -> dict[str, dict]:
    """{setting_id: {column: value}} of a frame with one row per setting: what
    set_index("setting_id").to_dict("index") gives, from each column's tolist (the same
    Python values; to_dict iterates the arrow arrays a cell at a time, 0.1 s per dataset)."""
    values = [frame[c].tolist() for c in columns]
    return {
        key: dict(zip(columns, row, strict=True))
        for key, *row in zip(frame["setting_id"].tolist(), *values, strict=True)
    }


def _cell(row: pd.Series | dict) -> tuple[str, str]:
    text = f"{row['mean']:.3f}"
    if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]):
        text += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    how = row["interval"] or "no interval (one seed, not accuracy)"
    return text, f"{int(row['n_seeds'])} seed(s); {how}"


def headline(
    agg: pd.DataFrame,
    dataset: str,
    primary_metric: str = "accuracy",
    comparisons: pd.DataFrame | None = None,
    headline_split: str | None = None,
    ood_scorer: str = "msp",
) -> Headline | None:
    """The headline of `dataset` from summary rows (`agg`); None when it has no test rows of
    the primary metric. `headline_split`: None = the ID test split."""
    # only the rows read below (the primary metric, worst-group, the scorer's AUROCs) are
    # taken and sorted: a stable sort of them keeps the order sorting all would give them
    metric, scorer = agg["metric"], agg["scorer"]
    wanted = ((scorer == "") & metric.isin([primary_metric, "worst_group_accuracy"])) | (
        (scorer == ood_scorer) & (agg["split_role"] == "ood") & metric.str.startswith("auroc_vs_")
    )
    sub = agg[(agg["dataset"] == dataset) & (agg["group_value"] == "") & wanted]
    # one eval config per setting for label metrics: the numbers are the same under each
    sub = sub.sort_values("eval_id", kind="stable")
    main = sub[
        (sub["metric"] == primary_metric)
        & (sub["scorer"] == "")
        & sub["split_role"].isin(TEST_ROLES)
    ].drop_duplicates(["setting_id", "split"])
    if main.empty:
        return None
    splits = split_order(main)
    split = next(
        (s for s in splits if main.loc[main["split"] == s, "split_role"].iat[0] == "id_test"),
        splits[0],
    )
    if headline_split in splits:
        split = headline_split
    elif headline_split is not None:  # the rest of the leaderboard is still worth writing
        warnings.warn(
            f"headline_split.{dataset}={headline_split!r} is not a test split of {dataset} "
            f"({splits}); the headline uses {split}",
            stacklevel=2,
        )
    columns: dict[str, pd.DataFrame] = {s: main[main["split"] == s] for s in splits}
    if primary_metric != "worst_group_accuracy":
        worst = sub[
            (sub["metric"] == "worst_group_accuracy")
            & (sub["scorer"] == "")
            & (sub["split"] == split)
        ].drop_duplicates("setting_id")
        if not worst.empty:
            columns[f"worst-group ({split})"] = worst
    ood = sub[
        (sub["split_role"] == "ood")
        & (sub["scorer"] == ood_scorer)
        & sub["metric"].str.startswith("auroc_vs_")
    ].drop_duplicates(["setting_id", "split"])
    for name in split_order(ood):
        columns[f"{ood_scorer} AUROC ({name})"] = ood[ood["split"] == name]
    settings = main.drop_duplicates("setting_id").set_index("setting_id")
    key = columns[split].set_index("setting_id")
    ascending = primary_metric in LOWER_IS_BETTER
    order = key["mean"].reindex(settings.index).sort_values(ascending=ascending, na_position="last")
    ranks = (
        uncertain_ranks(key[["mean", "ci_low", "ci_high"]])
        if not ascending
        else key["mean"].rank(method="min")
    )
    verdicts = _verdicts(comparisons, dataset, split)
    # plain dicts per setting: a lookup per cell in the frames cost 20 s for 1,000 settings
    # only the fields read below: to_dict of every column cost 0.2 s for 2,000 settings
    records = _records(
        main.drop_duplicates("setting_id"),
        [c for c in ("model", "method", "tta", "augment") if c in settings],
    )
    seeds = key["n_seeds"].to_dict()
    ranks = ranks.to_dict()
    ids = order.index.tolist()
    rows: dict[str, list[str]] = {c: [] for c in ("model", "method", "augment", "setting",
                                                  "seeds", "rank", "verdict")}  # fmt: skip
    for setting_id in ids:
        s = records[setting_id]
        method = s["method"] + (f"+{s['tta']}" if s.get("tta") not in ("", "none", None) else "")
        rows["model"].append(s["model"])
        rows["method"].append(method)
        rows["augment"].append(s.get("augment") or "")
        rows["setting"].append(setting_id[:8])
        rows["seeds"].append(str(int(seeds[setting_id])) if setting_id in seeds else "")
        rows["rank"].append(str(int(ranks[setting_id])) if setting_id in ranks else "")
        rows["verdict"].append(
            verdicts.get(setting_id, "baseline" if method in verdicts.get("", ()) else "")
        )
    titles = {c: [""] * len(ids) for c in rows}
    # each column's cells made once per setting from its arrays (not a dict per cell)
    for name, frame in columns.items():
        by_setting = _cells(frame.drop_duplicates("setting_id"))
        pairs = [by_setting.get(setting_id, ("", "")) for setting_id in ids]
        rows[name] = [p[0] for p in pairs]
        titles[name] = [p[1] for p in pairs]
    caption = (
        f"{primary_metric} on each test split: mean over seeds with its 95% interval {HOVER}. "
        f"Ordered by {split}; "
        "the rank counts the settings whose interval lies wholly above (ties share a rank); "
        "the verdict is the paired accuracy comparison with the baseline on that split "
        "(comparisons.csv)."
    )
    return Headline(pd.DataFrame(rows), pd.DataFrame(titles), split, primary_metric, caption)


def _cells(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """{setting_id: _cell of its row} of a frame with one row per setting, from each
    column's tolist (the same Python values as _records gives _cell)."""
    needed = ["mean", "ci_low", "ci_high", "interval", "n_seeds"]
    values = zip(frame["setting_id"].tolist(), *(frame[c].tolist() for c in needed), strict=True)
    out = {}
    for setting_id, mean, low, high, how, seeds in values:
        text = f"{mean:.3f}"
        if math.isfinite(low) and math.isfinite(high):
            text += f" [{low:.3f}, {high:.3f}]"
        how = how or "no interval (one seed, not accuracy)"
        out[setting_id] = (text, f"{int(seeds)} seed(s); {how}")
    return out


def _verdicts(comparisons: pd.DataFrame | None, dataset: str, split: str) -> dict:
    """setting_id -> verdict on `split`; "" -> the baseline's method names."""
    if comparisons is None or comparisons.empty:
        return {}
    comp = comparisons[(comparisons["dataset"] == dataset) & (comparisons["split"] == split)]
    out: dict = dict(zip(comp["setting_id"], comp["verdict"], strict=True))
    out[""] = set(comp["baseline"])
    return out


def headline_markdown(h: Headline | None) -> list[str]:
    if h is None:
        return []
    return [
        "",
        f"## Headline: {h.metric}",
        "",
        h.caption.replace(HOVER, "(`seeds`; summary.csv says how each interval was made)"),
        "",
        markdown_table(h.table),
    ]
