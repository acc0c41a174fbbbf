"""One run in process: files, rows, skipping, determinism, keys, resume, bad values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from harness import run as run_mod
from harness import train as train_mod
from harness.outputs import Outputs
from harness.posthoc import load_scores
from harness.rundir import RunDir
from harness.table import ROW_COLUMNS

from .conftest import TINY, compose_config, run_cli, run_rows

SPLITS = ["train", "val", "id_test", "wilson", "percolation", "grid8"]


def do_run(tmp_path, *extra):
    return run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", *extra]))


def metric_values(run_dir) -> pd.Series:
    rows = run_rows(run_dir.path)
    key = rows["split"] + "/" + rows["scorer"] + "/" + rows["metric"] + "/" + rows["group_value"]
    return rows.set_index(key)["value"].sort_index()


def test_a_run_writes_its_directory_and_tidy_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # results_dir is relative: nothing may land outside it
    summary = run_mod.run(compose_config([*TINY, "results_dir=out"]))
    assert not summary["skipped"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    rd = RunDir(tmp_path / "out", summary["run_id"])
    for name in [
        "config.yaml",
        "key.json",
        "benchmark.json",
        "run_info.json",
        "transform.json",
        "outputs/head.npz",
        "epochs.parquet",
        "run.log",
        "DONE",
        "checkpoints/best.pt",
    ]:
        assert (rd / name).is_file(), name
    # checkpoints=best (the default): last.pt exists only while the run can resume
    assert not (rd / "checkpoints" / "last.pt").exists()
    rows = run_rows(rd.path)
    assert list(rows.columns) == ROW_COLUMNS
    assert set(rows["split"]) == {*SPLITS, "pooled_test"}
    assert (rows["run_id"] == summary["run_id"]).all() and (rows["seed"] == 0).all()
    assert set(rows["method"]) == {"erm"} and set(rows["model"]) == {"test_resnet"}
    assert set(rows["selection_rule"]) == {"id_val_accuracy"} and set(rows["selected_epoch"]) == {0}
    assert rows["git_sha"].str.len().min() > 0 and rows["versions"].str.contains("torch").all()
    plain = rows[(rows["scorer"] == "") & (rows["group_key"] == "")]
    for split in SPLITS:
        assert set(plain.loc[plain["split"] == split, "metric"]) == {
            "accuracy",
            "nll",
            "ece",
            "brier",
        }
        # the recorded accuracy is the cached outputs' accuracy
        [cache] = (rd.path / "outputs").glob(f"{split}-*.npz")
        out = Outputs.load(cache)
        assert len(out.labels) == 24 and out.logits.shape == (24, 4)
        acc = plain.loc[(plain["split"] == split) & (plain["metric"] == "accuracy"), "value"].item()
        assert acc == pytest.approx(float((out.logits.argmax(1) == out.labels).mean()))
        scores = load_scores(rd.path, split)
        assert scores["correct"].mean() == pytest.approx(acc)
        groups = rows[(rows["split"] == split) & (rows["group_key"] == "label")]
        per_group = groups[groups["metric"] == "accuracy"]
        assert per_group["n"].sum() == 24
        worst = groups.loc[groups["metric"] == "worst_group_accuracy", "value"].item()
        assert worst == per_group["value"].min()
    msp = rows[rows["scorer"] == "msp"]
    assert set(msp.loc[msp["metric"] == "auroc_vs_id_test", "split"]) == {
        "wilson",
        "percolation",
        "grid8",
    }
    epochs = pd.read_parquet(rd / "epochs.parquet")
    assert set(epochs["split"]) == {"train", "val"} and set(epochs["epoch"]) == {0}
    key = json.loads((rd / "key.json").read_text())
    assert key["payload"]["seed"] == 0 and "fingerprint" in key["payload"]["dataset"]


def test_repeating_a_run_skips_it_without_training(tmp_path, monkeypatch):
    first = do_run(tmp_path)
    rd = RunDir(tmp_path, first["run_id"])
    stamp = (rd / "DONE").stat().st_mtime_ns
    monkeypatch.setattr(
        run_mod, "execute_training", lambda *a: pytest.fail("a finished run was redone")
    )
    again = do_run(tmp_path)
    assert again == {
        "run_id": first["run_id"],
        "run_dir": str(rd.path),
        "skipped": True,
        "status": "finished",
    }
    assert (rd / "DONE").stat().st_mtime_ns == stamp


def test_same_config_and_seed_give_identical_numbers(tmp_path):
    # the second run in its own process: no state of the first (caches, RNGs, torch's
    # kernels chosen) can make them agree; the numbers must be bit-identical
    a = do_run(tmp_path / "a")
    run_cli([*TINY, f"results_dir={tmp_path / 'b'}"], cwd=tmp_path)
    [b_dir] = [p.parent for p in (tmp_path / "b").glob("runs/*/DONE")]
    assert b_dir.name == a["run_id"]
    va = metric_values(RunDir(tmp_path / "a", a["run_id"]))
    vb = metric_values(RunDir(tmp_path / "b", b_dir.name))
    pd.testing.assert_series_equal(va, vb, check_exact=True)
    c = do_run(tmp_path / "c", "seed=1")
    assert c["run_id"] != a["run_id"]
    key_a = json.loads((RunDir(tmp_path / "a", a["run_id"]) / "key.json").read_text())
    key_c = json.loads((RunDir(tmp_path / "c", c["run_id"]) / "key.json").read_text())
    assert key_a["setting_id"] == key_c["setting_id"]


def test_limit_and_trainer_settings_are_separate_settings(tmp_path):
    a = do_run(tmp_path)
    b = do_run(tmp_path, "dataset.limit=16")
    c = do_run(tmp_path, "trainer.optimizer.lr=0.01")
    d = do_run(tmp_path, "trainer.progress=true", "trainer.num_workers=0")  # not semantic
    assert len({a["run_id"], b["run_id"], c["run_id"]}) == 3
    assert d["skipped"] and d["run_id"] == a["run_id"]


def test_interrupted_training_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    extra = ["trainer.epochs=2", "trainer.max_steps=null", "dataset.limit=16"]
    clean = do_run(tmp_path / "clean", *extra)

    real = train_mod.validation_records

    def dies_in_second_epoch(*args, **kwargs):
        if args[6] == 1:  # epoch
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "validation_records", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        do_run(tmp_path / "resumed", *extra)
    rd = RunDir(tmp_path / "resumed", clean["run_id"])
    assert (rd / "checkpoints" / "last.pt").is_file() and not rd.is_complete()
    assert torch.load(rd / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 0
    monkeypatch.setattr(train_mod, "validation_records", real)
    resumed = do_run(tmp_path / "resumed", *extra)
    assert not resumed["skipped"] and resumed["run_id"] == clean["run_id"]
    pd.testing.assert_series_equal(
        metric_values(RunDir(tmp_path / "clean", clean["run_id"])),
        metric_values(rd),
        check_exact=True,
    )


def test_evaluation_only_run_from_a_checkpoint(tmp_path):
    ckpt = tmp_path / "w.pth"
    torch.save(timm.create_model("test_resnet", num_classes=4).state_dict(), ckpt)
    extra = ["trainer.epochs=0", f"model.checkpoint={ckpt}", "model.transform=timm"]
    first = do_run(tmp_path / "r", *extra)
    rd = RunDir(tmp_path / "r", first["run_id"])
    assert not (rd / "checkpoints").exists()  # nothing was trained
    rows = run_rows(rd.path)
    assert set(rows["method"]) == {"none"} and set(rows["selected_epoch"]) == {-1}
    key = json.loads((rd / "key.json").read_text())["payload"]
    assert key["method"] is None and key["trainer"] == {"epochs": 0}
    assert key["model"]["checkpoint_sha256"] and "w.pth" not in json.dumps(key)
    # the same weights under another path are the same run; changed weights are not
    moved = tmp_path / "moved.pth"
    moved.write_bytes(ckpt.read_bytes())
    assert do_run(tmp_path / "r", *extra[:1], f"model.checkpoint={moved}", extra[2])["skipped"]
    torch.save(timm.create_model("test_resnet", num_classes=4).state_dict(), ckpt)
    changed = do_run(tmp_path / "r", *extra)
    assert not changed["skipped"] and changed["run_id"] != first["run_id"]


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.epochs=-1", "trainer.epochs must be an integer >= 0"),
        ("seed=abc", "seed must be an integer"),
        ("trainer.max_steps=0", "trainer.max_steps must be a positive integer or null"),
        ("trainer.batch_size=0", "trainer.batch_size must be a positive integer"),
        ("dataset.limit=-3", "dataset.limit must be a positive integer or null"),
        ("model.name=resnet18x", "not a timm model"),
        ("trainer.schedule=linear", "trainer.schedule must be cosine, constant or"),
    ],
)
def test_bad_values_fail_clearly_and_leave_no_finished_run(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        do_run(tmp_path, override)
    assert not list(tmp_path.glob("runs/*/DONE"))


def test_a_harness_checkpoint_evaluates_on_its_own(tmp_path):
    trained = do_run(tmp_path / "a")
    best = RunDir(tmp_path / "a", trained["run_id"]).path / "checkpoints" / "best.pt"
    again = do_run(tmp_path / "b", "trainer.epochs=0", f"model.checkpoint={best}")
    a = metric_values(RunDir(tmp_path / "a", trained["run_id"]))
    b = metric_values(RunDir(tmp_path / "b", again["run_id"]))
    key = "id_test//accuracy/"
    assert a[key] == pytest.approx(b[key])  # the same weights give the same accuracy


def test_eval_only_needs_a_label_map_when_the_head_differs(tmp_path):
    ckpt = tmp_path / "w.pth"
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), ckpt)
    base = [
        "trainer.epochs=0",
        f"model.checkpoint={ckpt}",
    ]  # the head size comes from the checkpoint
    with pytest.raises(ValueError, match="set model.label_map"):
        do_run(tmp_path, *base)
    summary = do_run(tmp_path, *base, "model.label_map=[3,1,0,2]")
    [cache] = (RunDir(tmp_path, summary["run_id"]).path / "outputs").glob("val-*.npz")
    assert Outputs.load(cache).logits.shape[1] == 4
    assert np.isfinite(Outputs.load(cache).logits).all()
