"""harness/csvspans.py: table.csv assembled from the previous file's bytes and freshly
formatted slices is, byte for byte, arrow's `write_csv` of the whole table (the independent
computation), after stages come, go or change; and spans that do not describe the file as
it is are not used."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from harness import csvspans

ODD = ["plain", 'with "quotes"', "a,comma", "two\nlines", "", None, "caf\u00e9", "\r"]


def stage_rows(key: str, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n)
    values[::7] = np.nan
    values[1::11] = np.inf
    return pa.table({
        "run_id": [key] * n,
        "text": [ODD[i % len(ODD)] for i in rng.integers(0, len(ODD), n)],
        "value": values,
        "tiny": rng.normal(size=n) * 1e-300,
        "n": rng.integers(-5, 10**12, n),
        "flag": [bool(i % 2) for i in range(n)],
    })  # fmt: skip


def whole(stages: dict[str, tuple[str, int, int]]) -> tuple[pa.Table, list]:
    keys = sorted(stages)
    table = pa.concat_tables([stage_rows(k, stages[k][1], stages[k][2]) for k in keys])
    return table, [(k, stages[k][0], stages[k][1]) for k in keys]


def expected(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pa_csv.write_csv(table, buf)
    return buf.getvalue()


def test_assembled_file_is_the_whole_tables_csv(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(csvspans, "SLICE_ROWS", 40)  # many slices on small tables
    copied = []
    real_copy = csvspans._copy
    monkeypatch.setattr(csvspans, "_copy", lambda *a: (copied.append(a[3]), real_copy(*a)))
    path, spans = tmp_path / "table.csv", tmp_path / "spans.json"
    stages = {f"{i:04x}/e": ("(1, 2)", int(3 + i % 13), i) for i in range(0, 120, 2)}
    previous = None
    changes = [
        lambda s: None,  # nothing changed: every slice copied
        lambda s: s.update({"0031/e": ("(5, 5)", 9, 500)}),  # a new stage inside
        lambda s: s.pop("0010/e"),  # a stage gone
        lambda s: s.update({"0020/e": ("(9, 9)", 6, 501)}),  # a stage rewritten
        lambda s: s.update({f"{i:04x}/f": ("(3, 3)", 5, 600 + i) for i in range(0, 120, 9)}),
    ]
    for step, change in enumerate(changes):
        change(stages)
        table, listed = whole(stages)
        copied.clear()
        csvspans.write(path, table, listed, spans, f"gen{step}", previous)
        assert path.read_bytes() == expected(table), step
        assert (sum(copied) > 0) == (step > 0), step  # the previous file's bytes used
        if step == 1:
            assert sum(copied) > len(path.read_bytes()) // 2
        previous = f"gen{step}"


def test_spans_of_another_file_or_generation_are_not_used(tmp_path: Path, monkeypatch) -> None:
    path, spans = tmp_path / "table.csv", tmp_path / "spans.json"
    stages = {f"{i:04x}/e": ("(1, 2)", 5, i) for i in range(20)}
    table, listed = whole(stages)
    csvspans.write(path, table, listed, spans, "gen0", None)
    monkeypatch.setattr(csvspans, "_copy", lambda *a: (_ for _ in ()).throw(AssertionError))
    csvspans.write(path, table, listed, spans, "gen1", "other")  # another generation
    assert path.read_bytes() == expected(table)
    path.write_bytes(path.read_bytes()[:-1] + b"\n")  # the same size, rewritten
    os.utime(path, ns=(1, 1))
    csvspans.write(path, table, listed, spans, "gen2", "gen1")
    assert path.read_bytes() == expected(table)
    other = table.set_column(4, "n", table["n"].cast(pa.float64()))  # other column types
    csvspans.write(path, other, listed, spans, "gen3", "gen2")
    assert path.read_bytes() == expected(other)
    csvspans.write(path, table, listed[:-1], spans, "gen4", "gen3")  # rows not the stages'
    assert path.read_bytes() == expected(table) and not spans.exists()
