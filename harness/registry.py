"""Plugin lookup. Plugins are named by their YAML in conf/<group>/ and carry a `_target_`;
the module behind it is imported only when that plugin is selected, so a maze run never
imports wilds, and a new plugin is one file plus one YAML with no edit here."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def available(group: str) -> list[str]:
    """Names of the plugins of a config group (the YAML files in conf/<group>/); scorers,
    calibrators, estimators and conformal methods are configured inside conf/eval/, so for
    them the modules (methods/<group>s/, methods/conformal/) are listed."""
    folders = {"scorer": "scorers", "calibrator": "calibrators", "estimator": "estimators",
               "conformal": "conformal"}  # fmt: skip
    if group in folders:
        folder = CONF_DIR.parent / "methods" / folders[group]
        return sorted(p.stem for p in folder.glob("[!_]*.py"))
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def resolve_target(group: str, cfg: dict[str, Any]) -> Any:
    """The class named by cfg['_target_'], with an error that names the group and options."""
    target = cfg.get("_target_")
    name = cfg.get("name", "?")
    if not target:
        raise ValueError(
            f"{group} {name!r} has no _target_; available {group}s: {', '.join(available(group))}"
        )
    module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"{group} {name!r}: cannot import {target} ({exc}); "
            f"available {group}s: {', '.join(available(group))}"
        ) from exc


def construct(cls: Any, cfg: dict[str, Any], **extra: Any) -> Any:
    """cls built with the config's options (minus _target_) and `extra`."""
    return cls(**{k: v for k, v in cfg.items() if k != "_target_"}, **extra)


def build(group: str, cfg: dict[str, Any], **extra: Any) -> Any:
    """Instantiates the plugin with its YAML options (minus _target_) and `extra`."""
    return construct(resolve_target(group, cfg), cfg, **extra)
