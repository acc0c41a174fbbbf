"""Test-time adaptation (TTA): the interface of methods/tta/ plugins and the driver that runs
one on a split.

A plugin gets a fresh copy of the trained network for every split (so nothing it learns on one
split reaches the next) and the split's inputs only: the driver reads images through the
split's image loader, never through the (image, label, index) items, so labels cannot reach
the plugin. Labels are attached by the runner afterwards, for the metrics.

A split whose size leaves a final batch of one example (len % tta.batch_size == 1) has that
example folded into the previous batch, but only where the plugin would otherwise fail on it:
batch norm computing batch statistics refuses a single value per channel. A trial adaptation
of a throwaway copy on one example decides, so runs that worked before keep their batches.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from harness.data import Split
from harness.forward import RunModel
from harness.forward import batches as loader_batches
from harness.keys import RunKeys, output_settings, tta_config
from harness.models import forward_outputs, map_logits
from harness.outputs import Outputs
from harness.rundir import RunDir
from harness.store import atomic_write_parquet

Batches = Callable[[], Iterator[torch.Tensor]]
log = logging.getLogger("harness.tta")


class TTA:
    """Base of methods/tta/ plugins; hyperparameters arrive as keyword arguments from the
    plugin's YAML in conf/tta/ (everything but `name`, `_target_` and `search_space`).

    `adapt(net, batches)` returns the logits and penultimate features of every example, in
    the order `batches()` yields them. `net` is the plugin's own copy of the trained network
    (an nn.Module with `predict(x) -> (logits, features)`, in eval mode); the plugin may change
    it. `batches()` returns a new iterator over the split's input batches (on the device), as
    often as the plugin needs another pass.
    """

    def __init__(self, batch_size: int = 128) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"tta.batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size

    def adapt(self, net: nn.Module, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class Predictor(nn.Module):
    """A model with no training method (evaluation-only runs): timm's logits and features,
    with the run's label map applied, so TTA sees the benchmark's classes."""

    def __init__(self, model: nn.Module, label_index: list[int] | None = None) -> None:
        super().__init__()
        self.model, self.label_index = model, label_index

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = forward_outputs(self.model, x)
        return map_logits(logits, self.label_index), features


class InputsOnly(Dataset):
    """A split's transformed inputs, without its labels."""

    def __init__(self, split: Split, transform: Callable[[Any], torch.Tensor]) -> None:
        self.load_image, self.transform, self.n = split.load_image, transform, len(split)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.load_image(i))


class _OneValue(Exception):
    """Raised in a trial where batch norm would compute statistics over one value."""


def _refuse_one_value(module: nn.Module, args: tuple[Any, ...]) -> None:
    # torch's own condition (F.batch_norm checks it when it computes batch statistics)
    x = args[0]
    batch_stats = module.training or module.running_mean is None
    if batch_stats and x.shape[0] * math.prod(x.shape[2:]) == 1:
        raise _OneValue


def fails_on_one_example(tta: TTA, net: nn.Module, example: torch.Tensor) -> bool:
    """Whether `tta` fails on a batch of one example because a batch-norm layer would
    compute batch statistics over a single value per channel; tried on a throwaway copy."""
    trial = copy.deepcopy(net).to(example.device).eval()
    for m in trial.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.register_forward_pre_hook(_refuse_one_value)
    try:
        tta.adapt(trial, lambda: iter([example[None]]))
    except _OneValue:
        return True
    except Exception:  # only batch norm is asked about; the real run reports the rest
        return False
    return False


def fold_last_batch(
    tta: TTA,
    net: nn.Module,
    split: Split,
    transform: Callable[[Any], torch.Tensor],
    device: torch.device,
) -> bool:
    """Whether `split`'s final batch of one example must join the previous batch (the plugin
    would fail on it alone); a ValueError when the split has one example and nothing to join."""
    if len(split) % tta.batch_size != 1:
        return False
    if not fails_on_one_example(tta, net, transform(split.load_image(0)).to(device)):
        return False
    if len(split) == 1:
        raise ValueError(
            f"tta ({type(tta).__name__}): split {split.name!r} has a single example, and "
            "batch norm in training mode needs at least 2 per batch; leave the split out "
            "or use a TTA plugin without batch statistics (tta=lame)"
        )
    log.info(
        "tta.batch_size=%d: split %s's final example joins the previous batch (%d examples: "
        "batch norm in training mode refuses a batch of one)",
        *(tta.batch_size, split.name, tta.batch_size + 1),
    )
    return True


