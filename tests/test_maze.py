"""The embedded maze benchmark, checked against maze-dataset's own rendering."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import yaml
from shiftbench_datasets import maze as maze_mod
from shiftbench_datasets.maze import MazeShift, draw_maze, generate_mazes

from harness.data import Benchmark

from .conftest import CONF

ASCII_OF_RGB = {
    (0, 0, 0): "#",
    (255, 255, 255): " ",
    (0, 0, 255): "X",
    (0, 255, 0): "S",
    (255, 0, 0): "E",
}


def maze_config(**changes) -> dict:
    cfg = yaml.safe_load((CONF / "dataset" / "maze.yaml").read_text())
    cfg.pop("_target_")
    cfg.update(changes)
    return cfg


@pytest.mark.parametrize(
    "generator,kwargs", [("gen_dfs", None), ("gen_dfs_percolation", {"p": 0.3})]
)
def test_drawing_matches_maze_dataset_ascii(generator, kwargs):
    for maze in generate_mazes(generator, 5, 4, seed=7, kwargs=kwargs):
        image = draw_maze(maze, canvas=11, draw_solution=True)
        ours = ["".join(ASCII_OF_RGB[tuple(px)] for px in row) for row in image]
        assert ours == maze.as_ascii().splitlines()


def test_smaller_grid_is_centred_with_wall_padding():
    maze = generate_mazes("gen_dfs", 4, 1, seed=3, kwargs=None)[0]
    image = draw_maze(maze, canvas=13)
    assert image.shape == (13, 13, 3)
    assert (image[:2] == 0).all() and (image[-2:] == 0).all()
    assert (image[:, :2] == 0).all() and (image[:, -2:] == 0).all()
    assert (image[2:11, 2:11] == draw_maze(maze, canvas=9)).all()
    # without the solution drawn, start and end are still painted
    assert (image == (0, 255, 0)).all(axis=2).sum() == 1
    assert (image == (255, 0, 0)).all(axis=2).sum() == 1
    assert not (image == (0, 0, 255)).all(axis=2).any()


def test_benchmark_splits_labels_and_metadata(tmp_path):
    bench = MazeShift(**maze_config(limit=20)).load(tmp_path)
    assert isinstance(bench, Benchmark)
    roles = {name: s.role for name, s in bench.splits.items()}
    assert roles == {
        "train": "train",
        "val": "val",
        "id_test": "id_test",
        "wilson": "shift_test",
        "percolation": "shift_test",
        "grid8": "shift_test",
    }
    assert bench.classes == ["len1-6", "len7-10", "len11-16", "len17+"]
    for split in bench.splits.values():
        assert len(split) == 20
        meta = split.meta
        expected = np.searchsorted([6, 10, 16], meta["path_length"], side="left")
        assert (meta["label"].to_numpy() == expected).all()
        assert {"path_length", "manhattan", "dead_ends", "generator", "grid_n"} <= set(meta)
        image, label, index = split[3]
        assert image.shape == (17, 17, 3) and image.dtype == np.uint8
        assert label == meta["label"].iat[3] and index == 3
        # the solution is drawn: one blue pixel per cell of the path and per corridor between
        assert (image == (0, 0, 255)).all(axis=2).sum() == 2 * meta["path_length"].iat[3] - 3
    assert set(bench.splits["grid8"].meta["grid_n"]) == {8}
    assert set(bench.splits["wilson"].meta["generator"]) == {"gen_wilson"}
    assert set(bench.splits["percolation"].meta["percolation_p"]) == {0.2}
    assert bench.splits["grid8"].info["factor"] == "grid_size"
    # ID and shifted mazes come from distinct seeds: no image repeats across train and id_test
    train = {bench.splits["train"].load_image(i).tobytes() for i in range(20)}
    assert not train & {bench.splits["id_test"].load_image(i).tobytes() for i in range(20)}


def test_generation_keeps_global_rngs_and_writes_nothing_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    generate_mazes("gen_wilson", 4, 3, seed=11, kwargs=None)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert list(tmp_path.iterdir()) == []


def test_cache_is_reused_and_fingerprint_tracks_options(tmp_path, monkeypatch):
    adapter = MazeShift(**maze_config(limit=8))
    first = adapter.load(tmp_path)
    calls = []
    monkeypatch.setattr(maze_mod, "generate_mazes", lambda *a, **k: calls.append(a) or [])
    second = MazeShift(**maze_config(limit=8)).load(tmp_path)
    assert calls == []
    assert (first.splits["val"].load_image(5) == second.splits["val"].load_image(5)).all()
    assert adapter.fingerprint() == MazeShift(**maze_config(limit=8)).fingerprint()
    assert adapter.fingerprint() != MazeShift(**maze_config(limit=9)).fingerprint()
    assert (
        adapter.fingerprint()
        != MazeShift(**maze_config(limit=8, thresholds=[5, 10, 16])).fingerprint()
    )


def test_bad_specs_are_refused_clearly():
    cfg = maze_config()
    cfg["splits"]["val"]["seed"] = cfg["splits"]["train"]["seed"]
    with pytest.raises(ValueError, match="distinct seeds"):
        MazeShift(**cfg)
    with pytest.raises(ValueError, match="dataset.target"):
        MazeShift(**maze_config(target="colour"))
    with pytest.raises(ValueError, match="dataset.limit"):
        MazeShift(**maze_config(limit=0))
    with pytest.raises(ValueError, match="generator 'gen_nope' does not exist"):
        generate_mazes("gen_nope", 4, 1, seed=1, kwargs=None)


def test_first_step_target(tmp_path):
    bench = MazeShift(**maze_config(limit=12, target="first_step")).load(tmp_path)
    meta = bench.splits["train"].meta
    assert bench.classes == ["up", "down", "left", "right"]
    assert [bench.classes[i] for i in meta["label"]] == list(meta["first_step"])
