"""Base class of methods/estimators/: accuracy without labels. An estimator is fitted on the
ID validation split's Outputs and predicts the accuracy of another split from its Outputs
alone; the post-hoc stage compares that with the true accuracy (docs/scorers.md).

DEFAULT_ESTIMATORS is the built-in default of an eval config's `estimators:` entry: an eval
config without that entry means it, and an entry equal to it is left out of the eval_id
(harness.keys.eval_identity), so eval=default stays byte-stable (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.outputs import Outputs

DEFAULT_ESTIMATORS: dict[str, dict[str, Any]] = {
    "ac": {"_target_": "methods.estimators.ac.AC"},
    "doc": {"_target_": "methods.estimators.doc.DoC"},
    "atc_mc": {"_target_": "methods.estimators.atc.ATC", "score": "msp"},
    "atc_ne": {"_target_": "methods.estimators.atc.ATC", "score": "negative_entropy"},
}


class Estimator:
    """Hyperparameters arrive as keyword arguments of the subclass's __init__.

    Two opt-in variations (harness/estimates.py): `meta_splits` (fnmatch patterns of
    labelled shift_test splits) asks for `fit_meta` on those splits' Outputs, labels
    included — a regression fitted on synthetic meta-sets (Deng et al., 2023) — and those
    splits get no rows of it; `score_metric` set means `estimate` returns a score, not an
    accuracy, written as a row under that metric without abs_error."""

    meta_splits: list[str] | None = None
    score_metric: str | None = None

    def fit(self, val: Outputs) -> None:
        """Fit on the ID validation split's outputs; the default needs nothing."""

    def fit_meta(self, meta: dict[str, Outputs]) -> None:
        """Fit on labelled meta-set splits (only called where meta_splits is set)."""

    def estimate(self, outputs: Outputs) -> float:
        """Predicted accuracy on `outputs`, without their labels."""
        raise NotImplementedError


def configured(eval_cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The estimators an eval config asks for: its `estimators:` entry (null or {} = none),
    the built-in default where it has none."""
    if "estimators" not in eval_cfg:
        return dict(DEFAULT_ESTIMATORS)
    return dict(eval_cfg["estimators"] or {})
