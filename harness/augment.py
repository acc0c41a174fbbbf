"""Training augmentation (the `augment=` config group, conf/augment/): the training split's
transform, seeded per (seed, epoch, example).

Two kinds:
- torchvision policies (`flip_crop`, `randaugment`, `trivialaugment`, `augmix`, `domainbed`):
  applied to the raw image (as PIL) before the run's evaluation transform, which then resizes
  and normalises as it does for evaluation;
- `timm`: timm's `create_transform(is_training=True, **options)` replaces the whole training
  transform, normalisation included, so any timm training recipe works.

Evaluation transforms are never augmented. Each augmentation has *effects* (hflip, vflip,
crop, colour, geometric, erase); a benchmark refuses the effects that change or destroy its
label or its shift (`DatasetAdapter.augmentation_refusals()`): `check_refusals` raises
before anything is written.

Determinism: `SeededTransform` seeds Python's `random` (timm's policies), NumPy and torch's
CPU generator (torchvision's) from (seed, epoch, example index) around each call and restores
their previous states, so a rerun, a resumed run and any number of loader workers give
bit-identical batches.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from harness.data import Benchmark, PILThen, to_pil

# name -> the options its YAML may set (besides `name`); `none` has none
TORCHVISION_KINDS = {
    "flip_crop": ("crop", "padding", "scale", "flip"),
    "randaugment": ("crop", "padding", "scale", "flip", "num_ops", "magnitude"),
    "trivialaugment": ("crop", "padding", "scale", "flip", "num_magnitude_bins"),
    "augmix": ("crop", "padding", "scale", "flip", "severity", "mixture_width", "chain_depth"),
    "domainbed": ("crop", "padding", "scale", "flip", "colour_jitter", "grayscale"),
}
KINDS = ("none", *TORCHVISION_KINDS, "timm")
CROPS = (None, "pad", "resized")
EFFECTS = ("hflip", "vflip", "crop", "colour", "geometric", "erase")
# the colour and geometric operations of torchvision's policies (RandAugment, TrivialAugment,
# AugMix draw from Brightness, Color, Contrast, Sharpness, Posterize, Solarize, AutoContrast,
# Equalize and ShearX/Y, TranslateX/Y, Rotate)
POLICY_EFFECTS = {"randaugment", "trivialaugment", "augmix"}


def augment_name(cfg: dict[str, Any] | None) -> str:
    return (cfg or {}).get("name", "none")


def validate(cfg: dict[str, Any] | None) -> None:
    """Clear errors naming the key, before anything is written."""
    cfg = cfg or {}
    name = augment_name(cfg)
    if name not in KINDS:
        raise ValueError(f"augment={name!r}: must be one of {KINDS} (conf/augment/)")
    if name == "none":
        return
    if name == "timm":
        options = cfg.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError(f"augment.options must be a mapping, got {options!r}")
        allowed = set(inspect.signature(_timm_create_transform()).parameters)
        managed = {"input_size", "is_training", "mean", "std", "normalize"}
        bad = sorted(set(options) - allowed | set(options) & managed)
        if bad:
            raise ValueError(
                f"augment.options: {bad} are not options of timm.data.create_transform "
                f"(or are set by the harness: {sorted(managed)})"
            )
        unknown = sorted(set(cfg) - {"name", "options"})
    else:
        unknown = sorted(set(cfg) - {"name", *TORCHVISION_KINDS[name]})
        if cfg.get("crop") not in CROPS:
            raise ValueError(f"augment.crop must be one of {CROPS}, got {cfg.get('crop')!r}")
        if not isinstance(cfg.get("flip", False), bool):
            raise ValueError(f"augment.flip must be true or false, got {cfg['flip']!r}")
        scale = cfg.get("scale", [0.08, 1.0])
        if not (
            isinstance(scale, list | tuple) and len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1
        ):
            raise ValueError(
                f"augment.scale must be [low, high] with 0 < low <= high <= 1: {scale}"
            )
    if unknown:
        raise ValueError(f"augment={name}: unknown options {unknown}")


def effects(cfg: dict[str, Any] | None) -> set[str]:
    """What the augmentation does to an image, in EFFECTS' words."""
    cfg = cfg or {}
    name = augment_name(cfg)
    if name == "none":
        return set()
    if name == "timm":
        defaults = {
            k: p.default for k, p in inspect.signature(_timm_create_transform()).parameters.items()
        }
        o = {**defaults, **(cfg.get("options") or {})}
        if o.get("no_aug"):  # timm's resize and centre crop only
            return set()
        found = {"crop"}  # timm's RandomResizedCrop
        found |= {"hflip"} if (o.get("hflip") or 0) > 0 else set()
        found |= {"vflip"} if (o.get("vflip") or 0) > 0 else set()
        found |= {"erase"} if (o.get("re_prob") or 0) > 0 else set()
        jitter = o.get("color_jitter") or 0
        jitter = max(jitter) if isinstance(jitter, list | tuple) else jitter
        if o.get("auto_augment"):
            found |= {"colour", "geometric"}
        elif jitter > 0 or (o.get("grayscale_prob") or 0) > 0:
            found.add("colour")
        return found
    found = {"crop"} if cfg.get("crop") else set()
    found |= {"hflip"} if cfg.get("flip") else set()
    if name in POLICY_EFFECTS:
        found |= {"colour", "geometric"}
    if name == "domainbed" and (cfg.get("colour_jitter") or cfg.get("grayscale")):
        found.add("colour")
    return found


