"""Metric functions on cached outputs: thin over scikit-learn, torchmetrics and pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.special import log_softmax, softmax
from sklearn.metrics import accuracy_score, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error


def predictions(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(accuracy_score(labels, predictions(logits)))


def per_example_nll(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels]


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(per_example_nll(logits, labels).mean())


def ece(logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error (L1, equal-width confidence bins), via torchmetrics."""
    probs = torch.from_numpy(softmax(logits.astype(np.float64), axis=1))
    value = multiclass_calibration_error(
        probs, torch.from_numpy(labels), num_classes=logits.shape[1], n_bins=n_bins, norm="l1"
    )
    return float(value)


def msp(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax probability: higher = more confident / more in-distribution."""
    return softmax(logits.astype(np.float64), axis=1).max(axis=1)


def group_accuracy(correct: np.ndarray, meta: pd.DataFrame, group_cols: list[str]) -> pd.DataFrame:
    """Accuracy and count per group (the combination of group_cols), sorted by group."""
    keys = meta[group_cols].astype(str).agg("|".join, axis=1).to_numpy()
    frame = pd.DataFrame({"group": keys, "correct": correct.astype(float)})
    out = frame.groupby("group", sort=True)["correct"].agg(["mean", "size"])
    return out.rename(columns={"mean": "accuracy", "size": "n"}).reset_index()


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float | None:
    """AUROC of telling positives (higher scores expected) from negatives; None if undefined."""
    if len(positive_scores) == 0 or len(negative_scores) == 0:
        return None
    y = np.r_[np.ones(len(positive_scores)), np.zeros(len(negative_scores))]
    return float(roc_auc_score(y, np.r_[positive_scores, negative_scores]))
