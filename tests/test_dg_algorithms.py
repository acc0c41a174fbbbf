"""MMD, DANN and MixStyle (DomainBed's forms; MixStyle from its release): each trains through
the runner on rotated_digits, resumes to the same numbers (DANN's method-owned
discriminator optimiser restored from last.pt), and its mechanism is checked against an
independent computation."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist
from torch import nn

from harness import run as run_mod
from harness import train as train_mod
from harness.rundir import RunDir
from methods.dann import DANN
from methods.fish import Fish
from methods.mixstyle import MixStyle, mix_style
from methods.mmd import GAMMAS, MMD
from methods.sagnet import SagNet, randomize

from .conftest import TINY, compose_config, run_rows

DG = [*TINY, "dataset=rotated_digits", "eval=minimal"]
ALGORITHMS = {"mmd": MMD, "dann": DANN, "mixstyle": MixStyle, "fish": Fish, "sagnet": SagNet}


@pytest.mark.parametrize("method", list(ALGORITHMS))
def test_every_algorithm_trains_through_the_runner(method, tmp_path, monkeypatch):
    cls, calls, real = ALGORITHMS[method], [], ALGORITHMS[method].update

    def update(self, batch):
        calls.append(np.bincount(batch["domain"].numpy(), minlength=5))
        return real(self, batch)

    monkeypatch.setattr(cls, "update", update)
    summary = run_mod.run(compose_config([*DG, f"method={method}", f"results_dir={tmp_path}"]))
    assert len(calls) == 2
    if cls.domain_batches:  # DomainBed's minibatches: an equal share of each training domain
        assert all(s.min() >= 1 and s.max() - s.min() <= 1 for s in calls)
    run_dir = tmp_path / "runs" / summary["run_id"]
    assert (run_dir / "DONE").is_file()
    key = json.loads((run_dir / "key.json").read_text())["payload"]
    assert key["method"]["name"] == method and "search_space" not in key["method"]


def _values(run_dir: RunDir) -> pd.Series:
    rows = run_rows(run_dir.path)
    key = rows["split"] + "/" + rows["metric"] + "/" + rows["group_value"]
    return rows.set_index(key)["value"].sort_index()


RESUME = {  # DANN: both kinds of step in each epoch; the Adam state of both matters
    "dann": ["method.d_steps_per_g_step=2", "method.grad_penalty=1.0"],
    "mmd": [],
    "mixstyle": ["method.p=1.0", "method.mix=crossdomain"],
    "fish": [],
    "sagnet": [],
}


@pytest.mark.parametrize("method", list(ALGORITHMS))
def test_an_interrupted_run_resumes_to_the_same_numbers(method, tmp_path, monkeypatch):
    extra = [
        *DG,
        f"method={method}",
        *RESUME[method],
        "dataset.limit=30",
        "trainer.batch_size=10",
        "trainer.epochs=2",
        "trainer.max_steps=null",
        "checkpoints=all",
        "selection_rule=last_epoch",  # the second epoch's weights are the ones compared
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
    last = RunDir(tmp_path / "resumed", clean["run_id"]).last_checkpoint
    state = torch.load(last, map_location="cpu", weights_only=True)
    owned = {"dann": "discriminator", "fish": "inner", "sagnet": "style"}
    if method in owned:  # the method's own optimiser is in last.pt, with Adam's moments
        saved = state["extra_optimizers"][owned[method]]
        assert saved["state"] and all(int(s["step"]) >= 1 for s in saved["state"].values())
        assert "extra_schedulers" not in state  # DANN has none: no empty entry either
    else:  # methods without optimisers of their own: last.pt as it always was
        assert "extra_optimizers" not in state and "extra_schedulers" not in state
    monkeypatch.setattr(train_mod, "validation_records", real)
    resumed = run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'resumed'}"]))
    assert not resumed["skipped"] and resumed["run_id"] == clean["run_id"]
    pd.testing.assert_series_equal(
        _values(RunDir(tmp_path / "clean", clean["run_id"])),
        _values(RunDir(tmp_path / "resumed", clean["run_id"])),
        check_exact=True,
    )


# ---------------------------------------------------------------- the mechanisms


class _SmallModel(nn.Module):
    """A two-layer network speaking timm's API: a linear feature map, a linear head."""

    num_features = 4

    def __init__(self, dim=5, classes=3):
        super().__init__()
        self.features, self.head = nn.Linear(dim, self.num_features), nn.Linear(4, classes)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, f, pre_logits=False):
        return f if pre_logits else self.head(f)

    def get_classifier(self):
        return self.head


