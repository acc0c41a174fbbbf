"""What storing features as float16 (forward.features_dtype=float16) does to each scorer's
metrics: every scorer of conf/eval/default.yaml fitted and scored on float32 features and
on the same features rounded to float16, side by side.

    python benchmarks/features_fp16.py [--fit 10000 --score 10000 --dim 512 --classes 10]

Synthetic penultimate features like a ReLU network's (non-negative, class clusters, a head
that separates them); an ID test set from the training clusters and an OOD set from
clusters 90% of the way to them (AUROCs between 0.6 and 0.97). Logits are float32
in the cache either way (they come from the model, not from the stored features), so the
label metrics (accuracy, ECE, NLL, ...) are unchanged; scorers that read features (and
those that re-apply the head to modified features: ReAct, ASH, SCALE, ViM) see the rounded
ones. Prints, per scorer, AUROC, FPR@95 and AURC with both, and the largest score change
relative to the scores' spread; writes results/benchmarks/features_fp16.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from harness import metrics, registry
from harness.outputs import Head, Outputs
from harness.scorer import FitData

ROOT = Path(__file__).resolve().parent.parent


def features(n: int, centres: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    labels = rng.integers(0, len(centres), n)
    feats = np.maximum(centres[labels] + rng.normal(0, 1, (n, centres.shape[1])), 0)
    return feats.astype(np.float32), labels


def rounded(out: Outputs) -> Outputs:
    return Outputs(
        out.logits, out.features.astype(np.float16).astype(np.float32), out.labels, out.index
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", type=int, default=10_000)
    parser.add_argument("--score", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument(
        "--out", default=str(ROOT / "results" / "benchmarks" / "features_fp16.json")
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    centres = rng.gamma(1.0, 1.0, (args.classes, args.dim))
    # OOD clusters near the ID ones (90%) : neither trivial nor hopeless
    ood_centres = 0.9 * centres[::-1] + 0.1 * rng.gamma(1.0, 1.0, (args.classes, args.dim))
    # a head that separates the classes, as a trained one does
    head = Head(0.005 * (centres - centres.mean(0)), np.zeros(args.classes))

    def outputs(n: int, c: np.ndarray) -> Outputs:
        feats, labels = features(n, c, rng)
        return Outputs(head(feats).astype(np.float32), feats, labels, np.arange(n))

    train, test, ood = (
        outputs(args.fit, centres),
        outputs(args.score, centres),
        outputs(args.score, ood_centres),
    )
    cfg = yaml.safe_load((ROOT / "conf" / "eval" / "default.yaml").read_text())
    correct = metrics.predictions(test.logits) == test.labels
    results = {}
    for name, scorer_cfg in cfg["scorers"].items():
        cls = registry.resolve_target("scorer", {"name": name, **scorer_cfg})
        if "model" in getattr(cls, "needs", ()):
            continue  # scores from its own passes through the model, not from the cache
        row = {}
        for dtype, convert in (("float32", lambda o: o), ("float16", rounded)):
            scorer = registry.construct(cls, scorer_cfg)
            scorer.fit(
                FitData(
                    train=convert(train), val=convert(train), head=head, num_classes=args.classes
                )
            )
            id_scores, ood_scores = scorer.score(convert(test)), scorer.score(convert(ood))
            ood_m = metrics.ood_metrics(id_scores, ood_scores)
            row[dtype] = {
                "auroc": ood_m["auroc"],
                "fpr95": ood_m["fpr95"],
                "aurc": metrics.aurc(id_scores, correct),
                "scores": np.r_[id_scores, ood_scores],
            }
        a, b = row["float32"], row["float16"]
        spread = float(np.std(a["scores"])) or 1.0
        results[name] = {
            **{f"{m}_float32": a[m] for m in ("auroc", "fpr95", "aurc")},
            **{f"{m}_float16": b[m] for m in ("auroc", "fpr95", "aurc")},
            **{f"{m}_abs_diff": abs(a[m] - b[m]) for m in ("auroc", "fpr95", "aurc")},
            "max_score_change_over_std": float(np.max(np.abs(a["scores"] - b["scores"])) / spread),
        }
    print(f"ID test accuracy {correct.mean():.3f} (the same with either dtype: logits are float32)")
    print(
        f"{'scorer':>16s} {'AUROC32':>8s} {'AUROC16':>8s} {'|dAUROC|':>9s} {'|dFPR95|':>9s} {'|dAURC|':>9s} {'max|ds|/std':>12s}"
    )
    for name, r in results.items():
        print(
            f"{name:>16s} {r['auroc_float32']:8.4f} {r['auroc_float16']:8.4f} {r['auroc_abs_diff']:9.1e} "
            f"{r['fpr95_abs_diff']:9.1e} {r['aurc_abs_diff']:9.1e} {r['max_score_change_over_std']:12.1e}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "features_fp16",
                **vars(args),
                "accuracy": float(correct.mean()),
                "scorers": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"record: {out}")


if __name__ == "__main__":
    main()
