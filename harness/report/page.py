"""results/leaderboard/index.html: a static page (opens from disk, no server) with one table per
dataset, sortable by any column (click its header) and filterable by model, method, scorer,
metric and split, with the dataset's plots beside it.

Plain HTML and a few lines of JavaScript: the rows travel as JSON inside the page and are
drawn by the script, so a large results root gives a page that still opens quickly (at most
MAX_SHOWN rows are drawn at once; the filters narrow them).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

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
FILTERS = ["model", "method", "scorer", "metric", "split"]
MAX_SHOWN = 500

SCRIPT = """
function render(id) {
  const t = TABLES[id], body = document.querySelector('#' + id + ' tbody');
  const active = {};
  document.querySelectorAll('#' + id + '-filters select').forEach(s => {
    if (s.value !== '') active[s.dataset.column] = s.value; });
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
  body.innerHTML = rows.slice(0, MAX_SHOWN).map(r => '<tr>' + r.map(v =>
    '<td>' + (v === null ? '' : typeof v !== 'number' ? escapeHtml(v)
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
function sortBy(id, k) {
  const t = TABLES[id];
  t.sortAscending = t.sortColumn === k ? !t.sortAscending : true;
  t.sortColumn = k;
  render(id);
}
document.addEventListener('DOMContentLoaded', () => {
  Object.keys(TABLES).forEach(id => {
    document.querySelectorAll('#' + id + ' th').forEach((th, k) =>
      th.addEventListener('click', () => sortBy(id, k)));
    document.querySelectorAll('#' + id + '-filters select').forEach(s =>
      s.addEventListener('change', () => render(id)));
    render(id);
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
.dataset { display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { cursor: pointer; background: #f4f4f4; position: sticky; top: 0; }
th[data-sorted=ascending]::after { content: ' \\25B2'; }
th[data-sorted=descending]::after { content: ' \\25BC'; }
td:nth-child(-n+7) { text-align: left; }
.plots img { max-width: 520px; display: block; margin-bottom: 1em; }
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


def _rows_json(frame: pd.DataFrame) -> str:
    text_columns = frame.select_dtypes(exclude="number").columns
    frame = frame.astype({c: object for c in text_columns}).fillna({c: "" for c in text_columns})
    frame = frame.astype({c: str for c in text_columns})
    return frame.to_json(orient="values", double_precision=6)


def _dumps(tables: dict) -> str:
    """json.dumps, with the rows of each table spliced in as pandas wrote them."""
    parts = []
    for tid, spec in tables.items():
        head = {k: v for k, v in spec.items() if k != "rows"}
        body = json.dumps(head, separators=(",", ":"))[:-1]
        parts.append(f'{json.dumps(tid)}:{body},"rows":{spec["rows"]}}}')
    return "{" + ",".join(parts) + "}"


def page_rows(agg: pd.DataFrame) -> pd.DataFrame:
    """The summary rows the page shows: every aggregated number except per-group values."""
    rows = agg[agg["group_value"] == ""].assign(setting=agg["setting_id"].str[:8])
    return rows[["dataset", *COLUMNS]]


def headline_html(dataset: str, h: Any) -> str:
    """A dataset's headline (harness/report/headline.py) as a static table, id headline-<dataset>;
    each cell's title says how many seeds and how its interval was made."""
    if h is None:
        return ""
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in h.table.columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td title="{html.escape(str(h.titles.iat[i, k]))}">'
            + (
                f'<span class="badge {html.escape(str(v))}">{html.escape(str(v))}</span>'
                if c == "verdict" and v
                else html.escape(str(v))
            )
            + "</td>"
            for k, (c, v) in enumerate(row.items())
        )
        + "</tr>"
        for i, (_, row) in enumerate(h.table.iterrows())
    )
    return (
        f'<p class="what">{html.escape(h.caption)}</p>\n'
        f'<table class="headline" id="headline-{html.escape(dataset)}"><thead><tr>{header}'
        f"</tr></thead><tbody>{body}</tbody></table>\n"
    )


def write_page(
    agg: pd.DataFrame,
    plots: dict[str, dict[str, list[Path]]],
    path: str | Path,
    title: str = "Leaderboards",
    headlines: dict[str, Any] | None = None,
) -> Path:
    """Writes the page; `plots` maps dataset -> plot name -> [png, pdf] (paths beside it)."""
    path = Path(path)
    rows = page_rows(agg)
    tables, sections = {}, []
    for dataset in sorted(rows["dataset"].unique()):
        sub = rows[rows["dataset"] == dataset].drop(columns="dataset")
        tid = _table_id(dataset)
        tables[tid] = {
            "columns": COLUMNS,
            # pandas writes the rows (NaN as null, floats to 6 digits) far faster than a loop
            "rows": RawJSON(_rows_json(sub)),
            "sortColumn": None,
            "sortAscending": True,
        }
        selects = []
        for column in FILTERS:
            values = sorted(map(str, sub[column].unique()))
            options = "".join(
                f'<option value="{html.escape(v)}">{html.escape(v) or "(none)"}</option>'
                for v in values
            )
            selects.append(
                f'<label>{column} <select data-column="{column}">'
                f'<option value="">all</option>{options}</select></label>'
            )
        header = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        images = "".join(
            f'<a href="{html.escape(files[1].name if len(files) > 1 else files[0].name)}">'
            f'<img src="{html.escape(files[0].relative_to(path.parent).as_posix())}" '
            f'alt="{html.escape(name)}" title="{html.escape(name)}"></a>'
            for name, files in (plots.get(dataset) or {}).items()
        )
        sections.append(
            f"<h2>{html.escape(dataset)}</h2>\n"
            + headline_html(dataset, (headlines or {}).get(dataset))
            + f'<details id="{tid}-details"><summary>Every number of {html.escape(dataset)} '
            f"(filter, sort; <code>summary.csv</code>) and its plots</summary>\n"
            f'<div id="{tid}-filters" class="filters">'
            f'{" ".join(selects)} <span id="{tid}-count"></span></div>\n'
            f'<div class="dataset"><table id="{tid}"><thead><tr>{header}</tr></thead>'
            f'<tbody></tbody></table>\n<div class="plots">{images}</div></div></details>'
        )
    data = _dumps(tables).replace("</", "<\\/")
    text = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title>\n<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        "<p>Mean, sample standard deviation (ddof=1), n seeds and 95% interval per setting "
        "(<code>summary.csv</code>); click a header to sort, choose values to filter.</p>\n"
        + "\n".join(sections)
        + f"\n<script>const MAX_SHOWN = {MAX_SHOWN};\nconst TABLES = {data};\n{SCRIPT}"
        "</script>\n</body></html>\n"
    )
    atomic_write_text(path, text)
    return path
