"""Image folders for user data: class-per-folder splits with an explicit class map, folders of
images as OOD sets, and ImageNet-C-style corruption folders.

Never the sorted folder names by accident (torchvision's ImageFolder sorts class folders as
text, so ImageNet-V2's `0..999` would come out as 0, 1, 10, 100, ...): the class map says
which folder is which label, as one of
- `imagenet`: the 1,000 WordNet ids of ImageNet-1k in the standard order (timm's list);
  `imagenet_r` / `imagenet_a`: the 200 WordNet ids of ImageNet-R / ImageNet-A;
- `integer`: folder names are the labels (`0`..`num_classes-1`, read as numbers);
- a list of folder names in label order (in the YAML);
- a mapping file: `.json` (a list in label order, or {folder: label}), or text with one
  folder per line (line order = label) or `folder label` per line.
A class folder not in the map is an error naming it.

With `head: imagenet`, classes that are WordNet ids are also mapped onto ImageNet-1k's 1,000
outputs: an evaluation-only run of a 1,000-class model then keeps only those logits (the
logit mask of ImageNet-R/A's 200 classes).

Split layouts (`splits: {name: {path, role, layout}}`, paths relative to `root`):
- `classes` (default): `<path>/<class folder>/**/<image>`;
- `flat`: every image below `<path>`, no labels (role ood or unlabeled);
- `corruptions`: `<path>/<corruption>/<severity>/<class folder>/<image>` (ImageNet-C): one
  shift_test split per corruption and severity, named `<corruption>-<severity>`;
- `openood_list`: the images OpenOOD's list `image_list` names (relative to `root`), with its
  labels; `path` is the images' root (OpenOOD's images_largescale/). With list splits
  `class_map` stays null: the classes come from the lists (shiftbench_datasets/openood_lists.py).
"""

from __future__ import annotations

import hashlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from shiftbench_datasets import corruptions as C
from shiftbench_datasets.openood_lists import (
    classes_from_lists,
    list_digest,
    list_problems,
    read_list,
)

from harness.data import ROLES, Benchmark, DatasetAdapter, Split, hash_arrays, listing_digest

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
NAMED_MAPS = {
    "imagenet": "imagenet_synsets.txt",
    "imagenet_r": "imagenet_r_synsets.txt",
    "imagenet_a": "imagenet_a_synsets.txt",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("classes", "flat", "corruptions", "openood_list")


def timm_synsets(name: str) -> list[str]:
    """WordNet ids shipped with timm (timm/data/_info/), read as timm's ImageNetInfo does."""
    data = pkgutil.get_data("timm.data", f"_info/{NAMED_MAPS[name]}")
    return data.decode("utf-8").split()


class ClassMap:
    """Folder name -> label, and the class names in label order."""

    def __init__(self, spec: Any, num_classes: int | None = None) -> None:
        self.spec = spec
        self.integer = spec == "integer"
        if self.integer:
            if not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError("class_map=integer needs dataset.num_classes (a positive integer)")
            self.names = [str(i) for i in range(num_classes)]
            return
        if isinstance(spec, str) and spec in NAMED_MAPS:
            folders = timm_synsets(spec)
        elif isinstance(spec, list | tuple):
            folders = [str(f) for f in spec]
        elif isinstance(spec, str) and Path(spec).is_file():
            folders = self._from_file(Path(spec))
        else:
            raise ValueError(
                f"dataset.class_map={spec!r}: expected imagenet, imagenet_r, imagenet_a, "
                "integer, a list of folder names, or an existing mapping file (.json or text)"
            )
        duplicates = sorted({f for f in folders if folders.count(f) > 1})
        if duplicates:
            raise ValueError(f"dataset.class_map={spec!r}: folders listed twice: {duplicates[:5]}")
        self.names = folders
        self._index = {f: i for i, f in enumerate(folders)}

    @staticmethod
    def _from_file(path: Path) -> list[str]:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, list):
                return [str(f) for f in data]
            pairs = {str(k): int(v) for k, v in data.items()}
        else:
            lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
            if all(len(parts) == 1 for parts in lines):
                return [parts[0] for parts in lines]
            bad = [" ".join(p) for p in lines if len(p) != 2 or not p[1].lstrip("-").isdigit()]
            if bad:
                raise ValueError(f"{path}: lines must be 'folder' or 'folder label'; got {bad[:3]}")
            pairs = {parts[0]: int(parts[1]) for parts in lines}
        labels = sorted(pairs.values())
        if labels != list(range(len(labels))):
            raise ValueError(f"{path}: labels must be 0..{len(labels) - 1}, each once")
        return sorted(pairs, key=pairs.get)

    def label(self, folder: str) -> int | None:
        if self.integer:
            # numbers, never text: '10' is label 10 whatever order the folders list in
            return int(folder) if folder.isdigit() and int(folder) < len(self.names) else None
        return self._index.get(folder)

    def describe(self) -> str:
        return self.spec if isinstance(self.spec, str) else f"a list of {len(self.names)} folders"


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def class_rows(folder: Path, class_map: ClassMap) -> tuple[pd.DataFrame, list[str]]:
    """Rows (path, label, class_folder) of a class-per-folder split, and the class folders
    the map does not know."""
    rows, unknown = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = class_map.label(sub.name)
        if label is None:
            unknown.append(sub.name)
            continue
        rows += [
            {"path": str(p), "label": label, "class_folder": sub.name} for p in list_images(sub)
        ]
    frame = pd.DataFrame(rows, columns=["path", "label", "class_folder"])
    return frame.astype({"label": np.int64}), unknown


