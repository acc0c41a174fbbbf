"""Which datasets' pages can be left as they are after new runs (issue 23, "The store"): a
dataset's Markdown page depends only on its own rows (every table on it is computed per
dataset: aggregates per setting, comparisons and their p-value families per dataset x model
x eval config, selection per search) and on the leaderboard's options. Its key: the store's
stages of that dataset with their DONE identities, the options, the harness's files and
the numeric libraries' versions; kept in leaderboard/.pages.json. A page whose key is unchanged is neither computed
nor written again (its mtime and inode stay). The same keys name each dataset's derived
frames in leaderboard/.parts/ (harness/report/partcache.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness import rowstore
from harness.store import atomic_write_text

PAGES_FILE = ".pages.json"


def _code_key() -> str:
    """The harness's files (size and mtime; ~60 stats) and the numeric libraries' versions:
    a changed renderer, statistic or formatting makes every page again."""
    import numpy
    import scipy

    harness = Path(__file__).resolve().parent.parent
    files = sorted([*harness.glob("*.py"), *harness.glob("report/*.py")])
    stats = [(str(p.relative_to(harness)), *_size_and_mtime(p)) for p in files]
    return repr((stats, pd.__version__, numpy.__version__, scipy.__version__))


def _size_and_mtime(path: Path) -> tuple[int, int]:
    found = path.stat()  # (one stat, not one per field)
    return found.st_size, found.st_mtime_ns


def stage_lines(root: Path, table: pd.DataFrame) -> dict[str, list[str]]:
    """{dataset: its store stages as "<stage key> <identity> <rows>" lines, in key order};
    empty when the store cannot say which stages are whose (no generation)."""
    gen = rowstore.load_generation(root)
    if gen is None or table.empty:
        return {}
    dataset_of = _dataset_of_runs(table)
    fast = _lines_of_index(gen, dataset_of)
    if fast is not None:
        return fast
    per: dict[str, list[str]] = {}
    for key, (identity, _, rows) in sorted(gen.stages.items()):
        dataset = dataset_of.get(key.split("/", 1)[0])
        if dataset is not None:
            per.setdefault(str(dataset), []).append(f"{key} {identity} {rows}")
    return per


def _lines_of_index(
    gen: rowstore.Generation, dataset_of: dict[str, Any]
) -> dict[str, list[str]] | None:
    """stage_lines' result from the index's columns in arrow (the loop over 10,000 stages'
    tuples and f-strings cost 0.03 s): the same lines, "<key> (<mtime>, <size>) <rows>", in
    key order (UTF-8 byte order is code point order, Python's). None where the index is not
    plain (a null, a repeated key): the loop decides."""
    index = gen.index
    if index.num_rows != len(gen.stages) or any(
        index[c].null_count for c in rowstore.INDEX_COLUMNS
    ):
        return None
    text = pa.large_string()
    keys = rowstore.row_keys(index)
    number = [index[c].cast(text) for c in ("done_mtime_ns", "done_size", "rows")]
    parts = [" (", number[0], ", ", number[1], ") ", number[2]]
    lines = pc.binary_join_element_wise(
        keys, *(pa.scalar(p, text) if isinstance(p, str) else p for p in parts), pa.scalar("", text)
    )
    runs = pa.array(list(dataset_of), text)
    found = pc.index_in(index["run_id"].cast(text), value_set=runs)
    datasets = pa.array(list(dataset_of.values())).take(found)
    order = pc.sort_indices(keys)
    per: dict[str, list[str]] = {}
    for line, dataset in zip(
        lines.take(order).to_pylist(), datasets.take(order).to_pylist(), strict=True
    ):
        if dataset is not None:
            per.setdefault(str(dataset), []).append(line)
    return per


def page_keys(
    root: Path,
    table: pd.DataFrame,
    options: dict[str, Any],
    lines: dict[str, list[str]] | None = None,
    code: str | None = None,
) -> dict[str, str]:
    """{dataset: key of its page}; empty when the store cannot say which stages are whose
    (no generation: every page is made). lines: stage_lines(root, table), when at hand;
    code: code_key(), when at hand."""
    per = stage_lines(root, table) if lines is None else lines
    common = json.dumps(options, sort_keys=True, default=repr) + (code or code_key())
    return {
        dataset: hashlib.sha256(("\n".join(held) + common).encode()).hexdigest()
        for dataset, held in per.items()
    }


def code_key() -> str:
    """A digest of the harness's files and the numeric libraries' versions (_code_key)."""
    return hashlib.sha256(_code_key().encode()).hexdigest()


def _dataset_of_runs(table: pd.DataFrame) -> dict[str, Any]:
    """{run_id: the dataset of its first row}, from the rows where run_id changes (a run's
    rows are contiguous in the store's order; were they not, the first row still wins):
    drop_duplicates over 500,000 rows cost 0.04-0.1 s, this 0.01 s."""
    run, dataset = pa.array(table["run_id"]), pa.array(table["dataset"])
    change = pc.not_equal(run[1:], run[:-1]).to_numpy(zero_copy_only=False)
    starts = pa.array(np.r_[0, np.flatnonzero(change) + 1])
    runs, datasets = run.take(starts).to_pylist(), dataset.take(starts).to_pylist()
    return dict(zip(reversed(runs), reversed(datasets), strict=True))


def unchanged_pages(board: Path, keys: dict[str, str]) -> set[str]:
    """The datasets whose page exists with the key it was written under."""
    try:
        held = json.loads((board / PAGES_FILE).read_text())
    except (OSError, ValueError):
        return set()
    return {
        d
        for d, k in keys.items()
        if isinstance(held, dict) and held.get(d) == k and (board / f"{d}.md").is_file()
    }


def record_pages(board: Path, keys: dict[str, str]) -> None:
    atomic_write_text(board / PAGES_FILE, json.dumps(keys, indent=2, sort_keys=True) + "\n")
