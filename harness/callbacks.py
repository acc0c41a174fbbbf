"""Hydra callbacks. SweepEnd runs once when a multirun ends (in the launching process,
whatever the launcher): it summarises the jobs from their job_status.json files, rebuilds
the leaderboard (unless sweep_end.leaderboard=false), and exits non-zero if a job failed.

Each sweep owns its folder: `hydra.sweep.dir` ends in `${process_token:}` (unique to the
launching process), so two sweeps started in the same second never share it, and a sweep
claims the folder with a LOCK (harness/rundir.py's RunLock) while it runs, so a folder given
twice by hand is refused instead of shared. The summary counts only this sweep's jobs."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness.rundir import LockHeld, RunDir, RunLock

log = logging.getLogger("harness.sweep")

JOB_STATUS = "job_status.json"


def process_token() -> str:
    """<pid>-<4 random hex digits>: unique to the launching process. The pid alone repeats
    across hosts sharing a file system; the random part alone could, rarely, repeat."""
    return f"{os.getpid()}-{secrets.token_hex(2)}"


def register_resolvers() -> None:
    """`${process_token:}` for conf/config.yaml's Hydra folders. Cached (use_cache): every
    read in one config gives the same value, and Hydra copies the cache into each job's
    config (the submitit launcher's jobs in other processes see the launcher's value)."""
    if not OmegaConf.has_resolver("process_token"):
        OmegaConf.register_new_resolver("process_token", process_token, use_cache=True)


register_resolvers()


def job_status_path(job_dir: str | Path) -> Path:
    return Path(job_dir) / JOB_STATUS


class SweepEnd(Callback):
    def __init__(self, leaderboard: bool = True) -> None:
        self.leaderboard = leaderboard
        self.lock: RunLock | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the submitit and joblib launchers pickle the Hydra context, callbacks included:
        # the lock (a heartbeat thread) stays with the launching process
        return {**self.__dict__, "lock": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        self.lock = RunLock(RunDir.at(sweep_dir), stale_after=180.0, heartbeat=30.0)
        try:
            self.lock.acquire()
        except LockHeld as held:
            self.lock = None
            raise SystemExit(
                f"hydra.sweep.dir={sweep_dir} is in use by another sweep ({held}); "
                "give each sweep its own folder (the default one is unique per process)"
            ) from None
        # a folder reused by hand after an earlier sweep ended: its job statuses are not ours
        for old in sweep_dir.glob(f"*/{JOB_STATUS}"):
            old.unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._summarise(config)
        finally:
            if self.lock is not None:
                self.lock.release()

    def _summarise(self, config: DictConfig) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = []
        for path in sorted(sweep_dir.glob(f"*/{JOB_STATUS}")):
            try:
                jobs.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as exc:
                jobs.append({"status": "failed", "error": f"unreadable {path}: {exc}"})
        counts = Counter(job["status"] for job in jobs)
        print(
            f"sweep: {len(jobs)} jobs: {counts['finished']} finished, "
            f"{counts['skipped']} skipped (already finished, failed or running elsewhere), "
            f"{counts['failed']} failed"
        )
        for job in jobs:
            if job["status"] == "failed":
                print(f"  failed: {' '.join(job.get('overrides', []))}: {job.get('error')}")
        if self.leaderboard:
            from harness.leaderboard import leaderboard_options, write_leaderboard
            from harness.registry import CONF_DIR

            try:  # the options of conf/leaderboard.yaml, as `python -m harness.leaderboard`
                options = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "leaderboard.yaml"))
                paths = write_leaderboard(config.results_dir, **leaderboard_options(options))
                print(f"leaderboard: {paths['index']}")
            except Exception as exc:  # the sweep's results are safe; say so and go on
                log.warning("could not rebuild the leaderboard: %s", exc)
        if counts["failed"]:
            raise SystemExit(f"sweep: {counts['failed']} of {len(jobs)} jobs failed (see above)")
