"""Domain-balanced minibatches (trainer.domain_sampler, Method.domain_batches) and the
domain id in every training batch."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from harness import run as run_mod
from harness.samplers import DomainBalancedBatchSampler

from .conftest import TINY, compose_config


def batches(domains, batch_size, seed=0):
    return list(
        DomainBalancedBatchSampler(domains, batch_size, torch.Generator().manual_seed(seed))
    )


def test_every_batch_takes_an_equal_share_of_each_domain():
    domains = np.repeat([4, 7, 9], [10, 3, 50])  # ids need not be 0..n-1; sizes very unequal
    out = batches(domains, 9)
    assert len(out) == int(np.ceil(len(domains) / 9))
    for batch in out:
        assert Counter(domains[batch].tolist()) == {4: 3, 7: 3, 9: 3}
    # the small domain is cycled through in random orders: no repeat before all were used
    small = [i for b in out for i in b if domains[i] == 7]
    for start in range(0, len(small) - 2, 3):
        assert sorted(small[start : start + 3]) == list(np.flatnonzero(domains == 7))
    # a remainder goes one example each to domains drawn per batch: shares differ by <= 1
    for batch in batches(domains, 10):
        counts = Counter(domains[batch].tolist())
        assert len(batch) == 10 and sorted(counts.values()) in ([3, 3, 4],)
    assert batches(domains, 10, seed=1) == batches(domains, 10, seed=1)
    assert batches(domains, 10, seed=1) != batches(domains, 10, seed=2)


def _spy(monkeypatch):
    from methods.erm import ERM

    seen = []
    real = ERM.update

    def update(self, batch):
        seen.append({k: batch[k].clone() for k in ("index", "domain", "group")})
        return real(self, batch)

    monkeypatch.setattr(ERM, "update", update)
    return seen


DG = [
    *TINY,
    "dataset=rotated_digits",
    "dataset.limit=null",
    "eval=minimal",
    "trainer.batch_size=10",
]


def test_runner_feeds_domain_balanced_batches_with_the_domain_id(tmp_path, monkeypatch):
    seen = _spy(monkeypatch)
    summary = run_mod.run(
        compose_config([*DG, f"results_dir={tmp_path}", "trainer.domain_sampler=true"])
    )
    assert len(seen) == 2
    from omegaconf import OmegaConf

    from harness.registry import build

    c = OmegaConf.to_container(compose_config(DG), resolve=True)
    meta = build("dataset", c["dataset"]).load(tmp_path).splits["train"].meta
    angles = sorted(meta.domain.unique())  # domain id = position of the angle, sorted
    for batch in seen:
        rows = meta.iloc[batch["index"].numpy()]
        assert [angles[d] for d in batch["domain"].tolist()] == rows.domain.tolist()
        assert Counter(rows.domain.tolist()) == {a: 2 for a in angles}  # 10 over 5 domains
    key = (tmp_path / "runs" / summary["run_id"] / "key.json").read_text()
    assert '"domain_sampler": true' in key


def test_without_the_option_batches_are_shuffled_and_the_key_is_unchanged(tmp_path, monkeypatch):
    seen = _spy(monkeypatch)
    summary = run_mod.run(compose_config([*DG, f"results_dir={tmp_path}"]))
    counts = Counter(seen[0]["domain"].tolist())
    assert sum(counts.values()) == 10 and len(set(counts.values())) > 1  # not balanced
    key = (tmp_path / "runs" / summary["run_id"] / "key.json").read_text()
    assert "domain_sampler" not in key


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.domain_sampler=1"], "trainer.domain_sampler must be true or false"),
        (
            ["trainer.domain_sampler=true", "trainer.group_sampler={n_groups_per_batch: 2}"],
            "use one of them",
        ),
        (
            ["method=irm", "trainer.group_sampler={n_groups_per_batch: 2}"],
            "method=irm trains on domain-balanced batches",
        ),
    ],
)
def test_bad_domain_sampler_settings_are_refused(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        run_mod.run(compose_config([*DG, f"results_dir={tmp_path}", *overrides]))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
