"""Atomic writes and provenance.

Files are written to a temporary name beside the target and renamed, so a reader never sees
half a file; a run's completion marker is written last (harness/rundir.py). Provenance (git
SHA, dirty flag, lock hash, versions, host) is recorded with every row, never hashed.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from harness.digests import sha256_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
    atomic_write_arrow_csv(table, path)


def atomic_write_arrow_csv(table: pa.Table, path: str | Path) -> None:
    """An arrow table as CSV: atomic_write_csv's bytes for the frame it was made from."""
    with _atomic_path(path) as tmp:
        pa_csv.write_csv(table, tmp)


def atomic_write_arrow_parquet(table: pa.Table, path: str | Path, **options: Any) -> None:
    """An arrow table as Parquet: `DataFrame.to_parquet(index=False)`'s bytes when the table
    is `pa.Table.from_pandas(frame, preserve_index=False)` (pandas' own call, then snappy)
    and no `options` (more pq.write_table keywords) are given."""
    import pyarrow.parquet as pq

    with _atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy", **options)


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


def package_version(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """Recorded with every row, never hashed into a key."""
    sha = _git("rev-parse", "HEAD") or "unknown"
    status = _git("status", "--porcelain", "--untracked-files=no")
    lock = PROJECT_ROOT / "requirements.lock"
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "timm", "numpy", "hydra-core", "maze-dataset", "scikit-learn"):
        version = package_version(pkg)
        if version is not None:
            versions[pkg] = version
    return {
        "git_sha": sha,
        "git_dirty": bool(status) if status is not None else None,
        "lock_hash": sha256_file(lock)[:16] if lock.is_file() else "unknown",
        "versions": json.dumps(versions, sort_keys=True),
        "host": platform.node(),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