def test_mmd_penalty_is_the_seven_kernel_v_statistic_between_environments():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(30, 4, generator=g, dtype=torch.float64)
    features[:10] += 0.7
    domains = torch.arange(30) % 3
    logits = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = torch.randint(3, (30,), generator=g)
    _, penalty = MMD(nn.Linear(1, 1), 3).objective(logits, features, y, domains)
    f, d = features.numpy(), domains.numpy()

    def k(a, b):  # scipy's squared Euclidean distances, each kernel summed
        sq = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-g * sq) for g in GAMMAS)

    envs = [f[d == e] for e in range(3)]
    direct = [
        k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
        for a, b in itertools.combinations(envs, 2)
    ]
    assert penalty.item() == pytest.approx(np.mean(direct), rel=1e-9)
    # an environment of one example joins the pairs (unlike CORAL's covariance)
    lone = MMD(nn.Linear(1, 1), 3).objective(
        torch.cat([logits, logits[:1]]),
        torch.cat([features, features[:1] + 3.0]),
        torch.cat([y, y[:1]]),
        torch.cat([domains, torch.tensor([9])]),
    )[1]
    assert lone.item() != pytest.approx(penalty.item())


def _dann(**options):
    torch.manual_seed(0)
    method = DANN(_SmallModel(), 3, **{"mlp_width": 8, **options})
    method.prepare_domains(np.array([0, 1, 2]))
    method.attach_optimizer(torch.optim.SGD(method.optimizer_parameters(), lr=0.1))
    method.extra_optimizers()
    g = torch.Generator().manual_seed(1)
    batch = {
        "x": torch.randn(12, 5, generator=g),
        "y": torch.arange(12) % 3,
        "domain": torch.arange(12) // 4,
    }
    return method, batch


def test_dann_discriminator_loss_has_domainbeds_input_gradient_penalty():
    method, batch = _dann(grad_penalty=0.7)
    disc = method.discriminator
    from methods.dann import discriminator_loss

    z = method.predict(batch["x"])[1].detach()
    loss = discriminator_loss(disc, z.clone().requires_grad_(), batch["domain"], 0.7)
    # independent: each example's input Jacobian (torch.func), times (softmax − one-hot)
    jac = torch.func.vmap(torch.func.jacrev(disc))(z)  # (n, domains, width)
    out = disc(z)
    resid = F.softmax(out, 1) - F.one_hot(batch["domain"], 3)
    grads = torch.einsum("nk,nkd->nd", resid, jac)
    expected = F.cross_entropy(out, batch["domain"]) + 0.7 * grads.pow(2).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dann_alternates_discriminator_and_generator_steps():
    method, batch = _dann(d_steps_per_g_step=2, grad_penalty=0.5, dann_lambda=0.3)
    model_params = [p for p in method.model.parameters()]
    disc_params = list(method.discriminator.parameters())
    assert {id(p) for p in method.optimizer_parameters()} == {id(p) for p in model_params}
    kinds = []
    for _ in range(9):
        before_m = [p.detach().clone() for p in model_params]
        before_d = [p.detach().clone() for p in disc_params]
        # the generator step's gradient, computed beforehand on a copy (SGD, lr 0.1)
        ref = copy.deepcopy(method)
        logits, z = ref.predict(batch["x"])
        from methods.dann import discriminator_loss

        d_loss = discriminator_loss(ref.discriminator, z, batch["domain"], 0.5)
        g_loss = F.cross_entropy(logits, batch["y"]) - 0.3 * d_loss
        g_grads = torch.autograd.grad(g_loss, list(ref.model.parameters()))
        method.update(batch)
        moved_m = any(not torch.equal(a, b) for a, b in zip(before_m, model_params, strict=True))
        moved_d = any(not torch.equal(a, b) for a, b in zip(before_d, disc_params, strict=True))
        assert moved_m != moved_d  # each update steps exactly one of the two players
        kinds.append("g" if moved_m else "d")
        if moved_m:
            for b, p, gr in zip(before_m, model_params, g_grads, strict=True):
                torch.testing.assert_close(p.detach(), b - 0.1 * gr)
    # d_steps_per_g_step=2: DomainBed's counter (t = 1, 2, ...; a discriminator step when
    # t mod 3 < 2): d at t=1, g at t=2, then two d per g
    assert "".join(kinds) == "dgddgddgd" and int(method.update_count) == 9
    assert method.extra_optimizers()["discriminator"].state  # Adam's moments, owned by DANN


