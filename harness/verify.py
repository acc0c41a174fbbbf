"""python -m harness.verify dataset=NAME [data_root=...]: what the dataset adapter finds wrong
with the data on disk (missing files, layout, columns, shapes), without loading its images.
Exits 1 when anything is wrong, so scripts can check data before a sweep."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from harness import registry
from harness.registry import CONF_DIR


def verify_dataset(cfg_dataset: dict) -> list[str]:
    """The adapter's list of problems (empty when usable)."""
    return registry.build("dataset", cfg_dataset).verify()


@hydra.main(config_path=str(CONF_DIR), config_name="verify", version_base="1.3")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    name = c["dataset"].get("name", "?")
    problems = verify_dataset(c["dataset"])
    if not problems:
        print(f"dataset {name!r}: OK")
        return
    print(f"dataset {name!r}: {len(problems)} problem(s)")
    for problem in problems:
        print(f"  - {problem}")
    sys.exit(1)


if __name__ == "__main__":
    main()
