"""table.parquet and table.csv written in a background thread (harness/tablefiles.py): the
same bytes as pandas' own writers of `collect`'s table, never half visible, and written again
when a process was killed between the store's switch and their renames."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from harness import csvspans, tablefiles
from harness.report.build import write_leaderboard
from harness.table import collect, collect_cached
from tests.test_leaderboard_speed import make_root, write_run

ROOT = Path(__file__).resolve().parent.parent


def expected_files(root: Path) -> dict[str, bytes]:
    """table.parquet / table.csv as today's writers make them from `collect`'s table (every
    rows.parquet read afresh): DataFrame.to_parquet and arrow's CSV writer of the frame."""
    table = collect(root)[0].reset_index(drop=True)
    parquet = io.BytesIO()
    # min/max statistics for the non-string columns only (tablefiles._write_parquet)
    numeric = [c for c in table.columns if c not in STRINGS]
    table.to_parquet(parquet, index=False, write_statistics=numeric)
    csv = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pandas(table, preserve_index=False), csv)
    return {"table.parquet": parquet.getvalue(), "table.csv": csv.getvalue()}


STRINGS = {"split", "split_role", "scorer", "metric", "group_key", "run_id", "setting_id",
           "dataset", "model", "method", "tta", "group_value", "selection_rule", "eval_id",
           "forward_key", "posthoc_key", "git_sha", "lock_hash", "versions", "created_at",
           "augment"}  # fmt: skip


def test_table_parquet_reads_as_pandas_own_file(tmp_path: Path) -> None:
    """Without the string columns' statistics, table.parquet's content (schema and pandas
    metadata included) is that of DataFrame.to_parquet's file, and pandas and
    pyarrow.dataset read it (a filter on a string column included)."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    root = tmp_path / "r"
    make_root(root)
    write_leaderboard(root, "erm", outputs=["markdown"])
    table = collect(root)[0].reset_index(drop=True)
    assert STRINGS == {c for c in table.columns if pd.api.types.is_string_dtype(table[c])}
    own = io.BytesIO()
    table.to_parquet(own, index=False)
    written = pq.read_table(root / "table.parquet")
    assert written.equals(pq.read_table(io.BytesIO(own.getvalue())), check_metadata=True)
    meta = pq.ParquetFile(root / "table.parquet").metadata.row_group(0)
    kept = {meta.column(i).path_in_schema: meta.column(i).is_stats_set
            for i in range(meta.num_columns)}  # fmt: skip
    assert kept == {c: c not in STRINGS for c in table.columns}
    pd.testing.assert_frame_equal(pd.read_parquet(root / "table.parquet"), table)
    plain = table[table["dataset"] == "plain"]
    filtered = ds.dataset(root / "table.parquet").to_table(filter=ds.field("dataset") == "plain")
    assert filtered.num_rows == len(plain) > 0
    assert filtered.column("value").to_pylist() == plain["value"].tolist()


def files(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in ("table.parquet", "table.csv")}


def test_background_files_equal_pandas_writers_after_new_runs(tmp_path: Path) -> None:
    root = tmp_path / "r"
    n = make_root(root)
    write_leaderboard(root, "erm", outputs=["markdown"])
    assert files(root) == expected_files(root)
    write_run(root, n, "plain", "irm", 3, 0)  # one new run: written again, in the thread
    write_run(root, n + 1, "rot", "erm", 3, 0, ["15"])
    write_leaderboard(root, "erm", outputs=["markdown"])
    assert files(root) == expected_files(root)
    stats = {name: (root / name).stat().st_mtime_ns for name in ("table.parquet", "table.csv")}
    write_leaderboard(root, "erm", outputs=["markdown"])  # nothing new: not written again
    assert stats == {n: (root / n).stat().st_mtime_ns for n in stats}
    assert not list(root.glob(".table.*"))  # no temporary left


def test_the_frame_changed_meanwhile_does_not_reach_the_files(tmp_path: Path, monkeypatch) -> None:
    """The thread writes a copy of the numeric columns (from_pandas shares numpy buffers)."""
    root = tmp_path / "r"
    make_root(root)
    changed = threading.Event()
    real = tablefiles.atomic_write_arrow_parquet

    def after_the_change(table, path, **options):
        assert changed.wait(30)
        real(table, path, **options)

    monkeypatch.setattr(tablefiles, "atomic_write_arrow_parquet", after_the_change)
    table, _, _ = collect_cached(root, csv=True, background=True)
    table.loc[:, "value"] = -1.0  # in place, while the thread waits to write
    table.loc[:, "seed"] = 99
    changed.set()
    tablefiles.wait(root)
    assert files(root) == expected_files(root)


def test_an_error_in_the_thread_is_raised_by_the_leaderboard(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "r"
    make_root(root)

    def disk_full(table, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tablefiles, "atomic_write_arrow_csv", disk_full)
    # table.csv from the last file's bytes (harness/csvspans.py): its writer fails the same
    monkeypatch.setattr(csvspans, "write", lambda path, table, *rest: disk_full(table, path))
    try:
        write_leaderboard(root, "erm", outputs=["markdown"])
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("the thread's error was not raised")
    monkeypatch.undo()
    write_leaderboard(root, "erm", outputs=["markdown"])  # the store is current: files again
    assert files(root) == expected_files(root)


KILLED = """
import sys, time
from harness import tablefiles
from harness.report.build import write_leaderboard

