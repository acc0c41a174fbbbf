"""Hyperparameter search spaces in both directions: draws for `hparams_seed=K`, and Hydra's
Optuna sweeper overrides from the same `search_space` entries
that `hparams_seed=K` draws from (apply_hparams_seed), written in the sweeper's override
grammar, and the number a run reports back to it.

    python -m harness.search method=jtt          # prints the sweep overrides
    python -m harness.run -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 \
        hydra.sweeper.direction=maximize sweep_objective=val/worst_group_accuracy \
        method=jtt $(python -m harness.search method=jtt)
"""

from __future__ import annotations

import logging
import shlex
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.keys import eval_id
from harness.rundir import RunDir
from harness.table import overall

log = logging.getLogger("harness.search")


def _number(x: Any) -> str:
    """A float the override grammar reads as a float (0 -> 0.0, 1e-05 stays 1e-05)."""
    return repr(float(x))


# One entry per distribution of a `search_space` entry, in both directions: a draw for
# hparams_seed=K, and the Optuna sweeper's override grammar.
DISTRIBUTIONS: dict[
    str, tuple[Callable[[dict, np.random.Generator], Any], Callable[[dict], str]]
] = {
    "uniform": (
        lambda s, rng: float(rng.uniform(s["low"], s["high"])),
        lambda s: f"interval({_number(s['low'])},{_number(s['high'])})",
    ),
    "log_uniform": (
        lambda s, rng: float(np.exp(rng.uniform(np.log(s["low"]), np.log(s["high"])))),
        lambda s: f"tag(log,interval({_number(s['low'])},{_number(s['high'])}))",
    ),
    # the sweeper turns range(a,b) into Optuna's IntUniform(a, b), both ends included
    # (tested), unlike Hydra's own range
    "int_uniform": (
        lambda s, rng: int(rng.integers(s["low"], s["high"] + 1)),
        lambda s: f"range({int(s['low'])},{int(s['high'])})",
    ),
    # DomainBed's int(2**U(3, 9)) (batch size) and int(10**U(0, 4)) (anneal steps): a
    # log-uniform draw in [low, high] rounded down; Optuna's IntLogUniform over the same range
    "log_int": (
        lambda s, rng: int(np.exp(rng.uniform(np.log(s["low"]), np.log(s["high"])))),
        lambda s: f"tag(log,int(interval({int(s['low'])},{int(s['high'])})))",
    ),
    "choice": (
        lambda s, rng: s["values"][int(rng.integers(len(s["values"])))],
        lambda s: "choice(" + ",".join(str(v) for v in s["values"]) + ")",
    ),
}


def _distribution(spec: dict[str, Any]) -> tuple[Callable, Callable]:
    try:
        return DISTRIBUTIONS[spec.get("dist")]
    except (KeyError, TypeError):
        raise ValueError(
            f"search_space entry {spec}: dist must be uniform, log_uniform, int_uniform, "
            "log_int or choice"
        ) from None


def sample(spec: dict[str, Any], rng: np.random.Generator) -> Any:
    """One value from a search-space entry."""
    return _distribution(spec)[0](spec, rng)


def sweeper_value(spec: dict[str, Any]) -> str:
    """One search-space entry in the Optuna sweeper's grammar."""
    return _distribution(spec)[1](spec)


def apply_hparams_seed(cfg: dict[str, Any]) -> dict[str, Any]:
    """hparams_seed=K > 0 replaces the method's defaults by draw K from its search_space
    (method keys, or trainer.* keys); 0 keeps the defaults. Deterministic in (K, method)."""
    k = cfg.get("hparams_seed", 0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"hparams_seed must be an integer >= 0, got {k!r}")
    space = cfg["method"].get("search_space") or {}
    if k == 0 or not space:
        return cfg
    rng = np.random.default_rng([k, zlib.crc32(cfg["method"]["name"].encode())])
    for key in sorted(space):
        value = sample(space[key], rng)
        if key.startswith("trainer."):
            node = cfg["trainer"]
            *parents, leaf = key.split(".")[1:]
            for part in parents:
                node = node[part]
            if leaf not in node:
                raise ValueError(f"search_space key {key!r} is not a trainer setting")
            node[leaf] = value
        else:
            if key not in cfg["method"]:
                raise ValueError(
                    f"search_space key {key!r} is not a hyperparameter of "
                    f"method {cfg['method']['name']!r}"
                )
            cfg["method"][key] = value
    return cfg


