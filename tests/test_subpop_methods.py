"""SubpopBench's subpopulation methods (focal, balanced_softmax, ldam, cvar_dro, lisa, lff):
each loss against an independent computation (numpy / scipy / torchvision, brute force),
and each trains through the runner on coloured_digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax
from torch import nn

from harness import run as run_mod
from methods.balanced_softmax import balanced_softmax_loss
from methods.class_prior import class_counts
from methods.cvar_dro import CVaRDRO, cvar_loss, cvar_weights
from methods.focal import focal_loss
from methods.ldam import LDAM, drw_weights, ldam_loss, ldam_margins
from methods.lff import LfF, generalized_ce, relative_difficulty
from methods.lisa import attributes_from_groups, lisa_mix

from .conftest import TINY, compose_config

SUBPOP_METHODS = ["focal", "balanced_softmax", "ldam", "cvar_dro", "lisa", "lff"]


@pytest.mark.parametrize("method", SUBPOP_METHODS)
def test_every_subpopulation_method_trains_through_the_runner(method, tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=coloured_digits",
                # LISA needs every label × colour group in the (tiny) training split
                "dataset.sizes={train: 60, val: 40, test_balanced: 20, test_reversed: 20}",
                "dataset.correlation=0.8",
                "dataset.limit=null",
                f"method={method}",
                f"results_dir={tmp_path}",
                "eval=minimal",
            ]
        )
    )
    run_dir = tmp_path / "runs" / summary["run_id"]
    assert (run_dir / "DONE").is_file()
    key = json.loads((run_dir / "key.json").read_text())["payload"]
    assert key["method"]["name"] == method and "search_space" not in key["method"]


def _logits(n=40, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2, (n, c)), rng.integers(0, c, n)


# ---------------------------------------------------------------- focal


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.5])
def test_focal_loss_is_the_modulated_cross_entropy(gamma):
    z, y = _logits()
    p_t = softmax(z, axis=1)[np.arange(len(y)), y]
    expected = np.mean(-((1 - p_t) ** gamma) * np.log(p_t))
    got = focal_loss(torch.tensor(z), torch.tensor(y), gamma).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_binary_focal_loss_equals_torchvisions_sigmoid_focal_loss():
    # softmax over logits [0, s] is sigmoid(s) for class 1: torchvision's sigmoid focal loss
    # (alpha=-1: no class weighting) on s is the same loss
    from torchvision.ops import sigmoid_focal_loss

    rng = np.random.default_rng(1)
    s, y = torch.tensor(rng.normal(0, 3, 64)), torch.tensor(rng.integers(0, 2, 64))
    z = torch.stack([torch.zeros_like(s), s], dim=1)
    theirs = sigmoid_focal_loss(s, y.double(), alpha=-1, gamma=2.0, reduction="mean")
    assert focal_loss(z, y, 2.0).item() == pytest.approx(theirs.item(), rel=1e-10)


# ---------------------------------------------------------------- balanced softmax


def test_balanced_softmax_is_the_likelihood_under_the_training_prior():
    z, y = _logits()
    labels = np.r_[np.zeros(50), np.ones(5), np.full(20, 2), np.full(3, 3), np.full(1, 4)]
    counts = class_counts(labels.astype(int), 5)
    n = np.array([50, 5, 20, 3, 1.0])
    # p(y|x) ∝ n_y exp(z_y), computed as a product rather than a shifted logit
    q = n * np.exp(z)
    expected = -np.mean(np.log(q[np.arange(len(y)), y] / q.sum(axis=1)))
    got = balanced_softmax_loss(torch.tensor(z), torch.tensor(y), counts).item()
    assert got == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- LDAM


def test_ldam_margins_and_loss_against_the_formula():
    counts = torch.tensor([400.0, 100.0, 25.0, 0.0], dtype=torch.float64)
    m = ldam_margins(counts, 0.5).numpy()
    # n^(-1/4): 400 -> 1/sqrt(20), 25 -> 1/sqrt(5): the rarest present class gets max_m
    np.testing.assert_allclose(m, [0.5 * np.sqrt(5 / 20), 0.5 * np.sqrt(5 / 10), 0.5, 0.0])
    z, y = _logits(c=4)
    shifted = z.copy()
    for i, label in enumerate(y):
        shifted[i, label] -= m[label]
    expected = -np.mean(log_softmax(30 * shifted, axis=1)[np.arange(len(y)), y])
    got = ldam_loss(torch.tensor(z), torch.tensor(y), torch.tensor(m), 30.0).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_ldam_drw_reweights_only_from_its_epoch():
    counts = torch.tensor([900.0, 90.0, 9.0], dtype=torch.float64)
    w = drw_weights(counts, 0.9999).numpy()
    raw = (1 - 0.9999) / (1 - 0.9999 ** np.array([900.0, 90.0, 9.0]))
    np.testing.assert_allclose(w, raw / raw.sum() * 3)
    z, y = _logits(c=3)
    m = ldam_margins(counts, 0.5)
    per = -log_softmax(30 * (z - np.eye(3)[y] * m.numpy()[y][:, None]), axis=1)[
        np.arange(len(y)), y
    ]
    expected = np.sum(w[y] * per) / np.sum(w[y])  # a weighted mean, as torch's weight=
    got = ldam_loss(torch.tensor(z), torch.tensor(y), m, 30.0, torch.tensor(w)).item()
    assert got == pytest.approx(expected, rel=1e-9)
    method = LDAM(nn.Linear(2, 3), 3, drw_start_fraction=0.8)
    active = []
    for epoch in range(10):
        assert method.train_sampler(None, None, epoch, 10, None) is None  # the runner's shuffle
        active.append(method.reweight)
    assert active == [False] * 8 + [True] * 2
    plain = LDAM(nn.Linear(2, 3), 3)
    plain.train_sampler(None, None, 9, 10, None)
    assert not plain.reweight  # SubpopBench's default: no DRW
    with pytest.raises(ValueError, match="method.drw_start_fraction"):
        LDAM(nn.Linear(2, 3), 3, drw_start_fraction=1.0)


# ---------------------------------------------------------------- CVaR DRO


@pytest.mark.parametrize(("m", "alpha"), [(40, 0.1), (40, 0.25), (37, 0.3), (8, 0.1), (10, 1.0)])
def test_cvar_loss_is_the_worst_alpha_fraction(m, alpha):
    v = torch.tensor(np.random.default_rng(m).exponential(1.0, m))
    got = cvar_loss(v, alpha).item()
    # the dual form: min over eta of eta + mean(relu(v - eta)) / alpha, attained at a loss
    dual = min(eta + np.mean(np.maximum(v.numpy() - eta, 0)) / alpha for eta in v.numpy())
    assert got == pytest.approx(dual, rel=1e-10)
    if float(alpha * m).is_integer():  # then exactly the mean of the k largest losses
        k = int(alpha * m)
        assert got == pytest.approx(np.sort(v.numpy())[::-1][:k].mean(), rel=1e-10)
    p = cvar_weights(v, alpha)
    assert p.sum().item() == pytest.approx(1.0) and (p <= 1 / (alpha * m) + 1e-12).all()


def test_cvar_gradient_reaches_only_the_worst_examples():
    v = torch.tensor([0.1, 3.0, 0.2, 2.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], requires_grad=True)
    cvar_loss(v, 0.2).backward()
    np.testing.assert_allclose(v.grad.numpy(), [0, 0.5, 0, 0.5, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="method.alpha"):
        CVaRDRO(nn.Linear(2, 2), 2, alpha=0.0)


# ---------------------------------------------------------------- LISA


def test_lisa_reads_the_attribute_from_label_by_attribute_groups():
    # group keys sorted as "label|colour": 0|green, 0|red, 1|green, 1|red
    labels = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([0, 1, 0, 2, 3, 3])
    np.testing.assert_array_equal(attributes_from_groups(groups, labels), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="different numbers of groups"):
        attributes_from_groups(np.array([0, 1, 2]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="several labels"):
        attributes_from_groups(np.array([0, 0]), np.array([0, 1]))


@pytest.mark.parametrize("intra_label", [True, False])
def test_lisa_mixes_only_the_pairs_it_selects(intra_label):
    torch.manual_seed(0)
    n = 24
    labels = torch.tensor([0, 1] * 12)
    attrs = torch.tensor([0] * 6 + [1] * 6 + [0] * 2 + [1] * 10)
    x = torch.eye(n, dtype=torch.float64)  # each input names its sources and their weights
    onehot = torch.nn.functional.one_hot(labels, 2).double()
    mx, my = lisa_mix(x, onehot, labels, attrs, intra_label, alpha=2.0)
    assert mx.shape == (n, n) and my.shape == (n, 2)
    for row, target in zip(mx, my, strict=True):
        sources = torch.nonzero(row > 0).flatten()
        assert len(sources) in (1, 2) and row.sum().item() == pytest.approx(1.0)
        if len(sources) == 1:  # lambda hit 0 or 1 exactly: not expected with Beta(2, 2)
            pytest.fail("a mixed example with one source")
        i, j = sources.tolist()
        if intra_label:  # same label, different attribute; the label stays one-hot
            assert labels[i] == labels[j] and attrs[i] != attrs[j]
            np.testing.assert_allclose(target.numpy(), onehot[i].numpy())
        else:  # same attribute, different labels; the label mixed with the inputs' weights
            assert attrs[i] == attrs[j] and labels[i] != labels[j]
            expected = row[i] * onehot[i] + row[j] * onehot[j]
            np.testing.assert_allclose(target.numpy(), expected.numpy(), rtol=1e-12)


def test_lisa_leaves_a_batch_without_pairs_alone():
    labels, attrs = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])  # attribute = label
    x = torch.randn(4, 3)
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    for intra_label in (True, False):
        mx, my = lisa_mix(x, onehot, labels, attrs, intra_label, 2.0)
        assert torch.equal(mx, x) and torch.equal(my, onehot)


# ---------------------------------------------------------------- LfF


class TinyNet(nn.Module):
    """timm's uniform API on a linear layer (deep-copyable, unlike a patched nn.Linear)."""

    def __init__(self, dim=4, classes=3):
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def forward_features(self, x):
        return x

    def forward_head(self, f, pre_logits=False):
        return f if pre_logits else self.fc(f)


