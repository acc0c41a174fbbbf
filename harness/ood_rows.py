"""OpenOOD's protocol on top of the post-hoc stage's OOD rows (harness/posthoc.py), set by
three eval-config entries that default to off (docs/scorers.md, "OpenOOD protocol"):

- `ood_groups: {near: [patterns], far: [patterns]}`: each group's member splits are the
  ood / shift_test splits whose names match one of its fnmatch patterns; the stage adds,
  per scorer and OOD metric, the mean over the members present, on split `<group>_ood` with
  role `ood_group` (its own role, so that aggregates over OOD splits never count it twice).
- `ccr_fprs: [1e-4, 1e-3, 1e-2, 1e-1]`: correct-classification rate at a false-positive rate
  (Dhamija et al., 2018, as OpenOOD reports it): the fraction of ID examples that are both
  correctly classified and accepted at the threshold that accepts at most that fraction of
  the OOD split; a row only where the OOD split has at least 1/FPR examples.
- `unified_error: true`: failure detection in the unified view (OOD examples must be
  rejected, so they count as errors beside the misclassified ID and shifted examples):
  `auroc_error_unified` and `aurc_unified` on split `pooled_test_ood`; SCOD is judged on it.
- `full_spectrum: true`: full-spectrum OOD (Yang et al., 2023): the covariate-shifted
  (shift_test) splits count as ID beside the ID test split; every OOD split gets the OOD
  metrics again as `<metric>_fs_vs_<id>`, ID side = that ID split and every shift_test split.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness import metrics

GROUP_ROLE = "ood_group"
OPENOOD_FPRS = (1e-4, 1e-3, 1e-2, 1e-1)


def check_settings(ev: Mapping[str, Any]) -> None:
    """The OpenOOD entries of an eval config, or a ValueError naming the entry."""
    groups = ev.get("ood_groups") or {}
    if not isinstance(groups, Mapping):
        raise ValueError(f"eval.ood_groups must be a mapping of group -> patterns, got {groups!r}")
    for group, patterns in groups.items():
        if not (isinstance(patterns, list) and all(isinstance(p, str) for p in patterns)):
            raise ValueError(f"eval.ood_groups.{group} must be a list of split-name patterns")
    fprs = ev.get("ccr_fprs") or []
    if not isinstance(fprs, list) or not all(
        isinstance(f, int | float) and 0 < f < 1 for f in fprs
    ):
        raise ValueError(f"eval.ccr_fprs must be a list of numbers in (0, 1), got {fprs!r}")
    for entry in ("full_spectrum", "unified_error"):
        if not isinstance(ev.get(entry, False), bool):
            raise ValueError(f"eval.{entry} must be true or false, got {ev[entry]!r}")


def ccr_at_fpr(
    id_scores: np.ndarray, id_correct: np.ndarray, ood_scores: np.ndarray, fpr: float
) -> float | None:
    """Fraction of ID examples correct and scored above the threshold that accepts at most
    `fpr` of the OOD examples (ties at the threshold are rejected together); None where the
    OOD set has fewer than 1/fpr examples."""
    n_ood = len(ood_scores)
    if n_ood == 0 or n_ood * fpr < 1 - 1e-9 or len(id_scores) == 0:
        return None
    allowed = int(np.floor(n_ood * fpr + 1e-9))  # OOD examples that may be accepted
    threshold = np.sort(ood_scores)[::-1][allowed]  # accept strictly above it
    return float(np.mean(id_correct.astype(bool) & (id_scores > threshold)))


def protocol_rows(
    rows: Sequence[dict],
    scores: Mapping[str, pd.DataFrame],
    cache: Any,
    id_tests: Sequence[str],
    ev: Mapping[str, Any],
    notes: dict,
) -> list[dict]:
    """The rows the OpenOOD entries of `ev` add to the stage's `rows`, from its per-example
    `scores` (a column per scorer; `correct` on labelled splits). `cache` is the
    RunCache: its splits by role and each split's role."""
    fprs = ev.get("ccr_fprs") or []
    full_spectrum = bool(ev.get("full_spectrum", False))
    shifted, oods = cache.splits("shift_test"), cache.splits("ood")
    scorers = [n for n in ev.get("scorers") or {} if all(n in scores[s] for s in scores)]
    out: list[dict] = []

    def add(split: str, scorer: str, metric: str, value: float, n: int) -> None:
        role = cache.role(split)
        out.append({"split": split, "split_role": role, "scorer": scorer, "metric": metric,
                    "value": value, "n": n})  # fmt: skip

    for id_split in id_tests if (fprs or full_spectrum) else ():
        if "correct" not in scores[id_split]:  # an unlabelled ID split: no CCR, no FS rows
            continue
        correct = scores[id_split]["correct"].to_numpy(bool)
        for name in scorers:
            s_id = scores[id_split][name].to_numpy()
            id_side = np.concatenate([scores[s][name].to_numpy() for s in (id_split, *shifted)])
            for split in oods:
                s_ood = scores[split][name].to_numpy()
                for fpr in fprs:
                    value = ccr_at_fpr(s_id, correct, s_ood, fpr)
                    if value is not None:
                        metric = f"ccr@fpr{fpr:g}_vs_{id_split}"
                        add(split, name, metric, value, len(s_id) + len(s_ood))
                if full_spectrum and shifted:
                    for metric, value in (metrics.ood_metrics(id_side, s_ood) or {}).items():
                        n = len(id_side) + len(s_ood)
                        add(split, name, f"{metric}_fs_vs_{id_split}", value, n)
    if ev.get("unified_error", False):
        out += unified_error_rows(scores, [*id_tests, *shifted], oods, scorers, cache)
    return out + group_rows([*rows, *out], ev.get("ood_groups") or {}, oods, notes)


