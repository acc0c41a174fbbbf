"""Integrity of a results root under stray copies, races, tampering and typos (issue 24):
sweeps that share a second, a misspelt sweep objective, a damaged post-hoc stage, merging
two roots, symlinks under runs/, stored configs that are never instantiated."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .conftest import TINY, run_cli

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTDATED_IGNORE": "1"}


def sweep(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "harness.run", "-m", *TINY, "sweep_end.leaderboard=false", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_sweeps_started_in_the_same_second_keep_their_own_folders_and_counts(tmp_path):
    results = tmp_path / "res"
    # one sweep whose only job fails, one whose two jobs finish, started together: with a
    # folder named by the second alone they overwrote each other's job_status.json
    failing = sweep([f"results_dir={results}", "seed=5", "trainer.optimizer.lr=1e30"], tmp_path)
    fine = sweep([f"results_dir={results}", "seed=6,7"], tmp_path)
    out_failing = failing.communicate(timeout=600)[0]
    out_fine = fine.communicate(timeout=600)[0]
    assert failing.returncode != 0, out_failing
    assert "sweep: 1 jobs: 0 finished, 0 skipped" in out_failing and "1 failed" in out_failing
    assert fine.returncode == 0, out_fine
    assert "sweep: 2 jobs: 2 finished, 0 skipped" in out_fine and "0 failed" in out_fine
    folders = sorted((results / "multirun").iterdir())
    assert len(folders) == 2, folders
    assert sorted(len(list(f.glob("*/job_status.json"))) for f in folders) == [1, 2]


def test_a_sweep_folder_given_twice_is_refused_while_in_use_and_counts_only_its_jobs(tmp_path):
    results, shared = tmp_path / "res", tmp_path / "shared"
    first = sweep([f"results_dir={results}", f"hydra.sweep.dir={shared}", "seed=0,1,2"], tmp_path)
    deadline = time.time() + 300
    while not (shared / "LOCK").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert (shared / "LOCK").exists(), "the first sweep never claimed its folder"
    second = run_cli(
        ["-m", *TINY, f"results_dir={results}", f"hydra.sweep.dir={shared}", "seed=3"],
        cwd=tmp_path,
        check=False,
    )
    out_first = first.communicate(timeout=600)[0]
    assert first.returncode == 0 and "sweep: 3 jobs: 3 finished" in out_first, out_first
    assert second.returncode != 0
    assert f"hydra.sweep.dir={shared} is in use by another sweep" in second.stderr + second.stdout
    assert not (shared / "LOCK").exists()  # released at the sweep's end
    # reused by hand once the first sweep ended: the earlier jobs' statuses are not counted
    third = run_cli(
        [
            "-m",
            *TINY,
            f"results_dir={results}",
            f"hydra.sweep.dir={shared}",
            "seed=9",
            "trainer.optimizer.lr=1e30",
            "sweep_end.leaderboard=false",
        ],
        cwd=tmp_path,
        check=False,
    )
    assert third.returncode != 0
    assert "sweep: 1 jobs: 0 finished, 0 skipped" in third.stdout and "1 failed" in third.stdout


def test_a_misspelt_sweep_objective_is_refused_before_training(tmp_path, monkeypatch):
    import pytest

    from harness import run as run_mod
    from harness import train as train_mod

    from .conftest import compose_config

    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=r"sweep_objective must be <split>/<metric>"):
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "sweep_objective=accuracy"]))
    assert not list(tmp_path.glob("runs/*"))  # refused before anything is written
    typo = [*TINY, f"results_dir={tmp_path}", "sweep_objective=val/acuracy"]
    with pytest.raises(ValueError) as exc:
        run_mod.run(compose_config(typo))
    message = str(exc.value)
    assert "sweep_objective='val/acuracy' is not a number this run will have" in message
    assert "val/accuracy" in message and "val/worst_group_accuracy" in message
    assert not list(tmp_path.glob("runs/*/epochs.parquet"))
    assert not list(tmp_path.glob("runs/*/checkpoints/*"))
    with pytest.raises(ValueError, match="sweep_objective='nosplit/accuracy'"):
        run_mod.run(compose_config([*typo[:-1], "sweep_objective=nosplit/accuracy"]))


def test_the_worst_group_objective_is_the_lowest_group_accuracy(tmp_path):
    import pandas as pd

    from harness import run as run_mod
    from harness.search import objective_value

    from .conftest import compose_config

    cfg = compose_config([*TINY, f"results_dir={tmp_path}", "eval=minimal"])
    summary = run_mod.run(cfg)
    eval_cfg = run_mod.OmegaConf.to_container(cfg.eval, resolve=True)
    value = objective_value(summary["run_dir"], eval_cfg, "val/worst_group_accuracy")
    # independently: the per-example predictions of val, grouped by label (maze's groups)
    [rows] = list((tmp_path / "runs").glob("*/posthoc/*/scores/val.parquet"))
    scores = pd.read_parquet(rows)
    assert value == pytest_approx(scores.groupby("label")["correct"].mean().min())


def pytest_approx(x):
    import pytest

    return pytest.approx(x, abs=1e-12)


def test_a_damaged_posthoc_rows_file_is_computed_again_on_a_rerun(tmp_path, monkeypatch, capsys):
    import pandas as pd
    from hydra.core.global_hydra import GlobalHydra

    from harness import evaluate
    from harness import run as run_mod
    from harness.rundir import RunDir

    from .conftest import compose_config, run_rows

    overrides = [*TINY, f"results_dir={tmp_path}", "eval=minimal"]
    first = run_mod.run(compose_config(overrides))
    rd = RunDir(tmp_path, first["run_id"])
    original = run_rows(rd.path)
    [rows_file] = list(rd.path.glob("posthoc/*/rows.parquet"))
    measured = ["split", "group_key", "group_value", "scorer", "metric", "value", "n"]

    def same_as_original():
        again = run_rows(rd.path)
        pd.testing.assert_frame_equal(again[measured], original[measured], check_exact=True)

    data = rows_file.read_bytes()
    rows_file.write_bytes(data[: len(data) // 2])  # truncated: no footer
    assert run_mod.run(compose_config(overrides))["skipped"]  # the run itself is finished
    same_as_original()
    # the same through harness.evaluate, and for a readable file with rows missing
    original.head(3).to_parquet(rows_file)
    eval_dir = rows_file.parent.name
    monkeypatch.setattr(sys, "argv", ["harness.evaluate", f"run={tmp_path}", "eval=minimal"])
    try:
        evaluate.main()
    finally:
        GlobalHydra.instance().clear()
    assert "1 run(s) evaluated, 0 already had it" in capsys.readouterr().out
    assert rows_file.parent.name == eval_dir
    same_as_original()
