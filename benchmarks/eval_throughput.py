"""Evaluation throughput: a harness run's evaluation of a split against a bare `model(x)`
loop over the same examples, already decoded and transformed in memory, side by side.

    python benchmarks/eval_throughput.py [--case jpeg|arrays|both] [--images N]
        [--batch-size 32] [--threads T] [--workers W] [--repeats 2]

Two cases, both timm's resnet18 (random weights, 10-class head, eval mode, no grad):
- jpeg: a class-per-folder JPEG fixture (ImageNet-like 500×375 photos, quality 90) read by
  the folder adapter (datasets/folders.py) through the model's resolved timm transform
  (resize 235 bicubic, centre crop 224, normalise). Goal: ratio >= 0.9.
- arrays: a CIFAR-10 pickle fixture (32×32 arrays held in memory, datasets/cifar.py)
  through the benchmark transform. Goal: ratio >= 0.95.

The harness side is one real evaluation-only run (`harness.run.run`, trainer.epochs=0,
eval=minimal, one split): `split_seconds` is everything from the start of the split's
forward pass to the run's end (loading + transform + forward + Outputs cache + dataset
metadata + the post-hoc stage's metrics), `run_seconds` adds the run's setup (config
checks, dataset fingerprint and listing, model creation). The bare side is `model(x)` over
the run's own split, decoded and transformed beforehand into batches of the same size, on
the same number of torch threads (default 1: see below). Each side is measured `repeats` times, alternating; the
fastest of each is compared (the machine is shared: the minimum is the least disturbed).
ratio = bare / split_seconds (1.0 = the harness adds nothing). A JSON record goes to
results/benchmarks/eval_throughput.json.

Threads: with torch's default (one per core) on a machine whose cores other processes
use, every parallel region waits for a descheduled thread, and the same bare loop ranged
from 0.6 to 24 ms per 32×32 image between runs; one thread gives repeatable numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"jpeg": 0.9, "arrays": 0.95}
CLASSES = [f"class_{k}" for k in range(10)]


def write_jpeg_folder(root: Path, n: int, size: tuple[int, int] = (500, 375)) -> None:
    """<root>/test/<class>/<i>.jpg: smooth random photos-like images (upsampled noise, so
    that the files have the size and decoding cost of real photos, ~60 KB at 500×375)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / "test" / CLASSES[i % len(CLASSES)] / f"{i:05d}.jpg"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize(size, Image.BICUBIC).save(path, quality=90)


def overrides_for(case: str, workdir: Path, args: argparse.Namespace) -> list[str]:
    common = [
        "model.name=resnet18",
        "model.pretrained=false",
        "+model.kwargs.num_classes=10",
        "trainer.epochs=0",
        "eval=minimal",
        f"threads={args.threads}",
        f"trainer.eval_batch_size={args.batch_size}",
        f"trainer.num_workers={args.workers}",
        "trainer.progress=false",
    ]
    if case == "jpeg":
        return common + [
            "dataset=folders",
            f"dataset.root={workdir}",
            f"dataset.class_map=[{','.join(CLASSES)}]",
            "model.transform=timm",
        ]
    return common + ["dataset=cifar10", f"data_root={workdir}", "dataset.with_train=false"]


def compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("config", overrides=overrides), resolve=True)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (loader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def harness_seconds(cfg: dict[str, Any], results_dir: Path) -> dict[str, float]:
    """One real evaluation-only run; the split's part starts when its forward pass does."""
    from harness import forward as forward_mod
    from harness import run as run_mod

    marks: dict[str, float] = {}
    forward_split = forward_mod.forward_split

    def timed_forward_split(*a: Any, **kw: Any) -> Any:
        marks.setdefault("split_start", time.perf_counter())
        out = forward_split(*a, **kw)
        marks["forward_end"] = time.perf_counter()
        return out

    forward_mod.forward_split = timed_forward_split
    try:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        run_mod.run({**cfg, "results_dir": str(results_dir)})
        ended = time.perf_counter()
    finally:
        forward_mod.forward_split = forward_split
    return {
        "run_seconds": ended - started,
        "run_cpu_seconds": cpu_seconds() - cpu_started,
        "split_seconds": ended - marks["split_start"],
        "forward_split_seconds": marks["forward_end"] - marks["split_start"],
    }


def bare_inputs(cfg: dict[str, Any], batch_size: int) -> tuple[torch.nn.Module, list]:
    """The run's model and its split, decoded and transformed into batches in memory."""
    from harness.data import resolve_transform
    from harness.models import create_model
    from harness.run import build_dataset, transform_mode

    bench = build_dataset(cfg).load(Path(cfg["cache_dir"]))
    split = next(iter(bench.splits.values()))
    model = create_model(cfg["model"], bench, train=False).eval()
    transform, _ = resolve_transform(transform_mode(cfg["model"]), model, bench)
    split = split.with_transform(transform)
    examples = torch.stack([split[i][0] for i in range(len(split))])
    return model, list(examples.split(batch_size))


@torch.no_grad()
def bare_seconds(model: torch.nn.Module, batches: list[torch.Tensor]) -> dict[str, float]:
    started, cpu_started = time.perf_counter(), cpu_seconds()
    for x in batches:
        model(x)
    return {"seconds": time.perf_counter() - started, "cpu_seconds": cpu_seconds() - cpu_started}


def measure(case: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    n = args.images or (256 if case == "jpeg" else 4096)
    if case == "jpeg":
        write_jpeg_folder(workdir, n)
    else:
        from shiftbench_datasets.cifar import write_fixture

        write_fixture(workdir, test_size=n)
    cfg = compose(overrides_for(case, workdir, args))
    if case == "jpeg":  # one split (a dict override would merge into the default three)
        cfg["dataset"]["splits"] = {"test": {"path": "test", "role": "id_test"}}
    if args.threads:
        torch.set_num_threads(args.threads)
    model, batches = bare_inputs(cfg, args.batch_size)
    with torch.no_grad():
        model(batches[0])  # warm-up (first-call allocations), as the harness's run pays it too
    bare, harness = [], []
    for _ in range(args.repeats):
        bare.append(bare_seconds(model, batches))
        harness.append(harness_seconds(cfg, Path(tempfile.mkdtemp(dir=workdir, prefix="res-"))))
    best = min(harness, key=lambda h: h["split_seconds"])
    fastest = min(b["seconds"] for b in bare)
    record = {
        "case": case,
        "images": n,
        "bare": bare,
        "harness": harness,
        "ratio": fastest / best["split_seconds"],
        "ratio_forward_split": fastest / best["forward_split_seconds"],
        "ratio_whole_run": fastest / best["run_seconds"],
        # CPU time is less disturbed by other processes; it counts the loader workers' work
        # too, so with workers it says how much work the harness adds, not how much is hidden
        "ratio_cpu_whole_run": min(b["cpu_seconds"] for b in bare)
        / min(h["run_cpu_seconds"] for h in harness),
        "goal": GOALS[case],
    }
    print(
        f"{case:>6s}: {n} images; bare model(x) {fastest:.2f}s "
        f"({fastest / n * 1e3:.2f} ms/image); harness split {best['split_seconds']:.2f}s "
        f"(forward_split {best['forward_split_seconds']:.2f}s), whole run "
        f"{best['run_seconds']:.2f}s; ratio {record['ratio']:.3f} (goal >= {GOALS[case]}), "
        f"whole run {record['ratio_whole_run']:.3f}, CPU time whole run "
        f"{record['ratio_cpu_whole_run']:.3f}",
        flush=True,
    )
    return record


def workers_used(args: argparse.Namespace) -> int:
    """The loader workers the harness runs use (`auto` resolved as a run resolves it)."""
    if args.workers != "auto":
        return int(args.workers)
    from harness.forward import auto_num_workers

    return auto_num_workers(torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=["jpeg", "arrays", "both"], default="both")
    parser.add_argument("--images", type=int, default=None, help="default: 256 jpeg, 4096 arrays")
    parser.add_argument("--batch-size", type=int, default=32)
    # one thread by default: on a shared machine two OpenMP threads on two busy cores wait for
    # each other at every parallel region, and the same loop varies 10× from run to run
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--workers", default="auto", help="DataLoader workers: a number, or auto as in a run"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--out", default=str(ROOT / "results" / "benchmarks" / "eval_throughput.json")
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="eval-throughput-"))
    cases = ["jpeg", "arrays"] if args.case == "both" else [args.case]
    records = [measure(case, workdir / case, args) for case in cases]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "eval_throughput",
                "model": "resnet18",
                "batch_size": args.batch_size,
                "torch_threads": torch.get_num_threads(),
                "loader_workers": args.workers,
                "loader_workers_resolved": workers_used(args),
                "machine": {
                    "host": platform.node(),
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "torch": torch.__version__,
                },
                "records": records,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"record: {out}")


if __name__ == "__main__":
    main()
