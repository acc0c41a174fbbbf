"""Metric functions on cached outputs: thin over scikit-learn, torchmetrics and pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.special import log_softmax, softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
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


def ece_adaptive(logits: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE over equal-mass confidence bins (Nguyen & O'Connor, 2015; "adaptive" binning as in
    Nixon et al., 2019, top-label): examples sorted by confidence (stable, so ties keep their
    order), the one at rank r (0-based) of N in bin floor(r * n_bins / N); sum over bins of
    n_b / N * |accuracy_b - mean confidence_b|. Fewer examples than bins: empty bins drop."""
    probs = softmax(logits.astype(np.float64), axis=1)
    confidence, correct = probs.max(axis=1), predictions(logits) == labels
    n = len(labels)
    order = np.argsort(confidence, kind="stable")
    bins = np.arange(n) * n_bins // n
    gap = np.bincount(bins, confidence[order] - correct[order], minlength=n_bins)
    return float(np.abs(gap).sum() / n)  # |sum of gaps| = n_b * |mean gap| per bin


def msp(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax probability: higher = more confident / more in-distribution."""
    return softmax(logits.astype(np.float64), axis=1).max(axis=1)


def group_accuracy(correct: np.ndarray, meta: pd.DataFrame, group_cols: list[str]) -> pd.DataFrame:
    """Accuracy and count per group (the combination of group_cols), sorted by group."""
    keys = meta[group_cols].astype(str).agg("|".join, axis=1).to_numpy()
    frame = pd.DataFrame({"group": keys, "correct": correct.astype(float)})
    out = frame.groupby("group", sort=True)["correct"].agg(["mean", "size"])
    return out.rename(columns={"mean": "accuracy", "size": "n"}).reset_index()


# ---------------------------------------------------------------- SubpopBench's label metrics
# (its utils/eval_helper.py: scikit-learn on hard predictions; classes are those present in the
# labels, precision 0 for a class never predicted, as its zero_division=0)


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """The mean over the classes present in `labels` of their recall: scikit-learn's
    balanced_accuracy_score, as recall_score over those classes (the same number, without
    its warning when a prediction names a class absent from the labels)."""
    present = np.unique(labels)
    return float(recall_score(labels, preds, labels=present, average="macro", zero_division=0))


def worst_class_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """The lowest recall (accuracy among its examples) of any class present in `labels`."""
    present = np.unique(labels)
    return float(recall_score(labels, preds, labels=present, average=None, zero_division=0).min())


def worst_class_precision(labels: np.ndarray, preds: np.ndarray) -> float:
    """The lowest precision of any class present in `labels` (0 where it is never predicted):
    SubpopBench's "worst precision"."""
    present = np.unique(labels)
    values = precision_score(labels, preds, labels=present, average=None, zero_division=0)
    return float(values.min())


def macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Unweighted mean F1 over the classes in labels or predictions (scikit-learn's macro)."""
    return float(f1_score(labels, preds, average="macro", zero_division=0))


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float | None:
    """AUROC of telling positives (higher scores expected) from negatives; None if undefined."""
    if len(positive_scores) == 0 or len(negative_scores) == 0:
        return None
    y = np.r_[np.ones(len(positive_scores)), np.zeros(len(negative_scores))]
    return float(roc_auc_score(y, np.r_[positive_scores, negative_scores]))


# ---------------------------------------------------------------- OOD detection
# Convention: ID examples are the positives and scores are "higher = more ID".


def _check_scores(scores: np.ndarray, where: str) -> None:
    if not np.isfinite(scores).all():
        raise ValueError(f"{where}: scores contain NaN or inf")


def ood_metrics(id_scores: np.ndarray, other_scores: np.ndarray) -> dict[str, float] | None:
    """AUROC, AUPR-In (ID positive), AUPR-Out (other positive, negated scores), FPR@95%TPR.

    None when one side is empty. FPR@95 is the fraction of the other split accepted at the
    highest threshold that still accepts at least 95% of ID examples.
    """
    if len(id_scores) == 0 or len(other_scores) == 0:
        return None
    _check_scores(id_scores, "ID scores")
    _check_scores(other_scores, "OOD scores")
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(other_scores))]
    s = np.r_[id_scores, other_scores].astype(np.float64)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr_in": float(average_precision_score(y, s)),
        "aupr_out": float(average_precision_score(1 - y, -s)),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }


