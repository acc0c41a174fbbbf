"""Hyperparameter search spaces for Hydra's Optuna sweeper: the same `search_space` entries
that `hparams_seed=K` draws from (harness/run.py: apply_hparams_seed), written in the
sweeper's override grammar, and the number a run reports back to it.

    python -m harness.search method=jtt          # prints the sweep overrides
    python -m harness.run -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 \
        hydra.sweeper.direction=maximize sweep_objective=val/worst_group_accuracy \
        method=jtt $(python -m harness.search method=jtt)
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd


def _number(x: Any) -> str:
    """A float the override grammar reads as a float (0 -> 0.0, 1e-05 stays 1e-05)."""
    return repr(float(x))


def sweeper_value(spec: dict[str, Any]) -> str:
    """One search-space entry in the Optuna sweeper's grammar."""
    dist = spec.get("dist")
    if dist == "uniform":
        return f"interval({_number(spec['low'])},{_number(spec['high'])})"
    if dist == "log_uniform":
        return f"tag(log,interval({_number(spec['low'])},{_number(spec['high'])}))"
    if dist == "int_uniform":  # the sweeper turns range(a,b) into Optuna's IntUniform(a, b),
        # both ends included (tested), unlike Hydra's own range
        return f"range({int(spec['low'])},{int(spec['high'])})"
    if dist == "choice":
        return "choice(" + ",".join(str(v) for v in spec["values"]) + ")"
    raise ValueError(
        f"search_space entry {spec}: dist must be uniform, log_uniform, int_uniform or choice"
    )


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
    from harness.posthoc import eval_id, posthoc_dir

    split, _, metric = objective.partition("/")
    rows = pd.read_parquet(posthoc_dir(Path(run_dir), eval_id(eval_cfg)) / "rows.parquet")
    hit = rows[
        (rows["split"] == split)
        & (rows["metric"] == metric)
        & (rows["scorer"] == "")
        & (rows["group_value"] == "")
    ]
    if len(hit) != 1:
        available = sorted(
            set(
                rows.loc[(rows["scorer"] == "") & (rows["group_value"] == ""), "split"]
                + "/"
                + rows.loc[(rows["scorer"] == "") & (rows["group_value"] == ""), "metric"]
            )
        )
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
