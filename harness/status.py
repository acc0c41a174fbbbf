"""python -m harness.status [results_dir=...]: every run of a results root as finished,
running (a live lock), failed (a FAILED record) or incomplete (none of these: killed, or
not started), with counts; then the disk used per dataset and method, with what
`checkpoints=best` would free (`python -m harness.prune` frees it). Reads files only: an
unreadable FAILED file is named in the run's `reason` (a damaged key.json in a warning),
never a crash."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from harness.registry import CONF_DIR
from harness.retention import doomed, file_size
from harness.rundir import named_run_dirs, runs_root

log = logging.getLogger("harness.status")
MiB = 2**20


def run_statuses(results_dir: str | Path, stale_after: float = 180.0) -> pd.DataFrame:
    """One row per run: status, identity, `reason` (why it failed, or that its FAILED file
    cannot be read), bytes on disk, of which checkpoints, and what checkpoints=best frees."""
    rows = []
    for rd in named_run_dirs(results_dir):
        status = rd.status(stale_after)
        payload = {}
        if rd.key_json.is_file():
            try:
                payload = rd.read_key().get("payload", {})
            except (OSError, ValueError, AttributeError) as exc:
                # a damaged key.json: the run is still listed, without its names
                log.warning("unreadable %s: %s", rd.key_json, exc)
        reason = ""
        if status == "failed":
            reason = failure_reason(rd.failed)
        checkpoints = sum(file_size(p) for p in (rd.best_checkpoint, rd.last_checkpoint))
        rows.append(
            {
                "run_id": rd.run_id,
                "status": status,
                "dataset": (payload.get("dataset") or {}).get("name", ""),
                "model": (payload.get("model") or {}).get("name", ""),
                "method": (payload.get("method") or {}).get("name", "none"),
                "seed": payload.get("seed"),
                "reason": reason,
                "bytes": tree_size(rd.path),
                "checkpoint_bytes": checkpoints,
                # only a finished run's checkpoints are subject to the policy
                "best_frees": sum(map(file_size, doomed(rd, "best")))
                if status == "finished"
                else 0,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


COLUMNS = [
    "run_id",
    "status",
    "dataset",
    "model",
    "method",
    "seed",
    "reason",
    "bytes",
    "checkpoint_bytes",
    "best_frees",
]


def failure_reason(path: Path) -> str:
    """The `reason` of a FAILED record; an unreadable one is named, not a crash."""
    try:
        record = json.loads(path.read_text())
        return str(record.get("reason", "")) if isinstance(record, dict) else repr(record)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        # one damaged record must not hide every other run's status
        log.warning("unreadable FAILED file %s: %s", path, exc)
        return f"unreadable FAILED file {path}: {type(exc).__name__}: {exc}"


def tree_size(path: Path) -> int:
    """Bytes of the regular files below path (symbolic links neither counted nor followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:
                continue  # removed while walking
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def disk_usage(table: pd.DataFrame) -> pd.DataFrame:
    """Disk used per dataset and method (MiB): all, checkpoints, what checkpoints=best frees."""
    grouped = table.groupby(["dataset", "method"], dropna=False)
    out = grouped.agg(
        runs=("run_id", "size"),
        bytes=("bytes", "sum"),
        checkpoint_bytes=("checkpoint_bytes", "sum"),
        best_frees=("best_frees", "sum"),
    ).reset_index()
    for col, label in (
        ("bytes", "MiB"),
        ("checkpoint_bytes", "checkpoints MiB"),
        ("best_frees", "checkpoints=best frees MiB"),
    ):
        out[label] = (out.pop(col) / MiB).round(1)
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="status", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not Path(cfg.results_dir).is_dir():  # a typo must not read as "no runs"
        raise FileNotFoundError(f"results_dir={cfg.results_dir!r}: no such directory")
    table = run_statuses(cfg.results_dir, cfg.stale_after)
    if table.empty:
        print(f"no runs under {runs_root(cfg.results_dir)}")
        return
    print(table.drop(columns=["bytes", "checkpoint_bytes", "best_frees"]).to_markdown(index=False))
    counts = table["status"].value_counts()
    print(
        ", ".join(
            f"{counts.get(s, 0)} {s}" for s in ("finished", "running", "failed", "incomplete")
        )
    )
    print("\ndisk used under", runs_root(cfg.results_dir))
    print(disk_usage(table).to_markdown(index=False))
    frees = table["best_frees"].sum()
    print(
        f"total {table['bytes'].sum() / MiB:.1f} MiB; checkpoints=best would free "
        f"{frees / MiB:.1f} MiB (python -m harness.prune results_dir={cfg.results_dir} "
        "checkpoints=best)"
    )


if __name__ == "__main__":
    main()
