"""Unlabeled target batches (trainer.unlabeled_split, harness/unlabeled.py) and the methods
that use them (coral_unlabeled, dann_unlabeled): inputs only reach the method, the target's
labels cannot change training, the stream is seeded and resumes to the same numbers, and
each penalty matches a direct computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness import run as run_mod
from harness import train as train_mod
from harness.rundir import RunDir
from harness.unlabeled import CyclingBatchSampler
from methods.coral import CORAL
from methods.dann import DANN
from methods.pseudo_label import PseudoLabel

from .conftest import TINY, compose_config, run_rows

UL = [*TINY, "dataset=rotated_digits", "eval=minimal", "trainer.unlabeled_split=test"]
METHODS = {"coral_unlabeled": CORAL, "dann_unlabeled": DANN, "pseudo_label": PseudoLabel}


@pytest.mark.parametrize("method", list(METHODS))
def test_the_method_gets_the_held_out_domains_inputs_and_no_labels(method, tmp_path, monkeypatch):
    cls, seen, real_update = METHODS[method], [], METHODS[method].update
    captured, real_batches = {}, train_mod.unlabeled_batches

    def update(self, batch):
        seen.append({k: v.clone() for k, v in batch.items()})
        return real_update(self, batch)

    def batches(split, transform, *args):
        captured.update(split=split, transform=transform)
        return real_batches(split, transform, *args)

    monkeypatch.setattr(cls, "update", update)
    monkeypatch.setattr(train_mod, "unlabeled_batches", batches)
    summary = run_mod.run(compose_config([*UL, f"method={method}", f"results_dir={tmp_path}"]))
    assert len(seen) == 2
    split, transform = captured["split"], captured["transform"]
    assert split.name == "test" and split.role == "shift_test"  # the held-out 75° domain
    targets = torch.stack([transform(split.load_image(i)) for i in range(len(split))])
    for batch in seen:
        # the labeled batch's keys plus the inputs: nothing from the target but its images
        assert set(batch) == {"x", "y", "index", "group", "domain", "unlabeled_x"}
        ux = batch["unlabeled_x"]
        assert ux.shape == batch["x"].shape  # trainer.batch_size inputs (the split has 24)
        # every unlabeled input is one of the held-out split's images (none a training one)
        matches = (ux[:, None] == targets[None]).flatten(2).all(2)
        assert (matches.sum(1) >= 1).all()
    run_dir = tmp_path / "runs" / summary["run_id"]
    key = json.loads((run_dir / "key.json").read_text())["payload"]
    assert key["trainer"]["unlabeled_split"] == "test"
    assert key["method"]["name"] == method and "search_space" not in key["method"]


def _train_values(results_dir) -> pd.Series:
    runs = list((results_dir / "runs").iterdir())
    epochs = pd.read_parquet(RunDir(results_dir, runs[0].name).epochs)
    return epochs.set_index(["epoch", "split", "metric"])["value"].sort_index()


def assert_target_labels_unused(extra: list[str], tmp_path, monkeypatch) -> None:
    """A run of `extra` with the target split's labels scrambled, and any labelled read of
    one of its examples refused, gives exactly the numbers of a clean run."""
    run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'clean'}"]))
    real = train_mod.unlabeled_split

    class NoLabels:
        def __init__(self, split):
            self._split = split
            self._labels = np.random.default_rng(0).permutation(split.labels)  # scrambled

        def __getattr__(self, name):
            return getattr(self._split, name)

        def __len__(self):
            return len(self._split)

        def __getitem__(self, i):
            raise AssertionError("an example read with its label")

        @property
        def labels(self):
            return self._labels

    monkeypatch.setattr(train_mod, "unlabeled_split", lambda *a: NoLabels(real(*a)))
    run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'scrambled'}"]))
    pd.testing.assert_series_equal(
        _train_values(tmp_path / "clean"), _train_values(tmp_path / "scrambled"), check_exact=True
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_the_targets_labels_cannot_change_training(method, tmp_path, monkeypatch):
    """Training with the target split's labels scrambled, and any read of an example through
    the split's labelled __getitem__ refused, gives exactly the same numbers."""
    extra = [*UL, f"method={method}", "trainer.max_steps=3"]
    assert_target_labels_unused(extra, tmp_path, monkeypatch)


def _values(run_dir: RunDir) -> pd.Series:
    rows = run_rows(run_dir.path)
    key = rows["split"] + "/" + rows["metric"] + "/" + rows["group_value"]
    return rows.set_index(key)["value"].sort_index()


