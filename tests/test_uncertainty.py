"""Adaptive ECE and split conformal prediction sets (harness/uncertainty.py,
harness/conformal.py, methods/conformal/): each against a brute-force computation from its
definition, conformal coverage on exchangeable synthetic data over many draws, and the
eval entries' validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness import conformal, metrics, registry
from harness.config import validate_eval
from harness.keys import eval_id
from methods.conformal.aps import APS
from methods.conformal.lac import LAC
from methods.conformal.raps import RAPS

# ---------------------------------------------------------------- adaptive ECE


def brute_force_adaptive_ece(logits, labels, n_bins):
    n = len(labels)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    items = sorted(
        ((probs[i].max(), int(np.argmax(probs[i]) == labels[i]), i) for i in range(n)),
        key=lambda t: (t[0], t[2]),
    )
    total = 0.0
    for b in range(n_bins):
        members = items[math.ceil(b * n / n_bins) : math.ceil((b + 1) * n / n_bins)]
        if members:
            conf = sum(m[0] for m in members) / len(members)
            acc = sum(m[1] for m in members) / len(members)
            total += len(members) / n * abs(acc - conf)
    return total


@pytest.mark.parametrize(("n", "k", "bins"), [(200, 5, 15), (37, 3, 10), (7, 4, 15), (300, 10, 1)])
def test_adaptive_ece_matches_brute_force(n, k, bins):
    rng = np.random.default_rng(n)
    logits = rng.normal(0, 3, (n, k))
    labels = rng.integers(0, k, n)
    expected = brute_force_adaptive_ece(logits, labels, bins)
    assert metrics.ece_adaptive(logits, labels, bins) == pytest.approx(expected, abs=1e-12)


def test_adaptive_ece_with_one_bin_is_the_gap_of_means():
    rng = np.random.default_rng(3)
    logits, labels = rng.normal(0, 2, (50, 4)), rng.integers(0, 4, 50)
    gap = metrics.msp(logits).mean() - np.mean(logits.argmax(1) == labels)
    assert metrics.ece_adaptive(logits, labels, 1) == pytest.approx(abs(gap))


# ---------------------------------------------------------------- conformal sets, brute force


def softmax_rows(z):
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def brute_score(kind, p, y, u, k_reg=0, lam=0.0):
    """Angelopoulos et al. (2021): LAC 1 - p_y; APS rho(y) + u p_y; RAPS + lam (o(y) - k_reg)^+."""
    if kind == "lac":
        return 1.0 - p[y]
    ranked = sorted(range(len(p)), key=lambda j: (-p[j], j))
    o = ranked.index(y) + 1
    rho = 0.0
    for j in ranked[: o - 1]:
        rho += p[j]
    score = rho + u * p[y]
    return score + lam * max(0, o - k_reg) if kind == "raps" else score


def brute_quantile(scores, alpha):
    """The smallest t with #{s <= t} >= (n+1)(1-alpha), +inf if no t is enough."""
    n = len(scores)
    for t in sorted(scores):
        if sum(s <= t for s in scores) >= (n + 1) * (1 - alpha) - 1e-9:
            return t
    return math.inf


def brute_sets(kind, probs, u, q, **kw):
    return [{y for y in range(probs.shape[1]) if brute_score(kind, p, y, ui, **kw) <= q}
            for p, ui in zip(probs, u, strict=True)]  # fmt: skip


CASES = [
    ("lac", LAC(), {}),
    ("aps", APS(randomized=True), {}),
    ("aps", APS(randomized=False), {}),
    ("raps", RAPS(k_reg=1, lam=0.05, randomized=True), {"k_reg": 1, "lam": 0.05}),
    ("raps", RAPS(k_reg=2, lam=0.2, randomized=False), {"k_reg": 2, "lam": 0.2}),
]


@pytest.mark.parametrize(("kind", "method", "kw"), CASES)
@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_sets_match_brute_force_from_the_definitions(kind, method, kw, alpha):
    rng = np.random.default_rng(11)
    k = 6
    logits = rng.normal(0, 2, (90, k))
    logits[:10, :2] = 1.0  # tied probabilities: ranks by class index
    labels = rng.integers(0, k, 90)
    u = rng.random(90) if method.randomized else np.ones(90)
    cal, test = slice(0, 60), slice(60, 90)
    probs = softmax_rows(logits)
    cal_scores = [brute_score(kind, probs[i], labels[i], u[i], **kw) for i in range(60)]
    q_ref = brute_quantile(cal_scores, alpha)
    q = conformal.threshold(
        conformal.true_label_scores(method, logits[cal], labels[cal], u[cal]), alpha
    )
    assert q == pytest.approx(q_ref, abs=1e-12)
    sets = conformal.prediction_sets(method, logits[test], u[test], q)
    expected = brute_sets(kind, probs[test], u[test], q, **kw)
    assert [set(np.flatnonzero(row)) for row in sets] == expected


def test_too_few_calibration_examples_give_every_class():
    assert conformal.threshold(np.array([0.2, 0.5]), 0.1) == math.inf  # ceil(3 * 0.9) = 3 > 2
    sets = conformal.prediction_sets(LAC(), np.zeros((4, 3)), np.ones(4), math.inf)
    assert sets.all()


