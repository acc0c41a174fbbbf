"""Sweep overhead: a finished sweep rerun (every job skipped) vs the sum of its jobs' run times.

    python benchmarks/sweep_overhead.py [--jobs 50]

Runs a sweep of `jobs` tiny runs (seeds 0..jobs-1, tiny maze splits, a tiny timm model, a
few steps) through Hydra's basic launcher, then reruns it. Prints the seconds per skipped
job, the rerun's wall time over the sum of the first run's job times, and writes a JSON
record. The rerun still pays one Python start, Hydra's composition of each job, and the key
computation (dataset fingerprint); it loads no data and no model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "dataset.limit=16",
    "model.name=test_resnet",
    "trainer.epochs=1",
    "trainer.max_steps=2",
    "trainer.batch_size=8",
    "trainer.progress=false",
    "threads=1",
    "eval=minimal",
    "sweep_end.leaderboard=false",
]


def sweep(results: Path, jobs: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.run",
            "-m",
            f"seed=range(0,{jobs})",
            *TINY,
            f"results_dir={results}",
        ],
        check=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument(
        "--out", default=str(ROOT / "results" / "benchmarks" / "sweep_overhead.json")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "res"
        first = sweep(results, args.jobs)
        job_seconds = [json.loads(p.read_text())["seconds"] for p in results.glob("runs/*/DONE")]
        rerun = sweep(results, args.jobs)
    record = {
        "benchmark": "sweep_overhead",
        "jobs": args.jobs,
        "first_sweep_wall_seconds": first,
        "sum_of_job_seconds": sum(job_seconds),
        "rerun_wall_seconds": rerun,
        "seconds_per_skipped_job": rerun / args.jobs,
        "rerun_over_job_sum": rerun / sum(job_seconds),
    }
    print(
        f"{args.jobs} jobs: first sweep {first:.1f} s (jobs alone {sum(job_seconds):.1f} s); "
        f"rerun with every job skipped {rerun:.1f} s = {rerun / args.jobs:.3f} s per job, "
        f"{record['rerun_over_job_sum']:.3f} of the jobs' own time"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {args.out}")


if __name__ == "__main__":
    main()
