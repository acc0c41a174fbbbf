"""SubpopBench's label metrics beside ours, opt-in: the eval entry `subpop_metrics: true`
(conf/eval/subpop.yaml) adds, on every labelled split, overall rows (scorer and group_key
empty) of

- `balanced_accuracy`: mean recall over the classes present (scikit-learn);
- `worst_class_accuracy`: the lowest recall of a class present (SubpopBench's worst-class
  accuracy, its attribute-unknown selection criterion on val);
- `macro_f1`: scikit-learn's macro F1 (SubpopBench's `macro_avg` f1-score);
- `worst_class_precision`: the lowest precision of a class present, 0 for a class never
  predicted (SubpopBench's "worst precision": precision is per predicted class, so it is
  taken over classes, not groups -- within one label × attribute group every example has the
  same label, so a group's precision would be 1 or undefined);
- `adjusted_accuracy` (benchmarks with groups): the unweighted mean of the group accuracies
  (SubpopBench's adjusted accuracy).

Absent or false in every other eval config, so no other eval_id or row moves
(harness/keys.py's EVAL_BUILTIN_DEFAULTS)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness import metrics

SUBPOP_METRICS = (
    "balanced_accuracy",
    "worst_class_accuracy",
    "macro_f1",
    "worst_class_precision",
    "adjusted_accuracy",
)


def check_settings(ev: Mapping[str, Any]) -> None:
    value = ev.get("subpop_metrics", False)
    if not isinstance(value, bool):
        raise ValueError(f"eval.subpop_metrics must be true or false, got {value!r}")


def rows(cache: Any, ev: Mapping[str, Any], labeled: list[str]) -> list[dict]:
    """The rows `subpop_metrics: true` adds; `cache` is the stage's RunCache."""
    if not ev.get("subpop_metrics"):
        return []
    out: list[dict] = []
    group_cols = cache.bench["group_cols"]
    for split in labeled:
        o, role = cache.outputs[split], cache.role(split)
        y, pred = o.labels, metrics.predictions(o.logits)
        values = {
            "balanced_accuracy": metrics.balanced_accuracy(y, pred),
            "worst_class_accuracy": metrics.worst_class_accuracy(y, pred),
            "macro_f1": metrics.macro_f1(y, pred),
            "worst_class_precision": metrics.worst_class_precision(y, pred),
        }
        if group_cols:
            groups = metrics.group_accuracy(pred == y, cache.meta[split].iloc[o.index], group_cols)
            values["adjusted_accuracy"] = float(groups["accuracy"].mean())
        out += [{"split": split, "split_role": role, "scorer": "", "metric": m,
                 "value": v, "n": len(y)} for m, v in values.items()]  # fmt: skip
    return out