def test_fish_moves_meta_lr_of_the_way_to_a_copy_stepped_once_per_environment():
    torch.manual_seed(0)
    method = Fish(_SmallModel(), 3, meta_lr=0.3)
    method.attach_optimizer(torch.optim.SGD(method.optimizer_parameters(), lr=0.05))
    assert not [n for n, _ in method.named_parameters() if "inner" in n]  # not in the state
    g = torch.Generator().manual_seed(2)
    batches = [
        {"x": torch.randn(9, 5, generator=g), "y": torch.arange(9) % 3,
         "domain": torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2])}
        for _ in range(2)
    ]  # fmt: skip
    # independently: a plain copy, one torch Adam carried across updates, envs by id
    ref = copy.deepcopy(method.model)
    ref_opt = torch.optim.Adam(copy.deepcopy(ref).parameters(), lr=0.05)
    inner = None
    for b in batches:
        start = {k: v.clone() for k, v in ref.state_dict().items()}
        if inner is None:
            inner = copy.deepcopy(ref)
            ref_opt = torch.optim.Adam(inner.parameters(), lr=0.05)
        inner.load_state_dict(start)
        for e in (0, 1, 2):
            rows = b["domain"] == e
            loss = F.cross_entropy(inner.head(inner.features(b["x"][rows])), b["y"][rows])
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
        ref.load_state_dict({k: start[k] + 0.3 * (inner.state_dict()[k] - start[k]) for k in start})
        method.update(b)
        for k, v in method.model.state_dict().items():
            torch.testing.assert_close(v, ref.state_dict()[k])
    # the inner Adam's state carried over: two updates × three environments
    state = method.extra_optimizers()["inner"].state
    assert all(int(s["step"]) == 6 for s in state.values())


def test_mixstyle_gives_each_map_the_mixed_instance_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64) * 3 + 1
    lam = torch.rand(6, generator=g, dtype=torch.float64)
    perm = torch.tensor([3, 4, 5, 0, 1, 2])
    out = mix_style(x, lam, perm, eps=1e-6).numpy()
    a, w = x.numpy(), lam.numpy()[:, None]
    mu, var = a.mean((2, 3)), a.var((2, 3), ddof=1)
    sig = np.sqrt(var + 1e-6)
    mu_mix = w * mu + (1 - w) * mu[perm.numpy()]
    sig_mix = w * sig + (1 - w) * sig[perm.numpy()]
    np.testing.assert_allclose(out.mean((2, 3)), mu_mix, rtol=1e-10, atol=1e-10)
    # torch's var is unbiased: the map's own std (ddof=1) is sig_mix shrunk by the eps
    np.testing.assert_allclose(
        out.std((2, 3), ddof=1), sig_mix * np.sqrt(var / (var + 1e-6)), rtol=1e-8
    )


def test_mixstyle_hooks_a_timm_resnets_stages_only_inside_update():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3)
    seen = {}
    # registered before MixStyle's hook: sees layer1's own output; layer2's input is what
    # MixStyle passed on
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(raw=o.detach().clone()))
    model.layer2.register_forward_pre_hook(lambda m, i: seen.update(passed=i[0].detach().clone()))
    method = MixStyle(model, 3, p=1.0, layers=["layer1", "layer2"])
    method.attach_optimizer(torch.optim.SGD(method.optimizer_parameters(), lr=0.0))
    x = torch.randn(4, 3, 32, 32)

    def normalised(t):
        return (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)

    method.eval()
    method.predict(x)
    assert torch.equal(seen["raw"], seen["passed"])  # inactive outside update
    method.train()
    batch = {"x": x, "y": torch.tensor([0, 1, 2, 0]), "domain": torch.tensor([0, 0, 1, 1])}
    method.update(batch)
    raw, passed = seen["raw"], seen["passed"]
    # the style (instance means) changed, the content (the normalised map) did not
    assert not torch.allclose(raw.mean((2, 3)), passed.mean((2, 3)), atol=1e-3)
    torch.testing.assert_close(normalised(passed), normalised(raw), atol=1e-3, rtol=1e-3)
    method.train()
    method.predict(x)  # a training-mode forward outside update: still the plain network
    assert torch.equal(seen["raw"], seen["passed"])


@pytest.mark.parametrize(
    "cls, options, message",
    [
        (MMD, {"mmd_gamma": -1.0}, "method.mmd_gamma"),
        (DANN, {"dann_lambda": -1.0}, "method.dann_lambda"),
        (DANN, {"d_steps_per_g_step": 0}, "method.d_steps_per_g_step"),
        (DANN, {"mlp_depth": 1}, "method.mlp_depth"),
        (DANN, {"beta1": 1.0}, "method.beta1"),
        (MixStyle, {"p": 1.5}, "method.p"),
        (MixStyle, {"mix": "domains"}, "method.mix"),
        (MixStyle, {"layers": ["stage9"]}, "method.layers"),
        (Fish, {"meta_lr": 0.0}, "method.meta_lr"),
        (SagNet, {"sag_w_adv": -1.0}, "method.sag_w_adv"),
    ],
)
def test_bad_hyperparameters_are_refused_naming_the_key(cls, options, message):
    with pytest.raises(ValueError, match=message):
        cls(timm.create_model("test_resnet", num_classes=2), 2, **options)


