"""The post-hoc stage: every metric, scorer, calibrator and accuracy estimator, computed
from a run directory's cached outputs alone. It never loads the model or the dataset.

    python -m harness.evaluate run=results/runs/<run_id> eval=default
    python -m harness.evaluate run=results eval=minimal        # every finished run below

Results go to <run>/posthoc/<eval_id>/ (rows.parquet, scores/<split>.parquet, notes.json,
DONE); eval_id is the content hash of the eval config, so the same config twice is a
no-op and a new one adds rows without touching what the run holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import (
    calibrated_estimators,
    estimates,
    metrics,
    ood_rows,
    oracle,
    registry,
    shift,
    subpop_rows,
    tuning,
    uncertainty,
)
from harness.data import LABELED_ROLES
from harness.keys import RESULTS_VERSION, eval_id, eval_identity, posthoc_key
from harness.outputs import Outputs
from harness.rowstore import append_stage
from harness.runcache import (  # noqa: F401  (LazySplits, _checked_head: used through this module)
    LazySplits,
    RunCache,
    _checked_head,
    load_run_cache,
)
from harness.rundir import RunDir, dataset_eval_path
from harness.scorer import FitData, Scorer, check_finite, inapplicable
from harness.store import atomic_write_json, atomic_write_parquet, now_iso, provenance
from harness.table import ROW_COLUMNS, stage_problem

log = logging.getLogger("harness.posthoc")


def _dataset_eval_rows(path: Path, n_split: int) -> list[dict]:
    """Rows from the dataset's own evaluation, under its own metric names. Where it also
    reports `count_<suffix>` for a `<metric>_<suffix>` (WILDS' per-group entries), the count
    becomes that row's n instead of a row of its own (groups without examples are left out);
    other rows get n = the split's size."""
    results: dict[str, float] = json.loads(path.read_text())
    counts = {k[len("count_") :]: v for k, v in results.items() if k.startswith("count_")}
    rows = []
    for metric, value in results.items():
        if metric.startswith("count_"):
            continue
        suffix = next((s for s in counts if metric.endswith(f"_{s}")), None)
        n = int(counts[suffix]) if suffix is not None else n_split
        if n == 0:  # an empty group: its value is a placeholder, not a measurement
            continue
        rows.append({"metric": metric, "value": float(value), "n": n})
    return rows


def _subsample(out: Outputs, size: int | None, seed: int = 0) -> Outputs:
    if size is None or len(out.labels) <= size:
        return out
    idx = np.sort(np.random.default_rng(seed).choice(len(out.labels), size, replace=False))
    members = None if out.members is None else out.members[:, idx]
    stages = None if out.stages is None else [f[idx] for f in out.stages]
    return Outputs(
        out.logits[idx], out.features[idx], out.labels[idx], out.index[idx], members, stages
    )


def _label_rows(
    out: Outputs, meta: pd.DataFrame, group_cols: list[str], ece_bins: int
) -> list[dict]:
    logits, labels = out.logits, out.labels
    n = len(labels)
    rows = [
        {"metric": "accuracy", "value": metrics.accuracy(logits, labels), "n": n},
        {"metric": "nll", "value": metrics.nll(logits, labels), "n": n},
        {"metric": "ece", "value": metrics.ece(logits, labels, ece_bins), "n": n},
        {"metric": "brier", "value": metrics.brier(logits, labels), "n": n},
    ]
    if group_cols:
        correct = metrics.predictions(logits) == labels
        groups = metrics.group_accuracy(correct, meta.iloc[out.index], group_cols)
        key = "|".join(group_cols)
        rows += [
            {
                "metric": "accuracy",
                "value": g.accuracy,
                "n": int(g.n),
                "group_key": key,
                "group_value": g.group,
            }
            for g in groups.itertuples()
        ]
        # group_value stays empty: the worst group differs between seeds and the number must
        # aggregate across them (the per-group rows say which group it was)
        worst = groups.loc[groups["accuracy"].idxmin()]
        rows.append(
            {
                "metric": "worst_group_accuracy",
                "value": float(worst["accuracy"]),
                "n": int(worst["n"]),
                "group_key": key,
                "group_value": "",
            }
        )
    return rows


def compute(
    cache: RunCache, cfg: dict[str, Any]
) -> tuple[list[dict], dict[str, pd.DataFrame], dict]:
    """(rows, per-example scores per split, notes) for one eval config."""
    rows: list[dict] = []
    notes: dict[str, Any] = {"head": cache.head_note, "skipped_scorers": {}}
    if not cache.splits("id_test") and cache.splits("val"):
        notes["id_reference"] = "no id_test split: OOD metrics use the val split as ID"
    timings = cache.rd.model_scorer_timings
    if timings.is_file():  # seconds spent by scorers that ran their own passes (ODIN)
        notes["model_scorer_seconds"] = json.loads(timings.read_text())
    labeled = cache.splits(*LABELED_ROLES)
    # The ID reference for OOD metrics: the ID test split(s), else the ID validation split
    # (benchmarks such as coloured_digits and MetaShift have no separate ID test split).
    id_tests = cache.splits("id_test") or cache.splits("val")
    others = cache.splits("shift_test", "ood")
    group_cols = cache.bench["group_cols"]

    def add(split: str, role: str | None = None, **row: Any) -> None:
        rows.append({"split": split, "split_role": role or cache.role(split), **row})

    scores = {}
    for split, out in cache.outputs.items():
        frame = pd.DataFrame(
            {"index": out.index, "label": out.labels, "pred": metrics.predictions(out.logits)}
        )
        if split in labeled:
            frame["correct"] = frame["pred"] == frame["label"]
            frame["nll"] = metrics.per_example_nll(out.logits, out.labels)
            for row in _label_rows(out, cache.meta[split], group_cols, cfg["ece_bins"]):
                add(split, **row)
            official = dataset_eval_path(cache.output_path(split))
            if official.is_file():
                for row in _dataset_eval_rows(official, len(out.labels)):
                    add(split, **row)
        scores[split] = frame

    vals, fitted_calibrators = cache.splits("val"), {}
    for name, cal_cfg in (cfg.get("calibrators") or {}).items():
        if not vals:
            notes["skipped_calibrators"] = {name: "no val split to fit on"}
            continue
        cls = registry.resolve_target("calibrator", {"name": name, **cal_cfg})
        calibrator = registry.construct(cls, cal_cfg)
        val = cache.outputs[vals[0]]
        calibrator.fit(val.logits, val.labels)
        fitted_calibrators[name] = calibrator
        for param, value in calibrator.params().items():
            add(vals[0], scorer=name, metric=param, value=float(value), n=len(val.labels))
        for split in labeled:
            out = cache.outputs[split]
            calibrated, n = calibrator.transform(out.logits), len(out.labels)
            for metric, value in (
                ("accuracy", metrics.accuracy(calibrated, out.labels)),
                ("nll", metrics.nll(calibrated, out.labels)),
                ("brier", metrics.brier(calibrated, out.labels)),
                ("ece", metrics.ece(calibrated, out.labels, cfg["ece_bins"])),
            ):
                add(split, scorer=name, metric=metric, value=value, n=n)

    trains = cache.splits("train") or vals
    fit = FitData(
        train=_subsample(cache.outputs[trains[0]], cfg.get("fit_size")) if trains else None,
        val=cache.outputs[vals[0]] if vals else None,
        head=cache.head,
        num_classes=len(cache.bench["classes"]),
    )
    # opt-in eval.tune: `<name>_tuned` scorers chosen on ID val + OOD val (harness/tuning.py)
    all_scorers = {
        **(cfg.get("scorers") or {}),
        **tuning.tuned_scorers(cache, cfg, fit, notes, add),
    }
    for name, scorer_cfg in all_scorers.items():
        # constructing is cheap; the instance says what it needs (a composite such as SCOD
        # needs what its inner scorer needs)
        cls = registry.resolve_target("scorer", {"name": name, **scorer_cfg})
        scorer = registry.construct(cls, scorer_cfg)
        needs = scorer.needs
        if note := inapplicable(scorer, fit, cache.head_note):
            notes["skipped_scorers"][name] = note
            log.warning("scorer %s skipped: %s", name, note)
            continue
        if "model" in needs:
            paths = {
                split: cache.rd.model_score_path(split, spec["forward_key"], name, scorer_cfg)
                for split, spec in cache.bench["splits"].items()
            }
            if not all(p.is_file() for p in paths.values()):
                notes["skipped_scorers"][name] = (
                    "needs the model: its scores are computed by harness.run with this eval "
                    "config, not by the cache-only stage"
                )
                continue
            per_split = {s: check_finite(name, np.load(p)) for s, p in paths.items()}
        else:
            if fit.train is None and type(scorer).fit is not Scorer.fit:
                notes["skipped_scorers"][name] = "no train or val split to fit on"
                continue
            scorer.fit(fit)
            per_split = {
                s: check_finite(name, np.asarray(scorer.score(o), dtype=np.float64))
                for s, o in cache.outputs.items()
            }
        for split, s in per_split.items():
            scores[split][name] = s
        _scorer_rows(add, name, per_split, cache, labeled, id_tests, others, cfg["coverages"])

    estimates.estimator_rows(add, cache, labeled, cfg, notes)
    rows += uncertainty.rows(cache, cfg, labeled, fitted_calibrators, notes)  # opt-in entries
    rows += shift.shift_rows(cache, cfg, fitted_calibrators, notes)  # opt-in: eval.shift
    rows += subpop_rows.rows(cache, cfg, labeled)  # opt-in: SubpopBench's label metrics
    rows += oracle.rows(cache, cfg, notes)  # opt-in: DomainBed's test-domain oracle
    rows += calibrated_estimators.rows(cache, cfg, labeled, fitted_calibrators, notes)
    return rows + ood_rows.protocol_rows(rows, scores, cache, id_tests, cfg, notes), scores, notes


def _scorer_rows(add, name, per_split, cache, labeled, id_tests, others, coverages) -> None:
    for split in labeled:
        out = cache.outputs[split]
        correct = metrics.predictions(out.logits) == out.labels
        s, n = per_split[split], len(correct)
        value = metrics.auroc(s[correct], s[~correct])
        if value is not None:
            add(split, scorer=name, metric="auroc_error", value=value, n=n)
        add(split, scorer=name, metric="aurc", value=metrics.aurc(s, correct), n=n)
        add(split, scorer=name, metric="e_aurc", value=metrics.e_aurc(s, correct), n=n)
        for c in coverages:
            value = metrics.accuracy_at_coverage(s, correct, c)
            add(split, scorer=name, metric=f"accuracy@{c:g}", value=value, n=n)
    for id_split in id_tests:
        for split in others:
            result = metrics.ood_metrics(per_split[id_split], per_split[split])
            n = len(per_split[id_split]) + len(per_split[split])
            for metric, value in (result or {}).items():
                add(split, scorer=name, metric=f"{metric}_vs_{id_split}", value=value, n=n)
    # Out-of-model-scope detection: wrong predictions among ID and shifted test data pooled.
    pooled = [s for s in (*id_tests, *others) if s in labeled]
    if pooled:
        outs = [cache.outputs[p] for p in pooled]
        correct = np.concatenate([metrics.predictions(o.logits) == o.labels for o in outs])
        s = np.concatenate([per_split[p] for p in pooled])
        value = metrics.auroc(s[correct], s[~correct])
        if value is not None:
            add("pooled_test", "pooled", scorer=name, metric="auroc_error", value=value, n=len(s))


COVERAGE_GRID = np.linspace(0.01, 1.0, 100)


def risk_coverage_points(frame: pd.DataFrame, scorers: list[str]) -> pd.DataFrame:
    """Risk–coverage curve of every scorer on a labelled split, on a grid of 100 coverages."""
    if "correct" not in frame:
        return pd.DataFrame()
    correct = frame["correct"].to_numpy()
    parts = [
        pd.DataFrame(
            {
                "scorer": name,
                "coverage": COVERAGE_GRID,
                "risk": metrics.risk_at_coverages(frame[name].to_numpy(), correct, COVERAGE_GRID),
            }
        )
        for name in scorers
        if name in frame
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def evaluate_run(run_dir: str | Path, eval_cfg: dict[str, Any]) -> tuple[str, bool]:
    """Runs the post-hoc stage of eval_cfg on a run directory; (eval_id, skipped)."""
    eid = eval_id(eval_cfg)
    stage = RunDir.at(run_dir).posthoc(eid)
    problem = stage_problem(stage.path) if stage.is_complete() else "not finished"
    if problem is None:
        log.info("skip: post-hoc %s of %s is already done", eid, run_dir)
        return eid, True
    if stage.is_complete():  # damaged after it finished: its rows are computed again
        log.warning("post-hoc %s of %s: %s; computing it again", eid, run_dir, problem)
    cache = load_run_cache(run_dir)
    rows, scores, notes = compute(cache, eval_cfg)
    prov = provenance()
    table = pd.DataFrame.from_records(rows)
    for col in ("group_key", "group_value", "scorer"):
        table[col] = table[col].fillna("") if col in table else ""
    fkeys = {s: v["forward_key"] for s, v in cache.bench["splits"].items()}
    key_cfg = eval_identity(eval_cfg)  # a built-in default spelled out moves no key
    table = table.assign(
        **{"augment": "", **cache.info},  # runs made before augmentation: none
        eval_id=eid,
        forward_key=table["split"].map(fkeys).fillna(""),
        posthoc_key=[posthoc_key(fkeys.get(s, s), key_cfg) for s in table["split"]],
        results_version=RESULTS_VERSION,
        git_sha=prov["git_sha"],
        git_dirty=prov["git_dirty"],
        lock_hash=prov["lock_hash"],
        versions=prov["versions"],
        created_at=now_iso(),
    )[ROW_COLUMNS]
    for split, frame in scores.items():
        atomic_write_parquet(frame, stage.scores(split))
        named = list(eval_cfg.get("scorers") or {})  # and eval.tune's <name>_tuned scorers
        named += [c for c in frame.columns if c.endswith(tuning.SUFFIX) and c not in named]
        curves = risk_coverage_points(frame, named)
        if not curves.empty:
            atomic_write_parquet(curves, stage.risk_coverage(split))
    atomic_write_json(stage.eval_json, eval_cfg)
    atomic_write_json(stage.notes, notes)
    atomic_write_parquet(table, stage.rows)
    atomic_write_json(stage.done, {"completed_at": now_iso(), "rows": len(table)})
    if RunDir.at(run_dir).is_complete():  # a finished run's new stage: into the store now
        append_stage(RunDir.at(run_dir), eid)  # (a run's own stage: once its DONE exists)
    return eid, False


def load_scores(run_dir: str | Path, split: str, eval_id: str | None = None) -> pd.DataFrame:
    """Per-example scores of one split: index, label, pred, correct, nll, one column per scorer.

    eval_id=None takes the run's own post-hoc stage (the one its DONE marker names), else
    the only one present.
    """
    rd = RunDir.at(run_dir)
    if eval_id is None:
        eval_id = rd.own_eval_id()
    if eval_id is None:
        found = rd.posthoc_ids()
        if len(found) != 1:
            raise ValueError(f"{run_dir}: {len(found)} post-hoc results ({found}); pass eval_id")
        eval_id = found[0]
    path = rd.posthoc(eval_id).scores(split)
    if not path.is_file():
        raise FileNotFoundError(f"no scores for split {split!r} under {path.parent.parent}")
    return pd.read_parquet(path)
