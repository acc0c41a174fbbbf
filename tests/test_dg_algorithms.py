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
from methods.mixstyle import MixStyle, mix_style
from methods.mmd import GAMMAS, MMD

from .conftest import TINY, compose_config, run_rows

DG = [*TINY, "dataset=rotated_digits", "eval=minimal"]
ALGORITHMS = {"mmd": MMD, "dann": DANN, "mixstyle": MixStyle}


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
    if method == "dann":  # the method's own optimiser is in last.pt, with Adam's moments
        disc = state["extra_optimizers"]["discriminator"]
        assert disc["state"] and all(int(s["step"]) >= 1 for s in disc["state"].values())
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
