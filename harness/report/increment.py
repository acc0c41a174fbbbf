"""Which datasets' pages can be left as they are after new runs (issue 23, "The store"): a
dataset's Markdown page depends only on its own rows (every table on it is computed per
dataset: aggregates per setting, comparisons and their p-value families per dataset x model
x eval config, selection per search) and on the leaderboard's options. Its key: the store's
stages of that dataset with their DONE identities, the options, the harness's files and
the numeric libraries' versions; kept in leaderboard/.pages.json. A page whose key is unchanged is neither computed
nor written again (its mtime and inode stay). The same keys name each dataset's derived
frames in leaderboard/.parts/ (harness/report/partcache.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness import rowstore
from harness.store import atomic_write_text

PAGES_FILE = ".pages.json"


def _code_key() -> str:
    """The harness's files (size and mtime; ~60 stats) and the numeric libraries' versions:
    a changed renderer, statistic or formatting makes every page again."""
    import numpy
    import scipy

    harness = Path(__file__).resolve().parent.parent
    files = sorted([*harness.glob("*.py"), *harness.glob("report/*.py")])
    stats = [(str(p.relative_to(harness)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return repr((stats, pd.__version__, numpy.__version__, scipy.__version__))


def page_keys(root: Path, table: pd.DataFrame, options: dict[str, Any]) -> dict[str, str]:
    """{dataset: key of its page}; empty when the store cannot say which stages are whose
    (no generation: every page is made)."""
    gen = rowstore.load_generation(root)
    if gen is None or table.empty:
        return {}
    runs = table[["run_id", "dataset"]].drop_duplicates("run_id")
    dataset_of = dict(zip(runs["run_id"], runs["dataset"], strict=True))
    per: dict[str, list[str]] = {}
    for key, (identity, _, rows) in sorted(gen.stages.items()):
        dataset = dataset_of.get(key.split("/", 1)[0])
        if dataset is not None:
            per.setdefault(str(dataset), []).append(f"{key} {identity} {rows}")
    common = json.dumps(options, sort_keys=True, default=repr) + _code_key()
    return {
        dataset: hashlib.sha256(("\n".join(lines) + common).encode()).hexdigest()
        for dataset, lines in per.items()
    }


def unchanged_pages(board: Path, keys: dict[str, str]) -> set[str]:
    """The datasets whose page exists with the key it was written under."""
    try:
        held = json.loads((board / PAGES_FILE).read_text())
    except (OSError, ValueError):
        return set()
    return {
        d
        for d, k in keys.items()
        if isinstance(held, dict) and held.get(d) == k and (board / f"{d}.md").is_file()
    }


def record_pages(board: Path, keys: dict[str, str]) -> None:
    atomic_write_text(board / PAGES_FILE, json.dumps(keys, indent=2, sort_keys=True) + "\n")
