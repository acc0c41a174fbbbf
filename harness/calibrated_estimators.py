"""Accuracy estimators on calibrated logits, an opt-in entry of the post-hoc stage.

Garg et al. (2022, "Leveraging Unlabeled Data to Predict Out-of-Distribution Performance")
calibrate the model with temperature scaling on held-out ID data before every estimator;
the stage's estimator rows (harness/posthoc.py) use the raw logits. The eval entry

    calibrated_estimators: [atc_mc@temperature_scaling, ac@temperature_scaling, ...]

names estimator × calibrator combinations (`<estimator>@<calibrator>`, each a name of the
config's `estimators:` (the built-in default where it has none) and `calibrators:`). Each
estimator is fitted on the calibrator's logits of the first val split, the split the
calibrator was fitted on, and estimates every id_test and shift_test split from its
calibrated logits; rows as the raw ones (`estimated_accuracy`, `accuracy`, `abs_error`)
with scorer = the combination's name. Absent or null: no rows and no eval_id moves
(conf/eval/estimators.yaml sets it; docs/scorers.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from harness import estimator, metrics, registry
from harness.calibrator import Calibrator

KEY = "calibrated_estimators"


def parse(entry: str) -> tuple[str, str]:
    """'<estimator>@<calibrator>' -> (estimator, calibrator), or a ValueError naming the key."""
    parts = entry.split("@") if isinstance(entry, str) else []
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"eval.{KEY}: each entry must read '<estimator>@<calibrator>', got {entry!r}"
        )
    return parts[0], parts[1]


def check_settings(ev: Mapping[str, Any]) -> None:
    """The entry names estimators and calibrators the same config configures."""
    entries = ev.get(KEY)
    if entries is None:
        return
    if not isinstance(entries, list):
        raise ValueError(
            f"eval.{KEY} must be a list of '<estimator>@<calibrator>', got {entries!r}"
        )
    if len(set(entries)) != len(entries):
        raise ValueError(f"eval.{KEY} lists an entry twice: {entries!r}")
    estimators, calibrators = estimator.configured(ev), ev.get("calibrators") or {}
    for entry in entries:
        est, cal = parse(entry)
        if est not in estimators:
            raise ValueError(
                f"eval.{KEY}: {entry!r} names estimator {est!r}, not one of eval.estimators "
                f"({sorted(estimators)})"
            )
        if cal not in calibrators:
            raise ValueError(
                f"eval.{KEY}: {entry!r} names calibrator {cal!r}, not one of eval.calibrators "
                f"({sorted(calibrators)})"
            )


def rows(
    cache: Any,
    ev: Mapping[str, Any],
    labeled: list[str],
    calibrators: Mapping[str, Calibrator],
    notes: dict,
) -> list[dict]:
    """The rows of `calibrated_estimators`; `calibrators` are the stage's fitted ones (a
    calibrator absent there had no val split to fit on: the note says so)."""
    entries = ev.get(KEY) or []
    vals = cache.splits("val")
    if entries and not vals:
        notes[f"skipped_{KEY}"] = dict.fromkeys(entries, "no val split to fit on")
    if not entries or not vals:
        return []
    specs, val = estimator.configured(ev), cache.outputs[vals[0]]
    fitted = {}
    for entry in entries:
        est_name, cal_name = parse(entry)
        cal = calibrators[cal_name]
        spec = specs[est_name]
        est = registry.construct(
            registry.resolve_target("estimator", {"name": est_name, **spec}), spec
        )
        est.fit(replace(val, logits=cal.transform(val.logits)))
        fitted[entry] = (est, cal)
    out: list[dict] = []
    for split in labeled:
        role = cache.role(split)
        if role not in ("id_test", "shift_test"):
            continue
        o = cache.outputs[split]
        n = len(o.labels)
        for entry, (est, cal) in fitted.items():
            calibrated = replace(o, logits=cal.transform(o.logits))
            # the estimator's target: the calibrated model's accuracy (a calibrator such as
            # matrix scaling can change predictions; temperature scaling never does)
            target = metrics.accuracy(calibrated.logits, o.labels)
            estimate = float(est.estimate(calibrated))
            for metric, value in (
                ("estimated_accuracy", estimate),
                ("accuracy", target),
                ("abs_error", abs(estimate - target)),
            ):
                out.append({"split": split, "split_role": role, "scorer": entry,
                            "metric": metric, "value": value, "n": n})  # fmt: skip
    return out
