"""Hydra's Optuna sweeper works on the same search spaces as hparams_seed."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from optuna.distributions import (
    CategoricalDistribution,
    IntLogUniformDistribution,
    IntUniformDistribution,
    LogUniformDistribution,
    UniformDistribution,
)

from harness.registry import CONF_DIR
from harness.search import sweeper_params, sweeper_value

from .conftest import TINY, run_cli

SPACES = [
    (group, path.stem)
    for group in ("method", "tta")
    for path in sorted((CONF_DIR / group).glob("*.yaml"))
    if yaml.safe_load(path.read_text()).get("search_space")
]


def expected(spec):
    if spec["dist"] == "uniform":
        return UniformDistribution(spec["low"], spec["high"])
    if spec["dist"] == "log_uniform":
        return LogUniformDistribution(spec["low"], spec["high"])
    if spec["dist"] == "int_uniform":
        return IntUniformDistribution(spec["low"], spec["high"])
    if spec["dist"] == "log_int":
        return IntLogUniformDistribution(spec["low"], spec["high"])
    return CategoricalDistribution(spec["values"])


@pytest.mark.parametrize(("group", "name"), SPACES)
def test_every_search_space_becomes_the_same_optuna_distributions(group, name):
    cfg = yaml.safe_load((CONF_DIR / group / f"{name}.yaml").read_text())
    params = sweeper_params({group: cfg})
    distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed
    for key, spec in cfg["search_space"].items():
        full = key if key.startswith("trainer.") else f"{group}.{key}"
        got, want = distributions[full], expected(spec)
        assert type(got) is type(want) and got._asdict() == want._asdict(), (full, got, want)


def test_log_int_draws_domainbeds_int_of_a_log_uniform():
    """int(2**U(3, 9)), DomainBed's batch-size draw: the same law, checked by its quantiles."""
    import numpy as np

    from harness.search import sample

    rng = np.random.default_rng(0)
    draws = np.array([sample({"dist": "log_int", "low": 8, "high": 512}, rng) for _ in range(4000)])
    assert draws.dtype.kind == "i" and draws.min() >= 8 and draws.max() <= 512
    reference = np.floor(2 ** np.random.default_rng(1).uniform(3, 9, 4000))
    for q in (0.1, 0.5, 0.9):  # two samples of one law: quantiles within a few percent
        assert abs(np.quantile(draws, q) / np.quantile(reference, q) - 1) < 0.1


def test_a_bad_distribution_is_refused_by_name():
    with pytest.raises(ValueError, match="dist must be uniform"):
        sweeper_value({"dist": "normal", "low": 0, "high": 1})


def test_an_optuna_sweep_runs_the_harness_and_gets_the_objective_back(tmp_path):
    cfg = yaml.safe_load((CONF_DIR / "method" / "label_smoothing.yaml").read_text())
    params = sweeper_params({"method": cfg})
    results = tmp_path / "results"
    run_cli(
        [
            "-m",
            *TINY,
            f"results_dir={results}",
            "eval=minimal",
            "method=label_smoothing",
            "sweep_objective=val/accuracy",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.sampler.seed=0",
            "sweep_end.leaderboard=false",
            *[f"{k}={v}" for k, v in params.items()],
        ],
        cwd=tmp_path,
    )
    runs = [json.loads(p.read_text())["payload"] for p in results.glob("runs/*/key.json")]
    assert len(runs) == 2
    for payload in runs:  # drawn by Optuna within the method's own search space
        assert 0.0 <= payload["method"]["smoothing"] <= 0.3
        assert 0.0003 <= payload["trainer"]["optimizer"]["lr"] <= 0.01
    assert len({p["method"]["smoothing"] for p in runs}) == 2
    [summary] = results.glob("multirun/*/optimization_results.yaml")
    best = yaml.safe_load(summary.read_text())
    accuracies = []
    for done in results.glob("runs/*/DONE"):
        accuracies.append(json.loads(done.read_text())["headline"]["val/accuracy"])
    assert best["best_value"] == pytest.approx(max(accuracies))


def test_the_command_line_prints_the_sweep_overrides_of_method_and_tta(capsys):
    from harness.search import main

    main(["method=jtt", "tta=tent"])
    printed = capsys.readouterr().out.split()
    assert printed == [
        "'method.stage1_epochs=range(1,3)'",
        "'method.upweight=choice(5,10,20,50,100)'",
        "'trainer.optimizer.lr=tag(log,interval(0.0003,0.01))'",
        "'tta.lr=tag(log,interval(0.0001,0.01))'",
        "'tta.steps=range(1,3)'",
    ]
