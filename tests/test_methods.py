"""Training-method plugins: each runs, and each mechanism does what it claims."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from harness import run as run_mod
from methods.group_dro import GroupDRO
from methods.rebalance import Upsample, Upweight, unit_weights

from .conftest import TINY, compose_config

METHODS = ["erm", "label_smoothing", "mixup", "group_dro", "upsample", "upweight"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_through_the_runner(method, tmp_path):
    summary = run_mod.run(
        compose_config([*TINY, f"method={method}", f"results_dir={tmp_path}", "eval=minimal"])
    )
    run_dir = tmp_path / "runs" / summary["run_id"]
    assert (run_dir / "DONE").is_file()
    key = json.loads((run_dir / "key.json").read_text())["payload"]
    assert key["method"]["name"] == method and "search_space" not in key["method"]


def linear_model(num_classes=2, dim=4):
    model = nn.Linear(dim, num_classes)
    model.forward_features = lambda x: x
    model.forward_head = lambda f, pre_logits=False: f if pre_logits else model(f)
    return model


def test_upsampling_draws_units_at_the_configured_rate():
    groups = np.r_[np.zeros(900, int), np.ones(100, int)]
    labels = np.zeros(1000, int)
    gen = torch.Generator().manual_seed(0)

    def minority_share(method, epoch=0, epochs=1):
        sampler = method.train_sampler(groups, labels, epoch, epochs, gen)
        return float(np.mean(groups[list(sampler)] == 1))

    model = linear_model()
    assert minority_share(Upsample(model, 2, 2, temperature=1.0)) == pytest.approx(0.1, abs=0.03)
    assert minority_share(Upsample(model, 2, 2, temperature=1e9)) == pytest.approx(0.5, abs=0.04)
    # T = 2: shares ∝ sqrt(n): sqrt(100) / (sqrt(900) + sqrt(100)) = 0.25
    assert minority_share(Upsample(model, 2, 2, temperature=2.0)) == pytest.approx(0.25, abs=0.04)
    cooled = Upsample(model, 2, 2, temperature=1e9, cooldown_temperature=1.0, cooldown_fraction=0.2)
    assert minority_share(cooled, epoch=7, epochs=10) == pytest.approx(0.5, abs=0.04)
    assert minority_share(cooled, epoch=8, epochs=10) == pytest.approx(0.1, abs=0.03)
    by_class = Upsample(model, 2, 2, by="class", temperature=1e9)
    assert minority_share(by_class) == pytest.approx(0.1, abs=0.03)  # one class: no change


def test_upweighting_and_upsampling_agree_in_expectation():
    rng = np.random.default_rng(0)
    groups = np.r_[np.zeros(300, int), np.ones(60, int), np.full(40, 2)]
    losses = rng.random(400) + groups  # per-example losses, higher in rarer groups
    for temperature in (1.0, 3.0, 1e9):
        w = unit_weights(groups, temperature)
        upweighted = np.mean(w * losses)  # uniform sampling, weighted loss
        p = w / w.sum()
        upsampled = np.sum(p * losses)  # expected batch mean under the upsampler
        assert upweighted == pytest.approx(upsampled)
        sampler = Upsample(linear_model(), 2, 3, temperature=temperature).train_sampler(
            groups, groups, 0, 1, torch.Generator().manual_seed(1)
        )
        draws = np.concatenate([list(sampler) for _ in range(20)])
        assert losses[draws].mean() == pytest.approx(upsampled, rel=0.02)
    method = Upweight(linear_model(), 2, 3, temperature=2.0)
    method.prepare(groups, groups)
    np.testing.assert_allclose(method.weights.numpy(), unit_weights(groups, 2.0), rtol=1e-6)


def test_group_dro_moves_weight_to_the_group_with_the_highest_loss():
    torch.manual_seed(0)
    method = GroupDRO(linear_model(dim=4), 2, 2, eta=0.5)
    method.attach_optimizer(torch.optim.SGD(method.parameters(), lr=0.0))  # weights only
    x = torch.randn(64, 4)
    y = (x[:, 0] > 0).long()
    groups = torch.cat([torch.zeros(32), torch.ones(32)]).long()
    y[32:] = 1 - (x[32:, 0] > 0).long()  # group 1 has the opposite rule: a higher loss for any fit
    with torch.no_grad():
        method.model.weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
        method.model.bias.zero_()
    q0 = method.q.clone()
    for _ in range(5):
        method.update({"x": x, "y": y, "group": groups})
    assert q0.tolist() == [0.5, 0.5] and method.q[1] > 0.9 and method.q.sum() == pytest.approx(1.0)


def test_hparams_seed_draws_distinct_reproducible_settings(tmp_path):
    def setting(*extra):
        c = run_mod.OmegaConf.to_container(
            compose_config([*TINY, "method=label_smoothing", *extra]), resolve=True
        )
        return run_mod.apply_hparams_seed(c)

    default = setting()
    assert default["method"]["smoothing"] == 0.1 and default["trainer"]["optimizer"]["lr"] == 0.003
    a, b, a_again = setting("hparams_seed=1"), setting("hparams_seed=2"), setting("hparams_seed=1")
    assert a["method"]["smoothing"] == a_again["method"]["smoothing"]
    assert a["trainer"]["optimizer"]["lr"] == a_again["trainer"]["optimizer"]["lr"]
    assert a["method"]["smoothing"] != b["method"]["smoothing"]
    for s in (a, b):
        assert 0.0 <= s["method"]["smoothing"] <= 0.3
        assert 0.0003 <= s["trainer"]["optimizer"]["lr"] <= 0.01
    runs = {
        run_mod.run(
            compose_config(
                [
                    *TINY,
                    "method=label_smoothing",
                    f"hparams_seed={k}",
                    f"results_dir={tmp_path}",
                    "eval=minimal",
                ]
            )
        )["run_id"]
        for k in (0, 1)
    }
    setting_ids = {
        json.loads((tmp_path / "runs" / r / "key.json").read_text())["setting_id"] for r in runs
    }
    assert len(setting_ids) == 2
    with pytest.raises(ValueError, match="hparams_seed must be an integer >= 0"):
        setting("hparams_seed=-1")
    with pytest.raises(ValueError, match="not a hyperparameter of method"):
        setting("hparams_seed=1", "+method.search_space.nope={dist: uniform, low: 0, high: 1}")
