"""A Markdown (pipe) table of display strings, byte for byte what pandas' `to_markdown(index=
False, disable_numparse=True)` (tabulate) writes, at a fraction of its cost: tabulate types
and formats every cell in Python (~1 s of the leaderboard's tables at 10,000 runs, 2,000
settings per dataset; docs/benchmarks.md). Frames outside the simple case (a cell that is
not text or an integer, a missing value, a line break, an escape code, surrounding blanks,
a character of no defined width) go to tabulate itself."""

from __future__ import annotations

import pandas as pd
import tabulate

# tabulate measures text with wcwidth when it is installed, else with len: the same here
wcswidth = tabulate.wcwidth.wcswidth if tabulate.WIDE_CHARS_MODE else len

MIN_PADDING = 2  # tabulate.MIN_PADDING: a header is at least this much narrower than its column


def _width(text: str) -> int:
    """The displayed width, as tabulate measures it (wcwidth when the text is not ASCII)."""
    return len(text) if text.isascii() else wcswidth(text)


def _simple(cells: list[str]) -> bool:
    return all(
        c
        and c == c.strip()
        and "\x1b" not in c
        and "\n" not in c
        and (c.isascii() or wcswidth(c) >= 0)
        for c in cells
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """`frame.to_markdown(index=False, disable_numparse=True)`, faster: every column is left
    aligned (no number is parsed), each cell padded to its column's widest cell or header."""
    headers = [str(c) for c in frame.columns]
    columns = []
    for name in frame.columns:
        column = frame[name]
        if not (pd.api.types.is_string_dtype(column) or pd.api.types.is_integer_dtype(column)):
            return frame.to_markdown(index=False, disable_numparse=True)
        if pd.api.types.is_bool_dtype(column) or column.isna().any():
            return frame.to_markdown(index=False, disable_numparse=True)
        cells = [str(v) for v in column.tolist()]
        if not _simple(cells):
            return frame.to_markdown(index=False, disable_numparse=True)
        columns.append(cells)
    if not columns or not columns[0] or not _simple(headers):
        return frame.to_markdown(index=False, disable_numparse=True)
    widths = [
        max(_width(h) + MIN_PADDING, *(_width(c) for c in cells))
        for h, cells in zip(headers, columns, strict=True)
    ]

    def padded(cells: list[str], width: int) -> list[str]:
        if all(c.isascii() for c in cells):
            return [c.ljust(width) for c in cells]
        return [c + " " * (width - _width(c)) for c in cells]

    rule = "|" + "|".join(":" + "-" * (w + 1) for w in widths) + "|"
    header = "| " + " | ".join(padded([h], w)[0] for h, w in zip(headers, widths, strict=True))
    header += " |"
    body = zip(*(padded(c, w) for c, w in zip(columns, widths, strict=True)), strict=True)
    return "\n".join([header, rule, *("| " + " | ".join(row) + " |" for row in body)])
