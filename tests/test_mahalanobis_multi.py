"""Multi-layer Mahalanobis (methods/scorers/mahalanobis_multi.py): per-example scores equal
pytorch-ood's MultiMahalanobis (fit_structured / predict_structured, equal weights, no
preprocessing) up to its convention (its covariance is the within-class scatter, not
divided by N, and its score is the outlier score: ours = −N · theirs). It is cache-only:
the forward pass records the per-stage pooled features (harness/stages.py) that equal timm's
forward_intermediates averaged over space, in the same pass, only when a scorer asks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from pytorch_ood.detector import MultiMahalanobis as Reference
from scipy.spatial.distance import cdist

import harness.run as run_mod
from harness.data import Split
from harness.forward import forward_split
from harness.keys import make_keys
from harness.models import forward_outputs
from harness.outputs import Outputs
from harness.posthoc import load_scores
from harness.rundir import RunDir
from harness.stages import stage_modules, stage_request
from methods.scorers.mahalanobis_multi import MultiMahalanobis, pooled_stages

from .conftest import OPENOOD_FULL_TINY, TINY, compose_config, run_rows


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


def test_the_forward_pass_caches_the_pooled_stages_of_timm_intermediates(tmp_path):
    """One pass gives logits, features and stages; the stages equal forward_intermediates'
    maps averaged over space (another route through the model), batch by batch."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    x = torch.randn(5, 3, 32, 32)
    split = Split("s", "id_test", pd.DataFrame({"label": [0, 1, 2, 0, 1]}), lambda i: x[i])
    out = forward_split(model, split, 2, torch.device("cpu"), stages=stage_modules(model))
    expected = pooled_stages(model, x, None)
    assert len(out.stages) == len(expected) == 5
    for got, want in zip(out.stages, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plain = forward_split(model, split, 2, torch.device("cpu"))
    assert plain.stages is None
    np.testing.assert_allclose(plain.logits, out.logits, rtol=1e-6)
    assert not model._forward_hooks and not model.layer1._forward_hooks  # hooks removed
    out.save(tmp_path / "o.npz", "float16")
    back = Outputs.load(tmp_path / "o.npz")
    np.testing.assert_allclose(back.stages[3], out.stages[3], rtol=1e-3)
    plain.save(tmp_path / "p.npz")
    assert Outputs.load(tmp_path / "p.npz").stages is None


def test_only_a_scorer_that_needs_stages_requests_them():
    mm = {"_target_": "methods.scorers.mahalanobis_multi.MultiMahalanobis"}
    msp = {"_target_": "methods.scorers.msp.MSP"}
    assert stage_request({"scorers": {"msp": msp, "mm": mm}})
    assert not stage_request({"scorers": {"msp": msp}})
    assert stage_modules(torch.nn.Linear(2, 2)) is None


def test_openood_full_scores_it_from_the_cache(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                f"results_dir={tmp_path}",
                "eval=openood_full",
                "eval.fit_size=1000",
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
    assert not any(k.startswith("mahalanobis_multi/") for k in notes["model_scorer_seconds"])
    # per example, brute force on the cached stages (scipy's Mahalanobis distance; the tiny
    # run's covariances are singular, where pytorch-ood's float32 pseudo-inverse differs)
    rd = RunDir.at(run_dir)
    bench = json.loads(rd.benchmark_json.read_text())
    cached = {s: Outputs.load(rd.output_path(s, v["forward_key"])) for s, v in bench["splits"].items()}  # fmt: skip
    train = next(o for s, o in cached.items() if bench["splits"][s]["role"] == "train")
    assert len(train.stages) == 5  # test_resnet: the stem and four stages
    for split in ("wilson", "grid8"):
        expected = np.zeros(len(cached[split].labels))
        for f_train, f_test in zip(train.stages, cached[split].stages, strict=True):
            f_train, f_test = f_train.astype(np.float64), f_test.astype(np.float64)
            classes = np.unique(train.labels)
            mu = np.stack([f_train[train.labels == k].mean(axis=0) for k in classes])
            within = f_train - mu[np.searchsorted(classes, train.labels)]
            vi = np.linalg.pinv(np.cov(within.T, bias=True), hermitian=True)
            expected += -0.5 * (cdist(f_test, mu, "mahalanobis", VI=vi) ** 2).min(axis=1)
        got = load_scores(run_dir, split)["mahalanobis_multi"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_a_cache_without_stages_skips_it_with_a_note(tmp_path):
    """A run finished under eval=default has no stages in its cache: eval=openood_full
    afterwards (the run is skipped, the stage computed from the cache) notes the skip."""
    first = run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}"]))
    rd = RunDir.at(first["run_dir"])
    bench = json.loads(rd.benchmark_json.read_text())
    for split, spec in bench["splits"].items():
        assert Outputs.load(rd.output_path(split, spec["forward_key"])).stages is None
    again = run_mod.run(
        compose_config(
            [
                *TINY,
                f"results_dir={tmp_path}",
                *OPENOOD_FULL_TINY,
            ]  # fmt: skip
        )
    )
    assert again["skipped"]
    skipped = {}
    for notes in Path(first["run_dir"]).glob("posthoc/*/notes.json"):
        skipped.update(json.loads(notes.read_text()).get("skipped_scorers", {}))
    assert "no per-stage features cached" in skipped["mahalanobis_multi"]


def test_an_out_of_memory_retry_keeps_the_stages_whole():
    """A batch that runs out of memory is run again in halves: the failed attempt's stage
    records are dropped, so each example has its stages once."""
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    x = torch.randn(6, 3, 32, 32)
    split = Split("s", "id_test", pd.DataFrame({"label": [0] * 6}), lambda i: x[i])

    def predict(inputs):
        out = forward_outputs(model, inputs)  # the hooks fire, then the "device" gives up
        if len(inputs) > 2:
            raise torch.OutOfMemoryError("simulated")
        return out

    out = forward_split(model, split, 6, torch.device("cpu"), predict=predict, stages=stage_modules(model))  # fmt: skip
    for got, want in zip(out.stages, pooled_stages(model, x, None), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_stage_request_enters_the_forward_key_only_when_set():
    keys = make_keys({"seed": 0, "x": 1})
    plain = keys.forward_key("test", {"t": 1}, None, "fp32")
    assert keys.forward_key("test", {"t": 1}, None, "fp32", stage_features=False) == plain
    assert keys.forward_key("test", {"t": 1}, None, "fp32", stage_features=True) != plain


def test_an_unknown_fit_is_refused_naming_the_option():
    from methods.scorers.mahalanobis_multi import MultiMahalanobis

    with pytest.raises(ValueError, match="mahalanobis_multi fit"):
        MultiMahalanobis(fit="train")
