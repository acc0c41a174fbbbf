"""Parts of leaderboard/index.html kept between calls (issue 23): each dataset's part of the
page (its HTML, the rows it ships in DATA, its tables' specs in TABLES) in
leaderboard/.page/<key>.part, keyed by what it is drawn from: the dataset's page key (its
stages, the options, the harness's code: increment.py), its plot files' names, the failed
runs, the registered sections (harness/report/sections.py) with their functions' code, and
plotly's version. After one new run only that run's dataset's part is drawn, the others are
read back; a call in which no part changed leaves index.html as it is (mtime and inode
kept), as the Markdown pages are. A section draws from its own dataset (SectionContext):
one that showed other datasets' numbers would need the page made whole (rebuild=true)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.sections import registered_sections
from harness.store import atomic_write_bytes, atomic_write_text, package_version

PAGE_DIR = ".page"
RECORD = "page.json"  # {"page": the key index.html was last written under}
PLAIN = (type(None), bool, int, float, str, bytes)


@dataclass(frozen=True)
class Part:
    """One dataset's part of the page: its HTML, and the members of the page's DATA and
    TABLES objects it adds (JSON text without the braces; "" when none)."""

    html: str
    data: str
    tables: str
    plotly: bool  # whether it draws interactive figures (plotly.js is then inlined once)


def part_keys(
    page_keys: dict[str, str],
    plots: dict[str, dict[str, list[Path]]],
    failures: pd.DataFrame | None,
) -> dict[str, str]:
    """{dataset: key of its part}, for the datasets that have a page key; {} when a
    registered section's function cannot be keyed (then every part is drawn)."""
    sections = sections_key()
    if sections is None:
        return {}
    failed = "" if failures is None else failures.sort_values("run_id").to_csv(index=False)
    common = json.dumps([sections, failed, package_version("plotly")])
    return {
        dataset: hashlib.sha256(
            (key + json.dumps(_plot_files(plots.get(dataset))) + common).encode()
        ).hexdigest()
        for dataset, key in page_keys.items()
    }


def _plot_files(plots: dict[str, list[Path]] | None) -> list[Any]:
    return sorted([name, [str(p) for p in files]] for name, files in (plots or {}).items())


def sections_key() -> str | None:
    """A digest of the registered sections: their fields, and for each function its name,
    file (size, mtime), bytecode and the values it closes over. None when a function is not
    a plain Python function or closes over more than plain values (its output could then
    change unseen)."""
    described = []
    for section in registered_sections():
        fields = []
        for field in dataclasses.fields(section):
            value = getattr(section, field.name)
            if callable(value):
                value = _function_key(value)
                if value is None:
                    return None
            fields.append((field.name, value))
        described.append(fields)
    return hashlib.sha256(repr(described).encode()).hexdigest()


def _function_key(fn: Any) -> tuple | None:
    if not isinstance(fn, types.FunctionType):
        return None
    try:
        captured = [cell.cell_contents for cell in fn.__closure__ or ()]
    except ValueError:  # an empty cell
        return None
    captured += [*(fn.__defaults__ or ()), *sorted((fn.__kwdefaults__ or {}).items())]
    if not all(_plain(v) for v in captured):
        return None
    code = fn.__code__
    try:
        found = os.stat(code.co_filename)
        where: tuple | None = (found.st_size, found.st_mtime_ns)
    except OSError:  # defined in a notebook or `python -c`: the bytecode still says
        where = None
    digest = hashlib.sha256(code.co_code + repr(code.co_names).encode()).hexdigest()
    return (fn.__module__, fn.__qualname__, code.co_filename, code.co_firstlineno, where,
            digest, _text(captured))  # fmt: skip


def _plain(value: Any) -> bool:
    if isinstance(value, tuple | frozenset):
        return all(_plain(v) for v in value)
    return isinstance(value, PLAIN)


def _text(value: Any) -> str:
    """repr, with a frozenset's members sorted (their order follows the process's string
    hashing: the key would change from one process to the next)."""
    if isinstance(value, frozenset):
        return "frozenset(" + ",".join(sorted(map(_text, value))) + ")"
    if isinstance(value, tuple | list):
        return "(" + ",".join(map(_text, value)) + ")"
    return repr(value)


def page_key(keys: dict[str, str], datasets: list[str], title: str) -> str | None:
    """The key of the whole page: every dataset's part key; None when a dataset has none."""
    if any(d not in keys for d in datasets):
        return None
    text = json.dumps([title, [[d, keys[d]] for d in datasets]])
    return hashlib.sha256(text.encode()).hexdigest()


def page_unchanged(board: Path, path: Path, key: str | None) -> bool:
    """Whether `path` exists and was written under `key`."""
    if key is None or not path.is_file():
        return False
    try:
        held = json.loads((board / PAGE_DIR / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(held, dict) and held.get("page") == key


class PageParts:
    """The parts of one call: read back by key (unless `reuse` is False: rebuild=true),
    saved when drawn; `finish` records the page's key and removes parts no dataset has."""

    def __init__(self, board: Path, keys: dict[str, str], reuse: bool = True) -> None:
        self.folder = board / PAGE_DIR
        self.keys = keys
        self.reuse = reuse

    def get(self, dataset: str) -> Part | None:
        key = self.keys.get(dataset)
        if key is None or not self.reuse:
            return None
        try:
            raw = (self.folder / f"{key}.part").read_bytes()
            head, _, body = raw.partition(b"\n")
            sizes = json.loads(head)
            html_end = sizes["html"]
            data_end = html_end + sizes["data"]
            if data_end + sizes["tables"] != len(body):
                return None
            return Part(
                body[:html_end].decode(),
                body[html_end:data_end].decode(),
                body[data_end:].decode(),
                bool(sizes["plotly"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, dataset: str, part: Part) -> None:
        key = self.keys.get(dataset)
        if key is None:
            return
        pieces = [part.html.encode(), part.data.encode(), part.tables.encode()]
        sizes = {"html": len(pieces[0]), "data": len(pieces[1]), "tables": len(pieces[2]),
                 "plotly": part.plotly}  # fmt: skip
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(
            self.folder / f"{key}.part", b"\n".join([json.dumps(sizes).encode(), b"".join(pieces)])
        )

    def finish(self, page: str | None) -> None:
        if not self.folder.is_dir():
            return
        atomic_write_text(self.folder / RECORD, json.dumps({"page": page}) + "\n")
        wanted = {f"{key}.part" for key in self.keys.values()} | {RECORD}
        for path in self.folder.iterdir():
            if path.name not in wanted:
                path.unlink(missing_ok=True)
