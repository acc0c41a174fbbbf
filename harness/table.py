"""The tidy table: its columns, the overall-row selector, and collection from run directories.

Every measured number is one row (docs/results.md). Collection reads the rows of every
finished post-hoc stage of every finished run (harness/listing.py lists them); a run
directory is the source of truth; the consolidated store (harness/rowstore.py) holds what was
collected, and table.parquet is an output of the leaderboard.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness import bulkread, rowstore, tablefiles
from harness.keyfacts import read_facts
from harness.listing import finished_stages
from harness.prefetch import prefetch
from harness.rundir import (
    FAILED_WHY,
    RunDir,
    run_dirs,
    stage_done_path,
    stage_rows_path,
)

# The tidy table: one row per number. Later columns may be added, never renamed.
ROW_COLUMNS = [
    "run_id",
    "setting_id",
    "dataset",
    "model",
    "method",
    "tta",
    "augment",
    "seed",
    "split",
    "split_role",
    "group_key",
    "group_value",
    "scorer",
    "metric",
    "value",
    "n",
    "selection_rule",
    "selected_epoch",
    "eval_id",
    "forward_key",
    "posthoc_key",
    "results_version",
    "git_sha",
    "git_dirty",
    "lock_hash",
    "versions",
    "created_at",
]

# The columns that identify one number: a row of the same identity from another file is
# the same number.
IDENTITY_COLUMNS = ("run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric")


def overall(table: pd.DataFrame) -> pd.Series:
    """Mask of the overall rows: not per group, corruption or severity, not about a scorer."""
    return (table["group_key"].fillna("") == "") & (table["scorer"].fillna("") == "")


def collect(results_dir: str | Path) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """Rows of every completed run below results_dir, and what was skipped (with why), read
    from the run directories alone (the source of truth; the leaderboard's `collect_cached`
    takes what it can from the consolidated store instead).

    A run counts once its DONE marker exists; its rows are those of each finished post-hoc
    stage (posthoc/<eval_id>/rows.parquet with its own DONE). Never raises on one bad run
    directory or file: it is skipped with a warning naming it.
    """
    listed, skipped = finished_stages(results_dir)
    stages = [Path(path) for path, _ in listed.values()]
    frames = []
    for stage, read in zip(stages, _read_rows(stages), strict=True):
        if isinstance(read, pa.Table):
            frames.append(read)
        else:  # a corrupt file must not stop the collection
            skipped.append((stage, f"unreadable rows.parquet: {type(read).__name__}: {read}"))
    for path, why in skipped:
        warnings.warn(f"skipping {path}: {why}", stacklevel=2)
    return to_frame(frames), skipped


def collect_current(results_dir: str | Path) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """`collect`'s table and skipped, from the consolidated store when it is current (it holds
    exactly the finished stages the run directories list, each with the identity of its
    DONE): one file read instead of one per run. Otherwise from the run directories
    (`collect`). Writes nothing, so it needs no flock (harness.export, corruption_metrics)."""
    root = Path(results_dir)
    stages, skipped = finished_stages(root)
    gen = rowstore.load_generation(root)
    current = gen is not None and len(gen.stages) == len(stages)
    current = current and all(
        gen.stages.get(key, ((None, None),))[0] == identity for key, (_, identity) in stages.items()
    )
    if not current:
        return collect(root)
    try:
        tables = [t for t in [rowstore.read_ordered(gen)] if t.num_columns]  # none: empty
    except (OSError, pa.ArrowException):  # compacted away meanwhile: the run directories
        return collect(root)
    for path, why in skipped:
        warnings.warn(f"skipping {path}: {why}", stacklevel=2)
    return to_frame(tables, unique=True), skipped


def to_frame(frames: list[pa.Table], unique: bool = False) -> pd.DataFrame:
    """The tidy table from arrow tables of rows: concatenated and converted once (10,000
    small pandas frames would cost twice as much), de-duplicated by identity unless the
    caller knows the rows are `unique` (the consolidated store's)."""
    if not frames:
        return pd.DataFrame(columns=ROW_COLUMNS)
    # permissive: files from other writers (an int32 column, pandas 2's string beside pandas
    # 3's large_string) widen to one type instead of failing the whole collection
    # the chunks are left as they come: combining them (tried) copies the memory-mapped
    # store (1.7 GB at 100,000 runs, every column touched) for no net gain at that size
    table = pa.concat_tables(frames, promote_options="permissive").to_pandas()
    # rows written before a column existed: augment="" is no augmentation
    table["augment"] = table["augment"].fillna("") if "augment" in table else ""
    return table if unique else table.drop_duplicates(subset=_identity_columns(table))


# What a stage's rows.parquet must hold for the table to mean anything; a file without
# them is skipped with a warning naming it, not merged with nulls.
STAGE_COLUMNS = ("run_id", "eval_id", "split", "scorer", "metric", "value")


def _read_one(
    stage: Path, check_names: bool = True, source: Path | None = None
) -> pa.Table | Exception:
    """A stage's rows (from `source` instead of its rows.parquet when given: the store's copy),
    checked; the exception instead when they cannot be trusted."""
    try:
        path = stage_rows_path(stage) if source is None else source
        # opening a FIFO (or a device) would block forever: regular files only,
        # and never through a symbolic link (lstat), like run folders (rundir._subdirs)
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ValueError("not a regular file")
        # one thread per file (the pool below is the parallelism); ParquetFile.read costs a
        # third of read_table's per-file overhead on files of 50 rows
        rows = pq.ParquetFile(path).read(use_threads=False)
        columns = set(rows.column_names)  # once: each call builds a new list (10,000 files)
        missing = [c for c in STAGE_COLUMNS if c not in columns]
        if missing:
            raise ValueError(f"wrong schema: no column {', '.join(missing)}")
        value_type = rows.schema.field("value").type
        if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
            raise ValueError(f"wrong schema: column value is {value_type}, not a number")
        # a run folder counts only under its own run_id (and a stage under its eval_id): a
        # copy such as runs/00-copy-of-<id>, edited or not, would otherwise be collected
        # beside (or instead of) the real run. The ids are in the rows: no extra file read.
        names = (("run_id", stage.parent.parent.name), ("eval_id", stage.name))
        for column, name in names if check_names and rows.num_rows else ():
            held = pc.unique(rows.column(column)).to_pylist()
            if held != [name]:
                raise ValueError(
                    f"folder name {name!r} is not the {column} its rows carry ({held[:3]}): "
                    "a copied or renamed folder? Only a folder named by its own id is collected"
                )
        return rows
    except Exception as exc:
        return exc


def stage_problem(stage: Path) -> str | None:
    """Why a finished post-hoc stage's rows cannot be trusted (unreadable, wrong schema, not
    the number of rows its DONE records), or None when they can. A damaged stage is computed
    again by the next run or evaluate instead of "already had it"."""
    rows = _read_one(stage, check_names=False)  # a copy's stage is not damaged, only ignored
    if isinstance(rows, Exception):
        return f"unreadable rows.parquet: {type(rows).__name__}: {rows}"
    try:
        expected = json.loads(stage_done_path(stage).read_text()).get("rows")
    except (OSError, ValueError, AttributeError) as exc:
        return f"unreadable DONE: {exc}"
    if expected is not None and expected != rows.num_rows:
        return f"rows.parquet holds {rows.num_rows} rows, its DONE records {expected}"
    return None


def _read_rows(stages: list[Path] | list[tuple[Path, Path | None]]) -> list[pa.Table | Exception]:
    """Every stage's rows.parquet as an arrow table (or the exception that reading raised),
    in order. Arrow tables are concatenated and converted once: 10,000 small pandas frames
    would cost twice as much. Reading releases the GIL, so a few threads overlap the
    files' opening and decoding (benchmarks/leaderboard_regen.py)."""
    items = [s if isinstance(s, tuple) else (s, None) for s in stages]
    if len(items) < 64:
        return [_read_one(s, source=src) for s, src in items]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda item: _read_one(item[0], source=item[1]), items))


