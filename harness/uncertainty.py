"""Opt-in uncertainty rows of the post-hoc stage (harness/posthoc.py), set by two eval-config
entries that are absent (no rows) in every config but conf/eval/uncertainty.yaml, so no
other eval_id moves (docs/scorers.md):

- `ece_adaptive_bins: B`: `ece_adaptive` (equal-mass bins, harness/metrics.py) on every
  labelled split, of the raw logits (scorer empty, beside `ece`) and of each calibrator's
  (scorer = its name, beside its `ece`).
- `conformal: {alpha, calibration_fraction, seed, calibrator, methods}`: split conformal
  prediction sets (harness/conformal.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness import conformal, metrics
from harness.calibrator import Calibrator


def check_settings(ev: Mapping[str, Any]) -> None:
    """The uncertainty entries of an eval config, or a ValueError naming the entry."""
    bins = ev.get("ece_adaptive_bins")
    if bins is not None and (isinstance(bins, bool) or not isinstance(bins, int) or bins < 1):
        raise ValueError(f"eval.ece_adaptive_bins must be a positive integer or null, got {bins!r}")
    conformal.check_settings(ev)


def rows(
    cache: Any,
    ev: Mapping[str, Any],
    labeled: list[str],
    calibrators: Mapping[str, Calibrator],
    notes: dict,
) -> list[dict]:
    """The rows the uncertainty entries of `ev` add; `cache` is the stage's RunCache and
    `calibrators` the ones it fitted, by name."""
    out: list[dict] = []
    if bins := ev.get("ece_adaptive_bins"):
        for split in labeled:
            o, role = cache.outputs[split], cache.role(split)
            for name, cal in {"": None, **calibrators}.items():
                logits = o.logits if cal is None else cal.transform(o.logits)
                value = metrics.ece_adaptive(logits, o.labels, bins)
                out.append({"split": split, "split_role": role, "scorer": name,
                            "metric": "ece_adaptive", "value": value, "n": len(o.labels)})  # fmt: skip
    if ev.get("conformal"):
        out += conformal.conformal_rows(cache, ev["conformal"], labeled, calibrators, notes)
    return out
