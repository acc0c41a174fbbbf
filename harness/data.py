"""Benchmark and Split: what every dataset adapter returns, plus the input transforms.

Adapters yield raw images (PIL images or HWC uint8 arrays) and integer labels; they never
normalise. The transform is chosen by the run (from timm for pretrained models, from the
benchmark's defaults otherwise) and recorded, because it is part of what a result means.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

# the dataset plugins' API names them here (docs/adding-a-dataset.md)
from harness.digests import hash_arrays
from harness.digests import listing_digest as listing_digest
from harness.roles import LABELED_ROLES as LABELED_ROLES
from harness.roles import ROLES as ROLES

NO_LABEL = -1


class Split(Dataset):
    """One split: a torch Dataset of (image, label, index) plus one metadata row per example.

    `meta` has at least the column `label` (NO_LABEL where unknown); adapters add whatever
    describes the example (group fields, domain, generator, severity...). `load_image(i)`
    returns the raw image of row i. `files`, when an adapter gives it, is the image file of
    each row (what load_image opens): evaluation may then read and decode the files itself,
    e.g. on the GPU (harness/gpudecode.py).
    """

    def __init__(
        self,
        name: str,
        role: str,
        meta: pd.DataFrame,
        load_image: Callable[[int], Any],
        transform: Callable[[Any], torch.Tensor] | None = None,
        info: dict[str, Any] | None = None,
        files: Sequence[str] | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"split {name!r}: unknown role {role!r}; roles are {ROLES}")
        if "label" not in meta.columns:
            raise ValueError(f"split {name!r}: metadata has no 'label' column")
        self.name = name
        self.role = role
        self.meta = meta.reset_index(drop=True)
        self.load_image = load_image
        self.transform = transform
        self.info = dict(info or {})  # split-level facts, e.g. the shift factor it changes
        self._labels = self.meta["label"].to_numpy(dtype=np.int64)
        if files is not None and len(files) != len(self.meta):
            raise ValueError(f"split {name!r}: {len(files)} files but {len(self.meta)} rows")
        self.files = list(files) if files is not None else None

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        image = self.load_image(i)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self._labels[i]), i

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def with_transform(self, transform: Callable[[Any], torch.Tensor] | None) -> Split:
        return Split(
            self.name, self.role, self.meta, self.load_image, transform, self.info, self.files
        )

    def subset(self, indices: Sequence[int]) -> Split:
        """A split of the given rows; indices are re-numbered 0..len-1."""
        idx = np.asarray(indices, dtype=np.int64)
        parent = self.load_image
        return Split(
            self.name,
            self.role,
            self.meta.iloc[idx],
            lambda i: parent(int(idx[i])),
            self.transform,
            self.info,
            [self.files[i] for i in idx] if self.files is not None else None,
        )

    def limited(self, limit: int | None, seed: int = 0) -> Split:
        """At most `limit` examples: a fixed random subset (same rows every time), in order."""
        if limit is None or len(self) <= limit:
            return self
        if limit < 1:
            raise ValueError(f"dataset.limit must be a positive integer or null, got {limit}")
        rng = np.random.default_rng(seed)
        return self.subset(np.sort(rng.choice(len(self), size=limit, replace=False)))


def array_split(
    name: str, role: str, images: np.ndarray, meta: pd.DataFrame, info: dict | None = None
) -> Split:
    """A split whose images are one in-memory (or memory-mapped) array of shape N×H×W×C."""
    if len(images) != len(meta):
        raise ValueError(f"split {name!r}: {len(images)} images but {len(meta)} metadata rows")
    return Split(name, role, meta, lambda i: images[i], info=info)


@dataclass
class Benchmark:
    """A named set of splits over one label space, with the columns that define groups."""

    name: str
    classes: list[str]
    splits: dict[str, Split]
    group_cols: list[str] = field(default_factory=list)
    input_kind: str = "image"
    in_chans: int = 3
    image_size: tuple[int, int] = (32, 32)
    # Normalisation for models trained from scratch on this benchmark.
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    info: dict[str, Any] = field(default_factory=dict)
    # The dataset's own evaluation, where it has one (e.g. WILDS' eval()): called with a split,
    # the rows of its metadata a forward pass saw and the predicted labels of those rows;
    # returns {metric name: value} under the dataset's own metric names. The runner stores
    # the result beside the Outputs cache; the post-hoc stage records it as rows.
    dataset_eval: Callable[[Split, np.ndarray, np.ndarray], dict[str, float]] | None = None
    # For label spaces that are a subset of a pretrained head's (e.g. ImageNet-R's 200 of
    # ImageNet-1k's 1000): the head output of each class, used by evaluation-only runs whose
    # head has head_classes outputs when model.label_map is not given.
    head_index: list[int] | None = None
    head_classes: int | None = None
    # DG benchmarks: the metadata column of each example's domain (harness.samplers.domain_ids)
    domain_col: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def by_role(self, *roles: str) -> list[Split]:
        return [s for s in self.splits.values() if s.role in roles]

    def train_split(self) -> Split:
        train = self.by_role("train")
        if len(train) != 1:
            raise ValueError(
                f"benchmark {self.name!r} has {len(train)} train splits; training needs exactly one"
            )
        return train[0]

    def limited(self, limit: int | None) -> Benchmark:
        return replace(self, splits={k: s.limited(limit) for k, s in self.splits.items()})

    def group_ids(self, split: Split) -> np.ndarray:
        """Integer group id per example (0 when the benchmark defines no groups)."""
        if not self.group_cols:
            return np.zeros(len(split), dtype=np.int64)
        keys = split.meta[self.group_cols].astype(str).agg("|".join, axis=1)
        return pd.factorize(keys, sort=True)[0].astype(np.int64)


def to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array)


class BenchmarkTransform:
    """HWC uint8 (or PIL) -> normalised CHW float tensor at the benchmark's resolution (images
    of another size are resized, bilinear): for models trained from scratch."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], size: tuple[int, int] | None = None
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.size = tuple(size) if size else None

    def __call__(self, image: Any) -> torch.Tensor:
        if self.size is not None:
            height, width = np.asarray(image).shape[:2]
            if (height, width) != self.size:
                image = to_pil(image).resize((self.size[1], self.size[0]), Image.BILINEAR)
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return (
            f"BenchmarkTransform(mean={self.mean.flatten().tolist()}, "
            f"std={self.std.flatten().tolist()}, size={self.size})"
        )