def image_split(name: str, role: str, meta: pd.DataFrame, info: dict | None = None) -> Split:
    paths = meta["path"].tolist()

    def load_image(i: int) -> Image.Image:  # raw: the run's transform resizes
        with Image.open(paths[i]) as image:
            return image.convert("RGB")

    return Split(name, role, meta, load_image, info=info, files=paths)


class ImageFolders(DatasetAdapter):
    path_options = ("root",)
    key_exclude = ("how",)  # a hint for the error message (where to get the data), not data

    def __init__(
        self,
        name: str = "folders",
        limit: int | None = None,
        root: str = "data/folders",
        splits: dict[str, dict[str, Any]] | None = None,
        class_map: Any = None,
        num_classes: int | None = None,
        head: str | None = None,
        corruptions: str | list[str] | None = "all",
        severities: list[int] | None = None,
        image_size: int = 224,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        how: str = "",
        group_cols: list[str] | None = None,
    ) -> None:
        if not splits:
            raise ValueError("dataset.splits is empty: name at least one {path, role} folder")
        self.root, self.split_specs = Path(root), {}
        for split, spec in splits.items():
            spec = {"layout": "classes", **spec}
            if spec.get("role") not in ROLES or spec["layout"] not in LAYOUTS or "path" not in spec:
                raise ValueError(
                    f"dataset.splits.{split} = {spec}: needs path, a role in {ROLES} and a "
                    f"layout in {LAYOUTS}"
                )
            if spec["layout"] == "openood_list" and not spec.get("image_list"):
                raise ValueError(
                    f"dataset.splits.{split}: layout openood_list needs image_list (OpenOOD's "
                    "benchmark_imglist/<benchmark>/<split>_<set>.txt, relative to root)"
                )
            self.split_specs[split] = spec
        self.lists = [k for k, s in self.split_specs.items() if s["layout"] == "openood_list"]
        if self.lists and class_map is not None:
            raise ValueError(
                f"dataset.class_map must be null with openood_list splits {self.lists}: the "
                "classes come from OpenOOD's lists"
            )
        labelled = any(s["layout"] in ("classes", "corruptions") for s in self.split_specs.values())
        if labelled and class_map is None:
            raise ValueError(
                "dataset.class_map is required for class-per-folder splits (imagenet, "
                "imagenet_r, imagenet_a, integer, a list or a mapping file): folder names are "
                "never sorted into labels"
            )
        self.class_map = ClassMap(class_map, num_classes) if class_map is not None else None
        # a split may name its folders its own way (ImageNet-V2's integers beside val's
        # WordNet ids), into the same label space
        self.split_maps = {}
        for split, spec in self.split_specs.items():
            split_map = self.class_map
            if spec.get("class_map") is not None:
                size = len(self.class_map.names) if self.class_map else num_classes
                split_map = ClassMap(spec["class_map"], size)
                if self.class_map is None or len(split_map.names) != size:
                    raise ValueError(
                        f"dataset.splits.{split}.class_map has {len(split_map.names)} classes; "
                        f"the benchmark's class_map has {size}"
                    )
            self.split_maps[split] = split_map
        if head not in (None, "imagenet"):
            raise ValueError(f"dataset.head must be null or imagenet, got {head!r}")
        self.head = head
        self.corruption_names = C.resolve_corruptions(corruptions)
        self.severities = C.resolve_severities(severities)
        self.image_size = int(image_size)
        self.mean = tuple(mean or IMAGENET_MEAN)
        self.std = tuple(std or IMAGENET_STD)
        self.how = how or "see docs/datasets.md for the layout"
        self.group_cols = list(group_cols or [])

    def _path(self, spec: dict[str, Any]) -> Path:
        return self.root / spec["path"]

    def _corruption_folders(self, folder: Path) -> list[tuple[str, int, Path]]:
        found = []
        for corruption in self.corruption_names:
            for severity in self.severities:
                path = folder / corruption / str(severity)
                if path.is_dir():
                    found.append((corruption, severity, path))
        return found

    def verify(self) -> list[str]:
        # a missing OpenOOD list is named (with where OpenOOD publishes it) even without root
        listed = [
            problem
            for k in self.lists
            for problem in list_problems(
                k, self.root / self.split_specs[k]["image_list"], self._path(self.split_specs[k]), self.how
            )
        ]  # fmt: skip
        problems = super().verify()
        if problems or listed:
            return problems + listed
        for split, spec in self.split_specs.items():
            folder = self._path(spec)
            if spec["layout"] == "openood_list":
                continue
            if not folder.is_dir() and spec.get("optional"):
                continue
            if not folder.is_dir():
                problems.append(
                    f"{folder} is missing (split {split!r}, layout {spec['layout']}; {self.how})"
                )
                continue
            if spec["layout"] == "flat":
                if not list_images(folder):
                    problems.append(f"{folder} has no images (split {split!r} would be empty)")
                continue
            targets = [(split, folder)]
            if spec["layout"] == "corruptions":
                targets = [
                    (C.split_name(c, s), path) for c, s, path in self._corruption_folders(folder)
                ]
                if not targets:
                    problems.append(
                        f"{folder} has no <corruption>/<severity>/ folders for corruptions "
                        f"{self.corruption_names} and severities {self.severities} ({self.how})"
                    )
            for name, path in targets:
                rows, unknown = class_rows(path, self.split_maps[split])
                if unknown:
                    problems.append(self._unknown(path, unknown, self.split_maps[split]))
                elif rows.empty:
                    problems.append(
                        f"{path} has no images in class folders (split {name!r} would be empty)"
                    )
        return problems

    @staticmethod
    def _unknown(folder: Path, unknown: list[str], class_map: ClassMap) -> str:
        return (
            f"{folder}: class folders {unknown[:5]}{'...' if len(unknown) > 5 else ''} are not in "
            f"the class map ({class_map.describe()}, {len(class_map.names)} classes; "
            f"e.g. {class_map.names[:3]}); fix dataset.class_map or remove them"
        )

    def fingerprint(self) -> str:
        listings = [
            list_digest(self.root / s["image_list"], self._path(s))
            if s["layout"] == "openood_list"
            else listing_digest(self._path(s))
            for s in self.split_specs.values()
        ]
        return hash_arrays(
            self.key_config(), self.class_map.names if self.class_map else None, *listings
        )

    def head_index(self) -> list[int] | None:
        """ImageNet-1k output of each class (head=imagenet), None when they coincide."""
        if self.head is None or self.class_map is None:
            return None
        imagenet = {w: i for i, w in enumerate(timm_synsets("imagenet"))}
        missing = [n for n in self.class_map.names if n not in imagenet]
        if missing:
            raise ValueError(
                f"dataset.head=imagenet: classes {missing[:5]} are not ImageNet-1k WordNet ids"
            )
        index = [imagenet[n] for n in self.class_map.names]
        return None if index == list(range(1000)) else index

    def load(self, cache_dir: Path) -> Benchmark:
        splits: dict[str, Split] = {}
        listed = {
            k: read_list(self.root / self.split_specs[k]["image_list"], self._path(self.split_specs[k]))
            for k in self.lists
        }  # fmt: skip
        if listed:  # the benchmark's classes, from the lists (ImageNet-200's 200 WordNet ids)
            self.class_map = ClassMap(classes_from_lists(listed))
        for split, spec in self.split_specs.items():
            folder = self._path(spec)
            if split in listed:
                info = {"folder": str(folder), "image_list": spec["image_list"]}
                splits[split] = image_split(split, spec["role"], listed[split], info)
                continue
            if spec.get("optional") and not folder.is_dir():
                continue
            if spec["layout"] == "flat":
                paths = [str(p) for p in list_images(folder)]
                meta = pd.DataFrame({"path": paths, "label": np.full(len(paths), -1, np.int64)})
                splits[split] = image_split(split, spec["role"], meta, {"folder": str(folder)})
                continue
            targets = [(split, None, None, folder)]
            if spec["layout"] == "corruptions":
                targets = [
                    (C.split_name(c, s), c, s, path)
                    for c, s, path in self._corruption_folders(folder)
                ]
            for name, corruption, severity, path in targets:
                rows, unknown = class_rows(path, self.split_maps[split])
                if unknown:
                    raise ValueError(self._unknown(path, unknown, self.split_maps[split]))
                info: dict[str, Any] = {"folder": str(path)}
                if corruption is not None:
                    rows = rows.assign(
                        corruption=corruption,
                        family=C.FAMILY_OF[corruption],
                        severity=severity,
                        corruption_source="released",
                    )
                    info.update(
                        corruption=corruption, severity=severity, corruption_source="released"
                    )
                role = spec["role"] if corruption is None else "shift_test"
                splits[name] = image_split(name, role, rows, info)
        head_index = self.head_index()
        return Benchmark(
            name=self.name,
            classes=self.class_map.names if self.class_map else [],
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(self.image_size, self.image_size),
            mean=self.mean,
            std=self.std,
            info={"class_map": self.class_map.describe() if self.class_map else None},
            head_index=head_index,
            head_classes=1000 if head_index is not None else None,
        )


