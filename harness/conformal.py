"""Split conformal prediction sets (Vovk et al., 2005; Angelopoulos et al., 2021, "Uncertainty
Sets for Image Classifiers using Conformal Prediction"), from the cached logits alone.

A method (methods/conformal/, configured under `conformal.methods:` in conf/eval/) is a
non-conformity score s(x, y) for every class y, lower = more conforming, computed from the
softmax probabilities (and, for the randomized ones, one uniform u per example). With
calibration scores s_1..s_n of the true labels on a held-out part of ID validation, the
threshold q is the ceil((n+1)(1-alpha))-th smallest of them (+inf when that exceeds n) and
the set of x is {y : s(x, y) <= q}; on data exchangeable with the calibration part,
P(y in set) >= 1 - alpha. The stage reports the empirical coverage and the mean set size
on every labelled split: under shift the guarantee no longer holds, and by how much it
fails is the question (docs/scorers.md, "Conformal prediction sets").
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import softmax

from harness import registry

SETTINGS = {"alpha", "calibration_fraction", "seed", "calibrator", "methods"}


class ConformalScore:
    """Base class of methods/conformal/: `scores(probs, u)` -> (n, K) non-conformity scores,
    lower = more conforming; u holds one Uniform(0, 1) draw per example and is used only by
    methods with `randomized = True`. Hyperparameters are keyword arguments of __init__."""

    randomized: bool = False

    def scores(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def cumulative_mass(probs: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mass, rank) per class: the probability of the classes ranked above y plus u * p_y
    (u = 1: including y), and y's 1-based rank by decreasing probability (ties by class
    index). APS's score, and RAPS's before its penalty."""
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, probs.shape[1] + 1)[None, :], axis=1)
    inclusive = np.take_along_axis(np.cumsum(sorted_probs, axis=1), rank - 1, axis=1)
    return inclusive - (1.0 - u[:, None]) * probs, rank


def threshold(cal_scores: np.ndarray, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest calibration score; +inf when that rank exceeds n
    (too few calibration examples for this alpha: every set is every class)."""
    n = len(cal_scores)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)  # the tolerance: (n+1)(1-alpha) in floats
    return float(np.sort(cal_scores)[k - 1]) if k <= n else math.inf


def calibration_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out) positions of a split of n examples: a seeded permutation,
    its first round(fraction * n) calibrate."""
    perm = np.random.default_rng(seed).permutation(n)
    m = int(round(fraction * n))
    return np.sort(perm[:m]), np.sort(perm[m:])


def uniforms(n: int, seed: int, split: str) -> np.ndarray:
    """One Uniform(0, 1) per example of a split, a function of (seed, split name) only."""
    return np.random.default_rng([seed, zlib.crc32(split.encode())]).random(n)


def prediction_sets(
    method: ConformalScore, logits: np.ndarray, u: np.ndarray, q: float
) -> np.ndarray:
    """(n, K) boolean membership of each class in each example's set."""
    probs = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    return method.scores(probs, u if method.randomized else np.ones(len(probs))) <= q


def true_label_scores(
    method: ConformalScore, logits: np.ndarray, labels: np.ndarray, u: np.ndarray
) -> np.ndarray:
    probs = softmax(np.asarray(logits, dtype=np.float64), axis=1)
    s = method.scores(probs, u if method.randomized else np.ones(len(probs)))
    return s[np.arange(len(labels)), labels]


def check_settings(ev: Mapping[str, Any]) -> None:
    """The eval entry `conformal` (absent or null: no conformal rows), or a ValueError."""
    c = ev.get("conformal")
    if c is None:
        return
    if not isinstance(c, Mapping):
        raise ValueError(
            f"eval.conformal must be a mapping ({', '.join(sorted(SETTINGS))}), got {c!r}"
        )
    if unknown := set(c) - SETTINGS:
        raise ValueError(
            f"eval.conformal: unknown entries {sorted(unknown)}; known: {sorted(SETTINGS)}"
        )
    for key in ("alpha", "calibration_fraction"):
        v = c.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
            raise ValueError(f"eval.conformal.{key} must be a number in (0, 1), got {v!r}")
    seed = c.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"eval.conformal.seed must be a non-negative integer, got {seed!r}")
    name = c.get("calibrator")
    if name is not None and name not in (ev.get("calibrators") or {}):
        known = sorted(ev.get("calibrators") or {})
        raise ValueError(
            f"eval.conformal.calibrator must be null or one of eval.calibrators {known}, "
            f"got {name!r}"
        )
    methods = c.get("methods")
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(
            f"eval.conformal.methods must be a non-empty mapping of name -> method, got {methods!r}"
        )
    for name, spec in methods.items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise ValueError(f"eval.conformal.methods.{name} needs a _target_, got {spec!r}")
        try:
            cls = registry.resolve_target("conformal", {"name": name, **spec})
            registry.construct(cls, dict(spec))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"eval.conformal.methods.{name}: {exc}") from exc


