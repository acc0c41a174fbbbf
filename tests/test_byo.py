"""Bring your own nn.Module (harness/modules.py, model=module): a module with features and a
linear head, and a logits-only one, end to end on digits_c; their logits against the module
run by hand on the same inputs; the key's entries; the refusals."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import harness.run as run_mod
from harness.config import build_dataset
from harness.data import resolve_transform
from harness.keys import make_keys, run_payload

from .byo_nets import FeatureNet, LogitsNet
from .conftest import TINY, compose_config, run_rows


def overrides(tmp_path, *extra: str) -> list[str]:
    return [
        *TINY,
        "dataset=digits_c",
        "dataset.families=[weather]",
        "dataset.severities=[2]",
        f"results_dir={tmp_path}",
        f"cache_dir={tmp_path / 'cache'}",
        "model=module",
        "model.name=null",
        "trainer.epochs=0",
        *extra,
    ]


def inputs_of(c: dict, split: str) -> torch.Tensor:
    """The split's evaluation inputs, loaded here apart from the run."""
    from pathlib import Path

    bench = build_dataset(c).load(Path(c["cache_dir"])).limited(c["dataset"]["limit"])
    transform, _ = resolve_transform("benchmark", None, bench)
    s = bench.splits[split].with_transform(transform)
    return torch.stack([s[i][0] for i in range(len(s))])


def test_a_module_with_features_and_a_head_from_a_checkpoint(tmp_path):
    torch.manual_seed(123)
    net = FeatureNet(width=6)
    ckpt = tmp_path / "net.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    cfg = compose_config(
        overrides(
            tmp_path,
            "model.target=tests.byo_nets.make_net",
            "+model.kwargs.width=6",
            f"model.checkpoint={ckpt}",
        )
    )
    summary = run_mod.run(cfg)
    rd = tmp_path / "runs" / summary["run_id"]
    c = OmegaConf.to_container(cfg, resolve=True)
    with torch.no_grad():
        expected = net.eval()(inputs_of(c, "id_test")).numpy()
    out = np.load(next((rd / "outputs").glob("id_test-*.npz")))
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-5)
    assert out["features"].shape == (len(expected), 6)
    with np.load(rd / "outputs" / "head.npz") as z:
        np.testing.assert_allclose(z["weight"], net.fc.weight.detach().numpy())
    posthoc = next((rd / "posthoc").iterdir())
    notes = json.loads((posthoc / "notes.json").read_text())
    assert notes["head"] == "head(features) reproduces the cached logits"
    table = run_rows(rd)
    assert {"knn", "mahalanobis", "vim", "energy"} <= set(table["scorer"])
    acc = table[(table.split == "id_test") & (table.metric == "accuracy") & (table.scorer == "")]
    assert acc["value"].iloc[0] == pytest.approx((expected.argmax(1) == out["labels"]).mean())
    info = json.loads((rd / "run_info.json").read_text())
    assert info["model"] == "make_net"
    key = json.loads((rd / "key.json").read_text())["payload"]["model"]
    assert key["target"] == "tests.byo_nets.make_net"
    assert key["kwargs"] == {"width": 6}
    assert key["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_a_logits_only_module_named_by_target_skips_the_feature_scorers(tmp_path):
    cfg = compose_config(overrides(tmp_path, "model._target_=tests.byo_nets.LogitsNet"))
    summary = run_mod.run(cfg)
    rd = tmp_path / "runs" / summary["run_id"]
    c = OmegaConf.to_container(cfg, resolve=True)
    torch.manual_seed(0)  # the run seeds torch with seed=0 before building the module
    with torch.no_grad():
        expected = LogitsNet().eval()(inputs_of(c, "id_test")).numpy()
    out = np.load(next((rd / "outputs").glob("id_test-*.npz")))
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-5)
    assert out["features"].shape == (len(expected), 0)
    assert not (rd / "outputs" / "head.npz").exists()
    notes = json.loads((next((rd / "posthoc").iterdir()) / "notes.json").read_text())
    assert "logits only" in notes["head"]
    skipped = notes["skipped_scorers"]
    assert {"knn", "mahalanobis", "vim", "react"} <= set(skipped)
    assert all("logits only" in v for v in skipped.values())
    table = run_rows(rd)
    assert {"msp", "energy", "maxlogit"} <= set(table["scorer"])
    assert not {"knn", "vim"} & set(table["scorer"])
    key = json.loads((rd / "key.json").read_text())["payload"]["model"]
    assert key["_target_"] == "tests.byo_nets.LogitsNet"
    assert json.loads((rd / "run_info.json").read_text())["model"] == "LogitsNet"
    # a linear probe on it has no features to fit on: refused, naming why
    with pytest.raises(ValueError, match="cached no features"):
        run_mod.run(
            compose_config(
                overrides(tmp_path, "model._target_=tests.byo_nets.LogitsNet", "probe=logistic")
            )
        )


def keys_of(tmp_path, *extra: str):
    c = OmegaConf.to_container(compose_config(overrides(tmp_path, *extra)), resolve=True)
    run_mod.compose(c)
    return make_keys(run_payload(c, build_dataset(c)))


def test_the_key_holds_the_target_and_its_kwargs(tmp_path):
    a = keys_of(tmp_path, "model.target=tests.byo_nets.make_net")
    b = keys_of(tmp_path, "model.target=tests.byo_nets.make_net", "+model.kwargs.width=4")
    c = keys_of(tmp_path, "model.target=tests.byo_nets.FeatureNet")
    d = keys_of(tmp_path, "model.target=tests.byo_nets.make_net", "model.head=null")
    assert len({k.run_id for k in (a, b, c, d)}) == 4


@pytest.mark.parametrize(
    "extra,message",
    [
        (["model.target=tests.byo_nets.nope"], "model.target=tests.byo_nets.nope"),
        (["model.target=no_such_pkg.make"], "model.target=no_such_pkg.make"),
        (["model._target_=tests.byo_nets.missing"], "model._target_=tests.byo_nets.missing"),
        ([], "model.target"),
        (["model.target=tests.byo_nets.make_net", "+model.kwargs.depth=3"], "model.kwargs"),
        (["model.target=tests.byo_nets.make_net", "+model.extra=1"], "unknown entries"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        run_mod.run(compose_config(overrides(tmp_path, *extra)))
    assert not (tmp_path / "runs").exists()


def test_a_forward_that_is_not_its_head_of_its_features_is_refused(tmp_path):
    with pytest.raises(ValueError, match="model.head=fc"):
        run_mod.run(compose_config(overrides(tmp_path, "model.target=tests.byo_nets.ScaledNet")))


def test_a_timm_factory_is_read_through_its_own_api(tmp_path):
    """model.target=timm.create_model: features from forward_head(pre_logits=True), its fc."""
    cfg = compose_config(
        overrides(
            tmp_path,
            "model.target=timm.create_model",
            "+model.kwargs.model_name=test_resnet",
            "+model.kwargs.num_classes=10",
        )
    )
    rd = tmp_path / "runs" / run_mod.run(cfg)["run_id"]
    notes = json.loads((next((rd / "posthoc").iterdir()) / "notes.json").read_text())
    assert notes["head"] == "head(features) reproduces the cached logits"
    out = np.load(next((rd / "outputs").glob("id_test-*.npz")))
    with np.load(rd / "outputs" / "head.npz") as z:
        assert z["weight"].shape == (10, out["features"].shape[1])
    assert json.loads((rd / "run_info.json").read_text())["model"] == "create_model"
