"""The built-in sections of the leaderboard page (harness/report/sections.py): the headline,
the interactive plots, every label metric, the scorers by kind (OOD detection, error
detection, selective prediction, calibration, accuracy estimation), corruptions, model
selection, paired comparisons, failed runs and, last, every number."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from harness.report.sections import Section, SectionContext, register_section

CALIBRATION_METRICS = ("ece", "ece_adaptive", "nll", "brier")


def _ood(agg: pd.DataFrame) -> pd.Series:
    metric = agg["metric"].astype(str)
    return (agg["scorer"] != "") & (metric.str.contains("_vs_") | metric.str.startswith("ccr@"))


def _error_detection(agg: pd.DataFrame) -> pd.Series:
    return (agg["scorer"] != "") & agg["metric"].astype(str).str.startswith("auroc_error")


def _selective(agg: pd.DataFrame) -> pd.Series:
    metric = agg["metric"].astype(str)
    return (agg["scorer"] != "") & (metric.str.startswith(("aurc", "e_aurc", "accuracy@", "risk@")))


def _scorers_with(agg: pd.DataFrame, metrics: tuple[str, ...]) -> set[str]:
    return set(agg.loc[agg["metric"].isin(metrics) & (agg["scorer"] != ""), "scorer"])


def _calibration(agg: pd.DataFrame) -> pd.Series:
    # the model's own calibration numbers, every calibrator's rows (its accuracy, NLL, ECE and
    # fitted parameters: a calibrator is a scorer with an ECE row), conformal sets
    calibrators = _scorers_with(agg, ("ece",)) - _scorers_with(agg, ("estimated_accuracy",))
    metric = agg["metric"].astype(str)
    return (
        metric.isin(CALIBRATION_METRICS) & (agg["scorer"] == "")
        | agg["scorer"].isin(calibrators)
        | metric.str.startswith("conformal_")
    )


def _estimation(agg: pd.DataFrame) -> pd.Series:
    return agg["scorer"].isin(_scorers_with(agg, ("estimated_accuracy",)))


def _label_metrics(agg: pd.DataFrame) -> pd.Series:
    return agg["scorer"] == ""


def _everything(agg: pd.DataFrame) -> pd.Series:
    return pd.Series(True, index=agg.index)


def _headline(ctx: SectionContext) -> str:
    return headline_html(ctx.dataset, ctx.headline)


def headline_html(dataset: str, h: Any) -> str:
    """A dataset's headline (harness/report/headline.py) as a static table, id headline-<dataset>;
    each cell's title says how many seeds and how its interval was made."""
    if h is None:
        return ""
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in h.table.columns)
    # plain lists, not iterrows and .iat per cell (0.3 s for 2,000 settings)
    columns = [str(c) for c in h.table.columns]
    values = h.table.astype(object).to_numpy().tolist()
    titles = h.titles.astype(object).to_numpy().tolist()
    body = "".join(
        "<tr>"
        + "".join(
            f'<td title="{html.escape(str(t))}">'
            + (
                f'<span class="badge {html.escape(str(v))}">{html.escape(str(v))}</span>'
                if c == "verdict" and v
                else html.escape(str(v))
            )
            + "</td>"
            for c, v, t in zip(columns, row, title_row, strict=True)
        )
        + "</tr>"
        for row, title_row in zip(values, titles, strict=True)
    )
    return (
        f'<p class="what">{html.escape(h.caption)}</p>\n'
        f'<table class="headline" id="headline-{html.escape(dataset)}"><thead><tr>{header}'
        f"</tr></thead><tbody>{body}</tbody></table>\n"
    )


def _figures(ctx: SectionContext) -> list:
    from harness.report.interactive import dataset_figures

    return dataset_figures(ctx.table, ctx.agg) if ctx.table is not None else []


def _short(frame: pd.DataFrame) -> pd.DataFrame:
    if "setting_id" in frame:
        frame = frame.assign(setting_id=frame["setting_id"].astype(str).str[:8])
    return frame


def _of(frame: pd.DataFrame | None, dataset: str) -> pd.DataFrame | None:
    if frame is None or frame.empty or "dataset" not in frame:
        return None
    return _short(frame[frame["dataset"] == dataset].drop(columns="dataset"))


def _corruptions(ctx: SectionContext) -> pd.DataFrame | None:
    sev = ctx.corruptions.get("per_severity")
    sev = _of(sev, ctx.dataset)
    if sev is None or sev.empty:
        return None
    return sev.assign(accuracy=1 - sev["error"])


def _selection(ctx: SectionContext) -> pd.DataFrame | None:
    sel = _of(ctx.selected, ctx.dataset)
    if sel is None or sel.empty or sel["settings"].max() < 2:  # nothing was chosen between
        return None
    return sel


def _comparisons(ctx: SectionContext) -> pd.DataFrame | None:
    return _of(ctx.comparisons, ctx.dataset)


def _scorer_comparisons(ctx: SectionContext) -> pd.DataFrame | None:
    return _of(ctx.scorer_comparisons, ctx.dataset)


def _failures(ctx: SectionContext) -> pd.DataFrame | None:
    return _of(ctx.failures, ctx.dataset)


for _section in (
    Section("headline", "Headline", 0, html=_headline, folded=False, heading=False),
    Section(
        "plots",
        "Plots (hover a point for its setting and seed)",
        10,
        figures=_figures,
        folded=False,
    ),
    Section(
        "metrics",
        "Every metric of the models' own predictions",
        20,
        rows=_label_metrics,
        plots=("bars_*", "seed_spread_*", "accuracy_on_the_line", "accuracy_on_the_curve"),
        filters=("model", "method", "metric", "split"),
    ),
    Section("ood", "Scorers: OOD detection", 30, rows=_ood),
    Section("error_detection", "Scorers: error detection", 40, rows=_error_detection),
    Section(
        "selective", "Scorers: selective prediction", 50, rows=_selective, plots=("risk_coverage",)
    ),
    Section(
        "calibration",
        "Calibration (the models' own and each calibrator's) and conformal sets",
        60,
        rows=_calibration,
        plots=("reliability", "reliability_per_setting"),
    ),
    Section("estimation", "Accuracy estimation without labels", 70, rows=_estimation),
    Section(
        "corruptions",
        "Corruptions: accuracy per severity (mean over corruptions)",
        80,
        table=_corruptions,
        plots=("severity_curves",),
        filters=("model", "method", "severity"),
    ),
    Section(
        "selection",
        "Model selection across hyperparameters",
        90,
        table=_selection,
        filters=("model", "method"),
    ),
    Section(
        "comparisons",
        "Accuracy compared with the baseline (paired)",
        100,
        table=_comparisons,
        filters=("model", "method", "split", "verdict"),
    ),
    Section(
        "scorer_comparisons",
        "Scorers compared with the baseline scorer (AUROC difference)",
        110,
        table=_scorer_comparisons,
        filters=("model", "method", "scorer", "metric", "split", "verdict"),
    ),
    Section("failed", "Failed runs", 120, table=_failures, filters=("model", "method", "seed")),
    Section(
        "all",
        "Every number (filter, sort, download; summary.csv)",
        1000,
        rows=_everything,
    ),
):
    register_section(_section, replace=True)  # a reload of this module re-registers them
