"""CIFAR-10 / CIFAR-100 from the python pickle layout, with CIFAR-10-C / CIFAR-100-C
(released or generated corruption folders, memory-mapped) and CIFAR-10.1.

Layouts under `root` (by default `data_root`):
- `cifar-10-batches-py/`: data_batch_1..5, test_batch, batches.meta (python-2 pickles: dicts
  with b'data' N × 3072 uint8, channel-major R, G, B planes of 32×32, and b'labels').
- `cifar-100-python/`: train, test, meta (b'fine_labels', b'coarse_labels'; meta has
  b'fine_label_names').
- `CIFAR-10-C/` or `CIFAR-100-C/` (`corruptions_root`): see shiftbench_datasets.corruptions.
- `CIFAR-10.1/` (`cifar10_1_root`): `cifar10.1_<version>_data.npy` (N × 32 × 32 × 3 uint8)
  and `cifar10.1_<version>_labels.npy`; a natural-shift split when present.

The pickles are read here rather than by torchvision, whose CIFAR10 class refuses any file
whose md5 differs from the release's, and so refuses test fixtures.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shiftbench_datasets import corruptions as C

from harness.data import Benchmark, DatasetAdapter, array_split, hash_arrays

LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c_url": "https://zenodo.org/record/2535967 (CIFAR-10-C.tar)",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "c_url": "https://zenodo.org/record/3555552 (CIFAR-100-C.tar)",
    },
}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _get(d: dict, key: str) -> Any:
    """The release's pickles have bytes keys (python 2); accept str keys as well."""
    return d[key.encode()] if key.encode() in d else d[key]