# ---------------------------------------------------------------- selective classification


def risk_coverage(scores: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """Risk (error rate among accepted) at each distinct threshold, most confident first.

    Tied scores are accepted together, so the curve does not depend on the order of ties.
    """
    _check_scores(scores, "selective classification")
    frame = pd.DataFrame({"s": scores, "err": ~correct.astype(bool)})
    groups = frame.groupby("s", sort=True)["err"].agg(["sum", "size"]).iloc[::-1]
    accepted = groups["size"].cumsum().to_numpy()
    errors = groups["sum"].cumsum().to_numpy()
    return pd.DataFrame(
        {
            "threshold": groups.index.to_numpy(),
            "coverage": accepted / len(frame),
            "risk": errors / accepted,
            "group_size": groups["size"].to_numpy(),
        }
    )


def aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean, over examples, of the risk at the
    coverage where the example is accepted (Geifman et al.; tie groups enter together)."""
    curve = risk_coverage(scores, correct)
    return float((curve["risk"] * curve["group_size"]).sum() / len(scores))


def oracle_aurc(correct: np.ndarray) -> float:
    """AURC of the ranking that accepts every correct example, one at a time, before any
    error: the risk at k accepted is max(0, k - n_correct) / k."""
    n, n_correct = len(correct), int(np.sum(correct))
    k = np.arange(1, n + 1)
    return float(np.mean(np.maximum(0, k - n_correct) / k))


def e_aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """AURC minus that of the oracle ranking (>= 0)."""
    return aurc(scores, correct.astype(bool)) - oracle_aurc(correct.astype(bool))


def risk_at_coverages(scores: np.ndarray, correct: np.ndarray, coverages: np.ndarray) -> np.ndarray:
    """Risk of the smallest most-confident set covering at least each coverage (ties together)."""
    curve = risk_coverage(scores, correct)
    at = np.searchsorted(curve["coverage"].to_numpy(), np.asarray(coverages) - 1e-12, side="left")
    return curve["risk"].to_numpy()[np.minimum(at, len(curve) - 1)]


def accuracy_at_coverage(scores: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """Accuracy of the smallest most-confident set covering at least `coverage`."""
    return float(1.0 - risk_at_coverages(scores, correct, np.array([coverage]))[0])


# ---------------------------------------------------------------- calibration


def brier(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over examples of the squared distance between probabilities and the one-hot label."""
    probs = softmax(logits.astype(np.float64), axis=1)
    onehot = np.eye(logits.shape[1])[labels]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the NLL of logits / T (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: nll(logits / np.exp(log_t), labels), bounds=(-4.0, 4.0), method="bounded"
    )
    return float(np.exp(result.x))


# ---------------------------------------------------------------- accuracy without labels


def negative_entropy(logits: np.ndarray) -> np.ndarray:
    logp = log_softmax(logits.astype(np.float64), axis=1)
    return (np.exp(logp) * logp).sum(axis=1)


def atc_threshold(val_scores: np.ndarray, val_correct: np.ndarray) -> float:
    """The threshold t with mean(val_scores > t) = val accuracy (Garg et al., 2022, ATC)."""
    accuracy = float(np.mean(val_correct))
    return float(np.quantile(val_scores, 1.0 - accuracy, method="lower"))


def atc_estimate(threshold: float, target_scores: np.ndarray) -> float:
    return float(np.mean(target_scores > threshold))
