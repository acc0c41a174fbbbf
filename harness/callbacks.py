"""Hydra callbacks. SweepEnd runs once when a multirun ends (in the launching process,
whatever the launcher): it summarises the jobs from their job_status.json files, rebuilds
the leaderboard (unless sweep_end.leaderboard=false), and exits non-zero if a job failed."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("harness.sweep")


class SweepEnd(Callback):
    def __init__(self, leaderboard: bool = True) -> None:
        self.leaderboard = leaderboard

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = []
        for path in sorted(sweep_dir.glob("*/job_status.json")):
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
            from omegaconf import OmegaConf

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
