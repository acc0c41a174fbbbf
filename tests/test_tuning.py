"""Tuning on OOD validation (harness/tuning.py): an ood_val folder (OpenOOD fixtures: a flat
folder attached with role ood_val) takes no part in the OOD metrics; each tuned scorer's
chosen value is the grid's AUROC argmax recomputed here with scikit-learn from the cache,
and its `<name>_tuned` scores are the scorer at that value; bad entries refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from shiftbench_datasets.folders import write_flat_folder
from sklearn.metrics import roc_auc_score

import harness.run as run_mod
from harness.config import validate_eval
from harness.posthoc import _subsample, load_run_cache, load_scores
from harness.rundir import RunDir
from harness.scorer import FitData
from methods.scorers.knn import KNN
from methods.scorers.react import ReAct

from .conftest import TINY, compose_config, run_rows

GRIDS = {"knn": (KNN, "k", [1, 3, 10]), "react": (ReAct, "percentile", [50, 90, 99])}


def test_tuned_scorers_pick_the_validation_argmax(tmp_path):
    write_flat_folder(tmp_path / "tin_val", n=14)
    write_flat_folder(tmp_path / "svhn", n=12)
    ood = f"{{name: tin_val, root: {tmp_path / 'tin_val'}, role: ood_val}},{{name: svhn, root: {tmp_path / 'svhn'}}}"
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[1]",
                f"results_dir={tmp_path / 'res'}",
                f"cache_dir={tmp_path / 'cache'}",
                f"ood_sets=[{ood}]",
                "eval=openood_tuned",
                "eval.ccr_fprs=[0.1]",
                "eval.fit_size=40",
                "eval.scorers.knn.k=5",
                "eval.scorers.knn.backend=sklearn",
                "eval.scorers.knn.faiss_blocks=null",
                "eval.scorers.nnguide.k=5",
                "eval.tune.scorers={knn: {k: [1, 3, 10]}, react: {percentile: [50, 90, 99]}}",
            ]
        )
    )
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    cache = load_run_cache(run_dir)
    assert cache.splits("ood_val") == ["ood_tin_val"]
    assert "ood_svhn" in cache.splits("ood") and "ood_tin_val" not in cache.splits("ood")
    # the OOD validation split is no OOD test split: only the tuning rows name it
    named = set(rows.loc[rows["split"] == "ood_tin_val", "scorer"])
    assert {"knn_tuned", "react_tuned"} <= named and all(s.endswith("_tuned") for s in named)
    assert set(rows.loc[rows["split"] == "ood_tin_val", "split_role"]) == {"ood_val"}
    fit = FitData(
        train=_subsample(cache.outputs["train"], 40),
        val=cache.outputs["val"],
        head=cache.head,
        num_classes=10,
    )
    val, ood_val = cache.outputs["val"], cache.outputs["ood_tin_val"]
    for name, (cls, param, grid) in GRIDS.items():
        aurocs = []
        for v in grid:
            scorer = cls(**{param: v})
            scorer.fit(fit)
            s_id, s_ood = scorer.score(val), scorer.score(ood_val)
            y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
            aurocs.append(roc_auc_score(y, np.r_[s_id, s_ood]))
        best = grid[int(np.argmax(aurocs))]
        sel = rows[(rows["split"] == "ood_tin_val") & (rows["scorer"] == f"{name}_tuned")]
        got = dict(zip(sel["metric"], sel["value"], strict=True))
        assert got["tuned"] == 1.0 and got[f"tuned_{param}"] == best
        assert got["tuning_auroc"] == pytest.approx(max(aurocs))
        chosen = cls(**{param: best})
        chosen.fit(fit)
        column = load_scores(run_dir, "id_test")[f"{name}_tuned"].to_numpy()
        np.testing.assert_allclose(column, chosen.score(cache.outputs["id_test"]), rtol=1e-6)
        tuned_rows = rows[(rows["scorer"] == f"{name}_tuned") & (rows["split"] == "ood_svhn")]
        assert "auroc_vs_id_test" in set(tuned_rows["metric"])
    stage = RunDir.at(run_dir).posthoc(json.loads((run_dir / "DONE").read_text())["eval_id"])
    curves = pd.read_parquet(stage.risk_coverage("id_test"))
    assert {"knn_tuned", "react_tuned", "knn"} <= set(curves["scorer"])


def test_without_an_ood_val_split_nothing_is_tuned(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[1]",
                f"results_dir={tmp_path / 'res'}",
                f"cache_dir={tmp_path / 'cache'}",
                "eval=openood_tuned",
                "eval.fit_size=40",
                "eval.scorers.knn.k=5",
                "eval.scorers.nnguide.k=5",
                "eval.tune.scorers={knn: {k: [1, 3]}}",
            ]  # fmt: skip
        )
    )
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    assert not rows["scorer"].str.endswith("_tuned").any()


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"scorers": {"nope": {"k": [1]}}}, "not a scorer of eval.scorers"),
        ({"scorers": {"knn": {"k": []}}}, "non-empty list of numbers"),
        ({"scorers": {"knn": {"k": [0]}}}, "eval.tune.scorers.knn"),
        ({"metric": "aupr", "scorers": {"knn": {"k": [1]}}}, "eval.tune.metric"),
        ({"scorers": {}}, "non-empty mapping"),
    ],
)
def test_bad_tune_entries_are_refused(tune, message):
    ev = OmegaConf.to_container(compose_config(["eval=openood_tuned"]).eval, resolve=True)
    ev["tune"] = tune
    with pytest.raises(ValueError, match=message):
        validate_eval(ev)


def test_an_ood_folder_role_other_than_ood_or_ood_val_is_refused(tmp_path):
    from shiftbench_datasets.folders import OODFolder

    with pytest.raises(ValueError, match="role must be ood or ood_val"):
        OODFolder(name="x", root=str(tmp_path), role="test")
    assert "role" not in OODFolder(name="x", root=str(tmp_path)).key_config()
    assert OODFolder(name="x", root=str(tmp_path), role="ood_val").key_config()["role"] == "ood_val"
