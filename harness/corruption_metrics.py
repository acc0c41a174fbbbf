"""Corruption errors and mCE of every finished run below a results root (the computation:
harness/report/corruption.py).

    python -m harness.corruption_metrics results_dir=results reference=alexnet
    python -m harness.corruption_metrics --results results --reference alexnet   # the same

Prints the errors per corruption, per severity and overall (and, with a reference, mCE) and
writes them to <results_dir>/corruptions/{errors,per_corruption,per_severity,mean,mce}.csv.
Options: conf/corruption_metrics.yaml.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.registry import CONF_DIR
from harness.report.corruption import (
    ALEXNET_IMAGENET_C_ERRORS,
    ALEXNET_IMAGENET_CLEAN_ERROR,
    ALEXNET_SOURCE,
    SPLIT_PATTERN,
    STANDARD_CORRUPTIONS,
    corruption_errors,
    mce,
    summarize,
)
from harness.store import atomic_write_csv
from harness.table import collect_current

__all__ = [
    "ALEXNET_IMAGENET_CLEAN_ERROR",
    "ALEXNET_IMAGENET_C_ERRORS",
    "ALEXNET_SOURCE",
    "SPLIT_PATTERN",
    "STANDARD_CORRUPTIONS",
    "corruption_errors",
    "main",
    "mce",
    "overrides",
    "summarize",
]

# the flags documented before the command became a Hydra app -> their config keys
FLAGS = {"--results": "results_dir", "--reference": "reference"}


def _quoted(text: str) -> str:
    """A value that Hydra's override grammar reads back as this string (never a number: a
    setting_id may look like one)."""
    return (
        "'"
        + re.sub(
            r"(\\*)('|$)", lambda m: m.group(1) * 2 + "\\" * len(m.group(2)) + m.group(2), text
        )
        + "'"
    )


def overrides(argv: Sequence[str]) -> list[str]:
    """argv with `--results DIR` / `--reference NAME` (also `--flag=value`) as the Hydra
    overrides results_dir=DIR / reference=NAME; everything else as it was."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        flag, eq, value = arg.partition("=")
        if flag not in FLAGS:
            out.append(arg)
            continue
        if not eq:
            if not args:
                raise SystemExit(f"corruption_metrics: {flag} needs a value")
            value = args.pop(0)
        out.append(f"{FLAGS[flag]}={_quoted(value)}")
    return out


def report(results_dir: str | Path, reference: str | None, metric: str = "accuracy") -> Path:
    """Computes, prints and writes the corruption tables; returns their folder."""
    table, _ = collect_current(results_dir)  # the store when current, else the run dirs
    if table.empty:
        raise SystemExit(f"{results_dir}: no finished runs")
    errors = corruption_errors(table, metric)
    if errors.empty:
        raise SystemExit(f"{results_dir}: no corruption splits (<corruption>-<severity>)")
    out = Path(results_dir) / "corruptions"
    parts = {"errors": errors, **summarize(errors)}
    if reference:
        parts["mce"] = mce(table, reference, metric)
    for name, frame in parts.items():
        atomic_write_csv(frame, out / f"{name}.csv")
        print(f"## {name}\n{frame.to_string(index=False)}\n")
    print(f"written to {out}")
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="corruption_metrics", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    report(c["results_dir"], c["reference"], c["metric"])


def main(argv: Sequence[str] | None = None) -> None:
    """python -m harness.corruption_metrics [results_dir=DIR] [reference=NAME], or with the
    flags --results DIR --reference NAME: they become overrides before Hydra reads argv."""
    args = sys.argv[1:] if argv is None else argv
    saved = sys.argv
    sys.argv = [saved[0] if saved else "harness.corruption_metrics", *overrides(args)]
    try:
        _app()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
