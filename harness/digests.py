"""Content digests of data files, each computed once: sha256 of a file's bytes, cached by
(absolute path, size, mtime_ns) in a small SQLite database.

A file-based dataset's fingerprint (and so every run key on it) must change when any file's
content changes: a CIFAR-10-C array regenerated, a MetaShift image re-encoded at the same
size. Hashing every byte is correct but costs a full read of the data (2.9 GB for CIFAR-10-C)
each time a key is made, including when a finished run is only skipped. So the digest of
each file is remembered against what `os.stat` says about it; a file whose size or mtime
changed is read again. What enters a key is the digest itself (with the file's relative name
and size), never the path or the mtime: a copy of the data on another machine has the same
fingerprint, and pays the read once there.

The database lives at $SHIFTBENCH_DIGEST_CACHE, or by default at
$XDG_CACHE_HOME/shiftbench/digests.sqlite (~/.cache/...). Where it cannot be opened or
written (read-only home, a locked database), digests are computed without the cache, with
one warning. SQLite is used (standard library) rather than a hand-written index file:
it gives atomic, concurrent-safe updates from several processes of a sweep for free.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ENV = "SHIFTBENCH_DIGEST_CACHE"
RACY_NS = 2_000_000_000  # files modified in the last 2 s are hashed, not remembered
_warned: set[str] = set()


def cache_path() -> Path:
    """Where the digest database is: $SHIFTBENCH_DIGEST_CACHE, else the user's cache dir."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shiftbench" / "digests.sqlite"


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes (hashlib.file_digest: no Python-level loop per chunk)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class DigestCache:
    """sha256 per file, remembered by (absolute path, size, mtime_ns). One connection per
    call of `digests`, so it can be used from forked loader workers and joblib processes."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_path()

    def _connect(self) -> sqlite3.Connection | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=30)
            con.execute(
                "CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, sha256 TEXT)"
            )
            return con
        except (OSError, sqlite3.Error) as exc:
            self._warn(exc)
            return None

    def _warn(self, exc: Exception) -> None:
        if str(self.path) not in _warned:
            _warned.add(str(self.path))
            warnings.warn(
                f"digest cache {self.path} unusable ({type(exc).__name__}: {exc}); file digests "
                f"are computed without it (set {ENV} to a writable file)",
                stacklevel=3,
            )

    def digests(self, paths: Iterable[str | Path]) -> dict[Path, str]:
        """{path: sha256} of existing regular files; a missing one raises FileNotFoundError
        naming it. Files whose (size, mtime_ns) match the cache are not read."""
        return {p: sha for p, (_, sha) in self.entries(paths).items()}

    def entries(self, paths: Iterable[str | Path]) -> dict[Path, tuple[int, str]]:
        """{path: (size, sha256)}: digests() with the size os.stat gave."""
        stats = {}
        for p in map(Path, paths):
            st = os.stat(p)  # FileNotFoundError names the path; symbolic links followed
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{p}: not a regular file; a data fingerprint reads files only")
            stats[p] = (os.path.abspath(p), st.st_size, st.st_mtime_ns)
        con = self._connect()
        out: dict[Path, tuple[int, str]] = {}
        fresh: list[tuple[str, int, int, str]] = []
        try:
            for p, (key, size, mtime) in stats.items():
                row = None
                if con is not None:
                    try:
                        row = con.execute(
                            "SELECT sha256 FROM digests WHERE path=? AND size=? AND mtime_ns=?",
                            (key, size, mtime),
                        ).fetchone()
                    except sqlite3.Error as exc:
                        self._warn(exc)
                        con.close()
                        con = None
                if row is not None:
                    out[p] = (size, row[0])
                    continue
                out[p] = (size, sha256_file(p))
                after = os.stat(p)
                # Remembered only when it did not change while read, and its mtime is not
                # recent: a file rewritten at the same size within the file system's mtime
                # granularity would otherwise keep the old digest (git's "racy" entries).
                settled = time.time_ns() - mtime > RACY_NS
                if settled and (after.st_size, after.st_mtime_ns) == (size, mtime):
                    fresh.append((key, size, mtime, out[p][1]))
            if con is not None and fresh:
                try:
                    with con:
                        con.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", fresh)
                except sqlite3.Error as exc:
                    self._warn(exc)
        finally:
            if con is not None:
                con.close()
        return out


def file_digests(paths: Iterable[str | Path]) -> dict[Path, str]:
    """{path: sha256} through the default cache."""
    return DigestCache().digests(paths)


def files_digest(root: str | Path, names: Iterable[str]) -> list[list[object]]:
    """[[name, size, sha256], ...] of the named files below root, sorted by name: what a
    fingerprint holds of them (no path, no mtime)."""
    root = Path(root)
    names = sorted(names)
    found = DigestCache().entries(root / n for n in names)
    return [[n, *found[root / n]] for n in names]


def tree_digest(root: str | Path) -> str:
    """sha256 over the relative name, size and content digest of every file below root
    (sorted), symbolic links to files followed; a missing root hashes as an empty listing."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    found = DigestCache().entries(files)
    h = hashlib.sha256()
    for p in files:
        size, sha = found[p]
        h.update(f"{p.relative_to(root).as_posix()}:{size}:{sha}\n".encode())
    return h.hexdigest()


def hash_arrays(*parts: Any) -> str:
    """Content hash of arrays, DataFrames and JSON-able values (a data fingerprint)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
            h.update(json.dumps(list(map(str, part.columns))).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def listing_digest(root: Path, contents_of: tuple[str, ...] = ()) -> str:
    """sha256 over the relative name and size of every file below root, plus the bytes of the
    files whose suffix is in `contents_of` (small metadata files). Modification times are
    left out on purpose (a copy on another machine is the same data), and so are the pixels
    (too slow for a key: a re-encoded image of exactly the same size would go unnoticed)."""
    h = hashlib.sha256()
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f"{path.relative_to(root)}:{path.stat().st_size}\n".encode())
            if path.suffix in contents_of:
                h.update(path.read_bytes())
    return h.hexdigest()