@pytest.mark.parametrize("method", list(METHODS))
def test_an_interrupted_run_resumes_to_the_same_numbers(method, tmp_path, monkeypatch):
    extra = [
        *UL,
        f"method={method}",
        "dataset.limit=30",
        "trainer.batch_size=10",
        "trainer.epochs=2",
        "trainer.max_steps=null",
        "checkpoints=all",
        "selection_rule=last_epoch",
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


def test_the_unlabeled_stream_cycles_through_random_orders_seeded_by_its_generator():
    def draw(seed):
        sampler = CyclingBatchSampler(7, 3, 5, torch.Generator().manual_seed(seed))
        return [i for batch in sampler for i in batch]

    flat = draw(0)
    assert len(flat) == 15
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))
    assert draw(0) == flat and draw(1) != flat


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=erm", "trainer.unlabeled_split=test"], "does not use unlabeled"),
        (["method=coral_unlabeled", "trainer.unlabeled_split=null"], "set trainer.unlabeled_split"),
        (["method=coral_unlabeled", "trainer.unlabeled_split=3"], "trainer.unlabeled_split must"),
        (["method=dann_unlabeled", "trainer.unlabeled_split=nosuch"], "no such split"),
        (["method=dann_unlabeled", "trainer.unlabeled_split=train"], "other than the training"),
    ],
)
def test_bad_unlabeled_settings_are_refused_naming_the_key(overrides, message, tmp_path):
    base = [*TINY, "dataset=rotated_digits", "eval=minimal", f"results_dir={tmp_path}"]
    with pytest.raises(ValueError, match=message):
        run_mod.run(compose_config([*base, *overrides]))


@pytest.mark.parametrize("method", list(METHODS))
def test_hparams_seed_draws_into_valid_settings(method):
    import timm
    from omegaconf import OmegaConf

    from harness.search import apply_hparams_seed

    drawn = []
    for k in (1, 2, 3):
        cfg = OmegaConf.to_container(
            compose_config([*UL, f"method={method}", f"hparams_seed={k}"]), resolve=True
        )
        cfg = apply_hparams_seed(cfg)
        options = {
            k: v for k, v in cfg["method"].items() if k not in ("name", "_target_", "search_space")
        }
        METHODS[method](timm.create_model("test_resnet", num_classes=2), 2, **options)
        assert METHODS[method].uses_unlabeled(options)  # the draw keeps the unlabeled form
        drawn.append(json.dumps([options, cfg["trainer"]], sort_keys=True))
    assert len(set(drawn)) == 3


# ---------------------------------------------------------------- the mechanisms


class _SmallModel(nn.Module):
    """A linear feature map and a linear head, speaking timm's API (no batch norm: features
    of a concatenated batch are those of its parts)."""

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

    def forward(self, x):
        return self.head(self.features(x))


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(12, 5, generator=g),
        "y": torch.randint(0, 3, (12,), generator=g),
        "domain": torch.tensor([0] * 6 + [1] * 6),
        "unlabeled_x": torch.randn(8, 5, generator=g) + 1.5,  # a shifted target
    }


def _coral_np(a: np.ndarray, b: np.ndarray) -> float:
    """mean squared difference of means plus of covariances (ddof 1), numpy's np.cov."""
    means = np.mean((a.mean(0) - b.mean(0)) ** 2)
    return float(means + np.mean((np.cov(a, rowvar=False) - np.cov(b, rowvar=False)) ** 2))


