"""Forward once per split into an Outputs cache; metrics and scorers read only the cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from harness.data import Split
from harness.models import forward_outputs, map_logits
from harness.registry import CONF_DIR
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


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """python -m harness.evaluate run=<run dir or results dir> [eval=NAME]: the post-hoc
    stage of an eval config on finished runs, from their caches alone."""
    from harness.posthoc import evaluate_run

    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    root = Path(cfg.run)
    runs = (
        [root]
        if (root / "benchmark.json").is_file()
        else sorted(p.parent for p in root.glob("runs/*/DONE"))
    )
    if not runs:
        raise FileNotFoundError(
            f"run={root}: neither a finished run directory nor a results "
            "directory with finished runs"
        )
    done = skipped = 0
    for run_dir in runs:
        eid, was_done = evaluate_run(run_dir, eval_cfg)
        done, skipped = done + (not was_done), skipped + was_done
    print(f"eval {eid}: {done} run(s) evaluated, {skipped} already had it")


if __name__ == "__main__":
    main()
