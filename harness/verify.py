"""python -m harness.verify dataset=NAME [data_root=...] [+experiment=NAME]: what the run would
lack, without loading any image: the dataset adapter's problems with the data on disk
(missing files, layout, columns, shapes), pretrained weights missing from the local cache
while the hub is offline, an augmentation the dataset refuses. It composes the run's own
config (conf/config.yaml), so an experiment preset is checked as harness.run would run it.
Exits 1 when anything is wrong, so scripts can check a machine before a sweep."""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from harness import registry
from harness.augment import check_refusals
from harness.config import build_dataset
from harness.models import check_pretrained_weights
from harness.registry import CONF_DIR


def verify_dataset(cfg_dataset: dict) -> list[str]:
    """The adapter's list of problems (empty when usable)."""
    return registry.build("dataset", cfg_dataset).verify()


def verify_run(c: dict[str, Any]) -> list[str]:
    """Every problem found with what a run of config `c` needs, each naming it."""
    # with the top-level ood_sets attached, so that each missing OOD folder or list is named
    adapter = build_dataset(c)
    problems = adapter.verify()
    checks = [lambda: check_refusals(c.get("augment"), adapter)]
    m = c.get("model") or {}
    if m.get("pretrained") and not m.get("checkpoint"):
        checks.append(lambda: check_pretrained_weights(m["name"]))
    for check in checks:
        try:
            check()
        except (ValueError, FileNotFoundError) as exc:
            problems.append(str(exc))
    return problems


@hydra.main(config_path=str(CONF_DIR), config_name="verify", version_base="1.3")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    name = c["dataset"].get("name", "?")
    problems = verify_run(c)
    if not problems:
        print(f"dataset {name!r}: OK")
        return
    print(f"dataset {name!r}: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  - {problem}")
    sys.exit(1)


if __name__ == "__main__":
    main()