def conformal_rows(
    cache: Any,
    c: Mapping[str, Any],
    labeled: list[str],
    calibrators: Mapping[str, Any],
    notes: dict,
) -> list[dict]:
    """Rows `conformal_coverage` and `conformal_set_size` (scorer = the method's name) on
    every labelled split, and `conformal_threshold` on the val split. Calibrated on a seeded
    `calibration_fraction` of the first val split; on that split only the held-out rest is
    evaluated (its n says so). `cache` is the post-hoc stage's RunCache; with `calibrator:
    <name>`, the probabilities are those of that fitted calibrator (from `calibrators`)."""
    vals = cache.splits("val")
    if not vals:
        notes["skipped_conformal"] = "no val split to calibrate on"
        return []
    val_split, seed, alpha = vals[0], int(c.get("seed", 0)), float(c["alpha"])
    val = cache.outputs[val_split]
    cal, held_out = calibration_split(len(val.labels), float(c["calibration_fraction"]), seed)
    if len(cal) == 0:
        notes["skipped_conformal"] = (
            f"calibration_fraction leaves no calibration example of {val_split}"
        )
        return []
    calibrator = calibrators[c["calibrator"]] if c.get("calibrator") else None

    def logits_of(out: Any) -> np.ndarray:
        return out.logits if calibrator is None else calibrator.transform(out.logits)

    methods = {
        name: registry.construct(
            registry.resolve_target("conformal", {"name": name, **spec}), dict(spec)
        )
        for name, spec in c["methods"].items()
    }
    u_val, val_logits = uniforms(len(val.labels), seed, val_split), logits_of(val)
    thresholds = {
        name: threshold(true_label_scores(m, val_logits[cal], val.labels[cal], u_val[cal]), alpha)
        for name, m in methods.items()
    }
    # (the thresholds are rows, not notes: +inf is no JSON number)
    notes["conformal"] = {
        "val_split": val_split,
        "calibration": len(cal),
        "held_out": len(held_out),
    }
    rows = [{"split": val_split, "split_role": cache.role(val_split), "scorer": name,
             "metric": "conformal_threshold", "value": q, "n": len(cal)}
            for name, q in thresholds.items()]  # fmt: skip
    for split in labeled:  # splits outside, methods inside: each split is loaded once
        out = cache.outputs[split]
        u = u_val if split == val_split else uniforms(len(out.labels), seed, split)
        keep = held_out if split == val_split else np.arange(len(out.labels))
        if len(keep) == 0:
            continue
        logits, labels = logits_of(out)[keep], out.labels[keep]
        for name, method in methods.items():
            sets = prediction_sets(method, logits, u[keep], thresholds[name])
            covered = sets[np.arange(len(keep)), labels]
            for metric, value in (
                ("conformal_coverage", covered.mean()),
                ("conformal_set_size", sets.sum(1).mean()),
            ):
                rows.append({"split": split, "split_role": cache.role(split), "scorer": name,
                             "metric": metric, "value": float(value), "n": len(keep)})  # fmt: skip
    return rows
