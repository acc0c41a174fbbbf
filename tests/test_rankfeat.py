"""RankFeat (methods/scorers/rankfeat.py): per-example scores equal pytorch-ood's RankFeat
(negated: its outlier score is the negative energy) on a timm ResNet's own backbone and
head; the rank-1 removal equals numpy's SVD; eval=openood_full runs it during harness.run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from pytorch_ood.detector import RankFeat as ReferenceRankFeat

import harness.run as run_mod
from methods.scorers.rankfeat import RankFeat, remove_rank1

from .conftest import OPENOOD_FULL_TINY, TINY, compose_config, run_rows


def test_remove_rank1_is_the_svd_remainder():
    maps = torch.randn(3, 5, 4, 2, dtype=torch.float64)
    got = remove_rank1(maps).numpy()
    for b in range(3):
        m = maps[b].reshape(5, 8).numpy()
        u, s, vt = np.linalg.svd(m, full_matrices=False)
        np.testing.assert_allclose(
            got[b].reshape(5, 8), m - s[0] * np.outer(u[:, 0], vt[0]), atol=1e-10
        )


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_rankfeat_matches_pytorch_ood(temperature):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    x = torch.randn(6, 3, 64, 64)
    ours = RankFeat(temperature).score_feature_maps(
        model.forward_features, model.forward_head, [x[:4], x[4:]]
    )
    reference = ReferenceRankFeat(
        backbone=model.forward_features,
        head=model.forward_head,
        detector=lambda z: -temperature * torch.logsumexp(z / temperature, dim=1),
    )
    with torch.no_grad():
        expected = -reference.predict(x).double().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_rankfeat_refuses_a_bad_temperature():
    with pytest.raises(ValueError, match="rankfeat temperature"):
        RankFeat(temperature=0)


def test_openood_full_runs_rankfeat_during_the_run(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                f"results_dir={tmp_path}",
                *OPENOOD_FULL_TINY,
                "+eval.scorers.rankfeat34._target_=methods.scorers.rankfeat.RankFeat",
                "+eval.scorers.rankfeat34.fuse_block3=true",
            ]  # fmt: skip
        )
    )
    run_dir = tmp_path / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    fused = rows[(rows["scorer"] == "rankfeat34") & (rows["metric"] == "auroc_vs_id_test")]
    assert set(fused["split"]) == {"wilson", "percolation", "grid8"}
    rank = rows[rows["scorer"] == "rankfeat"]
    assert set(rank.loc[rank["metric"] == "auroc_vs_id_test", "split"]) == {
        "wilson",
        "percolation",
        "grid8",
    }
    notes = json.loads(next((run_dir / "posthoc").glob("*/notes.json")).read_text())
    assert "rankfeat/grid8" in notes["model_scorer_seconds"]
    assert "rankfeat" not in notes["skipped_scorers"]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_block3_fusion_matches_pytorch_ood_per_block(temperature):
    """The paper's Block 3 + 4 variant: pytorch-ood's RankFeat run on each block (block 3
    spelled out through the ResNet's own layers, continued by layer4 and the head), their
    logits averaged (the paper's code), then the energy."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    x = torch.randn(6, 3, 64, 64)
    scorer = RankFeat(temperature, fuse_block3=True)
    assert scorer.uses_model  # harness/forward.py hands it the model
    scorer.model = model
    ours = scorer.score_feature_maps(model.forward_features, model.forward_head, [x[:4], x[4:]])

    def to_block3(inputs):
        m = model
        stem = m.maxpool(m.act1(m.bn1(m.conv1(inputs))))
        return m.layer3(m.layer2(m.layer1(stem)))

    def logits_of(backbone, head):
        return ReferenceRankFeat(backbone=backbone, head=head, detector=lambda z: z).predict(x)

    with torch.no_grad():
        block4 = logits_of(model.forward_features, model.forward_head)
        block3 = logits_of(to_block3, lambda maps: model.forward_head(model.layer4(maps)))
        fused = (block3.double() + block4.double()) / 2
        expected = (temperature * torch.logsumexp(fused / temperature, dim=1)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    plain = RankFeat(temperature).score_feature_maps(
        model.forward_features, model.forward_head, [x]
    )
    assert not np.allclose(plain, ours)  # the fusion changes the scores


def test_block3_fusion_refusals():
    with pytest.raises(ValueError, match="fuse_block3 must be"):
        RankFeat(fuse_block3="yes")
    scorer = RankFeat(fuse_block3=True)
    scorer.model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="feature_info"):
        scorer.score_feature_maps(lambda x: x, lambda m: m, [torch.zeros(1, 2)])
