"""Methods' own optimisation steps (Method.owned_step: DANN's discriminator, SagNet's style
head, Fish's inner steps, product_of_experts' weak model) under trainer.accumulate_steps and
trainer.precision=fp16, as the runner's own step: accumulated gradients equal one large
batch's, other backward passes do not leak into them, fp16 goes through a GradScaler of the
optimiser's own (checkpointed), and the methods that cannot accumulate refuse at config time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness import run as run_mod
from harness.method import Method
from methods.dann import DANN

from .conftest import TINY, compose_config
from .test_unlabeled import _SmallModel


class _Owner(Method):
    """A method with one owned optimiser over a side head."""

    def __init__(self):
        super().__init__(_SmallModel(), 3)
        self.side = nn.Linear(5, 3)
        self.side_opt = torch.optim.SGD(self.side.parameters(), lr=0.1)

    def extra_optimizers(self):
        return {"side": self.side_opt}


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_accumulated_owned_steps_equal_one_step_on_the_whole_batch():
    x, y = _data()
    # expected: plain SGD on the mean loss of all 8, by autograd, written out
    torch.manual_seed(0)
    ref = nn.Linear(5, 3)
    start = [p.detach().clone() for p in ref.parameters()]
    grads = torch.autograd.grad(F.cross_entropy(ref(x), y), list(ref.parameters()))
    expected = [p - 0.1 * g for p, g in zip(start, grads, strict=True)]

    method = _Owner()
    with torch.no_grad():
        for p, s in zip(method.side.parameters(), start, strict=True):
            p.copy_(s)
    method.accumulate_steps = 2
    params = list(method.side.parameters())
    method.owned_step("side", method.side_opt, F.cross_entropy(method.side(x[:4]), y[:4]), params)
    assert all(torch.equal(p, s) for p, s in zip(params, start, strict=True))  # not yet
    # another backward pass in between (the runner's step) must not reach the owned step
    (method.side(x).sum() * 100).backward()
    method.owned_step("side", method.side_opt, F.cross_entropy(method.side(x[4:]), y[4:]), params)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e)
    # an odd call left over is stepped by flush_step (the runner's epoch end)
    before = [p.detach().clone() for p in params]
    method.owned_step("side", method.side_opt, F.cross_entropy(method.side(x), y), params)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    method.flush_step()
    assert not all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_fp16_owned_steps_go_through_their_own_grad_scaler():
    x, y = _data()
    plain, scaled = _Owner(), _Owner()
    scaled.load_state_dict(plain.state_dict())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled.owned_scalers = {"side": scaler}
    for m in (plain, scaled):
        loss = F.cross_entropy(m.side(x), y)
        m.owned_step("side", m.side_opt, loss, list(m.side.parameters()))
    # scaled by 2^10 and unscaled again: the same step (powers of two: exact up to rounding)
    for a, b in zip(plain.side.parameters(), scaled.side.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # a non-finite gradient: the scaler skips the step and halves its scale
    before = [p.detach().clone() for p in scaled.side.parameters()]
    bad = scaled.side(x).sum() * torch.tensor(float("inf"))
    scaled.owned_step("side", scaled.side_opt, bad, list(scaled.side.parameters()))
    assert all(torch.equal(p, b) for p, b in zip(scaled.side.parameters(), before, strict=True))
    assert scaler.get_scale() == 2.0**9


def test_dann_discriminator_steps_accumulate_like_the_runners():
    """Two DANN discriminator steps on half-batches with accumulate_steps=2 equal one on the
    whole batch with 1 (the model in eval mode, so no batch statistics differ)."""
    g = torch.Generator().manual_seed(1)
    batch = {"x": torch.randn(8, 5, generator=g), "y": torch.randint(0, 3, (8,), generator=g),
             "domain": torch.tensor([0, 1] * 4)}  # fmt: skip
    results = []
    for k in (1, 2):
        torch.manual_seed(0)
        # d_steps_per_g_step=8: the first updates all train the discriminator
        method = DANN(_SmallModel(), 3, mlp_width=8, d_steps_per_g_step=8, lr_d=0.01)
        method.prepare_domains(np.array([0, 1]))
        method.attach_optimizer(torch.optim.SGD(method.optimizer_parameters(), lr=0.0))
        method.extra_optimizers()["discriminator"] = torch.optim.SGD(
            method.discriminator.parameters(), lr=0.5
        )
        method._disc_optimizer = method.extra_optimizers()["discriminator"]
        method.accumulate_steps = k
        method.eval()
        for part in torch.arange(8).chunk(k):
            method.update({key: v[part] for key, v in batch.items()})
        results.append(torch.cat([p.detach().flatten() for p in method.discriminator.parameters()]))
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("method", ["fish", "sagnet"])
def test_methods_that_cannot_accumulate_refuse_it_before_anything_is_written(method, tmp_path):
    over = [*TINY, "dataset=rotated_digits", "eval=minimal", f"method={method}",
            "trainer.accumulate_steps=2", f"results_dir={tmp_path}"]  # fmt: skip
    with pytest.raises(
        ValueError, match=f"trainer.accumulate_steps=2 is refused by method={method}"
    ):
        run_mod.run(compose_config(over))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dann_trains_under_fp16_and_accumulation_and_checkpoints_its_scaler(tmp_path):
    over = [*TINY, "dataset=rotated_digits", "eval=minimal", "method=dann",
            "trainer.precision=fp16", "trainer.accumulate_steps=2", "trainer.max_steps=4",
            "checkpoints=all", f"results_dir={tmp_path}"]  # fmt: skip
    summary = run_mod.run(compose_config(over))
    assert summary["status"] == "finished"
    state = torch.load(tmp_path / "runs" / summary["run_id"] / "checkpoints" / "last.pt",
                       weights_only=True)  # fmt: skip
    assert "scaler" in state and set(state["extra_scalers"]) == {"discriminator"}
    assert state["extra_scalers"]["discriminator"]["scale"] > 0