real = tablefiles.atomic_write_arrow_parquet


def slow(table, path, **options):  # the store has switched; the files are being written
    print("writing", flush=True)
    time.sleep(30)
    real(table, path, **options)


tablefiles.atomic_write_arrow_parquet = slow
write_leaderboard(sys.argv[1], "erm", outputs=["markdown"])
"""


def test_a_kill_before_the_renames_leaves_the_files_written_next_time(tmp_path: Path) -> None:
    root = tmp_path / "r"
    n = make_root(root)
    write_leaderboard(root, "erm", outputs=["markdown"])
    before = files(root)
    write_run(root, n, "plain", "irm", 3, 0)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(root)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "writing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert files(root) == before  # the old files, whole; the store holds the new run already
    table, _, changed = collect_cached(root)
    assert not changed and table["run_id"].nunique() == n + 1
    write_leaderboard(root, "erm", outputs=["markdown"])
    assert files(root) == expected_files(root) != before
    pd.testing.assert_frame_equal(
        pd.read_parquet(root / "table.parquet"), collect(root)[0].reset_index(drop=True)
    )


def _arrow_csv(frame: pd.DataFrame) -> bytes:
    out = io.BytesIO()
    pa_csv.write_csv(pa.Table.from_pandas(frame.copy(), preserve_index=False), out)
    return out.getvalue()


def _held_writes(monkeypatch) -> threading.Event:
    """tablefiles' arrow CSV writes held until the returned event is set."""
    gate, real = threading.Event(), tablefiles.atomic_write_arrow_csv

    def held(table, path):
        assert gate.wait(30)
        real(table, path)

    monkeypatch.setattr(tablefiles, "atomic_write_arrow_csv", held)
    return gate


def test_csv_in_a_thread_is_atomic_write_csvs_file(tmp_path: Path, monkeypatch) -> None:
    """start_csv/join_csv (summary.csv): the bytes of arrow's writer of the frame as it was
    when started (changed in place meanwhile), a frame arrow cannot convert written by
    pandas, and the thread's error raised by join_csv."""
    frame = pd.DataFrame({"a": ["x", 'q"uote', "new\nline"], "v": [0.1, float("nan"), 3.0],
                          "n": [1, 2, 3]})  # fmt: skip
    expected = _arrow_csv(frame)
    started = _held_writes(monkeypatch)
    job = tablefiles.start_csv(frame, tmp_path / "s.csv")
    frame.loc[:, "v"] = -1.0
    frame.loc[:, "n"] = 99
    started.set()
    tablefiles.join_csv(job)
    assert (tmp_path / "s.csv").read_bytes() == expected
    mixed = pd.DataFrame({"a": [1, "b"]})  # object column of int and str: pandas writes it
    assert tablefiles.start_csv(mixed, tmp_path / "m.csv") is None
    assert (tmp_path / "m.csv").read_text() == mixed.to_csv(index=False)

    def disk_full(table, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tablefiles, "atomic_write_arrow_csv", disk_full)
    job = tablefiles.start_csv(frame, tmp_path / "e.csv")
    with pytest.raises(OSError, match="No space"):
        tablefiles.join_csv(job)
    assert not tablefiles._csv_jobs


def test_csv_in_thread_waits_for_its_write_when_the_block_raises(tmp_path, monkeypatch):
    """tablefiles.csv_in_thread (summary.csv under the leaderboard's flock): the write is
    finished when the block is left, also when the block raises; the block's exception is
    the one raised, not the thread's; without one, the thread's error is raised."""
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    gate = _held_writes(monkeypatch)
    with pytest.raises(KeyError, match="the block's"):
        with tablefiles.csv_in_thread(frame, tmp_path / "s.csv"):
            threading.Timer(0.2, gate.set).start()
            raise KeyError("the block's")
    assert (tmp_path / "s.csv").read_bytes() == _arrow_csv(frame)  # written, and whole
    assert not tablefiles._csv_jobs

    def disk_full(table, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tablefiles, "atomic_write_arrow_csv", disk_full)
    with pytest.raises(OSError, match="No space"):
        with tablefiles.csv_in_thread(frame, tmp_path / "e.csv"):
            pass
    with pytest.raises(KeyError, match="the block's"):
        with tablefiles.csv_in_thread(frame, tmp_path / "e.csv"):
            raise KeyError("the block's")
    assert not tablefiles._csv_jobs and not (tmp_path / "e.csv").exists()
