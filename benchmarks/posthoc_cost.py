"""Post-hoc cost per example vs one forward pass of resnet18 at 224×224, side by side.

    python benchmarks/posthoc_cost.py [--eval openood] [--fit 50000 --score 100000 --dim 512 --classes 10]
                                      [--stages 64,64,128,256,512]

Fits every cache-only scorer of an eval config (conf/eval/<name>.yaml, with the configs it
extends; default: default) on `fit` ID examples, scores
`score` examples, computes every post-hoc metric, and compares the time per scored example
with the time per example of timm's resnet18 forward pass at 224×224 on this machine
(measured on a few batches). Prints the ratio (goal <= 0.05 for default, 0.03 for openood,
as issue 19 asks) and writes a JSON record. Scorers that need the model (ODIN) are left out.
The synthetic outputs carry per-stage features of the widths `--stages` (resnet18's stem and
four stages by default) for the scorers that need them (mahalanobis_multi, eval=openood_full).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from harness import metrics, registry
from harness.outputs import Head, Outputs
from harness.scorer import FitData

ROOT = Path(__file__).resolve().parent.parent


def synthetic_outputs(
    n: int, dim: int, classes: int, rng: np.random.Generator, head: Head, stages: list[int] = ()
):
    labels = rng.integers(0, classes, n)
    centres = rng.normal(0, 1, (classes, dim))
    feats = np.maximum(centres[labels] + rng.normal(0, 1, (n, dim)), 0).astype(np.float32)
    per_stage = [
        (rng.normal(0, 1, (classes, w))[labels] + rng.normal(0, 1, (n, w))).astype(np.float32)
        for w in stages
    ]
    return Outputs(
        head(feats).astype(np.float32), feats, labels, np.arange(n), stages=per_stage or None
    )


def eval_config(name: str) -> dict:
    """conf/eval/<name>.yaml with the configs its `defaults` list extends (Hydra's merge order:
    the listed configs first, then the file itself), scorers merged by name."""
    cfg = yaml.safe_load((ROOT / "conf" / "eval" / f"{name}.yaml").read_text())
    merged: dict = {}
    for parent in cfg.pop("defaults", []):
        if parent != "_self_":
            base = eval_config(parent)
            merged = {**merged, **base, "scorers": {**merged.get("scorers", {}), **base["scorers"]}}
    return {**merged, **cfg, "scorers": {**merged.get("scorers", {}), **(cfg.get("scorers") or {})}}


def forward_seconds_per_example(batches: int = 3, batch_size: int = 16) -> float:
    import timm

    model = timm.create_model("resnet18", pretrained=False).eval()
    x = torch.randn(batch_size, 3, 224, 224)
    with torch.no_grad():
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
    return (time.perf_counter() - start) / (batches * batch_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", type=int, default=50_000)
    parser.add_argument("--score", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--eval", default="default", help="conf/eval/<name>.yaml")
    parser.add_argument("--stages", default="64,64,128,256,512", help="per-stage widths")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "posthoc_cost.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    head = Head(rng.normal(0, 0.1, (args.classes, args.dim)), np.zeros(args.classes))
    widths = [int(w) for w in args.stages.split(",") if w]
    train = synthetic_outputs(args.fit, args.dim, args.classes, rng, head, widths)
    test = synthetic_outputs(args.score, args.dim, args.classes, rng, head, widths)
    cfg = eval_config(args.eval)
    goal = 0.03 if args.eval == "openood" else 0.05
    fit = FitData(train=train, val=train, head=head, num_classes=args.classes)

    timings = {}
    half = args.score // 2
    correct = metrics.predictions(test.logits) == test.labels
    for name, scorer_cfg in cfg["scorers"].items():
        cls = registry.resolve_target("scorer", {"name": name, **scorer_cfg})
        scorer = registry.construct(cls, scorer_cfg)
        if "model" in scorer.needs:  # runs its own passes during harness.run: not post-hoc
            continue
        start = time.perf_counter()
        scorer.fit(fit)
        scores = scorer.score(test)
        metrics.ood_metrics(scores[:half], scores[half:])
        metrics.aurc(scores, correct)
        metrics.e_aurc(scores, correct)
        for c in cfg["coverages"]:
            metrics.accuracy_at_coverage(scores, correct, c)
        timings[name] = time.perf_counter() - start
    start = time.perf_counter()
    metrics.ece(test.logits, test.labels)
    metrics.nll(test.logits, test.labels)
    metrics.brier(test.logits, test.labels)
    t = metrics.fit_temperature(train.logits, train.labels)
    metrics.ece(test.logits / t, test.labels)
    timings["calibration"] = time.perf_counter() - start

    total = sum(timings.values())
    per_example = total / args.score
    forward = forward_seconds_per_example()
    record = {
        "benchmark": "posthoc_cost",
        "fit": args.fit,
        "score": args.score,
        "dim": args.dim,
        "classes": args.classes,
        "seconds": timings,
        "total_seconds": total,
        "posthoc_seconds_per_example": per_example,
        "forward_seconds_per_example": forward,
        "ratio": per_example / forward,
        "eval": args.eval,
        "goal": goal,
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
    }
    for name, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"{name:>16s}: {seconds:8.2f} s")
    print(
        f"post-hoc: {per_example * 1e6:.1f} us/example; resnet18@224 forward: "
        f"{forward * 1e3:.1f} ms/example; ratio {record['ratio']:.4f} (goal <= {goal})"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {args.out}")


if __name__ == "__main__":
    main()
