"""MC dropout (methods/scorers/mc_dropout.py): a model scorer with dropout switched on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import harness.run as run_mod
from harness.posthoc import load_scores
from methods.scorers.mc_dropout import MCDropout, mc_scores
from methods.scorers.mutual_information import mutual_information

from .conftest import TINY, compose_config, run_rows


class DropNet(nn.Module):
    def __init__(self, p, w=2.0):
        super().__init__()
        self.bn = nn.BatchNorm1d(1)
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0], [w]]))
        self.bn.eval()

    def forward(self, x):
        return self.fc(self.drop(x))


def test_mc_dropout_averages_the_passes_softmax_in_closed_form():
    # logits = [0, w·d], d = 0 with probability p, else x/(1-p) (inverted dropout): the mean
    # softmax of class 1 is p/2 + (1-p)·sigmoid(w·x/(1-p))
    p, w = 0.3, 2.0
    net = DropNet(p, w).eval()
    x = torch.tensor([[0.5], [-1.0], [2.0]])
    scorer = MCDropout(passes=4000, score="msp", seed=1)
    scorer.model = net
    got = scorer.score_batches(net, [x])
    sig = 1 / (1 + np.exp(-w * x.numpy().ravel() / (1 - p)))
    p1 = p / 2 + (1 - p) * sig
    np.testing.assert_allclose(got, np.maximum(p1, 1 - p1), atol=0.015)
    assert not net.training and not net.drop.training  # back to eval afterwards
    again = scorer.score_batches(net, [x])
    np.testing.assert_array_equal(got, again)  # a fixed seed: reproducible


def test_mc_dropout_leaves_batch_norm_in_eval_mode():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    net.eval()
    before = net[1].running_mean.clone()
    scorer = MCDropout(passes=5)
    scorer.model = net
    scorer.score_batches(net, [torch.randn(16, 3) + 5])
    assert torch.equal(net[1].running_mean, before)  # eval-mode batch norm: stats untouched


def test_mc_dropout_scores_against_the_ensemble_formulas():
    logits = torch.randn(6, 20, 3) * 2
    probs = torch.softmax(logits, 2)
    mean = probs.double().mean(0).numpy()
    np.testing.assert_allclose(mc_scores(probs, "msp"), mean.max(1), rtol=1e-6)
    np.testing.assert_allclose(mc_scores(probs, "entropy"), (mean * np.log(mean)).sum(1), rtol=1e-6)
    np.testing.assert_allclose(
        mc_scores(probs, "mutual_information"),
        -mutual_information(logits.double().numpy()),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="mc_dropout.passes"):
        MCDropout(passes=1)


def test_mc_dropout_through_the_runner_on_a_large_dropout_model(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                f"results_dir={tmp_path}",
                "method=large_dropout",
                "eval=minimal",
                "+eval.scorers.mc_dropout={_target_: methods.scorers.mc_dropout.MCDropout, "
                "passes: 8, score: mutual_information}",
            ]
        )
    )
    rows = run_rows(summary["run_dir"])
    assert "mc_dropout" in set(rows["scorer"])
    scores = load_scores(summary["run_dir"], "id_test")
    # p = 0.9 on the penultimate features: the passes disagree, so the mutual information
    # is positive for some example
    assert (scores["mc_dropout"] < 0).any() and isinstance(scores, pd.DataFrame)
