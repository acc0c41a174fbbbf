"""Derived runs: a run computed from other runs (its prerequisites, or parents). A TTA run
derives from its trained run, JTT from its stage-1 ERM run; DFR, linear probes and seed
ensembles will too. Prerequisites are declared from the config alone (`Method.prerequisites`,
a classmethod; a TTA run's trained run is built in), so the runner plans them before it
computes its own key, finds them finished or runs them before it takes its own lock, and
hands their run directories to the run. A derived run's key holds its parents' run_ids
(where declared `in_key`) plus its own config; it is a run directory like any other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from harness import registry
from harness.config import build_dataset
from harness.keys import RunKeys, ensemble_config, make_keys, probe_config, run_payload, tta_config
from harness.method import Prerequisite


@dataclass(frozen=True)
class Parent:
    """A prerequisite made concrete: the parent run's full config and its keys."""

    what: str  # for messages, e.g. "trained run", "stage 'identification' of method 'jtt'"
    config: dict[str, Any]
    keys: RunKeys | None  # computed only for parents whose run_id enters this run's key
    in_key: bool


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "_target_" not in v:
            out[k] = _deep_merge(out[k], v)
        else:  # a plugin config (with _target_) replaces the old one whole
            out[k] = copy.deepcopy(v)
    return out


def prerequisites(c: dict[str, Any]) -> dict[str, Prerequisite]:
    """What this run derives from, declared by the config alone: a TTA run's trained run
    (its config with tta=none), and the prerequisites of the method's class (e.g. JTT's
    stage 1; `Method.prerequisites`)."""
    if tta_config(c) is not None:
        # the trained run's key holds everything a TTA run's key holds but the TTA config,
        # which its own key adds: the parent's run_id would add nothing (and keys stay put)
        return {"trained": Prerequisite({"tta": {"name": "none"}}, in_key=False)}
    if probe_config(c) is not None:  # a linear probe on the cache of its backbone run
        return {"backbone": Prerequisite({}, in_key=True)}
    e = ensemble_config(c)
    if e is not None:  # a seed ensemble: this config at each member seed
        return {f"member_seed{s}": Prerequisite({"seed": s}, in_key=True) for s in e["seeds"]}
    if c["trainer"]["epochs"] == 0:
        return {}
    cls = registry.resolve_target("method", c["method"])
    options = {k: v for k, v in c["method"].items() if k not in ("name", "_target_")}
    return cls.prerequisites(options)


def plan(c: dict[str, Any]) -> dict[str, Parent]:
    """Each prerequisite's parent config (this run's with the overrides, the hyperparameters
    already drawn: hparams_seed=0) and its keys. Cheap: no data is loaded."""
    method = c["method"]["name"]
    parents = {}
    for name, pre in prerequisites(c).items():
        parent_cfg = _deep_merge(c, pre.overrides)
        parent_cfg.update(
            hparams_seed=0, tta={"name": "none"}, probe={"name": "none"}, ensemble={"name": "none"}
        )
        keys = make_keys(run_payload(parent_cfg, build_dataset(parent_cfg))) if pre.in_key else None
        what = (
            f"{name} run"
            if name in ("trained", "backbone") or name.startswith("member_")
            else f"stage {name!r} of method {method!r}"
        )
        parents[name] = Parent(what, parent_cfg, keys, pre.in_key)
    return parents