def batch_indices(n: int, batch_size: int, fold_last: bool = False) -> list[list[int]]:
    """Consecutive batches of `batch_size` over range(n); a final batch of one joins the
    previous batch when `fold_last`."""
    out = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    if fold_last and len(out) > 1 and len(out[-1]) == 1:
        out[-2:] = [out[-2] + out[-1]]
    return out


def adapt_split(
    tta: TTA,
    net: nn.Module,
    split: Split,
    transform: Callable[[Any], torch.Tensor],
    device: torch.device,
    num_workers: int = 0,
    fold_last: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and features of every example of `split`, in its order, from a fresh copy of
    `net` that `tta` adapts on the split's inputs alone; `net` itself is left unchanged.
    `fold_last`: None decides it here (fold_last_batch)."""
    if fold_last is None:
        fold_last = fold_last_batch(tta, net, split, transform, device)
    adapted = copy.deepcopy(net).to(device)
    adapted.eval()
    loader = DataLoader(
        InputsOnly(split, transform),
        batch_sampler=batch_indices(len(split), tta.batch_size, fold_last),
        num_workers=num_workers,
    )

    def batches() -> Iterator[torch.Tensor]:
        return (x.to(device, non_blocking=True) for x in loader_batches(loader))

    logits, features = tta.adapt(adapted, batches)
    if len(logits) != len(split) or len(features) != len(split):
        raise RuntimeError(
            f"TTA {type(tta).__name__} returned {len(logits)} logits and {len(features)} "
            f"features for the {len(split)} examples of split {split.name!r}"
        )
    return (
        logits.detach().float().cpu().numpy(),
        features.detach().float().flatten(1).cpu().numpy(),
    )


def predict_all(net: nn.Module, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass without gradients: (logits, features) of every batch, concatenated."""
    with torch.no_grad():
        outs = [net.predict(x) for x in batches()]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def adapt_run(
    c: dict[str, Any], x: RunModel, rd: RunDir, trained: RunKeys, plugin: Any, net: Any
) -> tuple[dict[str, str], list[str]]:
    """A TTA run's forward stage: each split adapted from a fresh copy of `net`, on its
    inputs alone (harness/tta.py), into the Outputs cache; labels attached afterwards, for
    the metrics only. Forward keys: the trained run's key + split + transform + TTA config;
    and the splits whose final example joined the previous batch (fold_last_batch)."""
    features_dtype = output_settings(c)["features_dtype"]
    splits = list(x.bench.splits.values())
    forward_keys = {
        s.name: trained.forward_key(
            s.name,
            x.transform_desc,
            tta=tta_config(c),
            precision=c["precision"],
            features_dtype=features_dtype,
        )
        for s in splits
    }
    todo = [s for s in splits if not rd.output_path(s.name, forward_keys[s.name]).is_file()]
    # every split's final batch decided (or refused) before any split is adapted; those
    # adapted by an earlier attempt too (a trial on one example), so the record is whole
    fold = {s.name: fold_last_batch(plugin, net, s, x.transform, x.device) for s in splits}
    for split in todo:
        logits, features = adapt_split(
            plugin, net, split, x.transform, x.device, c["trainer"]["num_workers"], fold[split.name]
        )
        labels = split.labels.copy()
        Outputs(logits, features, labels, np.arange(len(split), dtype=np.int64)).save(
            rd.output_path(split.name, forward_keys[split.name]), features_dtype
        )
    for split in splits:
        atomic_write_parquet(split.meta, rd.meta(split.name))
    return forward_keys, sorted(name for name, folded in fold.items() if folded)
