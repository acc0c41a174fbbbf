"""Layout helpers shared by the leaderboard's matplotlib figures (harness/report/plots.py,
harness/report/reliability.py): a grid of panels, one legend below them, a method's style."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def grid(
    n: int, width: float = 4.0, height: float = 3.6, sharey: bool = False
) -> tuple[Figure, list]:
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def figure_legend(fig: Figure, axes: list) -> None:
    """One legend for all panels (the same methods in each): drawing one per panel cost more
    than the points with many methods. Legends are placed explicitly throughout: matplotlib's
    loc="best" searches every position against every artist (0.3 s for one bar chart)."""
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        ncol = min(len(handles), 6)
        rows = -(-len(handles) // ncol)
        fig.set_figheight(fig.get_figheight() + 0.25 * rows + 0.2)  # room below the panels
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=ncol)


MARKERS = "os^Dv<>PX*"


def style(k: int) -> dict[str, str]:
    """Colour and marker of the k-th method: ten colours, then the next marker, so that
    more than ten methods stay distinguishable."""
    return {"color": f"C{k % 10}", "marker": MARKERS[(k // 10) % len(MARKERS)]}


def method_style(palette: dict[str, dict[str, str]], method: str) -> dict[str, str]:
    """matplotlib's color and marker of `method` in the dataset's palette
    (harness/report/palette.py)."""
    entry = palette.get(str(method), {"color": "black", "marker": "o"})
    return {"color": entry["color"], "marker": entry["marker"]}
