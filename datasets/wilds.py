"""WILDS image datasets through the real `wilds` package (Koh et al., 2021; Sagawa et al., 2022):
waterbirds, camelyon17, celebA, iwildcam, fmow, with their own splits, grouping fields and
official evaluation, plus WILDS 2.0 unlabeled data.

Data lives where wilds expects it: `<data_root>/<name>_v<version>/`, recognised only if
`RELEASE_v<version>.txt` exists there. The adapter loads it with
`wilds.get_dataset(name, root_dir=data_root, download=...)` and `get_subset(split)`, so the
real loading code runs; `write_fixture` writes tiny copies of each dataset's exact on-disk
layout for tests and smoke runs.

- Splits keep WILDS' names (train, val, test, id_val, id_test); roles say what they are:
  ID validation -> `val`, ID test -> `id_test`, shifted (OOD) val/test -> `shift_test`;
  with `unlabeled: true`, the WILDS 2.0 unlabeled splits (train_unlabeled, val_unlabeled,
  test_unlabeled, extra_unlabeled; iWildCam has only extra_unlabeled) are `unlabeled`.
- Each example's metadata row has the WILDS metadata fields under their WILDS names (e.g.
  background, y, slide, location, region, year, from_source_domain), `<field>_name` where
  WILDS maps codes to names, and `wilds_index` (row in the WILDS dataset). The group columns
  are the fields the dataset's own evaluation groups by.
- Official metrics: `Benchmark.dataset_eval` calls the dataset's own `eval(y_pred, y_true,
  metadata)` on the rows a forward pass saw; the runner stores its results beside the
  Outputs cache and the post-hoc stage records them as rows under WILDS' own metric names
  (acc_wg, adj_acc_avg, acc_worst_region, F1-macro_all...). WILDS' grouped eval imports
  torch_scatter, which has no normal wheel: where it is missing, a small stand-in
  (`scatter_fallback`) is installed for the call only.
- `import wilds` starts a thread asking the package index for a newer wilds; `import_wilds()`
  imports it with that check disabled, and only when a WILDS dataset is used.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from harness.data import NO_LABEL, Benchmark, DatasetAdapter, Split, hash_arrays

# ---------------------------------------------------------------- the datasets


@dataclass(frozen=True)
class Spec:
    """What the adapter knows about one WILDS dataset without importing wilds (verify() must
    stay cheap and quiet); tests check it against wilds' own classes."""

    version: str
    size: str  # download size, for messages
    files: dict[str, tuple[str, ...]]  # metadata CSV -> columns wilds reads from it
    images: str  # folder of the images, relative to the dataset folder
    roles: dict[str, str]  # WILDS split name -> harness role
    group_fields: tuple[str, ...]  # the fields the dataset's own eval groups by
    image_size: int  # default resolution for models trained from scratch
    unlabeled_version: str | None = None
    unlabeled_size: str | None = None
    unlabeled_folder: str | None = None  # folder of the unlabeled release (None: its own)


