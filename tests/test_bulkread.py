"""The cold rebuild (harness/bulkread.py: forked workers, one Arrow file each) against
`collect` (one file at a time in this process): the same table row for row, dtypes
included, the same skipped list and warnings, over stages with every kind of bad file."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import bulkread
from harness.rundir import RunDir
from harness.table import collect, collect_cached
from tests.conftest import fork_warns_like_python_3_12
from tests.test_rowstore import finish_run, same, store_rows

BAD = 11  # the stages spoiled below


def spoil(root: Path) -> None:
    """One stage of each kind of bad (and of odd but good) file."""

    def rows_of(n: int) -> Path:
        return RunDir(root, f"{n:08x}").posthoc("e1").rows

    pd.read_parquet(rows_of(3)).drop(columns="metric").to_parquet(rows_of(3))  # wrong schema
    shutil.copytree(RunDir(root, f"{5:08x}").path, root / "runs" / "00-copy-of-5")
    rows_of(7).unlink()
    rows_of(7).symlink_to(rows_of(8))  # a link: never followed
    rows_of(11).unlink()
    os.mkfifo(rows_of(11))  # opening it would block forever
    data = rows_of(13).read_bytes()
    rows_of(13).write_bytes(data[: len(data) // 2])  # truncated
    text = pd.read_parquet(rows_of(17)).astype({"value": str})  # not a number
    text.to_parquet(rows_of(17))
    (rows_of(19).parent / "DONE").unlink()  # an unfinished stage
    (RunDir(root, f"{23:08x}").path / "DONE").unlink()  # an unfinished run
    pq.write_table(pa.table({"x": [1]}), rows_of(29))  # nothing the table needs
    rows_of(31).write_bytes(b"not parquet at all")
    rows_of(37).write_bytes(b"")
    # odd but good: repeated identities (the first counts), an older file without a column
    # an extra column, no rows at all
    frame = pd.read_parquet(rows_of(41))
    pd.concat([frame, frame.head(3).assign(value=-1.0)]).to_parquet(rows_of(41))
    old = pd.read_parquet(rows_of(43)).drop(columns="augment")
    old.to_parquet(rows_of(43))
    pd.read_parquet(rows_of(47)).assign(extra=1.5).to_parquet(rows_of(47))
    pd.read_parquet(rows_of(53)).head(0).to_parquet(rows_of(53))


def outcome(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, skipped = call()[:2]
    return table, sorted(map(str, skipped)), sorted(str(w.message) for w in caught)


@pytest.mark.parametrize("per_worker", [30, 10**6])  # forked workers; this process alone
def test_rebuild_equals_collect_over_bad_files(tmp_path, monkeypatch, per_worker):
    for n in range(104):
        finish_run(tmp_path, n, dataset=("toy_a", "toy_b")[n % 2])
    finish_run(tmp_path, 2, eval_id="e2")  # a second stage of one run
    spoil(tmp_path)
    monkeypatch.setattr(bulkread, "MIN_PARALLEL", per_worker)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)  # three chunks: two forked workers
    forked, real = [], bulkread._in_workers
    monkeypatch.setattr(bulkread, "_in_workers", lambda *a: forked.append(len(a[1])) or real(*a))
    expected, skipped, warned = outcome(lambda: collect(tmp_path))
    assert len(skipped) == BAD
    table, rebuilt_skipped, rebuilt_warned = outcome(lambda: collect_cached(tmp_path, rebuild=True))
    assert forked == ([3] if per_worker == 30 else [])  # the path meant was taken
    assert (rebuilt_skipped, rebuilt_warned) == (skipped, warned)
    expected = expected.reset_index(drop=True)  # collect's drop_duplicates leaves gaps
    pd.testing.assert_frame_equal(table, expected, check_exact=True)  # dtypes and order
    same(table, independent_good(tmp_path))
    same(store_rows(tmp_path), independent_good(tmp_path))
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.endswith(".tmp")]
    # the index is right: the next incremental collection finds nothing new
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same skipped stages, warned about again
        again, _, changed = collect_cached(tmp_path)
    assert changed is False
    pd.testing.assert_frame_equal(again, expected, check_exact=True)
    assert pd.read_parquet(tmp_path / "table.parquet").shape == expected.shape


def independent_good(root: Path) -> pd.DataFrame:
    """The rows of the good stages, with pandas (no harness code): bad files left out,
    repeated identities dropped, augment filled."""
    bad = {root / "runs" / f"{n:08x}" / "posthoc" / "e1" for n in (3, 7, 11, 13, 17, 29, 31, 37)}
    frames = [
        pd.read_parquet(rows)
        for done in sorted((root / "runs").glob("*/DONE"))
        for rows in sorted(done.parent.glob("posthoc/*/rows.parquet"))
        if (rows.parent / "DONE").is_file()
        and rows.parent not in bad
        and done.parent.name != "00-copy-of-5"
    ]
    table = pd.concat(frames, ignore_index=True)
    identity = ["run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric"]
    return table.assign(augment=table["augment"].fillna("")).drop_duplicates(identity)


def test_a_run_without_stages_and_an_empty_root(tmp_path):
    assert collect_cached(tmp_path, rebuild=True)[0].empty
    assert json.loads((tmp_path / "store" / "MANIFEST.json").read_text())["files"] == {}


def test_workers_that_cannot_start_leave_the_same_table(tmp_path, monkeypatch):
    for n in range(12):
        finish_run(tmp_path, n)
    monkeypatch.setattr(bulkread, "MIN_PARALLEL", 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)

    def refused(*args):
        raise OSError("no fork here")

    monkeypatch.setattr(bulkread, "_in_workers", refused)
    with pytest.warns(UserWarning, match="in one process: no fork here"):
        table, skipped, _ = collect_cached(tmp_path, rebuild=True)
    assert not skipped
    expected = collect(tmp_path)[0].reset_index(drop=True)
    pd.testing.assert_frame_equal(table, expected, check_exact=True)


def test_narrower_column_types_widen_instead_of_failing(tmp_path):
    """A rows.parquet written by another tool (int32 n, 32-bit offsets strings, int64 value)
    beside the usual ones: every path (collect, the cold rebuild, an incremental collection
    that adds it to a store) gives the rows with the widened types, none fails."""
    for n in range(6):
        finish_run(tmp_path, n)
    rows = RunDir(tmp_path, f"{5:08x}").posthoc("e1").rows
    frame = pd.read_parquet(rows)
    narrow = pa.Table.from_pandas(frame.assign(value=7), preserve_index=False)
    types = {
        name: pa.int32() if name == "n" else pa.string() if pa.types.is_large_string(t) else t
        for name, t in zip(narrow.column_names, narrow.schema.types, strict=True)
    }
    pq.write_table(narrow.cast(pa.schema(types.items())), rows)
    assert pq.read_schema(rows).field("n").type == pa.int32()  # the case meant
    shutil.move(RunDir(tmp_path, f"{5:08x}").path, tmp_path / "later")
    collect_cached(tmp_path)  # a store without it, then it arrives
    shutil.move(tmp_path / "later", RunDir(tmp_path, f"{5:08x}").path)
    for call in (collect, collect_cached, lambda r: collect_cached(r, rebuild=True)):
        table = call(tmp_path)[0]
        assert len(table) == 6 * 12
        assert table["n"].dtype == "int64"
        assert (table[table["run_id"] == f"{5:08x}"]["value"] == 7.0).all()
        same(table[table["run_id"] != f"{5:08x}"], collect(tmp_path)[0].iloc[: 5 * 12])


def test_python_3_12s_fork_warning_does_not_join_the_rebuilds_warnings(tmp_path, monkeypatch):
    """Python >= 3.12 warns in the parent at each fork of a process with threads; seen on
    a GPU machine, where it made the rebuild's warnings differ from collect's. Emulated
    here (this venv's Python may be older) by a fork that warns the way 3.12's does."""
    for n in range(12):
        finish_run(tmp_path, n)
    monkeypatch.setattr(bulkread, "MIN_PARALLEL", 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    fork_warns_like_python_3_12(monkeypatch)
    table, skipped, warned = outcome(lambda: collect_cached(tmp_path, rebuild=True))
    assert not skipped and not warned
    unrelated = "This process is odd"  # only the fork's own warning is silenced
    with pytest.warns(DeprecationWarning, match=unrelated):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", bulkread.FORK_WARNING, DeprecationWarning)
            warnings.warn(unrelated, DeprecationWarning, stacklevel=1)
    pd.testing.assert_frame_equal(table, collect(tmp_path)[0].reset_index(drop=True))
