"""Pins and golden numbers: the safety net of every refactor.

Keys that are pinned prove that nothing is recomputed (a finished run is found again by its
run_id, a cache file by its forward key, a post-hoc stage by its eval_id); golden numbers
prove that nothing changed (every `value` and `n` of a tiny fixed set of runs, bit for bit,
and the leaderboard's summary.csv and comparisons.csv). A change that moves a key must
extend KEYS on purpose; a change that moves a number bumps RESULTS_VERSION, regenerates the
golden files (`SHIFTBENCH_UPDATE_GOLDEN=1 pytest tests/test_pins.py`) and says why in
its note. The golden numbers are made on the AVX2 code path (tests/conftest.py pins it), so
they hold on any x86-64 machine with AVX2, not only the one that wrote them, with
requirements.lock's numerical stack: with another torch (e.g. a GPU machine's own build) they
are skipped, saying which versions differ; SHIFTBENCH_REQUIRE_GOLDEN=1 (.ci/run) makes that a
failure, so CI can never skip them.

Everything is read from the run directories' files (key.json, benchmark.json, DONE,
rows.parquet): the layout of results/ is itself part of what is pinned.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import CONF, ROOT, TINY, compose_config

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SHIFTBENCH_UPDATE_GOLDEN") == "1"

# name -> overrides (after TINY). Each is run in the same results directory.
CONFIGS: dict[str, list[str]] = {
    "maze_erm_s0": [],
    "maze_erm_s1": ["seed=1"],
    "maze_label_smoothing_s0": ["method=label_smoothing"],
    "maze_label_smoothing_s1": ["method=label_smoothing", "seed=1"],
    "coloured_digits_group_dro": ["dataset=coloured_digits", "method=group_dro"],
    "maze_tta_bn_adapt": ["tta=bn_adapt"],
    "maze_eval_only": ["trainer.epochs=0", "model.label_map=[0,1,2,3]"],
    "coloured_digits_jtt": ["dataset=coloured_digits", "method=jtt"],
    "maze_hparams_seed_3_s0": ["method=label_smoothing", "hparams_seed=3"],
    "maze_hparams_seed_3_s1": ["method=label_smoothing", "hparams_seed=3", "seed=1"],
    "digits_c_ood_sets": [
        "dataset=digits_c",
        "dataset.families=[noise]",
        "dataset.severities=[1]",
        "ood_sets=[{name: flat, root: OOD}]",
    ],
}
IDENTITY = ["run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric"]
# What the numbers depend on besides this repository (training, model init, metrics).
NUMERIC_STACK = ["torch", "torchvision", "timm", "numpy", "scikit-learn", "scipy"]


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not name.startswith("#"):
            pins[name.strip().lower()] = version.strip()
    return pins


def _stack_differences() -> list[str]:
    """The numerical stack's packages whose installed version is not the lock's."""
    pins = _lock_pins()
    have = {name: importlib.metadata.version(name).split("+")[0] for name in NUMERIC_STACK}
    return [f"{n} {have[n]} (lock: {pins[n]})" for n in NUMERIC_STACK if have[n] != pins[n]]


@pytest.fixture
def numbers_pinned_here() -> None:
    differences = _stack_differences()
    if not differences:
        return
    why = (
        f"golden numbers are pinned for requirements.lock's versions; here {', '.join(differences)}"
    )
    if os.environ.get("SHIFTBENCH_REQUIRE_GOLDEN") == "1":
        pytest.fail(why)
    pytest.skip(why)


def test_the_numerical_stack_is_named_in_the_lock():
    assert set(NUMERIC_STACK) <= set(_lock_pins())


def _run_all(root: Path) -> dict[str, dict]:
    from shiftbench_datasets.folders import write_flat_folder

    from harness import run as run_mod

    write_flat_folder(root / "ood", n=3)
    summaries = {}
    for name, overrides in CONFIGS.items():
        overrides = [o.replace("root: OOD", f"root: {root / 'ood'}") for o in overrides]
        cfg = compose_config(
            [*TINY, f"results_dir={root / 'results'}", f"cache_dir={root / 'cache'}", *overrides]
        )
        summaries[name] = run_mod.run(cfg)
    return summaries


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    import torch
    from omegaconf import OmegaConf

    from harness.leaderboard import leaderboard_options, write_leaderboard

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pins")
    summaries = _run_all(root)
    options = leaderboard_options(OmegaConf.to_container(OmegaConf.load(CONF / "leaderboard.yaml")))
    write_leaderboard(root / "results", **{**options, "outputs": ["markdown"], "plot_workers": 1})
    return root / "results", summaries


def _run_keys(run_dir: Path) -> dict:
    key = json.loads((run_dir / "key.json").read_text())
    bench = json.loads((run_dir / "benchmark.json").read_text())
    eval_id = json.loads((run_dir / "DONE").read_text())["eval_id"]
    rows = pd.read_parquet(run_dir / "posthoc" / eval_id / "rows.parquet")
    posthoc = rows.groupby("split")["posthoc_key"].unique()
    return {
        "run_id": key["run_id"],
        "setting_id": key["setting_id"],
        "forward_keys": {s: v["forward_key"] for s, v in sorted(bench["splits"].items())},
        "eval_id": eval_id,
        "posthoc_keys": {s: sorted(v)[0] for s, v in posthoc.items() if len(v) == 1},
        "rows_without_one_posthoc_key": sorted(s for s, v in posthoc.items() if len(v) != 1),
    }


def _observed(results: Path, summaries: dict[str, dict]) -> dict:
    by_name = {name: _run_keys(results / "runs" / s["run_id"]) for name, s in summaries.items()}
    named = {s["run_id"] for s in summaries.values()}
    # runs made along the way (JTT's stage one, the TTA run's trained run), by run_id
    derived = {
        p.name: _run_keys(p) for p in sorted((results / "runs").iterdir()) if p.name not in named
    }
    return {"runs": by_name, "derived": derived}


def _default_keys() -> dict:
    """Keys of full-size default configs, computed without running (no data is loaded)."""
    from omegaconf import OmegaConf

    from harness.keys import eval_id, make_keys
    from harness.run import build_dataset, run_payload

    out = {}
    for name, overrides in {
        "maze_default": [],
        "coloured_digits_group_dro": ["dataset=coloured_digits", "method=group_dro"],
        "maze_eval_only": ["trainer.epochs=0", "model.label_map=[0,1,2,3]"],
        "maze_tent": ["tta=tent"],
    }.items():
        c = OmegaConf.to_container(compose_config(overrides), resolve=True)
        keys = make_keys(run_payload(c, build_dataset(c)))
        out[name] = {"run_id": keys.run_id, "setting_id": keys.setting_id}
    for name in ("default", "minimal", "full"):
        c = OmegaConf.to_container(compose_config([f"eval={name}"]), resolve=True)
        out[f"eval_id_{name}"] = eval_id(c["eval"])
    return out


def _check_or_write(path: Path, observed: dict) -> None:
    if UPDATE:
        path.write_text(json.dumps(observed, indent=1, sort_keys=True) + "\n")
    pinned = json.loads(path.read_text())
    assert observed == pinned, f"keys moved; see the diff against {path}"


def test_keys_of_default_configs_are_pinned():
    _check_or_write(GOLDEN / "default_keys.json", _default_keys())


def test_keys_of_every_kind_of_run_are_pinned(store):
    results, summaries = store
    observed = _observed(results, summaries)
    # the derived runs exist: JTT's stage one and the TTA run's trained run (the same
    # config as maze_erm_s0, so it is that run, not a new one)
    assert len(observed["derived"]) == 1
    _check_or_write(GOLDEN / "keys.json", observed)


def _golden_rows(results: Path) -> pd.DataFrame:
    from harness.table import collect

    table, skipped = collect(results)
    assert not skipped
    table = table[IDENTITY + ["value", "n"]].copy()
    table["value"] = table["value"].astype("float64")
    table["n"] = table["n"].astype("int64")
    return table.sort_values(IDENTITY, kind="stable").reset_index(drop=True)


def test_golden_numbers_are_bit_for_bit(numbers_pinned_here, store):
    results, _ = store
    observed = _golden_rows(results)
    path = GOLDEN / "pinned_rows.parquet"
    if UPDATE:
        observed.to_parquet(path, index=False)
    golden = pd.read_parquet(path)
    assert len(observed) > 1000  # every kind of row is there, not a handful
    pd.testing.assert_frame_equal(
        observed[IDENTITY], golden[IDENTITY], check_dtype=False, obj="row identities"
    )
    moved = observed["value"].to_numpy().view(np.int64) != golden["value"].to_numpy().view(np.int64)
    assert not moved.any(), (
        f"values moved:\n{observed[moved].head(20)}\nwas\n{golden[moved].head(20)}"
    )
    assert (observed["n"].to_numpy() == golden["n"].to_numpy()).all()


@pytest.mark.parametrize("name", ["summary.csv", "comparisons.csv"])
def test_golden_leaderboard_tables_are_byte_for_byte(numbers_pinned_here, store, name):
    results, _ = store
    observed = (results / "leaderboard" / name).read_text()
    path = GOLDEN / f"pinned_{name}"
    if UPDATE:
        path.write_text(observed)
    assert len(observed.splitlines()) > 5
    assert observed == path.read_text(), f"{name} moved"
