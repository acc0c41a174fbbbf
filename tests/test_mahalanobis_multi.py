"""Multi-layer Mahalanobis (methods/scorers/mahalanobis_multi.py): per-example scores equal
pytorch-ood's MultiMahalanobis (fit_structured / predict_structured, equal weights, no
preprocessing) up to its convention (its covariance is the within-class scatter, not
divided by N, and its score is the outlier score: ours = −N · theirs); the pooled stages are
timm's forward_intermediates averaged over space; eval=openood_full runs it in harness.run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from pytorch_ood.detector import MultiMahalanobis as Reference

import harness.run as run_mod
from methods.scorers.mahalanobis_multi import MultiMahalanobis, pooled_stages

from .conftest import TINY, compose_config, run_rows


def test_scores_match_pytorch_ood():
    rng = np.random.default_rng(0)
    n, dims, k = 300, (4, 6), 3
    labels = np.repeat(np.arange(k), n // k)
    train = [rng.normal(size=(n, d)) + labels[:, None] * 0.7 for d in dims]
    test = [rng.normal(size=(40, d)) * 1.3 for d in dims]
    ours = MultiMahalanobis()
    ours.fit_stages(train, labels)
    got = ours.score_stages(test)
    ref = Reference(model=[torch.nn.Identity()] * len(dims))
    ref.fit_structured([torch.tensor(t, dtype=torch.float32) for t in train], torch.tensor(labels))
    theirs = ref.predict_structured([torch.tensor(t, dtype=torch.float32) for t in test]).numpy()
    np.testing.assert_allclose(got, -n * theirs.astype(np.float64), rtol=1e-3)


def test_pooled_stages_are_the_spatial_means_of_timm_intermediates():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        got = pooled_stages(model, x, [0, -1])
    assert len(got) == 2
    np.testing.assert_allclose(got[0], maps[0].mean(dim=(2, 3)).double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(got[1], maps[-1].mean(dim=(2, 3)).double().numpy(), rtol=1e-6)


def test_bad_stages_are_refused():
    with pytest.raises(ValueError, match="mahalanobis_multi stages"):
        MultiMahalanobis(stages=[])


def test_openood_full_runs_it_during_the_run(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                f"results_dir={tmp_path}",
                "eval=openood_full",
                "eval.fit_size=20",
                "eval.scorers.knn.k=5",
                "eval.scorers.nnguide.k=5",
                "eval.ccr_fprs=[0.1]",
            ]  # fmt: skip
        )
    )
    run_dir = tmp_path / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    mm = rows[rows["scorer"] == "mahalanobis_multi"]
    assert set(mm.loc[mm["metric"] == "auroc_vs_id_test", "split"]) == {
        "wilson",
        "percolation",
        "grid8",
    }
    notes = json.loads(next((run_dir / "posthoc").glob("*/notes.json")).read_text())
    assert "mahalanobis_multi/grid8" in notes["model_scorer_seconds"]
