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


def objective_value(run_dir: str | Path, eval_cfg: dict[str, Any], objective: str) -> float:
    """The number `<split>/<metric>` (e.g. val/accuracy, val/worst_group_accuracy) of a
    finished run's post-hoc rows for `eval_cfg`: the overall value, not a group's or a
    scorer's."""
    split, _, metric = objective.partition("/")
    rows = pd.read_parquet(RunDir.at(run_dir).posthoc(eval_id(eval_cfg)).rows)
    plain = rows[overall(rows)]
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