def collect_cached(
    results_dir: str | Path, rebuild: bool = False, csv: bool = False, background: bool = False
) -> tuple[pd.DataFrame, list[tuple[Path, str]], bool]:
    """`collect` through the consolidated store (harness/rowstore.py): a stage whose DONE
    has the identity (mtime, size) the store holds is taken from it, one the store lacks
    from its part or, failing that, from its run directory; a stage whose run directory is
    gone, or whose DONE changed, leaves (and is read again). The store is then compacted:
    its data file is written again only when a stage came or went. The same table as
    `collect`, row for row. Call it under the leaderboard's flock (write_leaderboard does). rebuild=True
    ignores the store and builds it again from every run directory. Returns (table,
    skipped, changed): changed is False when the store held every stage already.
    table.parquet (and table.csv when `csv`) is written again when it is not the current
    generation's (harness/tablefiles.py): in a thread when `background`, which the caller
    joins with tablefiles.wait(results_dir) before anything reads the files."""
    root = Path(results_dir)
    tablefiles.wait(root)  # a previous collection's files: renamed before this one starts
    if rebuild:  # every run directory read again, on every core (harness/bulkread.py)
        return bulkread.rebuild(root, _read_one, _without_duplicates, to_frame, csv, background)
    # the parts before the listing: a part appended after the listing was made is left for
    # the next compaction, never deleted unread (its run may have finished meanwhile)
    parts = {} if rebuild else rowstore.list_parts(root)
    prefetch(root)  # the store read from disk meanwhile, if it has left the page cache
    stages, skipped = finished_stages(root)
    gen = None if rebuild else rowstore.load_generation(root)
    held = gen.stages if gen is not None else {}
    index: dict[str, rowstore.Entry] = {}
    to_read = []
    for key, (path, identity) in stages.items():
        entry = held.get(key)
        if entry is not None and entry[0] == identity:
            index[key] = entry
        else:
            to_read.append((key, Path(path), identity, parts.get(key, {}).get(identity)))
    found, identities = {}, {}
    reads = _read_rows([(stage, part) for _, stage, _, part in to_read])
    for (key, stage, identity, part), read in zip(to_read, reads, strict=True):
        if isinstance(read, Exception) and part is not None:  # a damaged part: the run's own
            read = _read_one(stage)
        if isinstance(read, Exception):
            skipped.append((stage, f"unreadable rows.parquet: {type(read).__name__}: {read}"))
            continue
        found[key], identities[key] = read, identity
    for path, why in skipped:
        warnings.warn(f"skipping {path}: {why}", stacklevel=2)
    # stage after stage in key order: the table is read back in `collect`'s order with no
    # reordering (rowstore.compact: one data file, and a small one of the latest stages)
    new = {k: (identities[k], rows) for k, rows in _without_duplicates(found).items()}
    whole, written = rowstore.compact(gen, index, new)
    changed = gen is None or set(written) != set(gen.files)
    changed = changed or any(t is not None for t in written.values())
    # each stage's run's key.json facts (harness/keyfacts.py): read once, when the stage
    # enters the store (or when an index written before them is compacted again)
    facts = {k: (gen.facts.get(k) if gen is not None and k not in found else None) for k in index}
    missing = [k for k, f in facts.items() if f is None]
    read = {r: read_facts(root, r) for r in {k.split("/", 1)[0] for k in missing}}
    for key in missing:
        facts[key] = read[key.split("/", 1)[0]]
    changed = changed or any(facts[k] is not None for k in missing)  # something learned
    name = gen.manifest["index"] if gen is not None else ""  # the generation's name
    if changed:
        name = rowstore.write_generation(root, gen, written, index, facts)
        whole = rowstore.read_back(root, whole) if written.get(rowstore.ROWS) else whole
        (root / "table.stages.json").unlink(missing_ok=True)  # the cache before the store
    rowstore.remove_parts([path for found in parts.values() for path in found.values()])
    rowstore.clean_temporaries(root)
    table = to_frame([whole] if whole.num_columns else [], unique=True)
    # the outputs (harness.export reads table.parquet) not written from this generation
    held = tablefiles.current(root, name)
    names = [n for n in (tablefiles.PARQUET, tablefiles.CSV)[: 1 + csv] if n not in held]
    # the table's stages in its order (key order), for table.csv's reuse of unchanged bytes
    stages = [(k, str(index[k][0]), index[k][2]) for k in sorted(index)]
    tablefiles.write(root, table, names, name, background, stages)
    return table, skipped, changed


