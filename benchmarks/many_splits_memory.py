"""Peak resident memory of an evaluation-only run over CIFAR-10-C-sized corruption splits:
all 19 corruptions × 5 severities (950,000 images) against one split (10,000).

    python benchmarks/many_splits_memory.py [--per-split 10000] [--workdir DIR] [--threads 1]

Writes a CIFAR-10 pickle fixture and a CIFAR-10-C folder of the released size with numpy's
open_memmap (random pixels; 2.9 GB at 10,000 per split), then runs `harness.run` in a fresh
process per variant (test_resnet from a 10-class checkpoint, trainer.epochs=0,
eval=minimal, dataset.with_train=false) and reports that process's peak RSS (ru_maxrss):
at the end of the forward passes and for the whole run (the post-hoc stage reads every
split's cached outputs). `--no-release` also runs all splits with the memory-mapped
readers never handing pages back, to show what that costs. A JSON record goes to
results/benchmarks/many_splits_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def write_data(root: Path, per_split: int) -> None:
    """CIFAR-10 pickles (tiny) and a CIFAR-10-C folder of 19 files of 5·N images."""
    from numpy.lib.format import open_memmap
    from shiftbench_datasets.cifar import write_fixture
    from shiftbench_datasets.corruptions import ALL_CORRUPTIONS

    write_fixture(root, test_size=10)
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, per_split)
    np.save(folder / "labels.npy", np.tile(labels.astype(np.uint8), 5))
    chunk = 10_000
    for corruption in ALL_CORRUPTIONS:
        path = folder / f"{corruption}.npy"
        if path.is_file() and np.load(path, mmap_mode="r").shape[0] == 5 * per_split:
            continue
        array = open_memmap(path, mode="w+", dtype=np.uint8, shape=(5 * per_split, 32, 32, 3))
        for start in range(0, 5 * per_split, chunk):
            stop = min(start + chunk, 5 * per_split)
            array[start:stop] = rng.integers(0, 256, (stop - start, 32, 32, 3), dtype=np.uint8)
        array.flush()
        del array


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    """One run in this process; prints a JSON line with its peaks."""
    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from shiftbench_datasets import corruptions

    from harness import run as run_mod

    if args.no_release:
        corruptions.RELEASE_BYTES = 1 << 62
    checkpoint = Path(args.workdir) / "test_resnet_10.pth"
    import timm

    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), checkpoint)
    results_dir = Path(args.workdir) / ("res-" + args.variant + "-no-release" * args.no_release)
    shutil.rmtree(results_dir, ignore_errors=True)  # a run found finished would measure nothing
    overrides = [
        "dataset=cifar10_c",
        f"data_root={args.workdir}",
        f"results_dir={results_dir}",
        "dataset.with_train=false",
        "trainer.epochs=0",
        "model.name=test_resnet",
        f"model.checkpoint={checkpoint}",
        "eval=minimal",
        f"threads={args.threads}",
        "trainer.eval_batch_size=512",
        "trainer.progress=false",
    ]
    if args.variant == "one":
        overrides += ["dataset.corruptions=[gaussian_noise]", "dataset.severities=[3]"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    from harness.rundir import RunDir

    marks = {}
    evaluate_run = run_mod.evaluate_run

    def instrumented(run_dir, eval_cfg):  # the forward passes are done when this is called
        if "forward" not in marks:
            marks["forward"] = peak_rss_mib()
            marks["forward_seconds"] = time.perf_counter() - started
        return evaluate_run(run_dir, eval_cfg)

    run_mod.evaluate_run = instrumented
    started = time.perf_counter()
    summary = run_mod.run(OmegaConf.to_container(cfg, resolve=True))
    rd = RunDir.at(summary["run_dir"])
    bench = rd.read_benchmark()
    cache_bytes = sum(p.stat().st_size for p in rd.outputs_dir.glob("*.npz"))
    print(
        json.dumps(
            {
                "variant": args.variant + ("-no-release" if args.no_release else ""),
                "splits": len(bench["splits"]),
                "images": sum(s["n"] for s in bench["splits"].values()),
                "peak_rss_forward_mib": round(marks["forward"], 1),
                "peak_rss_total_mib": round(peak_rss_mib(), 1),
                "forward_seconds": round(marks["forward_seconds"], 1),
                "seconds": round(time.perf_counter() - started, 1),
                "outputs_cache_mib": round(cache_bytes / 2**20, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-split", type=int, default=10_000)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-release", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="all", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", default=str(ROOT / "results" / "benchmarks" / "many_splits_memory.json")
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="many-splits-"))
    started = time.perf_counter()
    write_data(workdir, args.per_split)
    print(f"fixture written in {time.perf_counter() - started:.1f}s under {workdir}", flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTDATED_IGNORE": "1"}
    records = []
    variants = [("one", False), ("all", False)] + ([("all", True)] if args.no_release else [])
    for variant, no_release in variants:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            f"--variant={variant}",
            f"--workdir={workdir}",
            f"--threads={args.threads}",
            f"--per-split={args.per_split}",
        ] + (["--no-release"] if no_release else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"variant {variant} failed:\n{proc.stderr[-3000:]}")
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        records.append(record)
        print(json.dumps(record), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "per_split": args.per_split,
                "threads": args.threads,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "records": records,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
