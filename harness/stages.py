"""Per-stage pooled features in the Outputs cache, opt-in. A scorer that needs
"stage_features" (multi-layer Mahalanobis) makes the run's forward pass record, through
forward hooks on the modules named in timm's `feature_info`, each stage's output averaged
over space (over tokens for a ViT block's B × N × D output), in the same pass as the logits
and features: no pass of its own. The request enters the forward key only when set, so every
existing cache keeps its key (harness/keys.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness import registry

STAGE_NEED = "stage_features"


def stage_request(eval_cfg: dict[str, Any]) -> bool:
    """Whether a scorer of the eval config needs the per-stage features. Instances are asked
    (constructing is cheap): a composite scorer needs what its inner scorer needs."""
    for name, scorer_cfg in (eval_cfg.get("scorers") or {}).items():
        cls = registry.resolve_target("scorer", {"name": name, **scorer_cfg})
        if STAGE_NEED in getattr(registry.construct(cls, scorer_cfg), "needs", ()):
            return True
    return False


def stage_modules(model: torch.nn.Module) -> list[str] | None:
    """The module names of timm's feature_info (stem, then each stage), or None for a model
    without it (a plugin model, a custom nn.Module)."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) or not info:
        return None
    try:
        names = [entry["module"] for entry in info]
        for name in names:
            model.get_submodule(name)
    except (KeyError, TypeError, AttributeError):
        return None
    return names


def pool(t: torch.Tensor) -> torch.Tensor:
    """One vector per example: B × C × H × W averaged over H, W; B × N × D over N."""
    if t.ndim == 4:
        return t.float().mean(dim=(2, 3))
    if t.ndim == 3:
        return t.float().mean(dim=1)
    if t.ndim == 2:
        return t.float()
    raise ValueError(f"stage output of shape {tuple(t.shape)} cannot be pooled")


class StageRecorder:
    """Forward hooks on the stage modules while it is entered; `begin` before each batch
    (an out-of-memory retry drops the failed attempt), `take` after it."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        self.modules = [model.get_submodule(n) for n in names]
        self.pending: list[list[torch.Tensor]] = [[] for _ in names]
        self.handles: list[Any] = []

    def __enter__(self) -> StageRecorder:
        for i, module in enumerate(self.modules):
            self.handles.append(module.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _hook(self, i: int) -> Any:
        def record(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            self.pending[i].append(pool(output).detach().cpu())

        return record

    def begin(self) -> None:
        self.pending = [[] for _ in self.modules]

    def take(self, n: int) -> list[np.ndarray] | None:
        """The batch's pooled stages (n rows each), or None when the forward pass did not
        run the stage modules (a method's own predict)."""
        if not all(self.pending):
            return None
        out = [torch.cat(parts).numpy() for parts in self.pending]
        if any(len(f) != n for f in out):
            return None  # a module run more or less than once per example: no stages
        return out


def concat_stages(parts: list[list[np.ndarray] | None]) -> list[np.ndarray] | None:
    """Each stage's batches joined; None when any batch had none."""
    if not parts or any(p is None for p in parts):
        return None
    return [np.concatenate(stage) for stage in zip(*parts, strict=True)]
