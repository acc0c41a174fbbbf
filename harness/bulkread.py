"""The cold rebuild of the consolidated store (`collect_cached(root, rebuild=True)`): every
finished stage's rows.parquet read again, on every core.

Reading 10,000 small Parquet files costs ~6 CPU s (their footers, not their rows) and
holds the GIL for part of it, so threads in one process gain little. Here the stages are cut
into one contiguous run of keys per core; forked workers each read theirs with the same
per-file reader and checks as `collect` (table._read_one, passed in: the rows stay `collect`'s
row for row), drop repeated identities, read their runs' key.json facts, and write ONE
uncompressed Arrow IPC file into the store folder; the parent memory-maps those (no copy
through a pipe: returning tables through pipes measured 3x slower). A stage a worker could
not read is read again by the parent, so the skipped list and its warnings carry the very
exceptions `collect` reports. DuckDB over the file list was measured and not adopted
(docs/benchmarks.md, "Cold rebuild"): without a per-file schema pass it silently casts or
drops mismatched columns, and with one it costs what pyarrow does.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from harness import rowstore, tablefiles
from harness.keyfacts import Facts, read_facts
from harness.listing import FORK_WARNING, finished_stages

ReadOne = Callable[[Path], "pa.Table | Exception"]
Dedup = Callable[[dict[str, pa.Table]], dict[str, pa.Table]]

# fewer stages than this per worker: fewer workers (a fork costs more than it saves);
# below twice this, this process reads them all
MIN_PARALLEL = 256
# a chunk's result: (IPC file or None, [(key, rows)] of the stages held in key order,
# [key] of the stages that could not be read, {run_id: facts})
Chunk = tuple[str | None, list[tuple[str, int]], list[str], dict[str, Facts]]


def rebuild(
    results_dir: str | Path,
    read_one: ReadOne,
    without_duplicates: Dedup,
    to_frame: Callable,
    csv: bool = False,
    background: bool = False,
) -> tuple[pd.DataFrame, list[tuple[Path, str]], bool]:
    """`collect_cached(rebuild=True)`: the store built again from every run directory, then
    table.parquet (and table.csv when `csv`; in a thread when `background`: harness/tablefiles.py);
    returns (table, skipped, changed=True). `read_one`, `without_duplicates`
    and `to_frame` are harness/table.py's (passed in: table.py calls this module)."""
    root = Path(results_dir)
    stages, skipped = finished_stages(root)
    items = [(key, path) for key, (path, _) in stages.items()]  # the listing's order
    ordered = sorted(items)  # the store's order: merge_stages' sorted keys
    workers = min(os.cpu_count() or 1, 8, max(1, len(items) // MIN_PARALLEL))
    bounds = [len(items) * i // workers for i in range(workers + 1)]
    chunks = [ordered[bounds[i] : bounds[i + 1]] for i in range(workers)]
    token = f"bulk{secrets.token_hex(3)}"
    store = rowstore.store_dir(root)
    store.mkdir(parents=True, exist_ok=True)
    outs = [
        store / f".{token}-{i}{rowstore.SUFFIX}.{rowstore._HOST}.{os.getpid()}.tmp"
        for i in range(workers)
    ]
    try:
        results = _run_chunks(root, chunks, outs, read_one, without_duplicates)
        # memory-mapped: the rows are not copied until the store and the table are written
        tables = [feather.read_table(path, memory_map=True) for path, _, _, _ in results if path]
        held = [entry for _, entry, _, _ in results for entry in entry]
        bad = {key for _, _, failed, _ in results for key in failed}
        facts = {run: f for _, _, _, found in results for run, f in found.items()}
        for key, path in items:
            if key in bad:  # read again here: the exception `collect` reports, as it is
                read = read_one(Path(path))
                if not isinstance(read, Exception):  # rewritten meanwhile: the next rebuild
                    read = ValueError("rows.parquet changed while the store was rebuilt")
                why = f"unreadable rows.parquet: {type(read).__name__}: {read}"
                skipped.append((Path(path), why))
        for path, why in skipped:
            warnings.warn(f"skipping {path}: {why}", stacklevel=3)
        merged = pa.concat_tables(tables, promote_options="permissive") if tables else None
        index = {key: (stages[key][1], rowstore.ROWS, rows) for key, rows in held}
        facts_of = {key: facts.get(key.split("/", 1)[0]) for key in index}
        written = {rowstore.ROWS: merged} if merged is not None else {}
        index_name = rowstore.write_generation(root, None, written, index, facts_of)
        (root / "table.stages.json").unlink(missing_ok=True)  # the cache before the store
        rowstore.clean_temporaries(root)
        merged = rowstore.read_back(root, merged) if merged is not None else None
        table = to_frame([merged] if merged is not None else [], unique=True)
        names = [tablefiles.PARQUET, tablefiles.CSV][: 1 + csv]
        tablefiles.write(root, table, names, index_name, background)
        return table, skipped, True
    finally:
        for path in outs:
            path.unlink(missing_ok=True)


def _run_chunks(
    root: Path, chunks: list, outs: list[Path], read_one: ReadOne, without_duplicates: Dedup
) -> list[Chunk]:
    """Each chunk read by a forked worker, the first by this process meanwhile; all by
    this process when workers cannot be started or die (the result is the same)."""
    if len(chunks) > 1:
        try:
            return _in_workers(root, chunks, outs, read_one, without_duplicates)
        except (OSError, BrokenProcessPool) as exc:
            warnings.warn(f"reading the run directories in one process: {exc}", stacklevel=3)
    return [
        _read_chunk(root, chunk, out, read_one, without_duplicates)
        for chunk, out in zip(chunks, outs, strict=True)
    ]


def _in_workers(
    root: Path, chunks: list, outs: list[Path], read_one: ReadOne, without_duplicates: Dedup
) -> list[Chunk]:
    """`_run_chunks` with forked workers (no interpreter start, no imports: the module-level
    functions passed in are pickled by name, the chunks as paths and ids)."""
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings(), ProcessPoolExecutor(len(chunks) - 1, context) as pool:
        # Python >= 3.12 warns at each fork of a process that has threads, and this one
        # always has (Arrow's and torch's pools): the fork is deliberate, its warning would
        # join the rebuild's own (seen on a GPU machine's Python 3.12). Arrow re-creates
        # its pools in a forked child; the workers only read files with it.
        warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
        futures = [
            pool.submit(_read_chunk, root, chunk, out, read_one, without_duplicates)
            for chunk, out in zip(chunks[1:], outs[1:], strict=True)
        ]
        first = _read_chunk(root, chunks[0], outs[0], read_one, without_duplicates)
        return [first, *(future.result() for future in futures)]


def _read_chunk(
    root: Path,
    items: list[tuple[str, str]],
    out: Path,
    read_one: ReadOne,
    without_duplicates: Dedup,
) -> Chunk:
    """A run of stages read, checked and de-duplicated as collect_cached does, written to
    `out` as one Arrow IPC file (uncompressed: memory-mapped by the parent)."""
    found, failed = {}, []
    for key, path in items:
        read = read_one(Path(path))
        if isinstance(read, Exception):
            failed.append(key)  # its exception is made again by the parent
        else:
            found[key] = read
    if not found:
        return None, [], failed, _facts(root, found)
    # one table first: the duplicate check on 5,000 one-stage chunks costs 20x more
    whole = pa.concat_tables(list(found.values()), promote_options="permissive").combine_chunks()
    if without_duplicates({"": whole})[""].num_rows < whole.num_rows:  # rare: per stage
        found = without_duplicates(found)
        whole = pa.concat_tables(list(found.values()), promote_options="permissive")
        whole = whole.combine_chunks()
    feather.write_feather(whole, out, compression="uncompressed")
    return (
        str(out),
        [(key, rows.num_rows) for key, rows in found.items()],
        failed,
        _facts(root, found),
    )


def _facts(root: Path, stages: dict[str, pa.Table]) -> dict[str, Facts]:
    """The key.json facts of the stages' runs (harness/keyfacts.py)."""
    return {run: read_facts(root, run) for run in {key.split("/", 1)[0] for key in stages}}
