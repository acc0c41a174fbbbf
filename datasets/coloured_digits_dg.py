"""coloured_digits_dg: coloured digits in DomainBed's environment form (its ColoredMNIST,
Arjovsky et al. 2019's construction), embedded, no download, for leave-one-domain-out.

scikit-learn's 1,797 8×8 digits are shuffled (the benchmark's seed) and dealt in turn to the
environments (DomainBed: `images[i::n_environments]`). In each environment, as DomainBed's
`color_dataset`: the binary label is digit >= 5, flipped with probability `label_noise`
(DomainBed: 0.25, in every environment); the colour is the (noisy) label flipped with the
environment's probability e, so colour and label agree with probability 1 − e. An
environment is named by that agreement in percent with DomainBed's sign convention:
+90 (e = 0.1), +80 (e = 0.2), −90 (e = 0.9) are DomainBed's three. The digit is drawn in
red (colour 0) or green (colour 1) on black (DomainBed keeps the two colour channels of a
2-channel image; here RGB with the third channel 0), upsampled `scale` times.

Leave-one-domain-out as rotated_digits: the environments in `test_domains` are the
`shift_test` split `test`; every other one is split into train and val by
`holdout_fraction` (DomainBed's 0.2), seeded per environment, so an environment's rows,
noise and colours do not depend on which ones are held out. `domain` (the environment's
value) is the benchmark's domain column; groups are label × colour by default.

Differences from DomainBed: 8×8 scikit-learn digits (1,797) instead of MNIST (70,000),
drawn 16×16 RGB instead of 14×14 with 2 channels. The existing `coloured_digits` preset
(datasets/spurious.py, Waterbirds-like ID/test splits) is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shiftbench_datasets.rotated_digits import check_held_out_domains, int_domains

from harness.data import Benchmark, DatasetAdapter, array_split, hash_arrays

RENDER_VERSION = 1
DEFAULT_DOMAINS = (90, 80, -90)  # DomainBed's ColoredMNIST environments: +90%, +80%, -90%
DEFAULT_TEST_DOMAINS = (-90,)  # the one whose colour reverses: the spurious cue fails
INK = np.array([[255, 0, 0], [0, 255, 0]], dtype=np.float64)  # colour 0 red, 1 green


def agreement(domain: int) -> float:
    """P(colour = label) of an environment named +p (p/100) or −p (1 − p/100)."""
    return domain / 100 if domain > 0 else 1 + domain / 100


def _domains(value: Any, key: str) -> list[int]:
    out = int_domains(value, key, "environments")
    for v in out:
        if not 0 < abs(v) <= 100:
            raise ValueError(
                f"dataset.{key}: {v} is not an environment: +p or -p with 0 < p <= 100 "
                "(colour agrees with the label p% of the time, or 100 - p%)"
            )
    return out


def colour_ink(images: np.ndarray, colour_ids: np.ndarray, scale: int) -> np.ndarray:
    """8×8 intensities (0..16) -> (8·scale)² RGB uint8: the digit in its colour on black."""
    ink = (images / 16.0)[..., None]
    rgb = np.clip(np.rint(ink * INK[colour_ids][:, None, None, :]), 0, 255).astype(np.uint8)
    return rgb.repeat(scale, axis=1).repeat(scale, axis=2)


class ColouredDigitsDG(DatasetAdapter):
    path_options = ()

    @classmethod
    def normalise_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        domains = options["domains"]
        domains = _domains(DEFAULT_DOMAINS if domains is None else domains, "domains")
        test = options["test_domains"]
        test = _domains(DEFAULT_TEST_DOMAINS if test is None else test, "test_domains")
        groups = options["group_cols"]
        return {
            **options,
            "domains": domains,
            "test_domains": sorted(set(test)),  # the held-out set, not its spelling
            "group_cols": list(groups if groups is not None else ["label", "colour"]),
        }

    def __init__(
        self,
        name: str = "coloured_digits_dg",
        limit: int | None = None,
        domains: list[int] | None = None,
        test_domains: list[int] | None = None,
        holdout_fraction: float = 0.2,
        label_noise: float = 0.25,
        scale: int = 2,
        seed: int = 0,
        group_cols: list[str] | None = None,
    ) -> None:
        domains, test = self.options["domains"], self.options["test_domains"]
        check_held_out_domains(domains, test, holdout_fraction, "environments")
        if not 0.0 <= label_noise < 0.5:
            raise ValueError(f"dataset.label_noise must be in [0, 0.5), got {label_noise}")
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"dataset.scale must be an integer >= 1, got {scale!r}")
        self.domains, self.test_domains = domains, test
        self.holdout_fraction, self.label_noise = float(holdout_fraction), float(label_noise)
        self.scale, self.seed = scale, int(seed)
        self.group_cols = self.options["group_cols"]

    def augmentation_refusals(self) -> dict[str, str]:
        return {
            "hflip": "a mirrored digit is not a digit (2 and 5 swap shapes)",
            "colour": "the digit's colour is the spurious attribute the environments vary",
        }

    def fingerprint(self) -> str:
        import sklearn

        return hash_arrays(self.key_config(), sklearn.__version__, RENDER_VERSION)

    def domain_rows(self, n: int) -> dict[int, np.ndarray]:
        """The rows of scikit-learn's digits each environment holds (DomainBed's dealing)."""
        order = np.random.default_rng(self.seed).permutation(n)
        return {d: order[i :: len(self.domains)] for i, d in enumerate(self.domains)}

    def colour(self, digit: np.ndarray, domain: int, index: int) -> tuple[np.ndarray, ...]:
        """(noisy label, colour) of an environment's digits, DomainBed's color_dataset, from a
        generator seeded by the benchmark's seed and the environment's position alone."""
        rng = np.random.default_rng([self.seed, index, 1])
        label = (digit >= 5).astype(np.int64)
        label = np.where(rng.random(len(digit)) < self.label_noise, 1 - label, label)
        flip = rng.random(len(digit)) < 1 - agreement(domain)
        return label, np.where(flip, 1 - label, label)

    def load(self, cache_dir: Path) -> Benchmark:
        from sklearn.datasets import load_digits

        digits = load_digits()
        parts: dict[str, list[tuple[int, np.ndarray]]] = {"train": [], "val": [], "test": []}
        coloured = {}
        for i, (domain, rows) in enumerate(self.domain_rows(len(digits.target)).items()):
            label, colour = self.colour(digits.target[rows], domain, i)
            coloured.update(
                {int(r): (int(y), int(c)) for r, y, c in zip(rows, label, colour, strict=True)}
            )
            if domain in self.test_domains:
                parts["test"].append((domain, rows))
                continue
            rng = np.random.default_rng([self.seed, i])  # rotated_digits' holdout
            shuffled = rows[rng.permutation(len(rows))]
            n_val = int(len(rows) * self.holdout_fraction)
            parts["train"].append((domain, shuffled[n_val:]))
            parts["val"].append((domain, shuffled[:n_val]))
        roles = {"train": "train", "val": "val", "test": "shift_test"}
        splits = {
            name: self._split(name, roles[name], digits, parts[name], coloured) for name in roles
        }
        return Benchmark(
            name=self.name,
            classes=["digit<5", "digit>=5"],
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(8 * self.scale, 8 * self.scale),
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            info={
                "domains": self.domains,
                "test_domains": self.test_domains,
                "label_noise": self.label_noise,
            },  # fmt: skip
            domain_col="domain",
        )

    def _split(
        self,
        name: str,
        role: str,
        digits: Any,
        parts: list[tuple[int, np.ndarray]],
        coloured: dict[int, tuple[int, int]],
    ):
        rows = np.concatenate([rows for _, rows in parts])
        label = np.array([coloured[int(r)][0] for r in rows], dtype=np.int64)
        colour = np.array([coloured[int(r)][1] for r in rows], dtype=np.int64)
        meta = pd.DataFrame(
            {
                "label": label,
                "digit": digits.target[rows].astype(np.int64),
                "colour": np.array(["red", "green"])[colour],
                "domain": np.concatenate([np.full(len(r), d, np.int64) for d, r in parts]),
                "source_index": rows,
            }
        )
        images = colour_ink(digits.images[rows], colour, self.scale)
        return array_split(name, role, images, meta, info={"domains": [d for d, _ in parts]})
