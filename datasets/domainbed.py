"""Domain folders in DomainBed's layout, `<root>/<domain>/<class>/<image>` (PACS, VLCS,
OfficeHome, TerraIncognita, DomainNet as DomainBed's download script leaves them; presets in
conf/dataset/{pacs,vlcs,office_home,terra_incognita,domain_net}.yaml).

Leave-one-domain-out, as rotated_digits does it: the domains in `test_domains` (folder
names) are held out as one `shift_test` split (`test`); every other domain is split into
train and validation by `holdout_fraction` (DomainBed's 0.2: int(n × fraction) images of the
domain to validation), seeded by (the benchmark's `seed`, the domain's position in `domains`),
so a domain's split does not depend on which domains are held out. The pooled training parts
are the `train` split, the pooled validation parts the `val` split (DomainBed's
training-domain validation set). Every row carries its domain (the folder name) in the
`domain` column: the default group column and the benchmark's domain column (the `domain`
of training batches, DomainBed's environments). The seeded permutation is numpy's, not
DomainBed's (`misc.split_dataset` with a hashed seed): the same fraction, other images.

Classes: `classes` lists the class folders in label order. DomainBed reads each domain with
torchvision's ImageFolder, whose labels are the class folders sorted as text; the presets
list them in that order (tested), so label ids match DomainBed's. `classes: sorted` takes
that order from the folders themselves (the union over the domains): the preset of
DomainNet (345 classes) does so. Every class folder of every domain must be a listed class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from shiftbench_datasets.folders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassMap,
    class_rows,
    image_split,
)
from shiftbench_datasets.rotated_digits import check_held_out_domains

from harness.data import Benchmark, DatasetAdapter, hash_arrays, listing_digest


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"dataset.{key} must be a list of folder names, got {value!r}")
    return [str(v) for v in value]


class DomainFolders(DatasetAdapter):
    path_options = ("root",)
    key_exclude = ("how",)  # a hint for the error message (where to get the data), not data

    @classmethod
    def normalise_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        domains = _names(options["domains"] or [], "domains")
        test = options["test_domains"]
        test = _names(domains[:1] if test is None else test, "test_domains")
        groups = options["group_cols"]
        # the held-out set, not its spelling, is the setting: [S, A] and [A, S] are one run
        return {
            **options,
            "domains": domains,
            "test_domains": sorted(set(test)),
            "group_cols": list(groups if groups is not None else ["domain"]),
        }

    def __init__(
        self,
        name: str = "domainbed",
        limit: int | None = None,
        root: str = "data/domainbed",
        domains: list[str] | None = None,
        test_domains: list[str] | None = None,
        classes: Any = "sorted",
        holdout_fraction: float = 0.2,
        seed: int = 0,
        image_size: int = 224,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        how: str = "",
        group_cols: list[str] | None = None,
    ) -> None:
        domains, test = self.options["domains"], self.options["test_domains"]
        check_held_out_domains(domains, test, holdout_fraction, "folders")
        if classes != "sorted":
            classes = _names(classes, "classes")
            if classes != sorted(classes):
                # labels are DomainBed's (ImageFolder's sorted folders) or they are not comparable
                raise ValueError(
                    "dataset.classes must list the class folders sorted as text (ImageFolder's "
                    f"order, DomainBed's labels), got {classes[:5]}..."
                )
        self.root, self.domains, self.test_domains = Path(root), domains, test
        self.classes = classes
        self.holdout_fraction, self.seed = float(holdout_fraction), int(seed)
        self.image_size = int(image_size)
        self.mean, self.std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
        self.how = how or "DomainBed's layout <root>/<domain>/<class>/<image>; docs/datasets.md"
        self.group_cols = self.options["group_cols"]

    def class_map(self) -> ClassMap:
        if self.classes != "sorted":
            return ClassMap(list(self.classes))
        found = {
            p.name
            for d in self.domains
            if (self.root / d).is_dir()
            for p in (self.root / d).iterdir()
            if p.is_dir()
        }
        return ClassMap(sorted(found))

    def verify(self) -> list[str]:
        problems = super().verify()
        if problems:
            return [f"{p}; expected {self.how}" for p in problems]
        class_map = self.class_map()
        for domain in self.domains:
            folder = self.root / domain
            if not folder.is_dir():
                present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
                problems.append(
                    f"{folder} is missing (domain {domain!r} of dataset {self.name!r}; folders "
                    f"present: {present}; {self.how})"
                )
                continue
            rows, unknown = class_rows(folder, class_map)
            if unknown:
                problems.append(
                    f"{folder}: class folders {unknown[:5]} are not in dataset.classes "
                    f"({len(class_map.names)} classes, e.g. {class_map.names[:3]})"
                )
            elif rows.empty:
                problems.append(f"{folder} has no images in class folders (domain {domain!r})")
        return problems

    def fingerprint(self) -> str:
        listings = [listing_digest(self.root / d) for d in self.domains]
        return hash_arrays(self.key_config(), self.class_map().names, *listings)

    def holdout(self, n: int, domain_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(train positions, validation positions) of a training domain's n images: a seeded
        holdout, the seed a function of the benchmark's seed and the domain's position only."""
        order = np.random.default_rng([self.seed, domain_index]).permutation(n)
        n_val = int(n * self.holdout_fraction)  # DomainBed: int(len(env) * holdout_fraction)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def load(self, cache_dir: Path) -> Benchmark:
        class_map = self.class_map()
        parts: dict[str, list[pd.DataFrame]] = {"train": [], "val": [], "test": []}
        for i, domain in enumerate(self.domains):
            rows, unknown = class_rows(self.root / domain, class_map)
            if unknown:
                raise ValueError(
                    f"{self.root / domain}: class folders {unknown[:5]} not in dataset.classes"
                )
            rows = rows.assign(domain=domain)
            if domain in self.test_domains:
                parts["test"].append(rows)
            else:
                train, val = self.holdout(len(rows), i)
                parts["train"].append(rows.iloc[train])
                parts["val"].append(rows.iloc[val])
        roles = {"train": "train", "val": "val", "test": "shift_test"}
        splits = {}
        for split, role in roles.items():
            meta = pd.concat(parts[split], ignore_index=True)
            info = {"domains": sorted(set(meta["domain"])), "root": str(self.root)}
            splits[split] = image_split(split, role, meta, info)
        return Benchmark(
            name=self.name,
            classes=class_map.names,
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(self.image_size, self.image_size),
            mean=self.mean,
            std=self.std,
            info={"domains": self.domains, "test_domains": self.test_domains},
            domain_col="domain",
        )
