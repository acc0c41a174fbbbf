"""The consolidated store's files read into the page cache in the background.

A store evicted from memory (other work on the machine, a reboot) would otherwise come back
page fault by page fault of its memory mapping, scattered over the columns as the report
touches them: at 100,000 runs (1.6 GB of rows) a leaderboard call took 10.5-12.4 s against
8.2-8.7 s with this read started first, in sequential windows, while the run folders are
listed (docs/benchmarks.md). On pages already cached each request returns at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from harness.rowstore import MANIFEST, store_dir

# one POSIX_FADV_WILLNEED reads at most ~8 MB here (the kernel's cap), not the whole file
WINDOW = 8 << 20


def prefetch(results_dir: str | Path) -> threading.Thread | None:
    """Has the current generation's files (MANIFEST.json's data files and index) read into
    the page cache by a background thread, which is returned; None when there is no store
    to read or no posix_fadvise (macOS)."""
    try:
        manifest = json.loads((store_dir(results_dir) / MANIFEST).read_text())
        names = [*manifest["files"].values(), manifest["index"]]
        paths = [store_dir(results_dir) / name for name in names]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not hasattr(os, "posix_fadvise"):
        return None
    thread = threading.Thread(target=_will_need, args=(paths,), daemon=True)
    thread.start()
    return thread


def _will_need(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):  # a file gone meanwhile: the reader will say so
            fd = os.open(path, os.O_RDONLY)
            try:
                for offset in range(0, os.fstat(fd).st_size, WINDOW):
                    os.posix_fadvise(fd, offset, WINDOW, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
