"""The tidy table: its columns, the overall-row selector, and collection from run directories.

Every measured number is one row (docs/results.md). Collection reads the rows of every
finished post-hoc stage of every finished run (harness/rundir.py lists them); a run
directory is the source of truth, table.parquet a cache of what was collected.
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

from harness.rundir import (
    finished_stages,
    run_dirs,
    stage_done_path,
    stage_identity,
    stage_rows_path,
)
from harness.store import atomic_write_json, atomic_write_parquet

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


def collect(
    results_dir: str | Path, reuse: tuple[pd.DataFrame, dict[str, int]] | None = None
) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """Rows of every completed run below results_dir, and what was skipped (with why).

    A run counts once its DONE marker exists; its rows are those of each finished post-hoc
    stage (posthoc/<eval_id>/rows.parquet with its own DONE). Never raises on one bad run
    directory or file: it is skipped with a warning naming it. `reuse` = (an earlier
    collected table, {"<run_id>/<eval_id>": mtime_ns of the stage's DONE}): stages whose DONE
    is unchanged are taken from it instead of read again (see `collect_cached`).
    """
    table, skipped, _ = _collect(results_dir, reuse)
    return table, skipped


def _collect(
    results_dir: str | Path, reuse: tuple[pd.DataFrame, dict[str, int]] | None
) -> tuple[pd.DataFrame, list[tuple[Path, str]], dict[str, int]]:
    """collect, plus {"<run_id>/<eval_id>": DONE mtime_ns} of the stages whose rows it holds."""
    stages, skipped = finished_stages(results_dir)
    previous, manifest = reuse if reuse is not None else (None, {})
    kept, seen, to_read = set(), {}, []
    for stage, mtime in stages.items():
        key = stage_identity(stage)
        seen[key] = mtime
        if manifest.get(key) == seen[key]:
            kept.add(key)
        else:
            to_read.append((key, stage))
    frames = []
    for (key, stage), read in zip(to_read, _read_rows([s for _, s in to_read]), strict=True):
        if isinstance(read, pa.Table):
            frames.append(read)
        else:  # a corrupt file must not stop the collection
            skipped.append((stage, f"unreadable rows.parquet: {type(read).__name__}: {read}"))
            del seen[key]
    for path, why in skipped:
        warnings.warn(f"skipping {path}: {why}", stacklevel=2)
    cached = None
    if previous is not None and kept == set(manifest):  # the usual case: no stage went away
        cached = previous
    elif previous is not None and kept:
        ids = previous["run_id"].astype(str) + "/" + previous["eval_id"].astype(str)
        cached = previous[ids.isin(kept)]
    if not frames:  # only rows of the earlier collection, de-duplicated when it was made
        table = cached.reset_index(drop=True) if cached is not None else None
        return (pd.DataFrame(columns=ROW_COLUMNS) if table is None else table), skipped, seen
    fresh = pa.concat_tables(frames, promote_options="default").to_pandas()
    table = pd.concat(([cached] if cached is not None else []) + [fresh], ignore_index=True)
    # rows written before a column existed: augment="" is no augmentation
    table["augment"] = table["augment"].fillna("") if "augment" in table else ""
    return table.drop_duplicates(subset=_identity_columns(table)), skipped, seen


# What a stage's rows.parquet must hold for the table to mean anything; a file without
# them is skipped with a warning naming it, not merged with nulls.
STAGE_COLUMNS = ("run_id", "eval_id", "split", "scorer", "metric", "value")


def _read_one(stage: Path, check_names: bool = True) -> pa.Table | Exception:
    try:
        path = stage_rows_path(stage)
        # opening a FIFO (or a device) would block forever: regular files only,
        # and never through a symbolic link (lstat), like run folders (rundir._subdirs)
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ValueError("not a regular file")
        # one thread per file (the pool below is the parallelism); ParquetFile.read costs a
        # third of read_table's per-file overhead on files of 50 rows
        rows = pq.ParquetFile(path).read(use_threads=False)
        missing = [c for c in STAGE_COLUMNS if c not in rows.column_names]
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


def _read_rows(stages: list[Path]) -> list[pa.Table | Exception]:
    """Every stage's rows.parquet as an arrow table (or the exception that reading raised),
    in order. Arrow tables are concatenated and converted once: 10,000 small pandas frames
    would cost twice as much. Reading releases the GIL, so a few threads overlap the
    files' opening and decoding (benchmarks/leaderboard_regen.py)."""
    if len(stages) < 64:
        return [_read_one(s) for s in stages]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(_read_one, stages))


def collect_cached(
    results_dir: str | Path,
) -> tuple[pd.DataFrame, list[tuple[Path, str]], bool]:
    """`collect`, reading only the stages finished (or re-finished) since the last call and
    taking the others from <results_dir>/table.parquet; writes table.parquet and its manifest
    table.stages.json (stage -> mtime of its DONE) back. Finished stages are never rewritten,
    so their rows cannot have changed; a deleted run drops out because only stages present
    now are kept. An unreadable or inconsistent cache means a full read, never an error.
    Returns (table, skipped, changed): changed is False when the table is the cached one."""
    root = Path(results_dir)
    reuse = None
    try:
        manifest = json.loads((root / "table.stages.json").read_text())
        previous = pd.read_parquet(root / "table.parquet")
        pairs = previous[["run_id", "eval_id"]].drop_duplicates()
        ids = set(pairs["run_id"].astype(str) + "/" + pairs["eval_id"].astype(str))
        manifest = {k: v for k, v in manifest.items() if k in ids}
        if len(manifest) != len(ids):  # rows the manifest does not vouch for: read them again
            keep = (previous["run_id"].astype(str) + "/" + previous["eval_id"].astype(str)).isin(
                set(manifest)
            )
            previous = previous[keep]
        reuse = (previous, manifest)
    except Exception:  # no cache yet, or one that cannot be trusted: read everything
        reuse = None
    table, skipped, manifest = _collect(root, reuse)
    changed = reuse is None or manifest != reuse[1] or len(table) != len(reuse[0])
    if changed:
        atomic_write_parquet(table, root / "table.parquet")
        atomic_write_json(root / "table.stages.json", manifest)  # after the table it describes
    return table, skipped, changed


def collect_failures(results_dir: str | Path) -> pd.DataFrame:
    """One row per failed run (FAILED marker, no DONE): who it was and why it failed."""
    records = []
    for rd in run_dirs(results_dir):
        if not rd.is_failed():
            continue
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


def _identity_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in IDENTITY_COLUMNS if c in table]
