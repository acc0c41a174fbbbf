"""harness/report/increment.py's stage lines made from the store index's columns in arrow
against the loop over the generation's stages they replace (written here independently):
the same lines, in the same order, per dataset; the loop decides for an index with a null
or a repeated key."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from harness.report import increment
from harness.rowstore import Generation


def index(rows: list[tuple]) -> pa.Table:
    names = ["run_id", "eval_id", "done_mtime_ns", "done_size", "file", "rows"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def by_loop(gen: Generation, dataset_of: dict) -> dict[str, list[str]]:
    per: dict[str, list[str]] = {}
    for key in sorted(gen.stages):
        (mtime, size), _, rows = gen.stages[key]
        dataset = dataset_of.get(key.split("/")[0])
        if dataset is not None:
            per.setdefault(str(dataset), []).append(f"{key} ({mtime}, {size}) {rows}")
    return per


ROWS = [
    ("b2", "e1", 1_796_404_244_313_808_384, 7_551_000_002, "rows", 50),
    ("a1", "z9", 5, 0, "delta", 1),
    ("a1", "\u00e9t\u00e9", 7, 12, "rows", 3),  # after "z9" in code point order
    ("c3", "e1", -1, 9, "rows", 0),
    ("d4", "e1", 2, 2, "rows", 4),  # a run of no dataset in the table: left out
    ("a1", "Z0", 3, 3, "rows", 3),
]
DATASETS = {"b2": "cifar", "a1": "waterbirds", "c3": "cifar", "e5": "unused"}


def test_lines_from_the_index_are_the_loops(tmp_path: Path) -> None:
    gen = Generation(tmp_path, {"files": {}}, index(ROWS))
    got = increment._lines_of_index(gen, DATASETS)
    want = by_loop(gen, DATASETS)
    assert got == want and list(got) == list(want) == ["waterbirds", "cifar"]
    assert got["waterbirds"][-1].startswith("a1/\u00e9t\u00e9 (7, 12) 3")


def test_an_index_with_a_null_or_a_repeated_key_goes_to_the_loop(tmp_path: Path) -> None:
    repeated = Generation(tmp_path, {"files": {}}, index([*ROWS, ROWS[0]]))
    assert increment._lines_of_index(repeated, DATASETS) is None
    null = Generation(
        tmp_path, {"files": {}}, index([*ROWS[:-1], ("f6", "e1", None, 1, "rows", 1)])
    )
    assert increment._lines_of_index(null, DATASETS) is None
