"""Common corruptions (Hendrycks & Dietterich, ICLR 2019): the released "-C" array layout,
read memory-mapped, and a seeded generator for any image split.

Released layout (CIFAR-10-C, CIFAR-100-C, and what `python -m harness.prepare corruptions`
writes): one folder with `<corruption>.npy` (5·N × H × W × 3 uint8, severity-major: row
(s − 1)·N + i is image i at severity s) and `labels.npy` (5·N labels, the N test labels
repeated per severity). N is inferred from the length.

Generated sets come from imagecorruptions-imaug (import name `imagecorruptions`), whose
severities are ImageNet-C's, not CIFAR-10-C's. A generated folder holds `GENERATED.json`
(generator, version, seed, severities, source split); its splits are named `gen-...` and
their metadata says `corruption_source=generated`, so they are never mistaken for the
released files.
"""

from __future__ import annotations

import json
import mmap
import weakref
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data import Split

# The 15 benchmark corruptions and the 4 extra ("validation") ones, in the release's order.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": EXTRA_CORRUPTIONS,
}
FAMILY_OF = {c: family for family, members in FAMILIES.items() for c in members}
SEVERITIES = (1, 2, 3, 4, 5)
GENERATOR = "imagecorruptions-imaug"
GENERATED_MARKER = "GENERATED.json"
GENERATED_PREFIX = "gen-"
# Memory-mapped pages a reader may keep resident before it hands them back to the kernel.
RELEASE_BYTES = 16 << 20


def resolve_corruptions(spec: str | Sequence[str] | None) -> list[str]:
    """'all' (19), 'common' (the 15), 'extra' (the 4), a family name, or a list of names."""
    if spec is None:
        return []
    if isinstance(spec, str):
        named = {"all": ALL_CORRUPTIONS, "common": CORRUPTIONS, **FAMILIES}
        if spec in named:
            return list(named[spec])
        spec = [spec]
    unknown = [c for c in spec if c not in ALL_CORRUPTIONS]
    if unknown:
        raise ValueError(
            f"unknown corruptions {unknown}; known: 'all', 'common', {sorted(FAMILIES)} or "
            f"names from {list(ALL_CORRUPTIONS)}"
        )
    return list(spec)


def resolve_severities(severities: Sequence[int] | None) -> list[int]:
    values = list(SEVERITIES if severities is None else severities)
    bad = [s for s in values if s not in SEVERITIES]
    if bad or not values or len(set(values)) != len(values):
        raise ValueError(f"severities must be distinct integers in 1..5, got {values}")
    return sorted(values)


def split_name(corruption: str, severity: int, generated: bool = False) -> str:
    """'gaussian_noise-3' (released files) or 'gen-gaussian_noise-3' (generated here): the
    names harness.corruption_metrics.SPLIT_PATTERN recognises in the results table."""
    return f"{GENERATED_PREFIX if generated else ''}{corruption}-{severity}"


# ---------------------------------------------------------------- generator


def corruption_seed(seed: int, corruption: str, severity: int) -> np.random.SeedSequence:
    """One independent stream per (seed, corruption, severity): adding a corruption or a
    severity never changes the images of another."""
    return np.random.SeedSequence([int(seed), zlib.crc32(corruption.encode()), int(severity)])


def corrupt_images(images: np.ndarray, corruption: str, severity: int, seed: int = 0) -> np.ndarray:
    """N × H × W × C uint8 (C = 1 or 3, H and W ≥ 32) -> N × H × W × 3 uint8, corrupted with
    imagecorruptions at the given severity, reproducibly.

    imagecorruptions draws from numpy's global RNG (and takes explicit seeds only for
    impulse_noise and glass_blur), so the global state is seeded here and restored after.
    """
    import imagecorruptions

    resolve_corruptions([corruption])
    resolve_severities([severity])
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[3] not in (1, 3):
        raise ValueError(
            f"corrupt_images needs N × H × W × C uint8 images with C in (1, 3), got "
            f"{images.shape} {images.dtype}"
        )
    if min(images.shape[1:3]) < 32:
        raise ValueError(
            f"imagecorruptions needs images of at least 32×32 pixels, got {images.shape[1:3]}: "
            "upsample them first"
        )
    sequence = corruption_seed(seed, corruption, severity)
    per_image = np.random.default_rng(sequence).integers(0, 2**31 - 1, size=len(images))
    explicit_seed = corruption in ("impulse_noise", "glass_blur")
    out = np.empty((*images.shape[:3], 3), dtype=np.uint8)
    state = np.random.get_state()
    try:
        for i, image in enumerate(images):
            np.random.seed(int(per_image[i]))
            kwargs = {"seed": int(per_image[i])} if explicit_seed else {}
            result = imagecorruptions.corrupt(
                image, severity=severity, corruption_name=corruption, **kwargs
            )
            if result.shape[:2] != image.shape[:2]:  # frost/fog crop or tile to the input size
                raise ValueError(
                    f"{corruption} at severity {severity} returned {result.shape} for {image.shape}"
                )
            out[i] = result if result.ndim == 3 else result[:, :, None]
    finally:
        np.random.set_state(state)
    return out


