"""Scorer hyperparameters tuned on ID val + OOD val, as OpenOOD v1.5 does, set by the
eval-config entry `tune:` (absent, nothing tuned, in every config but conf/eval/openood_tuned.yaml;
docs/scorers.md, "Tuning on OOD validation"):

    tune:
      metric: auroc                  # auroc (OpenOOD's choice) | fpr95 (lower is better)
      scorers:                       # scorer of eval.scorers -> {hyperparameter: [grid]}
        react: {percentile: [85, 90, 95, 99]}

For every grid point (the product of the lists, in order), the scorer is fitted as the
stage fits it and scored on the first val split (ID side) and the pooled `ood_val` splits
(OOD side); the best point (the first one on ties) becomes an extra scorer `<name>_tuned`
that goes through every row of the stage like the others, and the stage writes, on each
ood_val split with scorer `<name>_tuned`: `tuned` = 1.0, `tuned_<hyperparameter>` = the
chosen value and `tuning_<metric>` = its validation value. The untuned scorer keeps its
rows under its own name. Without an ood_val split, nothing is tuned (a note says so).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from harness import metrics, registry
from harness.scorer import FitData, inapplicable

METRICS = {"auroc": 1.0, "fpr95": -1.0}  # sign: higher is better after multiplying
SUFFIX = "_tuned"


def check_settings(ev: Mapping[str, Any]) -> None:
    """The `tune:` entry of an eval config, or a ValueError naming the entry."""
    t = ev.get("tune")
    if t is None:
        return
    if not isinstance(t, Mapping) or set(t) - {"metric", "scorers"}:
        raise ValueError(f"eval.tune must be a mapping with metric and scorers, got {t!r}")
    if t.get("metric", "auroc") not in METRICS:
        raise ValueError(f"eval.tune.metric must be one of {sorted(METRICS)}, got {t['metric']!r}")
    scorers, configured = t.get("scorers") or {}, ev.get("scorers") or {}
    if not isinstance(scorers, Mapping) or not scorers:
        raise ValueError("eval.tune.scorers must be a non-empty mapping of scorer -> grids")
    for name, grid in scorers.items():
        where = f"eval.tune.scorers.{name}"
        if name not in configured:
            raise ValueError(f"{where}: not a scorer of eval.scorers ({sorted(configured)})")
        if f"{name}{SUFFIX}" in configured:
            raise ValueError(f"{where}: eval.scorers already has a scorer {name}{SUFFIX}")
        if (
            not isinstance(grid, Mapping)
            or not grid
            or not all(
                isinstance(v, list) and v and all(_is_number(x) for x in v) for v in grid.values()
            )
        ):
            raise ValueError(f"{where} must map each hyperparameter to a non-empty list of numbers")
        for point in points(grid):
            spec = {**configured[name], **point}
            try:
                cls = registry.resolve_target("scorer", {"name": name, **spec})
                scorer = registry.construct(cls, spec)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where} {point}: {exc}") from exc
            if "model" in scorer.needs:
                raise ValueError(f"{where}: a model scorer cannot be tuned from the cache")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def points(grid: Mapping[str, list]) -> list[dict[str, Any]]:
    """The grid's points: the product of its lists, in their order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def tuned_scorers(
    cache: Any, ev: Mapping[str, Any], fit: FitData, notes: dict, add: Callable[..., None]
) -> dict[str, dict]:
    """{`<name>_tuned`: scorer config} for every scorer of `tune.scorers`, with the rows
    saying what was chosen (through `add`, the stage's row writer)."""
    t = ev.get("tune")
    if not t:
        return {}
    ood_vals, vals = cache.splits("ood_val"), cache.splits("val")
    if not ood_vals or not vals:
        notes["tuning"] = "no ood_val split (or no val split): nothing tuned"
        return {}
    metric, sign = t.get("metric", "auroc"), METRICS[t.get("metric", "auroc")]
    id_val = cache.outputs[vals[0]]
    out: dict[str, dict] = {}
    chosen_notes = {}
    for name, grid in t["scorers"].items():
        best, best_value = None, -np.inf
        for point in points(grid):
            spec = {**ev["scorers"][name], **point}
            scorer = registry.construct(
                registry.resolve_target("scorer", {"name": name, **spec}), spec
            )
            if note := inapplicable(scorer, fit, cache.head_note):
                notes.setdefault("skipped_scorers", {})[f"{name}{SUFFIX}"] = note
                break
            scorer.fit(fit)
            ood = np.concatenate([np.asarray(scorer.score(cache.outputs[s])) for s in ood_vals])
            result = metrics.ood_metrics(np.asarray(scorer.score(id_val)), ood) or {}
            if metric not in result:
                continue
            if sign * result[metric] > best_value:
                best, best_value = point, sign * result[metric]
        if best is None:
            continue
        out[f"{name}{SUFFIX}"] = {**ev["scorers"][name], **best}
        chosen_notes[name] = best
        for split in ood_vals:
            n = len(cache.outputs[split].labels) + len(id_val.labels)
            row = {"scorer": f"{name}{SUFFIX}", "n": n}
            add(split, metric="tuned", value=1.0, **row)
            for param, value in best.items():
                add(split, metric=f"tuned_{param}", value=float(value), **row)
            add(split, metric=f"tuning_{metric}", value=sign * best_value, **row)
    notes["tuning"] = {"ood_val": ood_vals, "id_val": vals[0], "metric": metric,
                       "chosen": chosen_notes}  # fmt: skip
    return out
