"""Render time of the leaderboard page for the summaries of leaderboard_regen's store
(10,000 runs: 2 datasets x 4 models x 25 methods x ... settings, 5 seeds, 50 rows a run).

    python benchmarks/page_render.py [--runs 10000] [--out DIR]

The tidy table is made in memory with the store's layout (benchmarks/leaderboard_regen.py
writes the same rows as run directories; collecting them is that benchmark's business),
aggregated, and `write_page` timed: every registered section, the interactive figures and
plotly.js inlined once. Prints seconds, the page's size and the load average; a JSON record
goes to results/benchmarks/page_render.json. Not a timed test: the numbers depend on the
machine (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.report.aggregate import aggregate  # noqa: E402
from harness.report.headline import headline  # noqa: E402
from harness.report.page import write_page  # noqa: E402

SPLITS = [
    ("val", "val"),
    ("id_test", "id_test"),
    ("shift_a", "shift_test"),
    ("shift_b", "shift_test"),
    ("shift_c", "shift_test"),
]
PLAIN = ["accuracy", "nll", "ece", "brier", "worst_group_accuracy"]
SCORED = [("msp", "auroc_error"), ("energy", "auroc_error"), ("msp", "aurc"), ("energy", "aurc")]


def store_table(runs: int = 10000, seeds: int = 5) -> pd.DataFrame:
    """leaderboard_regen's store as a tidy table (50 rows a run), made in memory."""
    rng = np.random.default_rng(0)
    r = np.arange(runs)
    setting = r // seeds
    datasets = np.array(["synth_a", "synth_b"])[setting % 2]
    models = np.array(["resnet18", "vit_tiny", "convnext_t", "deit_s"])[(setting // 2) % 4]
    methods = np.array([f"method{k}" for k in range(25)])[(setting // 8) % 25]
    base = rng.uniform(0.5, 0.95, runs)
    frames = []
    for split, role in SPLITS:
        drop = rng.uniform(0.05, 0.3, runs) if role == "shift_test" else np.zeros(runs)
        for metric in PLAIN:
            frames.append((split, role, "", metric, base - drop + rng.normal(0, 0.01, runs)))
        for scorer, metric in [*SCORED, ("msp", "auroc_vs_id_test")]:
            if metric == "auroc_vs_id_test" and role != "shift_test":
                metric = "accuracy@0.9"  # selective accuracy: 50 distinct rows per run
            frames.append((split, role, scorer, metric, rng.uniform(0.5, 0.9, runs)))
    run_ids = np.array([hashlib.sha256(f"run{k}".encode()).hexdigest()[:20] for k in r])
    setting_ids = np.array([hashlib.sha256(str(s).encode()).hexdigest()[:20] for s in setting])
    parts = [
        pd.DataFrame(
            {
                "run_id": run_ids,
                "setting_id": setting_ids,
                "dataset": datasets,
                "model": models,
                "method": methods,
                "tta": "",
                "augment": "",
                "seed": r % seeds,
                "split": split,
                "split_role": role,
                "scorer": scorer,
                "metric": metric,
                "group_key": "label" if metric == "worst_group_accuracy" else "",
                "group_value": "",
                "value": values,
                "n": 1000,
                "selection_rule": "id_val_accuracy",
                "eval_id": "evalid0000000000",
            }
        )  # fmt: skip
        for split, role, scorer, metric, values in frames
    ]
    return pd.concat(parts, ignore_index=True)


def render(table: pd.DataFrame, out: Path) -> tuple[Path, float, float]:
    """Aggregates the table and writes the page; returns its path, the seconds aggregate
    took and the seconds write_page (with the headlines) took."""
    start = time.perf_counter()
    agg = aggregate(table)
    t_agg = time.perf_counter() - start
    start = time.perf_counter()
    headlines = {d: headline(agg, d) for d in sorted(agg["dataset"].unique())}
    path = write_page(agg, {}, out / "index.html", headlines=headlines, table=table)
    return path, t_agg, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--out", type=Path, default=None, help="where the page goes")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="shiftbench-page-"))
    start = time.perf_counter()
    table = store_table(args.runs)
    t_table = time.perf_counter() - start
    path, t_agg, t_page = render(table, out)
    record = {
        "runs": args.runs,
        "rows": len(table),
        "seconds": {"table_in_memory": t_table, "aggregate": t_agg, "write_page": t_page},
        "page_bytes": path.stat().st_size,
        "load_average_1min": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    for name, value in record["seconds"].items():
        print(f"{name:>16}: {value:7.2f} s")
    print(f"page: {path} ({record['page_bytes'] / 1e6:.1f} MB)")
    print(f"load average (1 min): {record['load_average_1min']:.2f} on {os.cpu_count()} CPUs")
    record_path = Path(__file__).resolve().parent.parent / "results" / "benchmarks"
    record_path.mkdir(parents=True, exist_ok=True)
    (record_path / "page_render.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
