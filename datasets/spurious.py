"""Coloured digits: an embedded spurious-correlation benchmark with known groups, the offline
stand-in for Waterbirds / CelebA. No download: the digits are scikit-learn's 8×8 images.

The label is binary (digit < 5 vs >= 5). Each image gets a background colour (the spurious
attribute, red or green). In train and val (ID) the colour agrees with the label for a
`correlation` fraction of the examples; the minority groups (label ≠ colour) are the rest.
The test splits are `test_balanced` (colour independent of the label) and `test_reversed`
(colour agrees with the label for 1 − correlation). Groups are label × colour, so the
harness reports per-group and worst-group accuracy; majority vs minority accuracy gives
"accuracy on the curve".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data import Benchmark, DatasetAdapter, array_split, hash_arrays

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60)}
RENDER_VERSION = 1
SPLIT_ORDER = ("train", "val", "test_balanced", "test_reversed")


def colour_digits(images: np.ndarray, colour_ids: np.ndarray, scale: int) -> np.ndarray:
    """8×8 intensities (0..16) -> (8·scale)² RGB: the digit white over a coloured background."""
    ink = (images / 16.0)[..., None]  # N × 8 × 8 × 1
    palette = np.array(list(COLOURS.values()), dtype=np.float64)[colour_ids][:, None, None, :]
    rgb = palette * (1 - ink) + 255.0 * ink
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return rgb.repeat(scale, axis=1).repeat(scale, axis=2)


class ColouredDigits(DatasetAdapter):
    path_options = ()

    @classmethod
    def normalise_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        sizes = options["sizes"] or {
            "train": 1000,
            "val": 200,
            "test_balanced": 300,
            "test_reversed": 297,
        }
        return {**options, "sizes": dict(sizes)}

    def __init__(
        self,
        name: str = "coloured_digits",
        limit: int | None = None,
        correlation: float = 0.95,
        label_noise: float = 0.0,
        sizes: dict[str, int] | None = None,
        scale: int = 2,
        seed: int = 0,
        group_cols: list[str] | None = None,
    ) -> None:
        sizes = self.options["sizes"]
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"dataset.correlation must be in [0, 1], got {correlation}")
        if not 0.0 <= label_noise < 0.5:
            raise ValueError(f"dataset.label_noise must be in [0, 0.5), got {label_noise}")
        if set(sizes) != {"train", "val", "test_balanced", "test_reversed"}:
            raise ValueError(
                f"dataset.sizes needs train, val, test_balanced, test_reversed; got {sorted(sizes)}"
            )
        if sum(sizes.values()) > 1797:
            raise ValueError(f"dataset.sizes add up to {sum(sizes.values())}; the digits are 1797")
        self.correlation, self.label_noise = correlation, label_noise
        self.sizes, self.scale, self.seed = sizes, int(scale), int(seed)
        self.group_cols = list(group_cols if group_cols is not None else ["label", "colour"])

    def augmentation_refusals(self) -> dict[str, str]:
        return {
            "hflip": "a mirrored digit is not a digit (2 and 5 swap shapes)",
            "colour": "the background colour is the spurious attribute the benchmark measures",
        }

    def fingerprint(self) -> str:
        import sklearn

        return hash_arrays(self.key_config(), sklearn.__version__, RENDER_VERSION)

    def load(self, cache_dir: Path) -> Benchmark:
        from sklearn.datasets import load_digits

        digits = load_digits()
        rng = np.random.default_rng(self.seed)  # the benchmark's own seed, not the run's
        order = rng.permutation(len(digits.target))
        agreement = {
            "train": self.correlation,
            "val": self.correlation,
            "test_balanced": 0.5,
            "test_reversed": 1.0 - self.correlation,
        }
        roles = {
            "train": "train",
            "val": "val",
            "test_balanced": "shift_test",
            "test_reversed": "shift_test",
        }
        splits, start = {}, 0
        for name in SPLIT_ORDER:  # a fixed order: the key hashes sizes with sorted keys
            size = self.sizes[name]
            n = size if self.limit is None else min(size, self.limit)
            idx = order[start : start + n]
            start += size
            splits[name] = self._split(name, roles[name], digits, idx, agreement[name], rng)
        return Benchmark(
            name=self.name,
            classes=["digit<5", "digit>=5"],
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(8 * self.scale, 8 * self.scale),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            info={"correlation": self.correlation, "label_noise": self.label_noise},
        )

    def _split(
        self,
        name: str,
        role: str,
        digits: Any,
        idx: np.ndarray,
        agreement: float,
        rng: np.random.Generator,
    ):
        digit = digits.target[idx]
        label = (digit >= 5).astype(np.int64)
        if self.label_noise and role in ("train", "val"):
            flip = rng.random(len(idx)) < self.label_noise
            label = np.where(flip, 1 - label, label)
        # exactly round(agreement·n) examples get the colour of their label
        agree = np.zeros(len(idx), dtype=bool)
        agree[rng.permutation(len(idx))[: int(round(agreement * len(idx)))]] = True
        colour_id = np.where(agree, label, 1 - label)
        images = colour_digits(digits.images[idx], colour_id, self.scale)
        colour_names = np.array(list(COLOURS))[colour_id]
        meta = pd.DataFrame(
            {
                "label": label,
                "digit": digit,
                "colour": colour_names,
                "majority": agree,
                "source_index": idx,
            }
        )
        return array_split(name, role, images, meta, info={"colour_agreement": agreement})
