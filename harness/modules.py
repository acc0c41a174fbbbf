"""Bring your own nn.Module (conf/model/module.yaml, docs/models.md).

    python -m harness.run model=module model.target=pkg.mod.make_net +model.kwargs.width=64 \
        trainer.epochs=0 [model.checkpoint=weights.pt]
    python -m harness.run model=module model._target_=pkg.mod.make_net ...   (the same)

`model.target` names a class or function that returns an nn.Module, called with
`model.kwargs`. Two kinds of module are evaluated:

- *features + a linear head*: the module has `forward_features(x)` giving (batch, D)
  features (or timm's pair forward_features / forward_head(pre_logits=True)) and one
  nn.Linear classifier (`get_classifier()`, or an attribute `fc`, `head`, `classifier`,
  `linear`, `last_linear`; or the one named by `model.head`). Logits are head(features), and
  the first evaluation batch checks that this is what the module's own forward gives, so a
  module whose forward does more (a temperature, a normalisation) is refused, not misread.
  The head is stored as head.npz: every scorer runs.
- *logits only* (`model.head=null`, or no head found): the module's forward is the logits;
  no features are cached (width 0), no head is stored, and the scorers that need features
  or the head are skipped with a note in notes.json.

The key holds the target, its kwargs, the head option and the checkpoint's sha256 (harness/
keys.py: a plugin model's entries). This family lives in the harness, not in methods/, so
that `model._target_=<any factory>` works too: a `_target_` that is not a model family (no
`create`) is taken as the module's factory (harness/models.py: model_family).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from harness.data import Benchmark

HEAD_NAMES = ("fc", "head", "classifier", "linear", "last_linear")
LOGITS_ONLY = "the module gives logits only (model.head=null or no linear head found)"


class ModuleAdapter(nn.Module):
    """A user's module speaking timm's API (forward_features, forward_head(pre_logits=...),
    get_classifier, num_classes), which the forward pass, stored head and training use."""

    def __init__(self, inner: nn.Module, head: str | None, num_classes: int) -> None:
        super().__init__()
        self.inner = inner
        self.head_name = head  # attribute path of the nn.Linear inside `inner`, or None
        self.num_classes = num_classes
        self.checked = head is None  # the first eval batch compares with the module's forward
        self.no_head_note = LOGITS_ONLY
        if getattr(inner, "pretrained_cfg", None):  # model.transform=timm reads it
            self.pretrained_cfg = inner.pretrained_cfg

    def classifier(self) -> nn.Linear | None:
        return self.inner.get_submodule(self.head_name) if self.head_name else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.inner.forward_features(x)
        if hasattr(self.inner, "forward_head"):  # timm's API: pooling is forward_head's
            f = self.inner.forward_head(f, pre_logits=True)
        if f.ndim != 2:
            raise ValueError(
                f"model.target: forward_features returned shape {tuple(f.shape)}; it must give "
                "(batch, features) (pool it), or set model.head=null to use the logits alone"
            )
        return f

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_name is None:
            return self.inner(x)  # logits only: the "features" carried to forward_head
        f = self.features(x)
        if not self.checked and not self.training:
            self.checked = True
            own, mine = self.inner(x), self.classifier()(f)
            tol = 1e-3 if own.dtype == torch.float32 else 3e-2  # autocast: bf16/fp16 rounding
            own, mine = own.float(), mine.float()
            if own.shape != mine.shape or not torch.allclose(
                own, mine, rtol=tol, atol=tol * max(1.0, float(own.abs().max()))
            ):
                raise ValueError(
                    f"model.head={self.head_name}: the module's forward(x) is not "
                    f"{self.head_name}(forward_features(x)) (max difference "
                    f"{float((own - mine).abs().max()) if own.shape == mine.shape else 'shape'}); "
                    "set model.head=null to evaluate its logits alone"
                )
        return f

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.head_name is None:
            return x[:, :0] if pre_logits else x  # no features: width 0
        return x if pre_logits else self.classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier() or nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        old = self.classifier()
        if old is None:
            raise ValueError(
                f"the module's head gives {self.num_classes} outputs, the benchmark has "
                f"{num_classes} classes, and a logits-only module (model.head=null) has no "
                "linear head to replace: build it with the benchmark's classes (model.kwargs)"
            )
        parent, _, attr = self.head_name.rpartition(".")
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        setattr(self.inner.get_submodule(parent) if parent else self.inner, attr, new)
        self.num_classes = num_classes


def find_head(inner: nn.Module, option: str | None) -> str | None:
    """The attribute path of the module's linear head (model.head: auto | a name | null)."""
    if option is None:
        return None
    if option != "auto":
        try:
            module = inner.get_submodule(option)
        except AttributeError:
            module = None
        if not isinstance(module, nn.Linear) or not hasattr(inner, "forward_features"):
            raise ValueError(
                f"model.head={option}: the module needs forward_features and an nn.Linear "
                f"named {option} (found {type(module).__name__}); model.head=null uses logits"
            )
        return option
    if not hasattr(inner, "forward_features"):
        return None
    if hasattr(inner, "get_classifier"):
        found = inner.get_classifier()
        for name, module in inner.named_modules():
            if module is found and isinstance(module, nn.Linear):
                return name
    for name in HEAD_NAMES:
        if isinstance(getattr(inner, name, None), nn.Linear):
            return name
    return None