SPECS: dict[str, Spec] = {
    "waterbirds": Spec(
        version="1.0",
        size="about 0.5 GB",
        files={"metadata.csv": ("img_filename", "y", "split", "place")},
        images=".",
        roles={"train": "train", "val": "val", "test": "shift_test"},
        group_fields=("background", "y"),
        image_size=224,
    ),
    "camelyon17": Spec(
        version="1.0",
        size="10.7 GB",
        files={
            "metadata.csv": (
                "patient",
                "node",
                "x_coord",
                "y_coord",
                "tumor",
                "slide",
                "center",
                "split",
            )
        },
        images="patches",
        roles={"train": "train", "id_val": "val", "val": "shift_test", "test": "shift_test"},
        group_fields=("slide",),
        image_size=96,
        unlabeled_version="1.0",
        unlabeled_size="69.4 GB",
    ),
    "celebA": Spec(
        version="1.0",
        size="1.3 GB",
        files={
            "list_attr_celeba.csv": ("image_id", "Blond_Hair", "Male"),
            "list_eval_partition.csv": ("image_id", "partition"),
        },
        images="img_align_celeba",
        roles={"train": "train", "val": "val", "test": "id_test"},
        group_fields=("male", "y"),
        image_size=224,
    ),
    "iwildcam": Spec(
        version="2.0",
        size="12.0 GB",
        files={
            "metadata.csv": (
                "split",
                "location_remapped",
                "sequence_remapped",
                "datetime",
                "y",
                "filename",
            )
        },
        images="train",
        roles={
            "train": "train",
            "id_val": "val",
            "id_test": "id_test",
            "val": "shift_test",
            "test": "shift_test",
        },
        group_fields=("location",),
        image_size=448,
        unlabeled_version="1.0",
        unlabeled_size="41.0 GB",
    ),
    "fmow": Spec(
        version="1.1",
        size="53.9 GB",
        files={
            "rgb_metadata.csv": ("split", "category", "country_code", "timestamp"),
            "country_code_mapping.csv": ("alpha-3", "region"),
        },
        images="images",
        roles={
            "train": "train",
            "id_val": "val",
            "id_test": "id_test",
            "val": "shift_test",
            "test": "shift_test",
        },
        group_fields=("year", "region"),
        image_size=224,
        unlabeled_version="1.0",
        unlabeled_size="53.9 GB (the same download as fmow)",
        unlabeled_folder="fmow_v1.1",
    ),
}

# Columns the unlabeled releases must have (their own folders); FMoW's is the labeled folder.
UNLABELED_FILES = {
    "iwildcam": {"metadata.csv": ("uid", "location_remapped", "sequence_remapped", "datetime")},
    "camelyon17": {
        "metadata.csv": ("patient", "node", "x_coord", "y_coord", "slide", "center"),
    },
}
UNLABELED_IMAGES = {"iwildcam": "images", "camelyon17": "patches"}

CLASSES = {
    "waterbirds": ["landbird", "waterbird"],
    "celebA": ["not blond", "blond"],
    "camelyon17": ["normal", "tumor"],
}
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
IWILDCAM_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
FMOW_YEARS = (2002, 2017)  # WILDS assigns year groups 2002..2017; other years get -1
CAMELYON_VAL_CENTER, CAMELYON_TEST_CENTER = 1, 2  # wilds.datasets.camelyon17_dataset


def folder_name(name: str, version: str) -> str:
    return f"{name}_v{version}"


# ---------------------------------------------------------------- quiet import, torch_scatter


def import_wilds() -> types.ModuleType:
    """`import wilds` without its background version check: wilds starts a (non-daemon)
    thread that asks the package index for its latest version whenever `outdated` imports,
    so the import is done with `outdated` unimportable; nothing waits on the network and
    nothing prints."""
    if "wilds" in sys.modules:
        return sys.modules["wilds"]
    missing = object()
    saved = sys.modules.get("outdated", missing)
    sys.modules["outdated"] = None  # type: ignore[assignment]  # makes `import outdated` fail
    try:
        return importlib.import_module("wilds")
    finally:
        if saved is missing:
            del sys.modules["outdated"]
        else:
            sys.modules["outdated"] = saved


