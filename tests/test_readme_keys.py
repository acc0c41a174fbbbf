"""Every key of the README's interface table has a bad-value case here: each bad value is
refused with an error that names the key, before anything is written (issue 24)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

import harness.run as run_mod

from .conftest import TINY, compose_config

README = Path(__file__).resolve().parent.parent / "README.md"

# README key -> (bad override, what the error must say)
CASES = {
    "eval=": ("eval=nope", "nope"),
    "dataset=": ("dataset=nope", "nope"),
    "model=": ("model=nope", "nope"),
    "method=": ("method=nope", "nope"),
    "seed=": ("seed=-1", "seed"),
    "hparams_seed=": ("hparams_seed=-2", "hparams_seed"),
    "+experiment=": ("+experiment=nope", "nope"),
    "augment=": ("augment=nope", "nope"),
    "tta=": ("tta=nope", "nope"),
    "sweep_objective": ("sweep_objective=accuracy", "sweep_objective"),
    "results_dir": ("results_dir=", "results_dir"),
    "data_root": ("data_root=[a]", "data_root"),
    "trainer.epochs": ("trainer.epochs=-1", "trainer.epochs"),
    "trainer.max_steps": ("trainer.max_steps=0", "trainer.max_steps"),
    "trainer.batch_size": ("trainer.batch_size=0", "trainer.batch_size"),
    "trainer.eval_batch_size": ("trainer.eval_batch_size=0", "trainer.eval_batch_size"),
    "trainer.optimizer": ("trainer.optimizer._target_=torch.optim.Nope", "trainer.optimizer"),
    "trainer.schedule": ("trainer.schedule=linear", "trainer.schedule"),
    "trainer.precision": ("trainer.precision=fp8", "trainer.precision"),
    "trainer.accumulate_steps": ("trainer.accumulate_steps=0", "trainer.accumulate_steps"),
    "trainer.channels_last": ("trainer.channels_last=maybe", "trainer.channels_last"),
    "dataset.limit": ("dataset.limit=-5", "limit"),
    "dataset.test_domains": ("dataset=rotated_digits dataset.test_domains=[7]", "test_domains"),
    "trainer.domain_sampler": ("trainer.domain_sampler=maybe", "trainer.domain_sampler"),
    "trainer.unlabeled_split": ("trainer.unlabeled_split=test", "trainer.unlabeled_split"),
    "dataset.classes": ("dataset=pacs dataset.classes=[person,dog]", "dataset.classes"),
    "dataset.holdout_fraction": (
        "dataset=rotated_digits dataset.holdout_fraction=1.5",
        "dataset.holdout_fraction",
    ),
    "eval.oracle_split": ("eval=domainbed eval.oracle_split.fraction=2.0", "eval.oracle_split"),
    "model.name": ("model.name=not_a_model", "not_a_model"),
    "model.kwargs": ("+model.kwargs.no_such_argument=1", "no_such_argument"),
    "model.pretrained": ("model.pretrained=maybe", "model.pretrained"),
    "model.checkpoint": ("model.checkpoint=/nonexistent.pt", "model.checkpoint"),
    "model=open_clip": ("model=open_clip model.name=ViT-B-32 model.prompts=nope", "model.prompts"),
    "model.weights": (
        "model=open_clip model.name=ViT-B-32 model.weights=/nonexistent.pt",
        "model.weights",
    ),
    "model.prompts": ("model=open_clip model.name=ViT-B-32 model.prompts=[]", "model.prompts"),
    "model.class_names": (
        "model=open_clip model.name=ViT-B-32 model.class_names=abc",
        "model.class_names",
    ),
    "model=module": ("model=module", "model.target"),
    "model.target": ("model=module model.target=nope.nothing", "model.target=nope.nothing"),
    "model.head": (
        "model=module model.target=tests.byo_nets.make_net model.head=[1]",
        "model.head",
    ),
    "model=robustbench": ("model=robustbench model.dataset=svhn", "model.dataset"),
    "model.threat_model": ("model=robustbench model.threat_model=Linf3", "model.threat_model"),
    "model.model_dir": (
        "model=robustbench model.name=Standard model.model_dir=/nonexistent",
        "model.model_dir=/nonexistent",
    ),
    "probe=": ("probe=nope", "nope"),
    "ensemble=": ("ensemble=seeds ensemble.seeds=[0]", "ensemble.seeds"),
    "model.stem": ("model.stem=imagenet", "model.stem"),
    "model.freeze_bn": ("model.freeze_bn=maybe", "model.freeze_bn"),
    "model.transform": ("model.transform=nope", "model.transform"),
    "selection_rule": ("selection_rule=nope", "selection_rule"),
    "threads": ("threads=0", "threads"),
    "device": ("device=tpu", "device"),
    "cache_dir": ("cache_dir=", "cache_dir"),
    "retry_failed": ("retry_failed=maybe", "retry_failed"),
    "checkpoints": ("checkpoints=some", "checkpoints"),
    "forward.decode": ("forward.decode=fast", "forward.decode"),
    "lock.stale_after": ("lock.stale_after=0", "lock.stale_after"),
    "lock.heartbeat": ("lock.heartbeat=0", "lock.heartbeat"),
    "sweep_end.leaderboard": ("sweep_end.leaderboard=maybe", "sweep_end.leaderboard"),
}


def readme_keys() -> set[str]:
    keys = set()
    for line in README.read_text().splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return keys


def test_every_readme_key_has_a_case():
    assert readme_keys() == set(CASES)


@pytest.mark.parametrize("key", sorted(CASES))
def test_a_bad_value_is_named_before_anything_is_written(key, tmp_path):
    override, message = CASES[key]
    overrides = [*TINY, f"results_dir={tmp_path / 'res'}", *override.split(" ")]
    if key == "results_dir":
        overrides = [o for o in overrides if not o.startswith("results_dir=")] + [override]
    with pytest.raises((ValueError, TypeError, FileNotFoundError, HydraException,
                        OmegaConfBaseException)) as error:  # fmt: skip
        run_mod.run(compose_config(overrides))
    assert message in str(error.value), f"{key}: {error.value}"
    runs = tmp_path / "res" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), f"{key}: something was written"
