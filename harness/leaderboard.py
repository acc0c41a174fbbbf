"""Collect completed runs into the tidy table and write a Markdown leaderboard per dataset.

    python -m harness.leaderboard                      # reads results/, writes below it
    python -m harness.leaderboard results_dir=runs/exp1

Aggregates within a setting (setting_id: same everything but the seed), never across
hyperparameters or data limits: mean, sample standard deviation (ddof=1) and n over seeds.
Reads completed runs only and never edits them. The parts are in harness/report/; this is
the command (options: conf/leaderboard.yaml).
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.registry import CONF_DIR
from harness.report.build import leaderboard_options, write_leaderboard

__all__ = ["leaderboard_options", "main", "write_leaderboard"]


@hydra.main(config_path=str(CONF_DIR), config_name="leaderboard", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from harness.report.options import validate_leaderboard

    c = OmegaConf.to_container(cfg, resolve=True)
    validate_leaderboard(c)
    start = time.perf_counter()
    paths = write_leaderboard(c["results_dir"], **leaderboard_options(c))
    took = time.perf_counter() - start
    # the terminal gets each dataset's headline; the Markdown files keep the detail
    for name, path in paths.items():
        if name not in ("table", "csv", "index", "html"):
            print(f"{name}: {path}")
            print(headline_of(path.read_text()))
    print(f"table:       {paths['table']} (and {paths['csv'].name})")
    print(f"leaderboard: {paths['index']}")
    if "html" in paths:
        size = paths["html"].stat().st_size / 1e6
        print(f"page:        {paths['html']} ({size:.1f} MB; open it in a browser, offline)")
    print(f"took:        {took:.1f} s")


def headline_of(markdown: str) -> str:
    """The headline section of a dataset's Markdown leaderboard (its table and caption)."""
    start = markdown.find("## Headline")
    if start < 0:
        return ""
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None].strip() + "\n"


if __name__ == "__main__":
    main()
