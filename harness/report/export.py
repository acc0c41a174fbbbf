"""Paper tables from the tidy table: LaTeX (booktabs), Markdown or CSV (the command:
`python -m harness.export`).

Cells are mean ± sample standard deviation (ddof=1) over the seeds of one setting; the best
entry of each column is bold (the lowest for metrics where lower is better). Reads
`<results_dir>/table.parquet` (written by `python -m harness.leaderboard` and at the end of
every sweep), or collects the runs when it is missing. Never runs a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.aggregate import LOWER_IS_BETTER, aggregate, metric_rows, split_order
from harness.report.mdtable import markdown_table
from harness.selection import LABELS, apply_selection
from harness.table import collect_current

FORMATS = ("latex", "markdown", "csv")
AXES = ("dataset", "model", "method", "tta", "setting_id", "eval_id", "split", "metric", "scorer")


def load_table(results_dir: str | Path) -> pd.DataFrame:
    """The tidy table: table.parquet when present, else the consolidated store when it is
    current (harness/table.py's collect_current), else every run directory."""
    path = Path(results_dir) / "table.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    table, _ = collect_current(results_dir)
    return table


def paper_frame(
    table: pd.DataFrame,
    rows: list[str],
    columns: str = "split",
    metric: str | list[str] = "accuracy",
    scorer: str = "",
    splits: list[str] | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """The aggregated numbers of one paper table, long: rows, column, mean, std, n_seeds,
    ci_low, ci_high. Refuses (naming the entries) when two settings would share a cell: pick
    one with model selection or add setting_id to the rows."""
    for axis in [*rows, columns]:
        if axis not in AXES:
            raise ValueError(f"export: {axis!r} is not a table axis; axes are {AXES}")
    if columns in rows:
        raise ValueError(f"export: {columns!r} is both a row and the column axis")
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if dataset is not None:
        table = table[table["dataset"] == dataset]
        if table.empty:
            raise ValueError(f"export: no rows for dataset {dataset!r}")
    elif table["dataset"].nunique() > 1 and "dataset" not in [*rows, columns]:
        raise ValueError(
            f"export: the table holds datasets {sorted(table['dataset'].unique())}; name one "
            "with dataset=NAME or put dataset in rows"
        )
    sel = metric_rows(table, metrics, scorer)
    if splits:
        unknown = sorted(set(splits) - set(sel["split"]))
        if unknown:
            raise ValueError(f"export: no {metrics} rows for split(s) {unknown}")
        sel = sel[sel["split"].isin(splits)]
    if sel.empty:
        raise ValueError(
            f"export: no rows with metric {metrics}, scorer {scorer!r}; metrics present: "
            f"{sorted(table['metric'].unique())}"
        )
    agg = aggregate(sel)
    cell = [*rows, columns]
    dup = agg[agg.duplicated(cell, keep=False)]
    if not dup.empty:
        shown = dup[[*cell, "setting_id"]].drop_duplicates().head(6).to_string(index=False)
        raise ValueError(
            "export: several settings share a cell (hyperparameter settings or eval configs); "
            f"use model_selection=... or add setting_id to rows:\n{shown}"
        )
    out = agg[[*cell, "mean", "std", "n_seeds", "ci_low", "ci_high"]].rename(
        columns={columns: "column"}
    )
    order = split_order(agg) if columns == "split" else list(dict.fromkeys(out["column"]))
    if splits and columns == "split":
        order = list(splits)
    out["column"] = pd.Categorical(out["column"], categories=order, ordered=True)
    return out.sort_values([*rows, "column"]).reset_index(drop=True)


def _best_mask(means: pd.DataFrame, columns: str, metric: str | list[str]) -> pd.DataFrame:
    def lower(col: str) -> bool:
        name = col if columns == "metric" else (metric if isinstance(metric, str) else "")
        return name in LOWER_IS_BETTER

    mask = pd.DataFrame(False, index=means.index, columns=means.columns)
    for col in means.columns:
        values = means[col]
        if values.notna().any():
            best = values.min() if lower(col) else values.max()
            mask[col] = (values == best) & values.notna()
    return mask


def render(
    frame: pd.DataFrame,
    rows: list[str],
    fmt: str,
    precision: int = 3,
    columns: str = "split",
    metric: str | list[str] = "accuracy",
    caption: str | None = None,
) -> str:
    """The table as LaTeX (pandas Styler, booktabs rules, bold best), Markdown or CSV."""
    if fmt not in FORMATS:
        raise ValueError(f"export: format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "csv":
        return frame.rename(columns={"column": columns}).to_csv(index=False)
    means = frame.pivot(index=rows, columns="column", values="mean")
    plus_minus = r" $\pm$ " if fmt == "latex" else " ± "
    cells = pd.DataFrame(
        [
            [_cell(frame, rows, idx, col, precision, plus_minus) for col in means.columns]
            for idx in means.index
        ],
        index=means.index,
        columns=[str(c) for c in means.columns],
    )
    bold = _best_mask(means, columns, metric)
    bold.columns = cells.columns
    if fmt == "markdown":
        shown = cells.where(~bold, "**" + cells + "**")
        return markdown_table(shown.reset_index()) + "\n"
    # Row labels become ordinary columns so the header is one line; they are escaped for
    # LaTeX, the numbers (which carry $\pm$) are not.
    labels = cells.index.to_frame(index=False).astype(str)
    wide = pd.concat([labels, cells.reset_index(drop=True)], axis=1)
    bold_wide = pd.concat(
        [
            pd.DataFrame(False, index=labels.index, columns=labels.columns),
            bold.reset_index(drop=True),
        ],
        axis=1,
    )
    styler = wide.style.hide(axis="index")
    styler = styler.apply(
        lambda col: ["font-weight: bold" if b else "" for b in bold_wide[col.name]], axis=0
    )
    styler = styler.format(escape="latex", subset=list(labels.columns))
    styler = styler.format_index(escape="latex", axis=1)
    return styler.to_latex(
        hrules=True,
        convert_css=True,
        caption=caption,
        column_format="l" * len(rows) + "r" * cells.shape[1],
    )


def _cell(
    frame: pd.DataFrame, rows: list[str], idx, col, precision: int, plus_minus: str = " ± "
) -> str:
    key = idx if isinstance(idx, tuple) else (idx,)
    hit = frame[(frame["column"] == col)]
    for name, value in zip(rows, key, strict=True):
        hit = hit[hit[name] == value]
    if hit.empty:
        return "–"
    r = hit.iloc[0]
    if r["n_seeds"] > 1 and np.isfinite(r["std"]):
        return f"{r['mean']:.{precision}f}{plus_minus}{r['std']:.{precision}f}"
    return f"{r['mean']:.{precision}f}"


def caption_for(
    frame: pd.DataFrame, metric: str | list[str], selection: str | None, precision: int
) -> str:
    seeds = sorted(frame["n_seeds"].unique())
    names = (metric if isinstance(metric, str) else ", ".join(metric)).replace("_", r"\_")
    text = (
        f"{names}: mean $\\pm$ sample standard "
        f"deviation (ddof=1) over seeds (n = {', '.join(map(str, seeds))}); best in bold"
    )
    if selection:
        text += f"; model selection: {LABELS[selection]}"
    return text + "."


def export(
    table: pd.DataFrame,
    rows: list[str],
    columns: str = "split",
    metric: str | list[str] = "accuracy",
    fmt: str = "latex",
    precision: int = 3,
    scorer: str = "",
    splits: list[str] | None = None,
    dataset: str | None = None,
    model_selection: str | None = None,
    results_dir: str | Path | None = None,
) -> str:
    if model_selection:
        table = apply_selection(table, model_selection, results_dir)
    frame = paper_frame(table, rows, columns, metric, scorer, splits, dataset)
    caption = caption_for(frame, metric, model_selection, precision)
    return render(frame, rows, fmt, precision, columns, metric, caption)
