"""The consolidated store: every finished post-hoc stage's rows, kept in one Arrow file below
the results root, so that the leaderboard reads one file instead of one per run
(docs/results.md, "The consolidated store").

    <results_dir>/store/
      MANIFEST.json                    the current generation: {"index": ..., "files":
                                       {"rows": data file}, "previous": [files]}
      index-<token>.arrow              one row per stage held: run_id, eval_id, done_mtime_ns,
                                       done_size (the stage's identity: stats of its DONE
                                       and rows.parquet, rundir.stage_stat_identity), file,
                                       rows, search_id, domain_facts (its run's key.json
                                       facts, harness/keyfacts.py; null: not known)
      rows-<token>.arrow               the rows of every stage, stage after stage in key
                                       order (Arrow IPC, uncompressed, memory-mapped on reading)
      delta-<token>.arrow              the few stages added since rows-<token> was written
                                       (compact); the index's `file` says which holds a stage
      parts/<run_id>.<eval_id>.<mtime_ns>-<size>.parquet
                                       appended by a run when its stage finishes: a byte copy
                                       of the stage's rows.parquet, named by its identity
      TABLES.json                      the generation table.parquet/.csv were written from
                                       (harness/tablefiles.py)

Writers: a run appends a part (its own name, written to a temporary name and renamed: never
half visible; two sweeps never write the same name unless they hold the same bytes). The
leaderboard compacts under its flock (harness/report/build.py): it writes new data and
index files, then MANIFEST.json (the atomic switch), then deletes the parts it read, and
only those, so a part appended during the compaction waits for the next one. The run
directories stay the source of truth: harness/table.py reconciles this store with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from harness.keys import content_hash
from harness.rundir import RUNS, RunDir, check_not_linked, stage_stat_identity

STORE = "store"
PARTS = "parts"
MANIFEST = "MANIFEST.json"
VERSION = 1
INDEX_COLUMNS = ("run_id", "eval_id", "done_mtime_ns", "done_size", "file", "rows")
# the run's key.json facts (harness/keyfacts.py); an index written before them lacks them
FACT_COLUMNS = ("search_id", "domain_facts")
ROWS = "rows"  # the data file's entry in MANIFEST.json
# a second data file: the stages added since `rows` was written, when they are few (at most
# DELTA_SHARE of its rows and DELTA_STAGES stages), so one new run rewrites them, not `rows`
DELTA, DELTA_SHARE, DELTA_STAGES = "delta", 0.1, 32
SUFFIX = ".arrow"  # the compacted files: Arrow IPC (Feather v2, uncompressed)
# a temporary part of a process on another host is removed when it is this old (seconds)
STALE_TEMPORARY = 3600.0
_PART = re.compile(r"^([0-9a-f]+)\.([^./]+)\.(\d+)-(\d+)\.parquet$")
_HOST = content_hash(platform.node())[:8]
_TMP = re.compile(r"^\.(.+)\.([0-9a-f]{8})\.(\d+)\.tmp$")

Identity = tuple[int, int]  # rundir.stage_stat_identity: stats of a stage's DONE and rows


def store_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / STORE


def parts_dir(results_dir: str | Path) -> Path:
    return store_dir(results_dir) / PARTS


def stage_key(run_id: str, eval_id: str) -> str:
    """ "<run_id>/<eval_id>": the name of a stage in the store and in the listing."""
    return f"{run_id}/{eval_id}"


def row_keys(rows: pa.Table) -> pa.ChunkedArray:
    """The stage key of each row (large strings: pandas' strings arrive as either type)."""
    text = pa.large_string()
    return pc.binary_join_element_wise(
        rows["run_id"].cast(text), rows["eval_id"].cast(text), pa.scalar("/", text)
    )


# ---------------------------------------------------------------- appending


def append_stage(rd: RunDir, eval_id: str) -> Path | None:
    """Copy a finished stage's rows into the store as a part; returns its path, or None when
    the run is not under a results root's runs/ folder or the copy failed (warned about: the
    run directory keeps the rows, and the next collection reads them from there)."""
    if rd.root.name != RUNS:
        return None
    stage = rd.posthoc(eval_id)
    try:
        check_not_linked(rd.path)
        # the identity first, then the bytes: if the stage were rewritten in between, the
        # part would carry the older name and never match the newer DONE
        mtime, size = stage_stat_identity(str(stage.path))
        data = stage.rows.read_bytes()
        name = f"{rd.run_id}.{eval_id}.{mtime}-{size}.parquet"
        return _write_atomic(parts_dir(rd.results_dir) / name, data)
    except (OSError, ValueError) as exc:
        warnings.warn(f"store: could not append {stage.path}: {exc}", stacklevel=2)
        return None


def _write_atomic(path: Path, data: bytes) -> Path:
    """Write to .<name>.<host>.<pid>.tmp, fsync, rename: a reader never sees half a file, and
    a temporary left by a killed writer names its host and pid (clean_temporaries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def list_parts(results_dir: str | Path) -> dict[str, dict[Identity, Path]]:
    """The parts present: {stage key: {identity: path}} (regular files only, never links)."""
    found: dict[str, dict[Identity, Path]] = {}
    folder = parts_dir(results_dir)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        match = _PART.match(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            run_id, eval_id, mtime, size = match.groups()
            key = stage_key(run_id, eval_id)
            found.setdefault(key, {})[(int(mtime), int(size))] = folder / entry.name
    return found


def clean_temporaries(results_dir: str | Path) -> list[Path]:
    """Remove the store's temporary files whose writer is dead (same host: its pid is gone;
    another host: older than STALE_TEMPORARY). Called under the leaderboard's flock."""
    removed = []
    entries = []
    for folder in (store_dir(results_dir), parts_dir(results_dir)):
        try:
            entries += list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
    for entry in entries:
        match = _TMP.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        host, pid = match.group(2), int(match.group(3))
        try:
            age = time.time() - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        dead = not _pid_alive(pid) if host == _HOST else age > STALE_TEMPORARY
        if dead:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- the compacted generation