@pytest.mark.parametrize("method", list(ALGORITHMS))
def test_hparams_seed_draws_into_valid_settings(method):
    from omegaconf import OmegaConf

    from harness.search import apply_hparams_seed

    drawn = []
    for k in (1, 2, 3):
        cfg = OmegaConf.to_container(
            compose_config([*DG, f"method={method}", f"hparams_seed={k}"]), resolve=True
        )
        cfg = apply_hparams_seed(cfg)
        options = {
            k: v for k, v in cfg["method"].items() if k not in ("name", "_target_", "search_space")
        }
        ALGORITHMS[method](timm.create_model("test_resnet", num_classes=2), 2, **options)
        assert 8 <= cfg["trainer"]["batch_size"] <= 512
        drawn.append(json.dumps([options, cfg["trainer"]], sort_keys=True))
    assert len(set(drawn)) == 3


def test_sagnet_randomisations_swap_style_or_content_between_examples():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 8, generator=g, dtype=torch.float64) * 2 + 1
    torch.manual_seed(3)
    styled = randomize(z, "style").numpy()
    torch.manual_seed(3)  # the same draws: α first, then the permutation
    alpha = torch.rand(6, 1, dtype=torch.float64).numpy()
    perm = torch.randperm(6).numpy()
    a = z.numpy()
    mu, var = a.mean(1, keepdims=True), a.var(1, ddof=1, keepdims=True)
    normed = (a - mu) / np.sqrt(var + 1e-5)
    mu_mix = alpha * mu + (1 - alpha) * mu[perm]
    var_mix = alpha * var + (1 - alpha) * var[perm]
    # style: the example's own normalised content under the mixed statistics
    np.testing.assert_allclose(styled, normed * np.sqrt(var_mix + 1e-5) + mu_mix, rtol=1e-10)
    torch.manual_seed(3)
    content = randomize(z, "content").numpy()
    # content: the partner's normalised features under the example's own statistics
    np.testing.assert_allclose(content, normed[perm] * np.sqrt(var + 1e-5) + mu, rtol=1e-10)


def test_sagnet_steps_content_style_and_adversary_on_their_own_parameters():
    torch.manual_seed(0)
    method = SagNet(_SmallModel(), 3, sag_w_adv=0.5)
    method.attach_optimizer(torch.optim.SGD(method.optimizer_parameters(), lr=0.1))
    assert {id(p) for p in method.optimizer_parameters()} == {
        id(p) for p in method.model.parameters()
    }
    b = {"x": torch.randn(8, 5), "y": torch.arange(8) % 3, "domain": torch.arange(8) % 2}
    f0, c0, s0 = (copy.deepcopy(m.state_dict()) for m in
                  (method.model.features, method.model.head, method.style_head))  # fmt: skip
    # independently: the three steps by hand on a copy, replaying the same random draws
    ref = copy.deepcopy(method)
    torch.manual_seed(7)
    out = method.update(b)
    torch.manual_seed(7)
    f, c, s = ref.model.features, ref.model.head, ref.style_head
    sgd_fc = torch.optim.SGD([*f.parameters(), *c.parameters()], lr=0.1)
    adam_s = torch.optim.Adam(s.parameters(), lr=1e-3)
    loss_c = F.cross_entropy(c(randomize(f(b["x"]), "style")), b["y"])
    sgd_fc.zero_grad()
    loss_c.backward()
    sgd_fc.step()
    loss_s = F.cross_entropy(s(randomize(f(b["x"]), "content")), b["y"])
    adam_s.zero_grad()
    loss_s.backward()
    adam_s.step()
    sgd_f = torch.optim.SGD(f.parameters(), lr=0.1)
    loss_adv = 0.5 * -F.log_softmax(s(randomize(f(b["x"]), "content")), 1).mean()
    sgd_f.zero_grad()
    loss_adv.backward()
    sgd_f.step()
    assert out["loss"] == pytest.approx(loss_c.item()) and out["loss_adv"] == pytest.approx(
        loss_adv.item()
    )
    for mine, theirs, before in ((method.model.features, f, f0), (method.model.head, c, c0),
                                 (method.style_head, s, s0)):  # fmt: skip
        for k, v in mine.state_dict().items():
            torch.testing.assert_close(v, theirs.state_dict()[k])
            assert not torch.equal(v, before[k])  # every part moved
