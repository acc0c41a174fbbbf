"""JPEG decoding and the evaluation transform on the GPU, for splits of image files.

`forward.decode: auto | cpu | gpu` (conf/config.yaml). With `auto` (the default), an
evaluation forward pass on a CUDA device decodes the JPEG files of image-folder splits with
`torchvision.io.decode_jpeg(..., device="cuda")` (nvJPEG, a batch at a time) and runs the
run's own eval transform (resize, centre crop, normalise) on the decoded tensors there;
loader workers only read the files' bytes. Everywhere else, and for any split or transform
it cannot take, the CPU path (PIL in loader workers) stays. `gpu` insists (refused when the
device is not CUDA); `cpu` never decodes on the GPU.

What it takes: a split that names its files (`Split.files`, set by image-folder adapters)
whose names all end in .jpg/.jpeg, and a transform it can replay on tensors: a timm /
torchvision `Compose` of Resize / CenterCrop, then ToTensor (or timm's MaybeToTensor) and
Normalize (timm's eval transform), or the benchmark's own `BenchmarkTransform`. The
transform objects themselves are applied to the decoded uint8 tensors (torchvision's
transforms accept tensors), so the sizes, crop and interpolation are the run's, not a copy.

The numbers can differ from the CPU path in the last bits of some pixels (libjpeg-turbo vs
nvJPEG IDCT, PIL's vs torch's antialiased resize), as a GPU forward pass differs from a CPU
one; like the device, the decoder is not in any key (docs/benchmarks.md, "GPU decoding").
The same code runs on the CPU (`device` is a parameter), which is how it is tested on a
machine without a GPU (tests/test_gpudecode.py).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from harness.data import BenchmarkTransform, PILThen, Split

log = logging.getLogger("harness.gpudecode")
DECODE_MODES = ("auto", "cpu", "gpu")
JPEG_SUFFIXES = (".jpg", ".jpeg")


def check_decode(mode: object) -> str:
    if mode not in DECODE_MODES:
        raise ValueError(f"forward.decode must be one of {list(DECODE_MODES)}, got {mode!r}")
    return str(mode)


def resolve_decode(mode: str, device: torch.device) -> str:
    """'gpu' or 'cpu' for this device; `gpu` on a device that is not CUDA is refused."""
    check_decode(mode)
    if mode == "gpu" and device.type != "cuda":
        raise ValueError(
            f"forward.decode=gpu needs a CUDA device, but the run's device is {device}; "
            "use forward.decode=auto or cpu"
        )
    if mode == "auto":
        return "gpu" if device.type == "cuda" else "cpu"
    return mode


class TensorTransform:
    """The run's eval transform replayed on decoded uint8 CHW tensors (any device): the
    geometric steps per image (sizes differ before the crop), then one stack, scale to
    [0, 1] and normalise for the batch."""

    def __init__(
        self,
        geometric: Sequence[Callable[[torch.Tensor], torch.Tensor]],
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.geometric = list(geometric)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).clone().view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).clone().view(1, -1, 1, 1)

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        out = []
        for image in images:
            for step in self.geometric:
                image = step(image)
            out.append(image)
        x = torch.stack(out).float().div_(255.0)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return x.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"TensorTransform({self.geometric}, mean={self.mean.flatten().tolist()})"


def tensor_transform(transform: Any) -> TensorTransform | None:
    """The transform as a TensorTransform, or None when it has a step this cannot replay."""
    from torchvision import transforms as T

    if isinstance(transform, BenchmarkTransform):
        steps = []
        if transform.size is not None:
            size = transform.size

            def resize(image: torch.Tensor) -> torch.Tensor:  # only when the size differs
                if tuple(image.shape[-2:]) == size:
                    return image
                return T.functional.resize(
                    image, list(size), T.InterpolationMode.BILINEAR, antialias=True
                )

            steps.append(resize)
        return TensorTransform(steps, transform.mean.flatten(), transform.std.flatten())
    if not isinstance(transform, PILThen) or not isinstance(transform.transform, T.Compose):
        return None
    parts = list(transform.transform.transforms)
    geometric = []
    while parts and isinstance(parts[0], T.Resize | T.CenterCrop):
        geometric.append(parts.pop(0))
    if len(parts) != 2 or not isinstance(parts[0], T.ToTensor):  # timm's MaybeToTensor too
        return None
    if not isinstance(parts[1], T.Normalize):
        return None
    return TensorTransform(geometric, parts[1].mean, parts[1].std)


def decodable(split: Split) -> bool:
    """Whether every example of the split is a JPEG file it names."""
    files = getattr(split, "files", None)
    return (
        files is not None
        and len(files) == len(split)
        and all(str(f).lower().endswith(JPEG_SUFFIXES) for f in files)
    )


class FileBytes(Dataset):
    """(the file's bytes as a uint8 tensor, label, index) of each example: all a loader
    worker does when decoding happens on the GPU."""

    def __init__(self, split: Split) -> None:
        self.files, self.labels = list(split.files), split.labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        from torchvision.io import read_file

        return read_file(str(self.files[i])), int(self.labels[i]), i


def collate_bytes(items: list[tuple[torch.Tensor, int, int]]) -> tuple[Any, ...]:
    """The batch's files joined into one uint8 tensor, with each file's length: a worker
    hands the main process one shared-memory segment per batch, not one per file (hundreds
    of file descriptors per batch in flight exhausted them on a 16-core machine: EBADF)."""
    data, labels, index = zip(*items, strict=True)
    lengths = torch.tensor([len(d) for d in data])
    return torch.cat(data), lengths, torch.tensor(labels), torch.tensor(index)


def split_bytes(flat: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """collate_bytes undone: each file's bytes, a contiguous view of the joined tensor."""
    return list(torch.split(flat, lengths.tolist()))


class DecodeLoader:
    """Batches (inputs on `device`, labels, index) of a split of JPEG files: workers read
    bytes, the batch is decoded on `device` and transformed there. Iterated like the
    DataLoader it replaces (harness.forward.forward_split takes either).

    Decoding runs `prefetch` batches ahead in a thread (on CUDA, on a stream of its own,
    the consumer's stream waiting for each batch's event), so the next batch is decoded
    while the model runs on this one: otherwise decode and forward would add up, and the
    forward stage could not reach the slower of the two (docs/benchmarks.md)."""

    def __init__(
        self,
        split: Split,
        transform: TensorTransform,
        batch_size: int,
        device: torch.device,
        num_workers: int = 0,
        prefetch: int = 2,
    ) -> None:
        self.split, self.transform, self.device = split, transform, device
        self.files = list(split.files)
        self.num_workers, self.prefetch = num_workers, prefetch
        self.loader = DataLoader(
            FileBytes(split),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_bytes,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for flat, lengths, labels, index in self.loader:
            yield self.transform(self.decode(split_bytes(flat, lengths), index)), labels, index

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self.prefetch < 1:
            yield from self._batches()
            return
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                with torch.cuda.stream(stream) if cuda else nullcontext():
                    for batch in self._batches():
                        event = torch.cuda.Event() if cuda else None
                        if event is not None:
                            event.record(stream)
                        if not put((batch, event)):
                            return
                put((None, None))
            except BaseException as exc:  # handed to the consumer, raised there
                put((exc, None))

        thread = threading.Thread(target=produce, name="gpudecode", daemon=True)
        thread.start()
        try:
            while True:
                batch, event = ready.get()
                if batch is None:
                    return
                if isinstance(batch, BaseException):
                    raise batch
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    batch[0].record_stream(current)  # made on the side stream, used here
                yield batch
        finally:
            stop.set()
            thread.join()

    def decode(self, data: list[torch.Tensor], index: torch.Tensor) -> list[torch.Tensor]:
        """RGB uint8 CHW tensors on the device: one batched decode; if the batch fails
        (e.g. a CMYK JPEG nvJPEG does not take), image by image, those failing again
        decoded on the CPU; a file nothing decodes is named."""
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        rgb = ImageReadMode.RGB
        try:
            return list(decode_jpeg(data, mode=rgb, device=self.device))
        except RuntimeError:
            pass
        out = []
        for blob, i in zip(data, index.tolist(), strict=True):
            try:
                out.append(decode_jpeg(blob, mode=rgb, device=self.device))
            except RuntimeError:
                try:
                    out.append(decode_image(blob, mode=rgb).to(self.device))
                except RuntimeError as exc:
                    raise ValueError(
                        f"split {self.split.name!r}: cannot decode {self.files[i]} ({exc})"
                    ) from exc
        return out


def decode_loader(
    split: Split, transform: Any, batch_size: int, device: torch.device, num_workers: int = 0
) -> DecodeLoader | None:
    """A DecodeLoader for the split, or None (with the reason logged) when it is not a split
    of JPEG files or its transform has a step that cannot run on tensors."""
    if not decodable(split):
        return None
    replay = tensor_transform(transform)
    if replay is None:
        log.info(
            "split %s: transform %r not replayable on the GPU; decoding on the CPU",
            split.name,
            transform,
        )
        return None
    return DecodeLoader(split, replay, batch_size, device, num_workers)
