"""Paper tables from the tidy table: LaTeX (booktabs), Markdown or CSV.

    python -m harness.export metric=accuracy rows=[method] columns=split format=latex
    python -m harness.export dataset=coloured_digits metric=worst_group_accuracy \\
        model_selection=worst_group_val format=markdown output=table.md

Cells are mean ± sample standard deviation (ddof=1) over the seeds of one setting; the best
entry of each column is bold (the lowest for metrics where lower is better). Reads
`<results_dir>/table.parquet` (written by `python -m harness.leaderboard` and at the end of
every sweep), or collects the runs when it is missing. Never runs a model. The table is
built by harness/report/export.py; this is the command (options: conf/export.yaml).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.registry import CONF_DIR
from harness.report.export import export, load_table
from harness.store import atomic_write_text

__all__ = ["export", "load_table", "main"]


# conf/ has a `dataset` config group, so Hydra reads `dataset=NAME` as choosing a group (and
# fails); main() passes it under this name instead, with Hydra's value grammar intact.
DATASET_ARG = "export_dataset"


@hydra.main(config_path=str(CONF_DIR), config_name="export", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from harness.report.options import validate_export

    c = OmegaConf.to_container(cfg, resolve=True)
    if DATASET_ARG in c:
        c["dataset"] = c.pop(DATASET_ARG)
    validate_export(c)
    rows = [c["rows"]] if isinstance(c["rows"], str) else list(c["rows"])
    text = export(
        load_table(c["results_dir"]),
        rows,
        c["columns"],
        c["metric"],
        c["format"],
        int(c["precision"]),
        c["scorer"] or "",
        c["splits"],
        c["dataset"],
        c["model_selection"],
        c["results_dir"],
    )
    if c["output"]:
        atomic_write_text(c["output"], text)
        print(f"wrote {c['output']}")
    else:
        print(text, end="")


def main(argv: Sequence[str] | None = None) -> None:
    """python -m harness.export [key=value ...]; `dataset=NAME` becomes +export_dataset=NAME
    before Hydra reads argv."""
    args = list(sys.argv[1:] if argv is None else argv)
    args = [
        f"+{DATASET_ARG}={a[len('dataset=') :]}" if a.startswith("dataset=") else a for a in args
    ]
    saved = sys.argv
    sys.argv = [saved[0] if saved else "harness.export", *args]
    try:
        _app()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
