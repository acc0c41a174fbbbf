"""A run directory's cached forward stage as the post-hoc stage reads it: each split's
Outputs loaded on demand (LazySplits), the metadata, benchmark.json and the stored head,
kept only if it reproduces the cached logits. Derived runs (probes, ensembles) read their
parents through it too."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.outputs import Head, Outputs
from harness.rundir import RunDir

# Relative tolerance for "head(features) reproduces the cached logits".
HEAD_RTOL = 1e-3


class LazySplits(Mapping[str, Any]):
    """A run's cached Outputs (or, with `load`, other per-split files) by split, each loaded
    when first asked for. The `pinned` splits (the ones scorers fit on and OOD metrics
    compare with) stay loaded; of the others, only the `keep` most recently used do, so
    that a run with 95 corruption splits holds a few splits' logits and features at a time
    instead of all of them (benchmarks/many_splits_memory.py). An evicted split is read
    again when asked again."""

    def __init__(
        self,
        paths: dict[str, Path],
        pinned: set[str],
        keep: int = 1,
        load: Callable[[Path], Any] = Outputs.load,
    ) -> None:
        self.paths, self.pinned, self.keep, self.load = paths, pinned, keep, load
        self._loaded: OrderedDict[str, Any] = OrderedDict()

    def __getitem__(self, split: str) -> Any:
        if split in self._loaded:
            self._loaded.move_to_end(split)
            return self._loaded[split]
        out = self.load(self.paths[split])  # KeyError for an unknown split, as a dict
        if split not in self.pinned:
            unpinned = [s for s in self._loaded if s not in self.pinned]
            for old in unpinned[: max(0, len(unpinned) - self.keep + 1)]:
                del self._loaded[old]
        self._loaded[split] = out
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def loaded(self) -> list[str]:
        return list(self._loaded)


@dataclass
class RunCache:
    """What a finished forward stage left in a run directory."""

    rd: RunDir
    info: dict[str, Any]  # identity columns of the run's rows
    bench: dict[str, Any]  # name, classes, group_cols, splits: {name: {role, forward_key}}
    outputs: Mapping[str, Outputs]  # LazySplits: loaded on access
    meta: Mapping[str, pd.DataFrame]  # likewise
    head: Head | None
    head_note: str

    @property
    def path(self) -> Path:
        return self.rd.path

    def output_path(self, split: str) -> Path:
        return self.rd.output_path(split, self.bench["splits"][split]["forward_key"])

    def role(self, split: str) -> str:
        return self.bench["splits"][split]["role"]

    def splits(self, *roles: str) -> list[str]:
        return [s for s, v in self.bench["splits"].items() if v["role"] in roles]


def load_run_cache(run_dir: str | Path) -> RunCache:
    rd = RunDir.at(run_dir)
    missing = [p.name for p in (rd.run_info_json, rd.benchmark_json) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{rd.path} is not a run directory with cached outputs (missing {', '.join(missing)})"
        )
    info = rd.read_run_info()
    bench = rd.read_benchmark()
    paths, meta_paths = {}, {}
    for split, spec in bench["splits"].items():
        paths[split] = rd.output_path(split, spec["forward_key"])
        meta_paths[split] = rd.meta(split)
        for what, file in (("cached outputs", paths[split]), ("metadata", meta_paths[split])):
            if not file.is_file():
                raise FileNotFoundError(f"{rd.path}: the {what} of split {split} are missing")
    reference_roles = ("train", "val", "id_test")
    pinned = {s for s, spec in bench["splits"].items() if spec["role"] in reference_roles}
    rows = {paths[split]: spec.get("n") for split, spec in bench["splits"].items()}
    outputs = LazySplits(paths, pinned, load=lambda path: Outputs.load(path, rows[path]))
    meta = LazySplits(meta_paths, set(), load=pd.read_parquet)  # read once per split
    head, note = _checked_head(rd.head, outputs)
    return RunCache(rd, info, bench, outputs, meta, head, note)


def _checked_head(path: Path, outputs: Mapping[str, Outputs]) -> tuple[Head | None, str]:
    """The stored head, only if it reproduces the cached logits from the cached features."""
    if not path.is_file():
        note = (
            json.loads(path.with_suffix(".json").read_text())["note"]
            if path.with_suffix(".json").is_file()
            else "no head stored"
        )
        return None, note
    with np.load(path) as z:
        head = Head(z["weight"].astype(np.float64), z["bias"].astype(np.float64))
    for split, out in outputs.items():
        feats, logits = out.features[:256].astype(np.float64), out.logits[:256].astype(np.float64)
        if feats.shape[1] != head.weight.shape[1]:
            return (
                None,
                f"features of {split} have width {feats.shape[1]}, head expects {head.weight.shape[1]}",
            )
        err = np.abs(head(feats) - logits).max(initial=0.0)
        scale = max(np.abs(logits).max(initial=0.0), 1.0)
        if err > HEAD_RTOL * scale:
            return None, (
                f"head(features) does not reproduce the cached logits of {split} "
                f"(max abs difference {err:.3g}); scorers that need the head are skipped"
            )
    return head, "head(features) reproduces the cached logits"