def read_pickle(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def read_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images N × 32 × 32 × 3 uint8 and labels of the given pickled batches."""
    images, labels = [], []
    for name in files:
        path = folder / name
        try:
            batch = read_pickle(path)
            data = np.asarray(_get(batch, "data"), dtype=np.uint8)
            batch_labels = np.asarray(_get(batch, label_key), dtype=np.int64)
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError) as exc:
            raise ValueError(
                f"{path}: not a CIFAR python batch ({type(exc).__name__}: {exc})"
            ) from exc
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(batch_labels):
            raise ValueError(
                f"{path}: data has shape {data.shape} and {len(batch_labels)} labels; expected "
                "N × 3072 uint8 (R, G, B planes of 32×32) and N labels"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


class Cifar(DatasetAdapter):
    path_options = ("root", "corruptions_root", "cifar10_1_root")

    @classmethod
    def normalise_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Corruptions and severities as lists of names and numbers; the path options the
        existence check is not to see set to None: corruptions_root without corruptions, and
        a CIFAR-10.1 folder that is not there (it is optional, so it is skipped)."""
        variant = options["variant"]
        if variant not in LAYOUTS:
            raise ValueError(f"dataset.variant must be one of {sorted(LAYOUTS)}, got {variant!r}")
        corruptions = C.resolve_corruptions(options["corruptions"])
        c10_1 = options["cifar10_1_root"]
        return {
            **options,
            "corruptions_root": options["corruptions_root"] if corruptions else None,
            "corruptions": corruptions,
            "severities": C.resolve_severities(options["severities"]),
            "cifar10_1_root": c10_1 if c10_1 and Path(c10_1).exists() else None,
        }

    def __init__(
        self,
        name: str = "cifar10",
        limit: int | None = None,
        variant: str = "cifar10",
        root: str = "data",
        corruptions_root: str | None = None,
        corruptions: str | list[str] | None = None,
        severities: list[int] | None = None,
        cifar10_1_root: str | None = None,
        cifar10_1_version: str = "v6",
        val_size: int = 5000,
        with_train: bool = True,
        seed: int = 0,
        group_cols: list[str] | None = None,
    ) -> None:
        self.corruption_names = self.options["corruptions"]
        self.severities = self.options["severities"]
        c10_1 = self.options["cifar10_1_root"]
        self.layout = LAYOUTS[variant]
        self.variant, self.root = variant, Path(root)
        self.folder = self.root / self.layout["folder"]
        self.corruptions_root = Path(corruptions_root) if corruptions_root else None
        if self.corruption_names and self.corruptions_root is None:
            raise ValueError("dataset.corruptions is set but dataset.corruptions_root is not")
        self.cifar10_1 = Path(c10_1) if c10_1 else None
        self.cifar10_1_version = cifar10_1_version
        self.val_size, self.with_train, self.seed = int(val_size), bool(with_train), int(seed)
        self.group_cols = list(group_cols or [])

    # ------------------------------------------------------------ checks and key

    def _how(self) -> str:
        return f"download {self.layout['url']} and extract it into {self.root}"

    def _batch_files(self) -> list[str]:
        train = self.layout["train"] if self.with_train else []
        return [*train, *self.layout["test"], self.layout["meta"]]

    def verify(self) -> list[str]:
        problems = [
            f"{p}; download {self.layout['c_url']}"
            if "corruptions_root" in p
            else f"{p}; {self._how()}"
            for p in super().verify()
        ]
        if problems:
            return problems
        if not self.folder.is_dir():
            problems.append(
                f"{self.folder} is missing: expected the CIFAR python pickles "
                f"({', '.join(self._batch_files())}; {self._how()})"
            )
        else:
            for name in self._batch_files():
                if not (self.folder / name).is_file():
                    problems.append(f"{self.folder / name} is missing ({self._how()})")
        if self.corruption_names:
            problems += C.corruption_set_problems(
                self.corruptions_root,
                self.corruption_names,
                (32, 32, 3),
                f"download {self.layout['c_url']} or generate one with "
                "`python -m harness.prepare corruptions`",
                self.severities,
            )
        if self.cifar10_1 is not None:
            for kind, tail, dtype in (("data", (32, 32, 3), np.uint8), ("labels", (), None)):
                path = self.cifar10_1 / f"cifar10.1_{self.cifar10_1_version}_{kind}.npy"
                problem, _ = C.npy_problem(path, tail, dtype, " (CIFAR-10.1 npy layout)")
                if problem:
                    problems.append(problem)
        return problems

    def fingerprint(self) -> str:
        parts: list[Any] = [self.key_config()]
        parts.append(C.folder_digest(self.folder, self._batch_files()))
        if self.corruption_names:
            parts.append(
                C.folder_digest(
                    self.corruptions_root,
                    ["labels.npy", *(f"{c}.npy" for c in self.corruption_names)],
                )
            )
        if self.cifar10_1 is not None:
            v = self.cifar10_1_version
            parts.append(
                C.folder_digest(
                    self.cifar10_1, [f"cifar10.1_{v}_data.npy", f"cifar10.1_{v}_labels.npy"]
                )
            )
        return hash_arrays(*parts)

    # ------------------------------------------------------------ loading

    def classes(self) -> list[str]:
        meta = read_pickle(self.folder / self.layout["meta"])
        return [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in _get(meta, self.layout["names_key"])
        ]

    def load(self, cache_dir: Path) -> Benchmark:
        label_key = self.layout["label_key"]
        splits = {}
        if self.with_train:
            images, labels = read_batches(self.folder, self.layout["train"], label_key)
            order = np.random.default_rng(self.seed).permutation(len(labels))
            val_idx, train_idx = np.sort(order[: self.val_size]), np.sort(order[self.val_size :])
            for name, idx in (("train", train_idx), ("val", val_idx)):
                meta = pd.DataFrame({"label": labels[idx], "source_index": idx})
                splits[name] = array_split(name, name, images[idx], meta)
        images, labels = read_batches(self.folder, self.layout["test"], label_key)
        splits["test"] = array_split(
            "test",
            "id_test",
            images,
            pd.DataFrame({"label": labels, "source_index": np.arange(len(labels))}),
        )
        if self.cifar10_1 is not None:
            v = self.cifar10_1_version
            data = np.load(self.cifar10_1 / f"cifar10.1_{v}_data.npy", mmap_mode="r")
            c_labels = np.load(self.cifar10_1 / f"cifar10.1_{v}_labels.npy").astype(np.int64)
            meta = pd.DataFrame({"label": c_labels, "source_index": np.arange(len(c_labels))})
            splits["cifar10_1"] = array_split(
                "cifar10_1", "shift_test", data, meta, info={"shift": f"CIFAR-10.1 {v}"}
            )
        if self.corruption_names:
            splits.update(
                C.corruption_splits(self.corruptions_root, self.corruption_names, self.severities)
            )
        return Benchmark(
            name=self.name,
            classes=self.classes(),
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(32, 32),
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            info={"variant": self.variant},
        )


# ---------------------------------------------------------------- fixtures


def _batch(images: np.ndarray, labels: np.ndarray, label_key: str, name: str) -> dict:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": name.encode(),
        label_key.encode(): [int(x) for x in labels],
        b"data": np.ascontiguousarray(data, dtype=np.uint8),
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(images))],
    }
    if label_key == "fine_labels":
        batch[b"coarse_labels"] = [int(x) // 5 for x in labels]
    return batch


def fixture_images(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable tiny images: class k is a horizontal gradient of brightness k plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    base = (labels[:, None, None, None] + 0.5) * (255 / num_classes)
    ramp = np.linspace(-40, 40, 32)[None, None, :, None]
    images = np.clip(base + ramp + rng.normal(0, 10, (n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return images, labels


def write_fixture(
    root: str | Path,
    variant: str = "cifar10",
    per_batch: int = 8,
    test_size: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """A tiny CIFAR-10 / CIFAR-100 in the python pickle layout (protocol 2, bytes keys, as
    released). Returns {'folder', 'train': (images, labels), 'test': (images, labels)}."""
    layout = LAYOUTS[variant]
    num_classes = 10 if variant == "cifar10" else 100
    folder = Path(root) / layout["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    label_key = layout["label_key"]
    written: dict[str, Any] = {"folder": folder}
    train_parts = []
    for k, name in enumerate(layout["train"]):
        size = per_batch * (5 if variant == "cifar100" else 1)
        images, labels = fixture_images(size, num_classes, seed + k)
        train_parts.append((images, labels))
        with (folder / name).open("wb") as f:
            pickle.dump(_batch(images, labels, label_key, name), f, protocol=2)
    written["train"] = tuple(np.concatenate(p) for p in zip(*train_parts, strict=True))
    images, labels = fixture_images(test_size, num_classes, seed + 100)
    with (folder / layout["test"][0]).open("wb") as f:
        pickle.dump(_batch(images, labels, label_key, layout["test"][0]), f, protocol=2)
    written["test"] = (images, labels)
    names = [f"class_{i}".encode() for i in range(num_classes)]
    if variant == "cifar10":
        meta = {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    else:
        meta = {
            b"fine_label_names": names,
            b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
        }
    with (folder / layout["meta"]).open("wb") as f:
        pickle.dump(meta, f, protocol=2)
    return written


def write_c_fixture(
    root: str | Path,
    test: tuple[np.ndarray, np.ndarray],
    corruptions: list[str] | str = "all",
    seed: int = 0,
) -> Path:
    """A CIFAR-10-C-style folder in the released layout (no GENERATED.json, as the
    release): severity s of image i is the clean image with its brightness shifted by s
    and noise, row (s − 1)·N + i, so tests can tell severities and rows apart."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images, labels = test
    n = len(labels)
    np.save(root / "labels.npy", np.tile(labels.astype(np.uint8), 5))
    rng = np.random.default_rng(seed)
    for corruption in C.resolve_corruptions(corruptions):
        blocks = [
            np.clip(images.astype(np.int16) - 20 * s + rng.integers(-3, 4, images.shape), 0, 255)
            for s in C.SEVERITIES
        ]
        array = np.concatenate(blocks).astype(np.uint8)
        array[:, 0, 0, 0] = np.repeat(np.arange(1, 6), n)  # pixel (0,0,R) tags the severity
        np.save(root / f"{corruption}.npy", array)
    return root


def write_cifar10_1_fixture(
    root: str | Path, n: int = 6, version: str = "v6", seed: int = 7
) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    images, labels = fixture_images(n, 10, seed)
    np.save(root / f"cifar10.1_{version}_data.npy", images)
    np.save(root / f"cifar10.1_{version}_labels.npy", labels.astype(np.int64))
    return root
