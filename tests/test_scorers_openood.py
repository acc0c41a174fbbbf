"""The detectors of eval=openood: each against pytorch-ood's implementation (or a brute-force
computation) on the same inputs, and the faiss kNN backend against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_ood import detector as pood
from scipy.special import softmax
from torch import nn

from harness import metrics
from harness.outputs import Head, Outputs
from harness.scorer import FitData
from methods.scorers.dice import DICE
from methods.scorers.fdbd import FDBD
from methods.scorers.gen import GEN
from methods.scorers.gradnorm import GradNorm
from methods.scorers.klm import KLMatching
from methods.scorers.knn import KNN, TopSimilarities
from methods.scorers.msp_t import TemperatureMSP
from methods.scorers.nnguide import NNGuide
from methods.scorers.she import SHE
from tests.test_scorers import C, fitted, linear, synthetic

T = torch.tensor


@pytest.mark.parametrize(
    "scorer",
    [GEN(), KLMatching(), DICE(percentile=50), SHE(), NNGuide(k=5), FDBD(), GradNorm()]
    + [TemperatureMSP(), KNN(k=10, backend="faiss")],
    ids=lambda s: type(s).__name__,
)
def test_every_new_scorer_separates_synthetic_id_from_ood(scorer):
    train, _, head = synthetic(seed=1)
    test_id, test_ood, _ = synthetic(seed=2)
    scorer.fit(FitData(train=train, val=test_id, head=head, num_classes=C))
    auroc = metrics.ood_metrics(scorer.score(test_id), scorer.score(test_ood))["auroc"]
    assert auroc >= 0.9, f"{type(scorer).__name__}: AUROC {auroc:.3f}"


@pytest.mark.parametrize("top_m", [None, 2])
def test_gen_agrees_with_pytorch_ood(top_m):
    logits = torch.randn(200, 6, dtype=torch.float64) * 3
    out = Outputs(logits.numpy(), np.zeros((200, 1)), np.zeros(200, dtype=np.int64), np.arange(200))
    theirs = pood.GEN.score(logits, gamma=0.1, M=top_m).numpy()  # a mean over the top M
    m = top_m or 6
    np.testing.assert_allclose(GEN(gamma=0.1, top_m=top_m).score(out), -m * theirs, rtol=1e-9)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        GEN(gamma=0)


def test_kl_matching_fits_on_val_and_agrees_with_pytorch_ood():
    train, test, head = synthetic(seed=3)
    val, _, _ = synthetic(seed=4, n_id=300)
    ours = KLMatching()
    ours.fit(FitData(train=train, val=val, head=head, num_classes=C))
    ref = pood.KLMatching(None).fit_logits(T(val.logits, dtype=torch.float64))
    theirs = ref.predict_logits(T(test.logits, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours.score(test), -theirs, rtol=1e-6, atol=1e-9)
    # brute force for one example: min over the typical posteriors of KL(p || d_k)
    p_val = softmax(val.logits.astype(np.float64), axis=1)
    typical = [p_val[p_val.argmax(1) == k].mean(0) for k in range(C)]
    p = softmax(test.logits[0].astype(np.float64))
    expected = -min((p * np.log(p / d)).sum() for d in typical)
    assert ours.score(test)[0] == pytest.approx(expected, rel=1e-9)


def test_dice_agrees_with_pytorch_ood():
    train, test, head = synthetic(seed=5)
    ours = fitted(DICE(percentile=70), train, head)
    w, b = T(head.weight, dtype=torch.float32), T(head.bias, dtype=torch.float32)
    ref = pood.DICE(None, w=w, b=b, p=0.7).fit_features(T(train.features), T(train.labels))
    theirs = ref.predict_features(T(test.features)).numpy()
    np.testing.assert_allclose(ours.score(test), -theirs, rtol=1e-5, atol=1e-5)
    # a dense head: the top 30% of the C × D contributions keep their weights
    dense = Head(np.random.default_rng(5).normal(size=head.weight.shape), head.bias)
    kept = (fitted(DICE(percentile=70), train, dense).head.weight != 0).mean()
    assert kept == pytest.approx(0.3, abs=1 / head.weight.size)


def test_she_agrees_with_pytorch_ood():
    train, test, head = synthetic(seed=6)
    ours = fitted(SHE(), train, head).score(test)
    ref = pood.SHE(encoder=nn.Identity(), head=linear(head))
    ref.fit_features(T(train.features), T(train.labels))
    theirs = ref.predict_features(T(test.features)).detach().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_nnguide_agrees_with_pytorch_ood(backend):
    train, test, head = synthetic(seed=7)
    ours = fitted(NNGuide(k=5, backend=backend), train, head).score(test)
    ref = pood.NNGuide(encoder=nn.Identity(), head=linear(head), k=5)
    ref.fit_features(T(train.features), T(train.labels))
    theirs = ref.predict_features(T(test.features)).detach().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-4, atol=1e-4)


def test_fdbd_agrees_with_pytorch_ood_and_brute_force():
    train, test, head = synthetic(seed=8)
    ours = fitted(FDBD(), train, head).score(test)
    ref = pood.fDBD(encoder=nn.Identity(), head=linear(head))
    ref.fit_features(T(train.features))
    if ref._denom_matrix is None:
        ref._precompute_denom_matrix()
    theirs = ref.predict_features(T(test.features)).detach().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-4)
    # brute force for one example: the mean distance to the other classes' boundaries
    f = test.features[0].astype(np.float64)
    z = head(f[None])[0]
    p = int(z.argmax())
    w = head.weight
    others = [abs(z[c] - z[p]) / np.linalg.norm(w[p] - w[c]) for c in range(C) if c != p]
    mean = train.features.astype(np.float64).mean(0)
    assert ours[0] == pytest.approx(np.mean(others) / np.linalg.norm(f - mean), rel=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_gradnorm_is_pytorch_ood_gradnorm_on_the_fc_weight(temperature):
    _, test, head = synthetic(seed=9, n_id=50)
    out = Outputs(head(test.features.astype(np.float64)), test.features, test.labels, test.index)
    ours = GradNorm(temperature=temperature).score(out)
    ref = pood.GradNorm(
        linear(head).double(), lambda name: name == "weight", temperature=temperature
    )
    theirs = ref.predict(T(test.features, dtype=torch.float64)).detach().numpy()
    np.testing.assert_allclose(ours, -theirs, rtol=1e-6)


def test_temperature_msp_fixed_and_fitted():
    train, test, head = synthetic(seed=10)
    val, _, _ = synthetic(seed=11, n_id=300)
    fixed = fitted(TemperatureMSP(temperature=2.0), train, head).score(test)
    expected = softmax(test.logits.astype(np.float64) / 2.0, axis=1).max(axis=1)
    np.testing.assert_allclose(fixed, expected, rtol=1e-12)
    scorer = TemperatureMSP()
    scorer.fit(FitData(train=train, val=val, head=head, num_classes=C))
    assert scorer.fitted == pytest.approx(metrics.fit_temperature(val.logits, val.labels))
    with pytest.raises(ValueError, match="temperature must be > 0 or null"):
        TemperatureMSP(temperature=-1.0)


def test_knn_faiss_backend_matches_sklearn():
    rng = np.random.default_rng(12)
    train, test_id, _ = synthetic(seed=12, n_id=2000)
    _, test_ood, _ = synthetic(seed=13)
    scores = {}
    for backend in ("sklearn", "faiss"):
        knn = fitted(KNN(k=50, backend=backend), train, None)
        scores[backend] = (knn.score(test_id), knn.score(test_ood))
    for a, b in zip(scores["sklearn"], scores["faiss"], strict=True):
        assert np.abs(a - b).max() <= 1e-5
    aurocs = [metrics.ood_metrics(*scores[b])["auroc"] for b in ("sklearn", "faiss")]
    assert abs(aurocs[0] - aurocs[1]) <= 1e-6
    # the numpy path of the shared search against faiss on random vectors
    bank, queries = rng.normal(size=(300, 8)), rng.normal(size=(40, 8))
    np.testing.assert_allclose(
        TopSimilarities(bank, "sklearn").search(queries, 7),
        TopSimilarities(bank, "faiss").search(queries, 7),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="backend must be one of"):
        KNN(backend="annoy")
