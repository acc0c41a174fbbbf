"""open_clip models as zero-shot classifiers (conf/model/open_clip.yaml, docs/models.md).

    python -m harness.run model=open_clip model.name=ViT-B-32 model.weights=laion2b_s34b_b79k \
        trainer.epochs=0 dataset=digits_c

The cached features are the L2-normalised image embeddings; the head is one linear layer,
W = logit_scale × the normalised text embeddings of the class names (each the mean over the
prompt templates, open_clip's own build_zero_shot_classifier), b = 0. It is saved as head.npz
like a timm head, so the head check passes and the feature scorers run from the cache.
With trainer.epochs > 0 the image tower is fine-tuned from that zero-shot head.

Weights: an open_clip pretrained tag, read from the local Hugging Face cache (no network at
run time: HF_HUB_OFFLINE=1), a local weights file, or null: a randomly initialised model (the
tests). `config` registers an open_clip model config (embed_dim, vision_cfg, text_cfg) under
`name` first, for architectures open_clip does not ship (the tests' tiny CLIP).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import Benchmark
from harness.keys import is_weights_path

# open_clip's own template lists, never retyped here
PROMPT_SETS = ("openai", "simple")


def templates(prompts: str | list[str]) -> list[Any]:
    """The prompt templates: a named open_clip set, or a list of strings with `{}` for the class."""
    import open_clip

    if prompts == "openai":
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    if prompts == "simple":
        return list(open_clip.SIMPLE_IMAGENET_TEMPLATES)
    return list(prompts)


def register_config(name: str, config: dict[str, Any]) -> None:
    """Registers an open_clip model config under `name` through open_clip's public
    add_model_config (which reads JSON files; the config is written to a temporary one)."""
    import open_clip

    known = open_clip.get_model_config(name)
    if known is not None:
        if known != config:
            raise ValueError(
                f"model.config: open_clip already has a model {name!r} with another config; "
                "give the custom config its own model.name"
            )
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)


class ZeroShotCLIP(nn.Module):
    """An open_clip image tower with a zero-shot linear head, speaking timm's API."""

    def __init__(self, visual: nn.Module, weight: torch.Tensor, pretrained_cfg: dict) -> None:
        super().__init__()
        # Only the image tower is kept: the text tower's work is done once the head is built,
        # and many models per process should not each hold one.
        self.visual = visual
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.zero_()
        self.num_classes = int(weight.shape[0])
        self.pretrained_cfg = pretrained_cfg  # what timm.data.resolve_model_data_config reads

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # = CLIP.encode_image(x, normalize=True), on the tower kept
        return F.normalize(self.visual(x), dim=-1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes)
        self.num_classes = num_classes


class OpenCLIP:
    """The model family of conf/model/open_clip.yaml (harness/models.py: check, create)."""

    entries: ClassVar[tuple[str, ...]] = (
        "_target_",
        "name",
        "weights",
        "prompts",
        "class_names",
        "config",
        "transform",
        "pretrained",
        "checkpoint",
        "kwargs",
        "label_map",
    )

    @classmethod
    def check(cls, cfg: dict[str, Any]) -> None:
        import open_clip

        unknown = sorted(set(cfg) - set(cls.entries))
        if unknown:
            raise ValueError(f"model=open_clip: unknown entries {unknown}; known: {cls.entries}")
        for k in ("checkpoint", "label_map"):
            if cfg.get(k) is not None:
                raise ValueError(
                    f"model.{k} is not used by open_clip models (local weights: model.weights="
                    "<file>; the head is built for the benchmark's classes)"
                )
        if cfg.get("pretrained") or cfg.get("kwargs"):
            raise ValueError(
                "model.pretrained / model.kwargs are timm's: open_clip uses model.weights"
            )
        name, config = cfg["name"], cfg.get("config")
        if config is not None:
            if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(
                config
            ):
                raise ValueError(
                    f"model.config must be an open_clip model config with embed_dim, vision_cfg "
                    f"and text_cfg, got {config!r}"
                )
            if cfg.get("weights") and not is_weights_path(str(cfg["weights"])):
                raise ValueError(
                    "model.config builds a new architecture: no pretrained tag fits it"
                )
        elif name not in open_clip.list_models():
            import difflib

            close = difflib.get_close_matches(name, open_clip.list_models(), n=8, cutoff=0.6)
            raise ValueError(
                f"model.name={name!r} is not an open_clip model. Close matches: {close}. "
                "All names: python -c 'import open_clip; print(open_clip.list_models())'"
            )
        weights = cfg.get("weights")
        if weights is not None and not is_weights_path(str(weights)) and config is None:
            tags = open_clip.list_pretrained_tags_by_model(name)
            if weights not in tags:
                raise ValueError(f"model.weights={weights!r}: {name}'s pretrained tags are {tags}")
        prompts = cfg.get("prompts", "openai")
        if not (
            prompts in PROMPT_SETS
            or (
                isinstance(prompts, list)
                and prompts
                and all(isinstance(p, str) and "{}" in p for p in prompts)
            )
        ):
            raise ValueError(
                f"model.prompts must be one of {PROMPT_SETS} or a non-empty list of templates "
                f"with {{}} for the class name, got {prompts!r}"
            )
        names = cfg.get("class_names")
        if names is not None and not (
            isinstance(names, list) and all(isinstance(n, str) and n for n in names)
        ):
            raise ValueError(f"model.class_names must be null or a list of names, got {names!r}")

    @classmethod
    def create(cls, cfg: dict[str, Any], bench: Benchmark, train: bool) -> ZeroShotCLIP:
        """The image tower and the zero-shot head for the benchmark's classes."""
        import open_clip
        from open_clip.zero_shot_classifier import build_zero_shot_classifier

        cls.check(cfg)
        if cfg.get("config") is not None:
            register_config(cfg["name"], cfg["config"])
        names = cfg.get("class_names") or list(bench.classes)
        if len(names) != bench.num_classes:
            raise ValueError(
                f"model.class_names has {len(names)} names, benchmark {bench.name!r} has "
                f"{bench.num_classes} classes ({bench.classes})"
            )
        if bench.in_chans != 3:
            raise ValueError(
                f"open_clip models read RGB images; {bench.name!r} has {bench.in_chans} channels"
            )
        clip = open_clip.create_model(
            cfg["name"], pretrained=cfg.get("weights"), pretrained_text=False
        )
        clip.eval()
        tokenizer = open_clip.get_tokenizer(cfg["name"])
        text = build_zero_shot_classifier(
            clip, tokenizer, names, templates(cfg.get("prompts", "openai"))
        )  # (embed_dim, classes), columns L2-normalised
        weight = clip.logit_scale.detach().exp() * text.T
        pre = clip.visual.preprocess_cfg
        size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
        pretrained_cfg = {
            "input_size": (3, size, size),
            "interpolation": pre.get("interpolation", "bicubic"),
            "mean": tuple(pre["mean"]),
            "std": tuple(pre["std"]),
            "crop_pct": 1.0,  # open_clip resizes the short side to the size, then crops it
            "crop_mode": "center",
        }
        return ZeroShotCLIP(clip.visual, weight, pretrained_cfg)
