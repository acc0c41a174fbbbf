"""DomainBed's test-domain oracle, opt-in (`oracle_split` in an eval config; conf/eval/
domainbed.yaml): each held-out (`shift_test`) split is cut into a seeded `fraction` (DomainBed:
20%, its holdout fraction) on which settings are compared and the rest (80%) on which the
chosen setting is reported. Rows: `oracle_select_accuracy` and `oracle_report_accuracy` per
shift_test split, overall (no group, no scorer).

DomainBed's oracle reads the last checkpoint of each run, so the rows are written only for
runs trained with `selection_rule=last_epoch` (a note says why otherwise): the oracle can
never choose an epoch by test data as well. The setting rule `test_domain_oracle`
(harness/selection.py) picks, per search (each held-out domain its own), the setting with
the highest mean over seeds of `oracle_select_accuracy`; harness/report/domains.py reports its
`oracle_report_accuracy` per held-out domain and their average, labelled as the oracle.

The cut is a permutation of the split's rows in their split order (`index`), seeded by
`seed` alone: every run of the same data cuts the same examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

SELECT, REPORT = "oracle_select_accuracy", "oracle_report_accuracy"


def check_settings(ev: Mapping[str, Any]) -> None:
    """The eval config's `oracle_split` entry, or a ValueError naming it."""
    spec = ev.get("oracle_split")
    if spec is None:
        return
    if not isinstance(spec, Mapping) or set(spec) - {"fraction", "seed"}:
        raise ValueError(f"eval.oracle_split must be {{fraction, seed}} or null, got {spec!r}")
    fraction = spec.get("fraction", 0.2)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ValueError(f"eval.oracle_split.fraction must be in (0, 1), got {fraction!r}")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"eval.oracle_split.seed must be an integer, got {seed!r}")


def oracle_parts(index: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(select positions, report positions) into arrays whose rows are `index` (row numbers
    of the split): int(n × fraction) rows to select on, as DomainBed sizes its holdout."""
    order = np.argsort(index, kind="stable")  # the split's own order, whatever the cache's
    shuffled = order[np.random.default_rng(seed).permutation(len(order))]
    n_select = int(len(order) * fraction)
    return shuffled[:n_select], shuffled[n_select:]


def rows(cache: Any, ev: Mapping[str, Any], notes: dict) -> list[dict]:
    # here, not at the top: the leaderboard imports this module for the row names alone, and
    # harness.metrics brings torch and torchmetrics (~4 s of a leaderboard command's start)
    from harness import metrics

    spec = ev.get("oracle_split")
    if spec is None:
        return []
    if cache.info.get("selection_rule") != "last_epoch":
        notes["oracle_split"] = (
            "no oracle rows: DomainBed's test-domain oracle reads the last checkpoint; this "
            f"run's weights are selected by {cache.info.get('selection_rule')!r} "
            "(train with selection_rule=last_epoch)"
        )
        return []
    fraction, seed = float(spec.get("fraction", 0.2)), int(spec.get("seed", 0))
    out = []
    for split in cache.splits("shift_test"):
        o = cache.outputs[split]
        if o.labels is None or (np.asarray(o.labels) < 0).all():
            continue
        correct = metrics.predictions(o.logits) == o.labels
        for metric, part in zip(
            (SELECT, REPORT), oracle_parts(o.index, fraction, seed), strict=True
        ):
            if len(part):
                out.append({"split": split, "split_role": "shift_test", "scorer": "",
                            "metric": metric, "value": float(correct[part].mean()),
                            "n": int(len(part))})  # fmt: skip
    return out
