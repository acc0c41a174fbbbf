"""MetaShift (Liang & Zou, ICLR 2022) from its released folder layouts, with contexts as groups
and the shift distance of the MetaShift meta-graph.

Layouts (under `root`, by default `<data_root>/metashift`):
- subpopulation: `imageID_to_group.pkl` (image id -> list of subsets such as 'cat(indoor)'),
  `train/<class>/<id>.jpg`, `val_out_of_domain/<class>/<id>.jpg` (and `test/<class>/` if
  present). `num_minority` keeps at most that many training images of each class's minority
  context: the shift knob of the paper's generation script (NUM_MINORITY_IMG).
- domain_generalization: `train/<class>/<community>/<id>.jpg`, `test/<class>/<community>/<id>.jpg`,
  communities named like 'dog(shelf)'.
A fixed random `val_fraction` of train becomes the ID validation split.

Shift distance (domain_generalization, when `candidate_subsets` names the released
`full-candidate-subsets.pkl`, subset name -> set of image ids): per class, a graph whose
nodes are the communities (each the union of its member subsets, `communities` maps a
community to its members; by default a community is the subset of the same name) and the
class's other subsets with at least `min_subset_size` (25) images, as in the paper's
meta-graph; edge
weight = overlap / size of the smaller set, edges below `edge_threshold` (0.2) dropped;
networkx's spectral_layout(dim=5) embeds it, and the distance of a test community is the
mean Euclidean distance of its embedding to those of the class's training communities.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from harness.data import Benchmark, DatasetAdapter, Split, hash_arrays
from harness.digests import tree_digest

LAYOUTS = ("subpopulation", "domain_generalization")
SPECTRAL_DIM = 5


def parse_subset(name: str) -> tuple[str, str]:
    """'cat(indoor)' -> ('cat', 'indoor')."""
    if "(" not in name or not name.endswith(")"):
        raise ValueError(f"MetaShift subset name {name!r} is not of the form 'class(context)'")
    subject, context = name[:-1].split("(", 1)
    return subject.strip(), context


def subset_graph(sets: dict[str, set], edge_threshold: float = 0.2):
    """The meta-graph: edge weight = |A ∩ B| / min(|A|, |B|), weak edges dropped."""
    import networkx as nx

    names = sorted(sets)
    weights = np.zeros((len(names), len(names)))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            smaller = min(len(sets[a]), len(sets[b]))
            if smaller:
                weights[i, j] = weights[j, i] = len(sets[a] & sets[b]) / smaller
    weights[weights < edge_threshold] = 0.0
    return nx.from_pandas_adjacency(pd.DataFrame(weights, index=names, columns=names))


def spectral_positions(graph) -> dict[str, np.ndarray]:
    import networkx as nx

    n = graph.number_of_nodes()
    if n < SPECTRAL_DIM + 1:
        raise ValueError(
            f"the MetaShift meta-graph has {n} subsets ({sorted(graph.nodes)}); a {SPECTRAL_DIM}-dim "
            f"spectral embedding needs at least {SPECTRAL_DIM + 1}"
        )
    return {k: np.asarray(v) for k, v in nx.spectral_layout(graph, dim=SPECTRAL_DIM).items()}


def shift_distances(
    subsets: dict[str, set], train: list[str], test: list[str], edge_threshold: float = 0.2
) -> dict[str, float]:
    """Distance of each test community to the training communities (mean over them)."""
    pos = spectral_positions(subset_graph(subsets, edge_threshold))
    return {t: float(np.mean([np.linalg.norm(pos[t] - pos[a]) for a in train])) for t in test}


def _row(folder: str, path: Path, label: int, class_name: str, subset: str) -> dict[str, Any]:
    """One example's metadata; the context is the part of the subset name in parentheses."""
    return {
        "folder": folder,
        "path": str(path),
        "image_id": path.stem,
        "label": label,
        "class_name": class_name,
        "subset": subset,
        "context": parse_subset(subset)[1],
    }