def generator_version() -> str:
    from importlib.metadata import version

    return version(GENERATOR)


def write_corruption_set(
    out_dir: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    source: dict[str, Any] | None = None,
) -> Path:
    """Writes generated corruptions in the released layout (`<corruption>.npy`
    severity-major, `labels.npy`) plus GENERATED.json. Each file is written through numpy's
    open_memmap under a temporary name and renamed when complete, so a killed run never
    leaves a truncated file under a final name. Returns the folder."""
    from numpy.lib.format import open_memmap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    severities = resolve_severities(severities)
    corruptions = resolve_corruptions(list(corruptions))
    n = len(images)
    if n == 0 or len(labels) != n:
        raise ValueError(
            f"need a non-empty split with one label per image: {n} images, {len(labels)} labels"
        )
    height, width = np.asarray(images[0]).shape[:2]
    tiled = np.tile(np.asarray(labels, dtype=np.int64), len(severities))
    _write_npy(out / "labels.npy", tiled)
    for corruption in corruptions:
        tmp = out / f".{corruption}.npy.partial"
        array = open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(severities) * n, height, width, 3)
        )
        for block, severity in enumerate(severities):
            array[block * n : (block + 1) * n] = corrupt_images(images, corruption, severity, seed)
        array.flush()
        del array
        tmp.replace(out / f"{corruption}.npy")
    marker = {
        "generated": True,
        "generator": GENERATOR,
        "version": generator_version(),
        "seed": int(seed),
        "seeding": "numpy SeedSequence([seed, crc32(corruption), severity]) per (corruption, severity)",
        "severities": severities,
        "severity_scale": "ImageNet-C's (imagecorruptions); not the released CIFAR-10-C parameters",
        "corruptions": corruptions,
        "n": n,
        "source": source or {},
    }
    (out / GENERATED_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return out


def _write_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("wb") as f:
        np.save(f, array)
    tmp.replace(path)


# ---------------------------------------------------------------- reading


def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, from its header alone."""
    with Path(path).open("rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(f)
        return tuple(shape), np.dtype(dtype), f.tell()


def npy_problem(
    path: Path, tail: tuple[int, ...] | None = None, dtype: Any = None, what: str = ""
) -> tuple[str | None, tuple[int, ...] | None]:
    """(problem or None, shape) of a .npy file: missing, unreadable header, truncated, wrong
    shape tail or dtype. Reads the header only."""
    if not path.is_file():
        return f"{path} is missing{what}", None
    try:
        shape, file_dtype, offset = npy_header(path)
    except Exception as exc:  # numpy raises ValueError/EOFError for a damaged header
        return f"{path} is not a readable .npy file ({exc})", None
    expected = offset + int(np.prod(shape, dtype=np.int64)) * file_dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        return (
            f"{path} is truncated: {size} bytes, its header ({shape}, {file_dtype}) needs "
            f"{expected}; download or generate it again"
        ), None
    if tail is not None and (len(shape) != len(tail) + 1 or shape[1:] != tail):
        return f"{path} has shape {shape}, expected (5·N, {', '.join(map(str, tail))})", None
    if dtype is not None and file_dtype != np.dtype(dtype):
        return f"{path} has dtype {file_dtype}, expected {np.dtype(dtype)}", None
    return None, shape


def read_marker(root: Path) -> dict[str, Any] | None:
    marker = root / GENERATED_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def corruption_set_problems(
    root: str | Path,
    corruptions: Sequence[str],
    image_shape: tuple[int, int, int] | None,
    how: str,
    severities: Sequence[int] = SEVERITIES,
) -> list[str]:
    """What is wrong with a corruption folder, from .npy headers and sizes only."""
    root = Path(root)
    if not root.is_dir():
        return [
            f"{root} is missing: expected a folder with <corruption>.npy and labels.npy ({how})"
        ]
    marker = read_marker(root)
    n_severities = len(marker["severities"]) if marker else len(SEVERITIES)
    problems = []
    absent = sorted(set(severities) - set(marker["severities"])) if marker else []
    if absent:
        problems.append(
            f"{root / GENERATED_MARKER}: the folder holds severities {marker['severities']}, "
            f"not {absent} (set dataset.severities or generate them)"
        )
    labels_problem, labels_shape = npy_problem(root / "labels.npy", tail=(), what=f" ({how})")
    if labels_problem:
        problems.append(labels_problem)
    for corruption in corruptions:
        path = root / f"{corruption}.npy"
        problem, shape = npy_problem(path, image_shape, np.uint8, f" ({how})")
        if problem:
            problems.append(problem)
            continue
        if image_shape is None and (len(shape) != 4 or shape[3] != 3):
            problems.append(f"{path} has shape {shape}, expected (5·N, H, W, 3)")
            continue
        if shape[0] == 0:
            problems.append(f"{path} is empty (0 images): its splits would be empty")
        elif shape[0] % n_severities:
            problems.append(
                f"{path} has {shape[0]} images, not a multiple of {n_severities} severities"
            )
        elif labels_shape is not None and labels_shape[0] != shape[0]:
            problems.append(
                f"{root / 'labels.npy'} has {labels_shape[0]} labels but {path} has "
                f"{shape[0]} images (expected one label per row, N test labels repeated per "
                "severity)"
            )
    return problems


class MappedRows:
    """Rows start..stop of a memory-mapped .npy, opened on first use.

    Mapped pages count towards the process's resident memory until unmapped, and one
    severity of CIFAR-10-C is only 30 MB, so pages are handed back across readers: after
    every RELEASE_BYTES read by any reader, every open reader's mapping is told (madvise
    DONTNEED) that its pages can go; they are read again from the page cache if needed.
    Evaluating all 95 splits of CIFAR-10-C then needs no more memory than one
    (docs/benchmarks.md)."""

    _open: weakref.WeakSet[MappedRows] = weakref.WeakSet()
    _read_since_release = 0

    def __init__(self, path: Path, start: int, stop: int) -> None:
        self.path, self.start, self.stop = Path(path), int(start), int(stop)
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
            MappedRows._open.add(self)
        row = np.array(self._array[self.start + i])  # a copy: the page may be released
        MappedRows._read_since_release += row.nbytes
        if MappedRows._read_since_release >= RELEASE_BYTES:
            MappedRows.release_all()
        return row

    @classmethod
    def release_all(cls) -> None:
        cls._read_since_release = 0
        for rows in list(cls._open):
            rows.release()

    def release(self) -> None:
        raw = getattr(self._array, "_mmap", None)
        if raw is not None and hasattr(mmap, "MADV_DONTNEED"):
            raw.madvise(mmap.MADV_DONTNEED)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the file
        return {**self.__dict__, "_array": None}


def corruption_splits(
    root: str | Path,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    labels_dtype: Any = np.int64,
) -> dict[str, Split]:
    """One shift_test split per (corruption, severity) of a corruption folder, memory-mapped.
    Metadata: label, corruption, family, severity, source_index (row of the clean test
    split), corruption_source (released / generated)."""
    root = Path(root)
    marker = read_marker(root)
    file_severities = list(marker["severities"]) if marker else list(SEVERITIES)
    generated = marker is not None
    labels = np.load(root / "labels.npy", mmap_mode="r")
    splits = {}
    for corruption in corruptions:
        path = root / f"{corruption}.npy"
        total = npy_header(path)[0][0]
        n = total // len(file_severities)
        absent = sorted(set(severities) - set(file_severities))
        if absent:
            raise ValueError(f"{path} holds severities {file_severities}, not {absent}")
        for severity in severities:
            block = file_severities.index(severity)
            rows = MappedRows(path, block * n, (block + 1) * n)
            meta = pd.DataFrame(
                {
                    "label": np.asarray(labels[block * n : (block + 1) * n], dtype=labels_dtype),
                    "corruption": corruption,
                    "family": FAMILY_OF[corruption],
                    "severity": severity,
                    "source_index": np.arange(n),
                    "corruption_source": "generated" if generated else "released",
                }
            )
            info = {
                "corruption": corruption,
                "family": FAMILY_OF[corruption],
                "severity": severity,
                "corruption_source": "generated" if generated else "released",
                "folder": str(root),
            }
            if marker:
                info["generator"] = f"{marker['generator']}=={marker['version']}"
                info["severity_scale"] = marker["severity_scale"]
            name = split_name(corruption, severity, generated)
            splits[name] = Split(name, "shift_test", meta, rows.__getitem__, info=info)
    return splits


def folder_digest(root: Path, names: Sequence[str]) -> list[Any]:
    """What identifies a folder of arrays: the marker, and each file's name, size and sha256
    of all its bytes (harness.digests: read once per file, then remembered by path, size and
    mtime, so a skipped run does not read 2.9 GB again; any changed byte changes the key)."""
    from harness.digests import files_digest

    return [read_marker(root), *files_digest(root, names)]
