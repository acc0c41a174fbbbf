"""rotated_digits: an embedded domain-generalisation benchmark in DomainBed's RotatedMNIST
form, no download. scikit-learn's 1,797 real 8×8 digits are shuffled (the benchmark's seed)
and dealt in turn to the rotation domains (DomainBed: `images[i::n_domains]` for domain i),
so every domain holds different digits; each image is upsampled into an `image_size` frame (bilinear,
MNIST's proportions) and rotated by its domain's angle (bilinear, black fill), as DomainBed rotates MNIST.

Leave-one-domain-out: the domains in `test_domains` are held out as one `shift_test` split
(`test`); every other domain is split into train and validation by `holdout_fraction`
(DomainBed's 0.2), seeded per domain, so a domain's split does not depend on which domains
are held out. The pooled training parts are the `train` split, the pooled held-out parts
the `val` split (DomainBed's training-domain validation set). Every row carries its domain
(the angle) in the `domain` column, which is also the default group column (per-domain and
worst-domain accuracy) and the benchmark's domain column (the `domain` of training batches,
trainer.domain_sampler).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from harness.data import Benchmark, DatasetAdapter, array_split, hash_arrays

RENDER_VERSION = 1
DEFAULT_DOMAINS = (0, 15, 30, 45, 60, 75)  # DomainBed's RotatedMNIST angles
DEFAULT_TEST_DOMAINS = (75,)  # the furthest rotation: extrapolation


def rotated_digits(images: np.ndarray, angle: float, size: int) -> np.ndarray:
    """8×8 intensities 0..16 -> size × size × 3 uint8 (white digit on black): upsampled to
    MNIST's proportions (a 20-pixel digit centred in 28, so no rotation cuts a corner off),
    then rotated counter-clockwise by `angle` degrees about the centre."""
    inner = max(1, round(size * 20 / 28))
    offset = (size - inner) // 2
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        small = Image.fromarray(np.rint(image * (255 / 16)).astype(np.uint8))
        frame = Image.new("L", (size, size), 0)
        frame.paste(small.resize((inner, inner), Image.BILINEAR), (offset, offset))
        turned = frame.rotate(angle, resample=Image.BILINEAR, fillcolor=0)
        out[i] = np.asarray(turned)[:, :, None]
    return out


def int_domains(value: Any, key: str, what: str = "angles") -> list[int]:
    """dataset.<key> as a list of integer domain names (angles here; coloured_digits_dg's
    environments too), refused naming the key when it is not one."""
    if isinstance(value, int | float | str) or not hasattr(value, "__iter__"):
        raise ValueError(f"dataset.{key} must be a list of {what}, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
            raise ValueError(f"dataset.{key} must be a list of integer {what}, got {value!r}")
        out.append(int(v))
    return out


class RotatedDigits(DatasetAdapter):
    path_options = ()

    @classmethod
    def normalise_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        domains = options["domains"]
        domains = int_domains(DEFAULT_DOMAINS if domains is None else domains, "domains")
        test = options["test_domains"]
        test = int_domains(DEFAULT_TEST_DOMAINS if test is None else test, "test_domains")
        # the held-out set, not its spelling, is the setting: [75, 0] and [0, 75] are one run
        groups = options["group_cols"]
        return {
            **options,
            "domains": domains,
            "test_domains": sorted(set(test)),
            "group_cols": list(groups if groups is not None else ["domain"]),
        }

    def __init__(
        self,
        name: str = "rotated_digits",
        limit: int | None = None,
        domains: list[int] | None = None,
        test_domains: list[int] | None = None,
        holdout_fraction: float = 0.2,
        image_size: int = 28,
        seed: int = 0,
        group_cols: list[str] | None = None,
    ) -> None:
        domains, test = self.options["domains"], self.options["test_domains"]
        check_held_out_domains(domains, test, holdout_fraction, "angles")
        if image_size < 8:
            raise ValueError(f"dataset.image_size must be at least 8, got {image_size}")
        self.domains, self.test_domains = domains, test
        self.holdout_fraction, self.image_size = float(holdout_fraction), int(image_size)
        self.seed = int(seed)
        self.group_cols = self.options["group_cols"]

    def augmentation_refusals(self) -> dict[str, str]:
        return {
            "hflip": "a mirrored digit is not a digit (2 and 5 swap shapes)",
            "geometric": "rotation is the domain shift the benchmark measures",
        }

    def fingerprint(self) -> str:
        import PIL
        import sklearn

        return hash_arrays(self.key_config(), sklearn.__version__, PIL.__version__, RENDER_VERSION)

    def domain_rows(self, n: int) -> dict[int, np.ndarray]:
        """The rows of scikit-learn's digits that each domain holds (DomainBed's dealing)."""
        order = np.random.default_rng(self.seed).permutation(n)
        return {d: order[i :: len(self.domains)] for i, d in enumerate(self.domains)}

    def holdout(self, rows: np.ndarray, domain_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, validation rows) of one training domain: a seeded holdout, the seed
        a function of the benchmark's seed and the domain's position only."""
        rng = np.random.default_rng([self.seed, domain_index])
        shuffled = rows[rng.permutation(len(rows))]
        n_val = int(len(rows) * self.holdout_fraction)  # DomainBed: int(len(env) * fraction)
        return shuffled[n_val:], shuffled[:n_val]

    def load(self, cache_dir: Path) -> Benchmark:
        from sklearn.datasets import load_digits

        digits = load_digits()
        parts: dict[str, list[tuple[int, np.ndarray]]] = {"train": [], "val": [], "test": []}
        for i, (domain, rows) in enumerate(self.domain_rows(len(digits.target)).items()):
            if domain in self.test_domains:
                parts["test"].append((domain, rows))
            else:
                train, val = self.holdout(rows, i)
                parts["train"].append((domain, train))
                parts["val"].append((domain, val))
        roles = {"train": "train", "val": "val", "test": "shift_test"}
        splits = {name: self._split(name, roles[name], digits, parts[name]) for name in roles}
        return Benchmark(
            name=self.name,
            classes=[str(d) for d in range(10)],
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(self.image_size, self.image_size),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            info={"domains": self.domains, "test_domains": self.test_domains},
            domain_col="domain",
        )

    def _split(self, name: str, role: str, digits: Any, parts: list[tuple[int, np.ndarray]]):
        images = np.concatenate(
            [rotated_digits(digits.images[rows], d, self.image_size) for d, rows in parts]
        )
        rows = np.concatenate([rows for _, rows in parts])
        meta = pd.DataFrame(
            {
                "label": digits.target[rows].astype(np.int64),
                "domain": np.concatenate([np.full(len(r), d, np.int64) for d, r in parts]),
                "source_index": rows,
            }
        )
        info = {"domains": [d for d, _ in parts]}
        return array_split(name, role, images, meta, info=info)


def check_held_out_domains(
    domains: list, test_domains: list, holdout_fraction: float, unit: str
) -> None:
    """The leave-domains-out options every domain adapter shares (this one and the DomainBed
    folders), each bad value a ValueError naming its key."""
    if len(set(domains)) != len(domains) or len(domains) < 2:
        raise ValueError(f"dataset.domains must be 2 or more distinct {unit}, got {domains}")
    unknown = [d for d in test_domains if d not in domains]
    if unknown:
        raise ValueError(f"dataset.test_domains: {unknown} not among dataset.domains={domains}")
    if not test_domains or len(test_domains) >= len(domains):
        raise ValueError(
            f"dataset.test_domains must hold out at least one and leave at least one of "
            f"dataset.domains={domains} for training, got {test_domains}"
        )
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"dataset.holdout_fraction must be in (0, 1), got {holdout_fraction}")
