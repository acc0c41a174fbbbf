"""Faults at scale: a sweep SIGKILLed at seeded moments of its life (training, the forward
passes, the post-hoc stage, between runs, the end-of-sweep leaderboard write), rerun until it
finishes: no run lost, none duplicated, every number bit-identical to an uninterrupted
sweep's. Each kill is decided by watching the results root (what the sweep has written so
far), so it lands in the named stage whatever the machine's speed."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest

from harness.rundir import RunDir, run_dirs

from .conftest import TINY, run_cli, run_rows

SWEEP = ["-m", "seed=0,1,2", "method=erm,label_smoothing", *TINY, "eval=minimal"]
RUNS = 6
IDENTITY = ["run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric"]


def pending(root: Path) -> list[Path]:
    return [rd.path for rd in run_dirs(root) if not rd.is_complete()]


def done(root: Path) -> int:
    return sum(rd.is_complete() for rd in run_dirs(root))


# the moment -> a test of the results root that is true while the sweep is in it
MOMENTS = {
    "training": lambda root: any(
        (p / "config.yaml").is_file() and not (p / "outputs").exists() for p in pending(root)
    ),
    "forward": lambda root: any(list((p / "outputs").glob("*.npz")) for p in pending(root)),
    "posthoc": lambda root: any((p / "posthoc").is_dir() for p in pending(root)),
    "between runs": lambda root: not pending(root),
    "leaderboard": lambda root: done(root) == RUNS,
}


def kill_at(root: Path, moment: str, after: int, n: int, cwd: Path) -> str:
    """Start the sweep; SIGKILL its process group when `after` more runs are done and the
    results root shows `moment`. Returns what happened."""
    start = done(root)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.run",
            *SWEEP,
            f"results_dir={root}",
            f"hydra.sweep.dir={cwd / f'sweep-{n}'}",
        ],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    try:
        while proc.poll() is None and time.time() < deadline:
            if done(root) >= min(start + after, RUNS) and MOMENTS[moment](root):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return f"killed at {moment} ({done(root)} runs done)"
            time.sleep(0.005)
        return f"missed {moment}: the sweep ended (rc {proc.returncode})"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def own_rows(root: Path, run_id: str) -> pd.DataFrame:
    rows = run_rows(RunDir(root, run_id).path)
    return rows.sort_values(IDENTITY).reset_index(drop=True)[[*IDENTITY, "value", "n"]]


@pytest.mark.slow
def test_a_sweep_killed_at_seeded_moments_and_rerun_loses_and_duplicates_nothing(tmp_path):
    clean, faulted = tmp_path / "clean", tmp_path / "faulted"
    run_cli(
        [*SWEEP, f"results_dir={clean}", f"hydra.sweep.dir={tmp_path / 'sweep-clean'}"], tmp_path
    )
    rng = random.Random(23)
    log = [
        kill_at(faulted, moment, rng.randrange(0, 2), n, tmp_path)
        for n, moment in enumerate(MOMENTS)
    ]
    print("\n".join(log))
    killed = [line for line in log if line.startswith("killed")]
    assert len(killed) >= 4, log  # the moments were reached and hit
    run_cli(
        [*SWEEP, f"results_dir={faulted}", f"hydra.sweep.dir={tmp_path / 'sweep-last'}"], tmp_path
    )

    ids = sorted(rd.run_id for rd in run_dirs(clean))
    assert len(ids) == RUNS
    assert sorted(rd.run_id for rd in run_dirs(faulted)) == ids  # none lost, none extra
    assert all(RunDir(faulted, i).is_complete() for i in ids)
    assert not list(faulted.rglob(".*.tmp"))
    for run_id in ids:
        pd.testing.assert_frame_equal(
            own_rows(clean, run_id), own_rows(faulted, run_id), check_exact=True
        )
    a, b = (pd.read_parquet(r / "table.parquet") for r in (clean, faulted))
    assert not b.duplicated(IDENTITY).any() and len(a) == len(b)
    key = IDENTITY
    pd.testing.assert_series_equal(
        a.sort_values(key)["value"].reset_index(drop=True),
        b.sort_values(key)["value"].reset_index(drop=True),
        check_exact=True,
    )


@pytest.mark.slow
def test_submitit_timeout_requeues_and_the_job_resumes_from_its_checkpoint(tmp_path):
    """submitit's local executor with a short time limit: before the limit it sends the job
    USR2, Hydra's submitit launcher checkpoints (a DelayedSubmission of the same job) and
    the job exits to be requeued; the requeued job takes the run's lock (released by the
    exiting one: its SystemExit passes through harness.run's `finally`) and resumes from
    last.pt, to the numbers of an uninterrupted run."""
    from harness import run as run_mod

    from .conftest import compose_config

    base = [
        *TINY,
        "dataset.limit=300",
        "trainer.max_steps=null",
        "trainer.batch_size=4",
        "eval=minimal",
    ]
    # Enough epochs that training outlasts an attempt's 30 s before the signal on this
    # machine, whatever its speed: seconds per epoch measured on a 3-epoch run first.
    probe = run_mod.run(
        compose_config([*base, "trainer.epochs=3", f"results_dir={tmp_path / 'probe'}"])
    )
    stamps = [
        datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in RunDir(tmp_path / "probe", probe["run_id"]).log.read_text().splitlines()
        if "harness.train" in line and "] epoch " in line
    ]
    per_epoch = min((b - a).total_seconds() for a, b in pairwise(stamps))
    epochs = min(200, max(10, math.ceil(40 / max(per_epoch, 0.05))))
    extra = [*base, f"trainer.epochs={epochs}"]
    clean = run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'clean'}"]))
    root, sweep = tmp_path / "timed", tmp_path / "sweep"
    run_cli(
        [
            "-m",
            *extra,
            f"results_dir={root}",
            f"hydra.sweep.dir={sweep}",
            "hydra/launcher=local",
            # 1 minute per attempt (the launcher's least); submitit's local executor sends
            # USR2 30 s before the limit (its signal_delay_s) and requeues up to 3 times
            "hydra.launcher.timeout_min=1",
            "sweep_end.leaderboard=false",
        ],
        tmp_path,
    )
    rd = RunDir(root, clean["run_id"])
    logs = "".join(p.read_text(errors="replace") for p in sweep.rglob("*.err"))
    logs += "".join(p.read_text(errors="replace") for p in sweep.rglob("*.out"))
    assert "Requeued job" in logs, logs[-3000:]  # submitit requeued it after the signal
    assert rd.is_complete() and not rd.failed.exists() and not (rd.path / "LOCK").exists()
    assert "resuming" in rd.log.read_text()
    pd.testing.assert_frame_equal(
        own_rows(tmp_path / "clean", clean["run_id"]), own_rows(root, rd.run_id), check_exact=True
    )
