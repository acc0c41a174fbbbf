"""The listing of finished post-hoc stages (`finished_stages`), split over forked workers.

Every leaderboard write starts with it: per run a stat of DONE, a scandir of posthoc/ and two
stats per stage (harness/rundir.py names the files; this module only walks them). Each
call is a few microseconds, so at 10,000 runs the listing costs ~0.2 s and at 100,000 runs
~2.8 s, mostly the interpreter's work between the system calls. Threads were measured and
lose (0.27-0.58 s against 0.21 at 10,000 runs: the GIL is handed over at every stat);
forked children each list a contiguous slice of the sorted run folders while this process
lists the first, and send back their slice's plain result, pickled through a pipe (no
interpreter start, no imports: 0.13 s at 10,000 runs on 2 cores). The result is exactly the
sequential one: the slices are joined in order and each is walked by the same code. A child
that fails for any reason leaves its slice to this process.
"""

from __future__ import annotations

import os
import pickle
import stat
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.rundir import (
    DONE,
    FAILED,
    FAILED_WHY,
    POSTHOC,
    SYMLINK_REFUSED,
    _subdirs,
    runs_root,
    stage_stat_identity,
)

# runs per forked child below which the fork (~5-15 ms with a large parent) is not worth it
MIN_FORKED = 2000
MAX_WORKERS = 4
# Python >= 3.12's warning at a fork of a process that has threads (bulkread's fork too)
FORK_WARNING = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"
NO_DONE = "incomplete (no DONE marker)"
NO_STAGE_DONE = "incomplete post-hoc stage (no DONE marker)"

Stages = dict[str, tuple[str, tuple[int, int]]]
# one slice's result: [(key, stage folder, identity)], [(path, why)], [link path]
Slice = tuple[list[tuple[str, str, tuple[int, int]]], list[tuple[str, str]], list[str]]


def finished_stages(
    results_dir: str | Path, workers: int | None = None
) -> tuple[Stages, list[tuple[Path, str]]]:
    """The finished post-hoc stages of finished runs, {"<run folder>/<eval_id>": (stage
    folder, identity)} in key order, where identity = rundir.stage_stat_identity (DONE and
    rows.parquet); and what was skipped (with why). No file is read: per run a stat of DONE,
    a scandir of posthoc/, two stats per stage relative to the open runs/ folder, plain
    strings. `workers`: processes to list in (None: by the number of runs and cores)."""
    root = str(runs_root(results_dir))
    links: list[str] = []
    names = _subdirs(root, links)
    if not names:
        return {}, [(Path(link), SYMLINK_REFUSED) for link in links]
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:  # one Slice per process's part of the names
        found = in_slices(lambda part: [_list_slice(root, fd, part)], names, workers)
    finally:
        os.close(fd)
    stages, skipped = {}, []
    for listed, passed, linked in found:
        stages.update((key, (path, identity)) for key, path, identity in listed)
        skipped.extend((Path(path), why) for path, why in passed)
        links.extend(linked)
    return stages, skipped + [(Path(link), SYMLINK_REFUSED) for link in links]


def in_slices(
    work: Callable[[list], list], items: list, workers: int | None = None, per_process: int = 0
) -> list:
    """work(items), a list with one result per item, computed slice by slice: from
    `per_process` items per process (default MIN_FORKED), each slice but the first by a
    forked child (as the listing is), joined in order; `workers` as in finished_stages."""
    if workers is None:
        per_process = per_process or MIN_FORKED
        workers = min(os.cpu_count() or 1, MAX_WORKERS, len(items) // per_process)
    workers = max(1, min(workers, len(items))) if hasattr(os, "fork") else 1
    bounds = [len(items) * i // workers for i in range(workers + 1)]
    slices = [items[bounds[i] : bounds[i + 1]] for i in range(workers)]
    return [result for part in _in_children(work, slices) for result in part]


def _in_children(work: Callable[[list], Any], slices: list[list]) -> list:
    """work of each slice but the first by a forked child, the first here meanwhile."""
    children = []
    for part in slices[1:]:
        try:
            read, write = os.pipe()
            with warnings.catch_warnings():
                # Python >= 3.12 warns at each fork of a process with threads (arrow's,
                # torch's): the fork is deliberate, the child only stats and writes a pipe
                warnings.filterwarnings("ignore", FORK_WARNING, DeprecationWarning)
                pid = os.fork()
        except OSError:  # no process to spare: this one lists the slice
            children.append((None, -1, part))
            continue
        if pid == 0:  # the child: list, send, leave without running any cleanup of the parent's
            code = 1
            try:
                os.close(read)
                with os.fdopen(write, "wb") as out:
                    out.write(pickle.dumps(work(part), protocol=5))
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        children.append((pid, read, part))
    results = [work(slices[0])]
    for pid, read, part in children:
        got = None
        if pid is not None:
            try:
                with os.fdopen(read, "rb") as source:
                    data = source.read()
                # a child that died before its last byte leaves a pickle that does not load
                got = pickle.loads(data) if data else None
            except (OSError, pickle.UnpicklingError, EOFError, ValueError):
                got = None
            _reap(pid)
        results.append(got if got is not None else work(part))
    return results


def _reap(pid: int) -> None:
    """Collect a child's exit: now when it is gone, else in a thread (the teardown of a large
    parent's copy takes ~15 ms that the listing need not wait for)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return
    if not done:
        threading.Thread(target=_wait_quietly, args=(pid,), daemon=True).start()


def _wait_quietly(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _list_slice(root: str, fd: int, names: list[str]) -> Slice:
    """finished_stages' walk over some run folders (sorted names under root; fd: root open)."""
    stages, skipped, links = [], [], []
    for name in names:
        if not _is_file(f"{name}/{DONE}", fd):
            why = FAILED_WHY if _is_file(f"{name}/{FAILED}", fd) else NO_DONE
            skipped.append((f"{root}/{name}", why))
            continue
        posthoc = f"{name}/{POSTHOC}"
        try:
            with os.scandir(f"{root}/{posthoc}") as found:
                entries = list(found)
        except (FileNotFoundError, NotADirectoryError):
            continue
        real = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        if len(real) < len(entries):  # a file or a link there: _subdirs' rules for links
            _subdirs(f"{root}/{posthoc}", links)
        for stage in real:
            path = f"{posthoc}/{stage}"
            try:
                stages.append((f"{name}/{stage}", f"{root}/{path}", stage_stat_identity(path, fd)))
            except FileNotFoundError:
                skipped.append((f"{root}/{path}", NO_STAGE_DONE))
    return stages, skipped, links


def _is_file(path: str, dir_fd: int) -> bool:  # os.path.isfile, relative to an open folder
    try:
        return stat.S_ISREG(os.stat(path, dir_fd=dir_fd).st_mode)
    except (OSError, ValueError):
        return False
