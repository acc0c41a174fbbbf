"""write_leaderboard: collects a results root into the tidy table and writes below it the
summary and comparison CSVs, the Markdown leaderboards, the plots and the page."""

from __future__ import annotations

import fcntl
import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import tablefiles
from harness.report.domains import domain_markdown
from harness.report.drawing import resolve_plot_workers
from harness.report.estimators import estimators_section
from harness.report.headline import headline_markdown
from harness.report.increment import (
    code_key,
    page_keys,
    record_pages,
    stage_lines,
    unchanged_pages,
)
from harness.report.markdown import dataset_markdown, index_markdown, plots_section
from harness.report.page import TITLE, write_page
from harness.report.pagecache import PageParts, page_key, page_unchanged, part_keys
from harness.report.partcache import Options, PartCache
from harness.report.plotcache import CachedPlots
from harness.report.robustness import check_options, robustness_section
from harness.report.task_aggregates import aggregates_table
from harness.store import atomic_write_csv, atomic_write_text
from harness.table import collect_cached, collect_failures

OUTPUTS = ("markdown", "plots", "html")


# write_leaderboard's arguments that change neither a derived frame nor a page's text
NOT_FRAME_OPTIONS = ("results_dir", "rebuild", "outputs", "plot_workers", "aggregates",
                     "scorer_resamples")  # fmt: skip


