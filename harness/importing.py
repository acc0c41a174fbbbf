"""External predictions imported as a run (`python -m harness.import`, docs/models.md).

A model evaluated elsewhere (an OpenOOD, DomainBed or WILDS checkpoint run by its own code)
gets this harness's post-hoc stage, leaderboard and statistics from its outputs alone. The
source is a folder:

    manifest.json       {"dataset": NAME, "model": LABEL,            (required)
                         "splits": {SPLIT: ROLE, ...},               (required)
                         "classes": [...], "method": NAME, "seed": N, "group_cols": [...]}
    <SPLIT>.npz         logits (N × C, required), labels (N, int; required for the
                        labelled roles train/val/id_test/shift_test, -1 = unknown),
                        features (N × D, optional: the feature scorers need them)
    <SPLIT>.parquet     optional per-example metadata, N rows in the npz's order (the
                        group_cols must be columns of it; a `label` column stands in for
                        missing npz labels)
    classifier.npz      optional linear head: weight (C × D), bias (C); kept only if
                        head(features) reproduces the logits (the run cache's head check)

Everything is read and checked before anything is written (a missing split or file, a
shape mismatch, NaN or inf, labels out of range, an unknown role: a ValueError naming the
file and the problem). The run key is the sha256 of every imported file plus the dataset
name; its setting (what seeds aggregate over) is dataset, model, method and split roles.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd

from harness.data import LABELED_ROLES, ROLES
from harness.keys import RESULTS_VERSION, RunKeys, content_hash, file_digest
from harness.outputs import Outputs
from harness.posthoc import evaluate_run
from harness.rundir import LockHeld, RunDir, RunLock
from harness.store import atomic_save_npz, atomic_write_json, atomic_write_parquet, provenance

log = logging.getLogger("harness.import")

MANIFEST = "manifest.json"
CLASSIFIER = "classifier.npz"
MANIFEST_ENTRIES = ("dataset", "model", "splits", "classes", "method", "seed", "group_cols")
ARRAYS = ("logits", "labels", "features")
IMPORT_FORMAT = 1  # bump when the reading of a source folder changes


@dataclass
class Imported:
    """A source folder read and checked: everything the run directory is written from."""

    manifest: dict[str, Any]
    outputs: dict[str, Outputs]
    meta: dict[str, pd.DataFrame]
    head: dict[str, np.ndarray] | None
    digests: dict[str, str]  # file name -> sha256

    @property
    def classes(self) -> list[str]:
        c = next(iter(self.outputs.values())).logits.shape[1]
        return [str(x) for x in self.manifest.get("classes") or range(c)]


def fail(where: Path | str, problem: str) -> NoReturn:
    raise ValueError(f"harness.import: {where}: {problem}")


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    if not source.is_dir():
        fail(source, "not a folder")
    if not path.is_file():
        fail(path, f"missing; the source folder needs a {MANIFEST} (docs/models.md)")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        fail(path, f"not JSON ({exc})")
    if not isinstance(m, dict):
        fail(path, "must be a JSON object")
    unknown = sorted(set(m) - set(MANIFEST_ENTRIES))
    if unknown:
        fail(path, f"unknown entries {unknown}; known: {list(MANIFEST_ENTRIES)}")
    for k in ("dataset", "model"):
        if not isinstance(m.get(k), str) or not m[k]:
            fail(path, f"'{k}' must be a non-empty string, got {m.get(k)!r}")
    splits = m.get("splits")
    if not isinstance(splits, dict) or not splits:
        fail(path, '\'splits\' must map each split name to its role, e.g. {"id_test": "id_test"}')
    for split, role in splits.items():
        if role not in ROLES:
            fail(path, f"split {split!r}: unknown role {role!r}; roles are {ROLES}")
        if not split or "/" in split or split.startswith(".") or split == Path(CLASSIFIER).stem:
            fail(path, f"split name {split!r} is not a plain file name (nor {CLASSIFIER}'s)")
    if not {"id_test", "val"} & set(splits.values()):
        fail(path, "missing split: an id_test (or val) split is needed as the ID reference")
    if not isinstance(m.get("seed", 0), int):
        fail(path, f"'seed' must be an integer, got {m['seed']!r}")
    for k in ("classes", "group_cols"):
        v = m.get(k)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            fail(path, f"'{k}' must be a list of strings, got {v!r}")
    return m


def read_split(
    source: Path, split: str, role: str, group_cols: list[str]
) -> tuple[Outputs, pd.DataFrame]:
    """(Outputs, metadata) of one split, checked."""
    path = source / f"{split}.npz"
    if not path.is_file():
        fail(path, f"missing: split {split!r} is listed in {MANIFEST}")
    with np.load(path, allow_pickle=False) as z:
        unknown = sorted(set(z.files) - set(ARRAYS))
        if unknown:
            fail(path, f"unknown arrays {unknown}; known: {list(ARRAYS)}")
        if "logits" not in z.files:
            fail(path, "no 'logits' array")
        arrays = {k: z[k] for k in z.files}
    logits = arrays["logits"]
    if logits.ndim != 2 or not np.issubdtype(logits.dtype, np.floating):
        fail(
            path,
            f"logits must be a 2-D float array (N × classes), got {logits.dtype} {logits.shape}",
        )
    n = len(logits)
    for name in ("logits", "features"):
        a = arrays.get(name)
        if a is None:
            continue
        if a.ndim != 2 or len(a) != n:
            fail(path, f"{name} has shape {a.shape}; expected ({n}, ·) like the logits")
        bad = int((~np.isfinite(a)).sum()) if np.issubdtype(a.dtype, np.floating) else 0
        if bad:
            fail(path, f"{name} has {bad} NaN or infinite values")
    meta_path = source / f"{split}.parquet"
    meta = pd.read_parquet(meta_path) if meta_path.is_file() else None
    if meta is not None and len(meta) != n:
        fail(meta_path, f"{len(meta)} rows, but {split}.npz has {n} examples")
    missing_cols = [c for c in group_cols if meta is None or c not in meta]
    if missing_cols and role in LABELED_ROLES:  # group rows are made for labelled splits
        fail(meta_path, f"group_cols {missing_cols} are not columns of the split's metadata")
    labels = arrays.get("labels")
    if labels is None and meta is not None and "label" in meta:
        labels = meta["label"].to_numpy()
    if labels is None:
        if role in LABELED_ROLES:
            fail(path, f"no 'labels' array: role {role} is labelled")
        labels = np.full(n, -1)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        fail(path, f"labels must be N={n} integers, got {labels.dtype} {labels.shape}")
    c = logits.shape[1]
    if role in LABELED_ROLES and ((labels < 0) | (labels >= c)).any():
        fail(path, f"labels must lie in 0..{c - 1} for role {role}")
    features = arrays.get("features", np.zeros((n, 0), np.float32))
    out = Outputs(
        logits.astype(np.float32),
        features.astype(np.float32),
        labels.astype(np.int64),
        np.arange(n, dtype=np.int64),
    )
    return out, meta if meta is not None else pd.DataFrame({"label": labels.astype(np.int64)})


def read_source(source: str | Path) -> Imported:
    """The source folder read and checked in full; nothing is written."""
    source = Path(source)
    m = read_manifest(source)
    group_cols = m.get("group_cols") or []
    outputs, meta = {}, {}
    for split, role in m["splits"].items():
        outputs[split], meta[split] = read_split(source, split, role, group_cols)
    widths = {s: (o.logits.shape[1], o.features.shape[1]) for s, o in outputs.items()}
    if len({w[0] for w in widths.values()}) > 1:
        fail(source, f"shape mismatch: the splits' logits have different widths {widths}")
    if len({w[1] for w in widths.values()}) > 1:
        fail(source, f"shape mismatch: features missing or of different widths {widths}")
    c, d = next(iter(widths.values()))
    if m.get("classes") is not None and len(m["classes"]) != c:
        fail(source / MANIFEST, f"{len(m['classes'])} classes, but the logits have {c} columns")
    head = None
    if (source / CLASSIFIER).is_file():
        with np.load(source / CLASSIFIER, allow_pickle=False) as z:
            head = {k: z[k] for k in z.files}
        if set(head) != {"weight", "bias"}:
            fail(source / CLASSIFIER, f"must hold weight and bias, holds {sorted(head)}")
        if head["weight"].shape != (c, d) or head["bias"].shape != (c,):
            fail(
                source / CLASSIFIER,
                f"weight {head['weight'].shape} and bias "
                f"{head['bias'].shape} do not fit {c} classes × {d} features",
            )
    names = [MANIFEST, *(f"{s}{ext}" for s in m["splits"] for ext in (".npz", ".parquet"))]
    digests = {n: file_digest(source / n) for n in [*names, CLASSIFIER] if (source / n).is_file()}
    return Imported(m, outputs, meta, head, digests)


def import_keys(imp: Imported) -> RunKeys:
    """run_id: the imported files' digests + the dataset name; setting_id: what seeds of one
    imported setting share (dataset, model, method, split roles)."""
    m = imp.manifest
    setting = {
        "results_version": RESULTS_VERSION,
        "import_format": IMPORT_FORMAT,
        "dataset": {"name": m["dataset"]},
        "model": {"name": m["model"], "imported": True},
        "method": {"name": m.get("method", "imported")},
        "splits": m["splits"],
    }
    payload = {**setting, "imported": imp.digests, "seed": m.get("seed", 0)}
    return RunKeys(content_hash(payload)[:20], content_hash(setting)[:20], payload)


def import_run(
    source: str | Path, results_dir: str | Path, eval_cfg: dict[str, Any]
) -> dict[str, Any]:
    """The source folder as a finished run below results_dir (a no-op when the same files
    were imported before); its post-hoc stage of eval_cfg. Returns run_id, run_dir, status."""
    imp = read_source(source)
    keys = import_keys(imp)
    rd = RunDir(results_dir, keys.run_id)
    summary = {"run_id": keys.run_id, "run_dir": str(rd.path)}
    if rd.is_complete():
        evaluate_run(rd.path, eval_cfg)
        return {**summary, "status": "finished", "skipped": True}
    lock = RunLock(rd)
    try:
        lock.acquire()
    except LockHeld as held:
        return {**summary, "status": "running", "skipped": True, "why": str(held)}
    try:
        started = time.time()
        write_run(imp, keys, rd, Path(source))
        eid, _ = evaluate_run(rd.path, eval_cfg)
        rd.mark_complete(
            {
                "run_id": keys.run_id,
                "eval_id": eid,
                "imported_from": str(Path(source).resolve()),
                "seconds": round(time.time() - started, 2),
                "host": provenance()["host"],
                "device": "imported",
            }
        )
    finally:
        lock.release()
    return {**summary, "status": "finished", "skipped": False}


def write_run(imp: Imported, keys: RunKeys, rd: RunDir, source: Path) -> None:
    """The run directory in the layout harness.run writes (harness/rundir.py)."""
    m = imp.manifest
    rd.remove_temporaries()
    atomic_write_json(
        rd.key_json, {"run_id": keys.run_id, "setting_id": keys.setting_id, "payload": keys.payload}
    )
    splits = {}
    for split, out in imp.outputs.items():
        fkey = keys.forward_key(split, {"kind": "imported"}, None, "fp32")
        out.save(rd.output_path(split, fkey))
        atomic_write_parquet(imp.meta[split], rd.meta(split))
        splits[split] = {
            "role": m["splits"][split],
            "forward_key": fkey,
            "n": len(out.labels),
            "info": {},
        }
    if imp.head is not None:
        atomic_save_npz(rd.head, weight=imp.head["weight"], bias=imp.head["bias"])
    else:
        atomic_write_json(rd.head.with_suffix(".json"), {"note": f"no {CLASSIFIER} imported"})
    bench = {
        "name": m["dataset"],
        "classes": imp.classes,
        "group_cols": m.get("group_cols") or [],
        "splits": splits,
    }
    atomic_write_json(rd.benchmark_json, bench)
    atomic_write_json(
        rd.run_info_json,
        {
            "run_id": keys.run_id,
            "setting_id": keys.setting_id,
            "dataset": m["dataset"],
            "model": m["model"],
            "method": m.get("method", "imported"),
            "tta": "",
            "augment": "",
            "seed": m.get("seed", 0),
            "selection_rule": "imported",
            "selected_epoch": -1,
        },
    )
    log.info("imported %s as run %s (%d splits)", source, keys.run_id, len(splits))