class Generation:
    """The compacted store as MANIFEST.json names it: the index and the data files. In a
    data file the stages are in key order, each stage's rows in the order of its file."""

    def __init__(self, root: Path, manifest: dict[str, Any], index: pa.Table) -> None:
        self.root, self.manifest = root, manifest
        self.files: dict[str, str] = dict(manifest["files"])
        self.index = index  # the index's columns (increment.stage_lines reads them whole)
        keys = row_keys(index).to_pylist()
        self.stages: dict[str, Entry] = {
            k: ((m, s), d, n)
            for k, m, s, d, n in zip(
                keys,
                index["done_mtime_ns"].to_pylist(),
                index["done_size"].to_pylist(),
                index["file"].to_pylist(),
                index["rows"].to_pylist(),
                strict=True,
            )
        }
        # {stage key: (search_id, domain facts)}; None where not known
        self.facts: dict[str, tuple[str, str] | None] = dict.fromkeys(keys)
        if all(c in index.column_names for c in FACT_COLUMNS):
            pairs = zip(*(index[c].to_pylist() for c in FACT_COLUMNS), strict=True)
            self.facts = {
                k: None if s is None or d is None else (s, d)
                for k, (s, d) in zip(keys, pairs, strict=True)
            }

    def run_facts(self) -> dict[str, tuple[str, str] | None]:
        """{run_id: key.json facts} (harness/keyfacts.py) of the runs held."""
        return {k.split("/", 1)[0]: f for k, f in self.facts.items() if f is not None}

    def read(self, name: str) -> pa.Table:
        return _read_arrow(store_dir(self.root) / self.files[name])


Entry = tuple[Identity, str, int]  # a stage in the index: (DONE identity, data file, rows)


# the last generation this process read, per root, with its manifest and its index file's
# stats: the leaderboard loads it three times (collection, page keys, key facts)
_LOADED: dict[str, tuple[dict[str, Any], tuple[int, int], Generation]] = {}


def load_generation(results_dir: str | Path) -> Generation | None:
    """The current generation, or None when there is none or it cannot be trusted (an
    unreadable manifest or index, a data file missing): the caller then reads the run
    directories, never fails."""
    root = Path(results_dir)
    try:
        manifest = json.loads((store_dir(root) / MANIFEST).read_text())
        if manifest.get("version") != VERSION:
            return None
        for name in manifest["files"].values():
            if not (store_dir(root) / name).is_file():
                return None
        st = os.stat(store_dir(root) / manifest["index"])
        seen = (manifest, (st.st_mtime_ns, st.st_size))
        held = _LOADED.get(os.path.abspath(root))
        if held is not None and held[:2] == seen:
            return held[2]
        index = _read_arrow(store_dir(root) / manifest["index"])
        if not all(c in index.column_names for c in INDEX_COLUMNS):
            return None
        gen = Generation(root, manifest, index)
        _LOADED[os.path.abspath(root)] = (*seen, gen)
        return gen
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None


