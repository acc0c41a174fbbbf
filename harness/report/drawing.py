"""Drawing figures to files: PNG and PDF without timestamps (`save`), in forked worker
processes while the caller goes on (`Drawing`), and how many workers (`resolve_plot_workers`).
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from harness.store import atomic_write_bytes


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """PNG and PDF, without timestamps, so that the same data gives the same files."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        path = stem.with_suffix(f".{ext}")
        # drawn into memory, then written under a unique temporary name: two leaderboard
        # processes on one root once shared `.<name>.tmp` and both failed
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, metadata=metadata, dpi=100)
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


_PENDING: list[tuple[Path, Callable[[], Figure | None]]] = []


def _draw(stem: Path, build: Callable[[], Figure | None]) -> list[Path] | None:
    fig = build()
    return None if fig is None else save(fig, stem)


def _draw_one(k: int) -> list[Path] | None:  # in a forked worker
    return _draw(*_PENDING[k])


class Drawing:
    """Figures (file stem -> builder) being drawn; `result()` waits for them and returns
    stem -> [png, pdf], leaving out stems whose builder has nothing to show.

    With workers > 1 the figures are drawn by that many forked processes, started here, so
    the caller can go on with other work meanwhile: matplotlib holds the GIL, a figure
    costs ~0.5 s to lay out and save twice, and a leaderboard has a dozen. Forked workers
    inherit the builders and their data (nothing is pickled but the paths coming back).
    Otherwise (one worker, or no fork on this platform) `result()` draws them here."""

    def __init__(self, builders: dict[Path, Callable[[], Figure | None]], workers: int = 1):
        global _PENDING
        self.builders = builders
        self._pool = None
        fork = "fork" in multiprocessing.get_all_start_methods()
        if workers > 1 and len(builders) > 1 and fork:
            _PENDING = list(builders.items())
            try:  # the workers are forked now, with _PENDING as it is
                self._pool = multiprocessing.get_context("fork").Pool(min(workers, len(builders)))
                self._async = self._pool.map_async(_draw_one, range(len(builders)), chunksize=1)
            finally:
                _PENDING = []

    def result(self) -> dict[Path, list[Path]]:
        if self._pool is not None:
            try:
                results = self._async.get()
            finally:
                self.close()
        else:
            results = [_draw(stem, build) for stem, build in self.builders.items()]
        stems = list(self.builders)
        return {stem: paths for stem, paths in zip(stems, results, strict=True) if paths}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Drawing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def draw(
    builders: dict[Path, Callable[[], Figure | None]], workers: int = 1
) -> dict[Path, list[Path]]:
    """Builds and saves each figure (file stem -> builder) and waits for them (see Drawing)."""
    with Drawing(builders, workers) as drawing:
        return drawing.result()


def resolve_plot_workers(setting: int | str) -> int:
    """`plot_workers` of the leaderboard config: auto = the usable cores, at most 8."""
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, min(8, cores or 1))
    return max(1, int(setting))
