"""The GPU data path: a harness evaluation of an ImageNet-val-like JPEG folder against the
two bare figures that bound it.

    python benchmarks/gpu_decode.py [--images 10000] [--batch-size 256] [--device cuda]
        [--model resnet50] [--workers 8] [--cpu-decode] [--out FILE]

Writes `images` JPEGs of 500×375 (quality 90, smooth photo-like content, in parallel) in 10
class folders, then measures, on `device`:
- bare decode: the split's files read into memory, then decode_jpeg on the device in
  batches + the model's timm eval transform replayed there (harness.gpudecode), images/s;
- what bare decode is made of: nvJPEG alone, and decode + the transform run once per group of
  same-size images instead of once per image (a candidate for the harness, not used by it);
- bare forward: `model(x)` (bf16 autocast, channels_last) over batches already decoded and
  resident on the device, images/s;
- harness: one evaluation-only `harness.run` (trainer.epochs=0, precision=bf16,
  forward.channels_last=true, forward.decode=auto, eval=minimal) of the folder: images/s of
  its forward stage (from the first forward_split call to the last one's end) and of the
  whole run; the same with each batch's outputs waited for at once (`auto-waiting`: the
  per-batch .cpu() that harness/hostcopies.py replaced); with --cpu-decode, the same with
  forward.decode=cpu (PIL in workers).
ratio = harness forward stage / min(bare decode, bare forward); goal >= 0.9. A JSON record
goes to --out (default results/benchmarks/gpu_decode.json); --profile FILE adds one more
GPU-decode harness run under torch.profiler, its op tables written to FILE. Numbers: docs/benchmarks.md.
On a machine without a GPU, `--device cpu --images 64 --model test_resnet` checks the script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
CLASSES = [f"class_{k}" for k in range(10)]


def _write(args: tuple[Path, int, int]) -> None:
    from PIL import Image

    root, start, stop = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        path = root / "test" / CLASSES[i % len(CLASSES)] / f"{i:05d}.jpg"
        if not path.is_file():
            coarse = rng.integers(0, 256, (375 // 8, 500 // 8, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((500, 375), Image.BICUBIC).save(path, quality=90)


def write_folder(root: Path, n: int) -> None:
    for c in CLASSES:
        (root / "test" / c).mkdir(parents=True, exist_ok=True)
    step = 250
    with ProcessPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as pool:
        list(pool.map(_write, [(root, s, min(n, s + step)) for s in range(0, n, step)]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--workers", type=int, default=min(8, len(os.sched_getaffinity(0)) - 1))
    ap.add_argument("--cpu-decode", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="harness runs per decode mode")
    ap.add_argument("--profile", help="also profile one GPU-decode harness run into this file")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "gpu_decode.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from eval_throughput import compose, harness_seconds

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="gpu-decode-"))
    try:
        measure(args, device, work, compose, harness_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the images: ~0.6 GB at 10,000


def measure(
    args: argparse.Namespace, device: torch.device, work: Path, compose, harness_seconds
) -> None:
    from harness.data import resolve_transform
    from harness.gpudecode import decode_loader
    from harness.models import create_model
    from harness.run import build_dataset

    started = time.perf_counter()
    write_folder(work, args.images)
    record: dict[str, Any] = {
        "images": args.images,
        "size": "500x375",
        "model": args.model,
        "batch_size": args.batch_size,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "write_seconds": round(time.perf_counter() - started, 1),
    }
    overrides = [
        f"model.name={args.model}",
        "model.pretrained=false",
        "+model.kwargs.num_classes=10",
        "model.transform=timm",
        "trainer.epochs=0",
        "eval=minimal",
        "precision=bf16",
        "forward.channels_last=true",
        f"device={args.device}",
        f"trainer.eval_batch_size={args.batch_size}",
        f"trainer.num_workers={args.workers}",
        "trainer.progress=false",
        "dataset=folders",
        f"dataset.root={work}",
        f"dataset.class_map=[{','.join(CLASSES)}]",
        f"cache_dir={work / 'cache'}",
    ]
    cfg = compose(overrides)
    cfg["dataset"]["splits"] = {"test": {"path": "test", "role": "id_test"}}
    bench = build_dataset(cfg).load(Path(cfg["cache_dir"]))
    split = bench.splits["test"]
    model = create_model(cfg["model"], bench, train=False).eval().to(device)
    model.to(memory_format=torch.channels_last)
    transform, _ = resolve_transform("timm", model, bench)
    loader = decode_loader(split, transform, args.batch_size, device, num_workers=0)
    assert loader is not None, "the folder's split is not decodable: no GPU path to measure"

    # bare decode: bytes already in memory, decode + transform on the device
    blobs = [loader.loader.dataset[i][0] for i in range(len(split))]
    index = torch.arange(len(split))
    decoded: list[torch.Tensor] = []

    def images_per_s(step) -> float:
        for _ in range(2):  # warm-up (nvJPEG handles, kernels)
            step(blobs[: args.batch_size], index[: args.batch_size])
        sync(device)
        t = time.perf_counter()
        for s in range(0, len(blobs), args.batch_size):
            x = step(blobs[s : s + args.batch_size], index[s:])
            if len(decoded) < 4 and x.dim() == 4:
                decoded.append(x)
        sync(device)
        return round(len(blobs) / (time.perf_counter() - t), 1)

    record["bare_decode_images_per_s"] = images_per_s(
        lambda b, i: loader.transform(loader.decode(b, i))
    )
    # what the decode figure is made of, for the next step (docs/benchmarks.md): nvJPEG
    # alone, and the transform run once per group of same-size images instead of per image
    record["bare_decode_only_images_per_s"] = images_per_s(lambda b, i: loader.decode(b, i)[0])
    record["bare_decode_grouped_transform_images_per_s"] = images_per_s(
        lambda b, i: grouped_transform(loader.transform, loader.decode(b, i))
    )

    # bare forward: decoded batches resident on the device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    batches = [decoded[k % len(decoded)] for k in range(-(-len(blobs) // args.batch_size))]
    with torch.no_grad(), autocast:
        for x in decoded:
            model(x.contiguous(memory_format=torch.channels_last))
        sync(device)
        t = time.perf_counter()
        for x in batches:
            model(x.contiguous(memory_format=torch.channels_last))
        sync(device)
    n_fwd = sum(len(x) for x in batches)
    record["bare_forward_images_per_s"] = round(n_fwd / (time.perf_counter() - t), 1)

    # the harness, GPU decode (auto), then optionally CPU decode
    # (each mode `repeats` times, the best kept: the first run of a process also pays for
    # one-off start-up such as loader worker forks and the folder's digests)
    # auto-waiting: GPU decode with each batch's outputs waited for as soon as it is queued
    # (the per-batch .cpu() before harness/hostcopies.py): what the one-batch-late copies gain
    for mode in ["auto", "auto-waiting", *(["cpu"] if args.cpu_decode else [])]:
        c = compose([*overrides, f"forward.decode={mode.removesuffix('-waiting')}"])
        c["dataset"]["splits"] = cfg["dataset"]["splits"]
        with waiting_copies(mode.endswith("-waiting")):
            tries = [harness_seconds(c, work / f"res-{mode}-{k}") for k in range(args.repeats)]
        h = min(tries, key=lambda t: t["forward_split_seconds"])
        record[f"harness_{mode}"] = {
            "forward_images_per_s": round(args.images / h["forward_split_seconds"], 1),
            "run_images_per_s": round(args.images / h["run_seconds"], 1),
            "forward_images_per_s_each": [
                round(args.images / t["forward_split_seconds"], 1) for t in tries
            ],
            **{k: round(v, 2) for k, v in h.items()},
        }
    if args.profile:
        profile_run(compose([*overrides, "forward.decode=auto"]), cfg, work, harness_seconds, args)
    bound = min(record["bare_decode_images_per_s"], record["bare_forward_images_per_s"])
    record["ratio"] = round(record["harness_auto"]["forward_images_per_s"] / bound, 3)
    record["goal"] = 0.9
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


@contextmanager
def waiting_copies(on: bool) -> Iterator[None]:
    """forward_split's host copies waited for as soon as each batch is queued (the old
    per-batch .cpu()), for the comparison; nothing changed when not `on`."""
    from harness import forward as forward_mod
    from harness.hostcopies import HostCopies

    class Waiting(HostCopies):
        def add(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
            super().add(parts)
            self.settle()

    real = forward_mod.HostCopies
    forward_mod.HostCopies = Waiting if on else real
    try:
        yield
    finally:
        forward_mod.HostCopies = real


def grouped_transform(transform: Any, images: list[torch.Tensor]) -> torch.Tensor:
    """harness.gpudecode.TensorTransform with its geometric steps applied once per group of
    same-size images (torchvision's transforms take (N, C, H, W)): measured beside it."""
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(i)
    out: list[Any] = [None] * len(images)
    for members in by_size.values():
        group = torch.stack([images[i] for i in members])
        for step in transform.geometric:
            group = step(group)
        for i, image in zip(members, group, strict=True):
            out[i] = image
    x = torch.stack(out).float().div_(255.0)
    return x.sub_(transform.mean.to(x.device)).div_(transform.std.to(x.device))


def profile_run(c: dict[str, Any], cfg: dict[str, Any], work: Path, harness_seconds, args) -> None:
    """One GPU-decode harness run under torch.profiler: the ops by device time and by CPU
    time (where the forward stage's time goes), written to --profile."""
    from torch.profiler import ProfilerActivity, profile

    c["dataset"]["splits"] = cfg["dataset"]["splits"]
    cuda = torch.device(args.device).type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        h = harness_seconds(c, work / "res-profile")
    averages = prof.key_averages()
    tables = [f"harness run under the profiler: {h}"]
    if cuda:
        tables.append(averages.table(sort_by="self_device_time_total", row_limit=30))
    tables.append(averages.table(sort_by="self_cpu_time_total", row_limit=30))
    Path(args.profile).write_text("\n\n".join(tables))


if __name__ == "__main__":
    main()