class PILThen:
    """Converts arrays to PIL before a torchvision/timm transform (which expects PIL)."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> torch.Tensor:
        return self.transform(to_pil(image))

    def __repr__(self) -> str:
        return repr(self.transform)


def resolve_transform(
    mode: str, model: torch.nn.Module, bench: Benchmark
) -> tuple[Callable[[Any], torch.Tensor], dict[str, Any]]:
    """The eval transform and a description of it (which goes into the forward key).

    mode: "timm" uses timm.data.resolve_model_data_config (size, crop, interpolation,
    mean/std) of the model; "benchmark" uses the benchmark's own resolution and mean/std.
    """
    if mode == "timm":
        import timm.data

        data_config = timm.data.resolve_model_data_config(model)
        transform = timm.data.create_transform(**data_config, is_training=False)
        desc = {"kind": "timm", **{k: _jsonable(v) for k, v in data_config.items()}}
        return PILThen(transform), desc
    if mode == "benchmark":
        desc = {
            "kind": "benchmark",
            "input_size": [bench.in_chans, *bench.image_size],
            "mean": list(bench.mean),
            "std": list(bench.std),
        }
        return BenchmarkTransform(bench.mean, bench.std, bench.image_size), desc
    raise ValueError(f"model.transform must be 'auto', 'timm' or 'benchmark', got {mode!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


class DataError(FileNotFoundError):
    """Data on disk missing or not in the expected layout. A FileNotFoundError, since most
    often something is absent; the message lists every problem found."""


class DatasetAdapter:
    """Base of dataset plugins. Constructing one is cheap (it only stores options);
    `fingerprint()` says what determines the data without loading it, so a finished run
    is recognised before any data is read; `load()` builds the Benchmark.

    The options are the arguments the constructor was called with: every subclass's
    `__init__` is wrapped (`__init_subclass__`) so that, before its body runs, its arguments
    are bound to its signature, defaults applied, and stored as `name`, `limit` and
    `options`. `key_config()` is derived from them, so a new constructor option is in the
    run key without being repeated anywhere. Left out of the key, by declaration only:

    - `path_options`: options that are paths (where the data lives, not what it is). They
      must exist (`verify()`), and the fingerprint stands for what they point to.
    - `key_exclude`: other options that do not determine the data (hints, cache folders...).

    `normalise_options()` turns the bound arguments into the recorded ones where a value
    has a canonical form (a default filled in, "all" resolved to names), so that equal data
    gets equal keys. A subclass's `__init__` does not call `super().__init__`.
    """

    path_options: tuple[str, ...] = ("root",)
    key_exclude: tuple[str, ...] = ()

    def __init_subclass__(cls, record: bool = True, **kwargs: Any) -> None:
        """record=False: the subclass sets name, limit and options itself (WithOODSets)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if record and init is not None:
            cls.__init__ = _recording_init(cls, init)  # type: ignore[method-assign]

    def __init__(self, name: str, limit: int | None = None, **options: Any) -> None:
        # Only for subclasses without their own __init__ (options as keyword arguments);
        # a wrapped constructor has recorded them already.
        if "options" not in self.__dict__:
            self._record(name, limit, options)

    def _record(self, name: str, limit: int | None, options: dict[str, Any]) -> None:
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"dataset.limit must be a positive integer or null, got {limit!r}")
        self.name = name
        self.limit = limit
        self.options = options

    @classmethod
    def normalise_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The options to record (and key) from the bound constructor arguments (defaults
        applied, name and limit included); the identity unless a subclass canonicalises."""
        return options

    def verify(self) -> list[str]:
        """Problems with the data on disk, each naming the path, what was expected there and how
        to get the data; [] when the data looks usable. Cheap: listings and metadata, never
        every image. Adapters extend it with their layout's checks (files, columns, shapes).
        `python -m harness.verify` prints it; every run calls `check()` before any work."""
        problems = []
        for key in self.path_options:
            value = self.options.get(key)
            if value is not None and not Path(value).exists():
                problems.append(
                    f"dataset.{key}={value} does not exist (dataset {self.name!r}; set data_root "
                    f"or dataset.{key} to where the data is)"
                )
        return problems

    def augmentation_refusals(self) -> dict[str, str]:
        """The training-augmentation effects this benchmark refuses, with why: {effect: reason}
        (effects: hflip, vflip, crop, colour, geometric, erase; harness/augment.py). E.g. a
        flip changes a digit; colour jitter destroys a colour cue the benchmark measures.
        Depends on the adapter's own options; checked before anything is written."""
        return {}

    def check(self) -> None:
        """Raises DataError listing every problem `verify()` finds."""
        problems = self.verify()
        if problems:
            raise DataError(f"dataset {self.name!r} is not usable:\n  - " + "\n  - ".join(problems))

    def key_config(self) -> dict[str, Any]:
        """The options that determine the data: name, limit and the constructor's options in
        its signature's order, without paths and declared exclusions."""
        left_out = (*self.path_options, *self.key_exclude)
        opts = {k: v for k, v in self.options.items() if k not in left_out}
        return {"name": self.name, "limit": self.limit, **opts}

    def fingerprint(self) -> str:
        raise NotImplementedError

    def load(self, cache_dir: Path) -> Benchmark:
        raise NotImplementedError


