"""The group-balanced batch sampler of the WILDS training scripts (n groups per batch, uniform
over groups), as trainer.group_sampler for any method, on a WILDS fixture."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from shiftbench_datasets.wilds_fixtures import write_fixture

from harness import keys as keys_mod
from harness import run as run_mod
from harness.samplers import GroupBalancedBatchSampler, check_group_sampler
from methods.erm import ERM

from .conftest import TINY, compose_config


def batches(groups, seed=0, **options):
    sampler = GroupBalancedBatchSampler(
        groups, generator=torch.Generator().manual_seed(seed), **options
    )
    return list(sampler)


def test_each_batch_has_n_groups_with_equal_shares_uniform_over_groups():
    groups = np.r_[np.zeros(900, int), np.ones(90, int), np.full(10, 2)]  # 90% / 9% / 1%
    drawn = batches(groups, batch_size=8, n_groups_per_batch=2)
    assert len(drawn) == 125  # ceil(1000 / 8): the trainer's steps per epoch
    seen = Counter()
    for batch in drawn:
        per_group = Counter(groups[batch].tolist())
        assert len(batch) == 8 and len(per_group) == 2 and set(per_group.values()) == {4}
        seen.update(per_group.keys())
    shares = np.array([seen[g] for g in range(3)]) / (2 * len(drawn))
    assert np.allclose(shares, 1 / 3, atol=0.08)  # uniform over groups, not over examples
    proportional = batches(groups, batch_size=8, n_groups_per_batch=1, uniform_over_groups=False)
    first = Counter(int(groups[b[0]]) for b in proportional)
    assert first[0] / len(proportional) > 0.8  # in proportion to group sizes


def test_same_generator_seed_same_batches_and_small_groups_drawn_with_replacement():
    groups = np.r_[np.zeros(20, int), np.ones(2, int)]
    assert batches(groups, seed=3, batch_size=8, n_groups_per_batch=2) == batches(
        groups, seed=3, batch_size=8, n_groups_per_batch=2
    )
    assert batches(groups, seed=3, batch_size=8, n_groups_per_batch=2) != batches(
        groups, seed=4, batch_size=8, n_groups_per_batch=2
    )
    for batch in batches(groups, batch_size=8, n_groups_per_batch=2):
        small = [i for i in batch if groups[i] == 1]
        assert len(small) == 4 and set(small) <= {20, 21}  # 4 draws from a group of 2
        large = [i for i in batch if groups[i] == 0]
        assert len(set(large)) == 4  # without replacement where the group is big enough


@pytest.mark.parametrize(
    "options, batch_size, message",
    [
        ({"n_groups_per_batch": 3}, 8, "dividing trainer.batch_size=8"),
        ({"n_groups_per_batch": 0}, 8, "positive integer"),
        ({"n_groups_per_batch": 2, "balance": True}, 8, "unknown option"),
        ({"n_groups_per_batch": 2, "distinct_groups": "yes"}, 8, "true or false"),
        ([2], 8, "must be a mapping"),
    ],
)
def test_bad_options_are_named(options, batch_size, message):
    with pytest.raises(ValueError, match=message):
        check_group_sampler(options, batch_size)


def test_more_distinct_groups_than_exist_is_refused():
    with pytest.raises(ValueError, match="training split has 2 groups"):
        GroupBalancedBatchSampler(
            np.r_[0, 1, 1], 6, n_groups_per_batch=3, generator=torch.Generator()
        )


def test_a_run_trains_on_group_balanced_batches_and_default_keys_are_unchanged(
    tmp_path, monkeypatch
):
    write_fixture(tmp_path / "data", "waterbirds")
    base = [
        *TINY,
        "dataset=waterbirds",
        f"data_root={tmp_path / 'data'}",
        f"results_dir={tmp_path / 'results'}",
        "dataset.image_size=16",
        "dataset.limit=null",
        "eval=minimal",
        "trainer.max_steps=3",
    ]
    seen: list[list[int]] = []
    update = ERM.update

    def spy(self, batch):
        seen.append(batch["group"].tolist())
        return update(self, batch)

    monkeypatch.setattr(ERM, "update", spy)
    run_mod.run(compose_config([*base, "trainer.group_sampler={n_groups_per_batch: 2}"]))
    assert len(seen) == 2  # 12 training examples, batch 8: two steps in the one epoch
    for groups in seen:
        per_group = Counter(groups)
        assert len(groups) == 8 and len(per_group) == 2 and set(per_group.values()) == {4}

    cfg = run_mod.OmegaConf.to_container(compose_config(base), resolve=True)
    adapter = run_mod.registry.build("dataset", cfg["dataset"])
    assert "group_sampler" not in keys_mod.key_payload(cfg, adapter)["trainer"]

    with pytest.raises(ValueError, match="brings its own sampler"):
        run_mod.run(
            compose_config(
                [*base, "method=upsample", "trainer.group_sampler={n_groups_per_batch: 2}"]
            )
        )
