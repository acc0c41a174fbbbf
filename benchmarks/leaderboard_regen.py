"""Leaderboard regeneration over a synthetic store: N completed runs × 50 rows each.

    python benchmarks/leaderboard_regen.py [--runs 10000] [--keep DIR] [--skip-full]

Writes run directories in the real layout (DONE, key.json, posthoc/<eval_id>/rows.parquet
with its DONE; no per-example scores, as for a store whose per-example files were pruned),
then times, each with the load average of the moment (the machine is shared): the listing
of the run directories (what reconciling the consolidated store costs), reading every
rows.parquet, rebuilding the consolidated store (harness/rowstore.py) from every run
directory, reading it; the stages on their own; `write_leaderboard` cold (rebuild=true,
every plot), then from the store and after one new run each: (a) the tables (CSV +
Markdown), (b) the page (index.html, timed inside the call), (c) the plots (every output
less tables + page); warm (nothing new); one new run then every output, as a sweep's end
does. Writes a JSON record. The
store has 2 datasets × 4 models × 25 methods... settings with 5 seeds each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.keys import RESULTS_VERSION
from harness.listing import finished_stages
from harness.report import build
from harness.report.aggregate import aggregate
from harness.report.build import write_leaderboard
from harness.report.compare import paired_comparisons, scorer_comparisons
from harness.report.drawing import resolve_plot_workers
from harness.report.plots import dataset_plots
from harness.rundir import RunDir, runs_root
from harness.selection import select_settings
from harness.table import collect, collect_cached

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


def run_id_of(number: int) -> str:
    return hashlib.sha256(f"run{number}".encode()).hexdigest()[:20]


def write_store(root: Path, runs: int, seeds: int = 5, first: int = 0) -> None:
    rng = np.random.default_rng(first)
    datasets, models = ["synth_a", "synth_b"], ["resnet18", "vit_tiny", "convnext_t", "deit_s"]
    for r in range(first, first + runs):
        setting = r // seeds
        dataset = datasets[setting % 2]
        model = models[(setting // 2) % 4]
        method = f"method{(setting // 8) % 25}"
        hparams = setting // 200
        run_id = run_id_of(r)
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


# What is measured (docs/benchmarks.md): (a) the tables: table.csv, the summary and
# comparison CSVs, the Markdown pages and README.md (outputs=[markdown]); (b) the page:
# index.html, its figures and JSON (write_page, timed inside the call); (c) the plots (PNG +
# PDF, in worker processes): what the call with every output costs beyond (a) and (b).
TABLES = ["markdown"]
PAGE = ["markdown", "html"]
PAGE_TIMES: list[tuple[float, float]] = []  # (wall, CPU) of each write_page call


def _timed_page(*args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()  # this process only: not the
    out = _write_page(*args, **kwargs)  # plot workers reaped meanwhile
    PAGE_TIMES.append((time.perf_counter() - start, time.process_time() - cpu))
    return out


_write_page = build.write_page
build.write_page = _timed_page


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep the store here")
    parser.add_argument(
        "--skip-full",
        action="store_true",
        help="skip reading every rows.parquet twice more, the in-process stages and plots",
    )
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="shiftbench-regen-"))
    if not runs_root(root).is_dir():
        _, t_write = timed(write_store, root, args.runs)
        print(f"wrote {args.runs} runs in {t_write:.1f} s ({root})")
    seconds, cpu, loads = {}, {}, {}

    def measure(name, fn, *a, **k):
        before = os.times()
        out, seconds[name] = timed(fn, *a, **k)
        after = os.times()
        # CPU seconds of this process and its reaped children (the forked plot workers): on
        # a shared machine the wall clock depends on the other users, this much less
        cpu[name] = sum(after[i] - before[i] for i in range(4))
        loads[name] = round(os.getloadavg()[0], 2)  # a shared machine: the load of each number
        print(
            f"{name:>50}: {seconds[name]:7.2f} s wall, {cpu[name]:7.2f} s CPU "
            f"(load {loads[name]:.1f})",
            flush=True,
        )
        return out

    def forget_plots():
        for record_file in (root / "leaderboard" / "plots").glob("*/.plots.json"):
            record_file.unlink()
        # and the pages' keys (harness/report/increment.py): every page is made again
        (root / "leaderboard" / ".pages.json").unlink(missing_ok=True)
        # and the derived frames (harness/report/partcache.py): every frame computed again
        shutil.rmtree(root / "leaderboard" / ".parts", ignore_errors=True)
        # and the page's parts (harness/report/pagecache.py): the page drawn whole
        shutil.rmtree(root / "leaderboard" / ".page", ignore_errors=True)

    measure("list run dirs + stat DONE (reconciliation)", finished_stages, root)
    if not args.skip_full:
        measure("collect: read every rows.parquet", collect, root)
    measure("store rebuilt from every run dir", collect_cached, root, rebuild=True)
    table, _, _ = measure("store read (nothing new)", collect_cached, root)
    if not args.skip_full:
        agg = measure("aggregate", aggregate, table, root)
        measure("method comparisons", paired_comparisons, table, root, "method0")
        measure("scorer comparisons", scorer_comparisons, table, root)
        measure("model selection", select_settings, table, "id_val", root)

        def plots():  # in this process, one figure after another (write_leaderboard forks)
            for dataset in sorted(table["dataset"].unique()):
                dataset_plots(
                    table[table["dataset"] == dataset],
                    agg[agg["dataset"] == dataset],
                    root,
                    root / "bench_plots" / dataset,
                )

        measure("plots, in process", plots)
    forget_plots()
    measure(
        "write_leaderboard cold (rebuild=true, every plot)"
        if not args.skip_full
        else "write_leaderboard, every plot (store as it is)",
        write_leaderboard,
        root,
        "method0",
        rebuild=not args.skip_full,
    )

    def measure_split(label, *, rebuild=False, new_run=None, plots=True):
        """(a) tables, (b) page, (c) plots, each with wall and CPU s: three calls (a new
        run before each when new_run is given, so each call sees one new run)."""
        parts = {}
        for outputs in (TABLES, PAGE, list(build.OUTPUTS) if plots else None):
            if outputs is None:
                continue
            if new_run is not None:
                write_store(root, 1, seeds=5, first=new_run[0])
                new_run[0] += 1
            else:  # a full regeneration: every page and plot made again
                forget_plots()
            PAGE_TIMES.clear()
            name = f"{label}: " + {id(TABLES): "(a) tables", id(PAGE): "tables + page"}.get(
                id(outputs), "tables + page + plots"
            )
            measure(name, write_leaderboard, root, "method0", outputs=outputs, rebuild=rebuild)
            parts[id(outputs)] = (seconds[name], cpu[name])
            if outputs is PAGE:
                page = f"{label}: (b) page"
                seconds[page] = sum(w for w, _ in PAGE_TIMES)
                cpu[page] = sum(c for _, c in PAGE_TIMES)
                loads[page] = loads[name]
                print(f"{page:>50}: {seconds[page]:7.2f} s wall, {cpu[page]:7.2f} s CPU")
        if plots:
            everything = [v for k, v in parts.items() if k not in (id(TABLES), id(PAGE))][0]
            name = f"{label}: (c) plots (every output less tables + page)"
            seconds[name] = everything[0] - parts[id(PAGE)][0]
            cpu[name] = everything[1] - parts[id(PAGE)][1]
            loads[name] = loads[f"{label}: tables + page + plots"]
            print(f"{name:>50}: {seconds[name]:7.2f} s wall, {cpu[name]:7.2f} s CPU")

    measure_split("from the store")
    measure("warm rebuild (nothing new)", write_leaderboard, root, "method0")
    first_new = [args.runs]
    measure_split("after one new run", new_run=first_new)
    # what a sweep's end does: one new run, then every output, as in the call before (the
    # calls above change outputs each time, and the page's parts are keyed by whether it
    # links plots: harness/report/pagecache.py); only the new run's dataset's part is drawn
    write_store(root, 1, seeds=5, first=first_new[0])
    first_new[0] += 1
    PAGE_TIMES.clear()
    name = "after one new run, every output as before"
    measure(name, write_leaderboard, root, "method0")
    seconds[f"{name}: (b) page"] = sum(w for w, _ in PAGE_TIMES)
    cpu[f"{name}: (b) page"] = sum(c for _, c in PAGE_TIMES)
    print(f"{name + ': (b) page':>50}: {seconds[name + ': (b) page']:7.2f} s wall")
    record = {
        "runs": args.runs,
        "rows": len(table),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "load_average_1min": loads,
        "plot_workers": resolve_plot_workers("auto"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    for run in range(args.runs, first_new[0]):  # the store is left as it was
        shutil.rmtree(RunDir(root, run_id_of(run)).path, ignore_errors=True)
    name = "leaderboard_regen.json" if args.runs == 10000 else f"leaderboard_regen_{args.runs}.json"
    out = Path(__file__).resolve().parent.parent / "results" / "benchmarks" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"record: {out}")


if __name__ == "__main__":
    main()