class MetaShift(DatasetAdapter):
    path_options = ("root", "candidate_subsets")
    # min_subset_size only prunes the meta-graph behind the shift distances (split info),
    # not the examples; it has never been in the key, and adding it would move every key.
    key_exclude = ("min_subset_size",)

    def __init__(
        self,
        name: str = "metashift",
        limit: int | None = None,
        root: str = "data/metashift",
        layout: str = "subpopulation",
        num_minority: int | None = None,
        val_fraction: float = 0.1,
        image_size: int = 64,
        seed: int = 0,
        candidate_subsets: str | None = None,
        communities: dict[str, list[str]] | None = None,
        edge_threshold: float = 0.2,
        min_subset_size: int = 25,
        group_cols: list[str] | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"dataset.layout must be one of {LAYOUTS}, got {layout!r}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"dataset.val_fraction must be in (0, 1), got {val_fraction}")
        self.root, self.layout = Path(root), layout
        self.num_minority, self.val_fraction = num_minority, val_fraction
        self.image_size, self.seed = int(image_size), int(seed)
        self.candidate_subsets = candidate_subsets
        self.communities = communities or {}
        self.edge_threshold = edge_threshold
        self.min_subset_size = int(min_subset_size)
        default_groups = ["label", "context"]
        self.group_cols = list(group_cols if group_cols is not None else default_groups)

    def verify(self) -> list[str]:
        problems = super().verify()
        if problems:
            return problems
        how = "download MetaShift as described in docs/datasets.md"
        if not (self.root / "train").is_dir():
            layout = (
                "<class>/<id>.jpg" if self.layout == "subpopulation" else "<class>/<community>/"
            )
            problems.append(f"{self.root / 'train'} is missing: expected train/{layout} ({how})")
        if self.layout == "subpopulation" and not (self.root / "imageID_to_group.pkl").is_file():
            problems.append(
                f"{self.root / 'imageID_to_group.pkl'} is missing: the subpopulation layout needs "
                f"it ({how})"
            )
        if self.candidate_subsets and not Path(self.candidate_subsets).is_file():
            problems.append(f"dataset.candidate_subsets={self.candidate_subsets} does not exist")
        return problems

    def fingerprint(self) -> str:
        extra = []
        if self.candidate_subsets:
            extra.append(hashlib.sha256(Path(self.candidate_subsets).read_bytes()).hexdigest())
        # every file's content (harness.digests: each read once, then remembered by path,
        # size and mtime): an image re-encoded at the same size changes the key
        return hash_arrays(self.key_config(), tree_digest(self.root), *extra)

    # ------------------------------------------------------------ layouts

    def _subpopulation_rows(self) -> tuple[list[str], pd.DataFrame]:
        mapping_path = self.root / "imageID_to_group.pkl"
        if not mapping_path.is_file():
            raise FileNotFoundError(f"{mapping_path} is missing (MetaShift subpopulation layout)")
        with mapping_path.open("rb") as f:
            groups = pickle.load(f)
        classes = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())
        rows = []
        for folder in ("train", "val_out_of_domain", "test"):
            for label, cls in enumerate(classes):
                for path in sorted((self.root / folder / cls).glob("*.jpg")):
                    subsets = groups.get(path.stem)
                    if not subsets:
                        raise ValueError(f"{path}: image id {path.stem!r} is not in {mapping_path}")
                    rows.append(_row(folder, path, label, cls, subsets[0]))
        return classes, pd.DataFrame(rows)

    def _dg_rows(self) -> tuple[list[str], pd.DataFrame]:
        classes = sorted(p.name for p in (self.root / "train").iterdir() if p.is_dir())
        rows = []
        for folder in ("train", "test"):
            for label, cls in enumerate(classes):
                for community in sorted(
                    p for p in (self.root / folder / cls).glob("*") if p.is_dir()
                ):
                    for path in sorted(community.glob("*.jpg")):
                        rows.append(_row(folder, path, label, cls, community.name))
        return classes, pd.DataFrame(rows)

    def _limit_minority(self, train: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        keep = []
        for _, per_class in train.groupby("label", sort=True):
            counts = per_class["context"].value_counts()
            minority = counts.index[-1] if len(counts) > 1 else None
            for context, rows in per_class.groupby("context", sort=True):
                if context == minority and len(rows) > self.num_minority:
                    rows = rows.iloc[
                        np.sort(rng.choice(len(rows), self.num_minority, replace=False))
                    ]
                keep.append(rows)
        return pd.concat(keep).sort_index()

    def _distances(self, meta: pd.DataFrame) -> dict[str, float]:
        with Path(self.candidate_subsets).open("rb") as f:
            candidates: dict[str, set] = pickle.load(f)
        result = {}
        for _, rows in meta.groupby("class_name"):
            train = sorted(rows.loc[rows["folder"] == "train", "subset"].unique())
            test = sorted(rows.loc[rows["folder"] == "test", "subset"].unique())
            subject = parse_subset(train[0])[0]
            members_used = {m for c in train + test for m in self.communities.get(c, [c])}
            # the class's meta-graph: its communities and every other subset of the class
            subsets = {
                name: set(ids)
                for name, ids in candidates.items()
                if parse_subset(name)[0] == subject
                and name not in members_used
                and len(ids) >= self.min_subset_size
            }
            for community in train + test:
                members = self.communities.get(community, [community])
                missing = [m for m in members if m not in candidates]
                if missing:
                    raise ValueError(
                        f"{self.candidate_subsets}: no subsets {missing} (community "
                        f"{community!r}); set dataset.communities"
                    )
                subsets[community] = set().union(*(set(candidates[m]) for m in members))
            result.update(shift_distances(subsets, train, test, self.edge_threshold))
        return result

    def load(self, cache_dir: Path) -> Benchmark:
        rng = np.random.default_rng(self.seed)
        if self.layout == "subpopulation":
            classes, meta = self._subpopulation_rows()
        else:
            classes, meta = self._dg_rows()
        if meta.empty:
            raise ValueError(f"no MetaShift images under {self.root} ({self.layout} layout)")
        train = meta[meta["folder"] == "train"]
        if self.num_minority is not None:
            train = self._limit_minority(train, rng)
        is_val = np.zeros(len(train), dtype=bool)
        is_val[
            rng.permutation(len(train))[: max(1, int(round(self.val_fraction * len(train))))]
        ] = True
        parts = {"train": ("train", train[~is_val]), "val": ("val", train[is_val])}
        for folder, split_name in (("val_out_of_domain", "val_out_of_domain"), ("test", "test")):
            rows = meta[meta["folder"] == folder]
            if not rows.empty:
                parts[split_name] = ("shift_test", rows)
        info: dict[str, Any] = {"layout": self.layout}
        distances = {}
        if self.layout == "domain_generalization" and self.candidate_subsets:
            distances = self._distances(meta)
            info["shift_distance"] = distances
        splits = {}
        for split_name, (role, rows) in parts.items():
            rows = rows.reset_index(drop=True).assign(
                shift_distance=rows["subset"].map(distances).astype(float).to_numpy()
                if distances
                else np.nan
            )
            splits[split_name] = self._split(split_name, role, rows)
        return Benchmark(
            name=self.name,
            classes=classes,
            splits=splits,
            group_cols=self.group_cols,
            in_chans=3,
            image_size=(self.image_size, self.image_size),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            info=info,
        )

    def _split(self, name: str, role: str, rows: pd.DataFrame) -> Split:
        paths = rows["path"].tolist()

        def load_image(i: int) -> Image.Image:  # raw: the run's transform resizes
            with Image.open(paths[i]) as image:
                return image.convert("RGB")

        return Split(name, role, rows, load_image, files=paths)


def write_fixture(
    root: str | Path, layout: str, per_subset: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Tiny MetaShift in the released on-disk layout (8×8 JPEGs), plus, for the
    domain-generalization layout, a candidate-subsets pickle with enough overlapping subsets
    for the meta-graph. Returns what was written."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    tint = {"indoor": (180, 120, 60), "outdoor": (60, 160, 80)}

    def jpeg(path: Path, context: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        base = np.array(tint.get(context, (100, 100, 200)), dtype=np.int16)
        pixels = np.clip(base + rng.integers(-30, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG")

    written: dict[str, Any] = {"root": root}
    if layout == "subpopulation":
        groups, n = {}, 0
        plan = {
            "train": {"cat": {"indoor": 6, "outdoor": 2}, "dog": {"outdoor": 6, "indoor": 2}},
            "val_out_of_domain": {
                "cat": {"indoor": 2, "outdoor": 2},
                "dog": {"outdoor": 2, "indoor": 2},
            },
        }
        for folder, per_class in plan.items():
            for cls, per_context in per_class.items():
                for context, count in per_context.items():
                    for _ in range(count * per_subset // 3):
                        image_id = f"{2300000 + n}"
                        n += 1
                        groups[image_id] = [f"{cls}({context})"]
                        jpeg(root / folder / cls / f"{image_id}.jpg", context)
        with (root / "imageID_to_group.pkl").open("wb") as f:
            pickle.dump(groups, f)
        written["groups"] = groups
        return written
    if layout != "domain_generalization":
        raise ValueError(f"layout must be one of {LAYOUTS}")
    # Per class, a chain of 10 overlapping subsets (each shares 5 of 8 images with the next):
    # the first two are the training communities, the third a test community close to them,
    # the ninth one far away; the others exist only in the candidate-subsets pickle.
    contexts = {
        "cat": ["sofa", "bed", "shelf", "cup", "chair", "vase", "bowl", "sink", "grass", "car"],
        "dog": ["cabinet", "bed", "shelf", "rug", "door", "towel", "box", "bag", "bench", "boat"],
    }
    train = {cls: [f"{cls}({c})" for c in names[:2]] for cls, names in contexts.items()}
    test = {cls: [f"{cls}({names[2]})", f"{cls}({names[8]})"] for cls, names in contexts.items()}
    candidates: dict[str, set] = {}
    n = 0
    for cls, names in contexts.items():
        pool = [f"{2400000 + n + i}" for i in range(3 * len(names) + 5)]
        n += len(pool)
        for k, context in enumerate(names):
            candidates[f"{cls}({context})"] = set(pool[3 * k : 3 * k + 8])
        for folder, communities in (("train", train[cls]), ("test", test[cls])):
            for community in communities:
                for image_id in sorted(candidates[community])[:per_subset]:
                    jpeg(root / folder / cls / community / f"{image_id}.jpg", "outdoor")
    with (root / "full-candidate-subsets.pkl").open("wb") as f:
        pickle.dump(candidates, f)
    written["candidates"] = candidates
    written["communities"] = {"train": train, "test": test}
    return written
