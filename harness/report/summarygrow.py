"""A changed dataset's summary piece grown from its previous one (issue 23, "The store":
the tables after one new run): when the dataset's stages are the previous piece's plus some
new ones, only the settings of the new stages' runs are aggregated again, from their rows;
the previous piece's other groups are kept, and the whole is put in the order of each
group's first row in the table now (its stage + offset, harness/report/partcache.py).

Exact, not approximate: `aggregate` computes each group (setting_id x eval_id x ROW_KEY)
from that group's rows alone, in their table order, which a setting's rows keep when they
are selected; the groups come out in the order of their first rows, which is the order
the stage + offset positions give. Anything else (a stage gone or rewritten, other code,
dtypes that differ) returns None: the dataset is aggregated whole, as before.

The previous piece is found through leaderboard/.pages.json ({dataset: key}); its
stages.json holds its stage lines (harness/report/increment.py's stage_lines), meta.json the
code digest it was computed under (harness/report/partfiles.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from harness.report.partfiles import Pieces


def grown(
    previous: Pieces | None,
    lines: list[str] | None,
    code: str,
    rows: pd.DataFrame,
    staged: Callable[[pd.DataFrame], pd.DataFrame],
) -> pd.DataFrame | None:
    """The dataset's summary groups (with their stage and offset columns, in no order:
    partcache.in_order puts them in the table's) from `previous` (its pieces and meta, as
    partfiles.load gives them) and `staged` (partcache's aggregation with stages) of the
    rows of the settings the new stages touch; None when that cannot give the whole
    computation's groups."""
    if previous is None or lines is None or "summary" not in previous[0]:
        return None
    frames, meta = previous
    old = meta.get("stages")
    if meta.get("code") != code or not isinstance(old, list):
        return None
    held = set(old)
    if not held <= set(lines):  # a stage gone or rewritten: its groups' numbers changed
        return None
    added = {line.split(" ", 1)[0].split("/", 1)[0] for line in lines if line not in held}
    if not added:
        return None
    touched = rows["run_id"].isin(added).to_numpy(dtype=bool)
    settings = rows["setting_id"][touched].unique()
    piece = staged(rows[rows["setting_id"].isin(settings).to_numpy(dtype=bool)])
    before = frames["summary"]
    kept = before[~before["setting_id"].isin(settings).to_numpy(dtype=bool)]
    if list(kept.columns) != list(piece.columns):
        return None
    if not (len(kept) and len(piece)):
        return (piece if len(piece) else kept).reset_index(drop=True)
    if list(kept.dtypes.astype(str)) != list(piece.dtypes.astype(str)):
        return None
    return pd.concat([kept, piece], ignore_index=True)
