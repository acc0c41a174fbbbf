"""The embedded maze benchmark: generated offline with maze-dataset, no download.

ID mazes come from one generator and grid size; each shifted test split changes one
generation factor (generator, percolation loops, grid size). The target is the solution's
path length, binned into classes by fixed thresholds (default: about the quartiles of the
ID training distribution). Images are drawn by this module: walls black, corridors white,
start green, end red and, with `draw_solution` (the default), the solution path blue, so
the model measures the drawn path: a global quantity, unlike a local cue such as the first
step, and one whose appearance shifts with the generator, loops and grid size. With
`draw_solution=false` the task becomes solving the maze (much harder; ERM learns little in
the demo's budget). Every split shares one canvas (smaller grids are centred with wall
padding), optionally upscaled by an integer factor.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.data import Benchmark, DatasetAdapter, array_split, hash_arrays
from harness.store import atomic_save_npz, atomic_write_parquet

# Bump when the drawing or the labels change: it is part of the data fingerprint.
RASTER_VERSION = 1
TARGETS = ("path_length", "first_step")
STEP_NAMES = {(-1, 0): "up", (1, 0): "down", (0, -1): "left", (0, 1): "right"}
WALL, OPEN = 0, 255
START_RGB, END_RGB, SOLUTION_RGB = (0, 255, 0), (255, 0, 0), (0, 0, 255)


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """maze-dataset reseeds Python's, NumPy's global RNGs when a config is built; keep ours."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def generate_mazes(generator: str, grid_n: int, n: int, seed: int, kwargs: dict | None) -> list:
    """`n` solved mazes from maze-dataset, in memory only (never written to ./data)."""
    from maze_dataset import LatticeMazeGenerators, MazeDataset, MazeDatasetConfig

    if not hasattr(LatticeMazeGenerators, generator):
        options = sorted(m for m in dir(LatticeMazeGenerators) if m.startswith("gen_"))
        raise ValueError(f"maze generator {generator!r} does not exist; choose one of {options}")
    with preserved_global_rng(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "seed is trying to override GLOBAL_SEED": intended
        cfg = MazeDatasetConfig(
            name=f"{generator}-g{grid_n}-s{seed}",
            grid_n=grid_n,
            n_mazes=n,
            maze_ctor=getattr(LatticeMazeGenerators, generator),
            maze_ctor_kwargs=dict(kwargs or {}),
            seed=seed,
        )
        dataset = MazeDataset.from_config(
            cfg, do_download=False, load_local=False, save_local=False, verbose=False
        )
    return list(dataset)


def draw_maze(maze: Any, canvas: int, draw_solution: bool = False) -> np.ndarray:
    """canvas×canvas×3 uint8 image of a solved maze, centred, with endpoints painted.

    Drawn from the connection list rather than maze-dataset's as_pixels, which does not
    paint the endpoints of a SolvedMaze and draws the solution (which would give the
    answer away).
    """
    conn = np.asarray(maze.connection_list, dtype=bool)  # [0]: (i,j)-(i+1,j), [1]: (i,j)-(i,j+1)
    n = conn.shape[1]
    size = 2 * n + 1
    if size > canvas:
        raise ValueError(f"a {n}x{n} maze needs a canvas of at least {size} pixels, got {canvas}")
    grid = np.full((size, size), WALL, dtype=np.uint8)
    grid[1::2, 1::2] = OPEN
    down = conn[0][: n - 1, :]
    right = conn[1][:, : n - 1]
    grid[2 : 2 * n - 1 : 2, 1::2][down] = OPEN
    grid[1::2, 2 : 2 * n - 1 : 2][right] = OPEN
    image = np.repeat(grid[:, :, None], 3, axis=2)
    if draw_solution:
        path = np.asarray(maze.solution)
        for (ai, aj), (bi, bj) in zip(path[:-1], path[1:], strict=True):
            image[ai + bi + 1, aj + bj + 1] = SOLUTION_RGB  # the corridor between two cells
        for i, j in path:
            image[2 * i + 1, 2 * j + 1] = SOLUTION_RGB
    (si, sj), (ei, ej) = maze.start_pos, maze.end_pos
    image[2 * si + 1, 2 * sj + 1] = START_RGB
    image[2 * ei + 1, 2 * ej + 1] = END_RGB
    out = np.full((canvas, canvas, 3), WALL, dtype=np.uint8)
    offset = (canvas - size) // 2
    out[offset : offset + size, offset : offset + size] = image
    return out


def describe_maze(maze: Any) -> dict[str, Any]:
    """Per-example metadata that later plots can use to explain a shift."""
    conn = np.asarray(maze.connection_list, dtype=bool)
    n = conn.shape[1]
    degree = np.zeros((n, n), dtype=np.int64)
    degree[:-1, :] += conn[0][:-1, :]
    degree[1:, :] += conn[0][:-1, :]
    degree[:, :-1] += conn[1][:, :-1]
    degree[:, 1:] += conn[1][:, :-1]
    solution = np.asarray(maze.solution)
    step = tuple(int(v) for v in solution[1] - solution[0])
    start, end = np.asarray(maze.start_pos), np.asarray(maze.end_pos)
    return {
        "path_length": int(len(solution)),
        "manhattan": int(np.abs(start - end).sum()),
        "dead_ends": int((degree == 1).sum()),
        "n_connections": int(conn.sum()),
        "first_step": STEP_NAMES[step],
    }


class MazeShift(DatasetAdapter):
    """Adapter for the maze benchmark; options come from conf/dataset/maze.yaml."""

    path_options = ()

    def __init__(
        self,
        name: str = "maze",
        limit: int | None = None,
        splits: dict[str, dict[str, Any]] | None = None,
        target: str = "path_length",
        thresholds: list[int] | None = None,
        scale: int = 1,
        draw_solution: bool = False,
        group_cols: list[str] | None = None,
    ) -> None:
        if not splits:
            raise ValueError("dataset.splits is empty: the maze benchmark needs split specs")
        if target not in TARGETS:
            raise ValueError(f"dataset.target must be one of {TARGETS}, got {target!r}")
        if target == "path_length" and not thresholds:
            raise ValueError("dataset.thresholds is required for target=path_length")
        seeds = [int(spec["seed"]) for spec in splits.values()]
        if len(set(seeds)) != len(seeds):
            # maze-dataset gives identical mazes for equal seeds: ID and shifted sets would overlap.
            raise ValueError(f"dataset.splits must have distinct seeds, got {seeds}")
        roles = [spec.get("role") for spec in splits.values()]
        if roles.count("train") != 1:
            raise ValueError(
                f"dataset.splits needs exactly one split with role 'train', got {roles}"
            )
        self.splits = {k: dict(v) for k, v in splits.items()}
        self.target = target
        self.thresholds = list(thresholds or [])
        self.scale = int(scale)
        self.draw_solution = bool(draw_solution)
        self.group_cols = list(group_cols if group_cols is not None else ["label"])
        self.canvas = 2 * max(int(s["grid_n"]) for s in self.splits.values()) + 1

    def augmentation_refusals(self) -> dict[str, str]:
        refused = {"crop": "a crop cuts walls, the start or the goal out of the maze"}
        if self.target == "first_step":
            turn = "the first step's direction is the label: it would no longer match the image"
            refused.update(hflip=turn, vflip=turn, geometric=turn)
        return refused

    def fingerprint(self) -> str:
        # Generation is deterministic given the specs and the package version.
        return hash_arrays(
            self.key_config(),
            importlib.metadata.version("maze-dataset"),
            RASTER_VERSION,
        )

    @property
    def classes(self) -> list[str]:
        if self.target == "first_step":
            return list(STEP_NAMES.values())
        edges = [1, *[t + 1 for t in self.thresholds]]
        names = [f"len{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        return [*names, f"len{edges[-1]}+"]

    def label_of(self, info: dict[str, Any]) -> int:
        if self.target == "first_step":
            return list(STEP_NAMES.values()).index(info["first_step"])
        return int(np.searchsorted(self.thresholds, info["path_length"], side="left"))

    def _build_split(self, name: str, spec: dict[str, Any]) -> tuple[np.ndarray, pd.DataFrame]:
        n = int(spec["n"]) if self.limit is None else min(int(spec["n"]), self.limit)
        mazes = generate_mazes(
            spec["generator"], int(spec["grid_n"]), n, int(spec["seed"]), spec.get("kwargs")
        )
        images = np.stack([draw_maze(m, self.canvas, self.draw_solution) for m in mazes])
        if self.scale > 1:
            images = images.repeat(self.scale, axis=1).repeat(self.scale, axis=2)
        rows = []
        for maze in mazes:
            info = describe_maze(maze)
            rows.append(
                {
                    "label": self.label_of(info),
                    **info,
                    "generator": spec["generator"],
                    "grid_n": int(spec["grid_n"]),
                    "percolation_p": float((spec.get("kwargs") or {}).get("p", 0.0)),
                }
            )
        return images, pd.DataFrame(rows)

    def _read_cache(self, images_path: Path, meta_path: Path):
        """The cached split, or (None, None) when absent. The cache is derived data: a
        truncated or mismatched file is regenerated, with a warning that names it."""
        if not (images_path.exists() and meta_path.exists()):
            return None, None
        try:
            with np.load(images_path) as z:
                images = z["images"]
            meta = pd.read_parquet(meta_path)
            size = self.canvas * self.scale
            missing = {"label", "path_length", "generator", "grid_n"} - set(meta.columns)
            if missing:
                raise ValueError(f"{meta_path} lacks columns {sorted(missing)}")
            if images.shape[1:] != (size, size, 3) or len(images) != len(meta):
                raise ValueError(
                    f"{images_path} holds {images.shape}, expected ({len(meta)}, {size}, {size}, 3)"
                )
        except Exception as exc:
            warnings.warn(f"maze cache unreadable, regenerating it: {exc}", stacklevel=2)
            return None, None
        return images, meta

    def load(self, cache_dir: Path) -> Benchmark:
        cache = Path(cache_dir) / "maze" / self.fingerprint()[:16]
        splits = {}
        for name, spec in self.splits.items():
            images_path, meta_path = cache / f"{name}.npz", cache / f"{name}.parquet"
            images, meta = self._read_cache(images_path, meta_path)
            if images is None:
                images, meta = self._build_split(name, spec)
                atomic_save_npz(images_path, images=images)
                atomic_write_parquet(meta, meta_path)
            info = {"factor": spec.get("factor", "none"), "generator": spec["generator"]}
            splits[name] = array_split(name, spec["role"], images, meta, info=info)
        size = self.canvas * self.scale
        return Benchmark(
            name=self.name,
            classes=self.classes,
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(size, size),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            info={"target": self.target, "thresholds": self.thresholds},
        )
