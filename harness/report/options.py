"""conf/leaderboard.yaml's and conf/export.yaml's options (the tables' commands, and a
sweep's end rebuild), each bad value named before anything is read or written; the run
configs' checks are harness/config.py's."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def is_name(value: Any) -> bool:
    """A non-empty string (a name in a config). Here and not in harness/config.py (which
    uses it too): importing that module brings torch, which a table command never needs."""
    return isinstance(value, str) and value != ""


def _check_results_dir(value: Any) -> None:
    if not is_name(value):
        raise ValueError(f"results_dir must be a path, got {value!r}")
    if not Path(value).is_dir():  # a typo must not give an empty table and exit 0
        raise FileNotFoundError(f"results_dir={value!r}: no such directory")


def _check_model_selection(value: Any) -> None:
    from harness.selection import SETTING_RULES

    if value is not None and value not in SETTING_RULES:
        raise ValueError(
            f"model_selection must be one of {sorted(SETTING_RULES)} or null, got {value!r}"
        )


def validate_leaderboard(c: dict[str, Any]) -> None:
    """conf/leaderboard.yaml's options (also what a sweep's end rebuild uses), each bad value
    named before anything is read or written."""
    from harness.report.build import OUTPUTS

    _check_results_dir(c.get("results_dir"))
    if not is_name(c.get("baseline")):
        raise ValueError(f"baseline must be a method name, got {c.get('baseline')!r}")
    for key in ("scorer_baseline", "corruption_reference"):
        if c.get(key) is not None and not is_name(c[key]):
            raise ValueError(f"{key} must be a name or null, got {c[key]!r}")
    k = c.get("scorer_resamples", 200)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"scorer_resamples must be a positive integer, got {k!r}")
    if c.get("multiple_comparisons", "holm") not in ("holm", "bh", "none"):
        raise ValueError(
            f"multiple_comparisons={c['multiple_comparisons']!r}: use holm, bh or none"
        )
    if not isinstance(c.get("aggregates", False), bool):
        raise ValueError(f"aggregates must be true or false, got {c['aggregates']!r}")
    if c.get("scorer_multiple_comparisons", "bh") not in ("holm", "bh", "none"):
        raise ValueError(
            f"scorer_multiple_comparisons={c['scorer_multiple_comparisons']!r}: "
            "use holm, bh or none"
        )
    _check_model_selection(c.get("model_selection"))
    primary = c.get("primary_metric", "accuracy")
    if not (
        is_name(primary)
        or (isinstance(primary, dict) and all(is_name(v) for v in primary.values()))
    ):
        raise ValueError(
            f"primary_metric must be a metric name or {{dataset: metric}}, got {primary!r}"
        )
    outputs = c.get("outputs", list(OUTPUTS))
    if not isinstance(outputs, list) or not set(outputs) <= set(OUTPUTS):
        raise ValueError(f"outputs must be a list among {list(OUTPUTS)}, got {outputs!r}")
    workers = c.get("plot_workers", "auto")
    if workers != "auto" and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise ValueError(f"plot_workers must be auto or a positive integer, got {workers!r}")
    from harness.report.build import check_headline_split, check_min_effect, check_rebuild
    from harness.report.robustness import check_options

    check_rebuild(c.get("rebuild", False))
    check_min_effect(c.get("min_effect"))
    check_headline_split(c.get("headline_split"))
    check_options(c.get("effective_robustness"))


def validate_export(c: dict[str, Any]) -> None:
    """conf/export.yaml's options, each bad value named before the table is read."""
    from harness.report.export import AXES, FORMATS

    _check_results_dir(c.get("results_dir"))
    if c.get("dataset") is not None and not is_name(c["dataset"]):
        raise ValueError(f"dataset must be a dataset name or null, got {c['dataset']!r}")
    rows = [c["rows"]] if isinstance(c.get("rows"), str) else c.get("rows")
    if not isinstance(rows, list) or not rows or not set(rows) <= set(AXES):
        raise ValueError(
            f"rows must be a list of table axes among {list(AXES)}, got {c.get('rows')!r}"
        )
    if c.get("columns") not in AXES:
        raise ValueError(
            f"columns must be one table axis among {list(AXES)}, got {c.get('columns')!r}"
        )
    if c["columns"] in rows:
        raise ValueError(f"columns={c['columns']!r} is also in rows")
    metric = c.get("metric")
    if not (is_name(metric) or (isinstance(metric, list) and metric and all(map(is_name, metric)))):
        raise ValueError(f"metric must be a metric name or a list of them, got {metric!r}")
    if isinstance(metric, list) and len(metric) > 1 and c["columns"] != "metric":
        raise ValueError(f"metric={metric!r}: several metrics need columns=metric")
    if not isinstance(c.get("scorer", ""), str):
        raise ValueError(
            f'scorer must be a scorer name or "" (the model\'s own), got {c["scorer"]!r}'
        )
    splits = c.get("splits")
    if splits is not None and (not isinstance(splits, list) or not all(map(is_name, splits))):
        raise ValueError(f"splits must be a list of split names or null, got {splits!r}")
    if c.get("format") not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {c.get('format')!r}")
    p = c.get("precision")
    if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= 12:
        raise ValueError(f"precision must be an integer in [0, 12], got {p!r}")
    _check_model_selection(c.get("model_selection"))
    out = c.get("output")
    if out is not None and (not is_name(out) or Path(out).is_dir()):
        raise ValueError(f"output must be a file path or null, got {out!r}")
