"""Many models, evaluation only, on the same split: where the time goes.

    python benchmarks/many_models.py [--images 128] [--models test_resnet,...,resnet18]
        [--threads 1]

Writes the JPEG-folder fixture of benchmarks/eval_throughput.py (500×375 photos-like
JPEGs), then for each model runs one real evaluation-only run (`harness.run.run`,
trainer.epochs=0, eval=minimal, the model's timm transform, random weights with a 10-class
head) in this process, as a sweep with Hydra's basic launcher does, and measures the parts
of that work on their own, in the same process: decoding the split's JPEGs (PIL), the
model's transform on the decoded images, the bare forward over the transformed batches.
`other` = run − (decode + transform + forward): setup, caching, metrics. The imports a
process pays once (torch, timm, the harness) are measured in a fresh interpreter. A JSON
record goes to results/benchmarks/many_models.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import CLASSES, compose, write_jpeg_folder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = "test_resnet,test_efficientnet,test_convnext,test_vit,test_byobnet,resnet18"


def import_seconds() -> float:
    code = (
        "import time; t = time.perf_counter(); import torch, timm, harness.run; "
        "print(time.perf_counter() - t)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTDATED_IGNORE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(model_name: str, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    from harness import run as run_mod
    from harness.data import resolve_transform
    from harness.models import create_model

    cfg = compose(
        [
            f"model.name={model_name}",
            "model.pretrained=false",
            "+model.kwargs.num_classes=10",
            "model.transform=timm",
            "trainer.epochs=0",
            "eval=minimal",
            f"threads={args.threads}",
            f"trainer.eval_batch_size={args.batch_size}",
            "trainer.num_workers=0",
            "trainer.progress=false",
            "dataset=folders",
            f"dataset.root={workdir}",
            f"dataset.class_map=[{','.join(CLASSES)}]",
        ]
    )
    cfg["dataset"]["splits"] = {"test": {"path": "test", "role": "id_test"}}
    cfg["results_dir"] = tempfile.mkdtemp(dir=workdir, prefix="res-")
    started = time.perf_counter()
    run_mod.run(cfg)
    run_seconds = time.perf_counter() - started

    bench = run_mod.build_dataset(cfg).load(Path(cfg["cache_dir"]))
    split = bench.splits["test"]
    started = time.perf_counter()
    images = [split.load_image(i) for i in range(len(split))]
    decode = time.perf_counter() - started
    model = create_model(cfg["model"], bench, train=False).eval()
    transform, desc = resolve_transform("timm", model, bench)
    started = time.perf_counter()
    x = torch.stack([transform(image) for image in images])
    transform_seconds = time.perf_counter() - started
    with torch.no_grad():
        model(x[:2])  # warm-up
        started = time.perf_counter()
        for batch in x.split(args.batch_size):
            model(batch)
        forward = time.perf_counter() - started
    return {
        "input_size": desc["input_size"],
        "run_seconds": run_seconds,
        "decode_seconds": decode,
        "transform_seconds": transform_seconds,
        "forward_seconds": forward,
        "other_seconds": run_seconds - decode - transform_seconds - forward,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "many_models.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="many-models-"))
    write_jpeg_folder(workdir, args.images)
    imports = import_seconds()
    print(f"imports (torch, timm, harness; once per process): {imports:.2f}s", flush=True)
    records = {}
    print(
        f"{'model':>18s} {'input':>6s} {'run':>7s} {'decode':>7s} {'transf.':>7s} "
        f"{'forward':>7s} {'other':>7s}"
    )
    for name in args.models.split(","):
        r = records[name] = measure(name, workdir, args)
        print(
            f"{name:>18s} {r['input_size'][-1]:>6d} {r['run_seconds']:7.2f} "
            f"{r['decode_seconds']:7.2f} {r['transform_seconds']:7.2f} "
            f"{r['forward_seconds']:7.2f} {r['other_seconds']:7.2f}",
            flush=True,
        )
    total = {
        k: sum(r[k] for r in records.values())
        for k in next(iter(records.values()))
        if k.endswith("seconds")
    }
    print("total: " + ", ".join(f"{k.removesuffix('_seconds')} {v:.2f}s" for k, v in total.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "many_models",
                "images": args.images,
                "batch_size": args.batch_size,
                "torch_threads": args.threads,
                "import_seconds": imports,
                "models": records,
                "total": total,
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"record: {out}")


if __name__ == "__main__":
    main()
