"""python -m harness.prune [results_dir=...] [checkpoints=best] [dry_run=false]: apply a
checkpoint retention policy (harness/retention.py) to the finished runs of an existing results
root, e.g. one written before `checkpoints` existed, whose runs all kept last.pt.

Only finished runs (DONE) are touched: an unfinished run's last.pt is what lets it resume.
Each run is pruned under its own lock: a run another live process holds is refused and
listed, never touched. Exits non-zero when a run was refused."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from harness.registry import CONF_DIR
from harness.retention import apply_policy, check_policy, doomed, file_size
from harness.rundir import LockHeld, RunLock, named_run_dirs, runs_root

log = logging.getLogger("harness.prune")


def prune(
    results_dir: str | Path, policy: str, dry_run: bool = False, stale_after: float = 180.0
) -> pd.DataFrame:
    """One row per finished run: run_id, action (pruned | would prune | kept | refused),
    bytes freed (or that would be), and why a run was refused."""
    check_policy(policy)
    if not runs_root(results_dir).is_dir():  # a typo must not report "nothing to prune"
        raise FileNotFoundError(
            f"results_dir={results_dir}: no run directories in {runs_root(results_dir)}"
        )
    rows = []
    for rd in named_run_dirs(results_dir):
        if not rd.is_complete():
            continue  # it may still resume: its checkpoints stay
        files = doomed(rd, policy)
        if not files:
            rows.append({"run_id": rd.run_id, "action": "kept", "bytes": 0, "why": ""})
            continue
        if dry_run:
            size = sum(map(file_size, files))
            rows.append({"run_id": rd.run_id, "action": "would prune", "bytes": size, "why": ""})
            continue
        lock = RunLock(rd, stale_after=stale_after)
        try:
            lock.acquire()
        except LockHeld as held:
            rows.append({"run_id": rd.run_id, "action": "refused", "bytes": 0, "why": str(held)})
            continue
        try:
            freed = apply_policy(rd, policy)
        finally:
            lock.release()
        rows.append({"run_id": rd.run_id, "action": "pruned", "bytes": freed, "why": ""})
    return pd.DataFrame(rows, columns=["run_id", "action", "bytes", "why"])


@hydra.main(config_path=str(CONF_DIR), config_name="prune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    table = prune(cfg.results_dir, cfg.checkpoints, bool(cfg.dry_run), cfg.stale_after)
    if table.empty:
        print(f"no finished runs under {runs_root(cfg.results_dir)}")
        return
    counts = table["action"].value_counts()
    print(", ".join(f"{n} {action}" for action, n in counts.items()))
    verb = "would free" if cfg.dry_run else "freed"
    print(f"checkpoints={cfg.checkpoints}: {verb} {table['bytes'].sum() / 2**20:.1f} MiB")
    refused = table[table["action"] == "refused"]
    for r in refused.itertuples():
        print(f"refused {r.run_id}: {r.why}", file=sys.stderr)
    if len(refused):
        sys.exit(1)


if __name__ == "__main__":
    main()
