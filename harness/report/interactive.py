"""Interactive figures of the leaderboard page (plotly), where people would rather look than
read: accuracy on the line (one point per run) and the severity curves (one line per
setting with its 95% interval, one point per seed). Hovering a point says its setting and
seed. The page inlines plotly.js once (harness/report/page.py); the static PNG/PDF figures
of harness/report/plots.py stay for papers.

Colours and markers follow harness/report/palette.py, as the static figures do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from harness.report.aggregate import metric_rows, split_order
from harness.report.corruption import corruption_errors
from harness.report.palette import method_palette

PROBIT_TICKS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99]
EPS = 1e-3
MAX_PANELS = 6  # shifted splits shown on the line (the first ones in split order)
MAX_LINES = 20  # severity curves: the settings with the highest mean accuracy
PANEL = 360  # pixels per panel: fixed sizes, since sections may start folded (no width yet)


def _probit(p: np.ndarray | pd.Series) -> np.ndarray:
    return stats.norm.ppf(np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS))


def _hover(frame: pd.DataFrame) -> np.ndarray:
    # an array, not a list: plotly checks a list element by element (0.2 s at 10,000 runs)
    return np.array(
        [
            f"{m} / {me}<br>setting {str(s)[:8]}, seed {seed}"
            for m, me, s, seed in zip(
                *(frame[c].tolist() for c in ("model", "method", "setting_id", "seed")),
                strict=True,
            )
        ],
        dtype=object,
    )


def accuracy_on_the_line_figure(
    table: pd.DataFrame, palette: dict[str, dict[str, str]] | None = None
) -> go.Figure | None:
    """ID test accuracy vs each shifted split's accuracy, one point per run, probit axes
    labelled in accuracy, with the y = x line; at most MAX_PANELS shifted splits."""
    acc = metric_rows(table, "accuracy")
    id_acc = acc[acc["split_role"] == "id_test"].groupby("run_id")["value"].mean()
    shifted = acc[acc["split_role"] == "shift_test"]
    if id_acc.empty or shifted.empty:
        return None
    palette = palette or method_palette(table["method"])
    splits = split_order(shifted)[:MAX_PANELS]
    cols = min(len(splits), 3)
    rows = -(-len(splits) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=splits)
    ticks = np.array(PROBIT_TICKS)
    for k, split in enumerate(splits):
        s = shifted[shifted["split"] == split].set_index("run_id")
        s = s.join(id_acc.rename("id"), how="inner")
        r, c = k // cols + 1, k % cols + 1
        for method, m in s.groupby("method", sort=True):
            style = palette.get(str(method), {"color": "black", "symbol": "circle"})
            fig.add_trace(
                go.Scatter(
                    x=_probit(m["id"]).round(4),  # 4 digits: the page's size, not the look
                    y=_probit(m["value"]).round(4),
                    mode="markers",
                    name=str(method),
                    legendgroup=str(method),
                    showlegend=k == 0,
                    marker={"color": style["color"], "symbol": style["symbol"], "size": 7},
                    text=_hover(m),
                    customdata=np.stack([m["id"], m["value"]], axis=1).round(4),
                    hovertemplate="%{text}<br>ID %{customdata[0]:.3f}, "
                    + f"{split} %{{customdata[1]:.3f}}<extra></extra>",
                ),
                row=r,
                col=c,
            )
        lo, hi = (
            _probit(min(s["id"].min(), s["value"].min())),
            _probit(max(s["id"].max(), s["value"].max())),
        )
        fig.add_trace(
            go.Scatter(
                x=[lo, hi], y=[lo, hi], mode="lines", line={"color": "grey", "dash": "dot"},
                name="y = x", legendgroup="y = x", showlegend=k == 0, hoverinfo="skip",
            ),
            row=r,
            col=c,
        )  # fmt: skip
        shown = ticks[(_probit(ticks) >= lo - 0.3) & (_probit(ticks) <= hi + 0.3)]
        axis = {"tickvals": _probit(shown).tolist(), "ticktext": [f"{t:g}" for t in shown]}
        fig.update_xaxes(title_text="ID test accuracy (probit)", row=r, col=c, **axis)
        fig.update_yaxes(title_text=f"{split} accuracy", row=r, col=c, **axis)
    fig.update_layout(
        title="Accuracy on the line: one point per run (hover: setting and seed)",
        width=PANEL * cols + 160,
        height=PANEL * rows + 80,
        template="plotly_white",
    )
    return fig


def severity_figure(
    table: pd.DataFrame, palette: dict[str, dict[str, str]] | None = None
) -> go.Figure | None:
    """Accuracy vs corruption severity: per run the mean over corruptions at each severity
    (a point per seed), per setting the mean over seeds with a 95% t interval (error bars,
    clipped to [0, 1]; none for one seed). At most MAX_LINES settings, those with the highest mean accuracy;
    generated corruption sets are separate lines."""
    errors = corruption_errors(table, by=["model", "method", "setting_id", "run_id"])
    if errors.empty:
        return None
    seeds = table.drop_duplicates("run_id").set_index("run_id")["seed"]
    per_run = (
        errors.assign(accuracy=1 - errors["error"])
        .groupby(["model", "method", "setting_id", "generated", "run_id", "severity"])["accuracy"]
        .mean()
        .reset_index()
    )
    per_run["seed"] = per_run["run_id"].map(seeds)
    palette = palette or method_palette(table["method"])
    line_keys = ["model", "method", "setting_id", "generated"]
    best = per_run.groupby(line_keys)["accuracy"].mean().sort_values(ascending=False)
    kept = best.index[:MAX_LINES]
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    models = sorted(per_run["model"].unique())
    fig = go.Figure()
    for key in kept:
        # .loc[[key]], not .loc[key]: one matching row would come back as a Series
        runs = per_run.set_index(line_keys).loc[[key]].reset_index()
        model, method, setting, generated = key
        name = f"{model} / {method} {str(setting)[:8]}" + (" (generated)" if generated else "")
        style = palette.get(str(method), {"color": "black", "symbol": "circle"})
        curve = runs.groupby("severity")["accuracy"].agg(["mean", "std", "size"]).sort_index()
        half = stats.t.ppf(0.975, curve["size"] - 1) * curve["std"] / np.sqrt(curve["size"])
        # accuracy lies in [0, 1]: a t interval over few seeds is clipped there, as in summary.csv
        up = (np.minimum(curve["mean"] + half, 1) - curve["mean"]).fillna(0)
        down = (curve["mean"] - np.maximum(curve["mean"] - half, 0)).fillna(0)
        fig.add_trace(
            go.Scatter(
                x=curve.index, y=curve["mean"], mode="lines+markers", name=name,
                legendgroup=name,
                line={"color": style["color"], "dash": dashes[models.index(model) % len(dashes)]},
                marker={"symbol": style["symbol"]},
                error_y={"type": "data", "array": up.tolist(), "arrayminus": down.tolist(),
                         "visible": True},
                customdata=np.stack([curve["size"], half.fillna(np.nan)], axis=1),
                hovertemplate=f"{name}<br>severity %{{x}}: %{{y:.3f}} "
                "± %{customdata[1]:.3f} (%{customdata[0]} seeds)<extra></extra>",
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=runs["severity"], y=runs["accuracy"], mode="markers", legendgroup=name,
                showlegend=False, marker={"color": style["color"], "size": 4, "opacity": 0.5},
                text=_hover(runs.assign(setting_id=setting)),
                hovertemplate="%{text}<br>severity %{x}: %{y:.3f}<extra></extra>",
            )
        )  # fmt: skip
    shown = f" (best {len(kept)} of {len(best)} settings)" if len(best) > len(kept) else ""
    fig.update_layout(
        title=f"Accuracy under corruption: mean over seeds, 95% interval{shown}",
        xaxis_title="severity",
        yaxis_title="accuracy (mean over corruptions)",
        xaxis={"dtick": 1},
        width=2 * PANEL + 360,
        height=PANEL + 120,
        template="plotly_white",
    )
    return fig


def dataset_figures(table: pd.DataFrame, agg: pd.DataFrame | None = None) -> list[go.Figure]:
    """The interactive figures of one dataset's rows, with its one palette."""
    if table is None or table.empty:
        return []
    palette = method_palette(table["method"])
    figures = [accuracy_on_the_line_figure(table, palette), severity_figure(table, palette)]
    return [f for f in figures if f is not None]
