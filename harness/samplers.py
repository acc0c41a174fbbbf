"""Batch samplers a run can train with, whatever the method (`trainer.group_sampler`,
`trainer.domain_sampler`), and that a method's `train_sampler()` may return.

GroupBalancedBatchSampler is the group sampling of the WILDS training scripts
(wilds.common.data_loaders.GroupSampler: `uniform_over_groups`, `n_groups_per_batch`,
`distinct_groups`): each batch takes `n_groups_per_batch` groups, drawn uniformly (or in
proportion to their sizes), and `batch_size / n_groups_per_batch` examples of each, with
replacement only where a group is smaller than that. It is written here rather than taken
from wilds because wilds draws from numpy's global RNG: this one draws from the epoch's
torch.Generator, so a resumed run sees the same batches, and the harness does not import wilds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

OPTIONS = ("n_groups_per_batch", "uniform_over_groups", "distinct_groups")


def check_group_sampler(options: Any, batch_size: int) -> None:
    """Clear errors for trainer.group_sampler before anything runs."""
    if not isinstance(options, dict):
        raise ValueError(f"trainer.group_sampler must be a mapping or null, got {options!r}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"trainer.group_sampler: unknown option(s) {unknown}; options: {OPTIONS}")
    n = options.get("n_groups_per_batch")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or batch_size % n:
        raise ValueError(
            f"trainer.group_sampler.n_groups_per_batch must be a positive integer dividing "
            f"trainer.batch_size={batch_size}, got {n!r}"
        )
    for key in ("uniform_over_groups", "distinct_groups"):
        if not isinstance(options.get(key, True), bool):
            raise ValueError(f"trainer.group_sampler.{key} must be true or false")


class GroupBalancedBatchSampler(Sampler[list[int]]):
    """Yields batches (lists of indices): n groups per batch, batch_size / n examples each.

    One epoch = ceil(len(groups) / batch_size) batches, the trainer's steps per epoch.
    """

    def __init__(
        self,
        groups: np.ndarray,
        batch_size: int,
        n_groups_per_batch: int,
        generator: torch.Generator,
        uniform_over_groups: bool = True,
        distinct_groups: bool = True,
    ) -> None:
        check_group_sampler(
            {
                "n_groups_per_batch": n_groups_per_batch,
                "uniform_over_groups": uniform_over_groups,
                "distinct_groups": distinct_groups,
            },
            batch_size,
        )
        groups = np.asarray(groups, dtype=np.int64)
        self.unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        if distinct_groups and n_groups_per_batch > len(self.unique):
            raise ValueError(
                f"trainer.group_sampler: n_groups_per_batch={n_groups_per_batch} distinct groups "
                f"per batch, but the training split has {len(self.unique)} groups"
            )
        self.members = [np.flatnonzero(inverse == g) for g in range(len(self.unique))]
        self.weights = torch.as_tensor(
            np.ones(len(counts)) if uniform_over_groups else counts, dtype=torch.double
        )
        self.n_groups, self.per_group = n_groups_per_batch, batch_size // n_groups_per_batch
        self.distinct, self.generator = distinct_groups, generator
        self.num_batches = math.ceil(len(groups) / batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.num_batches):
            chosen = torch.multinomial(
                self.weights, self.n_groups, replacement=not self.distinct, generator=self.generator
            )
            batch = []
            for g in chosen.tolist():
                members = self.members[g]
                if len(members) <= self.per_group:  # as wilds: replacement only when needed
                    picks = torch.randint(
                        len(members), (self.per_group,), generator=self.generator
                    ).numpy()
                else:
                    picks = torch.randperm(len(members), generator=self.generator)[
                        : self.per_group
                    ].numpy()
                batch.extend(members[picks].tolist())
            yield batch


def domain_ids(bench: Any, split: Any) -> np.ndarray:
    """Integer domain id per example of `split` (0, 1, ... in the sorted order of the values
    of the benchmark's `domain_col`); the group id where the benchmark names no domain."""
    if getattr(bench, "domain_col", None) is None:
        return bench.group_ids(split)
    return pd.factorize(split.meta[bench.domain_col], sort=True)[0].astype(np.int64)


class DomainBalancedBatchSampler(Sampler[list[int]]):
    """DomainBed's minibatches in one batch (`trainer.domain_sampler`): every batch takes an
    equal share of `batch_size` from each domain (batch_size // n each; the remainder, one
    more each, to domains drawn at random per batch), grouped by domain in the batch's
    order. Within a domain, examples come in a fresh random order that restarts when used
    up (DomainBed samples each environment's loader for ever). One epoch =
    ceil(len(domains) / batch_size) batches; every draw from the epoch's generator.
    """

    def __init__(self, domains: np.ndarray, batch_size: int, generator: torch.Generator) -> None:
        domains = np.asarray(domains, dtype=np.int64)
        self.members = [np.flatnonzero(domains == d) for d in np.unique(domains)]
        self.batch_size, self.generator = int(batch_size), generator
        self.num_batches = math.ceil(len(domains) / batch_size)

    def _fresh(self, members: np.ndarray) -> np.ndarray:
        return members[torch.randperm(len(members), generator=self.generator).numpy()]

    def _take(self, d: int, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if self._used[d] == len(self._orders[d]):  # used up: a new random order
                self._orders[d], self._used[d] = self._fresh(self.members[d]), 0
            take = min(k - len(out), len(self._orders[d]) - self._used[d])
            out += self._orders[d][self._used[d] : self._used[d] + take].tolist()
            self._used[d] += take
        return out

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.members)
        share, extra = divmod(self.batch_size, n)
        self._orders = [self._fresh(m) for m in self.members]
        self._used = [0] * n
        for _ in range(self.num_batches):
            more = set(torch.randperm(n, generator=self.generator)[:extra].tolist())
            batch: list[int] = []
            for d in range(n):
                batch += self._take(d, share + (d in more))
            yield batch
