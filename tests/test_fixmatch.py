"""FixMatch (methods/fixmatch.py) on unlabeled target batches: its loss against a direct
computation, the weak and strong views the runner makes (seeded per example and view, the
unlabeled batch mu × the labeled one), a tiny run, a bit-identical resume, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from harness import run as run_mod
from harness import train as train_mod
from harness.augment import TorchvisionAugment, seeded
from harness.rundir import RunDir
from harness.unlabeled import STREAM_OFFSET
from methods.fixmatch import FixMatch

from .conftest import TINY, compose_config, run_rows
from .test_unlabeled import _SmallModel, assert_target_labels_unused

TARGET = "gen-noise-1"
FM = [
    *TINY,
    "dataset=digits_c",
    "dataset.families=[noise]",
    "dataset.severities=[1]",
    "eval=minimal",
    f"trainer.unlabeled_split={TARGET}",
    "method=fixmatch",
    "method.mu=2",
    "trainer.batch_size=4",
    "method.weak.flip=false",  # digits refuse mirroring
    "method.strong.flip=false",
]


def _np_log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def test_fixmatch_loss_is_ce_of_the_strong_view_against_confident_weak_argmaxes():
    torch.manual_seed(0)
    model = _SmallModel()
    with torch.no_grad():
        model.head.weight.mul_(6.0)  # some confident, some not, at tau 0.7
    method = FixMatch(model, 3, mu=2, tau=0.7, lambda_u=1.5)
    method.attach_optimizer(torch.optim.SGD(method.parameters(), lr=0.1))
    g = torch.Generator().manual_seed(3)
    batch = {
        "x": torch.randn(6, 5, generator=g),
        "y": torch.randint(0, 3, (6,), generator=g),
        "unlabeled_weak": torch.randn(12, 5, generator=g) + 1.0,
        "unlabeled_strong": torch.randn(12, 5, generator=g) - 0.5,  # not the weak view
    }
    with torch.no_grad():
        zw = model(batch["unlabeled_weak"]).numpy().astype(np.float64)
        zs = model(batch["unlabeled_strong"]).numpy().astype(np.float64)
        zx = model(batch["x"]).numpy().astype(np.float64)
    pw = np.exp(_np_log_softmax(zw))
    keep, pseudo = pw.max(1) >= 0.7, pw.argmax(1)
    assert 0 < keep.sum() < len(keep)  # the threshold bites both ways
    assert (pseudo != zs.argmax(1)).any()  # the strong view's own argmax would differ
    expected_u = np.where(keep, -_np_log_softmax(zs)[np.arange(12), pseudo], 0.0).mean()
    expected_x = -_np_log_softmax(zx)[np.arange(6), batch["y"].numpy()].mean()
    # the step: the gradient of CE + 1.5 · masked CE, the pseudo-labels fixed (no gradient
    # through the weak view)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    loss = (
        F.cross_entropy(model(batch["x"]), batch["y"])
        + 1.5
        * (
            F.cross_entropy(
                model(batch["unlabeled_strong"]), torch.as_tensor(pseudo), reduction="none"
            )
            * torch.as_tensor(keep, dtype=torch.float32)
        ).mean()
    )
    grads = torch.autograd.grad(loss, params)
    out = method.update(batch)
    assert out["unlabeled_loss"] == pytest.approx(expected_u, rel=1e-5)
    assert out["loss"] == pytest.approx(expected_x, rel=1e-5)
    assert out["kept_fraction"] == pytest.approx(keep.mean())
    for b, p, gr in zip(before, params, grads, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1 * gr)
    # tau 0: every input counts; tau 1 (softmax < 1 here): none, so x's CE alone
    none = FixMatch(_SmallModel(), 3, tau=1.0)
    none.attach_optimizer(torch.optim.SGD(none.parameters(), lr=0.0))
    assert none.update(batch)["unlabeled_loss"] == 0.0


def test_the_runner_gives_mu_times_the_batch_in_two_seeded_views(tmp_path, monkeypatch):
    seen, real_update = [], FixMatch.update
    captured, real_batches = {}, train_mod.unlabeled_batches

    def update(self, batch):
        seen.append({k: v.clone() for k, v in batch.items()})
        return real_update(self, batch)

    def batches(split, transform, *args):
        captured.update(split=split, transform=transform)
        return real_batches(split, transform, *args)

    monkeypatch.setattr(FixMatch, "update", update)
    monkeypatch.setattr(train_mod, "unlabeled_batches", batches)
    summary = run_mod.run(compose_config([*FM, f"results_dir={tmp_path}"]))
    assert summary["status"] == "finished" and len(seen) == 2
    split = captured["split"]
    assert split.name == TARGET and split.role == "shift_test"
    # every view recomputed from the raw images: the evaluation transform after the view's
    # augmentation, under seeded(run seed 0, epoch 0, example, the view's stream)
    base = captured["transform"]  # the training split's transform: no augment, the eval one
    cfg = {"weak": {"name": "flip_crop", "crop": "pad", "padding": 4, "flip": False},
           "strong": {"name": "randaugment", "crop": "pad", "padding": 4, "flip": False,
                      "num_ops": 2, "magnitude": 10}}  # fmt: skip
    expected = {}
    for view, stream in (("strong", STREAM_OFFSET + 1), ("weak", STREAM_OFFSET + 2)):
        op = TorchvisionAugment(cfg[view], base)
        rows = []
        for i in range(len(split)):
            with seeded(0, 0, i, stream):
                rows.append(op(split.load_image(i)))
        expected[view] = torch.stack(rows)
    for batch in seen:
        assert set(batch) == {"x", "y", "index", "group", "domain", "unlabeled_weak",
                              "unlabeled_strong"}  # fmt: skip
        assert len(batch["unlabeled_weak"]) == len(batch["unlabeled_strong"]) == 2 * 4  # mu × 4
        found = {}
        for view in ("weak", "strong"):
            matches = (batch[f"unlabeled_{view}"][:, None] == expected[view][None]).flatten(2)
            hit = matches.all(2)
            assert (hit.sum(1) >= 1).all(), view  # each one is that view of a target image
            found[view] = hit.float().argmax(1)
        assert (found["weak"] == found["strong"]).all()  # the two views of the same inputs
        assert not torch.equal(batch["unlabeled_weak"], batch["unlabeled_strong"])
    key = json.loads((tmp_path / "runs" / summary["run_id"] / "key.json").read_text())["payload"]
    assert key["method"]["name"] == "fixmatch" and key["method"]["mu"] == 2


def _values(run_dir: RunDir) -> pd.Series:
    rows = run_rows(run_dir.path)
    key = rows["split"] + "/" + rows["metric"] + "/" + rows["group_value"]
    return rows.set_index(key)["value"].sort_index()


def test_an_interrupted_fixmatch_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    extra = [
        *FM,
        "dataset.limit=20",
        "trainer.batch_size=8",
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


@pytest.mark.parametrize(
    "overrides, message",
    [
        # rotated_digits refuses RandAugment's rotations and shears (its shift)
        (["ROTATED"], r"method.strong.*geometric"),
        (["method.weak.flip=true"], r"method.weak.*hflip"),
        (["trainer.unlabeled_split=null"], "set trainer.unlabeled_split"),
    ],
)
def test_refused_views_are_named_before_anything_is_written(overrides, message, tmp_path):
    if overrides == ["ROTATED"]:
        base = [o for o in FM if not o.startswith(("dataset.", "trainer.unlabeled_split"))]
        overrides = ["dataset=rotated_digits", "trainer.unlabeled_split=test"]
    else:
        base = FM
    with pytest.raises(ValueError, match=message):
        run_mod.run(compose_config([*base, *overrides, f"results_dir={tmp_path}"]))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mu": 0}, "method.mu"),
        ({"mu": 2.5}, "method.mu"),
        ({"tau": 1.5}, "method.tau"),
        ({"lambda_u": -1.0}, "method.lambda_u"),
        ({"weak": {"name": "timm"}}, "method.weak"),
        ({"strong": {"name": "randaugment", "crop": "twirl"}}, "method.strong"),
    ],
)
def test_bad_fixmatch_options_are_refused_naming_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        FixMatch(_SmallModel(), 3, **options)


def test_hparams_seed_draws_mu_tau_and_lambda_u():
    from omegaconf import OmegaConf

    from harness.search import apply_hparams_seed

    drawn = set()
    for k in (1, 2, 3):
        cfg = OmegaConf.to_container(compose_config([*FM, f"hparams_seed={k}"]), resolve=True)
        options = apply_hparams_seed(cfg)["method"]
        options = {
            k: v for k, v in options.items() if k not in ("name", "_target_", "search_space")
        }
        FixMatch(_SmallModel(), 3, **options)
        assert options["mu"] in (1, 3, 7) and 0.8 <= options["tau"] <= 0.98
        drawn.add((options["mu"], options["tau"], options["lambda_u"]))
    assert len(drawn) == 3


def test_the_targets_labels_cannot_change_fixmatch(tmp_path, monkeypatch):
    """The views are read without labels: the target's labels scrambled, and any labelled
    read of it refused, give exactly the same numbers."""
    extra = [*FM, "trainer.max_steps=3"]
    assert_target_labels_unused(extra, tmp_path, monkeypatch)
