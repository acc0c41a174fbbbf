"""Pretrained backbones without network (model.pretrained=true from the local Hugging Face
cache, a clear error at once when the weights are not there) and the CIFAR ResNet stem."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from harness import run as run_mod
from harness.keys import make_keys, run_payload
from harness.models import apply_stem, check_model_config

from .conftest import TINY, compose_config


def _fill_cache(cache: Path, name: str) -> None:
    """The layout huggingface_hub writes (models--org--name/snapshots/<rev>, refs/main), with
    weights of the right architecture (random: no download)."""
    import timm
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    repo = get_pretrained_cfg(name).hf_hub_id
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    model = timm.create_model(name, pretrained=False)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, snapshot / "model.safetensors"
    )


def test_missing_weights_offline_fail_at_once_naming_the_model_and_the_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    started = time.monotonic()
    with pytest.raises(FileNotFoundError) as err:
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "model.pretrained=true"]))
    assert time.monotonic() - started < 10  # not timm's ~47 s of retries
    message = str(err.value)
    assert "test_resnet" in message and "timm/test_resnet" in message
    assert str(tmp_path / "empty") in message and "HF_HOME" in message
    assert not any((tmp_path / "runs").glob("*"))  # before anything is written


def test_pretrained_weights_are_read_from_the_local_cache_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    _fill_cache(tmp_path / "hub", "test_resnet")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    over = [*TINY, f"results_dir={tmp_path}", "model.pretrained=true", "eval=minimal"]
    summary = run_mod.run(compose_config(over))
    assert summary["status"] == "finished"
    transform = (Path(summary["run_dir"]) / "transform.json").read_text()
    assert '"kind": "timm"' in transform  # pretrained: the model's own data config


def test_cifar_stem_is_a_3x3_stride_1_conv_without_max_pool_and_is_in_the_key():
    import timm

    model = apply_stem(timm.create_model("resnet18", num_classes=10), "cifar")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    feats = model.forward_features(torch.zeros(1, 3, 32, 32))
    assert feats.shape[-1] == 4  # 32 / 8: no stride-2 conv, no pool in the stem

    def keys(overrides):
        c = OmegaConf.to_container(compose_config(overrides), resolve=True)
        return make_keys(run_payload(c, run_mod.build_dataset(c)))

    assert "stem" not in keys([]).payload["model"]
    assert keys(["model.stem=cifar"]).run_id != keys([]).run_id
    with pytest.raises(ValueError, match="model.stem must be one of"):
        check_model_config({"name": "resnet18", "stem": "imagenet"})
    with pytest.raises(ValueError, match="pretrained weights would not fit"):
        check_model_config({"name": "resnet18", "stem": "cifar", "pretrained": True})
    with pytest.raises(ValueError, match="needs a timm ResNet"):
        apply_stem(timm.create_model("test_vit"), "cifar")
