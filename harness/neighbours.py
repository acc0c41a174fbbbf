"""Rows that differ from the row before, on some arrow string columns: the store's rows come
stage after stage, run after run, so a drop_duplicates or nunique over a few columns of
5,000,000 rows sees the same values and first occurrences in the ~100,000 rows where one
of them changes, hashed instead of every row (issue 23, 100,000 runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def changes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    """Positions of the rows where one of `columns` differs from the row before (the first
    row always; a missing value counts as a change): each run of equal rows' first row, so
    every first occurrence of a combination, in order. None unless every column is held as
    an arrow string array (then the caller works on every row, as before)."""
    arrays = [getattr(frame[c].array, "_pa_array", None) for c in columns]
    if any(a is None or not (pa.types.is_string(a.type) or pa.types.is_large_string(a.type))
           for a in arrays):  # fmt: skip
        return None
    if len(frame) < 2:
        return np.arange(len(frame))
    change = np.zeros(len(frame) - 1, dtype=bool)
    for a in arrays:
        a = one_array(a)
        change |= pc.fill_null(pc.not_equal(a[1:], a[:-1]), True).to_numpy(zero_copy_only=False)
    return np.r_[0, np.flatnonzero(change) + 1]


def one_array(data: pa.Array | pa.ChunkedArray) -> pa.Array:
    """An arrow column as one array: its only chunk as it is (the store's table is one
    record batch; combine_chunks would copy 5,000,000 strings, 0.1 s a column)."""
    if isinstance(data, pa.ChunkedArray):
        return data.chunk(0) if data.num_chunks == 1 else data.combine_chunks()
    return data
