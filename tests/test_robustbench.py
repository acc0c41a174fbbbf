"""RobustBench's zoo without the package (methods/models/robustbench.py): a random-init
WideResNet-28-10 checkpoint written in RobustBench's cache layout and checkpoint format is
loaded, its logits equal an independent functional WRN forward written from the paper
(tests/wrn_functional.py) over the same tensors, its parameter count is WRN-28-10's published
36,479,194, and it runs end to end on digits_c; the key holds the checkpoint's
sha256; a missing checkpoint names its path and where RobustBench publishes it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import harness.run as run_mod
from harness.config import build_dataset
from harness.keys import make_keys, run_payload
from methods.models.robustbench import RobustBench, WideResNet, read_state_dict

from .conftest import TINY, compose_config, run_rows
from .wrn_functional import wrn_forward


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A model_dir with Standard (cifar10, corruptions) saved as RobustBench saves it."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(7)
    ref = WideResNet(depth=28, widen_factor=10).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = root / "cifar10" / "corruptions" / "Standard.pt"
    path.parent.mkdir(parents=True)
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 100}, path)
    return root, ref, path


def overrides(tmp_path, model_dir, *extra: str) -> list[str]:
    return [
        *TINY,
        "dataset=digits_c",
        "dataset.families=[weather]",
        "dataset.severities=[2]",
        "dataset.limit=4",
        f"results_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
        "model=robustbench",
        "model.name=Standard",
        "model.threat_model=corruptions",
        "model.dataset=cifar10",
        f"model.model_dir={model_dir}",
        "trainer.epochs=0",
        *extra,
    ]


def test_the_checkpoint_loads_into_the_same_function_as_the_papers_architecture(zoo):
    root, ref, path = zoo
    cfg = {
        "name": "Standard",
        "dataset": "cifar10",
        "threat_model": "corruptions",
        "model_dir": str(root),
    }
    model = RobustBench.create(cfg, None, train=False)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        saved = {k.removeprefix("module."): v for k, v in torch.load(path)["state_dict"].items()}
        expected = wrn_forward(saved, x, depth=28)
        np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert sum(p.numel() for p in model.parameters()) == 36_479_194  # WRN-28-10, 10 classes
    assert feats.shape == (3, 640)
    # the other layouts: model_state_dict, a bare state dict, `model.` prefixes
    for ckpt in (
        {"model_state_dict": ref.state_dict()},
        {f"model.{k}": v for k, v in ref.state_dict().items()},
    ):
        path = root / "other.pt"
        torch.save(ckpt, path)
        assert read_state_dict(path).keys() == ref.state_dict().keys()


def test_standard_end_to_end_on_digits_c_with_its_checkpoints_digest_in_the_key(tmp_path, zoo):
    root, ref, path = zoo
    cfg = compose_config(overrides(tmp_path, root))
    summary = run_mod.run(cfg)
    rd = tmp_path / "runs" / summary["run_id"]
    key = json.loads((rd / "key.json").read_text())["payload"]["model"]
    assert key["weights"] == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert "model_dir" not in key and key["threat_model"] == "corruptions"
    info = json.loads((rd / "run_info.json").read_text())
    assert info["model"] == "robustbench:Standard:cifar10:corruptions"
    transform = json.loads((rd / "transform.json").read_text())
    assert transform["mean"] == [0.0, 0.0, 0.0] and transform["std"] == [1.0, 1.0, 1.0]
    notes = json.loads((next((rd / "posthoc").iterdir()) / "notes.json").read_text())
    assert notes["head"] == "head(features) reproduces the cached logits"
    assert {"react", "knn", "energy"} <= set(run_rows(rd)["scorer"])  # post-ReLU features
    # another checkpoint (in another model_dir): another run
    other = tmp_path / "other" / "cifar10" / "corruptions" / "Standard.pt"
    other.parent.mkdir(parents=True)
    torch.save(WideResNet(depth=28, widen_factor=10).state_dict(), other)
    c = OmegaConf.to_container(
        compose_config(overrides(tmp_path, tmp_path / "other")), resolve=True
    )
    assert make_keys(run_payload(c, build_dataset(c))).run_id != summary["run_id"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["model.name=Nope2024"], r"not a supported RobustBench model .*'Standard'"),
        (["model.threat_model=Linf2"], "model.threat_model must be one of"),
        (["model.dataset=imagenet"], "model.dataset must be one of"),
        (["model.threat_model=L2"], r"no checkpoint at .*cifar10/L2/Standard\.pt.*Google Drive"),
        (["+model.kwargs.depth=34"], "model.kwargs is not used"),
    ],
)
def test_bad_configs_and_a_missing_checkpoint_are_refused_before_anything_is_written(
    tmp_path, zoo, extra, message
):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_mod.run(compose_config(overrides(tmp_path, zoo[0], *extra)))
    assert not (tmp_path / "runs").exists()
