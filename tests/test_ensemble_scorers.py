"""Scorers of deep ensembles from the members' cached logits (eval=ensemble): pairwise
disagreement and mutual information, against brute force; skipped with a note elsewhere."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

import harness.run as run_mod
from harness.posthoc import load_run_cache
from harness.rundir import RunDir
from methods.scorers.ensemble_disagreement import pairwise_disagreement
from methods.scorers.mutual_information import mutual_information

from .conftest import TINY, compose_config, run_rows


def _brute_disagreement(members):
    k, n, _ = members.shape
    out = []
    for i in range(n):
        preds = [int(np.argmax(members[m, i])) for m in range(k)]
        pairs = list(itertools.combinations(preds, 2))
        out.append(sum(a != b for a, b in pairs) / len(pairs))
    return np.array(out)


def _brute_mi(members):
    k, n, c = members.shape
    out = []
    for i in range(n):
        probs = []
        for m in range(k):
            e = [math.exp(z) for z in members[m, i]]
            probs.append([v / sum(e) for v in e])
        mean = [sum(p[j] for p in probs) / k for j in range(c)]
        entropy = lambda p: -sum(v * math.log(v) for v in p if v > 0)  # noqa: E731
        out.append(entropy(mean) - sum(entropy(p) for p in probs) / k)
    return np.array(out)


@pytest.mark.parametrize(("k", "c"), [(2, 3), (3, 4), (5, 2)])
def test_disagreement_and_mutual_information_by_brute_force(k, c):
    members = np.random.default_rng(k * c).normal(0, 2, (k, 60, c))
    np.testing.assert_allclose(pairwise_disagreement(members), _brute_disagreement(members))
    np.testing.assert_allclose(mutual_information(members), _brute_mi(members), atol=1e-12)


def test_identical_members_have_no_disagreement_and_no_mutual_information():
    one = np.random.default_rng(0).normal(0, 2, (1, 30, 4))
    members = np.repeat(one, 3, axis=0)
    assert not pairwise_disagreement(members).any()
    np.testing.assert_allclose(mutual_information(members), 0.0, atol=1e-12)


def test_ensemble_scorers_read_the_members_cached_logits(tmp_path):
    base = [*TINY, f"results_dir={tmp_path}", "eval=ensemble"]
    ens = run_mod.run(compose_config([*base, "ensemble=seeds", "ensemble.seeds=[0,1,2]"]))
    rd = RunDir.at(ens["run_dir"])
    cache = load_run_cache(rd.path)
    members = [load_run_cache(run_mod.run(compose_config([*base, f"seed={s}"]))["run_dir"])
               for s in (0, 1, 2)]  # fmt: skip
    eval_id = json.loads((rd.path / "DONE").read_text())["eval_id"]
    for split, out in cache.outputs.items():
        logits = np.stack([m.outputs[split].logits for m in members])
        np.testing.assert_array_equal(out.members, logits)  # kept in member (seed) order
        scores = pd.read_parquet(rd.posthoc(eval_id).scores(split))
        np.testing.assert_allclose(
            scores["ensemble_disagreement"], -_brute_disagreement(logits), atol=1e-12
        )
        np.testing.assert_allclose(scores["mutual_information"], -_brute_mi(logits), atol=1e-6)
    rows = run_rows(rd.path)
    assert {"ensemble_disagreement", "mutual_information"} <= set(rows["scorer"])
    member_notes = json.loads((members[0].rd.posthoc(eval_id).notes).read_text())[
        "skipped_scorers"
    ]  # a single model: skipped, with why
    assert set(member_notes) == {"ensemble_disagreement", "mutual_information"}
    assert all("ensemble" in note for note in member_notes.values())