def scatter(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: torch.Tensor | None = None,
    dim_size: int | None = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """torch_scatter.scatter for what wilds uses (1-D src and index, sum or mean), with
    torch's own index_add_: empty groups get 0, as with torch_scatter."""
    if src.dim() != 1 or index.dim() != 1 or dim not in (0, -1) or out is not None:
        raise NotImplementedError("the torch_scatter stand-in handles 1-D sum/mean only")
    size = int(dim_size) if dim_size is not None else int(index.max()) + 1 if len(index) else 0
    total = torch.zeros(size, dtype=src.dtype, device=src.device).index_add_(0, index, src)
    if reduce in ("sum", "add"):
        return total
    if reduce == "mean":
        counts = torch.zeros(size, dtype=src.dtype, device=src.device).index_add_(
            0, index, torch.ones_like(src)
        )
        return total / counts.clamp(min=1)
    raise NotImplementedError(f"the torch_scatter stand-in has no reduce={reduce!r}")


@contextmanager
def scatter_fallback() -> Iterator[None]:
    """Makes `import torch_scatter` work inside the block: the real package where installed,
    else a module whose `scatter` is the stand-in above. Removed again afterwards."""
    try:
        importlib.import_module("torch_scatter")
        installed = True
    except ImportError:
        installed = False
    if installed:
        yield
        return
    module = types.ModuleType("torch_scatter")
    module.scatter = scatter  # type: ignore[attr-defined]
    sys.modules["torch_scatter"] = module
    try:
        yield
    finally:
        if sys.modules.get("torch_scatter") is module:
            del sys.modules["torch_scatter"]


def official_eval(dataset: Any, idx: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """The dataset's own eval() on the examples `idx` (rows of the WILDS dataset) with
    predicted labels `preds`: {WILDS metric name: value}."""
    idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
    with scatter_fallback():
        results, _ = dataset.eval(
            torch.as_tensor(np.asarray(preds, dtype=np.int64)),
            dataset.y_array[idx],
            dataset.metadata_array[idx],
        )
    return {k: float(v) for k, v in results.items()}


# ---------------------------------------------------------------- the adapter


class Wilds(DatasetAdapter):
    path_options = ("root",)

    def __init__(
        self,
        name: str = "waterbirds",
        limit: int | None = None,
        root: str = "data",
        split_scheme: str = "official",
        unlabeled: bool = False,
        download: bool = False,
        image_size: int | None = None,
        group_cols: list[str] | None = None,
    ) -> None:
        if name not in SPECS:
            raise ValueError(f"dataset.name={name!r}: WILDS datasets here are {sorted(SPECS)}")
        self.spec = SPECS[name]
        if unlabeled and self.spec.unlabeled_version is None:
            raise ValueError(f"dataset.unlabeled=true: WILDS has no unlabeled data for {name}")
        self.root = Path(root)
        self.split_scheme, self.unlabeled, self.download = split_scheme, unlabeled, download
        self.image_size = int(image_size or self.spec.image_size)
        self.group_cols = list(group_cols if group_cols is not None else self.spec.group_fields)

    @property
    def folder(self) -> Path:
        return self.root / folder_name(self.name, self.spec.version)

    @property
    def unlabeled_folder(self) -> Path:
        spec = self.spec
        return self.root / (
            spec.unlabeled_folder or folder_name(f"{self.name}_unlabeled", spec.unlabeled_version)
        )

    def how_to_get(self, unlabeled: bool = False) -> str:
        size = self.spec.unlabeled_size if unlabeled else self.spec.size
        args = f"'{self.name}', root_dir='{self.root}', download=True"
        if unlabeled:
            args += ", unlabeled=True"
        return (
            f"get {self.name}{' (unlabeled)' if unlabeled else ''} ({size} to download) with "
            f'python -c "import wilds; wilds.get_dataset({args})", or run with '
            f"dataset.download=true, or from https://wilds.stanford.edu/downloads; data_root "
            f"must be the folder that holds {self.folder.name}/ (docs/datasets.md)"
        )

    # ------------------------------------------------------------ verify (no images read)

    def verify(self) -> list[str]:
        problems = [f"{p}; {self.how_to_get()}" for p in super().verify()]
        if problems or self.download:
            return problems  # with download=true, wilds fetches what is missing in load()
        problems += verify_layout(
            self.name, self.folder, self.spec.version, self.spec.files, self.how_to_get()
        )
        if not problems:
            problems += VALUE_CHECKS[self.name](self.folder, self.how_to_get())
        if self.unlabeled and not problems:
            how = self.how_to_get(unlabeled=True)
            if self.name in UNLABELED_FILES:
                problems += verify_layout(
                    f"{self.name}_unlabeled",
                    self.unlabeled_folder,
                    self.spec.unlabeled_version,
                    UNLABELED_FILES[self.name],
                    how,
                )
                if not problems and self.name == "iwildcam":
                    problems += check_iwildcam_unlabeled(self.unlabeled_folder, how)
        return problems

    def fingerprint(self) -> str:
        """The options, wilds' version, and the full contents of the metadata files (names and
        sizes of images are not listed: millions of files; wilds' RELEASE file names the
        release)."""
        if self.download and not self.folder.is_dir():
            self._wilds_dataset()  # downloads
        wilds = import_wilds()
        h = hashlib.sha256()
        folders = [(self.folder, self.spec.files)]
        if self.unlabeled and self.name in UNLABELED_FILES:
            folders.append((self.unlabeled_folder, UNLABELED_FILES[self.name]))
        for folder, files in folders:
            for file in sorted(files):
                h.update(f"{folder.name}/{file}\n".encode())
                with (folder / file).open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
        return hash_arrays(self.key_config(), wilds.__version__, h.hexdigest())

    # ------------------------------------------------------------ load

    def _wilds_dataset(self, unlabeled: bool = False) -> Any:
        wilds = import_wilds()
        with warnings.catch_warnings():  # wilds' own numpy->torch conversions; harmless
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return wilds.get_dataset(
                self.name,
                unlabeled=unlabeled,
                root_dir=str(self.root),
                download=self.download,
                split_scheme=self.split_scheme,
            )

    def load(self, cache_dir: Path) -> Benchmark:
        dataset = self._wilds_dataset()
        splits: dict[str, Split] = {}
        for wilds_split, role in self.spec.roles.items():
            splits[wilds_split] = wilds_split_of(dataset, wilds_split, role)
        if self.unlabeled:
            unlabeled = self._wilds_dataset(unlabeled=True)
            for wilds_split in unlabeled.split_dict:
                splits[wilds_split] = wilds_split_of(unlabeled, wilds_split, "unlabeled")
        missing = [c for c in self.group_cols if c not in splits["train"].meta.columns]
        if missing:
            raise ValueError(
                f"dataset.group_cols: {missing} are not metadata fields of {self.name} "
                f"({list(dataset.metadata_fields)})"
            )

        def dataset_eval(split: Split, rows: np.ndarray, preds: np.ndarray) -> dict[str, float]:
            return official_eval(dataset, split.meta["wilds_index"].to_numpy()[rows], preds)

        return Benchmark(
            name=self.name,
            classes=self.class_names(dataset),
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(self.image_size, self.image_size),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            info={"wilds_version": import_wilds().__version__, "release": self.spec.version},
            dataset_eval=dataset_eval,
        )

    def class_names(self, dataset: Any) -> list[str]:
        if self.name in CLASSES:
            return list(CLASSES[self.name])
        if self.name == "fmow":
            from wilds.datasets.fmow_dataset import categories

            return list(categories)
        names = [str(y) for y in range(int(dataset.n_classes))]
        categories_csv = self.folder / "categories.csv"  # iWildCam: y,category_id,name
        if categories_csv.is_file():
            table = pd.read_csv(categories_csv)
            for y, name in zip(table["y"], table["name"], strict=True):
                if 0 <= int(y) < len(names):
                    names[int(y)] = str(name)
        return names


def wilds_split_of(dataset: Any, wilds_split: str, role: str) -> Split:
    """One WILDS split as a harness Split: metadata fields as columns, images from wilds'
    own get_input."""
    if wilds_split not in dataset.split_dict:
        raise ValueError(
            f"{dataset.data_dir}: wilds has no split {wilds_split!r} here "
            f"(its splits: {list(dataset.split_dict)})"
        )
    subset = dataset.get_subset(wilds_split)
    idx = np.asarray(subset.indices, dtype=np.int64)
    fields = list(dataset.metadata_fields)
    meta = pd.DataFrame(dataset.metadata_array[idx].numpy(), columns=fields)
    labeled = role != "unlabeled"
    labels = dataset.y_array[idx].numpy() if labeled else np.full(len(idx), NO_LABEL)
    meta.insert(0, "label", labels.astype(np.int64))
    for field, names in (dataset.metadata_map or {}).items():
        if field in meta.columns and field != "from_source_domain":
            lookup = [str(n).strip() for n in names]
            meta[f"{field}_name"] = [
                lookup[v] if 0 <= v < len(lookup) else "" for v in meta[field].astype(int)
            ]
    meta["wilds_index"] = idx
    meta["wilds_split"] = wilds_split

    def load_image(i: int) -> Image.Image:
        return dataset.get_input(int(idx[i])).convert("RGB")

    info = {"wilds_split": wilds_split, "description": dataset.split_names[wilds_split]}
    return Split(wilds_split, role, meta, load_image, info=info)


# ---------------------------------------------------------------- layout and value checks


def verify_layout(
    name: str, folder: Path, version: str, files: dict[str, tuple[str, ...]], how: str
) -> list[str]:
    """Folder, RELEASE file, metadata files and their columns (header only)."""
    if not folder.is_dir():
        return [
            f"{folder} does not exist: expected the {name} release v{version} there "
            f"({', '.join([f'RELEASE_v{version}.txt', *files])} and its images); {how}"
        ]
    problems = []
    release = folder / f"RELEASE_v{version}.txt"
    if not release.is_file():
        problems.append(
            f"{release} is missing: wilds only uses {folder} when it exists (it marks a "
            f"complete v{version} download); {how}"
        )
    for file, columns in files.items():
        path = folder / file
        if not path.is_file():
            problems.append(
                f"{path} is missing: expected a CSV with columns {list(columns)}; {how}"
            )
            continue
        header = pd.read_csv(path, nrows=0).columns
        absent = [c for c in columns if c not in header]
        if absent:
            problems.append(
                f"{path}: no column(s) {absent}; expected columns {list(columns)} "
                f"(found {list(header)}); {how}"
            )
    return problems


def _first_bad(frame: pd.DataFrame, bad: np.ndarray, column: str) -> str:
    rows = np.flatnonzero(bad)
    value = frame[column].iloc[rows[0]]
    value = value.item() if isinstance(value, np.generic) else value
    return f"{len(rows)} row(s), first at data row {rows[0] + 1}: {value!r}"


def _values_in(
    path: Path, frame: pd.DataFrame, column: str, allowed: set[Any], how: str
) -> list[str]:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = ~values.isin(list(allowed)).to_numpy()
    if bad.any():
        return [
            f"{path}: column {column!r} has values outside {sorted(allowed)} "
            f"({_first_bad(frame, bad, column)}); {how}"
        ]
    return []


def _empty_splits(path: Path, counts: dict[str, int], how: str) -> list[str]:
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        return [f"{path}: split(s) {empty} have no examples (counts {counts}); {how}"]
    return []


def _image_present(folder: Path, relative: str, how: str) -> list[str]:
    path = folder / relative
    if not path.is_file():
        return [f"{path} is missing (the first image the metadata lists); {how}"]
    return []


def check_waterbirds(folder: Path, how: str) -> list[str]:
    path = folder / "metadata.csv"
    df = pd.read_csv(path)
    problems = _values_in(path, df, "y", {0, 1}, how) + _values_in(path, df, "place", {0, 1}, how)
    problems += _values_in(path, df, "split", {0, 1, 2}, how)
    if problems:
        return problems
    names = {0: "train", 1: "val", 2: "test"}
    counts = {names[c]: int((df["split"] == c).sum()) for c in names}
    return _empty_splits(path, counts, how) + _image_present(
        folder, df["img_filename"].iloc[0], how
    )


def check_celeba(folder: Path, how: str) -> list[str]:
    attrs_path = folder / "list_attr_celeba.csv"
    parts_path = folder / "list_eval_partition.csv"
    attrs = pd.read_csv(attrs_path, usecols=["image_id", "Blond_Hair", "Male"])
    parts = pd.read_csv(parts_path)
    problems = _values_in(attrs_path, attrs, "Blond_Hair", {-1, 1}, how)
    problems += _values_in(attrs_path, attrs, "Male", {-1, 1}, how)
    problems += _values_in(parts_path, parts, "partition", {0, 1, 2}, how)
    if len(attrs) != len(parts) or not (attrs["image_id"] == parts["image_id"]).all():
        problems.append(
            f"{parts_path}: its image_id column does not list the images of {attrs_path} in the "
            f"same order ({len(parts)} vs {len(attrs)} rows); wilds pairs them by row; {how}"
        )
    if problems:
        return problems
    names = {0: "train", 1: "val", 2: "test"}
    counts = {names[c]: int((parts["partition"] == c).sum()) for c in names}
    return _empty_splits(parts_path, counts, how) + _image_present(
        folder / "img_align_celeba", attrs["image_id"].iloc[0], how
    )


def check_camelyon17(folder: Path, how: str) -> list[str]:
    path = folder / "metadata.csv"
    df = pd.read_csv(path, index_col=0, dtype={"patient": "str"})
    problems = _values_in(path, df, "tumor", {0, 1}, how)
    problems += _values_in(path, df, "center", set(range(5)), how)
    problems += _values_in(path, df, "split", {0, 1}, how)
    slide = pd.to_numeric(df["slide"], errors="coerce")
    if slide.isna().any() or (slide < 0).any():
        problems.append(
            f"{path}: column 'slide' must hold integers >= 0 "
            f"({_first_bad(df, (slide.isna() | (slide < 0)).to_numpy(), 'slide')}); {how}"
        )
    if problems:
        return problems
    ood = df["center"].isin([CAMELYON_VAL_CENTER, CAMELYON_TEST_CENTER])
    counts = {
        "train": int((~ood & (df["split"] == 0)).sum()),
        "id_val": int((~ood & (df["split"] == 1)).sum()),
        "val": int((df["center"] == CAMELYON_VAL_CENTER).sum()),
        "test": int((df["center"] == CAMELYON_TEST_CENTER).sum()),
    }
    first = df.iloc[0]
    patch = (
        f"patches/patient_{first.patient}_node_{first.node}/patch_patient_{first.patient}_node_"
        f"{first.node}_x_{first.x_coord}_y_{first.y_coord}.png"
    )
    return _empty_splits(path, counts, how) + _image_present(folder, patch, how)


def _check_iwildcam_datetimes(path: Path, df: pd.DataFrame, how: str) -> list[str]:
    parsed = pd.to_datetime(df["datetime"], format=IWILDCAM_DATETIME, errors="coerce")
    bad = (parsed.isna() & df["datetime"].notna()).to_numpy()
    if bad.any():
        return [
            f"{path}: column 'datetime' has values wilds cannot parse with "
            f"{IWILDCAM_DATETIME!r} (e.g. '2013-06-09 16:30:45.000'); "
            f"{_first_bad(df, bad, 'datetime')}; {how}"
        ]
    return []


def _dense_codes(path: Path, df: pd.DataFrame, column: str, how: str) -> list[str]:
    """wilds asserts that a column's values are exactly 0..max (no gaps)."""
    values = pd.to_numeric(df[column], errors="coerce")
    if values.isna().any() or (values < 0).any():
        bad = (values.isna() | (values < 0)).to_numpy()
        return [
            f"{path}: column {column!r} must hold integers >= 0 ({_first_bad(df, bad, column)}); {how}"
        ]
    present = set(values.astype(int))
    gaps = sorted(set(range(max(present) + 1)) - present)
    if gaps:
        return [
            f"{path}: column {column!r} must use every value 0..{max(present)} (wilds counts "
            f"them as max+1); missing {gaps[:10]}; {how}"
        ]
    return []


def check_iwildcam(folder: Path, how: str) -> list[str]:
    path = folder / "metadata.csv"
    df = pd.read_csv(path)
    problems = []
    for column in ("y", "location_remapped", "sequence_remapped"):
        problems += _dense_codes(path, df, column, how)
    names = ("train", "val", "test", "id_val", "id_test")
    unknown = ~df["split"].isin(names).to_numpy()
    if unknown.any():
        problems.append(
            f"{path}: column 'split' has values outside {list(names)} "
            f"({_first_bad(df, unknown, 'split')}); {how}"
        )
    problems += _check_iwildcam_datetimes(path, df, how)
    if problems:
        return problems
    counts = {s: int((df["split"] == s).sum()) for s in names}
    return _empty_splits(path, counts, how) + _image_present(
        folder / "train", df["filename"].iloc[0], how
    )


def check_iwildcam_unlabeled(folder: Path, how: str) -> list[str]:
    path = folder / "metadata.csv"
    df = pd.read_csv(path)
    if df.empty:
        return [f"{path}: no rows (split extra_unlabeled would be empty); {how}"]
    problems = _check_iwildcam_datetimes(path, df, how)
    return problems or _image_present(folder / "images", f"{df['uid'].iloc[0]}.jpg", how)


def fmow_split_counts(df: pd.DataFrame, timestamps: pd.Series) -> dict[str, int]:
    """Examples per WILDS split, computed as FMoWDataset does (split_scheme official =
    time_after_2016: OOD test from 2016, OOD val 2013-2015)."""
    test_ood = (timestamps >= pd.Timestamp("2016-01-01", tz="UTC")).to_numpy()
    val_ood = (timestamps >= pd.Timestamp("2013-01-01", tz="UTC")).to_numpy() & ~test_ood
    ood = test_ood | val_ood
    split = df["split"].to_numpy()
    return {
        "train": int((~ood & (split == "train")).sum()),
        "id_val": int((~ood & (split == "val")).sum()),
        "id_test": int((~ood & (split == "test")).sum()),
        "val": int((val_ood & (split == "val")).sum()),
        "test": int((test_ood & (split == "test")).sum()),
    }


def check_fmow(folder: Path, how: str) -> list[str]:
    from wilds.datasets.fmow_dataset import categories  # after import_wilds in the caller

    path = folder / "rgb_metadata.csv"
    df = pd.read_csv(path, usecols=["split", "category", "country_code", "timestamp"])
    problems = []
    unknown = ~df["category"].isin(categories).to_numpy()
    if unknown.any():
        problems.append(
            f"{path}: column 'category' has names outside FMoW's 62 categories "
            f"({_first_bad(df, unknown, 'category')}); {how}"
        )
    splits = {"train", "val", "test", "seq"}
    bad_split = ~df["split"].isin(splits).to_numpy()
    if bad_split.any():
        problems.append(
            f"{path}: column 'split' has values outside {sorted(splits)} "
            f"({_first_bad(df, bad_split, 'split')}); {how}"
        )
    timestamps = pd.to_datetime(df["timestamp"], errors="coerce", format="ISO8601")
    unparsed = (timestamps.isna() & df["timestamp"].notna()).to_numpy()
    if unparsed.any():
        return [
            *problems,
            f"{path}: column 'timestamp' has values that are not ISO-8601 dates "
            f"({_first_bad(df, unparsed, 'timestamp')}); {how}",
        ]
    if timestamps.dt.tz is None:
        return [
            *problems,
            f"{path}: column 'timestamp' has no time zone (e.g. {df['timestamp'].iloc[0]!r}); "
            f"wilds compares it with UTC dates, so it must be like '2016-02-11T08:26:25Z'; {how}",
        ]
    years = timestamps.dt.year
    outside = ~years.between(*FMOW_YEARS).to_numpy()
    if outside.any():
        problems.append(
            f"{path}: column 'timestamp' has dates outside {FMOW_YEARS[0]}-{FMOW_YEARS[1]}, "
            f"the years WILDS groups by ({_first_bad(df, outside, 'timestamp')}); {how}"
        )
    if problems:
        return problems
    counts = fmow_split_counts(df, timestamps)
    first = int(np.flatnonzero(df["split"].to_numpy() != "seq")[0])
    return _empty_splits(path, counts, how) + _image_present(
        folder / "images", f"rgb_img_{first}.png", how
    )


def _with_wilds(check: Callable[[Path, str], list[str]]) -> Callable[[Path, str], list[str]]:
    def run(folder: Path, how: str) -> list[str]:
        import_wilds()
        return check(folder, how)

    return run


VALUE_CHECKS: dict[str, Callable[[Path, str], list[str]]] = {
    "waterbirds": check_waterbirds,
    "celebA": check_celeba,
    "camelyon17": check_camelyon17,
    "iwildcam": check_iwildcam,
    "fmow": _with_wilds(check_fmow),
}
