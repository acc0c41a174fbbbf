"""Deep ensembles from the cache (harness/ensemble.py): a derived run over member seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax

import harness.run as run_mod
from harness.ensemble import average_logits
from harness.posthoc import load_run_cache
from harness.rundir import RunDir

from .conftest import TINY, compose_config, run_rows


def test_average_logits_is_the_log_of_the_mean_softmax():
    rng = np.random.default_rng(0)
    members = [rng.normal(0, 3, (50, 4)) for _ in range(3)]
    mean = np.mean([softmax(z, axis=1) for z in members], axis=0)
    np.testing.assert_allclose(softmax(average_logits(members), axis=1), mean, rtol=1e-12)
    np.testing.assert_allclose(np.exp(average_logits(members)).sum(axis=1), 1.0, rtol=1e-12)


def test_an_ensemble_of_three_seeds_from_their_caches(tmp_path):
    base = [*TINY, f"results_dir={tmp_path}", "eval=minimal"]
    ens = run_mod.run(compose_config([*base, "ensemble=seeds", "ensemble.seeds=[2,0,1]"]))
    rd = RunDir.at(ens["run_dir"])
    key = json.loads(rd.key_json.read_text())["payload"]
    members = {}
    for seed in (0, 1, 2):
        member = run_mod.run(compose_config([*base, f"seed={seed}"]))
        assert member["skipped"]  # run first as the ensemble's members
        members[seed] = load_run_cache(member["run_dir"])
        assert key["parents"][f"member_seed{seed}"] == member["run_id"]
    assert key["ensemble"]["seeds"] == [0, 1, 2] and key["seed"] is None
    # the same ensemble asked for at another seed or in another order is the same run
    again = run_mod.run(
        compose_config([*base, "seed=5", "ensemble=seeds", "ensemble.seeds=[0,1,2]"])
    )
    assert again["skipped"] and again["run_id"] == ens["run_id"]
    cache = load_run_cache(rd.path)
    for split in cache.bench["splits"]:
        probs = np.mean([softmax(members[s].outputs[split].logits.astype(np.float64), axis=1)
                         for s in (0, 1, 2)], axis=0)  # fmt: skip
        ours = softmax(cache.outputs[split].logits.astype(np.float64), axis=1)
        np.testing.assert_allclose(ours, probs, atol=1e-6)
        feats = np.concatenate([members[s].outputs[split].features for s in (0, 1, 2)], axis=1)
        np.testing.assert_array_equal(cache.outputs[split].features, feats)
    assert cache.head is None and "no single linear head" in cache.head_note
    rows = run_rows(rd.path)
    assert set(rows["method"]) == {"erm[ens×3]"}
    accuracy = rows[
        (rows["split"] == "id_test")
        & (rows["metric"] == "accuracy")
        & (rows["group_key"] == "")
        & (rows["scorer"] == "")
    ]
    labels = cache.outputs["id_test"].labels
    expected = np.mean(cache.outputs["id_test"].logits.argmax(axis=1) == labels)
    assert accuracy["value"].item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ensemble.seeds=[0]", "ensemble.seeds must be a list of at least two distinct seeds"),
        ("ensemble.seeds=[1,1]", "ensemble.seeds must be a list of at least two distinct seeds"),
        ("tta=tent", "ensemble=seeds with tta=tent: choose one of them"),
    ],
)
def test_bad_ensembles_are_refused_before_anything_is_written(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "ensemble=seeds", override]))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
