"""The leaderboard's plots, drawn again only when what they show changed: per dataset, a
key of its rows (their content, not their order), the options, matplotlib's version and
PLOTS_VERSION, kept beside the files in <out_dir>/.plots.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.keys import content_hash
from harness.report.drawing import Drawing
from harness.report.plots import PLOTS_VERSION, plot_builders
from harness.store import atomic_write_json

PLOT_KEY_COLUMNS = [
    "run_id",
    "eval_id",
    "split",
    "scorer",
    "metric",
    "group_key",
    "group_value",
    "value",
    "n",
]


def _plot_key(rows: pd.DataFrame, primary_metric: str, baseline: str) -> str:
    """What a dataset's plots depend on: the rows' content (not their order), the options
    and matplotlib's version."""
    import matplotlib

    hashed = pd.util.hash_pandas_object(
        rows[[c for c in PLOT_KEY_COLUMNS if c in rows.columns]], index=False
    )
    return content_hash(
        {
            "rows": hashlib.sha256(np.sort(hashed.to_numpy()).tobytes()).hexdigest(),
            "primary_metric": primary_metric,
            "baseline": baseline,
            "matplotlib": matplotlib.__version__,
            "plots": PLOTS_VERSION,
        }
    )


def _drawn_already(out_dir: Path, key: str) -> dict[str, list[Path]] | None:
    try:
        previous = json.loads((out_dir / ".plots.json").read_text())
        files = {name: [out_dir / f for f in names] for name, names in previous["files"].items()}
        if previous["key"] == key and all(p.is_file() for ps in files.values() for p in ps):
            return files
    except (OSError, ValueError, KeyError):
        pass
    return None


class CachedPlots:
    """The plots of each dataset (out_dir -> (its rows, its agg, primary metric, baseline)),
    drawn only where the same rows and options did not draw the files already there
    (out_dir/.plots.json): plots are most of a rebuild's time, and a sweep usually adds
    runs to one dataset only. What must be drawn starts at once, in `workers` processes;
    `result()` waits for it and returns out_dir -> name -> [png, pdf]."""

    def __init__(
        self,
        jobs: dict[Path, tuple[pd.DataFrame, pd.DataFrame, str, str]],
        results_dir: Path,
        workers: int = 1,
    ) -> None:
        self.files: dict[Path, dict[str, list[Path]]] = {}
        self.keys: dict[Path, str] = {}
        builders = {}
        for out_dir, (rows, agg, primary_metric, baseline) in jobs.items():
            key = _plot_key(rows, primary_metric, baseline)
            drawn = _drawn_already(out_dir, key)
            if drawn is not None:
                self.files[out_dir] = drawn
                continue
            self.keys[out_dir] = key
            for name, build in plot_builders(
                rows, agg, results_dir, primary_metric, baseline
            ).items():
                builders[out_dir / name] = build
        self.drawing = Drawing(builders, workers)

    def result(self) -> dict[Path, dict[str, list[Path]]]:
        written = self.drawing.result()
        for out_dir, key in self.keys.items():
            mine = {stem.name: paths for stem, paths in written.items() if stem.parent == out_dir}
            names = {name: [p.name for p in paths] for name, paths in mine.items()}
            atomic_write_json(out_dir / ".plots.json", {"key": key, "files": names})
            self.files[out_dir] = mine
        return self.files

    def __enter__(self) -> CachedPlots:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drawing.close()
