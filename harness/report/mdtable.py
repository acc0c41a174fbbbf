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


def _simple(cells: list[str], empty: bool = False) -> bool:
    """Cells tabulate pads as they are; an empty cell only where `empty` (body cells: an
    empty header is left to tabulate)."""
    return all(
        (c or empty)
        and c == c.strip()
        and "\x1b" not in c
        and "\n" not in c
        and (c.isascii() or wcswidth(c) >= 0)
        for c in cells
    )


def _narrow(joined: str) -> bool:
    """Every cell of a column (joined) is as wide as it is long, as tabulate measures it:
    ASCII (measured by len), or no character other than printable ones one column wide (a
    sequence can be wider only through a zero-width or wide character)."""
    if joined.isascii():
        return True
    return all(ch.isprintable() and (ch.isascii() or wcswidth(ch) == 1) for ch in set(joined))


def _simple_narrow(cells: list[str], joined: str) -> bool:
    """_simple of a _narrow column, a column at a time (C loops, not a generator per cell)."""
    return (
        "\x1b" not in joined
        and "\n" not in joined
        and all(map(str.__eq__, cells, map(str.strip, cells)))
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """`frame.to_markdown(index=False, disable_numparse=True)`, faster: every column is left
    aligned (no number is parsed), each cell padded to its column's widest cell or header."""
    headers = [str(c) for c in frame.columns]
    columns, narrow = [], []
    for name in frame.columns:
        column = frame[name]
        if not (pd.api.types.is_string_dtype(column) or pd.api.types.is_integer_dtype(column)):
            return frame.to_markdown(index=False, disable_numparse=True)
        if pd.api.types.is_bool_dtype(column) or column.isna().any():
            return frame.to_markdown(index=False, disable_numparse=True)
        # a string column's values are str already (no missing ones: checked above)
        strings = isinstance(column.dtype, pd.StringDtype)
        cells = column.tolist() if strings else [str(v) for v in column.tolist()]
        joined = "".join(cells)
        narrow.append(_narrow(joined))
        if not (_simple_narrow(cells, joined) if narrow[-1] else _simple(cells, empty=True)):
            return frame.to_markdown(index=False, disable_numparse=True)
        columns.append(cells)
    if not columns or not columns[0] or not _simple(headers):
        return frame.to_markdown(index=False, disable_numparse=True)
    widths = [
        max(_width(h) + MIN_PADDING, max(map(len if n else _width, cells)))
        for h, cells, n in zip(headers, columns, narrow, strict=True)
    ]

    def padded(cells: list[str], width: int, narrow: bool) -> list[str]:
        if narrow:  # width = length
            return [c.ljust(width) for c in cells]
        return [c + " " * (width - _width(c)) for c in cells]

    rule = "|" + "|".join(":" + "-" * (w + 1) for w in widths) + "|"
    header = "| " + " | ".join(
        padded([h], w, _narrow(h))[0] for h, w in zip(headers, widths, strict=True)
    )
    header += " |"
    body = zip(
        *(padded(c, w, n) for c, w, n in zip(columns, widths, narrow, strict=True)), strict=True
    )
    return "\n".join([header, rule, *("| " + " | ".join(row) + " |" for row in body)])