def test_lff_gce_has_the_gradient_of_the_generalised_cross_entropy():
    z, y = _logits(n=16, c=3)
    q = 0.7
    a = torch.tensor(z, requires_grad=True)
    generalized_ce(a, torch.tensor(y), q).sum().backward()
    b = torch.tensor(z, requires_grad=True)
    p_y = torch.softmax(b, 1)[torch.arange(16), torch.tensor(y)]
    ((1 - p_y**q) / q).sum().backward()  # Zhang & Sabuncu's GCE
    np.testing.assert_allclose(a.grad.numpy(), q * b.grad.numpy(), rtol=1e-10)


def test_lff_weights_the_debiased_loss_by_relative_difficulty():
    torch.manual_seed(0)
    method = LfF(TinyNet(), 3, q=0.7)
    assert method.biased_model is not method.model
    with torch.no_grad():
        method.biased_model.fc.weight.mul_(3)  # the two models disagree
    x, y = torch.randn(12, 4), torch.randint(0, 3, (12,))
    zb, zd = method.biased_model.fc(x).detach().numpy(), method.model.fc(x).detach().numpy()
    ce_b = -log_softmax(zb, axis=1)[np.arange(12), y.numpy()]
    ce_d = -log_softmax(zd, axis=1)[np.arange(12), y.numpy()]
    w = relative_difficulty(torch.tensor(ce_b), torch.tensor(ce_d)).numpy()
    np.testing.assert_allclose(w, ce_b / (ce_b + ce_d + 1e-8), rtol=1e-12)
    # one step: the debiased model's gradient is that of sum(w * CE_d) / n
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.attach_optimizer(torch.optim.SGD(method.parameters(), lr=1.0))
    method.update({"x": x, "y": y})
    grad_d = (torch.softmax(torch.tensor(zd), 1) - torch.eye(3)[y]) * torch.tensor(w)[:, None]
    expected = before["model.fc.weight"] - (grad_d.T.float() @ x) / 12
    np.testing.assert_allclose(method.model.fc.weight.detach(), expected, atol=1e-5)
    assert not torch.equal(method.biased_model.fc.weight, before["biased_model.fc.weight"])


