"""The report-section interface of the leaderboard page: a section is an id, a title, its
rows (a selector over the dataset's summary rows, or a table built from what the
leaderboard computed), the plots it shows (static files by name, interactive figures) and
whether it starts folded. Sections are registered (`register_section`), like plots in
harness/report/plots.py, so that a later issue adds a section - a statistics table, an OOD
view, a model-zoo column - by registering it, without editing the page code
(harness/report/page.py draws whatever is registered, in `order`).

    from harness.report.sections import Section, register_section

    register_section(Section(
        id="my_view", title="My view", order=75,
        rows=lambda agg: agg["metric"].str.startswith("my_"),
    ))

A section module outside harness/report/ is imported by whoever registers it before the
page is written (the built-in ones: harness/report/section_kinds.py). A section draws from
its own dataset's context: each dataset's part of the page is kept and drawn again only
when that dataset, the options or the sections' code change (harness/report/pagecache.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class SectionContext:
    """What a section may draw from, for one dataset. `agg`: the dataset's summary rows
    (not per group value); `table`: its tidy rows (per run, for hover by seed); the rest
    as write_leaderboard computed them (None or empty when not computed)."""

    dataset: str
    agg: pd.DataFrame
    table: pd.DataFrame | None = None
    primary_metric: str = "accuracy"
    headline: Any = None
    comparisons: pd.DataFrame | None = None
    scorer_comparisons: pd.DataFrame | None = None
    selected: pd.DataFrame | None = None
    corruptions: dict[str, pd.DataFrame] = field(default_factory=dict)
    failures: pd.DataFrame | None = None
    plots: dict[str, list[Path]] = field(default_factory=dict)  # static files by plot name
    extra: dict[str, Any] = field(default_factory=dict)  # for sections added later


@dataclass(frozen=True)
class Section:
    """One part of a dataset's page.

    rows:    a selector (summary rows -> boolean mask); the section shows those rows as a
             sortable, filterable table with a CSV download (columns: page.COLUMNS), or
    table:   a function of the context returning the table to show (None or empty: the
             section is left out, unless it has html or figures);
    html:    a function returning static HTML instead of (or before) a table;
    plots:   names of static plot files (PNG shown, PDF linked) drawn for the dataset; a
             name ending in "*" is a prefix;
    figures: a function returning interactive plotly figures (hover: setting and seed);
    folded:  drawn inside <details> (closed) or open on the page;
    heading: False: drawn as it is, without a title or fold (the headline);
    filters: the columns offered as filters above the table."""

    id: str
    title: str
    order: int
    rows: Callable[[pd.DataFrame], pd.Series] | None = None
    table: Callable[[SectionContext], pd.DataFrame | None] | None = None
    html: Callable[[SectionContext], str] | None = None
    plots: tuple[str, ...] = ()
    figures: Callable[[SectionContext], list[Any]] | None = None
    folded: bool = True
    heading: bool = True
    note: str = ""
    filters: tuple[str, ...] = ("model", "method", "scorer", "metric", "split")


SECTIONS: dict[str, Section] = {}


def register_section(section: Section, replace: bool = False) -> Section:
    """Adds a section to every dataset's page; an id already taken is an error unless
    `replace` (a section redefined on purpose)."""
    if not section.id or not section.id.replace("_", "").isalnum():
        raise ValueError(f"section id must be letters, digits and _, got {section.id!r}")
    if section.id in SECTIONS and not replace:
        raise ValueError(f"section {section.id!r} is registered already")
    if (section.rows is None) == (section.table is None) and section.html is None:
        if section.figures is None and not section.plots:
            raise ValueError(f"section {section.id!r}: give rows or table (or html, plots)")
    SECTIONS[section.id] = section
    return section


def registered_sections() -> list[Section]:
    """The registered sections in page order (the built-ins are registered when
    harness.report.page is imported)."""
    return sorted(SECTIONS.values(), key=lambda s: (s.order, s.id))


def plot_names(section: Section, available: dict[str, list[Path]]) -> list[str]:
    """The dataset's static plots that `section` shows, in the section's order."""
    names = []
    for pattern in section.plots:
        if pattern.endswith("*"):
            names += sorted(n for n in available if n.startswith(pattern[:-1]))
        elif pattern in available:
            names.append(pattern)
    return list(dict.fromkeys(names))
