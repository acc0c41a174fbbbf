"""The tidy table's output files below a results root: table.parquet (harness.export reads it)
and table.csv, written by `collect_cached` from one arrow table, optionally in a background
thread so that arrow's C++ writers (the GIL released) overlap the leaderboard's pandas work.

Each file is written to a temporary name and renamed (harness/store.py): a reader sees the
old file or the new one, never half of one. store/TABLES.json records, for each file, the
store generation (its index file's name) it was written from, and is written after the
files: a process killed between the store's switch and the files' renames leaves them
older than the store, and the next collection writes them again instead of keeping them.

A background write is joined (its exception raised) by `wait`: collect_cached joins the
root's pending write before it starts, the leaderboard before it releases its flock
(harness/report/build.py), and every pending write is joined before this process forks
(a forked child must not inherit a thread inside arrow's writers: the plot workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from harness import csvspans
from harness.rowstore import store_dir
from harness.store import (
    atomic_write_arrow_csv,
    atomic_write_arrow_parquet,
    atomic_write_csv,
    atomic_write_parquet,
    atomic_write_text,
)

PARQUET, CSV = "table.parquet", "table.csv"
MARKER = "TABLES.json"  # in store/: {file name: the generation's index it was written from}


def current(results_dir: str | Path, index: str) -> set[str]:
    """The output files that exist and were written from the generation named by `index`."""
    root = Path(results_dir)
    held = _held(root)
    return {name for name in (PARQUET, CSV) if held.get(name) == index and (root / name).is_file()}


def _held(root: Path) -> dict[str, str]:
    """TABLES.json: {file name: the generation it was written from}; {} when unreadable."""
    try:
        held = json.loads((store_dir(root) / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


class _Write(threading.Thread):
    """The files of one collection, then the marker; the exception kept for `wait`."""

    def __init__(self, root: Path, table: pa.Table, names: list[str], index: str,
                 stages: list[csvspans.Stage] | None = None) -> None:  # fmt: skip
        super().__init__(name=f"tablefiles {root}", daemon=False)
        self.root, self.table, self.names, self.index = root, table, names, index
        self.stages = stages
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for name in self.names:
                if name == CSV and self.stages is not None:  # from the last file's bytes
                    previous = _held(self.root).get(CSV)
                    spans = store_dir(self.root) / csvspans.SPANS
                    csvspans.write(self.root / CSV, self.table, self.stages, spans, self.index,
                                   previous)  # fmt: skip
                    continue
                if name == PARQUET:
                    _write_parquet(self.table, self.root / name)
                else:
                    atomic_write_arrow_csv(self.table, self.root / name)
            _mark(self.root, self.names, self.index)
        except BaseException as exc:  # raised in the caller by wait()
            self.error = exc


def _write_parquet(table: pa.Table, path: Path) -> None:
    """table.parquet with min/max statistics for the non-string columns only: the string
    columns' min/max were a quarter of the write (0.05 of 0.18 CPU s at 10,000 runs) and
    prune nothing, the whole table being one row group (under pyarrow's 1 Mi rows) in which
    every dataset, method and split occurs. The content read back is the same."""
    numeric = [
        f.name
        for f in table.schema
        if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    ]
    atomic_write_arrow_parquet(table, path, write_statistics=numeric)


_pending: dict[str, _Write] = {}  # by absolute path: one pending write per root
_guard = threading.Lock()


def write(
    results_dir: str | Path,
    table: pd.DataFrame,
    names: list[str],
    index: str,
    background: bool,
    stages: list[csvspans.Stage] | None = None,
) -> None:
    """Write `names` (PARQUET, CSV) from `table`, the frame of the generation `index`; in a
    thread when `background` (joined by `wait`), else before returning. `stages`: the
    table's stages in order (key, identity, rows): table.csv is then written from the last
    one's bytes where they are unchanged (harness/csvspans.py)."""
    root = Path(results_dir)
    wait(root)  # never two writes of one root at a time
    if not names:
        return
    try:
        arrow = _detached(table)
    except (pa.ArrowException, TypeError, ValueError):  # what pandas alone can write
        for name in names:
            (atomic_write_parquet if name == PARQUET else atomic_write_csv)(table, root / name)
        _mark(root, names, index)
        return
    job = _Write(root, arrow, names, index, stages)
    if not background:
        job.run()
        if job.error is not None:
            raise job.error
        return
    with _guard:
        _pending[os.path.abspath(root)] = job
    job.start()


def wait(results_dir: str | Path | None = None) -> None:
    """Join the pending write of `results_dir` (of every root when None); raise its error."""
    with _guard:
        roots = list(_pending) if results_dir is None else [os.path.abspath(results_dir)]
        jobs = [_pending.pop(r) for r in roots if r in _pending]
    for job in jobs:
        job.join()
    for job in jobs:
        if job.error is not None:
            raise job.error


class _CsvWrite(threading.Thread):
    """One frame's CSV (atomic_write_csv's bytes), the exception kept for `join_csv`."""

    def __init__(self, table: pa.Table, path: Path) -> None:
        super().__init__(name=f"csv {path}", daemon=False)
        self.table, self.path = table, path
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            atomic_write_arrow_csv(self.table, self.path)
        except BaseException as exc:  # raised in the caller by join_csv()
            self.error = exc


_csv_jobs: set[_CsvWrite] = set()  # joined before a fork, as the pending table writes


def start_csv(frame: pd.DataFrame, path: str | Path) -> _CsvWrite | None:
    """atomic_write_csv(frame, path) in a thread (arrow's writer releases the GIL: the caller's
    pandas work goes on meanwhile); join it with `join_csv`. The frame is converted here, its
    numeric buffers copied, so the caller may change it. None when written already (what
    arrow cannot convert is written by pandas, here)."""
    try:
        table = _detached(frame)
    except (pa.ArrowException, TypeError, ValueError):
        atomic_write_csv(frame, path)
        return None
    job = _CsvWrite(table, Path(path))
    with _guard:
        _csv_jobs.add(job)
    job.start()
    return job


def join_csv(job: _CsvWrite | None) -> None:
    """Wait for a `start_csv` write; raise its error."""
    if job is None:
        return
    job.join()
    with _guard:
        _csv_jobs.discard(job)
    if job.error is not None:
        raise job.error


@contextlib.contextmanager
def csv_in_thread(frame: pd.DataFrame, path: str | Path) -> Iterator[None]:
    """start_csv on entry, join_csv on exit; when the block raises, the write is still
    waited for (nothing is written after the caller, e.g. under the leaderboard's flock, has
    left) and the block's exception is the one raised."""
    job = start_csv(frame, path)
    try:
        yield
    except BaseException:
        if job is not None:
            job.join()
            with _guard:
                _csv_jobs.discard(job)
        raise
    join_csv(job)


def _wait_before_fork() -> None:
    with _guard:
        jobs = list(_pending.values()) + list(_csv_jobs)
    for job in jobs:  # joined only: the error stays for wait() to raise
        job.join()


os.register_at_fork(before=_wait_before_fork)


def _detached(table: pd.DataFrame) -> pa.Table:
    """`pa.Table.from_pandas(table, preserve_index=False)` (what to_parquet and
    atomic_write_csv convert: their bytes exactly), with the numeric columns copied out of
    the frame's numpy buffers (shared, zero-copy): the caller may change the frame while the
    thread writes."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    memory = pa.default_cpu_memory_manager()
    for i, dtype in enumerate(table.dtypes):
        if isinstance(dtype, np.dtype):
            chunks = [chunk.copy_to(memory) for chunk in arrow.column(i).chunks]
            arrow = arrow.set_column(
                i, arrow.field(i), pa.chunked_array(chunks, arrow.field(i).type)
            )
    return arrow


def _mark(root: Path, names: list[str], index: str) -> None:
    """Record that `names` now hold the generation `index` (after their renames)."""
    path = store_dir(root) / MARKER
    try:
        held = json.loads(path.read_text())
    except (OSError, ValueError):
        held = {}
    held = {k: v for k, v in held.items() if k in (PARQUET, CSV)} if isinstance(held, dict) else {}
    held.update(dict.fromkeys(names, index))
    atomic_write_text(path, json.dumps(held, indent=2, sort_keys=True) + "\n")