class TorchModule:
    """The model family of conf/model/module.yaml (harness/models.py: check, create, label)."""

    entries: ClassVar[tuple[str, ...]] = (
        "_target_",
        "name",
        "target",
        "kwargs",
        "head",
        "checkpoint",
        "transform",
        "label_map",
        # timm's entries, present when `_target_` is set on top of model=resnet18
        "pretrained",
        "stem",
        "freeze_bn",
    )

    @classmethod
    def own_target(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def target(cls, cfg: dict[str, Any]) -> tuple[str, str]:
        """(config key, dotted path) of the module's factory."""
        if cfg.get("_target_") and cfg["_target_"] != cls.own_target():
            return "model._target_", cfg["_target_"]
        if not cfg.get("target"):
            raise ValueError(
                "model=module needs model.target=<package.module.factory>: a class or function "
                "that returns an nn.Module (docs/models.md)"
            )
        return "model.target", str(cfg["target"])

    @classmethod
    def factory(cls, cfg: dict[str, Any]) -> Any:
        from harness import registry

        key, path = cls.target(cfg)
        try:
            factory = registry.resolve_target("model", {"_target_": path, "name": path})
        except ValueError as exc:
            raise ValueError(f"{key}={path}: cannot be imported ({exc.__cause__})") from exc
        if not callable(factory):
            raise ValueError(f"{key}={path}: not a class or function ({type(factory).__name__})")
        return factory

    @classmethod
    def check(cls, cfg: dict[str, Any]) -> None:
        unknown = sorted(set(cfg) - set(cls.entries))
        if unknown:
            raise ValueError(f"model=module: unknown entries {unknown}; known: {cls.entries}")
        for k in ("pretrained", "stem", "freeze_bn"):
            if cfg.get(k):
                raise ValueError(f"model.{k} is timm's; a model=module takes model.kwargs")
        factory = cls.factory(cfg)
        kwargs = cfg.get("kwargs") or {}
        key, path = cls.target(cfg)
        try:  # a misspelt keyword is refused before anything is written
            inspect.signature(factory).bind(**kwargs)
        except TypeError as exc:
            raise ValueError(f"model.kwargs={kwargs!r} for {key}={path}: {exc}") from exc
        except ValueError:
            pass  # no signature to read (a builtin): the call itself will tell
        head = cfg.get("head", "auto")
        if head is not None and not isinstance(head, str):
            raise ValueError(f"model.head must be auto, an attribute name or null, got {head!r}")

    @classmethod
    def label(cls, cfg: dict[str, Any]) -> str:
        """The rows' model column: model.name when given, else the factory's name."""
        key, path = cls.target(cfg)
        if key == "model.target" and cfg.get("name"):
            return str(cfg["name"])
        return path.rpartition(".")[2]

    @classmethod
    def create(cls, cfg: dict[str, Any], bench: Benchmark, train: bool) -> ModuleAdapter:
        from harness.models import load_state_dict

        cls.check(cfg)
        key, path = cls.target(cfg)
        inner = cls.factory(cfg)(**(cfg.get("kwargs") or {}))
        if not isinstance(inner, nn.Module):
            raise ValueError(f"{key}={path} returned {type(inner).__name__}, not an nn.Module")
        if cfg.get("checkpoint"):
            state = load_state_dict(cfg["checkpoint"])
            state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel
            result = inner.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f"model.checkpoint={cfg['checkpoint']} does not fit {path}: "
                    f"{len(result.missing_keys)} missing keys {result.missing_keys[:3]}, "
                    f"{len(result.unexpected_keys)} unexpected {result.unexpected_keys[:3]}"
                )
        head = find_head(inner, cfg.get("head", "auto"))
        inner.eval()
        with torch.no_grad():  # the number of outputs, from one example of the input size
            size = (getattr(inner, "pretrained_cfg", None) or {}).get("input_size")
            if cfg.get("transform") != "timm" or not size:
                size = (bench.in_chans, *bench.image_size)
            outputs = int(inner(torch.zeros(1, *size)).shape[-1])
        model = ModuleAdapter(inner, head, outputs)
        if train and outputs != bench.num_classes:
            model.reset_classifier(bench.num_classes)  # fine-tune: a new head
        return model