class OODFolder(DatasetAdapter):
    """A folder of images (any depth) as one OOD split, attachable to any benchmark with the
    top-level `ood_sets=[path, ...]` (the split is named `ood_<folder name>`).

    `image_list`: an OpenOOD image list (`benchmark_imglist/<id>/test_<set>.txt`: one
    `<path relative to root> <label>` per line, root = OpenOOD's `images_classic/` or
    `images_largescale/`): only the listed images form the split, in the list's order (OpenOOD
    subsets e.g. TinyImageNet and removes images that overlap the ID classes).

    `role`: `ood` (a test OOD set) or `ood_val` (OpenOOD v1.5's OOD validation set, e.g.
    TinyImageNet val for CIFAR: it takes no part in the OOD metrics and serves only the eval
    config's `tune:` entry, harness/tuning.py); in the key only when ood_val."""

    path_options = ("root", "image_list")
    key_exclude = ("how",)  # where to get the data (verify messages), not data

    def __init__(
        self,
        name: str | None = None,
        limit: int | None = None,
        root: str = "",
        image_list: str | None = None,
        role: str = "ood",
        how: str = "",
    ) -> None:
        if role not in ("ood", "ood_val"):
            raise ValueError(
                f"ood_sets entry {name or root!r}: role must be ood or ood_val, got {role!r}"
            )
        self.role = role
        self.name = name or Path(root).name
        self.root = Path(root)
        self.image_list = Path(image_list) if image_list else None
        # where to get the data, for verify's messages (a preset names OpenOOD's download
        # script); not data, so never in the key (key_config names what enters it)
        self.how = how or "OpenOOD distributes benchmark_imglist/ with its download script"

    def listed(self) -> list[Path]:
        """The images an image list names, relative to root (an error naming a bad line)."""
        return [Path(p) for p in read_list(self.image_list, self.root)["path"]]

    def verify(self) -> list[str]:
        problems = super().verify()
        if problems:  # a missing root or list: say where to get it
            return [f"{p}; {self.how}" for p in problems]
        if self.image_list is None:
            if not list_images(self.root):
                problems.append(f"OOD set {self.name!r}: {self.root} has no images")
            return problems
        if not self.image_list.is_file():
            return [f"OOD set {self.name!r}: image list {self.image_list} does not exist "
                    f"({self.how})"]  # fmt: skip
        try:
            missing = [p for p in self.listed() if not p.is_file()]
        except ValueError as exc:
            return [str(exc)]
        if missing:
            problems.append(
                f"OOD set {self.name!r}: {len(missing)} images of {self.image_list} are missing "
                f"below {self.root}, e.g. {missing[0]} ({self.how})"
            )
        return problems

    def key_config(self) -> dict[str, Any]:
        role = {"role": self.role} if self.role != "ood" else {}  # ood: keys as before
        return {"name": self.name, **({"image_list": True} if self.image_list else {}), **role}

    def fingerprint(self) -> str:
        if self.image_list is None:
            return hash_arrays(self.key_config(), listing_digest(self.root))
        # the list's bytes (which images, in which order) and each listed file's size
        sizes = [p.stat().st_size if p.is_file() else -1 for p in self.listed()]
        listing = hashlib.sha256(self.image_list.read_bytes()).hexdigest()
        return hash_arrays(self.key_config(), listing, np.array(sizes, dtype=np.int64))

    def load(self, cache_dir: Path) -> Benchmark:
        files = self.listed() if self.image_list is not None else list_images(self.root)
        paths = [str(p) for p in files]
        meta = pd.DataFrame({"path": paths, "label": np.full(len(paths), -1, np.int64)})
        name = f"ood_{self.name}"
        split = image_split(name, self.role, meta, {"folder": str(self.root)})
        return Benchmark(name=self.name, classes=[], splits={name: split})


# ---------------------------------------------------------------- fixtures


def write_image(path: Path, seed: int, size: int = 12, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def write_class_folders(
    folder: str | Path,
    class_folders: list[str],
    per_class: int = 2,
    seed: int = 0,
    suffix: str = ".jpg",
) -> list[Path]:
    """<folder>/<class folder>/<n><suffix> tiny images."""
    written = []
    for k, cls in enumerate(class_folders):
        for j in range(per_class):
            path = Path(folder) / cls / f"{seed}_{k}_{j}{suffix}"
            write_image(path, seed * 1000 + k * 10 + j, fmt="PNG" if suffix == ".png" else "JPEG")
            written.append(path)
    return written


def write_flat_folder(folder: str | Path, n: int = 3, seed: int = 0) -> list[Path]:
    paths = [Path(folder) / f"img_{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        write_image(path, seed + i, fmt="PNG")
    return paths
