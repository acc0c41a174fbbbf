"""digits_c: an embedded corruption benchmark, no download. scikit-learn's 1,797 real 8×8
digits, upsampled to 32×32 RGB (bilinear), split into ID train / val / id_test; the
id_test images corrupted by imagecorruptions-imaug per family × severity (shift_test); and
OOD sets of natural-photo patches (crops of scikit-learn's two bundled sample photos) and
uniform noise.

A family split such as `gen-noise-3` holds every id_test image once, each corrupted by one
of the family's corruptions (assigned in turn, so the family's members are equally
represented), at severity 3; its metadata names the corruption of each row. The corrupted
images are generated (ImageNet-C severities, seeded per corruption and severity), labelled
`corruption_source=generated`, and cached under `<cache_dir>/digits_c/<key>/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from shiftbench_datasets import corruptions as C

from harness.data import Benchmark, DatasetAdapter, array_split, hash_arrays

RENDER_VERSION = 1
DEFAULT_FAMILIES = ("noise", "blur", "weather", "digital")


def upsample_digits(images: np.ndarray, size: int) -> np.ndarray:
    """8×8 intensities 0..16 -> size × size × 3 uint8 (white digit on black), bilinear."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        small = Image.fromarray(np.rint(image * (255 / 16)).astype(np.uint8))
        out[i] = np.asarray(small.resize((size, size), Image.BILINEAR))[:, :, None]
    return out


def photo_patches(n: int, size: int, seed: int) -> np.ndarray:
    """n random size × size crops of scikit-learn's bundled sample photos (china, flower)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        # crops of 4× the size, shrunk: whole objects rather than flat texture
        crop = 4 * size
        y = rng.integers(0, photo.shape[0] - crop)
        x = rng.integers(0, photo.shape[1] - crop)
        patch = Image.fromarray(photo[y : y + crop, x : x + crop])
        out[i] = np.asarray(patch.resize((size, size), Image.BILINEAR))
    return out


class DigitsC(DatasetAdapter):
    path_options = ()

    @classmethod
    def normalise_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        families, ood_sets = options["families"], options["ood_sets"]
        return {
            **options,
            "sizes": dict(options["sizes"] or {"train": 1000, "val": 300, "id_test": 497}),
            "families": list(families if families is not None else DEFAULT_FAMILIES),
            "severities": C.resolve_severities(options["severities"]),
            "ood_sets": dict(ood_sets if ood_sets is not None else {"photos": 500, "noise": 500}),
        }

    def __init__(
        self,
        name: str = "digits_c",
        limit: int | None = None,
        sizes: dict[str, int] | None = None,
        image_size: int = 32,
        families: list[str] | None = None,
        severities: list[int] | None = None,
        ood_sets: dict[str, int] | None = None,
        seed: int = 0,
        group_cols: list[str] | None = None,
    ) -> None:
        opts = self.options
        sizes, families = opts["sizes"], opts["families"]
        severities, ood_sets = opts["severities"], opts["ood_sets"]
        if set(sizes) != {"train", "val", "id_test"}:
            raise ValueError(f"dataset.sizes needs train, val, id_test; got {sorted(sizes)}")
        if sum(sizes.values()) > 1797:
            raise ValueError(f"dataset.sizes add up to {sum(sizes.values())}; the digits are 1797")
        unknown = [f for f in families if f not in C.FAMILIES]
        if unknown:
            raise ValueError(f"dataset.families: unknown {unknown}; known {sorted(C.FAMILIES)}")
        unknown = [k for k in ood_sets if k not in ("photos", "noise")]
        if unknown:
            raise ValueError(f"dataset.ood_sets: unknown {unknown}; known photos, noise")
        if image_size < 32:
            raise ValueError(
                f"dataset.image_size must be at least 32 (imagecorruptions), got {image_size}"
            )
        self.sizes, self.image_size = sizes, int(image_size)
        self.families, self.severities = families, severities
        self.ood_sets, self.seed = ood_sets, int(seed)
        self.group_cols = list(group_cols or [])

    def augmentation_refusals(self) -> dict[str, str]:
        return {"hflip": "a mirrored digit is not a digit (2 and 5 swap shapes)"}

    def fingerprint(self) -> str:
        import sklearn

        return hash_arrays(
            self.key_config(), sklearn.__version__, C.generator_version(), RENDER_VERSION
        )

    def _n(self, size: int) -> int:
        return size if self.limit is None else min(size, self.limit)

    def load(self, cache_dir: Path) -> Benchmark:
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(self.seed).permutation(len(digits.target))
        splits, start = {}, 0
        id_test = None
        for name in ("train", "val", "id_test"):  # fixed order: sizes are hashed sorted
            idx = order[start : start + self._n(self.sizes[name])]
            start += self.sizes[name]
            images = upsample_digits(digits.images[idx], self.image_size)
            meta = pd.DataFrame({"label": digits.target[idx].astype(np.int64), "source_index": idx})
            splits[name] = array_split(name, name, images, meta)
            if name == "id_test":
                id_test = (images, meta)
        splits.update(self._corrupted(id_test[0], id_test[1], Path(cache_dir)))
        for k, (name, size) in enumerate(sorted(self.ood_sets.items())):
            n = self._n(size)
            if name == "photos":
                images = photo_patches(n, self.image_size, self.seed + 1 + k)
            else:
                rng = np.random.default_rng(self.seed + 1 + k)
                images = rng.integers(0, 256, (n, self.image_size, self.image_size, 3), np.uint8)
            meta = pd.DataFrame({"label": np.full(n, -1, dtype=np.int64), "ood_source": name})
            splits[f"ood_{name}"] = array_split(f"ood_{name}", "ood", images, meta)
        return Benchmark(
            name=self.name,
            classes=[str(d) for d in range(10)],
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(self.image_size, self.image_size),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            info={"corruption_source": "generated", "generator": C.GENERATOR},
        )

    def _corrupted(self, images: np.ndarray, meta: pd.DataFrame, cache_dir: Path) -> dict:
        """One split per family × severity, generated once and cached (atomic files)."""
        from harness.store import atomic_save_npy

        folder = cache_dir / "digits_c" / self.fingerprint()[:16]
        splits = {}
        n = len(images)
        for family in self.families:
            members = C.FAMILIES[family]
            assigned = np.array([members[i % len(members)] for i in range(n)])
            for severity in self.severities:
                path = folder / f"{family}-{severity}.npy"
                if path.is_file():
                    corrupted = np.load(path, mmap_mode="r")
                else:
                    corrupted = np.empty((n, *images.shape[1:3], 3), dtype=np.uint8)
                    for corruption in members:
                        rows = np.flatnonzero(assigned == corruption)
                        if len(rows):
                            corrupted[rows] = C.corrupt_images(
                                images[rows], corruption, severity, self.seed
                            )
                    atomic_save_npy(path, corrupted)
                name = C.split_name(family, severity, generated=True)
                split_meta = meta.assign(
                    corruption=assigned,
                    family=family,
                    severity=severity,
                    corruption_source="generated",
                )
                info: dict[str, Any] = {
                    "family": family,
                    "severity": severity,
                    "corruption_source": "generated",
                    "generator": f"{C.GENERATOR}=={C.generator_version()}",
                    "severity_scale": "ImageNet-C's (imagecorruptions)",
                }
                splits[name] = array_split(name, "shift_test", corrupted, split_meta, info=info)
        return splits