def write_leaderboard(
    results_dir: str | Path,
    baseline: str = "erm",
    scorer_baseline: str | None = "msp",
    scorer_resamples: int = 200,
    multiple_comparisons: str = "holm",
    scorer_multiple_comparisons: str = "bh",
    model_selection: str | None = "id_val",
    primary_metric: dict[str, str] | str = "accuracy",
    outputs: tuple[str, ...] | list[str] = OUTPUTS,
    corruption_reference: str | None = None,
    plot_workers: int | str = "auto",
    effective_robustness_options: dict[str, Any] | None = None,
    min_effect: float | None = None,
    headline_split: dict[str, str] | None = None,
    aggregates: bool = False,
    rebuild: bool = False,
) -> dict[str, Path]:
    """Collects results_dir into table.parquet/.csv, summary and comparison CSVs, and the
    outputs asked for: leaderboard/*.md, plots (PNG + PDF), index.html. Returns the paths.
    The rows come through the consolidated store (<root>/store/, harness/rowstore.py),
    reconciled with the run directories; rebuild=True builds the store again from every
    run directory."""
    # what a dataset's derived frames depend on besides its rows (harness/report/increment.py):
    # not what is drawn or written (outputs, plot_workers, aggregates.csv), nor the unused
    # scorer_resamples: a call with other outputs reads the frames an earlier one computed
    frame_options = {k: v for k, v in locals().items() if k not in NOT_FRAME_OPTIONS}
    # and its page: those, and whether it links plots
    page_options = {**frame_options, "plot_links": "plots" in outputs}
    root = Path(results_dir)
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"leaderboard outputs must be among markdown, plots, html: {unknown}")
    for key, value in (
        ("multiple_comparisons", multiple_comparisons),
        ("scorer_multiple_comparisons", scorer_multiple_comparisons),
    ):
        if value not in ("holm", "bh", "none"):
            raise ValueError(f"{key}={value!r}: use holm, bh or none")
    if not root.is_dir():  # a typo would otherwise write an empty leaderboard and exit 0
        raise FileNotFoundError(f"results_dir={str(results_dir)!r}: no such directory")
    if (
        not isinstance(scorer_resamples, int)
        or isinstance(scorer_resamples, bool)
        or (scorer_resamples < 1)
    ):
        raise ValueError(f"scorer_resamples must be a positive integer, got {scorer_resamples!r}")
    robustness = check_options(effective_robustness_options)
    check_min_effect(min_effect)
    check_headline_split(headline_split)
    if not isinstance(aggregates, bool):
        raise ValueError(f"aggregates must be true or false, got {aggregates!r}")
    check_rebuild(rebuild)
    primaries = primary_metric if isinstance(primary_metric, dict) else {}
    default_primary = primaries.get("default", "accuracy") if primaries else primary_metric
    # one rebuild of a root at a time: a second process (an overlapping sweep's end, a
    # user's command) waits, then rebuilds from what is there (issue 24, item 4)
    with leaderboard_lock(root), older_objects_frozen():
        # table.parquet/.csv written in a thread meanwhile (joined in leaderboard_lock)
        table, skipped, changed = collect_cached(root, rebuild, csv=True, background=True)
        # what a dataset's page and its derived frames depend on (increment.py): its stages,
        # the options, the code; frames of datasets whose key is unchanged are read from
        # leaderboard/.parts/, the others computed from their rows (partcache.py)
        lines = stage_lines(root, table)  # each dataset's stages
        code = code_key()  # (the harness's files: ~60 stats, once)
        keys = page_keys(root, table, page_options, lines, code)
        frame_keys = page_keys(root, table, frame_options, lines, code)
        parts = PartCache(root, table, frame_keys, rebuild, lines, code)
        agg = parts.summary()
        # (the summary holds every method and scorer of the table, in a fifth of its rows)
        _warn_unknown_baselines(agg, baseline, scorer_baseline)
        board = root / "leaderboard"
        datasets = sorted(agg["dataset"].unique())

        def primary_of(dataset: str) -> str:
            return primaries.get(dataset, default_primary) if primaries else default_primary

        jobs = {
            board / "plots" / dataset: (
                table[table["dataset"] == dataset],
                agg[agg["dataset"] == dataset],
                primary_of(dataset),
                baseline,
            )
            for dataset in (datasets if "plots" in outputs else [])
        }
        # the plots are drawn (in worker processes) while the tables are made here
        # summary.csv (~23 MB at 10,000 runs) written by arrow in a thread meanwhile
        summary_csv = tablefiles.csv_in_thread(agg, board / "summary.csv")
        with CachedPlots(jobs, root, resolve_plot_workers(plot_workers)) as plots, summary_csv:
            # scorer_resamples is accepted but no longer used: DeLong needs no resamples
            frames, headlines = parts.frames(
                Options(baseline, scorer_baseline, multiple_comparisons,
                        scorer_multiple_comparisons, model_selection, min_effect,
                        corruption_reference, robustness, primary_of, headline_split)
            )  # fmt: skip
            selected = frames["selection"]
            if selected is not None:
                atomic_write_csv(selected, board / "selection.csv")
            comparisons = frames["comparisons"]
            atomic_write_csv(comparisons, board / "comparisons.csv")
            scorer_comp = frames["scorer_comparisons"]
            if scorer_comp is not None:
                atomic_write_csv(scorer_comp, board / "scorer_comparisons.csv")
            if aggregates:  # IQM and probability of improvement over the shifted splits
                # after a search, the chosen setting of each method (as the comparisons)
                chosen = (
                    table
                    if selected is None
                    else table[table["setting_id"].isin(selected["setting_id"])]
                )
                metric_of = {dataset: primary_of(dataset) for dataset in datasets}
                atomic_write_csv(
                    aggregates_table(chosen, metric_of, baseline), board / "aggregates.csv"
                )
            corruptions = {
                name.removeprefix("corruptions."): frame
                for name, frame in frames.items()
                if name.startswith("corruptions.")
            }
            for name, frame in corruptions.items():
                atomic_write_csv(frame, board / f"corruptions_{name}.csv")
            eff = frames["effective_robustness"]
            if eff is not None:
                atomic_write_csv(eff, board / "effective_robustness.csv")
            ranking = frames["estimators"]  # accuracy estimators by MAE on shifted splits
            if not ranking.empty:
                atomic_write_csv(ranking, board / "estimators.csv")
            held_out = frames["domain_generalisation"]  # leave-one-domain-out sweeps only
            if not held_out.empty:
                atomic_write_csv(held_out, board / "domain_generalisation.csv")
            # the Markdown too, while the plots are drawn; their links are added after.
            # A dataset whose stages and options are those its page was written from is
            # left as it is (harness/report/increment.py): after one new run, only its
            # dataset's page is made
            all_keys = keys  # (the page's: index.html's parts are keyed by them too)
            if "markdown" not in outputs:
                keys = {}
            kept = set() if rebuild else unchanged_pages(board, keys)
            texts = {
                dataset: dataset_markdown(
                    agg,
                    dataset,
                    comparisons,
                    primary_of(dataset),
                    selected,
                    scorer_comp,
                    None,
                    corruptions,
                    headline_markdown(headlines[dataset]),
                )
                + "".join(f"{line}\n" for line in robustness_section(eff, dataset))
                + "".join(f"{line}\n" for line in domain_markdown(held_out, dataset))
                + "".join(f"{line}\n" for line in estimators_section(ranking, dataset))
                for dataset in (datasets if "markdown" in outputs else [])
                if dataset not in kept
            }
            failures = collect_failures(root, skipped)
            all_plots = {out_dir.name: files for out_dir, files in plots.result().items()}
        paths = {
            "table": root / "table.parquet",
            "csv": root / "table.csv",
            "index": board / "README.md",
        }
        for dataset in datasets if "markdown" in outputs else []:
            path = paths[dataset] = board / f"{dataset}.md"
            if dataset in kept:  # unchanged: not written again
                continue
            links = plots_section(dataset, all_plots.get(dataset))
            atomic_write_text(path, texts[dataset] + "".join(f"{line}\n" for line in links))
        if keys:
            record_pages(board, keys)
        if "html" in outputs:
            # each dataset's part of the page is kept (harness/report/pagecache.py): only
            # the changed datasets' parts are drawn, and an unchanged page is not written
            kept_parts = PageParts(board, part_keys(all_keys, all_plots, failures), not rebuild)
            page = paths["html"] = board / "index.html"
            whole = page_key(kept_parts.keys, datasets, TITLE)
            if rebuild or not page_unchanged(board, page, whole):
                write_page(
                    agg,
                    all_plots,
                    page,
                    TITLE,
                    headlines=headlines,
                    table=table,
                    parts=kept_parts,
                    comparisons=comparisons,
                    scorer_comparisons=scorer_comp,
                    selected=selected,
                    corruptions=corruptions,
                    failures=failures,
                )
            kept_parts.finish(whole)
        parts.save()
        index = index_markdown(table, len(skipped), datasets, "html" in outputs, failures)
        atomic_write_text(board / "README.md", index)
        return paths