def unified_error_rows(
    scores: Mapping[str, pd.DataFrame],
    labelled: Sequence[str],
    oods: Sequence[str],
    scorers: Sequence[str],
    cache: Any,
) -> list[dict]:
    """The unified (model-specific) view of failure detection: ID and shifted test examples
    are accepted when correctly classified, and every OOD example must be rejected, so it
    counts as an error. AUROC (correct vs the rest) and AURC over them all, on split
    `pooled_test_ood` (role `pooled`)."""
    sides = [s for s in labelled if "correct" in scores[s]]
    if not sides or not oods:
        return []
    correct = np.concatenate(
        [scores[s]["correct"].to_numpy(bool) for s in sides]
        + [np.zeros(len(scores[s]), bool) for s in oods]
    )
    out = []
    for name in scorers:
        values = np.concatenate([scores[s][name].to_numpy() for s in (*sides, *oods)])
        auroc = metrics.auroc(values[correct], values[~correct])
        for metric, value in (
            ("auroc_error_unified", auroc),
            ("aurc_unified", metrics.aurc(values, correct)),
        ):
            if value is not None:
                out.append({"split": "pooled_test_ood", "split_role": "pooled", "scorer": name,
                            "metric": metric, "value": float(value), "n": len(values)})  # fmt: skip
    return out


def group_rows(
    rows: Sequence[dict], groups: Mapping[str, list[str]], candidates: Sequence[str], notes: dict
) -> list[dict]:
    """Per group, the mean of every scorer's OOD metric (`..._vs_<id>`) over its members."""
    out: list[dict] = []
    for group, patterns in groups.items():
        members = [s for s in candidates if any(fnmatch.fnmatchcase(s, p) for p in patterns)]
        notes.setdefault("ood_groups", {})[f"{group}_ood"] = members
        values: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
        for r in rows:
            if r["split"] in members and r.get("scorer") and "_vs_" in r["metric"]:
                values[(r["scorer"], r["metric"])].append((r["value"], r["n"]))
        for (scorer, metric), pairs in values.items():
            out.append(
                {
                    "split": f"{group}_ood",
                    "split_role": GROUP_ROLE,
                    "scorer": scorer,
                    "metric": metric,
                    "value": float(np.mean([v for v, _ in pairs])),
                    "n": int(sum(n for _, n in pairs)),
                }
            )
    return out
