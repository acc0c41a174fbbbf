"""One method -> colour and marker mapping per dataset, shared by every plot of that dataset
(matplotlib and plotly alike), so that a method looks the same in the bars, the scatter
plots, the seed spread and the curves."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex

# matplotlib marker -> plotly symbol, in the order they are handed out (ten colours each)
MARKERS = {
    "o": "circle",
    "s": "square",
    "^": "triangle-up",
    "D": "diamond",
    "v": "triangle-down",
    "<": "triangle-left",
    ">": "triangle-right",
    "P": "cross",
    "X": "x",
    "*": "star",
}
HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++"]  # a model's bars, after its colour


def method_palette(methods: Iterable[str]) -> dict[str, dict[str, str]]:
    """method -> {"color": hex, "marker": matplotlib marker, "symbol": plotly symbol}: the
    methods sorted, ten tab10 colours, then the next marker with the same ten colours, so
    that more than ten methods stay distinguishable and the mapping depends only on the set
    of methods (every plot of a dataset gets the same one)."""
    tab10 = colormaps["tab10"]
    markers = list(MARKERS)
    out = {}
    if isinstance(methods, pd.Series):  # iterating a large arrow column is slow
        methods = methods.unique()
    for k, method in enumerate(sorted({str(m) for m in methods})):
        marker = markers[(k // 10) % len(markers)]
        out[method] = {
            "color": to_hex(tab10(k % 10)),
            "marker": marker,
            "symbol": MARKERS[marker],
        }
    return out


def model_hatches(models: Iterable[str]) -> dict[str, str]:
    """model -> a hatch pattern for bars (the colour says the method)."""
    return {m: HATCHES[k % len(HATCHES)] for k, m in enumerate(sorted({str(m) for m in models}))}
