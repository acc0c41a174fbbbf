"""Shift analysis from the cache, set by the eval-config entry `shift:` (absent, no rows, in
every config but conf/eval/shift.yaml, so no other eval_id moves; docs/scorers.md, "Shift
analysis"):

- Label-shift estimation and correction on every labelled test split (roles id_test,
  shift_test): BBSE (Lipton et al., 2018: the val confusion matrix inverted against the
  split's predicted-label frequencies) and MLLS (Saerens et al., 2002: EM on the split's
  softmax posteriors). Rows, scorer = the estimator: `prior_l1_error`, `prior_l2_error`
  (estimated vs the split's true class prior) and `accuracy_prior_corrected` (argmax of
  p(y|x) * q(y)/p(y)); and scorer `label_prior`, `prior_l1_shift`: the true prior's L1
  distance from the val prior, the size of the shift being estimated.
- Two-sample shift detection ("Failing Loudly", Rabanser et al., 2019), ID val against
  every test / OOD split: MMD on the cached features (Gaussian kernel, median-heuristic
  bandwidth, permutation test) and univariate KS on each softmax coordinate with a
  Bonferroni correction. Rows, scorer `mmd_features` / `ks_softmax`: `p_value`,
  `shift_detected` (1.0 when p < alpha), and `mmd2` (the biased MMD² statistic).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import softmax
from scipy.stats import ks_2samp

SETTINGS = {"alpha", "calibrator", "permutations", "max_examples", "seed", "label_shift",
            "two_sample"}  # fmt: skip


def check_settings(ev: Mapping[str, Any]) -> None:
    """The `shift:` entry of an eval config, or a ValueError naming the entry."""
    s = ev.get("shift")
    if s is None:
        return
    if not isinstance(s, Mapping):
        raise ValueError(f"eval.shift must be a mapping of settings or null, got {s!r}")
    if unknown := set(s) - SETTINGS:
        raise ValueError(
            f"eval.shift: unknown settings {sorted(unknown)}; known: {sorted(SETTINGS)}"
        )
    alpha = s.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"eval.shift.alpha must be a number in (0, 1), got {alpha!r}")
    for key, least in (("permutations", 1), ("max_examples", 2), ("seed", 0)):
        v = s.get(key, least)
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"eval.shift.{key} must be an integer >= {least}, got {v!r}")
    for key in ("label_shift", "two_sample"):
        if not isinstance(s.get(key, True), bool):
            raise ValueError(f"eval.shift.{key} must be true or false, got {s[key]!r}")
    cal = s.get("calibrator")
    if cal is not None and cal not in (ev.get("calibrators") or {}):
        raise ValueError(
            f"eval.shift.calibrator must be null or one of eval.calibrators "
            f"{sorted(ev.get('calibrators') or {})}, got {cal!r}"
        )


# --- label shift ---------------------------------------------------------------------------


def bbse_prior(
    val_pred: np.ndarray, val_labels: np.ndarray, target_pred: np.ndarray, num_classes: int
) -> np.ndarray:
    """Black-box shift estimation (Lipton et al., 2018): w = C⁻¹ μ with C[i, j] = P_val(ŷ=i,
    y=j) and μ[i] = P_target(ŷ=i); the target prior is w * p_val(y), clipped at 0 and
    renormalised (the least-squares solution where C is singular)."""
    k = num_classes
    joint = np.zeros((k, k))
    np.add.at(joint, (val_pred, val_labels), 1.0)
    joint /= len(val_labels)
    mu = np.bincount(target_pred, minlength=k)[:k] / len(target_pred)
    w = np.linalg.lstsq(joint, mu, rcond=None)[0]
    prior = np.clip(w, 0, None) * joint.sum(axis=0)
    return prior / prior.sum() if prior.sum() > 0 else joint.sum(axis=0)


def mlls_prior(
    probs: np.ndarray, source_prior: np.ndarray, tol: float = 1e-8, max_iter: int = 1000
) -> np.ndarray:
    """Maximum-likelihood label shift by EM (Saerens et al., 2002): posteriors reweighted by
    q(y)/p(y) and renormalised (E), q = their mean (M), until q moves less than `tol`."""
    p = np.asarray(source_prior, dtype=np.float64)
    q = p.copy()
    for _ in range(max_iter):
        adjusted = probs * _ratio(q, p)
        adjusted /= adjusted.sum(axis=1, keepdims=True)
        new = adjusted.mean(axis=0)
        if np.abs(new - q).max() < tol:
            return new
        q = new
    return q


def _ratio(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    # a class absent from val has no ratio: left at 1 rather than infinite
    return np.where(p > 0, q / np.where(p > 0, p, 1.0), 1.0)


def corrected_predictions(
    probs: np.ndarray, prior: np.ndarray, source_prior: np.ndarray
) -> np.ndarray:
    """Bayes-rule correction for a new prior: argmax of p(y|x) q(y) / p(y)."""
    return (probs * _ratio(prior, source_prior)).argmax(axis=1)


# --- two-sample tests ------------------------------------------------------------------------


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0
) -> tuple[float, float]:
    """(biased MMD², permutation p-value) with a Gaussian kernel whose bandwidth is the median
    pairwise distance of the pooled sample. The p-value (1 + #{perm ≥ observed}) / (1 + B)
    is exact-valid under the null (the observed labelling counts as one permutation)."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    off = d2[np.triu_indices(len(z), 1)]
    bandwidth2 = float(np.median(off)) if off.size and np.median(off) > 0 else 1.0
    kernel = np.exp(-d2 / bandwidth2)
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    member = np.zeros((permutations + 1, n + m), dtype=bool)
    member[0, :n] = True
    for b in range(1, permutations + 1):
        member[b, rng.permutation(n + m)[:n]] = True
    # the biased statistic as a quadratic form: wᵀ K w with w = 1/n on X, -1/m on Y
    w = np.where(member, 1.0 / n, -1.0 / m)
    stats = np.einsum("bi,bi->b", w @ kernel, w)
    p = (1 + np.sum(stats[1:] >= stats[0] - 1e-12)) / (permutations + 1)
    return float(stats[0]), float(p)


def ks_bonferroni(ref: np.ndarray, target: np.ndarray) -> float:
    """Univariate two-sample KS per column, Bonferroni over the columns: min(1, d · min p)."""
    pvals = [ks_2samp(ref[:, j], target[:, j]).pvalue for j in range(ref.shape[1])]
    return float(min(1.0, ref.shape[1] * min(pvals)))


def _subsample(a: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return a if len(a) <= size else a[np.sort(rng.choice(len(a), size, replace=False))]


# --- rows ---------------------------------------------------------------------------------


def shift_rows(
    cache: Any, ev: Mapping[str, Any], calibrators: Mapping[str, Any], notes: dict
) -> list[dict]:
    """The rows the `shift:` entry adds; `cache` is the stage's RunCache and `calibrators`
    the calibrators it fitted, by name (eval.shift.calibrator picks one for the posteriors)."""
    s = ev.get("shift")
    if not s:
        return []
    vals = cache.splits("val")
    if not vals:
        notes["shift"] = "no val split: no reference for shift analysis"
        return []
    val = cache.outputs[vals[0]]
    cal = calibrators.get(s["calibrator"]) if s.get("calibrator") else None

    def probs_of(out: Any) -> np.ndarray:
        logits = out.logits.astype(np.float64)
        return softmax(cal.transform(logits) if cal is not None else logits, axis=1)

    k = len(cache.bench["classes"])
    alpha = float(s.get("alpha", 0.05))
    val_probs = probs_of(val)
    source_prior = np.bincount(val.labels, minlength=k)[:k] / len(val.labels)
    val_pred = val.logits.argmax(axis=1)
    rows: list[dict] = []

    def add(split: str, scorer: str, metric: str, value: float, n: int) -> None:
        rows.append({"split": split, "split_role": cache.role(split), "scorer": scorer,
                     "metric": metric, "value": float(value), "n": n})  # fmt: skip

    if s.get("label_shift", True):
        for split in cache.splits("id_test", "shift_test"):
            out = cache.outputs[split]
            n, probs = len(out.labels), probs_of(out)
            true = np.bincount(out.labels, minlength=k)[:k] / n
            add(split, "label_prior", "prior_l1_shift", np.abs(true - source_prior).sum(), n)
            estimates = {
                "bbse": bbse_prior(val_pred, val.labels, out.logits.argmax(axis=1), k),
                "mlls": mlls_prior(probs, source_prior),
            }
            for name, prior in estimates.items():
                add(split, name, "prior_l1_error", np.abs(prior - true).sum(), n)
                add(split, name, "prior_l2_error", np.sqrt(np.sum((prior - true) ** 2)), n)
                pred = corrected_predictions(probs, prior, source_prior)
                add(split, name, "accuracy_prior_corrected", np.mean(pred == out.labels), n)

    if s.get("two_sample", True):
        size, seed = int(s.get("max_examples", 500)), int(s.get("seed", 0))
        ref_feats = _subsample(val.features, size, np.random.default_rng(seed))
        for split in cache.splits("id_test", "shift_test", "ood"):
            out = cache.outputs[split]
            n = len(out.logits)
            # Failing Loudly's univariate test runs on the softmax; all examples (it is cheap)
            p_ks = ks_bonferroni(val_probs, probs_of(out))
            add(split, "ks_softmax", "p_value", p_ks, n)
            add(split, "ks_softmax", "shift_detected", float(p_ks < alpha), n)
            target = _subsample(out.features, size, np.random.default_rng(seed + 1))
            mmd2, p_mmd = mmd_permutation_test(
                ref_feats, target, int(s.get("permutations", 500)), seed
            )
            add(split, "mmd_features", "mmd2", mmd2, n)
            add(split, "mmd_features", "p_value", p_mmd, n)
            add(split, "mmd_features", "shift_detected", float(p_mmd < alpha), n)
    return rows