def ordered(keys: list[str], sources: dict[str, tuple[pa.Table, int, int]]) -> pa.Table:
    """The stages `keys` in key order as one table, each the slice (table, first row, rows)
    of `sources`; neighbouring stages of one table are one zero-copy slice (no row is
    compared or sorted). Many chunks (a rebuild: one per stage) are made one: they are slow
    to convert to pandas."""
    pieces: list[pa.Table] = []
    run: list = [None, 0, 0]  # the slice being extended: table, start, end
    for key in sorted(keys):
        table, at, rows = sources[key]
        if table is not run[0] or at != run[2]:
            if run[0] is not None:
                pieces.append(run[0].slice(run[1], run[2] - run[1]))
            run = [table, at, at]
        run[2] = at + rows
    if run[0] is not None:
        pieces.append(run[0].slice(run[1], run[2] - run[1]))
    if not pieces:
        return pa.table({})
    merged = pa.concat_tables(pieces, promote_options="permissive")
    return merged.combine_chunks() if merged.column(0).num_chunks > 64 else merged


def locations(stages: dict[str, Entry]) -> dict[str, tuple[str, int]]:
    """{stage key: (data file, first row)}: in each data file the stages lie in key order."""
    found, at = {}, {}
    for key in sorted(stages):
        name, rows = stages[key][1], stages[key][2]
        found[key] = (name, at.get(name, 0))
        at[name] = at.get(name, 0) + rows
    return found


def read_ordered(gen: Generation) -> pa.Table:
    """Every stage the generation holds, in key order, from its data file(s)."""
    if list(gen.files) == [ROWS]:
        return gen.read(ROWS)  # one file: in key order already
    tables = {name: gen.read(name) for name in gen.files}
    where = locations(gen.stages)
    return ordered(
        list(gen.stages), {k: (tables[f], at, gen.stages[k][2]) for k, (f, at) in where.items()}
    )


def compact(
    gen: Generation | None, index: dict[str, Entry], new: dict[str, tuple[Identity, pa.Table]]
) -> tuple[pa.Table, dict[str, pa.Table | None]]:
    """The stages `index` kept from `gen` and the `new` ones (entered into `index`): their
    table in key order, and the data files to write ({name: rows}; None: the previous file
    unchanged). Only a few stages added and none gone: `rows` stays and DELTA is written
    again with them (a new run costs its own rows, not 500,000); otherwise every stage goes
    into one new `rows` file."""
    files, held = (dict(gen.files), gen.stages) if gen is not None else ({}, {})
    olds = {name: gen.read(name) for name in files} if gen is not None else {}
    if not new and len(index) == len(held) and list(files) == [ROWS]:
        return olds[ROWS], {ROWS: None}  # nothing changed, one file: read as it is
    where = locations(held)
    sources = {k: (olds[where[k][0]], where[k][1], index[k][2]) for k in index}
    sources.update({k: (rows, 0, rows.num_rows) for k, (_, rows) in new.items()})
    kept_all = len(index) == len(held)  # nothing left the store
    if kept_all and not new:
        return ordered(list(sources), sources), dict.fromkeys(files)
    in_delta = [k for k, e in index.items() if e[1] == DELTA]
    base = sum(e[2] for e in index.values() if e[1] == ROWS)
    added = sum(index[k][2] for k in in_delta) + sum(r.num_rows for _, r in new.values())
    few = added <= DELTA_SHARE * base and len(in_delta) + len(new) <= DELTA_STAGES
    target, keys = (DELTA, [*in_delta, *new]) if kept_all and few else (ROWS, [*index, *new])
    if not keys:  # every stage gone: no data file
        return pa.table({}), {}
    written: dict[str, pa.Table | None] = {ROWS: None} if target == DELTA else {}
    written[target] = ordered(keys, sources)
    for key in keys:
        identity = new[key][0] if key in new else index[key][0]
        index[key] = (identity, target, sources[key][2])
    table = written[ROWS] if target == ROWS else ordered(list(index), sources)
    return table, written