class WithOODSets(DatasetAdapter, record=False):
    """A dataset adapter plus adapters that each contribute OOD splits (the top-level
    `ood_sets`, e.g. folders of images): checks, key, fingerprint and splits of all of them.
    Its constructor's arguments are adapters, not options: it takes the base's (record=False)."""

    def __init__(self, base: DatasetAdapter, extras: Sequence[DatasetAdapter]) -> None:
        self._record(base.name, base.limit, dict(base.options))
        self.path_options, self.key_exclude = base.path_options, base.key_exclude
        self.base, self.extras = base, list(extras)

    def verify(self) -> list[str]:
        return [*self.base.verify(), *(p for extra in self.extras for p in extra.verify())]

    def augmentation_refusals(self) -> dict[str, str]:
        return self.base.augmentation_refusals()

    def key_config(self) -> dict[str, Any]:
        return {**self.base.key_config(), "ood_sets": [e.key_config() for e in self.extras]}

    def fingerprint(self) -> str:
        return hash_arrays(self.base.fingerprint(), *(e.fingerprint() for e in self.extras))

    def load(self, cache_dir: Path) -> Benchmark:
        bench = self.base.load(cache_dir)
        splits = dict(bench.splits)
        for extra in self.extras:
            for name, split in extra.load(cache_dir).splits.items():
                if name in splits:
                    raise ValueError(
                        f"ood_sets: split {name!r} of {extra.name!r} clashes with a split of "
                        f"{bench.name!r}; give the OOD set another name"
                    )
                if split.role not in ("ood", "ood_val"):
                    raise ValueError(f"ood_sets: split {name!r} has role {split.role!r}, not ood")
                splits[name] = split
        return replace(bench, splits=splits)


def _recording_init(cls: type[DatasetAdapter], init: Callable[..., None]) -> Callable[..., None]:
    """`init` that first records its arguments (bound to its signature, defaults applied,
    normalised by the class) as the adapter's name, limit and options. Only the outermost
    constructor of an instance records: a subclass's signature is the one that counts, and
    what it forwards with **kwargs to its parent's constructor is bound to that one's."""
    if any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(init).parameters.values()):
        raise TypeError(f"{init.__qualname__}: adapter options must be named (no *args)")

    @functools.wraps(init)
    def wrapper(self: DatasetAdapter, *args: Any, **kwargs: Any) -> None:
        if "options" not in self.__dict__:
            options = type(self).normalise_options(_bound_options(cls, init, self, args, kwargs))
            self._record(options.pop("name", None), options.pop("limit", None), options)
        init(self, *args, **kwargs)

    return wrapper


def _bound_options(
    owner: type, init: Callable[..., None], adapter: Any, args: tuple, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The arguments of `init` (defined by class `owner`) by name, defaults applied; those it
    takes as **kwargs bound in turn to the parent constructor's signature."""
    signature = inspect.signature(init)
    bound = signature.bind(adapter, *args, **kwargs)
    bound.apply_defaults()
    options = dict(bound.arguments)
    del options[next(iter(signature.parameters))]  # self
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            forwarded = options.pop(param.name)
            parent = next(c for c in owner.__mro__[1:] if "__init__" in c.__dict__)
            if parent is DatasetAdapter:
                options.update(forwarded)
            else:
                parent_init = inspect.unwrap(parent.__dict__["__init__"])
                options.update(_bound_options(parent, parent_init, adapter, (), forwarded))
    return options