# ---------------------------------------------------------------- cRT (probe=crt)


def test_crt_draws_classes_uniformly():
    from methods.probes.crt import class_balanced_batches

    labels = np.r_[np.zeros(900), np.ones(90), np.full(10, 2)].astype(int)
    draws = class_balanced_batches(labels, 100, 300, torch.Generator().manual_seed(0))
    share = np.bincount(labels[draws.numpy().ravel()], minlength=3) / draws.numel()
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.01)  # natural: 0.9, 0.09, 0.01


def test_crt_head_is_the_class_balanced_logistic_regression():
    # class-balanced sampling minimises the class-weighted cross-entropy in expectation:
    # its head should predict as scikit-learn's class_weight="balanced" logistic regression
    from sklearn.linear_model import LogisticRegression

    from harness.outputs import Head, Outputs
    from methods.probes.crt import CRT

    rng = np.random.default_rng(0)
    n = [600, 60]
    x = np.vstack([rng.normal(0, 1, (n[0], 2)), rng.normal(1.5, 1, (n[1], 2))])
    y = np.r_[np.zeros(n[0]), np.ones(n[1])].astype(int)
    train = Outputs(np.zeros((len(y), 2)), x.astype(np.float32), y, np.arange(len(y)))
    erm = LogisticRegression(C=1e4).fit(x, y)  # stage 1's head: leans on the majority
    base = Head(np.vstack([-erm.coef_[0] / 2, erm.coef_[0] / 2]), np.r_[-1, 1] * erm.intercept_ / 2)
    head, info = CRT(steps=3000, batch_size=128, lr=0.05, weight_decay=0.0).fit(
        train, None, 2, base
    )
    assert info["from_stage1_head"]
    balanced = LogisticRegression(C=1e4, class_weight="balanced").fit(x, y)
    grid = rng.uniform(-3, 4, (2000, 2))
    ours = head(grid).argmax(1)
    assert np.mean(ours == balanced.predict(grid)) > 0.97
    assert np.mean(ours != erm.predict(grid)) > 0.1  # and it moved away from stage 1's head
    xt = np.vstack([rng.normal(0, 1, (500, 2)), rng.normal(1.5, 1, (500, 2))])
    yt = np.r_[np.zeros(500), np.ones(500)]
    worst = lambda pred: min(np.mean(pred[yt == k] == k) for k in (0, 1))  # noqa: E731
    assert worst(head(xt).argmax(1)) > worst(erm.predict(xt)) + 0.1


def test_crt_is_a_derived_run_on_the_erm_runs_cache(tmp_path):
    from harness.rundir import RunDir

    from .conftest import run_rows

    base = [
        *TINY,
        "dataset=coloured_digits",
        "dataset.sizes={train: 60, val: 40, test_balanced: 20, test_reversed: 20}",
        "dataset.limit=null",
        f"results_dir={tmp_path}",
        "eval=minimal",
    ]
    crt = run_mod.run(compose_config([*base, "probe=crt", "probe.steps=20"]))
    erm = run_mod.run(compose_config(base))
    assert erm["skipped"]  # the backbone was run first, as the probe's parent
    rd = RunDir.at(crt["run_dir"])
    assert json.loads(rd.probe_json.read_text())["backbone_run_id"] == erm["run_id"]
    assert set(run_rows(rd.path)["method"]) == {"erm+crt"}
    with pytest.raises(ValueError, match="probe.steps"):
        run_mod.run(compose_config([*base, "probe=crt", "probe.steps=0"]))
