"""python -m harness.status [results_dir=...]: every run of a results root as finished,
running (a live lock), failed (a FAILED record) or incomplete (none of these: killed, or
not started), with counts. Reads files only."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from harness.registry import CONF_DIR
from harness.rundir import RunDir, run_dirs, runs_root


def run_statuses(results_dir: str | Path, stale_after: float = 180.0) -> pd.DataFrame:
    rows = []
    for found in run_dirs(results_dir):
        try:
            rd = RunDir(results_dir, found.run_id)
        except ValueError:
            continue  # not a run directory
        status = rd.status(stale_after)
        payload = {}
        if rd.key_json.is_file():
            try:
                payload = rd.read_key().get("payload", {})
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                pass  # a damaged key.json: the run is still listed, without its names
        reason = ""
        if status == "failed":
            try:
                reason = str(json.loads(rd.failed.read_text()).get("reason", ""))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
                # one damaged record must not hide every other run's status
                reason = f"unreadable FAILED file {rd.failed}: {exc.__class__.__name__}"
        rows.append(
            {
                "run_id": rd.run_id,
                "status": status,
                "dataset": (payload.get("dataset") or {}).get("name", ""),
                "model": (payload.get("model") or {}).get("name", ""),
                "method": (payload.get("method") or {}).get("name", "none"),
                "seed": payload.get("seed"),
                "reason": reason,
            }
        )
    return pd.DataFrame(
        rows, columns=["run_id", "status", "dataset", "model", "method", "seed", "reason"]
    )


@hydra.main(config_path=str(CONF_DIR), config_name="status", version_base="1.3")
def main(cfg: DictConfig) -> None:
    table = run_statuses(cfg.results_dir, cfg.stale_after)
    if table.empty:
        print(f"no runs under {runs_root(cfg.results_dir)}")
        return
    print(table.to_markdown(index=False))
    counts = table["status"].value_counts()
    print(
        ", ".join(
            f"{counts.get(s, 0)} {s}" for s in ("finished", "running", "failed", "incomplete")
        )
    )


if __name__ == "__main__":
    main()