def _without_duplicates(stages: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Each stage's rows less repeated identities (the first kept, as drop_duplicates), once,
    when the stage enters the store: reading the store then needs no pass over every row.
    Two stages never share an identity (their run_id and eval_id are their folders')."""
    if not stages:
        return stages
    whole = pa.concat_tables(list(stages.values()), promote_options="permissive")
    if not whole.select(_identity_columns(whole)).to_pandas().duplicated().any():
        return stages  # the usual case: one check over the new rows
    unique = {}
    for key, rows in stages.items():
        repeated = rows.select(_identity_columns(rows)).to_pandas().duplicated().to_numpy()
        unique[key] = rows.filter(pa.array(~repeated)) if repeated.any() else rows
    return unique


def collect_failures(
    results_dir: str | Path, skipped: list[tuple[Path, str]] | None = None
) -> pd.DataFrame:
    """One row per failed run (FAILED marker, no DONE): who it was and why it failed.
    `skipped`: what a collection skipped, which names the failed runs already (no second
    pass over every run directory)."""
    records = []
    if skipped is None:
        failed = [rd for rd in run_dirs(results_dir) if rd.is_failed()]
    else:
        failed = [RunDir.at(path) for path, why in skipped if why == FAILED_WHY]
    for rd in failed:
        try:
            info = json.loads(rd.failed.read_text())
            key = rd.read_key()
        except (OSError, json.JSONDecodeError) as exc:
            info, key = {"reason": f"unreadable: {exc}"}, {}
        payload = key.get("payload", {})
        records.append(
            {
                "run_id": rd.run_id,
                "setting_id": key.get("setting_id", ""),
                "dataset": (payload.get("dataset") or {}).get("name", ""),
                "model": (payload.get("model") or {}).get("name", ""),
                "method": (payload.get("method") or {}).get("name", "none"),
                "seed": payload.get("seed"),
                "reason": info.get("reason", ""),
                "failed_at": info.get("failed_at", ""),
            }
        )
    columns = ["run_id", "setting_id", "dataset", "model", "method", "seed", "reason", "failed_at"]
    return pd.DataFrame(records, columns=columns)


def _identity_columns(table: pd.DataFrame | pa.Table) -> list[str]:
    names = table.column_names if isinstance(table, pa.Table) else table.columns
    return [c for c in IDENTITY_COLUMNS if c in names]