def check_refusals(cfg: dict[str, Any] | None, adapter: Any) -> None:
    """Raises when the benchmark refuses an effect of the augmentation, naming both and why."""
    refusals = adapter.augmentation_refusals() if hasattr(adapter, "augmentation_refusals") else {}
    refused = {e: refusals[e] for e in sorted(effects(cfg)) if e in refusals}
    if refused:
        why = "; ".join(f"{e}: {reason}" for e, reason in refused.items())
        raise ValueError(
            f"augment={augment_name(cfg)} is refused by dataset {adapter.name!r} ({why}). "
            "Choose another augmentation or switch the effect off (e.g. augment.flip=false, "
            "augment.crop=null, or augment.options.hflip=0 for augment=timm)"
        )


# ---------------------------------------------------------------- building the transform


def _timm_create_transform() -> Callable[..., Any]:
    import timm.data

    return timm.data.create_transform


def _crop(cfg: dict[str, Any]) -> Callable[[Any], Any] | None:
    """A crop at the image's own size (the evaluation transform resizes afterwards)."""
    from torchvision.transforms import v2

    kind = cfg.get("crop")
    if kind is None:
        return None
    padding, scale = int(cfg.get("padding", 4)), tuple(cfg.get("scale", [0.08, 1.0]))

    def crop(image: Any) -> Any:
        size = (image.height, image.width)
        if kind == "pad":
            return v2.RandomCrop(size, padding=padding, padding_mode="constant")(image)
        return v2.RandomResizedCrop(size, scale=scale, antialias=True)(image)

    return crop


def _policy(name: str, cfg: dict[str, Any]) -> list[Callable[[Any], Any]]:
    from torchvision.transforms import v2

    if name == "randaugment":
        return [v2.RandAugment(num_ops=cfg.get("num_ops", 2), magnitude=cfg.get("magnitude", 9))]
    if name == "trivialaugment":
        return [v2.TrivialAugmentWide(num_magnitude_bins=cfg.get("num_magnitude_bins", 31))]
    if name == "augmix":
        return [
            v2.AugMix(
                severity=cfg.get("severity", 3),
                mixture_width=cfg.get("mixture_width", 3),
                chain_depth=cfg.get("chain_depth", -1),
            )
        ]
    if name == "domainbed":  # DomainBed's training transform (domainbed/datasets.py)
        ops: list[Callable[[Any], Any]] = []
        j = cfg.get("colour_jitter", 0.3)
        if j:
            ops.append(v2.ColorJitter(j, j, j, j))
        if cfg.get("grayscale", 0.1):
            ops.append(v2.RandomGrayscale(cfg.get("grayscale", 0.1)))
        return ops
    return []