def test_coral_unlabeled_adds_the_target_as_one_more_environment_of_the_penalty():
    torch.manual_seed(0)
    method = CORAL(_SmallModel(), 3, mmd_gamma=1.0, unlabeled=True)
    method.attach_optimizer(torch.optim.SGD(method.parameters(), lr=0.0))
    batch = _batch()
    with torch.no_grad():
        f = method.model.features
        envs = [
            f(batch["x"][:6]).numpy(),
            f(batch["x"][6:]).numpy(),
            f(batch["unlabeled_x"]).numpy(),
        ]
        logits = method.model.head(f(batch["x"]))
    pairs = [_coral_np(envs[i], envs[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    # the risk: numpy's log-softmax, per labeled environment, averaged
    z = logits.numpy().astype(np.float64)
    logp = (
        z
        - z.max(1, keepdims=True)
        - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    )
    ce = -logp[np.arange(12), batch["y"].numpy()]
    out = method.update(batch)
    assert out["penalty"] == pytest.approx(np.mean(pairs), rel=1e-5)
    assert out["loss"] == pytest.approx((ce[:6].mean() + ce[6:].mean()) / 2, rel=1e-5)
    # without the target the penalty is the labeled pair's alone
    plain = CORAL(method.model, 3, mmd_gamma=1.0)
    plain.attach_optimizer(torch.optim.SGD(plain.parameters(), lr=0.0))
    assert plain.update(batch)["penalty"] == pytest.approx(pairs[0], rel=1e-5)
    assert CORAL.uses_unlabeled({"unlabeled": True}) and not CORAL.uses_unlabeled({})


def test_coral_unlabeled_penalty_pulls_target_features_towards_the_sources():
    torch.manual_seed(0)
    method = CORAL(_SmallModel(), 3, mmd_gamma=10.0, unlabeled=True)
    method.attach_optimizer(torch.optim.SGD(method.parameters(), lr=0.05))
    batch = _batch()
    first = method.update(batch)["penalty"]
    for _ in range(30):
        last = method.update(batch)["penalty"]
    assert last < 0.5 * first


def test_dann_unlabeled_discriminates_the_target_as_one_more_domain():
    torch.manual_seed(0)
    method = DANN(_SmallModel(), 3, mlp_width=8, unlabeled=True, d_steps_per_g_step=1)
    method.prepare_domains(np.array([0, 1, 1, 0]))
    assert method.discriminator[-1].out_features == 3  # two training domains + the target
    method.attach_optimizer(torch.optim.SGD(method.optimizer_parameters(), lr=0.0))
    batch = _batch()
    with torch.no_grad():
        f = method.model.features
        z = torch.cat([f(batch["x"]), f(batch["unlabeled_x"])])
        d_out = method.discriminator(z).numpy().astype(np.float64)
        logits = method.model.head(f(batch["x"])).numpy().astype(np.float64)
    domains = np.array([0] * 6 + [1] * 6 + [2] * 8)

    def ce(scores, labels):  # numpy cross-entropy, mean over rows
        shifted = scores - scores.max(1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        return float(-logp[np.arange(len(labels)), labels].mean())

    out = method.update(batch)  # update 1: a discriminator step (DomainBed's counter)
    assert out["disc_loss"] == pytest.approx(ce(d_out, domains), rel=1e-5)
    assert out["loss"] == pytest.approx(ce(logits, batch["y"].numpy()), rel=1e-5)
    assert DANN.uses_unlabeled({"unlabeled": True}) and not DANN.uses_unlabeled({})


def test_pseudo_label_loss_is_the_masked_cross_entropy_against_confident_predictions():
    torch.manual_seed(0)
    model = _SmallModel()
    with torch.no_grad():
        model.head.weight.mul_(6.0)  # some confident, some not, at threshold 0.6
    method = PseudoLabel(model, 3, threshold=0.6, unlabeled_weight=2.0, rampup_steps=4)
    method.attach_optimizer(torch.optim.SGD(method.parameters(), lr=0.1))
    batch = _batch()
    with torch.no_grad():
        zu = model(batch["unlabeled_x"]).numpy().astype(np.float64)
        zx = model(batch["x"]).numpy().astype(np.float64)
    probs = np.exp(zu - zu.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    keep = probs.max(1) >= 0.6
    assert 0 < keep.sum() < len(keep)  # the threshold bites both ways
    logp_u = np.log(probs)
    expected_u = np.where(keep, -logp_u[np.arange(8), probs.argmax(1)], 0.0).mean()
    shifted = zx - zx.max(1, keepdims=True)
    logp_x = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    expected_x = -logp_x[np.arange(12), batch["y"].numpy()].mean()
    # the step: the gradient of CE + λ_1 · masked CE, λ_1 = 2 · 1/4, with fixed pseudo-labels
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    pseudo = torch.as_tensor(probs.argmax(1))
    mask = torch.as_tensor(keep, dtype=torch.float32)
    loss = (
        F.cross_entropy(model(batch["x"]), batch["y"])
        + 0.5
        * (F.cross_entropy(model(batch["unlabeled_x"]), pseudo, reduction="none") * mask).mean()
    )
    grads = torch.autograd.grad(loss, params)
    out = method.update(batch)
    assert out["unlabeled_loss"] == pytest.approx(expected_u, rel=1e-5)
    assert out["loss"] == pytest.approx(expected_x, rel=1e-5)
    assert out["kept_fraction"] == pytest.approx(keep.mean())
    for b, p, g in zip(before, params, grads, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * g)
    assert [method.current_weight(t) for t in (1, 2, 4, 9)] == [0.5, 1.0, 2.0, 2.0]
    assert PseudoLabel(model, 3).current_weight(1) == 1.0  # no ramp
    assert int(method.update_count) == 1  # a buffer: resumes with the method


@pytest.mark.parametrize(
    "options, message",
    [
        ({"threshold": 1.5}, "method.threshold"),
        ({"unlabeled_weight": -1.0}, "method.unlabeled_weight"),
        ({"rampup_steps": 1.5}, "method.rampup_steps"),
        ({"rampup_steps": True}, "method.rampup_steps"),
    ],
)
def test_bad_pseudo_label_options_are_refused_naming_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        PseudoLabel(_SmallModel(), 3, **options)
