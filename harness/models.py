"""Models: creation, local checkpoints, label maps, logits and penultimate features.

Logits and features come from timm's own API (forward_features, then forward_head with
and without pre_logits), so any timm model works without a wrapper.

Other model families are plugins: a model config with a `_target_` names a class (e.g.
methods/models/clip.py's OpenCLIP, conf/model/open_clip.yaml) with the classmethods
`check(cfg)` (refuses a bad config before anything is written) and `create(cfg, bench,
train) -> nn.Module`; the module speaks timm's uniform API (forward_features,
forward_head(pre_logits=...), get_classifier(), num_classes), so the forward pass, the
stored head, the scorers and the training loop treat it as any timm model. The harness
imports the plugin only when it is selected (harness.registry).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.data import Benchmark


def model_family(cfg: dict[str, Any]) -> Any | None:
    """The plugin class named by the model config's `_target_`, or None for timm."""
    if not cfg.get("_target_"):
        return None
    from harness import registry

    return registry.resolve_target("model", cfg)


def check_model(cfg: dict[str, Any]) -> None:
    """The model config names a model that can be built, before anything is written."""
    family = model_family(cfg)
    if family is None:
        check_model_name(cfg["name"])
    elif hasattr(family, "check"):
        family.check(cfg)


def model_label(cfg: dict[str, Any]) -> str:
    """The model column of the rows: the name, with a plugin model's weights tag (two open_clip
    tags of one architecture are two models)."""
    weights = cfg.get("weights") if cfg.get("_target_") else None
    return f"{cfg['name']}:{Path(str(weights)).name}" if weights else str(cfg["name"])


def check_model_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(
            f"model.name={name!r} is not a timm model.{hint} "
            "All names: python -c 'import timm; print(timm.list_models())'"
        )


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a .safetensors file or a torch file, never unpickling arbitrary objects."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model.checkpoint={p}: not a loadable weights file ({exc})") from exc
    for wrapper in ("method", "model", "state_dict"):  # last.pt, other trainers' formats
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if isinstance(state, dict) and any(k.startswith("model.") for k in state):
        # the harness's best.pt / last.pt hold method.state_dict(): the timm model is `model.`,
        # beside the method's own state (group DRO's q, a weak model...), which is not loaded
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.checkpoint={p}: not a state dict of tensors")
    return state


def create_model(cfg: dict[str, Any], bench: Benchmark, train: bool) -> nn.Module:
    """A timm model for the benchmark.

    Training: a new head with the benchmark's num_classes and in_chans (unless model.kwargs
    overrides them); from a checkpoint, its weights are loaded with its own head first, then
    the head is replaced (fine-tuning). Evaluation only: the model's own head is kept
    (pretrained weights or model.checkpoint), and labels are mapped onto it by `label_index`.
    """
    family = model_family(cfg)
    if family is not None:
        return family.create(cfg, bench, train)
    import timm

    check_model_name(cfg["name"])
    kwargs = dict(cfg.get("kwargs") or {})
    train_classes = kwargs.get("num_classes", bench.num_classes)
    if train:
        kwargs.setdefault("in_chans", bench.in_chans)
        if not cfg.get("checkpoint"):
            kwargs.setdefault("num_classes", bench.num_classes)
    model = timm.create_model(cfg["name"], pretrained=bool(cfg.get("pretrained")), **kwargs)
    if cfg.get("checkpoint"):
        state = load_state_dict(cfg["checkpoint"])
        n_ckpt = checkpoint_num_classes(model, state)
        if n_ckpt is not None and n_ckpt != head_size(model) and "num_classes" not in kwargs:
            model.reset_classifier(n_ckpt)  # the checkpoint's head decides, unless kwargs say
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"model.checkpoint={cfg['checkpoint']} does not fit {cfg['name']} with kwargs "
                f"{kwargs}: {len(missing)} missing keys {missing[:3]}, {len(unexpected)} "
                f"unexpected {unexpected[:3]}, {len(mismatched)} of another shape {mismatched[:3]}"
            )
        model.load_state_dict(state)
        if train and head_size(model) != train_classes:
            model.reset_classifier(train_classes)  # fine-tune: a new head for the benchmark
    return model


def checkpoint_num_classes(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """Outputs of the classifier stored in a checkpoint (timm names it in pretrained_cfg)."""
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(classifier, list | tuple):  # distilled models: (head, head_dist)
        classifier = classifier[0]
    weight = state.get(f"{classifier}.weight") if classifier else None
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else None


def head_size(model: nn.Module) -> int:
    return int(model.num_classes)


def label_index(cfg: dict[str, Any], bench: Benchmark, model: nn.Module) -> list[int] | None:
    """Head index for each benchmark class, or None when head and benchmark agree.

    A benchmark covering a subset of the head's classes (e.g. ImageNet-R's 200) is handled
    by selecting those logits, which masks out the others.
    """
    mapping = cfg.get("label_map")
    n_head = head_size(model)
    if mapping is None and bench.head_index is not None and n_head == bench.head_classes:
        mapping = bench.head_index  # the benchmark's own subset of the head (ImageNet-R/A)
    if mapping is None:
        if n_head == bench.num_classes:
            return None
        raise ValueError(
            f"model {cfg['name']} has {n_head} outputs but benchmark {bench.name!r} has "
            f"{bench.num_classes} classes: set model.label_map to the head index of each class "
            f"({bench.classes}), or train a new head (trainer.epochs > 0)"
        )
    mapping = [int(i) for i in mapping]
    if len(mapping) != bench.num_classes:
        raise ValueError(
            f"model.label_map has {len(mapping)} entries, benchmark {bench.name!r} has "
            f"{bench.num_classes} classes"
        )
    bad = [i for i in mapping if not 0 <= i < n_head]
    if bad:
        raise ValueError(f"model.label_map indices {bad} are outside the head's 0..{n_head - 1}")
    return mapping


def forward_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, penultimate features) through timm's uniform API."""
    feats = model.forward_features(x)
    pre = model.forward_head(feats, pre_logits=True)
    logits = model.forward_head(feats)
    return logits, pre.flatten(1)


def map_logits(logits: torch.Tensor, index: list[int] | None) -> torch.Tensor:
    return logits if index is None else logits[:, index]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def save_head(model: nn.Module, index: list[int] | None, path: Path) -> None:
    """Stores the linear classifier (weight, bias; rows in the benchmark's class order) so
    that post-hoc scorers can re-apply it to modified features. Heads that are not one
    linear layer (e.g. distilled two-token heads) are not stored; a note says why."""
    from harness.store import atomic_save_npz, atomic_write_json

    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Linear):
        kind = type(classifier).__name__
        atomic_write_json(
            path.with_suffix(".json"), {"note": f"classifier is {kind}, not one linear layer"}
        )
        return
    weight = classifier.weight.detach().float().cpu().numpy()
    bias = (
        classifier.bias.detach().float().cpu().numpy()
        if classifier.bias is not None
        else np.zeros(weight.shape[0], dtype=np.float32)
    )
    if index is not None:
        weight, bias = weight[index], bias[index]
    atomic_save_npz(path, weight=weight, bias=bias)
