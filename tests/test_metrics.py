"""Metric functions against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from harness import metrics


def test_accuracy_and_nll():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0], [0.5, 0.4]])
    labels = np.array([0, 1, 1, 1])
    assert metrics.accuracy(logits, labels) == 0.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert metrics.nll(logits, labels) == pytest.approx(log_loss(labels, probs))


def test_ece_on_a_hand_computed_case():
    # Two confidence bins: 0.9 (2 examples, 1 right) and 0.6 (2 examples, both right).
    p_high, p_mid = np.log([0.9, 0.1]), np.log([0.6, 0.4])
    logits = np.array([p_high, p_high, p_mid, p_mid])
    labels = np.array([0, 1, 0, 0])
    expected = 0.5 * abs(0.9 - 0.5) + 0.5 * abs(0.6 - 1.0)
    assert metrics.ece(logits, labels, n_bins=10) == pytest.approx(expected, abs=1e-6)


def test_group_accuracy_and_worst_group():
    meta = pd.DataFrame({"label": [0, 0, 1, 1, 1], "bg": ["a", "b", "a", "a", "b"]})
    correct = np.array([1, 0, 1, 0, 1], dtype=bool)
    groups = metrics.group_accuracy(correct, meta, ["label", "bg"])
    assert groups.set_index("group")["accuracy"].to_dict() == {
        "0|a": 1.0,
        "0|b": 0.0,
        "1|a": 0.5,
        "1|b": 1.0,
    }
    assert groups.set_index("group")["n"].to_dict() == {"0|a": 1, "0|b": 1, "1|a": 2, "1|b": 1}


def test_auroc_and_msp():
    assert metrics.auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert metrics.auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert metrics.auroc(np.array([]), np.array([0.3])) is None
    msp = metrics.msp(np.array([[0.0, 0.0], [10.0, 0.0]]))
    assert msp[0] == pytest.approx(0.5) and msp[1] > 0.99
