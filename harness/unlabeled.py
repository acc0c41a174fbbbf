"""Unlabeled target batches (`trainer.unlabeled_split`): methods that adapt to unlabeled data
(WILDS 2.0's unlabeled splits, a DG held-out domain without its labels) get, beside each
labeled batch, a batch of inputs from another split as `batch["unlabeled_x"]`.

Only the inputs travel: the dataset below never reads the split's labels, so no method can
see them. The order is a fresh random permutation of the split that restarts when used up
(as DomainBed/WILDS cycle their unlabeled loaders), drawn from a generator seeded by
(seed, epoch) alone, so a resumed run sees the same unlabeled batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness import augment
from harness.augment import SeededTransform, TorchvisionAugment
from harness.data import Benchmark, Split
from harness.forward import batches

# keeps the unlabeled stream apart from the labeled shuffle of the same (seed, epoch)
STREAM_OFFSET = 7_919_000


class UnlabeledInputs(Dataset):
    """A split's inputs alone (transformed as the training split's): the label is dropped
    by reading the image through `load_image`, never `__getitem__`."""

    def __init__(self, split: Split, transform: Any) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.split.load_image(i)
        if isinstance(self.transform, SeededTransform):
            return self.transform(image, i)
        return self.transform(image)


class UnlabeledViews(Dataset):
    """A split's inputs as the views a method asks for (Method.unlabeled_views): each view a
    SeededTransform of the raw image with a stream of its own, so the views of one input are
    drawn apart and every draw is a function of (seed, epoch, example, view). Labels are never
    read (`load_image`)."""

    def __init__(self, split: Split, views: dict[str, SeededTransform]) -> None:
        self.split, self.views = split, views

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.split.load_image(i)
        return {f"unlabeled_{name}": view(image, i) for name, view in self.views.items()}


def view_transforms(
    views: dict[str, dict[str, Any]], eval_transform: Any, seed: int
) -> dict[str, SeededTransform]:
    """The views' transforms: the augmentation on the raw image, then the evaluation
    transform (as augment=<kind> does for the training split), seeded per view: stream
    STREAM_OFFSET + 1, + 2, ... in the views' sorted order."""
    return {
        name: SeededTransform(
            TorchvisionAugment(views[name], eval_transform), seed, STREAM_OFFSET + j + 1
        )
        for j, name in enumerate(sorted(views))
    }


def check_views(views: dict[str, dict[str, Any]], adapter: Any = None) -> None:
    """Each view is a valid torchvision augmentation (conf/augment/'s kinds, not timm) and,
    with the dataset adapter, one the benchmark does not refuse; errors name method.<view>."""
    for name, cfg in views.items():
        try:
            if (
                not isinstance(cfg, dict)
                or augment.augment_name(cfg) not in augment.TORCHVISION_KINDS
            ):
                raise ValueError(
                    f"must be a torchvision augmentation {sorted(augment.TORCHVISION_KINDS)}, "
                    f"got {cfg!r}"
                )
            augment.validate(cfg)
            if adapter is not None:
                augment.check_refusals(cfg, adapter)
        except ValueError as exc:
            raise ValueError(f"method.{name}: {exc}") from exc


class CyclingBatchSampler(Sampler[list[int]]):
    """`num_batches` batches of `batch_size` indices of 0..n-1: a random order that restarts
    (re-drawn) when used up, every draw from `generator`."""

    def __init__(self, n: int, batch_size: int, num_batches: int, generator: torch.Generator):
        self.n, self.batch_size, self.num_batches, self.generator = (
            n,
            batch_size,
            num_batches,
            generator,
        )

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        order, used = np.empty(0, dtype=np.int64), 0
        for _ in range(self.num_batches):
            batch: list[int] = []
            while len(batch) < self.batch_size:
                if used == len(order):
                    order, used = torch.randperm(self.n, generator=self.generator).numpy(), 0
                take = min(self.batch_size - len(batch), len(order) - used)
                batch += order[used : used + take].tolist()
                used += take
            yield batch


def check_unlabeled_option(name: Any) -> None:
    """trainer.unlabeled_split: null or a split name (checked against the benchmark later)."""
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"trainer.unlabeled_split must be a split name or null, got {name!r}")


def check_method_and_split(method_cls: Any, options: dict[str, Any], name: Any) -> None:
    """A method that needs unlabeled batches gets a split, and one that ignores them is not
    given one (it would train exactly as without: a second key for the same run)."""
    wants = bool(getattr(method_cls, "uses_unlabeled", lambda _o: False)(options))
    method = options.get("name")
    if wants and name is None:
        raise ValueError(
            f"method={method} trains on unlabeled target batches: set trainer.unlabeled_split "
            "(e.g. the held-out domain's split, trainer.unlabeled_split=test)"
        )
    if name is not None and not wants:
        raise ValueError(
            f"trainer.unlabeled_split={name} is set but method={method} does not use unlabeled "
            "data (e.g. coral_unlabeled, dann_unlabeled, pseudo_label)"
        )


def unlabeled_split(bench: Benchmark, name: str) -> Split:
    """The split named by trainer.unlabeled_split: refused if unknown or the training split."""
    if name not in bench.splits:
        raise ValueError(
            f"trainer.unlabeled_split={name}: the benchmark has no such split; splits: "
            f"{sorted(bench.splits)}"
        )
    split = bench.splits[name]
    if split.role == "train" or len(split) == 0:
        raise ValueError(
            f"trainer.unlabeled_split={name}: must be a non-empty split other than the training split"
        )
    return split


def unlabeled_batches(
    split: Split,
    transform: Any,
    cfg: dict[str, Any],
    num_batches: int,
    seed: int,
    epoch: int,
    views: dict[str, SeededTransform] | None = None,
    ratio: int = 1,
) -> Iterator[torch.Tensor | dict[str, torch.Tensor]]:
    """This epoch's unlabeled input batches (ratio × trainer.batch_size each), seeded by
    (seed, epoch): tensors, or with `views` dicts {unlabeled_<view>: tensor}."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch + STREAM_OFFSET)
    size = int(cfg["batch_size"]) * int(ratio)
    sampler = CyclingBatchSampler(len(split), size, num_batches, generator)
    if views:
        for view in views.values():  # set before the loader copies them to workers
            view.epoch = epoch
        dataset: Dataset = UnlabeledViews(split, views)
    else:
        dataset = UnlabeledInputs(split, transform)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg["num_workers"])
    return batches(loader)
