"""Keys, run directories, atomic writes, completion markers and collection of results.

A run's identity is a content hash of what determines its numbers (see docs/results.md),
never a timestamp: repeating a sweep finds finished runs and skips them, and a changed
checkpoint or dataset gets a new key. Files are written to a temporary name and renamed,
and the completion marker is written last, so a reader never sees half a run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

# Bump whenever a change alters the numbers a run produces: old runs then stop matching.
RESULTS_VERSION = 3
DONE = "DONE"
FAILED = "FAILED"
LOCK = "LOCK"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The tidy table: one row per number. Later columns may be added, never renamed.
ROW_COLUMNS = [
    "run_id",
    "setting_id",
    "dataset",
    "model",
    "method",
    "tta",
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


def content_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of obj (sorted keys), hex."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes: a path in a key is replaced by what it points to."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"file not found: {p}")
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- atomic writes

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def _atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with tmp_path.open("rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are shared files
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    with _atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def atomic_write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """A frame as CSV through arrow's writer (C++, several times faster than pandas' on the
    500,000-row tidy table); pandas writes what arrow cannot convert (mixed object columns)."""
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        atomic_write_text(path, df.to_csv(index=False))
        return
    with _atomic_path(path) as tmp:
        pa_csv.write_csv(table, tmp)


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    import torch

    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ---------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance() -> dict[str, Any]:
    """Recorded with every row, never hashed into a key."""
    sha = _git("rev-parse", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    lock = PROJECT_ROOT / "requirements.lock"
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "timm", "numpy", "hydra-core", "maze-dataset", "scikit-learn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {
        "git_sha": sha,
        "git_dirty": bool(status) if status is not None else None,
        "lock_hash": file_digest(lock)[:16] if lock.is_file() else "unknown",
        "versions": json.dumps(versions, sort_keys=True),
        "host": platform.node(),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class RunKeys:
    """train key (= run_id), setting_id (train key without the seed), and the payload."""

    run_id: str
    setting_id: str
    payload: dict[str, Any]

    def forward_key(
        self,
        split: str,
        transform: dict[str, Any],
        tta: Any,
        precision: str,
        features_dtype: str = "float32",
    ) -> str:
        # features_dtype enters only when not float32: existing caches keep their keys
        storage = {} if features_dtype == "float32" else {"features_dtype": features_dtype}
        return content_hash(
            {
                "train": self.run_id,
                "split": split,
                "transform": transform,
                "tta": tta,
                "precision": precision,
                **storage,
            }
        )


def make_keys(payload: dict[str, Any]) -> RunKeys:
    """payload must hold 'seed'; the setting is everything else."""
    full = {"results_version": RESULTS_VERSION, **payload}
    setting = {k: v for k, v in full.items() if k != "seed"}
    return RunKeys(
        run_id=content_hash(full)[:20], setting_id=content_hash(setting)[:20], payload=full
    )


def posthoc_key(forward_key: str, config: dict[str, Any]) -> str:
    return content_hash({"forward": forward_key, "posthoc": config})[:20]


# ---------------------------------------------------------------- run directories


class RunDir:
    """The directory of one run: results_dir/runs/<run_id>/."""

    def __init__(self, results_dir: str | Path, run_id: str) -> None:
        if not run_id or any(c not in "0123456789abcdef" for c in run_id):
            raise ValueError(f"run id must be a hex content hash, got {run_id!r}")
        self.root = Path(results_dir) / "runs"
        self.path = self.root / run_id
        self.run_id = run_id

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def done(self) -> Path:
        return self.path / DONE

    def is_complete(self) -> bool:
        return self.done.is_file()

    def output_path(self, split: str, forward_key: str) -> Path:
        return self.path / "outputs" / f"{split}-{forward_key[:16]}.npz"

    def mark_complete(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.done, {"completed_at": now_iso(), **summary})
        self.failed.unlink(missing_ok=True)

    @property
    def failed(self) -> Path:
        return self.path / FAILED

    def is_failed(self) -> bool:
        return self.failed.is_file() and not self.is_complete()

    def mark_failed(self, exc: BaseException) -> None:
        atomic_write_json(
            self.failed,
            {
                "failed_at": now_iso(),
                "host": platform.node(),
                "pid": os.getpid(),
                "reason": f"{type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)),
            },
        )

    def status(self, stale_after: float = 180.0) -> str:
        """finished | running | failed | incomplete (as seen from the files)."""
        if self.is_complete():
            return "finished"
        if RunLock(self, stale_after).holder() is not None:
            return "running"
        if self.is_failed():
            return "failed"
        return "incomplete"


class LockHeld(RuntimeError):
    """Another live process holds the run."""


class RunLock:
    """Claims a run directory: LOCK holds host, pid and start time; its mtime is the
    heartbeat, refreshed by a background thread. A lock whose heartbeat is older than
    `stale_after` seconds, or whose process is gone (same host), is stale and is taken over,
    so a dead process on any host cannot hold a run forever. Creation is O_EXCL, and a stale
    lock is first renamed away (only one taker can win that rename)."""

    def __init__(self, rd: RunDir, stale_after: float = 180.0, heartbeat: float = 30.0) -> None:
        self.rd, self.stale_after, self.heartbeat = rd, stale_after, heartbeat
        self.path = rd.path / LOCK
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.token = ""

    def holder(self) -> dict[str, Any] | None:
        """The live holder's record, or None when unlocked or stale."""
        try:
            return self._live_holder(self.path.stat())
        except FileNotFoundError:
            return None

    def _live_holder(self, st: os.stat_result) -> dict[str, Any] | None:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # being written right now: held, unless long silent
            info = {"host": "?", "pid": -1, "started": "?"}
        if info.get("host") == platform.node():  # same host: the pid decides, not the clock
            return info if _pid_alive(int(info.get("pid", -1))) else None
        if time.time() - st.st_mtime > self.stale_after:
            return None
        return info

    def owned(self) -> bool:
        """Whether LOCK still holds this object's token (another process may have taken
        over after our heartbeat stalled)."""
        try:
            return json.loads(self.path.read_text()).get("token") == self.token
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def acquire(self) -> None:
        self.rd.path.mkdir(parents=True, exist_ok=True)
        self.token = f"{platform.node()}:{os.getpid()}:{time.time_ns()}:{id(self)}"
        record = json.dumps(
            {"host": platform.node(), "pid": os.getpid(), "started": now_iso(), "token": self.token}
        )
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
            return
        raise LockHeld(f"run {self.rd.run_id}: its lock is contended")

    def _take_over_if_stale(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        holder = self._live_holder(st)
        if holder is not None:
            raise LockHeld(
                f"run {self.rd.run_id} is held by pid {holder.get('pid')} on "
                f"{holder.get('host')} since {holder.get('started')}"
            )
        stale = self.path.with_name(f"{LOCK}.stale.{os.getpid()}.{time.time_ns()}")
        try:
            os.rename(self.path, stale)  # of several takers, one moves the stale lock
        except FileNotFoundError:
            return
        if stale.stat().st_ino != st.st_ino:  # we moved a fresh lock another taker just made
            try:
                os.link(stale, self.path)
            except FileExistsError:
                pass
            stale.unlink(missing_ok=True)
            raise LockHeld(f"run {self.rd.run_id} was just claimed by another process")
        stale.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not self.owned():
                    warnings.warn(
                        f"run {self.rd.run_id}: lost its lock to another process", stacklevel=1
                    )
                    return
                os.utime(self.path)
            except OSError as exc:  # e.g. a network file system hiccup: try again next beat
                warnings.warn(f"run {self.rd.run_id}: heartbeat failed ({exc})", stacklevel=1)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.owned():  # never remove a lock another process took over
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _subdirs(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _stages(results_dir: str | Path) -> tuple[dict[Path, int], list[tuple[Path, str]]]:
    """The finished post-hoc stages of finished runs with the mtime of each stage's DONE, and
    what was skipped (with why). os.scandir and plain strings: a store of 10,000 runs costs
    three system calls per run, and pathlib's objects cost more than the calls."""
    runs_root = os.path.join(results_dir, "runs")
    stages, skipped = {}, []
    for name in _subdirs(runs_root):
        run_path = os.path.join(runs_root, name)
        if not os.path.isfile(os.path.join(run_path, DONE)):
            why = (
                "failed (see its FAILED file)"
                if os.path.isfile(os.path.join(run_path, FAILED))
                else "incomplete (no DONE marker)"
            )
            skipped.append((Path(run_path), why))
            continue
        posthoc = os.path.join(run_path, "posthoc")
        for stage in _subdirs(posthoc):
            stage_path = os.path.join(posthoc, stage)
            try:
                stages[Path(stage_path)] = os.stat(os.path.join(stage_path, DONE)).st_mtime_ns
            except FileNotFoundError:
                skipped.append((Path(stage_path), "incomplete post-hoc stage (no DONE marker)"))
    return stages, skipped


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
    stages, skipped = _stages(results_dir)
    previous, manifest = reuse if reuse is not None else (None, {})
    kept, seen, to_read = set(), {}, []
    for stage, mtime in stages.items():
        key = f"{stage.parent.parent.name}/{stage.name}"
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
    return table.drop_duplicates(subset=_identity_columns(table)), skipped, seen


def _read_one(stage: Path) -> pa.Table | Exception:
    try:
        # one thread per file (the pool below is the parallelism); ParquetFile.read costs a
        # third of read_table's per-file overhead on files of 50 rows
        return pq.ParquetFile(stage / "rows.parquet").read(use_threads=False)
    except Exception as exc:
        return exc


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
    for failed in sorted((Path(results_dir) / "runs").glob(f"*/{FAILED}")):
        run_path = failed.parent
        if (run_path / DONE).is_file():
            continue
        try:
            info = json.loads(failed.read_text())
            key = json.loads((run_path / "key.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            info, key = {"reason": f"unreadable: {exc}"}, {}
        payload = key.get("payload", {})
        records.append(
            {
                "run_id": run_path.name,
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
    cols = ("run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric")
    return [c for c in cols if c in table]
