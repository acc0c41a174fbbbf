"""A forward pass's outputs brought to the host one batch late (issue 23, the GPU path).

`.cpu()` after each batch made the host wait for that batch's forward pass before it could
queue the next one, so the GPU idled while Python queued each batch (docs/benchmarks.md,
"GPU decoding"). On CUDA each batch's logits and features are now copied without waiting
(`non_blocking`: into pinned memory), an event marks the copies, and the batch is kept, in
pageable memory, only once the next batch has been queued: at most two batches' pinned
buffers are in use at a time, and nothing is read before its event. Elsewhere the tensors
are kept as they come (a CPU tensor's `.to("cpu")` is itself)."""

from __future__ import annotations

import torch


class HostCopies:
    """Each batch's (logits, features) pairs on the host, in order: `add` after each batch,
    `settle` after the last one; then `logits` and `features` hold every batch's."""

    def __init__(self, device: torch.device) -> None:
        self.cuda, self.device = device.type == "cuda", device
        self.logits: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []
        self.pending: tuple[torch.cuda.Event | None, list[tuple[torch.Tensor, ...]]] | None = None

    def add(self, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Queue the copies of one batch's (logits, features) pairs, then keep the batch
        before it (whose copies the GPU has done by now, or does while this one runs)."""
        copies = [
            (logits.to("cpu", non_blocking=self.cuda), feats.to("cpu", non_blocking=self.cuda))
            for logits, feats in parts
        ]
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))  # after the copies
        self.settle()
        self.pending = (event, copies)

    def settle(self) -> None:
        """Keep the batch still being copied, once its copies are done."""
        if self.pending is None:
            return
        event, copies = self.pending
        self.pending = None
        if event is not None:
            event.synchronize()
        for logits, feats in copies:
            # out of the pinned buffers, which the host allocator then reuses
            self.logits.append(logits.clone() if event is not None else logits)
            self.features.append(feats.clone() if event is not None else feats)
