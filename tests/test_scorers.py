"""Scorers: hand-made cases, a synthetic ID/OOD separation, and agreement with pytorch-ood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood import detector as pood
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from scipy.stats import spearmanr
from torch import nn

from harness import metrics
from harness.outputs import Head, Outputs
from harness.scorer import FitData
from methods.scorers.ash import ASH
from methods.scorers.energy import Energy
from methods.scorers.entropy import Entropy
from methods.scorers.knn import KNN
from methods.scorers.mahalanobis import Mahalanobis
from methods.scorers.maxlogit import MaxLogit
from methods.scorers.mcm import MCM
from methods.scorers.msp import MSP
from methods.scorers.react import ReAct
from methods.scorers.rel_mahalanobis import RelativeMahalanobis
from methods.scorers.scale import SCALE
from methods.scorers.vim import ViM

C, D = 4, 32


def synthetic(seed=0, n_id=400, n_ood=400):
    """Non-negative features: ID around 6·e_c (one class per coordinate block), OOD small and
    spread over all coordinates; the head is the matrix of class directions."""
    rng = np.random.default_rng(seed)
    means = np.zeros((C, D))
    for c in range(C):
        means[c, c * (D // C) : (c + 1) * (D // C)] = 3.0
    labels = rng.integers(0, C, n_id)
    id_feats = np.maximum(means[labels] + rng.normal(0, 0.5, (n_id, D)), 0)
    ood_feats = np.abs(rng.normal(0, 0.8, (n_ood, D)))
    head = Head(means / np.linalg.norm(means, axis=1, keepdims=True), np.zeros(C))

    def outputs(f, y):
        return Outputs(head(f).astype(np.float32), f.astype(np.float32), y, np.arange(len(f)))

    return (outputs(id_feats, labels), outputs(ood_feats, -np.ones(n_ood, dtype=np.int64)), head)


def fitted(scorer, train, head):
    scorer.fit(FitData(train=train, val=None, head=head, num_classes=C))
    return scorer


ALL = [
    MSP(),
    MaxLogit(),
    Energy(),
    Entropy(),
    Mahalanobis(),
    RelativeMahalanobis(),
    KNN(k=10),
    ViM(dim=8),
    ReAct(percentile=90),
    ASH(percentile=65),
    SCALE(percentile=65),
    MCM(temperature=0.1),
]


@pytest.mark.parametrize("scorer", ALL, ids=lambda s: type(s).__name__)
def test_every_scorer_separates_synthetic_id_from_ood(scorer):
    train, _, head = synthetic(seed=1)
    test_id, test_ood, _ = synthetic(seed=2)
    fitted(scorer, train, head)
    auroc = metrics.ood_metrics(scorer.score(test_id), scorer.score(test_ood))["auroc"]
    assert auroc >= 0.9, f"{type(scorer).__name__}: AUROC {auroc:.3f}"


def test_logit_scorers_on_hand_made_logits():
    out = Outputs(
        np.array([[0.0, 0.0], [10.0, 0.0], [1.0, 3.0]]),
        np.zeros((3, 1)),
        np.zeros(3, dtype=np.int64),
        np.arange(3),
    )
    assert MSP().score(out)[0] == pytest.approx(0.5)
    assert MaxLogit().score(out).tolist() == [0.0, 10.0, 3.0]
    assert Energy().score(out)[0] == pytest.approx(np.log(2))
    assert Energy(temperature=2.0).score(out)[2] == pytest.approx(
        2 * np.log(np.exp(0.5) + np.exp(1.5))
    )
    assert Entropy().score(out)[0] == pytest.approx(-np.log(2))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Energy(temperature=0)


def test_logit_scorers_agree_with_pytorch_ood():
    logits = torch.randn(100, 7) * 3
    out = Outputs(logits.numpy(), np.zeros((100, 1)), np.zeros(100, dtype=np.int64), np.arange(100))
    # pytorch-ood returns outlier scores (higher = more OOD): ours is their negative
    np.testing.assert_allclose(MSP().score(out), -pood.MaxSoftmax.score(logits).numpy(), atol=1e-6)
    np.testing.assert_allclose(
        MaxLogit().score(out), -pood.MaxLogit.score(logits).numpy(), atol=1e-5
    )
    np.testing.assert_allclose(
        Energy(temperature=2.0).score(out),
        -pood.EnergyBased.score(logits, 2.0).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    # pytorch-ood's entropy score is the entropy itself
    np.testing.assert_allclose(Entropy().score(out), -pood.Entropy.score(logits).numpy(), atol=1e-5)


def test_mahalanobis_against_scipy_and_pytorch_ood():
    train, test, _ = synthetic(seed=3)
    ours = fitted(Mahalanobis(), train, None)
    feats = train.features.astype(np.float64)
    means = np.stack([feats[train.labels == c].mean(0) for c in range(C)])
    centred = feats - means[train.labels]
    precision = np.linalg.pinv(centred.T @ centred / len(feats))
    expected = [
        -min(scipy_mahalanobis(x, m, precision) ** 2 for m in means)
        for x in test.features[:20].astype(np.float64)
    ]
    np.testing.assert_allclose(ours.score(test)[:20], expected, rtol=1e-6)
    ref = pood.Mahalanobis(None).fit_features(
        torch.tensor(train.features), torch.tensor(train.labels)
    )
    theirs = ref.predict_features(torch.tensor(test.features)).numpy()
    assert spearmanr(ours.score(test), theirs).statistic == pytest.approx(-1.0, abs=1e-6)


def test_relative_mahalanobis_agrees_with_pytorch_ood():
    train, test, _ = synthetic(seed=4)
    ours = fitted(RelativeMahalanobis(), train, None).score(test)
    ref = pood.RMD(None).fit_features(torch.tensor(train.features), torch.tensor(train.labels))
    theirs = ref.predict_features(torch.tensor(test.features)).numpy()
    assert spearmanr(ours, theirs).statistic == pytest.approx(-1.0, abs=1e-3)


def test_knn_is_the_kth_neighbour_distance_on_normalised_features():
    train, test, _ = synthetic(seed=5, n_id=60)
    ours = fitted(KNN(k=3), train, None).score(test)
    a = train.features / np.linalg.norm(train.features, axis=1, keepdims=True)
    b = test.features / np.linalg.norm(test.features, axis=1, keepdims=True)
    dist = np.sqrt(((b[:, None, :] - a[None]) ** 2).sum(-1))
    np.testing.assert_allclose(ours, -np.sort(dist, axis=1)[:, 2], atol=1e-5)
    ref = pood.KNN(None, k=3).fit_features(torch.tensor(train.features), torch.tensor(train.labels))
    theirs = ref.predict_features(torch.tensor(test.features)).numpy()
    assert spearmanr(ours, theirs).statistic == pytest.approx(-1.0, abs=1e-6)


def test_vim_agrees_with_pytorch_ood():
    train, test, head = synthetic(seed=6)
    ours = fitted(ViM(dim=8), train, head).score(test)
    ref = pood.ViM(None, d=8, w=torch.tensor(head.weight), b=torch.tensor(head.bias))
    ref.fit_features(torch.tensor(train.features, dtype=torch.float64), torch.tensor(train.labels))
    theirs = ref.predict_features(torch.tensor(test.features, dtype=torch.float64)).numpy()
    assert spearmanr(ours, theirs).statistic == pytest.approx(-1.0, abs=1e-6)


def linear(head):
    layer = nn.Linear(D, C)
    layer.weight.data = torch.tensor(head.weight, dtype=torch.float32)
    layer.bias.data = torch.tensor(head.bias, dtype=torch.float32)
    return layer


def test_react_clips_at_the_train_percentile_and_agrees_with_pytorch_ood():
    train, test, head = synthetic(seed=7)
    scorer = fitted(ReAct(percentile=90), train, head)
    assert scorer.threshold == pytest.approx(np.percentile(train.features, 90))
    # features above the threshold contribute as if they were at it
    boosted = Outputs(test.logits, test.features * 100, test.labels, test.index)
    clipped = np.minimum(test.features * 100, scorer.threshold)
    at_threshold = Outputs(test.logits, clipped, test.labels, test.index)
    np.testing.assert_allclose(scorer.score(boosted), scorer.score(at_threshold))
    ref = pood.ReAct(backbone=nn.Identity(), head=linear(head), threshold=scorer.threshold)
    theirs = ref(torch.tensor(test.features)).detach().numpy()
    np.testing.assert_allclose(scorer.score(test), -theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls,variant", [(ASH, "ash-s"), (SCALE, None)])
def test_ash_and_scale_agree_with_pytorch_ood(cls, variant):
    train, test, head = synthetic(seed=8)
    ours = fitted(cls(percentile=65), train, head).score(test)
    pooled_head = nn.Sequential(nn.Flatten(), linear(head))  # theirs act on N×D×1×1 maps
    if variant:
        ref = pood.ASH(backbone=nn.Identity(), head=pooled_head, variant=variant, percentile=0.65)
    else:
        ref = pood.SCALE(backbone=nn.Identity(), head=pooled_head, percentile=0.65)
    theirs = ref(torch.tensor(test.features).view(len(test.features), D, 1, 1)).detach().numpy()
    assert spearmanr(ours, theirs).statistic == pytest.approx(-1.0, abs=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_mcm_agrees_with_pytorch_ood(temperature):
    train, test, head = synthetic(seed=9)
    signed = Outputs(test.logits, test.features - 1.0, test.labels, test.index)  # any sign
    ours = fitted(MCM(temperature=temperature), train, head).score(signed)
    ref = pood.MCM(None, torch.tensor(head.weight * 7.0), temperature=temperature)  # any scale
    theirs = ref.predict_features(torch.tensor(signed.features)).numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MCM(temperature=0)


def test_scorers_that_assume_non_negative_features_are_inapplicable_on_signed_ones():
    from harness.scorer import inapplicable

    train, _, head = synthetic(seed=3)
    signed = Outputs(train.logits, train.features - 0.5, train.labels, train.index)
    for scorer in (ReAct(), ASH(), SCALE()):
        assert inapplicable(scorer, FitData(train, None, head, C), "") is None
        note = inapplicable(scorer, FitData(signed, None, head, C), "")
        assert note and "non-negative" in note and "-0.5" in note
    assert inapplicable(Energy(), FitData(signed, None, head, C), "") is None
    assert inapplicable(ViM(), FitData(train, None, None, C), "no head stored") == "no head stored"


def test_ash_prunes_and_scale_does_not():
    from methods.scorers.ash import prune_and_scale

    f = np.array([[1.0, 2.0, 3.0, 4.0]])
    pruned = prune_and_scale(f, 50, prune=True)
    scaled = prune_and_scale(f, 50, prune=False)
    factor = np.exp(10.0 / 7.0)
    np.testing.assert_allclose(pruned, [[0, 0, 3 * factor, 4 * factor]])
    np.testing.assert_allclose(scaled, f * factor)


def test_odin_perturbation_raises_confidence_and_agrees_with_pytorch_ood():
    from methods.scorers.odin import ODIN

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    x = torch.randn(40, 3, 2, 2)
    batches = [x[:16], x[16:]]
    plain = ODIN(temperature=10.0, epsilon=0.0).score_batches(model, batches)
    msp_at_t = torch.softmax(model(x) / 10.0, dim=1).max(dim=1).values.double().detach().numpy()
    np.testing.assert_allclose(plain, msp_at_t, rtol=1e-6)
    perturbed = ODIN(temperature=10.0, epsilon=0.01).score_batches(model, batches)
    assert (perturbed > plain).all()  # the step raises the predicted class's probability
    ref = pood.ODIN(model, eps=0.01, temperature=10.0)
    theirs = ref.predict(x).detach().double().numpy()
    np.testing.assert_allclose(perturbed, -theirs, rtol=1e-5)


def test_scod_interpolates_between_msp_and_its_ood_score():
    from methods.scorers.scod import SCOD

    train, _, head = synthetic(seed=9)
    test_id, test_ood, _ = synthetic(seed=10)
    test = Outputs(
        np.r_[test_id.logits, test_ood.logits],
        np.r_[test_id.features, test_ood.features],
        np.r_[test_id.labels, test_ood.labels],
        np.arange(800),
    )
    knn = {"_target_": "methods.scorers.knn.KNN", "k": 10}
    msp_only = fitted(SCOD(knn, c_in=0.1, c_out=0.0), train, head).score(test)
    assert spearmanr(msp_only, MSP().score(test)).statistic == pytest.approx(1.0)
    ood_only = fitted(SCOD(knn, c_in=0.1, c_out=0.9 - 1e-12), train, head).score(test)
    assert spearmanr(
        ood_only, fitted(KNN(k=10), train, head).score(test)
    ).statistic == pytest.approx(1.0)
    with pytest.raises(ValueError, match="c_in \\+ c_out < 1"):
        SCOD(knn, c_in=0.5, c_out=0.5)
    with pytest.raises(ValueError, match="needs the model"):
        SCOD({"_target_": "methods.scorers.odin.ODIN"})


def test_vim_gives_no_virtual_logit_inside_the_principal_subspace():
    train, test, head = synthetic(seed=11)
    vim = fitted(ViM(dim=8), train, head)
    # a feature at the origin plus a principal direction has no residual: score = logsumexp
    centred = train.features.astype(np.float64) - vim.origin
    principal = np.linalg.eigh(centred.T @ centred / len(centred))[1][:, -1]
    f = (vim.origin + 3 * principal)[None].astype(np.float64)
    out = Outputs(head(f), f, np.zeros(1, dtype=np.int64), np.arange(1))
    from scipy.special import logsumexp

    assert vim.score(out)[0] == pytest.approx(logsumexp(head(f)[0]), abs=1e-6)
