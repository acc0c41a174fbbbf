"""The post-hoc stage runs from a run directory's cache alone, adds rows under its own
eval_id, never rewrites what a run holds, and refuses a head that does not fit."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import timm
import yaml

from harness import posthoc
from harness import run as run_mod
from harness.models import save_head
from harness.posthoc import evaluate_run, load_scores
from harness.rundir import RunDir
from harness.table import collect

from .conftest import CONF, TINY, compose_config, run_cli, run_rows


def eval_config(name: str) -> dict:
    return yaml.safe_load((CONF / "eval" / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("posthoc")
    summary = run_mod.run(compose_config([*TINY, f"results_dir={root}"]))
    return root, root / "runs" / summary["run_id"]


def fresh_copy(finished_run, tmp_path):
    root, run_dir = finished_run
    target = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def test_default_stage_has_every_scorer_and_per_example_columns(finished_run):
    _, run_dir = finished_run
    rows = run_rows(run_dir)
    scorers = set(eval_config("default")["scorers"])
    assert scorers <= set(rows["scorer"])
    assert {"ac", "doc", "atc_mc", "atc_ne", "temperature_scaling"} <= set(rows["scorer"])
    ood = rows[rows["metric"] == "fpr95_vs_id_test"]
    assert set(ood["split"]) == {"wilson", "percolation", "grid8"} and set(ood["scorer"]) == scorers
    pooled = rows[rows["split"] == "pooled_test"]
    assert set(pooled["metric"]) == {"auroc_error"} and set(pooled["split_role"]) == {"pooled"}
    assert (pooled["n"] == 24 * 4).all()  # id_test + three shifted splits
    est = rows[(rows["scorer"] == "atc_mc") & (rows["split"] == "wilson")].set_index("metric")[
        "value"
    ]
    assert est["abs_error"] == pytest.approx(abs(est["estimated_accuracy"] - est["accuracy"]))
    scores = load_scores(run_dir, "grid8")
    assert {"index", "label", "pred", "correct", "nll", *scorers} <= set(scores.columns)
    notes = json.loads(next((run_dir / "posthoc").glob("*/notes.json")).read_text())
    assert notes == {"head": "head(features) reproduces the cached logits", "skipped_scorers": {}}
    curves = pd.read_parquet(next((run_dir / "posthoc").glob("*/risk_coverage/wilson.parquet")))
    assert set(curves["scorer"]) == scorers and (curves.groupby("scorer").size() == 100).all()
    assert curves.loc[curves["coverage"] == 1.0, "risk"].nunique() == 1  # all accepted: same risk
    ts = rows[rows["scorer"] == "temperature_scaling"]
    assert (ts.loc[ts["metric"] == "temperature", "value"] > 0).all()
    plain_acc = rows[
        (rows["scorer"] == "") & (rows["metric"] == "accuracy") & (rows["group_key"] == "")
    ]
    ts_acc = ts[ts["metric"] == "accuracy"]
    assert dict(zip(ts_acc["split"], ts_acc["value"], strict=True)) == dict(
        zip(plain_acc["split"], plain_acc["value"], strict=True)
    )  # T does not change predictions


def test_a_new_eval_config_uses_the_cache_alone_and_adds_rows(finished_run, tmp_path, monkeypatch):
    run_dir = fresh_copy(finished_run, tmp_path)
    first = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}

    def forbidden(*args, **kwargs):
        raise AssertionError("the post-hoc stage touched the model or the data")

    monkeypatch.setattr(timm, "create_model", forbidden)
    monkeypatch.setattr("harness.forward.forward_split", forbidden)
    monkeypatch.setattr("shiftbench_datasets.maze.generate_mazes", forbidden)
    cfg = {
        **eval_config("minimal"),
        "scorers": {"knn5": {"_target_": "methods.scorers.knn.KNN", "k": 5}},
    }
    eid, skipped = evaluate_run(run_dir, cfg)
    assert not skipped
    assert {p: p.stat().st_mtime_ns for p in first} == first  # nothing rewritten
    new_rows = pd.read_parquet(RunDir.at(run_dir).posthoc(eid).rows)
    assert set(new_rows["eval_id"]) == {eid} and "knn5" in set(new_rows["scorer"])
    # same config again: a no-op
    stamp = (RunDir.at(run_dir).posthoc(eid).done).stat().st_mtime_ns
    assert evaluate_run(run_dir, cfg) == (eid, True)
    assert (RunDir.at(run_dir).posthoc(eid).done).stat().st_mtime_ns == stamp
    table, _ = collect(tmp_path)
    assert table["eval_id"].nunique() == 2
    per_eval = table.groupby("eval_id").size()
    assert per_eval[eid] == len(new_rows)


def test_a_head_that_does_not_reproduce_the_logits_is_refused_with_a_reason(finished_run, tmp_path):
    run_dir = fresh_copy(finished_run, tmp_path)
    with np.load(run_dir / "outputs" / "head.npz") as z:
        weight, bias = z["weight"], z["bias"]
    np.savez(run_dir / "outputs" / "head.npz", weight=weight * 2, bias=bias)
    eid, _ = evaluate_run(run_dir, {**eval_config("default"), "fit_size": 20})
    notes = json.loads((RunDir.at(run_dir).posthoc(eid).notes).read_text())
    assert "does not reproduce the cached logits" in notes["head"]
    assert set(notes["skipped_scorers"]) == {"vim", "react", "ash", "scale"}
    rows = pd.read_parquet(RunDir.at(run_dir).posthoc(eid).rows)
    assert not {"vim", "react", "ash", "scale"} & set(rows["scorer"])
    assert {"msp", "knn", "mahalanobis"} <= set(rows["scorer"])


def test_distilled_two_token_heads_are_not_stored(tmp_path):
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224", num_classes=3, img_size=32, patch_size=16, depth=1
    )
    save_head(model, None, tmp_path / "head.npz")
    assert not (tmp_path / "head.npz").exists()
    note = json.loads((tmp_path / "head.json").read_text())["note"]
    assert "not one linear layer" in note
    head, why = posthoc._checked_head(tmp_path / "head.npz", {})
    assert head is None and why == note


def test_the_eval_config_chooses_the_estimators(finished_run, tmp_path):
    run_dir = fresh_copy(finished_run, tmp_path)
    estimators = ["ac", "doc", "atc_mc", "atc_ne"]
    default = run_rows(run_dir)
    default = default[default["scorer"] == "doc"].set_index(["split", "metric"])["value"]
    minimal = eval_config("minimal")
    none_id, _ = evaluate_run(run_dir, {**minimal, "estimators": {}})
    none = pd.read_parquet(RunDir.at(run_dir).posthoc(none_id).rows)
    assert not set(none["scorer"]) & set(estimators) and "msp" in set(none["scorer"])
    doc = {"doc": minimal["estimators"]["doc"]}
    doc_id, _ = evaluate_run(run_dir, {**minimal, "estimators": doc})
    only = pd.read_parquet(RunDir.at(run_dir).posthoc(doc_id).rows)
    only = only[only["scorer"].isin(estimators)]
    assert set(only["scorer"]) == {"doc"}
    assert set(only["metric"]) == {"estimated_accuracy", "accuracy", "abs_error"}
    assert set(only["split"]) == {"id_test", "wilson", "percolation", "grid8"}
    for row in only.itertuples():  # the same numbers as the default stage's, bit for bit
        assert row.value == default[(row.split, row.metric)]
    # a config without the entry means the built-in default: the same stage as minimal
    legacy = {k: v for k, v in minimal.items() if k != "estimators"}
    assert evaluate_run(run_dir, legacy)[0] == evaluate_run(run_dir, minimal)[0]
    assert len({none_id, doc_id, evaluate_run(run_dir, minimal)[0]}) == 3


def test_evaluate_cli_over_a_results_dir(finished_run, tmp_path):
    run_dir = fresh_copy(finished_run, tmp_path)
    proc = run_cli([f"run={tmp_path}", "eval=minimal"], cwd=tmp_path, module="harness.evaluate")
    assert "1 run(s) evaluated, 0 already had it" in proc.stdout
    again = run_cli([f"run={run_dir}", "eval=minimal"], cwd=tmp_path, module="harness.evaluate")
    assert "0 run(s) evaluated, 1 already had it" in again.stdout
    bad = run_cli(
        [f"run={tmp_path / 'nothing'}"], cwd=tmp_path, module="harness.evaluate", check=False
    )
    assert bad.returncode != 0 and "neither a finished run directory" in bad.stderr


def test_rerunning_a_finished_run_with_another_eval_adds_that_stage(finished_run, tmp_path):
    run_dir = fresh_copy(finished_run, tmp_path)
    summary = run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "eval=minimal"]))
    assert summary["skipped"] and summary["run_id"] == run_dir.name
    assert len(list((run_dir / "posthoc").glob("*/DONE"))) == 2


def test_odin_runs_its_own_passes_during_the_run_and_is_timed(tmp_path):
    summary = run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "eval=full"]))
    run_dir = tmp_path / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    odin = rows[rows["scorer"] == "odin"]
    assert set(odin.loc[odin["metric"] == "auroc_vs_id_test", "split"]) == {
        "wilson",
        "percolation",
        "grid8",
    }
    notes = json.loads(next((run_dir / "posthoc").glob("*/notes.json")).read_text())
    timed = notes["model_scorer_seconds"]
    assert set(timed) == {
        f"odin/{s}" for s in ["train", "val", "id_test", "wilson", "percolation", "grid8"]
    }
    assert "odin" in load_scores(run_dir, "wilson").columns


def test_odin_is_skipped_with_a_reason_by_the_cache_only_stage(finished_run, tmp_path):
    run_dir = fresh_copy(finished_run, tmp_path)
    cfg = {
        **eval_config("minimal"),
        "scorers": {
            "odin": {
                "_target_": "methods.scorers.odin.ODIN",
                "temperature": 1000.0,
                "epsilon": 0.0014,
            }
        },
    }
    eid, _ = evaluate_run(run_dir, cfg)
    notes = json.loads((RunDir.at(run_dir).posthoc(eid).notes).read_text())
    assert "needs the model" in notes["skipped_scorers"]["odin"]


def test_outputs_are_loaded_on_demand_and_only_the_reference_splits_stay(tmp_path):
    from harness.outputs import Outputs

    paths = {}
    for k, split in enumerate(["train", "id_test", "c1", "c2", "c3"]):
        paths[split] = tmp_path / f"{split}.npz"
        Outputs(
            np.full((3, 2), k, np.float32), np.zeros((3, 4), np.float32), np.zeros(3), np.arange(3)
        ).save(paths[split])
    outputs = posthoc.LazySplits(paths, pinned={"train", "id_test"})
    assert outputs.loaded() == [] and list(outputs) == list(paths) and len(outputs) == 5
    assert outputs["train"].logits[0, 0] == 0 and outputs["id_test"].logits[0, 0] == 1
    for k, split in enumerate(["c1", "c2", "c3"], start=2):
        assert outputs[split].logits[0, 0] == k
        assert outputs.loaded() == ["train", "id_test", split]  # one shifted split at a time
    assert outputs["c1"].logits[0, 0] == 2  # evicted, read again
    assert {s: o.logits[0, 0] for s, o in outputs.items()} == {
        "train": 0,
        "id_test": 1,
        "c1": 2,
        "c2": 3,
        "c3": 4,
    }
    with pytest.raises(KeyError):
        outputs["nope"]


def test_a_run_whose_cached_outputs_are_gone_is_refused_by_name(finished_run, tmp_path):
    run = fresh_copy(finished_run, tmp_path)
    victim = next((run / "outputs").glob("wilson-*.npz"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match="cached outputs of split wilson are missing"):
        posthoc.load_run_cache(run)


def test_a_truncated_outputs_cache_is_refused_naming_the_file(finished_run, tmp_path):
    from harness.outputs import Outputs

    run_dir = fresh_copy(finished_run, tmp_path)
    bench = RunDir.at(run_dir).read_benchmark()
    split, spec = next(iter(bench["splits"].items()))
    path = RunDir.at(run_dir).output_path(split, spec["forward_key"])
    out = Outputs.load(path)
    keep = len(out.labels) - 3
    np.savez(
        path,
        logits=out.logits[:keep],
        features=out.features[:keep],
        labels=out.labels[:keep],
        index=out.index[:keep],
    )
    before = sorted(p.name for p in (run_dir / "posthoc").iterdir())
    with pytest.raises(ValueError, match=rf"{keep} examples, but benchmark.json records"):
        evaluate_run(run_dir, {**eval_config("default"), "fit_size": 7})
    after = sorted(
        p.name for p in (run_dir / "posthoc").iterdir() if (p / "rows.parquet").is_file()
    )
    assert after == [n for n in before if (run_dir / "posthoc" / n / "rows.parquet").is_file()]
