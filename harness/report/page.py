"""results/leaderboard/index.html: a static page (opens from disk, no server, no request
leaving the machine) with, per dataset, the registered sections (harness/report/sections.py):
the headline first, then interactive plots and folded sections, each a table sortable by
any column (click its header), filterable, downloadable as CSV, with its plots.

Plain HTML and a few lines of JavaScript: the rows travel as JSON inside the page and are
drawn by the script, so a large results root gives a page that still opens quickly (at most
MAX_SHOWN rows are drawn at once; the filters narrow them). plotly.js (about 4.8 MB) is
inlined once per page when some section draws an interactive figure.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.report.pagecache import PageParts, Part

# imported for its registrations (the built-in sections); headline_html re-exported
from harness.report.section_kinds import headline_html  # noqa: F401
from harness.report.sections import Section, SectionContext, plot_names, registered_sections
from harness.store import atomic_write_text

COLUMNS = [
    "model",
    "method",
    "tta",
    "augment",
    "setting",
    "scorer",
    "metric",
    "split",
    "mean",
    "std",
    "n_seeds",
    "ci_low",
    "ci_high",
    "interval",
]
TITLE = "Leaderboards"
FILTERS = ["model", "method", "scorer", "metric", "split"]
MAX_SHOWN = 500

SCRIPT = """
function render(id) {
  const t = TABLES[id], body = document.querySelector('#' + id + ' tbody');
  const active = {};
  document.querySelectorAll('#' + id + '-filters select').forEach(s => {
    if (s.value !== '') active[s.dataset.column] = JSON.parse(s.value); });
  let rows = t.rows.filter(r => Object.entries(active).every(([c, v]) =>
    String(r[t.columns.indexOf(c)]) === v));
  if (t.sortColumn !== null) {
    const k = t.sortColumn, dir = t.sortAscending ? 1 : -1;
    rows = rows.slice().sort((a, b) => {
      const x = a[k], y = b[k];
      if (x === null) return 1; if (y === null) return -1;
      return (typeof x === 'number' && typeof y === 'number' ? x - y
              : String(x).localeCompare(String(y))) * dir; });
  }
  t.shown = rows;
  body.innerHTML = rows.slice(0, MAX_SHOWN).map(r => '<tr>' + r.map(v =>
    (typeof v === 'number' ? '<td class="num">' : '<td>')
    + (v === null ? '' : typeof v !== 'number' ? escapeHtml(v)
      : Number.isInteger(v) ? String(v) : v.toFixed(4))
    + '</td>').join('') + '</tr>').join('');
  document.getElementById(id + '-count').textContent =
    'showing ' + Math.min(rows.length, MAX_SHOWN) + ' of ' + rows.length + ' rows';
  document.querySelectorAll('#' + id + ' th').forEach((th, k) => {
    th.dataset.sorted = k === t.sortColumn ? (t.sortAscending ? 'ascending' : 'descending') : '';
  });
}
function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'})[c]);
}
function csvOf(id) {
  const t = TABLES[id], cell = v => v === null ? '' : /[",\\n]/.test(String(v))
    ? '"' + String(v).replace(/"/g, '""') + '"' : String(v);
  return [t.columns].concat(t.shown || t.rows).map(r => r.map(cell).join(',')).join('\\n') + '\\n';
}
function download(id) {  // the rows shown (filtered, sorted), made here: no request
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([csvOf(id)], {type: 'text/csv'}));
  a.download = id + '.csv';
  a.click();
}
function sortBy(id, k) {
  const t = TABLES[id];
  t.sortAscending = t.sortColumn === k ? !t.sortAscending : true;
  t.sortColumn = k;
  render(id);
}
const DECODED = {};
function rowsOf(source) {  // text columns travel as codes into their lists of values
  if (!DECODED[source]) {
    const d = DATA[source];
    DECODED[source] = d.rows.map(r => r.map((v, k) => d.dicts[k] && v !== null ? d.dicts[k][v] : v));
  }
  return DECODED[source];
}
document.addEventListener('DOMContentLoaded', () => {
  Object.keys(TABLES).forEach(id => {
    const t = TABLES[id], all = rowsOf(t.source);
    t.rows = t.index ? t.index.map(i => all[i]) : all;
    document.querySelectorAll('#' + id + ' th').forEach((th, k) =>
      th.addEventListener('click', () => sortBy(id, k)));
    document.querySelectorAll('#' + id + '-filters select').forEach(s =>
      s.addEventListener('change', () => render(id)));
    const button = document.getElementById(id + '-csv');
    if (button) button.addEventListener('click', () => download(id));
    render(id);
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; }
th[data-sorted=ascending]::after { content: ' \\25B2'; }
th[data-sorted=descending]::after { content: ' \\25BC'; }
td { text-align: left; } td.num { text-align: right; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.plots img { max-width: 520px; display: block; margin-bottom: 1em; }
.filters { margin: 0.3em 0; }
table.headline { font-size: 0.95em; margin-bottom: 1em; }
table.headline td:nth-child(-n+4) { text-align: left; }
.badge { padding: 1px 6px; border-radius: 8px; background: #eee; }
.badge.better { background: #cdeccd; } .badge.worse { background: #f6d0d0; }
.what { color: #444; max-width: 60em; }
details { margin: 0.5em 0 2em; } summary { cursor: pointer; color: #225; }
"""


def _table_id(dataset: str) -> str:
    return "t_" + "".join(c if c.isalnum() else "_" for c in dataset)


class RawJSON(str):
    """JSON text to splice into the page's data as it is."""


def _rows_json(frame: pd.DataFrame) -> dict[str, Any]:
    """The rows as JSON, each text column as codes into its list of values ("dicts"): a
    large root repeats a few model, method, metric and split names in every row."""
    text_columns = frame.select_dtypes(exclude="number").columns
    frame = frame.astype({c: object for c in text_columns}).fillna({c: "" for c in text_columns})
    dicts, coded = {}, {}
    for k, column in enumerate(frame.columns):
        if column in text_columns:
            codes, values = pd.factorize(frame[column].astype(str))
            coded[k], dicts[str(k)] = codes, [str(v) for v in values]
    frame = frame.set_axis(range(frame.shape[1]), axis=1)
    for k, codes in coded.items():
        frame[k] = codes
    # pandas writes the rows (NaN as null, floats to 6 digits) far faster than a loop
    return {"dicts": dicts, "rows": RawJSON(frame.to_json(orient="values", double_precision=6))}


def _dumps(specs: dict) -> str:
    """json.dumps of {id: spec}, with RawJSON values spliced in as they are."""
    parts = []
    for key, spec in specs.items():
        fields = ",".join(
            f"{json.dumps(k)}:{v if isinstance(v, RawJSON) else json.dumps(v, separators=(',', ':'))}"
            for k, v in spec.items()
        )
        parts.append(f"{json.dumps(key)}:{{{fields}}}")
    return "{" + ",".join(parts) + "}"


def page_rows(agg: pd.DataFrame) -> pd.DataFrame:
    """The summary rows the page shows: every aggregated number except per-group values."""
    rows = agg[agg["group_value"] == ""].assign(setting=agg["setting_id"].str[:8])
    return rows[["dataset", *COLUMNS]]


def _table_html(
    tid: str,
    frame: pd.DataFrame,
    filters: tuple[str, ...],
    tables: dict,
    source: str,
    index: np.ndarray | None = None,
) -> str:
    """A sortable, filterable table with a CSV download of the rows shown. Its rows are
    DATA[source] (drawn by the script), or those of its positions in `index`: sections
    that select summary rows share the dataset's rows instead of repeating them."""
    columns = [str(c) for c in frame.columns]
    tables[tid] = {
        "columns": columns,
        "source": source,
        "index": None if index is None else RawJSON(json.dumps(index.tolist())),
        "sortColumn": None,
        "sortAscending": True,
    }
    selects = []
    for column in (c for c in filters if c in frame.columns):
        values = sorted(map(str, frame[column].astype(str).unique()))
        # values as JSON strings: "" (no scorer) must differ from "" (all)
        options = "".join(
            f'<option value="{html.escape(json.dumps(v))}">{html.escape(v) or "(none)"}</option>'
            for v in values
        )
        selects.append(
            f'<label>{html.escape(column)} <select data-column="{html.escape(column)}">'
            f'<option value="">all</option>{options}</select></label>'
        )
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return (
        f'<div id="{tid}-filters" class="filters">{" ".join(selects)} '
        f'<button type="button" id="{tid}-csv">CSV of these rows</button> '
        f'<span id="{tid}-count"></span></div>\n'
        f'<table id="{tid}" class="data"><thead><tr>{header}</tr></thead><tbody></tbody></table>\n'
    )


def _images_html(names: list[str], plots: dict[str, list[Path]], page_dir: Path) -> str:
    """Static figures (PNG shown, PDF linked: the files for papers)."""
    return "".join(
        f'<a href="{html.escape(_rel(files[-1], page_dir))}">'
        f'<img src="{html.escape(_rel(files[0], page_dir))}" '
        f'alt="{html.escape(name)}" title="{html.escape(name)}"></a>'
        for name in names
        for files in [plots[name]]
    )


def _rel(path: Path, page_dir: Path) -> str:
    try:
        return path.relative_to(page_dir).as_posix()
    except ValueError:
        return path.as_uri() if path.is_absolute() else path.as_posix()


def _figures_html(figures: list[Any], prefix: str) -> str:
    """Plotly figures without their JavaScript (included once per page, in the head)."""
    return "".join(
        '<div class="figure">'
        + fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"{prefix}-{k}",
            config={"displaylogo": False, "responsive": False},
        )
        + "</div>"
        for k, fig in enumerate(figures)
    )


def section_html(
    section: Section, ctx: SectionContext, tid: str, page_dir: Path, tables: dict, data: dict
) -> tuple[str, bool]:
    """A section's HTML ("" when it has nothing to show) and whether it drew plotly figures."""
    parts = []
    if section.html is not None:
        parts.append(section.html(ctx))
    sid = tid if section.id == "all" else f"{tid}_{section.id}"
    if section.rows is not None:
        mask = np.asarray(section.rows(ctx.agg), dtype=bool)
        if mask.any():
            frame = ctx.agg.loc[mask, COLUMNS]
            index = None if mask.all() else np.flatnonzero(mask)
            parts.append(_table_html(sid, frame, section.filters, tables, tid, index))
    elif section.table is not None:
        frame = section.table(ctx)
        if frame is not None and not frame.empty:
            data[sid] = _rows_json(frame)
            parts.append(_table_html(sid, frame, section.filters, tables, sid))
    figures = section.figures(ctx) if section.figures is not None else []
    names = plot_names(section, ctx.plots)
    if section.id == "all":  # plots that no section claims are shown with every number
        claimed = {n for other in registered_sections() for n in plot_names(other, ctx.plots)}
        names += [n for n in ctx.plots if n not in claimed]
    if figures or names:
        parts.append(
            f'<div class="plots">{_figures_html(figures, sid)}'
            f"{_images_html(names, ctx.plots, page_dir)}</div>"
        )
    if not any(parts):
        return "", False
    body = "".join(parts)
    note = f'<p class="what">{html.escape(section.note)}</p>' if section.note else ""
    if not section.heading:  # e.g. the headline, right under the dataset's heading
        return body, bool(figures)
    if section.folded:
        return (
            f'<details id="{sid}-details" class="section"><summary>{html.escape(section.title)}'
            f"</summary>\n{note}{body}</details>\n",
            bool(figures),
        )
    return (
        f'<section id="{sid}-section"><h3>{html.escape(section.title)}</h3>{note}{body}</section>\n',
        bool(figures),
    )


def write_page(
    agg: pd.DataFrame,
    plots: dict[str, dict[str, list[Path]]],
    path: str | Path,
    title: str = TITLE,
    headlines: dict[str, Any] | None = None,
    table: pd.DataFrame | None = None,
    parts: PageParts | None = None,
    **context: Any,
) -> Path:
    """Writes the page: per dataset, every registered section (harness/report/sections.py).
    `plots` maps dataset -> plot name -> [png, pdf] (paths beside it); `table` (the tidy
    rows) feeds the interactive plots; `parts`: the datasets' parts kept from earlier calls
    (harness/report/pagecache.py), read instead of drawn; `context`: the other
    SectionContext fields (comparisons, scorer_comparisons, selected, corruptions,
    failures, primary_metric, extra)."""
    path = Path(path)
    shown = agg["group_value"] == ""
    pieces = []
    for dataset in sorted(agg.loc[shown, "dataset"].unique()):
        part = None if parts is None else parts.get(dataset)
        if part is None:
            rows = agg[shown & (agg["dataset"] == dataset)].reset_index(drop=True)
            ctx = SectionContext(
                dataset=dataset,
                agg=rows.assign(setting=rows["setting_id"].astype(str).str[:8]),
                table=None if table is None else table[table["dataset"] == dataset],
                headline=(headlines or {}).get(dataset),
                plots=dict((plots or {}).get(dataset) or {}),
                **context,
            )
            part = dataset_part(ctx, path.parent)
            if parts is not None:
                parts.put(dataset, part)
        pieces.append(part)
    data = "{" + ",".join(p.data for p in pieces if p.data) + "}"
    tables = "{" + ",".join(p.tables for p in pieces if p.tables) + "}"
    script_data = f"const DATA = {data};\nconst TABLES = {tables};".replace("</", "<\\/")
    plotly_js = ""
    if any(p.plotly for p in pieces):  # plotly.js once per page, inline: opens offline
        from plotly.offline import get_plotlyjs

        plotly_js = f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
    text = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title>\n<style>{STYLE}</style>\n{plotly_js}</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        "<p>Per dataset: the headline, then folded sections. Tables give the mean, sample "
        "standard deviation (ddof=1), n seeds and 95% interval per setting "
        "(<code>summary.csv</code>); click a header to sort, choose values to filter.</p>\n"
        + "".join(p.html for p in pieces)
        + f"\n<script>const MAX_SHOWN = {MAX_SHOWN};\n{script_data}\n{SCRIPT}"
        "</script>\n</body></html>\n"
    )
    atomic_write_text(path, text)
    return path


def dataset_part(ctx: SectionContext, page_dir: Path) -> Part:
    """One dataset's heading and sections, with the rows and table specs they add."""
    tables: dict = {}
    data: dict = {}  # the rows of the tables, shared by the sections that select from them
    tid = _table_id(ctx.dataset)
    data[tid] = _rows_json(ctx.agg[COLUMNS])
    texts = [f'<h2 id="{tid}-heading">{html.escape(ctx.dataset)}</h2>\n']
    uses_plotly = False
    for section in registered_sections():
        text, figures = section_html(section, ctx, tid, page_dir, tables, data)
        texts.append(text)
        uses_plotly |= figures
    return Part("".join(texts), _dumps(data)[1:-1], _dumps(tables)[1:-1], uses_plotly)
