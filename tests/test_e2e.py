"""End to end through Hydra's command line, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch

from .conftest import ROOT, TINY, run_cli, run_rows


def finished_runs(results: Path) -> list[Path]:
    return sorted(p.parent for p in results.glob("runs/*/DONE"))


def test_seed_sweep_is_resumable_and_collected_once(tmp_path):
    results = tmp_path / "res"
    run_cli(["-m", "seed=0,1", *TINY, f"results_dir={results}"], cwd=tmp_path)
    runs = finished_runs(results)
    assert len(runs) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["res"]  # hydra's own files too
    assert (results / "multirun").is_dir()
    stamps = {p: (p / "DONE").stat().st_mtime_ns for p in runs}

    again = run_cli(["-m", "seed=0,1", *TINY, f"results_dir={results}"], cwd=tmp_path)
    log = again.stdout + again.stderr
    assert log.count("skip: run") == 2 and "epoch 0" not in log
    assert {p: (p / "DONE").stat().st_mtime_ns for p in finished_runs(results)} == stamps

    board = run_cli([f"results_dir={results}"], cwd=tmp_path, module="harness.leaderboard")
    table = pd.read_parquet(results / "table.parquet")
    assert table["run_id"].nunique() == 2 and set(table["seed"]) == {0, 1}
    ident = ["run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric"]
    assert not table.duplicated(ident).any()
    assert len(pd.read_csv(results / "table.csv")) == len(table)
    acc = table[
        (table["split"] == "id_test")
        & (table["metric"] == "accuracy")
        & (table["group_key"] == "")
        & (table["scorer"] == "")
    ]["value"]
    expected = f"{acc.mean():.3f} ± {acc.std(ddof=1):.3f}"
    page = (results / "leaderboard" / "maze.md").read_text()
    assert expected in page
    # the terminal shows the headline: the mean with its interval, not every table
    assert f"{acc.mean():.3f} [" in board.stdout and "## Headline: accuracy" in board.stdout
    assert "## Expected calibration error" not in board.stdout
    # short: the headline, where the files are, the page and how long it took
    assert "page:" in board.stdout and "took:" in board.stdout
    assert len(board.stdout.splitlines()) < 25, board.stdout
    assert "[maze](maze.md): 2 runs" in (results / "leaderboard" / "README.md").read_text()
    # the page and the plots the real rows support, and the scorer comparisons
    html = (results / "leaderboard" / "index.html").read_text()
    assert '"t_maze"' in html and "plots/maze/bars_accuracy.png" in html
    for name in ("bars_accuracy", "accuracy_on_the_line", "seed_spread_accuracy", "risk_coverage",
                 "reliability", "reliability_per_setting"):  # fmt: skip
        for ext in ("png", "pdf"):
            assert (results / "leaderboard" / "plots" / "maze" / f"{name}.{ext}").is_file()
    scorers = pd.read_csv(results / "leaderboard" / "scorer_comparisons.csv")
    assert set(scorers["baseline"]) == {"msp"} and (scorers["seeds"] == 2).all()


def test_evaluation_only_sweep_over_two_models_from_checkpoints(tmp_path):
    extra = tmp_path / "extra_conf" / "model"
    extra.mkdir(parents=True)
    for name in ["test_resnet", "test_convnext"]:
        path = tmp_path / f"{name}.pth"
        torch.save(timm.create_model(name, num_classes=4).state_dict(), path)
        (extra / f"local_{name}.yaml").write_text(
            f"name: {name}\npretrained: false\ncheckpoint: {path}\nkwargs: {{}}\n"
            "transform: timm\nlabel_map: null\n"
        )
    results = tmp_path / "res"
    args = [
        "-m",
        "model=local_test_resnet,local_test_convnext",
        *[o for o in TINY if not o.startswith("model.name=")],
        "trainer.epochs=0",
        f"results_dir={results}",
        f"hydra.searchpath=[file://{extra.parent}]",
    ]
    run_cli(args, cwd=tmp_path)
    runs = finished_runs(results)
    assert len(runs) == 2
    models = set()
    for run in runs:
        rows = run_rows(run)
        models |= set(rows["model"])
        assert set(rows["method"]) == {"none"}
        assert not (run / "checkpoints").exists()
        transform = json.loads((run / "transform.json").read_text())
        assert transform["kind"] == "timm"
        expected = timm.data.resolve_model_data_config(timm.create_model(rows["model"].iat[0]))
        assert transform["input_size"] == list(expected["input_size"])
    assert models == {"test_resnet", "test_convnext"}


def test_joblib_launcher_gives_the_same_numbers(tmp_path):
    run_cli(
        [
            "-m",
            "seed=0,1",
            *TINY,
            f"results_dir={tmp_path / 'joblib'}",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
        cwd=tmp_path,
    )
    run_cli([*TINY, "seed=1", f"results_dir={tmp_path / 'basic'}"], cwd=tmp_path)
    [basic] = finished_runs(tmp_path / "basic")
    joblib_runs = {p.name: p for p in finished_runs(tmp_path / "joblib")}
    assert len(joblib_runs) == 2 and basic.name in joblib_runs
    a = run_rows(basic)["value"]
    b = run_rows(joblib_runs[basic.name])["value"]
    pd.testing.assert_series_equal(a, b, check_exact=True)


# One real command line; tests/test_bad_input.py covers the other unknown names in process.
@pytest.mark.parametrize("group,name,listed", [("dataset", "nope", "maze")])
def test_unknown_plugin_names_list_the_available_ones(tmp_path, group, name, listed):
    proc = run_cli([f"{group}={name}", f"results_dir={tmp_path}"], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert f"Could not find '{group}/{name}'" in proc.stderr
    assert "Available options" in proc.stderr and listed in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_huggingface_datasets_keeps_its_name_and_maze_never_imports_wilds(tmp_path):
    """A stand-in for Hugging Face's `datasets` sits on the path; the harness runs from the
    repo root (whose `datasets/` folder is then on sys.path too) and must use neither."""
    stub = tmp_path / "site" / "datasets"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("WHO = 'huggingface'\n")
    script = f"""
import sys
sys.path.insert(1, {str(stub.parent)!r})
import datasets
assert datasets.WHO == 'huggingface', datasets
from hydra import compose, initialize_config_dir
from harness.run import run
with initialize_config_dir(config_dir={str(ROOT / "conf")!r}, version_base='1.3'):
    cfg = compose('config', overrides={[*TINY, f"results_dir={tmp_path / 'res'}"]!r})
summary = run(cfg)
assert not summary['skipped']
assert sys.modules['datasets'].WHO == 'huggingface'
assert 'wilds' not in sys.modules, 'a maze run imported wilds'
assert sys.modules['shiftbench_datasets.maze'].__file__.startswith({str(ROOT / "datasets")!r})
print('ok')
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


def test_the_wheel_installs_no_top_level_datasets_package(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ["pyproject.toml", "README.md", "harness", "methods", "datasets"]:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy(source, src / name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "shiftbench_datasets/maze.py" in names and "harness/run.py" in names
    assert not [n for n in names if n.split("/")[0] == "datasets"]
