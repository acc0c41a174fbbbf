"""Forward passes: once per split into the Outputs cache (loaders shared by a run's splits,
autocast, channels_last, torch.compile, out-of-memory fallback). Metrics and scorers read
only the cache (harness/posthoc.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from harness.data import Split
from harness.models import forward_outputs, map_logits
from harness.outputs import Outputs

log = logging.getLogger("harness.forward")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ForwardOptions:
    """How evaluation forward passes run. `precision` changes the numbers (it is part of the
    keys); the others change the speed only (and float rounding in the last bits, as the
    number of threads and the batch size do)."""

    precision: str = "fp32"  # fp32 | bf16 | fp16: torch.autocast on the device
    channels_last: bool = False  # model and inputs in NHWC memory format
    compile: bool | str = False  # torch.compile the forward: True (inductor) or a backend name
    pin_memory: bool = False  # page-locked batches, for asynchronous copies to a GPU


def prepare_forward(
    model: torch.nn.Module,
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    options: ForwardOptions,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The (logits, features) function forward passes use, once per run: the model in
    channels_last when asked, the function compiled when asked (compiled once, reused by
    every split; a last batch of another size compiles once more)."""
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    predict = predict or (lambda x: forward_outputs(model, x))
    if options.compile:
        backend = options.compile if isinstance(options.compile, str) else "inductor"
        predict = torch.compile(predict, backend=backend)
    return predict


def auto_num_workers(device: torch.device, cpus: int | None = None) -> int:
    """Loader workers for `num_workers: auto`. On a GPU the CPU cores only load, so up to 8
    workers, leaving one core to the main process; on a CPU the forward pass's own threads
    use the cores, and loading in the main process (with one thread, see `batches`) costs
    less than workers competing for them and handing batches over (docs/benchmarks.md)."""
    cpus = cpus or len(os.sched_getaffinity(0))
    return min(8, max(1, cpus - 1)) if device.type == "cuda" else 0


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches. When they are made in this process (no workers), with one torch
    thread: per-example transforms are many small tensor operations, and torch's intra-op
    thread pool makes them ~10× slower on a busy machine (measured: 40 ms instead of 4 ms per
    224×224 JPEG, benchmarks/eval_throughput.py); workers already run with one thread."""
    iterator = iter(loader)
    while True:
        with torch_threads(1) if loader.num_workers == 0 else nullcontext():
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


class SplitLoader:
    """One DataLoader whose workers serve every split given (persistent_workers): a run
    starts its workers once rather than once per split (60-100 ms per start measured here,
    much of the time of a small split on a GPU). Without workers it is a plain loader per
    split. Workers are forked (Splits hold closures that do not pickle)."""

    def __init__(
        self,
        splits: list[Split],
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent: bool = True,
    ) -> None:
        self.splits = {s.name: s for s in splits}
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self._sampler = _SplitBatches(batch_size)
        self._shared = (
            DataLoader(
                _SplitsDataset(list(self.splits.values())),
                batch_sampler=self._sampler,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=True,
            )
            if persistent and num_workers > 0 and len(self.splits) > 1
            else None
        )

    def loader(self, name: str) -> DataLoader:
        """The loader of split `name`, in its order (iterate it once before the next)."""
        split = self.splits[name]
        if self._shared is None:
            return DataLoader(
                split,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
        self._sampler.select(list(self.splits).index(name), len(split))
        return self._shared


class _SplitsDataset(torch.utils.data.Dataset):
    def __init__(self, splits: list[Split]) -> None:
        self.splits = splits

    def __getitem__(self, key: tuple[int, int]) -> Any:
        split_no, i = key
        return self.splits[split_no][i]


class _SplitBatches(torch.utils.data.Sampler):
    """Batches of (split number, row) of the selected split, in order."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.split_no, self.n = batch_size, 0, 0

    def select(self, split_no: int, n: int) -> None:
        self.split_no, self.n = split_no, n

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            yield [(self.split_no, i) for i in range(start, stop)]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def is_out_of_memory(exc: BaseException) -> bool:
    # torch.OutOfMemoryError is what every accelerator's allocator raises (torch.cuda's is it)
    return isinstance(exc, torch.OutOfMemoryError)


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
    options: ForwardOptions | None = None,
    loader: DataLoader | None = None,
) -> Outputs:
    """One pass over the split (in its own order) in eval mode. `loader` (e.g. from a
    SplitLoader) replaces the one made here from batch_size and num_workers.

    On an out-of-memory error of the device the batch is run again in halves, and the smaller size
    kept for the rest of the split (timm's validate.py halves and starts over); a warning in
    the run log says so. Each example's outputs do not depend on its batch."""
    options = options or ForwardOptions()
    was_training = model.training
    model.eval()
    predict = predict or (lambda x: forward_outputs(model, x))
    if loader is None:
        loader = DataLoader(
            split,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=options.pin_memory,
        )
    autocast = (
        torch.autocast(device.type, dtype=PRECISIONS[options.precision])
        if options.precision != "fp32"
        else nullcontext()
    )
    chunk = batch_size
    logits, feats, labels, index = [], [], [], []
    for x, y, i in tqdm(
        batches(loader), desc=f"eval {split.name}", disable=None if progress else True, leave=False
    ):
        x = x.to(device, non_blocking=True)
        if options.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        while True:
            try:
                with autocast:
                    outs = [predict(part) for part in x.split(chunk)]
                break
            except Exception as exc:
                if not is_out_of_memory(exc) or chunk == 1:
                    raise
                smaller = max(1, min(chunk, len(x)) // 2)
                log.warning(
                    "eval %s: out of memory at batch size %d; retrying with %d",
                    split.name,
                    min(chunk, len(x)),
                    smaller,
                )
                chunk = smaller
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        for out, feat in outs:
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
