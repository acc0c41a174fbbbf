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

from harness.augment import SeededTransform
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
    split: Split, transform: Any, cfg: dict[str, Any], num_batches: int, seed: int, epoch: int
) -> Iterator[torch.Tensor]:
    """This epoch's unlabeled input batches (trainer.batch_size each), seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch + STREAM_OFFSET)
    sampler = CyclingBatchSampler(len(split), int(cfg["batch_size"]), num_batches, generator)
    loader = DataLoader(
        UnlabeledInputs(split, transform), batch_sampler=sampler, num_workers=cfg["num_workers"]
    )
    return batches(loader)
