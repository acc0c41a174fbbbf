"""python -m harness.prepare corruptions dataset=NAME split=SPLIT out=FOLDER [corruptions=all]
[severities=[1,2,3,4,5]] [seed=0] [limit=N]: corrupted copies of one image split of any
benchmark, written in the CIFAR-10-C layout (`<corruption>.npy` severity-major, labels.npy)
with GENERATED.json, so that an adapter reading that layout (e.g. `dataset=cifar10
dataset.corruptions_root=FOLDER dataset.corruptions=all`) evaluates them as `gen-...` splits.

The corruptions come from imagecorruptions-imaug (ImageNet-C severities), seeded per
(corruption, severity); the split's images are held in memory while they are written.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import registry
from harness.registry import CONF_DIR

COMMANDS = ("corruptions",)


def split_arrays(split: Any) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split as one N × H × W × C uint8 array, and its labels."""
    images = [np.asarray(split.load_image(i)) for i in range(len(split))]
    images = [im.convert("RGB") if hasattr(im, "convert") else im for im in images]
    images = [np.asarray(im) for im in images]
    shapes = sorted({im.shape for im in images})
    if len(shapes) != 1:
        raise ValueError(
            f"split {split.name!r}: images of {len(shapes)} shapes ({shapes[:3]}...); the "
            "corruption layout needs one size: resize them first"
        )
    stacked = np.stack(images)
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    if stacked.dtype != np.uint8:
        raise ValueError(f"split {split.name!r}: images are {stacked.dtype}, expected uint8")
    return stacked, split.labels


def prepare_corruptions(c: dict[str, Any]) -> Path:
    # the generator is a plugin module named in conf/prepare.yaml: harness/ imports none
    C = importlib.import_module(c["generator"])
    out = Path(c["out"])
    if out.exists() and any(out.iterdir()) and not c.get("overwrite"):
        raise FileExistsError(
            f"out={out} exists and is not empty; choose another or overwrite=true"
        )
    corruptions = C.resolve_corruptions(c["corruptions"])
    severities = C.resolve_severities(c["severities"])
    adapter = registry.build("dataset", c["dataset"])
    adapter.check()
    bench = adapter.load(Path(c["cache_dir"]))
    if c["split"] not in bench.splits:
        raise ValueError(
            f"split={c['split']!r}: benchmark {bench.name!r} has splits {sorted(bench.splits)}"
        )
    split = bench.splits[c["split"]].limited(c.get("limit"))
    images, labels = split_arrays(split)
    source = {
        "dataset": bench.name,
        "split": split.name,
        "fingerprint": adapter.fingerprint(),
        "limit": c.get("limit"),
    }
    return C.write_corruption_set(out, images, labels, corruptions, severities, c["seed"], source)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("prepare", overrides=args[1:])
    # throw_on_missing: without out=, the set would be written to a folder named "???"
    c = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    out = prepare_corruptions(c)
    print(
        f"wrote {len(c['severities'])} severities of {c['corruptions']} corruptions of split "
        f"{c['split']!r} to {out} (generated: splits are named gen-<corruption>-<severity>)"
    )


if __name__ == "__main__":
    main()
