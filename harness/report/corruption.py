"""Corruption robustness numbers over the tidy results table: error per corruption and
severity, the mean over corruptions, and the corruption error (CE), mCE and relative mCE
of Hendrycks & Dietterich (ICLR 2019) against a reference. The command that prints and
writes them: `python -m harness.corruption_metrics` (harness/corruption_metrics.py).

A corruption split is recognised by its name (`<corruption>-<severity>`, generated sets
`gen-<corruption>-<severity>`, as the CIFAR-10-C / ImageNet-C / digits_c adapters name them)
or by `corruption` and `severity` columns when the table has them. Error = 1 − accuracy of
the label metric row (scorer empty, no group). Runs of one setting (seeds) are averaged
before anything is compared.

    CE_c      = Σ_s E_{s,c} / Σ_s E^ref_{s,c}
    relCE_c   = Σ_s (E_{s,c} − E_clean) / Σ_s (E^ref_{s,c} − E^ref_clean)
    mCE       = mean over corruptions c of CE_c (the 15 standard ones unless told otherwise)

The reference is another model's rows in the same table (same dataset and corruption
source), or `alexnet`: AlexNet's published ImageNet-C errors (below), valid only for the
released ImageNet-C files, never for generated sets (their severities are not ImageNet-C's
files).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from harness.table import overall

# AlexNet's top-1 error on ImageNet-C per corruption, averaged over severities 1..5
# (fractions). Source: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
# Common Corruptions and Perturbations", ICLR 2019; the values published with the ImageNet-C
# code (github.com/hendrycks/robustness) and used to normalise mCE by e.g.
# google-research/augmix (ALEXNET_ERR).
ALEXNET_IMAGENET_C_ERRORS = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
# AlexNet's clean ImageNet val error as printed in the paper's table (43.5%, rounded there);
# the denominator of relative mCE.
ALEXNET_IMAGENET_CLEAN_ERROR = 0.435
ALEXNET_SOURCE = (
    "Hendrycks & Dietterich, ICLR 2019 (arXiv:1903.12261); per-corruption errors as published "
    "with github.com/hendrycks/robustness"
)
STANDARD_CORRUPTIONS = tuple(ALEXNET_IMAGENET_C_ERRORS)
SPLIT_PATTERN = re.compile(r"^(?P<generated>gen-)?(?P<corruption>[a-z_]+)-(?P<severity>[1-5])$")
# the columns that name a setting in the corruption tables: no eval_id, the label metrics
# are the same in every post-hoc stage
BY = ("dataset", "setting_id", "model", "method")
# a table's own description of its corruption splits, when it has one
SPLIT_FIELDS = ("corruption", "severity", "corruption_source")


def _label_rows(table: pd.DataFrame, metric: str, by: Sequence[str]) -> pd.DataFrame:
    # only the columns read here are taken (a take per arrow-backed column of the table)
    wanted = [*by, "run_id", "split", "split_role", "value", *SPLIT_FIELDS]
    columns = [c for c in dict.fromkeys(wanted) if c in table]
    rows = table.loc[(table["metric"] == metric) & overall(table), columns]
    # one row per run and split: label metrics repeat in each post-hoc stage (eval_id)
    return rows.drop_duplicates(["run_id", "split"])


def corruption_errors(
    table: pd.DataFrame, metric: str = "accuracy", by: Sequence[str] = BY
) -> pd.DataFrame:
    """Error per setting, corruption and severity, averaged over the setting's runs: columns
    *by, corruption, severity, generated, error, n_runs."""
    rows = _label_rows(table, metric, by)
    if {"corruption", "severity"} <= set(rows.columns):
        parsed = rows.assign(
            generated=rows.get("corruption_source", pd.Series("", index=rows.index)).eq("generated")
        )
    else:
        # parsed once per split name, not once per row
        names = rows["split"].drop_duplicates()
        match = names.str.extract(SPLIT_PATTERN).set_axis(names.to_numpy())
        match = match.reindex(rows["split"].to_numpy()).set_axis(rows.index)
        parsed = rows.assign(
            corruption=match["corruption"],
            severity=pd.to_numeric(match["severity"]),
            generated=match["generated"].notna(),
        )
    parsed = parsed.dropna(subset=["corruption", "severity"])
    parsed = parsed.assign(error=1.0 - parsed["value"].astype(float))
    keys = [*by, "corruption", "severity", "generated"]
    out = parsed.groupby(keys, as_index=False).agg(
        error=("error", "mean"), n_runs=("run_id", "nunique")
    )
    return out.astype({"severity": int})


def clean_errors(
    table: pd.DataFrame, metric: str = "accuracy", by: Sequence[str] = BY
) -> pd.DataFrame:
    """Error on the ID test split(s) per setting (mean over runs): columns *by, clean_error."""
    rows = _label_rows(table, metric, by)
    rows = rows[rows["split_role"] == "id_test"]
    return (
        rows.assign(clean_error=1.0 - rows["value"].astype(float))
        .groupby(list(by), as_index=False)["clean_error"]
        .mean()
    )


def summarize(errors: pd.DataFrame, by: Sequence[str] = BY) -> dict[str, pd.DataFrame]:
    """Means of corruption_errors(): per corruption (over severities), per severity (over
    corruptions), and overall (over both)."""
    keys = [*by, "generated"]
    return {
        "per_corruption": errors.groupby([*keys, "corruption"], as_index=False)["error"].mean(),
        "per_severity": errors.groupby([*keys, "severity"], as_index=False)["error"].mean(),
        "mean": errors.groupby(keys, as_index=False).agg(
            error=("error", "mean"), corruptions=("corruption", "nunique")
        ),
    }


def _reference_rows(
    errors: pd.DataFrame, clean: pd.DataFrame, reference: str, dataset: str
) -> tuple[pd.DataFrame, float]:
    """(error per corruption, severity and source; clean error) of the reference: a model
    name or setting_id whose rows are in the table, on the same dataset."""
    mine = errors[errors["dataset"] == dataset]
    hits = mine[(mine["model"] == reference) | (mine["setting_id"] == reference)]
    settings = hits["setting_id"].unique()
    if len(settings) == 0:
        raise ValueError(
            f"reference {reference!r}: no corruption rows of that model or setting on dataset "
            f"{dataset!r}; models there: {sorted(mine['model'].unique())}"
        )
    if len(settings) > 1:
        raise ValueError(
            f"reference {reference!r} names {len(settings)} settings on {dataset!r} "
            f"({sorted(settings)}); name one setting_id"
        )
    ref = hits[["corruption", "severity", "generated", "error"]]
    ref_clean = clean.loc[clean["setting_id"] == settings[0], "clean_error"]
    return ref.rename(columns={"error": "reference_error"}), (
        float(ref_clean.mean()) if len(ref_clean) else float("nan")
    )


def _alexnet_rows(part: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, float]:
    """AlexNet's published errors are means over the 5 severities: a corruption enters only
    with all 5 severities, each compared with that mean (so Σ_s over 5 matches)."""
    if part["generated"].any():
        raise ValueError(
            "reference alexnet: its errors are on the released ImageNet-C files; dataset "
            f"{dataset!r} has generated corruption splits (gen-...), which must be compared "
            "with a reference model evaluated on the same sets"
        )
    severities = part.groupby("corruption")["severity"].apply(lambda s: sorted(set(s)))
    partial = sorted(c for c, sev in severities.items() if sev != [1, 2, 3, 4, 5])
    if partial:
        raise ValueError(
            f"reference alexnet: corruptions {partial} of {dataset!r} lack some of severities "
            "1..5; AlexNet's published errors are means over all five"
        )
    ref = pd.DataFrame(
        [
            {"corruption": c, "severity": s, "generated": False, "reference_error": e}
            for c, e in ALEXNET_IMAGENET_C_ERRORS.items()
            for s in range(1, 6)
        ]
    )
    return ref, ALEXNET_IMAGENET_CLEAN_ERROR


def mce(
    table: pd.DataFrame,
    reference: str,
    metric: str = "accuracy",
    corruptions: Sequence[str] = STANDARD_CORRUPTIONS,
    by: Sequence[str] = BY,
) -> pd.DataFrame:
    """mCE and relative mCE of every setting against a reference, per corruption source:
    columns *by, generated, reference, mce, relative_mce, corruptions (how many entered),
    complete (every one of `corruptions` entered), and CE_<corruption> for each.

    reference: 'alexnet' (the published ImageNet-C errors; released files only) or a model
    name / setting_id present in the table on the same dataset. Only (corruption, severity)
    pairs both have enter the sums."""
    errors = corruption_errors(table, metric, by)
    errors = errors[errors["corruption"].isin(list(corruptions))]
    clean = clean_errors(table, metric, by)
    results = []
    for dataset, part in errors.groupby("dataset"):
        if reference == "alexnet":
            ref, ref_clean = _alexnet_rows(part, dataset)
        else:
            ref, ref_clean = _reference_rows(errors, clean, reference, dataset)
        joined = part.merge(ref, on=["corruption", "severity", "generated"], how="inner")
        joined = joined.merge(clean, on=list(by), how="left")
        for keys, setting in joined.groupby([*by, "generated"]):
            sums = setting.groupby("corruption").agg(
                error=("error", "sum"),
                reference_error=("reference_error", "sum"),
                severities=("severity", "count"),
                clean_error=("clean_error", "first"),
            )
            ce = sums["error"] / sums["reference_error"]
            relative = (sums["error"] - sums["severities"] * sums["clean_error"]) / (
                sums["reference_error"] - sums["severities"] * ref_clean
            )
            row = dict(zip([*by, "generated"], keys, strict=True))
            row.update(
                reference=reference,
                mce=float(ce.mean()),
                relative_mce=float(relative.mean()),
                corruptions=len(ce),
                complete=set(corruptions) <= set(ce.index),
            )
            row.update({f"CE_{c}": float(v) for c, v in ce.items()})
            results.append(row)
    return pd.DataFrame(results)


def corruption_tables(table: pd.DataFrame, reference: str | None = None) -> dict[str, pd.DataFrame]:
    """Accuracy per severity (mean over corruptions) and overall per setting, and mCE against
    `reference` when one is named: the leaderboard's corruption section; {} without
    corruption splits."""
    by = ["dataset", "model", "method", "setting_id"]
    errors = corruption_errors(table, by=by)
    if errors.empty:
        return {}
    parts = summarize(errors, by)
    out = {"per_severity": parts["per_severity"], "mean": parts["mean"]}
    if reference:
        out["mce"] = mce(table, reference, by=by)
    return out