def test_aps_sets_are_prefixes_of_the_ranking():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, (200, 8))
    probs = softmax_rows(logits)
    for method in (APS(), RAPS(k_reg=2, lam=0.1)):
        sets = conformal.prediction_sets(method, logits, rng.random(200), 0.7)
        ranked = np.take_along_axis(sets, np.argsort(-probs, axis=1, kind="stable"), axis=1)
        assert (np.diff(ranked.astype(int), axis=1) <= 0).all()  # never in after an out


# ---------------------------------------------------------------- coverage guarantee


@pytest.mark.parametrize(
    "method", [LAC(), APS(), RAPS(k_reg=1, lam=0.1)], ids=["lac", "aps", "raps"]
)
def test_coverage_on_exchangeable_data_is_at_least_one_minus_alpha(method):
    """Mean coverage over draws: >= 1 - alpha, and (continuous scores) <= 1 - alpha +
    1/(n+1) (Angelopoulos et al., 2021, Theorem 1 and its upper bound), within 4 standard
    errors of the mean over draws."""
    rng = np.random.default_rng(0)
    k, n_cal, n_test, alpha, draws = 5, 100, 200, 0.1, 300
    w = rng.normal(0, 1, (k, k))
    coverages = []
    for _ in range(draws):
        x = rng.normal(0, 1, (n_cal + n_test, k))
        true = softmax_rows(x @ w * 1.5)
        y = (rng.random(len(x))[:, None] > np.cumsum(true, 1)).sum(1)
        logits = x @ w  # a miscalibrated model of the same data
        u = rng.random(len(x))
        cal, test = slice(0, n_cal), slice(n_cal, None)
        q = conformal.threshold(
            conformal.true_label_scores(method, logits[cal], y[cal], u[cal]), alpha
        )
        sets = conformal.prediction_sets(method, logits[test], u[test], q)
        coverages.append(sets[np.arange(n_test), y[test]].mean())
    mean, se = np.mean(coverages), np.std(coverages) / np.sqrt(draws)
    assert mean >= 1 - alpha - 4 * se
    assert mean <= 1 - alpha + 1 / (n_cal + 1) + 4 * se


def test_calibration_split_is_seeded_and_disjoint():
    a, b = conformal.calibration_split(101, 0.3, seed=4)
    a2, _ = conformal.calibration_split(101, 0.3, seed=4)
    assert len(a) == 30 and len(b) == 71 and not set(a) & set(b)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, conformal.calibration_split(101, 0.3, seed=5)[0])


# ---------------------------------------------------------------- the eval entries

BASE = {"ece_bins": 15, "fit_size": 10, "coverages": [0.9]}
GOOD = {"alpha": 0.1, "calibration_fraction": 0.5, "seed": 0,
        "methods": {"lac": {"_target_": "methods.conformal.lac.LAC"}}}  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        ("ece_adaptive_bins", 0, "ece_adaptive_bins must be a positive integer"),
        ("ece_adaptive_bins", "15", "ece_adaptive_bins must be a positive integer"),
        ("conformal", [0.1], "conformal must be a mapping"),
        ("conformal", {**GOOD, "alpha": 1.5}, "conformal.alpha must be a number in"),
        (
            "conformal",
            {**GOOD, "calibration_fraction": 0},
            "calibration_fraction must be a number in",
        ),
        ("conformal", {**GOOD, "seed": "x"}, "conformal.seed must be a non-negative integer"),
        ("conformal", {**GOOD, "seed": -1}, "conformal.seed must be a non-negative integer"),
        ("conformal", {**GOOD, "level": 0.9}, "unknown entries"),
        (
            "conformal",
            {**GOOD, "calibrator": "platt"},
            "conformal.calibrator must be null or one of",
        ),
        ("conformal", {**GOOD, "methods": {}}, "conformal.methods must be a non-empty mapping"),
        (
            "conformal",
            {**GOOD, "methods": {"x": {"_target_": "methods.conformal.nope.X"}}},
            "conformal.methods.x: .*cannot import",
        ),
        (
            "conformal",
            {**GOOD, "methods": {"raps": {"_target_": "methods.conformal.raps.RAPS", "lam": -1}}},
            "methods.raps: lam must be",
        ),
        (
            "conformal",
            {**GOOD, "methods": {"aps": {"_target_": "methods.conformal.aps.APS", "k_reg": 1}}},
            "methods.aps: .*k_reg",
        ),
    ],
)
def test_bad_uncertainty_entries_are_refused_naming_them(entry, value, message):
    with pytest.raises(ValueError, match=message):
        validate_eval({**BASE, entry: value})


def test_the_conformal_methods_are_listed():
    assert registry.available("conformal") == ["aps", "lac", "raps"]


def test_good_entries_pass_and_null_entries_keep_the_eval_id():
    validate_eval({**BASE, "ece_adaptive_bins": 10, "conformal": GOOD})
    assert eval_id({**BASE, "ece_adaptive_bins": None, "conformal": None}) == eval_id(BASE)
    assert eval_id({**BASE, "ece_adaptive_bins": 15}) != eval_id(BASE)
