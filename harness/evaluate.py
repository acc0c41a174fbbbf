"""Forward once per split into an Outputs cache; metrics and scorers read only the cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from harness import metrics
from harness.data import LABELED_ROLES, Benchmark, Split
from harness.models import forward_outputs, map_logits
from harness.store import atomic_save_npz


@dataclass
class Outputs:
    """What one forward pass over a split produced: everything post-hoc work needs."""

    logits: np.ndarray  # N × C (benchmark classes, after any label map), float32
    features: np.ndarray  # N × D penultimate features, float32
    labels: np.ndarray  # N, int64 (-1 where unknown)
    index: np.ndarray  # N, row of the split's metadata

    def save(self, path: str | Path) -> None:
        atomic_save_npz(
            path, logits=self.logits, features=self.features, labels=self.labels, index=self.index
        )

    @classmethod
    def load(cls, path: str | Path) -> Outputs:
        with np.load(path) as z:
            return cls(z["logits"], z["features"], z["labels"], z["index"])


@torch.no_grad()
def forward_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    label_index: list[int] | None = None,
    num_workers: int = 0,
    progress: bool = False,
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Outputs:
    """One pass over the split (in its own order) in eval mode."""
    was_training = model.training
    model.eval()
    predict = predict or (lambda x: forward_outputs(model, x))
    loader = DataLoader(split, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    logits, feats, labels, index = [], [], [], []
    for x, y, i in tqdm(
        loader, desc=f"eval {split.name}", disable=None if progress else True, leave=False
    ):
        out, feat = predict(x.to(device, non_blocking=True))
        logits.append(map_logits(out, label_index).float().cpu())
        feats.append(feat.float().cpu())
        labels.append(y)
        index.append(i)
    model.train(was_training)
    return Outputs(
        torch.cat(logits).numpy(),
        torch.cat(feats).numpy(),
        torch.cat(labels).numpy().astype(np.int64),
        torch.cat(index).numpy().astype(np.int64),
    )


def label_metrics(
    outputs: Outputs, split: Split, bench: Benchmark, ece_bins: int
) -> list[dict[str, Any]]:
    """Rows (metric, value, n, group_key, group_value) for a labelled split."""
    logits, labels = outputs.logits, outputs.labels
    n = len(labels)
    rows = [
        {"metric": "accuracy", "value": metrics.accuracy(logits, labels), "n": n},
        {"metric": "nll", "value": metrics.nll(logits, labels), "n": n},
        {"metric": "ece", "value": metrics.ece(logits, labels, ece_bins), "n": n},
    ]
    if bench.group_cols:
        correct = metrics.predictions(logits) == labels
        groups = metrics.group_accuracy(correct, split.meta.iloc[outputs.index], bench.group_cols)
        group_key = "|".join(bench.group_cols)
        for g in groups.itertuples():
            rows.append(
                {
                    "metric": "accuracy",
                    "value": g.accuracy,
                    "n": int(g.n),
                    "group_key": group_key,
                    "group_value": g.group,
                }
            )
        worst = groups.loc[groups["accuracy"].idxmin()]
        rows.append(
            {
                "metric": "worst_group_accuracy",
                "value": float(worst["accuracy"]),
                "n": int(worst["n"]),
                "group_key": group_key,
                "group_value": worst["group"],
            }
        )
    return rows


def msp_rows(all_outputs: dict[str, Outputs], bench: Benchmark) -> dict[str, list[dict[str, Any]]]:
    """The MSP scorer: AUROC of ID test vs each shifted/OOD split, and of correct vs wrong
    predictions on every labelled split. Rows per split name."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in all_outputs}
    scores = {name: metrics.msp(o.logits) for name, o in all_outputs.items()}
    id_names = [s.name for s in bench.by_role("id_test") if s.name in all_outputs]
    for name, out in all_outputs.items():
        role = bench.splits[name].role
        if role in LABELED_ROLES:
            correct = metrics.predictions(out.logits) == out.labels
            value = metrics.auroc(scores[name][correct], scores[name][~correct])
            if value is not None:  # undefined when every prediction is right (or wrong)
                rows[name].append(
                    {"scorer": "msp", "metric": "auroc_error", "value": value, "n": len(correct)}
                )
        if role in ("shift_test", "ood"):
            for id_name in id_names:
                value = metrics.auroc(scores[id_name], scores[name])
                if value is not None:
                    rows[name].append(
                        {
                            "scorer": "msp",
                            "metric": f"auroc_vs_{id_name}",
                            "value": value,
                            "n": len(scores[name]) + len(scores[id_name]),
                        }
                    )
    return rows


def example_scores(outputs: Outputs) -> pd.DataFrame:
    """Per-example scores (for paired bootstraps later): one row per example."""
    logits, labels = outputs.logits, outputs.labels
    pred = metrics.predictions(logits)
    frame = pd.DataFrame(
        {"index": outputs.index, "label": labels, "pred": pred, "msp": metrics.msp(logits)}
    )
    if (labels >= 0).all():
        frame["correct"] = pred == labels
        frame["nll"] = metrics.per_example_nll(logits, labels)
    return frame
