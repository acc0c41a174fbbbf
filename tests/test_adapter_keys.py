"""Pins every dataset adapter's key_config(): the part of the run key an adapter contributes.

Each conf/dataset/*.yaml is composed with Hydra, with its default options, and its adapter
is constructed without loading data (constructing reads no files). The expected values are
in tests/golden/adapter_keys.json; regenerate them only on purpose
(`SHIFTBENCH_UPDATE_GOLDEN=1 pytest tests/test_adapter_keys.py`), since a moved key makes
every finished run of that dataset unrecognised.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from harness import registry
from harness.data import DatasetAdapter, hash_arrays
from harness.run import build_dataset
from tests.conftest import CONF, compose_config

GOLDEN = Path(__file__).parent / "golden" / "adapter_keys.json"
# A data_root that does not exist: paths are not in the key, so the pinned values do not
# depend on it, and no adapter finds optional folders (CIFAR-10.1) there.
DATA_ROOT = "/nonexistent/shiftbench-data"

# Options a preset needs before it can be constructed (folders.yaml has no class map).
NEEDS = {"folders": ["dataset.class_map=[cat,dog]"]}
# Non-default variants whose key handling differs (excluded paths set, OOD sets attached).
VARIANTS = {
    "metashift+candidate_subsets": (
        "metashift",
        ["dataset.candidate_subsets=/nonexistent/full-candidate-subsets.pkl"],
    ),
    "cifar10+no_cifar10_1": ("cifar10", ["dataset.cifar10_1_root=null"]),
    "cifar10+corruptions_common": ("cifar10", ["dataset.corruptions=common"]),
    "digits_c+ood_sets": ("digits_c", ["ood_sets=[/nonexistent/photos]"]),
    "maze+ood_sets": ("maze", ["ood_sets=[{name: mine, root: /nonexistent/mine}]"]),
}


def _key(dataset: str, overrides: list[str]) -> dict[str, Any]:
    cfg = compose_config(
        [f"dataset={dataset}", f"data_root={DATA_ROOT}", *NEEDS.get(dataset, []), *overrides]
    )
    c = OmegaConf.to_container(cfg, resolve=True)
    adapter = build_dataset(c) if c.get("ood_sets") else registry.build("dataset", c["dataset"])
    return adapter.key_config()


# Constructed directly with the constructor's own defaults (what a YAML leaves out).
MAZE_SPLITS = {"train": {"role": "train", "generator": "gen_dfs", "grid_n": 3, "n": 4, "seed": 1}}
DIRECT = {
    "direct:MazeShift": ("maze.MazeShift", {"splits": MAZE_SPLITS, "thresholds": [2]}),
    "direct:ColouredDigits": ("spurious.ColouredDigits", {}),
    "direct:DigitsC": ("digits_c.DigitsC", {}),
    "direct:RotatedDigits": ("rotated_digits.RotatedDigits", {}),
    "direct:Cifar": ("cifar.Cifar", {}),
    "direct:Wilds": ("wilds.Wilds", {}),
    "direct:MetaShift": ("metashift.MetaShift", {}),
    "direct:ImageFolders": (
        "folders.ImageFolders",
        {"splits": {"t": {"path": "t", "role": "id_test"}}, "class_map": ["a", "b"]},
    ),
    "direct:OODFolder": ("folders.OODFolder", {"root": "/nonexistent/some_folder"}),
}


def _direct(target: str, options: dict[str, Any]) -> dict[str, Any]:
    cls = registry.resolve_target("dataset", {"_target_": f"shiftbench_datasets.{target}"})
    return cls(**options).key_config()


def _observed() -> dict[str, Any]:
    keys = {p.stem: _key(p.stem, []) for p in sorted((CONF / "dataset").glob("*.yaml"))}
    keys.update({case: _key(ds, ov) for case, (ds, ov) in VARIANTS.items()})
    keys.update({case: _direct(target, ov) for case, (target, ov) in DIRECT.items()})
    return keys


def test_every_adapter_key_config_is_pinned():
    observed = _observed()
    if os.environ.get("SHIFTBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(observed, indent=1) + "\n")
    pinned = json.loads(GOLDEN.read_text())
    assert sorted(observed) == sorted(pinned), "adapters added or removed: update the golden file"
    # Byte for byte, key order included (json.loads keeps the file's order).
    moved = {
        name: (observed[name], pinned[name])
        for name in pinned
        if json.dumps(observed[name]) != json.dumps(pinned[name])
    }
    assert not moved, f"key_config moved (observed, pinned): {moved}"


# ------------------------------------------------------------ options enter the key by themselves


class Toy(DatasetAdapter):
    """A new adapter: its constructor never repeats an option into the base class."""

    path_options = ("root",)
    key_exclude = ("hint",)  # declared: not data

    def __init__(
        self,
        name: str = "toy",
        limit: int | None = None,
        root: str = "data/toy",
        brightness: float = 0.5,
        hint: str = "",
    ) -> None:
        self.brightness = brightness

    def fingerprint(self) -> str:
        return hash_arrays(self.key_config())


class ToyWithContrast(Toy):
    """A later option added in a subclass: in the key, also without repeating it."""

    def __init__(self, contrast: int = 3, **options: Any) -> None:
        super().__init__(**options)
        self.contrast = contrast


def test_a_new_constructor_option_is_in_the_key_without_repetition():
    toy = Toy(brightness=0.7, root="/somewhere", hint="ask")
    assert toy.key_config() == {"name": "toy", "limit": None, "brightness": 0.7}
    assert toy.options["root"] == "/somewhere"  # recorded, checked by verify(), not keyed
    assert Toy().key_config() == {"name": "toy", "limit": None, "brightness": 0.5}  # defaults
    assert Toy(limit=5).fingerprint() != Toy().fingerprint()

    sub = ToyWithContrast(contrast=4, brightness=0.1, name="toy2")
    assert sub.key_config() == {"name": "toy2", "limit": None, "contrast": 4, "brightness": 0.1}
    # What the subclass forwards is bound to Toy's signature: Toy's defaults are recorded too.
    assert ToyWithContrast().key_config() == {
        "name": "toy",
        "limit": None,
        "contrast": 3,
        "brightness": 0.5,
    }
    assert ToyWithContrast().options["root"] == "data/toy"
    assert sub.brightness == 0.1 and sub.contrast == 4


def test_a_bad_limit_is_refused_by_every_adapter():
    with pytest.raises(ValueError, match="dataset.limit"):
        Toy(limit=0)