class TorchvisionAugment:
    """Raw image -> PIL -> crop, flip, policy -> the evaluation transform."""

    def __init__(self, cfg: dict[str, Any], then: Callable[[Any], torch.Tensor]) -> None:
        from torchvision.transforms import v2

        self.name = augment_name(cfg)
        crop = _crop(cfg)
        self.ops = [op for op in (crop,) if op is not None]
        if cfg.get("flip"):
            self.ops.append(v2.RandomHorizontalFlip(0.5))
        self.ops += _policy(self.name, cfg)
        self.then = then

    def __call__(self, image: Any) -> torch.Tensor:
        image = to_pil(image)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        for op in self.ops:
            image = op(image)
        return self.then(np.array(image))  # a writable array (asarray of a PIL image is not)

    def __repr__(self) -> str:
        return f"TorchvisionAugment({self.name}: {self.ops} then {self.then!r})"


def training_transform(
    cfg: dict[str, Any] | None,
    eval_transform: Callable[[Any], torch.Tensor],
    transform_desc: dict[str, Any],
    bench: Benchmark,
    seed: int,
) -> Callable[[Any], torch.Tensor]:
    """The training split's transform: the evaluation transform itself for `none`, else the
    augmentation (seeded per example: SeededTransform)."""
    name = augment_name(cfg)
    validate(cfg)
    if name == "none":
        return eval_transform
    assert cfg is not None
    if name == "timm":
        if transform_desc.get("kind") == "timm":  # the pretrained model's own data config
            size = transform_desc["input_size"]
            base = {k: transform_desc[k] for k in ("mean", "std", "interpolation")}
        else:  # the benchmark's resolution and normalisation
            size = [bench.in_chans, *bench.image_size]
            base = {"mean": list(bench.mean), "std": list(bench.std)}
        options = {**base, **(cfg.get("options") or {})}
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        transform = _timm_create_transform()(input_size=tuple(size), is_training=True, **options)
        return SeededTransform(PILThen(transform), seed)
    return SeededTransform(TorchvisionAugment(cfg, eval_transform), seed)


@contextmanager
def seeded(seed: int, epoch: int, index: int, stream: int | None = None) -> Iterator[None]:
    """Python's random, NumPy's global generator and torch's CPU generator seeded from
    (seed, epoch, index) and, where given, a stream number (e.g. FixMatch's weak and strong
    views of one unlabeled input draw apart); their previous states restored afterwards."""
    entropy = [seed, epoch, index] + ([] if stream is None else [stream])
    words = np.random.SeedSequence(entropy).generate_state(2)
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
    random.seed(int(words[0]))
    np.random.seed(int(words[0]))
    torch.default_generator.manual_seed(int(words[0]) << 32 | int(words[1]))
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.default_generator.set_state(cpu)


class SeededTransform:
    """A random transform made a function of (seed, epoch, example index): call with the
    image and its index; `epoch` is set by the training loop before each epoch's loader.
    `stream` (None: the training split's) keeps other streams' draws apart."""

    def __init__(
        self, transform: Callable[[Any], torch.Tensor], seed: int, stream: int | None = None
    ) -> None:
        self.transform, self.seed, self.epoch, self.stream = transform, int(seed), 0, stream

    def __call__(self, image: Any, index: int) -> torch.Tensor:
        with seeded(self.seed, self.epoch, int(index), self.stream):
            return self.transform(image)

    def __repr__(self) -> str:
        return f"SeededTransform({self.transform!r}, seed={self.seed})"