def sweeper_params(cfg: dict[str, Any]) -> dict[str, str]:
    """{config key: sweeper value} for the method's search space (its own keys become
    method.<key>; trainer.* keys stay) and the TTA plugin's (tta.<key>)."""
    params = {}
    for group in ("method", "tta"):
        for key, spec in ((cfg.get(group) or {}).get("search_space") or {}).items():
            full = key if key.startswith("trainer.") else f"{group}.{key}"
            params[full] = sweeper_value(spec)
    return params


# The numbers of a labelled split that the post-hoc stage writes whatever the dataset
# (harness/posthoc.py's label rows); worst_group_accuracy only where the benchmark has groups.
LABEL_METRICS = ("accuracy", "nll", "ece", "brier")


def check_objective_format(objective: Any) -> None:
    """`sweep_objective` is null or "<split>/<metric>" (checked before anything is written)."""
    if objective is None:
        return
    split, _, metric = str(objective).partition("/") if isinstance(objective, str) else ("", "", "")
    if not split or not metric:
        raise ValueError(
            f"sweep_objective must be <split>/<metric> (e.g. val/accuracy) or null, "
            f"got {objective!r}"
        )


def objective_names(bench: Any) -> list[str]:
    """Every `<split>/<metric>` a run of this (loaded) benchmark can return to a sweeper: the
    label metrics of each labelled split, worst_group_accuracy where there are groups, and
    the names the dataset's own evaluation reports (asked on a few constant predictions)."""
    from harness.data import LABELED_ROLES

    names = []
    for split in bench.splits.values():
        if split.role not in LABELED_ROLES:
            continue
        metrics = list(LABEL_METRICS) + (["worst_group_accuracy"] if bench.group_cols else [])
        if bench.dataset_eval is not None and len(split):
            rows = np.arange(min(len(split), 16))
            try:
                metrics += [
                    m
                    for m in bench.dataset_eval(split, rows, np.zeros(len(rows), dtype=np.int64))
                    if not m.startswith("count_")
                ]
            except Exception as exc:  # the dataset's names cannot be listed: accept any
                log.warning("sweep_objective: %s's own metrics unknown (%s)", bench.name, exc)
                metrics.append("*")
        names += [f"{split.name}/{m}" for m in metrics]
    return names


def check_objective(objective: str | None, bench: Any) -> None:
    """A misspelt `sweep_objective` refused once the benchmark is loaded, before training
    (it was found only after every job of a sweep had trained)."""
    if not objective:
        return
    names = objective_names(bench)
    split = objective.partition("/")[0]
    if objective in names or f"{split}/*" in names:
        return
    raise ValueError(
        f"sweep_objective={objective!r} is not a number this run will have; "
        f"available: {', '.join(names)}"
    )


def objective_value(run_dir: str | Path, eval_cfg: dict[str, Any], objective: str) -> float:
    """The number `<split>/<metric>` (e.g. val/accuracy, val/worst_group_accuracy) of a
    finished run's post-hoc rows for `eval_cfg`: the overall value, not a group's or a
    scorer's (worst_group_accuracy is the one row over groups that names none)."""
    split, _, metric = objective.partition("/")
    rows = pd.read_parquet(RunDir.at(run_dir).posthoc(eval_id(eval_cfg)).rows)
    worst = (rows["metric"] == "worst_group_accuracy") & (rows["group_value"].fillna("") == "")
    plain = rows[overall(rows) | (worst & (rows["scorer"].fillna("") == ""))]
    hit = plain[(plain["split"] == split) & (plain["metric"] == metric)]
    if len(hit) != 1:
        available = sorted(set(plain["split"] + "/" + plain["metric"]))
        raise ValueError(
            f"sweep_objective={objective!r}: not one overall value in {run_dir}; "
            f"available: {', '.join(available)}"
        )
    return float(hit["value"].iloc[0])


def main(argv: list[str] | None = None) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from harness.registry import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(sys.argv[1:] if argv is None else argv))
    params = sweeper_params(OmegaConf.to_container(cfg, resolve=False))
    # passed as plain sweep overrides, the sweeper reads them as its search space
    print(" ".join(shlex.quote(f"{k}={v}") for k, v in params.items()))


if __name__ == "__main__":
    main()
