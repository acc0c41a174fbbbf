"""eval=uncertainty end to end on digits_c: the calibrator, adaptive-ECE and conformal rows
exist on every labelled split and agree with a brute-force recomputation from the run's
cached outputs; eval=default's stage of the same run has none of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

import harness.run as run_mod
from harness import conformal, metrics
from harness.data import LABELED_ROLES
from harness.posthoc import evaluate_run, load_run_cache, load_scores
from harness.rundir import RunDir
from methods.calibrators.matrix import MatrixScaling
from methods.calibrators.vector import VectorScaling

from .conftest import TINY, compose_config, run_rows
from .test_uncertainty import brute_force_adaptive_ece, brute_quantile, brute_score, softmax_rows


def test_uncertainty_eval_rows_match_a_recomputation_from_the_cache(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[1]",
                f"results_dir={tmp_path / 'res'}",
                f"cache_dir={tmp_path / 'cache'}",
                "eval=uncertainty",
                "eval.fit_size=40",
                "eval.scorers.knn.k=5",
                "eval.conformal.alpha=0.2",
            ]
        )
    )
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    cache = load_run_cache(run_dir)
    labeled = cache.splits(*LABELED_ROLES)
    assert {"train", "val", "id_test"} <= set(labeled) and cache.splits("shift_test")
    assert cache.splits("ood")
    val_split = cache.splits("val")[0]

    def value(split, scorer, metric):
        sel = rows[
            (rows["split"] == split) & (rows["scorer"] == scorer) & (rows["metric"] == metric)
        ]
        assert len(sel) == 1, (split, scorer, metric)
        return sel["value"].item(), sel["n"].item()

    # calibrators: refitted here on the val split's cached logits
    val = cache.outputs[val_split]
    for name, cls in (("vector_scaling", VectorScaling), ("matrix_scaling", MatrixScaling)):
        cal = cls()
        cal.fit(val.logits, val.labels)
        for split in labeled:
            o = cache.outputs[split]
            assert value(split, name, "nll")[0] == pytest.approx(
                metrics.nll(cal.transform(o.logits), o.labels), rel=1e-6
            )
            ece_a = brute_force_adaptive_ece(cal.transform(o.logits), o.labels, 15)
            assert value(split, name, "ece_adaptive")[0] == pytest.approx(ece_a, abs=1e-6)

    # adaptive ECE of the raw logits, beside `ece`
    for split in labeled:
        o = cache.outputs[split]
        assert value(split, "", "ece_adaptive") == (
            pytest.approx(brute_force_adaptive_ece(o.logits, o.labels, 15)),
            len(o.labels),
        )
        assert load_scores(run_dir, split)["label"].tolist() == o.labels.tolist()

    # conformal sets: calibrated on half of val (seed 0), brute force from the definitions
    cal_idx, held_out = conformal.calibration_split(len(val.labels), 0.5, seed=0)
    kws = {"lac": {}, "aps": {}, "raps": {"k_reg": 5, "lam": 0.01}}
    for kind, kw in kws.items():
        u_val = conformal.uniforms(len(val.labels), 0, val_split)
        p_val = softmax_rows(val.logits.astype(np.float64))
        cal_scores = [brute_score(kind, p_val[i], val.labels[i], u_val[i], **kw) for i in cal_idx]
        q = brute_quantile(cal_scores, 0.2)
        assert value(val_split, kind, "conformal_threshold") == (pytest.approx(q), len(cal_idx))
        for split in labeled:
            o = cache.outputs[split]
            keep = held_out if split == val_split else np.arange(len(o.labels))
            u = conformal.uniforms(len(o.labels), 0, split)
            p = softmax_rows(o.logits.astype(np.float64))
            sets = [
                [y for y in range(p.shape[1]) if brute_score(kind, p[i], y, u[i], **kw) <= q]
                for i in keep
            ]
            coverage = np.mean([o.labels[i] in s for i, s in zip(keep, sets, strict=True)])
            assert value(split, kind, "conformal_coverage") == (pytest.approx(coverage), len(keep))
            assert value(split, kind, "conformal_set_size")[0] == pytest.approx(
                np.mean([len(s) for s in sets])
            )
    # no conformal row on an OOD split (no labels), and roles are the splits' own
    conf_rows = rows[rows["metric"].str.startswith("conformal_")]
    assert set(conf_rows["split"]) == set(labeled)
    assert (conf_rows["split_role"] == conf_rows["split"].map(cache.role)).all()

    # eval=default on the same run: a stage of its own, without any of the opt-in rows
    default = OmegaConf.to_container(compose_config(["eval=default"]).eval, resolve=True)
    eid, skipped = evaluate_run(run_dir, default)
    assert not skipped and eid != rows["eval_id"].iloc[0]
    plain = pd.read_parquet(RunDir.at(run_dir).posthoc(eid).rows)
    assert not plain["metric"].isin(["ece_adaptive", "conformal_coverage"]).any()
    assert not plain["scorer"].isin(["vector_scaling", "matrix_scaling", "lac"]).any()

    # conformal.calibrator: the sets of temperature-scaled probabilities (T refitted here)
    ev = OmegaConf.to_container(
        compose_config(["eval=uncertainty", "eval.conformal.calibrator=temperature_scaling"]).eval,
        resolve=True,
    )
    eid, _ = evaluate_run(run_dir, ev)
    scaled = pd.read_parquet(RunDir.at(run_dir).posthoc(eid).rows)
    t = metrics.fit_temperature(val.logits, val.labels)
    p_val = softmax_rows(val.logits.astype(np.float64) / t)
    q = brute_quantile([1 - p_val[i, val.labels[i]] for i in cal_idx], 0.1)
    sel = scaled[(scaled["scorer"] == "lac") & (scaled["metric"] == "conformal_threshold")]
    assert sel["value"].item() == pytest.approx(q)
    o = cache.outputs["id_test"]
    sizes = (1 - softmax_rows(o.logits.astype(np.float64) / t) <= q).sum(1)
    sel = scaled[(scaled["split"] == "id_test") & (scaled["metric"] == "conformal_set_size")]
    assert sel.set_index("scorer")["value"]["lac"] == pytest.approx(sizes.mean())
