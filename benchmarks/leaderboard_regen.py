"""Leaderboard regeneration over a synthetic store: N completed runs × 50 rows each.

    python benchmarks/leaderboard_regen.py [--runs 10000] [--keep DIR]

Writes run directories in the real layout (DONE, key.json, posthoc/<eval_id>/rows.parquet
with its DONE; no per-example scores, as for a store whose per-example files were pruned),
then times `write_leaderboard` (collect + table + summary + comparisons + model selection +
Markdown + plots + page) and each stage on its own, and writes a JSON record. The store has
2 datasets × 4 models × 25 methods... settings with 5 seeds each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.keys import RESULTS_VERSION
from harness.report.aggregate import aggregate
from harness.report.build import write_leaderboard
from harness.report.compare import paired_comparisons, scorer_comparisons
from harness.report.drawing import resolve_plot_workers
from harness.report.plots import dataset_plots
from harness.rundir import RunDir, runs_root
from harness.selection import select_settings
from harness.table import collect

SPLITS = [
    ("val", "val"),
    ("id_test", "id_test"),
    ("shift_a", "shift_test"),
    ("shift_b", "shift_test"),
    ("shift_c", "shift_test"),
]
PLAIN = ["accuracy", "nll", "ece", "brier", "worst_group_accuracy"]
SCORED = [
    ("msp", "auroc_error"),
    ("energy", "auroc_error"),
    ("msp", "aurc"),
    ("energy", "aurc"),
    ("msp", "auroc_vs_id_test"),
]


def write_store(root: Path, runs: int, seeds: int = 5, first: int = 0) -> None:
    rng = np.random.default_rng(first)
    datasets, models = ["synth_a", "synth_b"], ["resnet18", "vit_tiny", "convnext_t", "deit_s"]
    for r in range(first, first + runs):
        setting = r // seeds
        dataset = datasets[setting % 2]
        model = models[(setting // 2) % 4]
        method = f"method{(setting // 8) % 25}"
        hparams = setting // 200
        run_id = hashlib.sha256(f"run{r}".encode()).hexdigest()[:20]
        run = RunDir(root, run_id)
        stage = run.posthoc("evalid0000000000")
        base = float(rng.uniform(0.5, 0.95))
        records = []
        for split, role in SPLITS:
            drop = 0.0 if role != "shift_test" else float(rng.uniform(0.05, 0.3))
            for metric in PLAIN:
                records.append(
                    (
                        split,
                        role,
                        "",
                        metric,
                        "label" if metric == "worst_group_accuracy" else "",
                        base - drop + float(rng.normal(0, 0.01)),
                    )
                )
            for scorer, metric in SCORED:
                if metric == "auroc_vs_id_test" and role != "shift_test":
                    metric = "accuracy@0.9"  # selective accuracy: 50 distinct rows per run
                records.append((split, role, scorer, metric, "", float(rng.uniform(0.5, 0.9))))
        # arrow directly (a pandas frame per run made writing 100,000 runs take an hour)
        columns = list(zip(*records, strict=True))
        text = pa.large_string()
        constant = {
            "run_id": run_id,
            "setting_id": hashlib.sha256(str(setting).encode()).hexdigest()[:20],
            "dataset": dataset,
            "model": model,
            "method": method,
            "tta": "",
            "seed": r % seeds,
            "group_value": "",
            "n": 1000,
            "selection_rule": "id_val_accuracy",
            "selected_epoch": 4,
            "eval_id": "evalid0000000000",
            "forward_key": "",
            "posthoc_key": "",
            "results_version": RESULTS_VERSION,
            "git_sha": "",
            "git_dirty": False,
            "lock_hash": "",
            "versions": "",
            "created_at": "",
        }
        names = ["split", "split_role", "scorer", "metric", "group_key", "value"]
        data = {
            name: pa.array(col, pa.float64() if name == "value" else text)
            for name, col in zip(names, columns, strict=True)
        }
        for name, value in constant.items():
            kind = text if isinstance(value, str) else None
            data[name] = pa.array([value] * len(records), kind)
        stage.path.mkdir(parents=True, exist_ok=True)
        tmp = stage.path / ".rows.tmp"
        pq.write_table(pa.table(data), tmp)
        os.replace(tmp, stage.rows)
        stage.done.write_text("{}")
        payload = {
            "dataset": {"name": dataset},
            "model": {"name": model},
            "method": {"name": method, "lr": hparams},
            "trainer": {},
            "seed": r % seeds,
        }
        run.key_json.write_text(json.dumps({"payload": payload}))
        run.done.write_text("{}")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep the store here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="shiftbench-regen-"))
    if not runs_root(root).is_dir():
        _, t_write = timed(write_store, root, args.runs)
        print(f"wrote {args.runs} runs in {t_write:.1f} s ({root})")
    table, t_collect = timed(collect, root)
    table = table[0]
    agg, t_agg = timed(aggregate, table, root)
    _, t_comp = timed(paired_comparisons, table, root, "method0")
    _, t_scorers = timed(scorer_comparisons, table, root)
    _, t_select = timed(select_settings, table, "id_val", root)
    t_plots = 0.0  # in this process, one figure after another (write_leaderboard forks workers)
    for dataset in sorted(table["dataset"].unique()):
        _, t = timed(
            dataset_plots,
            table[table["dataset"] == dataset],
            agg[agg["dataset"] == dataset],
            root,
            root / "bench_plots" / dataset,
        )
        t_plots += t
    for cache in ("table.parquet", "table.stages.json"):  # cold: read every run
        (root / cache).unlink(missing_ok=True)
    for record_file in (root / "leaderboard" / "plots").glob("*/.plots.json"):
        record_file.unlink()  # cold: draw every plot
    _, t_all = timed(write_leaderboard, root, "method0")
    # regenerate: every table and plot made again from the collected table that the last
    # sweep's rebuild left (results/table.parquet), as after a change of options or code
    for record_file in (root / "leaderboard" / "plots").glob("*/.plots.json"):
        record_file.unlink()
    _, t_regen = timed(write_leaderboard, root, "method0")
    # the same with the plots drawn in this process, one after another (plot_workers=1)
    for record_file in (root / "leaderboard" / "plots").glob("*/.plots.json"):
        record_file.unlink()
    _, t_regen_serial = timed(write_leaderboard, root, "method0", plot_workers=1)
    # warm: a rebuild after a sweep that added nothing reads no run again (collect_cached)
    # and draws no plot again (CachedPlots)
    _, t_warm = timed(write_leaderboard, root, "method0")
    # one new run of one dataset: its rows read, that dataset's plots redrawn
    write_store(root, 1, seeds=5, first=args.runs)
    _, t_one = timed(write_leaderboard, root, "method0")
    record = {
        "runs": int(table["run_id"].nunique()),
        "rows": len(table),
        "seconds": {
            "collect": t_collect,
            "aggregate": t_agg,
            "method_comparisons": t_comp,
            "scorer_comparisons": t_scorers,
            "model_selection": t_select,
            "plots": t_plots,
            "write_leaderboard_cold": t_all,
            "write_leaderboard_regenerate": t_regen,
            "write_leaderboard_regenerate_plot_workers_1": t_regen_serial,
            "write_leaderboard_warm": t_warm,
            "write_leaderboard_one_new_run": t_one,
        },
        "plot_workers": resolve_plot_workers("auto"),
        "load_average_1min": os.getloadavg()[0],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    for name, value in record["seconds"].items():
        print(f"{name:>24}: {value:7.2f} s")
    print(
        f"per run: cold {1000 * t_all / record['runs']:.2f} ms, warm {1000 * t_warm / record['runs']:.2f} ms"
    )
    print(
        f"load average (1 min) at the end: {record['load_average_1min']:.2f} on {os.cpu_count()} CPUs"
    )
    out = (
        Path(__file__).resolve().parent.parent / "results" / "benchmarks" / "leaderboard_regen.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"record: {out}")


if __name__ == "__main__":
    main()
