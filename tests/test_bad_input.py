"""Malformed input: each case checks the exit status, that the message names the problem
and where it is, and that no result was written (no DONE, no rows)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import timm
import torch
from hydra.core.global_hydra import GlobalHydra

from harness import posthoc
from harness import run as run_mod
from harness.data import DatasetAdapter
from harness.rundir import RunDir
from harness.store import atomic_write_text
from harness.table import collect

from .conftest import TINY, compose_config, run_cli


def cli(monkeypatch, capsys, args):
    """`python -m harness.run args` in this process: (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["harness.run", *args])
    code = 0
    try:
        run_mod.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return code, out.out + out.err


def no_results(root) -> bool:
    return not list(root.glob("runs/*/DONE")) and not list(
        root.glob("runs/*/posthoc/*/rows.parquet")
    )


CASES = {
    "unknown dataset": (["dataset=nope"], ["Could not find 'dataset/nope'", "maze"]),
    "unknown model config": (["model=nope"], ["Could not find 'model/nope'", "resnet18"]),
    "unknown method": (["method=nope"], ["Could not find 'method/nope'", "erm"]),
    "unknown eval": (["eval=nope"], ["Could not find 'eval/nope'", "default", "minimal"]),
    "unknown scorer": (
        ["+eval.scorers.foo={_target_: methods.scorers.nope.Nope}"],
        ["scorer 'foo'", "methods.scorers.nope.Nope", "available scorers", "knn"],
    ),
    "unknown timm model": (
        ["model.name=resnet18x"],
        ["model.name='resnet18x'", "not a timm model"],
    ),
    "negative epochs": (["trainer.epochs=-1"], ["trainer.epochs must be an integer >= 0", "-1"]),
    "seed not an int": (["seed=abc"], ["seed must be an integer", "abc"]),
    "negative seed": (["seed=-1"], ["seed must be in [0, 2**32)", "-1"]),
    "seed too large": (["seed=4294967296"], ["seed must be in [0, 2**32)", "4294967296"]),
    "zero heartbeat": (["lock.heartbeat=0"], ["lock.heartbeat must be a positive", "0"]),
    "stale before a heartbeat": (
        ["lock.stale_after=10", "lock.heartbeat=30"],
        ["lock.stale_after (10) must be longer than lock.heartbeat (30)"],
    ),
    "batch size not an int": (
        ["trainer.batch_size=big"],
        ["trainer.batch_size must be a positive integer"],
    ),
    "bad limit": (["dataset.limit=0"], ["dataset.limit must be a positive integer or null"]),
    "typo in a key": (["trainer.epoch=3"], ["Could not override 'trainer.epoch'"]),
    "bad schedule": (["trainer.schedule=linear"], ["trainer.schedule", "linear"]),
    "bad selection rule": (["selection_rule=best"], ["selection_rule must be one of", "best"]),
    "bad scorer hyperparameter": (["eval.scorers.knn.k=0"], ["eval.scorers.knn", "k must be >= 1"]),
    "bad ece bins": (["eval.ece_bins=0"], ["eval.ece_bins must be a positive integer"]),
    "unsupported precision": (["precision=fp8"], ["precision='fp8'", "fp32", "bf16"]),
    "autocast while training": (["precision=bf16"], ["precision='bf16'", "evaluation-only"]),
    "bad features dtype": (["forward.features_dtype=int8"], ["forward.features_dtype", "int8"]),
    "bad num_workers": (["trainer.num_workers=many"], ["trainer.num_workers", "many"]),
    "missing checkpoint": (
        ["trainer.epochs=0", "model.checkpoint=/nonexistent/w.pth"],
        ["model.checkpoint=/nonexistent/w.pth", "no such file"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_overrides_exit_non_zero_with_a_clear_message(case, tmp_path, monkeypatch, capsys):
    overrides, expected = CASES[case]
    code, output = cli(monkeypatch, capsys, [*TINY, f"results_dir={tmp_path}", *overrides])
    assert code != 0
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"
    assert no_results(tmp_path) and not list(tmp_path.glob("runs/*/config.yaml"))


class FolderData(DatasetAdapter):
    """A stand-in for an adapter that reads files under data_root."""

    def fingerprint(self):
        return "x"


def test_data_root_missing(tmp_path, monkeypatch, capsys):
    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "folder.yaml").write_text(
        "name: folder\n_target_: tests.test_bad_input.FolderData\n"
        "limit: null\nroot: ${data_root}/folder\n"
    )
    code, output = cli(
        monkeypatch,
        capsys,
        [
            *TINY,
            f"results_dir={tmp_path}",
            "dataset=folder",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            f"data_root={tmp_path}/nowhere",
        ],
    )
    assert code != 0
    assert (
        f"dataset.root={tmp_path}/nowhere/folder does not exist" in output and "data_root" in output
    )
    assert not (tmp_path / "runs").exists() or no_results(tmp_path)


def test_results_root_that_is_not_writable(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, output = cli(monkeypatch, capsys, [*TINY, f"results_dir={blocker}/res"])
    # Hydra makes its log directory below results_dir first, and says why it cannot
    assert code != 0 and "Not a directory" in output and f"{blocker}/res" in output
    # the harness checks too (for runs whose Hydra directories are elsewhere, and the API)
    with pytest.raises(ValueError, match=f"results_dir={blocker}/res is not writable"):
        run_mod.run(compose_config([*TINY, f"results_dir={blocker}/res"]))
    assert blocker.read_text() == "not a directory"


def checkpoint_run(tmp_path, monkeypatch, capsys, state_or_object):
    path = tmp_path / "w.pth"
    torch.save(state_or_object, path)
    return cli(
        monkeypatch,
        capsys,
        [*TINY, f"results_dir={tmp_path}", "trainer.epochs=0", f"model.checkpoint={path}"],
    )


def test_checkpoint_for_another_architecture(tmp_path, monkeypatch, capsys):
    code, output = checkpoint_run(
        tmp_path,
        monkeypatch,
        capsys,
        timm.create_model("test_convnext", num_classes=4).state_dict(),
    )
    assert code != 0 and "does not fit test_resnet" in output and "w.pth" in output
    assert no_results(tmp_path)
    [failed] = list(tmp_path.glob("runs/*/FAILED"))  # the failure is recorded, not a result
    assert "does not fit" in failed.read_text()


class Payload:
    def __reduce__(self):  # would run code if unpickled
        return (print, ("unpickled!",))


def test_checkpoint_that_is_not_a_state_dict_is_never_unpickled(tmp_path, monkeypatch, capsys):
    code, output = checkpoint_run(tmp_path, monkeypatch, capsys, {"model": Payload()})
    assert code != 0 and "not a loadable weights file" in output
    assert "unpickled!" not in output and no_results(tmp_path)


def test_truncated_cache_file_is_named_and_regenerated(tmp_path):
    first = run_mod.run(
        compose_config([*TINY, f"results_dir={tmp_path / 'a'}", f"cache_dir={tmp_path / 'cache'}"])
    )
    [npz] = list((tmp_path / "cache").glob("maze/*/val.npz"))
    npz.write_bytes(npz.read_bytes()[:100])
    [meta] = list((tmp_path / "cache").glob("maze/*/wilson.parquet"))
    import pandas as pd

    pd.read_parquet(meta).drop(columns=["path_length"]).to_parquet(meta)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run_mod.run(
            compose_config(
                [*TINY, f"results_dir={tmp_path / 'b'}", f"cache_dir={tmp_path / 'cache'}"]
            )
        )
    messages = " ".join(str(w.message) for w in caught)
    assert (
        "maze cache unreadable" in messages
        and "wilson.parquet lacks columns ['path_length']" in messages
    )
    assert again["run_id"] == first["run_id"]  # regenerated identically
    a = RunDir(tmp_path / "a", first["run_id"]).path / "outputs"
    b = RunDir(tmp_path / "b", again["run_id"]).path / "outputs"
    np.testing.assert_array_equal(
        np.load(next(a.glob("val-*.npz")))["labels"], np.load(next(b.glob("val-*.npz")))["labels"]
    )


def test_corrupted_parquet_in_the_results_root_is_skipped_with_a_warning(tmp_path):
    run = run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}"]))
    [rows] = list((RunDir(tmp_path, run["run_id"]).path / "posthoc").glob("*/rows.parquet"))
    atomic_write_text(rows, "PAR1 garbage")
    proc = run_cli([f"results_dir={tmp_path}"], cwd=tmp_path, module="harness.leaderboard")
    assert proc.returncode == 0
    assert "unreadable rows.parquet" in proc.stderr and run["run_id"] in proc.stderr
    assert "(1 run directories skipped" in (tmp_path / "leaderboard" / "README.md").read_text()


def test_a_run_directory_name_that_would_escape_the_root_is_refused(tmp_path):
    for name in ["../../etc", "..", "a/../../b"]:
        with pytest.raises(ValueError, match="hex content hash"):
            RunDir(tmp_path, name)
    code = run_cli(
        [f"run={tmp_path}/runs/../../../etc"], cwd=tmp_path, module="harness.evaluate", check=False
    )
    assert code.returncode != 0 and "neither a finished run directory" in code.stderr


def test_disk_full_while_writing_rows_leaves_no_half_written_file(tmp_path, monkeypatch):
    real = posthoc.atomic_write_parquet

    def disk_full(df, path):
        if path.name == "rows.parquet":
            import errno
            import io

            with posthoc_tmp(path) as tmp:  # the real temp-file path, then ENOSPC mid-write
                tmp.write_bytes(io.BytesIO(b"half").getvalue())
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(df, path)

    from harness.store import _atomic_path as posthoc_tmp

    monkeypatch.setattr(posthoc, "atomic_write_parquet", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}"]))
    [stage] = list(tmp_path.glob("runs/*/posthoc/*"))
    assert not (stage / "rows.parquet").exists() and not (stage / "DONE").exists()
    assert not [p for p in stage.iterdir() if p.name.endswith(".tmp")]
    assert collect(tmp_path)[0].empty
    [failed] = list(tmp_path.glob("runs/*/FAILED"))
    assert "No space left on device" in failed.read_text()


def test_leaderboard_typos_are_named(tmp_path):
    from harness.report.build import write_leaderboard

    with pytest.raises(FileNotFoundError, match="results_dir=.*typo.*no such directory"):
        write_leaderboard(tmp_path / "typo", outputs=["markdown"])
    assert not (tmp_path / "typo").exists()  # nothing created for a misspelt root
    with pytest.raises(ValueError, match="scorer_resamples must be a positive integer, got 0"):
        write_leaderboard(tmp_path, outputs=["markdown"], scorer_resamples=0)
    with pytest.raises(ValueError, match="multiple_comparisons='holmes'"):
        write_leaderboard(tmp_path, outputs=["markdown"], multiple_comparisons="holmes")


def test_a_baseline_that_names_no_method_is_warned_about(tmp_path, monkeypatch, capsys):
    from harness.report.build import write_leaderboard

    root = tmp_path / "results"
    code, out = cli(monkeypatch, capsys, [*TINY, f"results_dir={root}", "eval=minimal"])
    assert code == 0, out
    with pytest.warns(UserWarning, match=r"baseline='nope' names no method.*'erm'"):
        write_leaderboard(root, baseline="nope", outputs=["markdown"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("eval.coverages=[1.5,-0.5]", "eval.coverages must be a list of numbers in (0, 1]"),
        ("eval.ece_bins=0", "eval.ece_bins must be a positive integer"),
        ("eval.fit_size=-3", "eval.fit_size must be a positive integer or null"),
    ],
)
def test_evaluate_validates_the_eval_config_like_run(
    override, message, tmp_path, monkeypatch, capsys
):
    # harness.evaluate once skipped these checks: accuracy@-0.5 rows reached the leaderboard
    from harness import evaluate

    monkeypatch.setattr(sys, "argv", ["harness.evaluate", f"run={tmp_path}", override])
    with pytest.raises(SystemExit) as exc:
        try:
            evaluate.main()
        finally:
            GlobalHydra.instance().clear()
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "neither a finished run" not in err


def test_a_fit_size_below_a_scorers_minimum_is_refused_naming_both(tmp_path, monkeypatch, capsys):
    code, out = cli(monkeypatch, capsys, [*TINY, f"results_dir={tmp_path}", "eval.fit_size=1"])
    assert code != 0
    assert "eval.fit_size=1: scorer 'mahalanobis' needs at least 2 training examples" in out
    assert no_results(tmp_path)
