"""Models: creation, local checkpoints, label maps, logits and penultimate features.

Logits and features come from timm's own API (forward_features, then forward_head with
and without pre_logits), so any timm model works without a wrapper.

Other model families are plugins: a model config with a `_target_` names a class (e.g.
methods/models/clip.py's OpenCLIP, conf/model/open_clip.yaml) with the classmethods
`check(cfg)` (refuses a bad config before anything is written) and `create(cfg, bench,
train) -> nn.Module`; the module speaks timm's uniform API (forward_features,
forward_head(pre_logits=...), get_classifier(), num_classes), so the forward pass, the
stored head, the scorers and the training loop treat it as any timm model. The harness
imports the plugin only when it is selected (harness.registry). Optional classmethods:
`label(cfg)` (the rows' model column) and `key_entries(cfg, entries)` (what enters the run
key, e.g. RobustBench's checkpoint sha256 instead of its folder; harness/keys.py). A
`_target_` that is not a family (no `create`) is a module factory: harness/modules.py wraps
it (bring your own nn.Module, conf/model/module.yaml).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.data import Benchmark

MODULE_FAMILY = "harness.modules.TorchModule"  # conf/model/module.yaml


def model_family(cfg: dict[str, Any]) -> Any | None:
    """The plugin class named by the model config's `_target_`, or None for timm."""
    if not cfg.get("_target_"):
        return None
    from harness import registry

    try:
        family = registry.resolve_target("model", cfg)
    except ValueError as exc:
        raise ValueError(f"model._target_={cfg['_target_']}: {exc}") from exc
    if not hasattr(family, "create"):  # any module factory: bring your own nn.Module
        # reached by name as plugins are: harness/modules.py imports this module
        return registry.resolve_target("model", {"_target_": MODULE_FAMILY})
    return family


def check_model(cfg: dict[str, Any]) -> None:
    """The model config names a model that can be built, before anything is written."""
    family = model_family(cfg)
    if family is None:
        check_model_config(cfg)
    elif hasattr(family, "check"):
        family.check(cfg)


def model_label(cfg: dict[str, Any]) -> str:
    """The model column of the rows: the name, with a plugin model's weights tag (two open_clip
    tags of one architecture are two models)."""
    family = model_family(cfg)
    if hasattr(family, "label"):
        return family.label(cfg)
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


STEMS = (None, "cifar")


def check_model_config(cfg: dict[str, Any]) -> None:
    """model.stem is known and fits the model; model.pretrained=true can be met offline."""
    check_model_name(cfg["name"])
    if not isinstance(cfg.get("freeze_bn", False), bool):
        raise ValueError(f"model.freeze_bn must be true or false, got {cfg['freeze_bn']!r}")
    stem = cfg.get("stem")
    if stem not in STEMS:
        raise ValueError(f"model.stem must be one of {STEMS}, got {stem!r}")
    if stem == "cifar" and cfg.get("pretrained"):
        raise ValueError(
            f"model.stem=cifar replaces the stem of {cfg['name']}: its pretrained weights would "
            "not fit; train from scratch (model.pretrained=false)"
        )
    if cfg.get("kwargs"):  # a misspelt keyword fails here, on the meta device (no memory)
        import timm

        try:
            with torch.device("meta"):
                timm.create_model(cfg["name"], pretrained=False, **cfg["kwargs"])
        except TypeError as exc:
            raise ValueError(f"model.kwargs={cfg['kwargs']!r} for {cfg['name']}: {exc}") from exc
    if cfg.get("pretrained") and not cfg.get("checkpoint"):
        check_pretrained_weights(cfg["name"])


def hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or flag.upper() in ("1", "ON", "YES", "TRUE")


def check_pretrained_weights(name: str) -> None:
    """With the hub offline, the pretrained weights of `name` must be in the local cache:
    otherwise a clear error now, naming the model, the cache and how to fill it, instead of
    timm's retries (~47 s without network) and a generic message."""
    if not hub_offline():
        return
    import huggingface_hub
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    pcfg = get_pretrained_cfg(name)
    hub_id = getattr(pcfg, "hf_hub_id", None)
    if hub_id:
        repo, _, revision = hub_id.partition("@")
        names = [pcfg.hf_hub_filename] if pcfg.hf_hub_filename else []
        names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
        for filename in names:
            found = huggingface_hub.try_to_load_from_cache(
                repo, filename, revision=revision or None
            )
            if isinstance(found, str):
                return
        where = f"Hugging Face repository {hub_id}"
    elif getattr(pcfg, "url", None):
        return  # torch hub's own cache (no retries offline: torch.hub fails at once)
    else:
        raise ValueError(f"model.pretrained=true: timm has no pretrained weights for {name!r}")
    raise FileNotFoundError(
        f"model.pretrained=true: the weights of {name} ({where}) are not in the local cache "
        f"({constants.HF_HUB_CACHE}) and the hub is offline (HF_HUB_OFFLINE=1). On a machine "
        f'with network run `HF_HOME=/some/dir python -c "import timm; timm.create_model('
        f"'{name}', pretrained=True)\"`, copy /some/dir here and set HF_HOME to it "
        "(docs/experiments.md#pretrained-weights); or give the weights as "
        "model.checkpoint=FILE; or set model.pretrained=false"
    )


def apply_stem(model: nn.Module, stem: str | None) -> nn.Module:
    """stem=cifar: the CIFAR ResNet stem (He et al., 2016, section 4.2; the stem of the ~95%
    CIFAR-10 ResNet-18 figures): a 3×3 stride-1 first convolution and no max-pool, for 32×32
    inputs. Only for timm ResNets with a plain first convolution."""
    if stem is None:
        return model
    conv, pool = getattr(model, "conv1", None), getattr(model, "maxpool", None)
    if not isinstance(conv, nn.Conv2d) or pool is None:
        raise ValueError(
            f"model.stem=cifar needs a timm ResNet with one first convolution (conv1) and a "
            f"max-pool, not {type(model).__name__} (conv1: {type(conv).__name__})"
        )
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


class EvalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that stays in evaluation mode (running statistics, never updated) while its
    affine weights train: DomainBed's frozen BatchNorm (`model.freeze_bn=true`)."""

    def train(self, mode: bool = True) -> EvalBatchNorm2d:
        return super().train(False)


def freeze_batch_norm(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = EvalBatchNorm2d
            module.eval()
    return model


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

    check_model_config(cfg)
    kwargs = dict(cfg.get("kwargs") or {})
    train_classes = kwargs.get("num_classes", bench.num_classes)
    if train:
        kwargs.setdefault("in_chans", bench.in_chans)
        if not cfg.get("checkpoint"):
            kwargs.setdefault("num_classes", bench.num_classes)
    # with model.checkpoint, the pretrained weights would be overwritten: not fetched
    pretrained = bool(cfg.get("pretrained")) and not cfg.get("checkpoint")
    model = apply_stem(
        timm.create_model(cfg["name"], pretrained=pretrained, **kwargs), cfg.get("stem")
    )
    if cfg.get("freeze_bn"):
        freeze_batch_norm(model)
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
        note = getattr(model, "no_head_note", f"classifier is {kind}, not one linear layer")
        atomic_write_json(path.with_suffix(".json"), {"note": note})
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
