"""Domain-generalisation algorithms (IRM, VREx, CORAL, DomainBed's forms): each runs through
the runner on rotated_digits, resumes to the same numbers, and its objective is checked
against an independent computation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax, softmax
from torch import nn

from harness import run as run_mod
from harness import train as train_mod
from harness.rundir import RunDir
from methods.coral import CORAL
from methods.irm import IRM, irm_penalty
from methods.vrex import VREx

from .conftest import TINY, compose_config, run_rows

DG = [*TINY, "dataset=rotated_digits", "eval=minimal"]
ALGORITHMS = ["irm", "vrex", "coral"]


@pytest.mark.parametrize("method", ALGORITHMS)
def test_every_dg_algorithm_trains_through_the_runner(method, tmp_path, monkeypatch):
    cls = {"irm": IRM, "vrex": VREx, "coral": CORAL}[method]
    shares, real = [], cls.update

    def update(self, batch):
        shares.append(np.bincount(batch["domain"].numpy(), minlength=5))
        return real(self, batch)

    monkeypatch.setattr(cls, "update", update)
    summary = run_mod.run(compose_config([*DG, f"method={method}", f"results_dir={tmp_path}"]))
    # the method asks for domain-balanced batches: 8 over the 5 training domains, 1 or 2 each
    assert len(shares) == 2 and all(s.min() >= 1 and s.max() - s.min() <= 1 for s in shares)
    run_dir = tmp_path / "runs" / summary["run_id"]
    assert (run_dir / "DONE").is_file()
    key = json.loads((run_dir / "key.json").read_text())["payload"]
    assert key["method"]["name"] == method and "search_space" not in key["method"]
    assert key["dataset"]["test_domains"] == [75]


def _values(run_dir: RunDir) -> pd.Series:
    rows = run_rows(run_dir.path)
    key = rows["split"] + "/" + rows["metric"] + "/" + rows["group_value"]
    return rows.set_index(key)["value"].sort_index()


# the annealing step (3) falls in the second epoch: the resumed run must know the count
RESUME = {
    "irm": ["method.irm_penalty_anneal_iters=3", "method.irm_lambda=10.0"],
    "vrex": ["method.vrex_penalty_anneal_iters=3", "method.vrex_lambda=10.0"],
    "coral": [],
}


@pytest.mark.parametrize("method", ALGORITHMS)
def test_an_interrupted_dg_run_resumes_to_the_same_numbers(method, tmp_path, monkeypatch):
    extra = [
        *DG,
        f"method={method}",
        *RESUME[method],
        "dataset.limit=20",
        "trainer.batch_size=10",
        "trainer.epochs=2",
        "trainer.max_steps=null",
    ]
    clean = run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'clean'}"]))
    real = train_mod.validation_records

    def dies_in_second_epoch(*args, **kwargs):
        if args[6] == 1:  # epoch
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "validation_records", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'resumed'}"]))
    monkeypatch.setattr(train_mod, "validation_records", real)
    resumed = run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'resumed'}"]))
    assert not resumed["skipped"] and resumed["run_id"] == clean["run_id"]
    pd.testing.assert_series_equal(
        _values(RunDir(tmp_path / "clean", clean["run_id"])),
        _values(RunDir(tmp_path / "resumed", clean["run_id"])),
        check_exact=True,
    )


# ---------------------------------------------------------------- the objectives


def batch(seed=0, n=24, classes=3, dim=5, envs=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64)
    features = torch.randn(n, dim, generator=g, dtype=torch.float64)
    features[: n // envs] += 1.5  # environment 0 shifted: non-zero CORAL terms
    y = torch.randint(classes, (n,), generator=g)
    domains = torch.randint(envs, (n,), generator=g)
    return logits, features, y, domains


def scale_gradient(z: np.ndarray, y: np.ndarray) -> float:
    """d/dw of the mean cross-entropy of w·z at w = 1, by hand: mean_i (p_i − e_{y_i})·z_i."""
    p = softmax(z, axis=1)
    p[np.arange(len(y)), y] -= 1
    return float((p * z).sum(1).mean())


def test_irm_penalty_is_the_split_half_product_of_the_scale_gradients():
    logits, _, y, domains = batch()
    method = IRM(nn.Linear(1, 1), 3)
    nll, penalty = method.objective(logits, y, domains)
    z, t, d = logits.numpy(), y.numpy(), domains.numpy()
    per_env, risks = [], []
    for e in np.unique(d):
        ze, te = z[d == e], t[d == e]
        per_env.append(scale_gradient(ze[::2], te[::2]) * scale_gradient(ze[1::2], te[1::2]))
        risks.append(-log_softmax(ze, axis=1)[np.arange(len(te)), te].mean())
    assert penalty.item() == pytest.approx(np.mean(per_env), rel=1e-10)
    assert nll.item() == pytest.approx(np.mean(risks), rel=1e-10)


def test_irm_penalty_is_the_squared_gradient_of_the_risk_wrt_a_scalar_at_one():
    """With each example twice (the two halves identical), DomainBed's estimate is the
    square of d risk / d w at w = 1, which torch.autograd computes here directly."""
    logits, _, y, _ = batch(seed=1, n=10)
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits * w, y), [w])
    doubled = irm_penalty(logits.repeat_interleave(2, 0), y.repeat_interleave(2, 0))
    assert doubled.item() == pytest.approx(grad.item() ** 2, rel=1e-10)
    # and its gradient reaches the logits (second order), as autograd's finite differences say
    assert torch.autograd.gradcheck(lambda z: irm_penalty(z, y), (logits.requires_grad_(),))


def test_irm_and_vrex_anneal_the_penalty_weight_and_reset_the_optimiser():
    for cls, options in (
        (IRM, {"irm_lambda": 1000.0, "irm_penalty_anneal_iters": 2}),
        (VREx, {"vrex_lambda": 1000.0, "vrex_penalty_anneal_iters": 2}),
    ):
        torch.manual_seed(0)
        model = nn.Linear(5, 3)
        model.forward_features = lambda x: x
        model.forward_head = lambda f, pre_logits=False, m=model: f if pre_logits else m(f)
        method = cls(model, 3, **options)
        optimizer = torch.optim.AdamW(method.parameters(), lr=0.01)
        method.attach_optimizer(optimizer)
        x = torch.randn(12, 5)
        b = {"x": x, "y": torch.arange(12) % 3, "domain": torch.arange(12) // 4}
        steps = []
        for _ in range(4):
            nll, penalty = method.objective(model(x), b["y"], b["domain"])  # before the step
            out = method.update(b)
            steps.append(next(iter(optimizer.state.values()))["step"].item())
            weight = 1.0 if len(steps) <= 2 else 1000.0
            assert out["loss"] == pytest.approx(nll.item() + weight * penalty.item(), rel=1e-4)
        assert steps == [1, 2, 1, 2]  # Adam's state started afresh at the third step
        assert int(method.update_count) == 4 and "update_count" in method.state_dict()


def test_vrex_penalty_is_the_variance_of_the_environment_risks():
    logits, _, y, domains = batch(seed=2)
    mean, penalty = VREx(nn.Linear(1, 1), 3).objective(logits, y, domains)
    z, t, d = logits.numpy(), y.numpy(), domains.numpy()
    risks = [
        -log_softmax(z[d == e], axis=1)[np.arange((d == e).sum()), t[d == e]].mean()
        for e in np.unique(d)
    ]
    assert mean.item() == pytest.approx(np.mean(risks), rel=1e-10)
    assert penalty.item() == pytest.approx(np.var(risks), rel=1e-10)  # ddof=0, as DomainBed


def test_coral_penalty_is_domainbeds_mean_and_covariance_difference():
    logits, features, y, domains = batch(seed=3)
    method = CORAL(nn.Linear(1, 1), 3)
    risk, penalty = method.objective(logits, features, y, domains)
    f, d = features.numpy(), domains.numpy()
    envs = [f[d == e] for e in np.unique(d)]
    direct = [
        np.mean((a.mean(0) - b.mean(0)) ** 2)
        + np.mean((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2)
        for a, b in itertools.combinations(envs, 2)
    ]
    assert penalty.item() == pytest.approx(np.mean(direct), rel=1e-10)
    # an environment of one example has no covariance: it joins no pair, the risk still counts
    lone = torch.cat([domains, torch.tensor([7])])
    more = method.objective(
        torch.cat([logits, logits[:1]]),
        torch.cat([features, features[:1]]),
        torch.cat([y, y[:1]]),
        lone,
    )
    assert more[1].item() == pytest.approx(np.mean(direct), rel=1e-10)
    assert more[0].item() != pytest.approx(risk.item())


def test_coral_training_pulls_the_environments_feature_statistics_together():
    """A feature map trained on the CORAL penalty alone moves the environments' means and
    covariances towards each other (measured independently, with numpy)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    domains = torch.arange(60) // 20
    x[domains == 1] = x[domains == 1] * 2 + 1
    proj = nn.Linear(4, 3)

    def spread():
        f = proj(x).detach().numpy()
        envs = [f[domains.numpy() == e] for e in range(3)]
        return sum(
            np.mean((a.mean(0) - b.mean(0)) ** 2)
            + np.mean((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2)
            for a, b in itertools.combinations(envs, 2)
        )

    before = spread()
    opt = torch.optim.SGD(proj.parameters(), lr=0.05)
    method = CORAL(nn.Linear(1, 1), 2)
    for _ in range(50):
        f = proj(x)
        _, penalty = method.objective(
            torch.zeros(60, 2), f, torch.zeros(60, dtype=torch.long), domains
        )
        opt.zero_grad()
        penalty.backward()
        opt.step()
    assert spread() < 0.2 * before


@pytest.mark.parametrize(
    "cls, options, message",
    [
        (IRM, {"irm_lambda": -1.0}, "method.irm_lambda"),
        (IRM, {"irm_penalty_anneal_iters": 1.5}, "method.irm_penalty_anneal_iters"),
        (VREx, {"vrex_lambda": -1.0}, "method.vrex_lambda"),
        (VREx, {"vrex_penalty_anneal_iters": -2}, "method.vrex_penalty_anneal_iters"),
        (CORAL, {"mmd_gamma": -0.5}, "method.mmd_gamma"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_key(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(nn.Linear(1, 1), 2, **options)


@pytest.mark.parametrize("method", ALGORITHMS)
def test_hparams_seed_draws_domainbeds_space_into_valid_settings(method):
    from omegaconf import OmegaConf

    from harness.search import apply_hparams_seed

    cls = {"irm": IRM, "vrex": VREx, "coral": CORAL}[method]
    drawn = []
    for k in (1, 2, 3):
        cfg = OmegaConf.to_container(
            compose_config([*DG, f"method={method}", f"hparams_seed={k}"]), resolve=True
        )
        cfg = apply_hparams_seed(cfg)
        options = {
            k: v for k, v in cfg["method"].items() if k not in ("name", "_target_", "search_space")
        }
        cls(nn.Linear(1, 1), 2, **options)  # accepted as drawn (integers stay integers)
        assert (
            isinstance(cfg["trainer"]["batch_size"], int)
            and 8 <= cfg["trainer"]["batch_size"] <= 512
        )
        assert 10**-4.5 <= cfg["trainer"]["optimizer"]["lr"] <= 10**-2.5
        drawn.append(json.dumps(options, sort_keys=True))
    assert len(set(drawn)) == 3
