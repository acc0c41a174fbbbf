"""The post-hoc stage's accuracy-estimator rows (harness/posthoc.py): every estimator of the
eval config (methods/estimators/; the built-in default where it names none), fitted on the
ID validation split, estimates the accuracy of each labelled test split; rows give the
estimate, the true accuracy and the absolute error. An estimator with `meta_splits` is
fitted on those labelled shift_test splits too (which then get none of its rows); one with
`score_metric` writes its score under that metric instead (harness/estimator.py)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from harness import estimator, metrics, registry


def estimator_rows(
    add: Callable[..., None], cache: Any, labeled: list[str], cfg: dict, notes: dict
) -> None:
    """Calls add(split, scorer=..., metric=..., value=..., n=...) for each row; `cache` is
    the stage's RunCache."""
    specs, vals = estimator.configured(cfg), cache.splits("val")
    if specs and not vals:
        notes["skipped_estimators"] = dict.fromkeys(specs, "no val split to fit on")
    if not specs or not vals:
        return
    val = cache.outputs[vals[0]]
    fitted, excluded = {}, {}
    for name, spec in specs.items():
        cls = registry.resolve_target("estimator", {"name": name, **spec})
        est = registry.construct(cls, spec)
        est.fit(val)
        if est.meta_splits:
            meta = [
                s
                for s in cache.splits("shift_test")
                if s in labeled and any(fnmatch.fnmatchcase(s, p) for p in est.meta_splits)
            ]
            if len(meta) < 2:
                notes.setdefault("skipped_estimators", {})[name] = (
                    f"meta_splits {est.meta_splits} match {len(meta)} labelled shift_test "
                    "splits; the regression needs at least 2"
                )
                continue
            est.fit_meta({s: cache.outputs[s] for s in meta})
            excluded[name] = set(meta)
            notes.setdefault("estimator_meta_splits", {})[name] = meta
        fitted[name] = est
    for split in labeled:
        if cache.role(split) not in ("id_test", "shift_test"):
            continue
        out = cache.outputs[split]
        true, n = metrics.accuracy(out.logits, out.labels), len(out.labels)
        for name, est in fitted.items():
            if split in excluded.get(name, ()):
                continue
            estimate = float(est.estimate(out))
            if est.score_metric:
                add(split, scorer=name, metric=est.score_metric, value=estimate, n=n)
                continue
            add(split, scorer=name, metric="estimated_accuracy", value=estimate, n=n)
            add(split, scorer=name, metric="accuracy", value=true, n=n)
            add(split, scorer=name, metric="abs_error", value=abs(estimate - true), n=n)
