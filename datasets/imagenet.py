"""The ImageNet family of shift sets as presets of the folder adapter
(shiftbench_datasets.folders.ImageFolders; YAMLs conf/dataset/imagenet*.yaml), and writers of
tiny fixtures in each released layout.

| preset | layout under data_root | class map |
|---|---|---|
| imagenet (val + V2 + Sketch + C) | see the single ones below | WordNet ids, ImageNet-1k order |
| imagenet_val | `imagenet/val/<wnid>/*.JPEG` (the usual valprep layout) | imagenet |
| imagenet_v2 | `imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg` | integer: folder `i` is class i, read as a number |
| imagenet_sketch | `imagenet-sketch/sketch/<wnid>/*.JPEG` | imagenet |
| imagenet_r | `imagenet-r/<wnid>/*.jpg` (200 classes) | imagenet_r, mapped onto the 1000-class head |
| imagenet_a | `imagenet-a/<wnid>/*.jpg` (200 classes) | imagenet_a, mapped onto the 1000-class head |
| imagenet_c | `ImageNet-C/<corruption>/<severity>/<wnid>/*.JPEG` | imagenet |

The WordNet id lists come with timm (timm/data/_info/). For ImageNet-R/A an evaluation-only
run of a 1000-class model keeps the logits of the 200 classes (the benchmark's head_index):
predictions, softmax and every score are over those 200.
"""

from __future__ import annotations

from pathlib import Path

from shiftbench_datasets.folders import timm_synsets, write_class_folders, write_image

FOLDERS = {
    "val": "imagenet/val",
    "v2": "imagenetv2-matched-frequency-format-val",
    "sketch": "imagenet-sketch/sketch",
    "r": "imagenet-r",
    "a": "imagenet-a",
    "c": "ImageNet-C",
}
# ImageNet-1k indices the fixtures use: 2, 10 and 100 sort as text before 3 and 9, so a
# text sort of V2's folders would scramble them.
FIXTURE_CLASSES = (2, 3, 9, 10, 100)


def write_fixture(root: str | Path, which: str, per_class: int = 2, seed: int = 0) -> Path:
    """Tiny copy of one released layout under root (which: val, v2, sketch, r, a, c);
    returns the folder written."""
    root = Path(root)
    synsets = timm_synsets("imagenet")
    folder = root / FOLDERS[which]
    if which in ("val", "sketch"):
        write_class_folders(
            folder, [synsets[i] for i in FIXTURE_CLASSES], per_class, seed, suffix=".JPEG"
        )
    elif which == "v2":
        write_class_folders(folder, [str(i) for i in FIXTURE_CLASSES], per_class, seed, ".jpeg")
    elif which in ("r", "a"):
        subset = timm_synsets(f"imagenet_{which}")
        write_class_folders(folder, [subset[0], subset[7], subset[199]], per_class, seed)
        if which == "a":
            (folder / "README.txt").write_text("ImageNet-A: natural adversarial examples\n")
    elif which == "c":
        for corruption, severity in (("gaussian_noise", 1), ("gaussian_noise", 5), ("fog", 3)):
            write_class_folders(
                folder / corruption / str(severity),
                [synsets[i] for i in FIXTURE_CLASSES[:2]],
                per_class,
                seed + severity,
                suffix=".JPEG",
            )
    else:
        raise ValueError(f"which must be one of {sorted(FOLDERS)}")
    return folder


def write_ood_fixture(folder: str | Path, n: int = 3, seed: int = 0) -> list[Path]:
    """A folder of images in sub-folders (like Textures' images/<category>/), as OOD data."""
    paths = []
    for i in range(n):
        path = Path(folder) / f"category_{i % 2}" / f"img_{i}.jpg"
        write_image(path, seed + i)
        paths.append(path)
    return paths