def write_generation(
    results_dir: str | Path,
    previous: Generation | None,
    tables: dict[str, pa.Table | None],
    stages: dict[str, Entry],
    facts: dict[str, tuple[str, str] | None] | None = None,
) -> str:
    """Publish a new generation: `tables` maps each name to its new rows, or to None when
        the previous generation's file holds them unchanged; `stages` is the new index, `facts`
    each stage's run's key.json facts (harness/keyfacts.py; missing: not known). Data and
        index files first, MANIFEST.json last (the switch); then the files of generations older
        than the previous one are deleted (a reader without the flock may still hold those of
        the previous one). Returns the new index file's name (the generation's name)."""
    root = store_dir(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    token = f"{int(time.time())}{secrets.token_hex(3)}"
    files = {}
    for name, table in tables.items():
        if table is None:
            assert previous is not None
            files[name] = previous.files[name]
            continue
        file_name = f"{name}-{token}{SUFFIX}"
        _write_arrow(table, root / file_name)
        files[name] = file_name
    keys = sorted(stages)
    run_ids, eval_ids = zip(*(k.split("/", 1) for k in keys), strict=True) if keys else ((), ())
    index = pa.table(
        {
            "run_id": pa.array(run_ids, pa.string()),
            "eval_id": pa.array(eval_ids, pa.string()),
            "done_mtime_ns": pa.array([stages[k][0][0] for k in keys], pa.int64()),
            "done_size": pa.array([stages[k][0][1] for k in keys], pa.int64()),
            "file": pa.array([stages[k][1] for k in keys], pa.string()),
            "rows": pa.array([stages[k][2] for k in keys], pa.int64()),
        }
    )
    known = [(facts or {}).get(k) for k in keys]  # each stage's run's key.json facts
    for i, name in enumerate(FACT_COLUMNS):
        index = index.append_column(
            name, pa.array([None if f is None else f[i] for f in known], pa.string())
        )
    index_name = f"index-{token}{SUFFIX}"
    _write_arrow(index, root / index_name)
    kept = set(files.values()) | {index_name}
    before = set()
    if previous is not None:
        before = set(previous.files.values()) | {previous.manifest["index"]}
    manifest = {
        "version": VERSION,
        "index": index_name,
        "files": files,
        "previous": sorted(before - kept),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_atomic(root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    for entry in os.scandir(root):  # older generations (and a killed compaction's files)
        if entry.is_file(follow_symlinks=False) and entry.name.endswith(SUFFIX):
            if entry.name not in kept | before:
                Path(entry.path).unlink(missing_ok=True)
    return index_name


def read_back(results_dir: str | Path, table: pa.Table) -> pa.Table:
    """`table`, just written as the generation's only data file, read back memory-mapped:
    one array per column (_write_arrow), not the chunks it was put together from, which
    every selection would join again. `table` itself when the file is not just that."""
    gen = load_generation(results_dir)
    back = gen.read(ROWS) if gen is not None and list(gen.files) == [ROWS] else table
    same = back.num_rows == table.num_rows and back.schema.equals(table.schema, True)
    return back if same else table


def _read_arrow(path: Path) -> pa.Table:
    # memory-mapped: an uncompressed file is read with no copy (a replaced or deleted file
    # stays mapped until the table is dropped); a file of an older LZ4 generation still reads
    return feather.read_table(path, memory_map=True)


def one_chunk(table: pa.Table) -> pa.Table:
    """`table` with each column one array. pyarrow's `take` from a string column of several
    chunks joins them on every call (10 ms at 5,000,000 rows), and the report takes rows
    hundreds of times. A column too big for one array (`string` past 2 GiB) stays chunked."""
    columns = []
    for column in table.columns:
        with contextlib.suppress(pa.ArrowException, OverflowError):  # 32-bit offsets
            column = _joined(column) if column.num_chunks > 1 else column
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _joined(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array([column.combine_chunks()], column.type)


def _write_arrow(table: pa.Table, path: Path) -> None:
    """Arrow IPC (Feather v2), uncompressed: memory-mapped, 500,000 rows are read and made a
    frame in 0.01 s against 0.13 s with LZ4 (which takes 6x less disk; docs/results.md).
    One record batch (not one per 65,536 rows): each mapped column is one array (one_chunk)."""
    tmp, table = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp"), one_chunk(table)
    try:
        feather.write_feather(table, tmp, compression="uncompressed", chunksize=table.num_rows or 1)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_parts(paths: list[Path]) -> None:
    """Delete parts a compaction has read (a part appended meanwhile is not in the list)."""
    for path in paths:
        path.unlink(missing_ok=True)