@contextmanager
def leaderboard_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on <root>/.leaderboard.lock for the whole rebuild (fcntl.flock: the
    kernel releases it when its process dies, so a killed rebuild never leaves it held)."""
    with open(root / ".leaderboard.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            try:  # collect_cached's background writes: done before another rebuild may start
                tablefiles.wait(root)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """The objects that exist on entry left out of the garbage collections inside (gc.freeze,
    undone on leaving): a full collection walks every tracked object, the imported modules'
    ~150,000 of them too (0.09 s each time; ~0.25 s in a process that has loaded torch),
    and a rebuild allocates enough to set off one or two. Nothing is done where the
    collector is off or the process froze objects itself (its freeze is its own)."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def check_headline_split(value: Any) -> None:
    if value is not None and not (
        isinstance(value, dict) and all(isinstance(v, str) and v for v in value.values())
    ):
        raise ValueError(f"headline_split must be a mapping {{dataset: split}}, got {value!r}")


def check_rebuild(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"rebuild must be true or false, got {value!r}")


def check_min_effect(min_effect: Any) -> None:
    if min_effect is not None and (
        isinstance(min_effect, bool) or not isinstance(min_effect, int | float) or min_effect <= 0
    ):
        raise ValueError(f"min_effect must be null or a positive number, got {min_effect!r}")


def _warn_unknown_baselines(table: Any, baseline: str, scorer_baseline: str | None) -> None:
    """A baseline that names nothing in the table (or its summary) drops its comparisons:
    say so, with the names there are (a warning, not an error: a sweep's end-of-sweep
    rebuild may run before the baseline's runs exist)."""
    if table.empty:
        return
    methods = sorted(table["method"].dropna().unique())  # not set(): 1.4 s on 500,000 rows
    if baseline not in methods:
        warnings.warn(
            f"baseline={baseline!r} names no method in the results (methods: {methods}); "
            "comparisons.csv is empty",
            stacklevel=3,
        )
    scorers = sorted(set(table["scorer"].dropna().unique()) - {""})
    if scorer_baseline and scorers and scorer_baseline not in scorers:
        warnings.warn(
            f"scorer_baseline={scorer_baseline!r} names no scorer in the results (scorers: "
            f"{scorers}); scorer_comparisons.csv is empty",
            stacklevel=3,
        )


def leaderboard_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """write_leaderboard's keyword arguments from a leaderboard config (conf/leaderboard.yaml)."""
    names = (
        "baseline",
        "scorer_baseline",
        "scorer_resamples",
        "multiple_comparisons",
        "scorer_multiple_comparisons",
        "model_selection",
        "primary_metric",
        "outputs",
        "corruption_reference",
        "plot_workers",
        "min_effect",
        "headline_split",
        "aggregates",
        "rebuild",
    )
    options = {k: cfg[k] for k in names if k in cfg}
    if "effective_robustness" in cfg:  # a mapping in the config; write_leaderboard's name says so
        options["effective_robustness_options"] = cfg["effective_robustness"]
    return options
