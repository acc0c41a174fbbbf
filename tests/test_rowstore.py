"""The consolidated store (harness/rowstore.py, issue 23): parts appended by runs, compaction
under the leaderboard's flock, reconciliation with the run directories (harness/table.py's
collect_cached). Every check compares against the rows.parquet files read directly with
pandas, never against the store's own output."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import rowstore
from harness.rundir import RunDir
from harness.store import atomic_write_json, atomic_write_parquet
from harness.table import ROW_COLUMNS, collect, collect_cached

IDENTITY = ["run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric"]
ROOT = Path(__file__).resolve().parent.parent


def finish_run(root: Path, number: int, dataset: str = "toy_a", eval_id: str = "e1", shift=0.0):
    """A finished run in the real layout: 12 rows in its stage, DONE markers."""
    run_id = f"{number:08x}"
    rd = RunDir(root, run_id)
    rng = np.random.default_rng(number)
    splits, metrics = ["val", "id_test", "shift"], ["accuracy", "nll", "ece", "brier"]
    frame = pd.DataFrame(
        [{"split": s, "metric": m} for s in splits for m in metrics],
    ).assign(
        run_id=run_id,
        setting_id=f"s{number // 3}",
        dataset=dataset,
        model="m",
        method=f"method{number % 4}",
        tta="",
        augment="",
        seed=number % 3,
        split_role="test",
        group_key="",
        group_value="",
        scorer="",
        value=rng.uniform(0, 1, len(splits) * len(metrics)) + shift,
        n=100,
        selection_rule="id_val_accuracy",
        selected_epoch=1,
        eval_id=eval_id,
        forward_key="f",
        posthoc_key="p",
        results_version=1,
        git_sha="x",
        git_dirty=False,
        lock_hash="l",
        versions="{}",
        created_at="2026",
    )[ROW_COLUMNS]
    stage = rd.posthoc(eval_id)
    atomic_write_parquet(frame, stage.rows)
    atomic_write_json(stage.done, {"rows": len(frame)})
    if not rd.is_complete():
        rd.mark_complete({"run_id": run_id})
    return rd


def independent(root: Path) -> pd.DataFrame:
    """Every finished stage's rows, read with pandas file by file (no harness code)."""
    frames = [
        pd.read_parquet(rows)
        for done in sorted((root / "runs").glob("*/DONE"))
        for rows in sorted(done.parent.glob("posthoc/*/rows.parquet"))
        if (rows.parent / "DONE").is_file()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ROW_COLUMNS)


def measured(table: pd.DataFrame) -> pd.DataFrame:
    table = table[[*IDENTITY, "dataset", "value", "n"]]
    return table.sort_values(IDENTITY, kind="stable").reset_index(drop=True)


def store_rows(root: Path) -> pd.DataFrame:
    """What the store's data files (Arrow IPC) hold, read with pandas (not harness code)."""
    manifest = json.loads((root / "store" / "MANIFEST.json").read_text())
    frames = [pd.read_feather(root / "store" / name) for name in manifest["files"].values()]
    return pd.concat(frames, ignore_index=True)


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(measured(a), measured(b), check_exact=True, check_dtype=False)


def test_the_store_holds_every_finished_stage_and_collect_cached_equals_collect(tmp_path):
    for n in range(6):
        finish_run(tmp_path, n, dataset="toy_a" if n % 2 else "toy_b")
        rowstore.append_stage(RunDir(tmp_path, f"{n:08x}"), "e1")
    assert len(list((tmp_path / "store" / "parts").iterdir())) == 6
    table, skipped, changed = collect_cached(tmp_path)
    assert changed and not skipped
    same(table, independent(tmp_path))
    same(store_rows(tmp_path), independent(tmp_path))
    assert not list((tmp_path / "store" / "parts").iterdir())  # compacted: parts consumed
    manifest = json.loads((tmp_path / "store" / "MANIFEST.json").read_text())
    assert list(manifest["files"]) == ["rows"]  # one data file, every dataset
    # row for row (order included) the table `collect` reads from the run directories
    pd.testing.assert_frame_equal(
        table.reset_index(drop=True), collect(tmp_path)[0].reset_index(drop=True)
    )
    assert collect_cached(tmp_path)[2] is False  # nothing new: no new generation


def test_the_data_file_is_rewritten_only_on_change_and_old_generations_are_removed(tmp_path):
    def data_file():
        return json.loads((tmp_path / "store" / "MANIFEST.json").read_text())["files"]["rows"]

    for n in range(4):
        finish_run(tmp_path, n, dataset="toy_a" if n % 2 else "toy_b")
    collect_cached(tmp_path)
    first = data_file()
    assert collect_cached(tmp_path)[2] is False and data_file() == first
    finish_run(tmp_path, 9, dataset="toy_a")
    collect_cached(tmp_path)
    second = data_file()
    finish_run(tmp_path, 11, dataset="toy_a")
    collect_cached(tmp_path)
    files = {p.name for p in (tmp_path / "store").glob("*.arrow")}
    assert first not in files  # two generations back: gone
    assert second in files  # the previous one stays for a reader without the flock
    same(store_rows(tmp_path), independent(tmp_path))


def test_a_store_entry_leaves_when_its_run_goes_and_is_read_again_when_its_done_changes(
    tmp_path,
):
    for n in range(5):
        finish_run(tmp_path, n)
    collect_cached(tmp_path)
    shutil.rmtree(tmp_path / "runs" / f"{1:08x}")  # a run deleted by hand
    finish_run(tmp_path, 2, shift=5.0)  # a stage computed again: new rows, new DONE
    finish_run(tmp_path, 3, dataset="toy_c", eval_id="e2")  # a new stage of a finished run
    # run dirs copied in from another machine (merge): not in the store, added
    other = tmp_path / "other"
    finish_run(other, 40, dataset="toy_d")
    shutil.copytree(other / "runs" / f"{40:08x}", tmp_path / "runs" / f"{40:08x}")
    table, skipped, changed = collect_cached(tmp_path)
    assert changed and not skipped
    expected = independent(tmp_path)
    assert f"{1:08x}" not in set(table["run_id"]) and (expected["value"] > 5).sum() == 12
    same(table, expected)
    same(store_rows(tmp_path), expected)


def test_rebuild_equals_the_incremental_store(tmp_path):
    rng = random.Random(7)
    for step in range(6):  # runs finish, some append, the leaderboard compacts in between
        for n in range(step * 4, step * 4 + 4):
            rd = finish_run(tmp_path, n, dataset=rng.choice(["toy_a", "toy_b", "toy_c"]))
            if rng.random() < 0.6:
                rowstore.append_stage(rd, "e1")
        if step == 3:
            shutil.rmtree(tmp_path / "runs" / f"{5:08x}")
            finish_run(tmp_path, 6, shift=2.0)
        incremental, _, _ = collect_cached(tmp_path)
    rebuilt, _, changed = collect_cached(tmp_path, rebuild=True)
    assert changed
    key = [*IDENTITY, "value"]
    pd.testing.assert_frame_equal(
        incremental.sort_values(key, kind="stable").reset_index(drop=True),
        rebuilt.sort_values(key, kind="stable").reset_index(drop=True),
        check_exact=True,
    )
    same(rebuilt, independent(tmp_path))
    same(store_rows(tmp_path), independent(tmp_path))
    # the order is canonical too (dataset by dataset, stages in key order): row for row
    for other in (rebuilt, collect(tmp_path)[0]):
        pd.testing.assert_frame_equal(
            incremental.reset_index(drop=True), other.reset_index(drop=True), check_exact=True
        )


def spoil_keeping_stat(path) -> None:
    """Garbage of the same size with the same mtime: the stage's identity (stats only) is
    unchanged, so rows that still come back can only have come from the store."""
    st = path.stat()
    path.write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_part_appended_during_compaction_is_not_lost(tmp_path, monkeypatch):
    for n in range(3):
        finish_run(tmp_path, n)
        rowstore.append_stage(RunDir(tmp_path, f"{n:08x}"), "e1")
    write = rowstore.write_generation

    def and_a_run_finishes_meanwhile(*args, **kwargs):
        rd = finish_run(tmp_path, 7, dataset="toy_late")
        rowstore.append_stage(rd, "e1")
        write(*args, **kwargs)

    monkeypatch.setattr(rowstore, "write_generation", and_a_run_finishes_meanwhile)
    collect_cached(tmp_path)
    monkeypatch.setattr(rowstore, "write_generation", write)
    parts = [p.name for p in (tmp_path / "store" / "parts").iterdir()]
    assert parts and parts[0].startswith(f"{7:08x}.")  # left for the next compaction
    rows = RunDir(tmp_path, f"{7:08x}").posthoc("e1").rows
    expected = pd.read_parquet(rows)
    spoil_keeping_stat(rows)  # only the part has them now
    table, skipped, _ = collect_cached(tmp_path)
    assert not skipped
    same(table[table["run_id"] == f"{7:08x}"], expected)


# ---------------------------------------------------------------- processes

APPENDER = """
import os, sys, time
from harness import rowstore
from harness.rundir import RunDir

root, ids, slow = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "1"
if slow:  # widen the window inside the part write, where a kill hurts most
    real_fsync = os.fsync

    def fsync(fd):
        real_fsync(fd)
        print("writing", flush=True)
        time.sleep(0.05)

    rowstore.os.fsync = fsync
for run_id in ids:
    rowstore.append_stage(RunDir(root, run_id), "e1")
    print("appended", run_id, flush=True)
"""


def appender(root: Path, ids: list[str], slow: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(APPENDER), str(root), ",".join(ids), str(int(slow))],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize("seed", [3, 11])
def test_kill_9_mid_append_loses_and_duplicates_nothing(tmp_path, seed):
    rng = random.Random(seed)
    ids = [finish_run(tmp_path, n, dataset=f"toy_{n % 3}").run_id for n in range(40)]
    for run_id in ids[:10]:  # an earlier compaction holds some stages already
        rowstore.append_stage(RunDir(tmp_path, run_id), "e1")
    collect_cached(tmp_path)
    kill_after = rng.randrange(3, 25)  # the seeded moment: inside the write of this append
    proc = appender(tmp_path, ids[10:], slow=True)
    writes = 0
    for line in proc.stdout:
        writes += line.startswith("writing")
        if writes == kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    temporaries = list((tmp_path / "store" / "parts").glob(".*.tmp"))
    assert len(temporaries) == 1  # killed mid-write: half a part, under its temporary name
    table, skipped, _ = collect_cached(tmp_path)
    assert not skipped
    assert not table.duplicated(IDENTITY).any()
    same(table, independent(tmp_path))
    same(store_rows(tmp_path), independent(tmp_path))
    assert not list((tmp_path / "store" / "parts").iterdir())  # temporary of a dead pid: gone


def test_two_concurrent_appenders_and_compactions_never_lose_a_row(tmp_path):
    from harness.report.build import leaderboard_lock

    ids = [finish_run(tmp_path, n, dataset=f"toy_{n % 2}").run_id for n in range(60)]
    expected = independent(tmp_path)
    procs = [appender(tmp_path, ids[0::2], False), appender(tmp_path, ids[1::2], False)]
    deadline = time.time() + 120
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        with leaderboard_lock(tmp_path):  # what write_leaderboard holds while it compacts
            table, _, _ = collect_cached(tmp_path)
        assert not table.duplicated(IDENTITY).any()
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    # every row must now be in the store or its parts: the run directories' rows go away
    for run_id in ids:
        spoil_keeping_stat(RunDir(tmp_path, run_id).posthoc("e1").rows)
    with leaderboard_lock(tmp_path):
        table, skipped, _ = collect_cached(tmp_path)
    assert not skipped
    same(table, expected)
    same(store_rows(tmp_path), expected)


def test_repeated_identities_in_a_stage_are_dropped_once_as_collect_drops_them(tmp_path):
    for n in range(3):
        finish_run(tmp_path, n)
    rows_path = RunDir(tmp_path, f"{1:08x}").posthoc("e1").rows
    rows = pd.read_parquet(rows_path)
    twice = pd.concat([rows, rows.head(2).assign(value=-1.0)], ignore_index=True)
    atomic_write_parquet(twice, rows_path)  # the same identity twice: the first one counts
    table, _, _ = collect_cached(tmp_path)
    assert len(table) == 36 and (table["value"] >= 0).all()
    pd.testing.assert_frame_equal(
        table.reset_index(drop=True), collect(tmp_path)[0].reset_index(drop=True)
    )
    assert len(store_rows(tmp_path)) == 36


def test_temporaries_of_dead_writers_are_removed_and_a_live_writers_kept(tmp_path):
    finish_run(tmp_path, 0)
    collect_cached(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = rowstore._HOST
    names = {
        "store/.data-x.arrow.{h}.{p}.tmp": int(dead.stdout),  # a killed compaction
        "store/parts/.{r}.e1.1-2.parquet.{h}.{p}.tmp": int(dead.stdout),  # a killed append
        "store/parts/.{r}.e1.3-4.parquet.{h}.{p}.tmp": os.getpid(),  # an append under way
    }
    paths = {}
    for name, pid in names.items():
        path = tmp_path / name.format(h=host, p=pid, r=f"{0:08x}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
        paths[name] = path
    collect_cached(tmp_path)
    assert [n for n, p in paths.items() if p.exists()] == [list(names)[2]]


def test_a_few_new_stages_go_to_a_delta_file_and_the_table_keeps_collects_order(tmp_path):
    """rowstore.compact: a new run among 40 (12 rows against 480) is written to the delta
    file and `rows` is kept; past DELTA_SHARE of the rows, or when a stage leaves, everything
    is compacted into one file again. The table is `collect`'s row for row at every step,
    with the new runs' keys falling between the old ones."""
    from harness.table import collect_current

    def files():
        return json.loads((tmp_path / "store" / "MANIFEST.json").read_text())["files"]

    def check():
        table, skipped, _ = collect_cached(tmp_path)
        expected = collect(tmp_path)[0].reset_index(drop=True)
        assert not skipped
        pd.testing.assert_frame_equal(table.reset_index(drop=True), expected, check_exact=True)
        current = collect_current(tmp_path)[0].reset_index(drop=True)
        pd.testing.assert_frame_equal(current, expected, check_exact=True)
        same(store_rows(tmp_path), independent(tmp_path))

    for n in range(0, 80, 2):
        finish_run(tmp_path, n, dataset=f"toy_{n % 3}")
    check()
    base = files()["rows"]
    for n in (41, 1, 77, 13):  # 48 rows in all: 10% of 480, still the delta
        finish_run(tmp_path, n, dataset=f"toy_{n % 3}")
        check()
        assert sorted(files()) == ["delta", "rows"] and files()["rows"] == base
    finish_run(tmp_path, 9)  # 60 rows: compacted into one file
    check()
    assert sorted(files()) == ["rows"] and files()["rows"] != base
    base = files()["rows"]
    finish_run(tmp_path, 11)
    check()
    assert sorted(files()) == ["delta", "rows"] and files()["rows"] == base
    shutil.rmtree(tmp_path / "runs" / f"{4:08x}")  # a stage leaves: compacted
    check()
    assert sorted(files()) == ["rows"]
    finish_run(tmp_path, 15)
    finish_run(tmp_path, 2, shift=3.0)  # a stage computed again: compacted, new rows
    check()
    assert sorted(files()) == ["rows"]
    incremental = collect_cached(tmp_path)[0].reset_index(drop=True)
    rebuilt = collect_cached(tmp_path, rebuild=True)[0].reset_index(drop=True)
    pd.testing.assert_frame_equal(incremental, rebuilt, check_exact=True)
    shutil.rmtree(tmp_path / "runs")  # every stage gone: an empty table, not a broken one
    (tmp_path / "runs").mkdir()
    for table in (collect_cached(tmp_path)[0], collect_current(tmp_path)[0]):
        assert table.empty and list(table.columns) == list(collect(tmp_path)[0].columns)


def test_data_files_are_uncompressed_and_an_lz4_generation_still_reads(tmp_path):
    """The store's files are written uncompressed (memory-mapped on reading); a generation an
    earlier version wrote with LZ4 is read as it is, giving the same table."""
    import pyarrow.feather as feather

    for n in range(6):
        finish_run(tmp_path, n)
    expected = collect_cached(tmp_path)[0]
    store = tmp_path / "store"
    data = store / json.loads((store / "MANIFEST.json").read_text())["files"]["rows"]
    rows = feather.read_table(data)
    for compression in ("uncompressed", "lz4"):
        feather.write_feather(rows, tmp_path / compression, compression=compression)
    sizes = {c: (tmp_path / c).stat().st_size for c in ("uncompressed", "lz4")}
    assert sizes["lz4"] != sizes["uncompressed"]  # the two can be told apart
    assert data.stat().st_size == sizes["uncompressed"]
    # an earlier version's generation, put in place by a rename as the store writes its files
    # (`expected` is memory-mapped from the file: overwriting it in place would change it)
    os.replace(tmp_path / "lz4", data)
    table, _, changed = collect_cached(tmp_path)
    assert changed is False
    pd.testing.assert_frame_equal(table, expected, check_exact=True)


def chunks(table: pd.DataFrame) -> set[int]:
    """The number of arrow chunks of each column of a frame collect_cached made."""
    return {table[c].array._pa_array.num_chunks for c in table.columns if hasattr(
        table[c].array, "_pa_array")}  # fmt: skip


def test_data_files_are_one_record_batch_and_the_table_one_array_per_column(tmp_path,
                                                                             monkeypatch):  # fmt: skip
    """The data file is written as one record batch, whatever the chunks it was put together
    from (one per stage here), and the table is read back from it: one arrow array per column,
    so that a selection does not join chunks again. Cold rebuilt (forked workers, a file
    each) and compacted incrementally alike; a few new stages (the delta file) keep theirs."""
    import pyarrow as pa

    from harness import bulkread

    def batches() -> dict[str, int]:
        store = tmp_path / "store"
        files = json.loads((store / "MANIFEST.json").read_text())["files"]
        return {n: pa.ipc.open_file(store / f).num_record_batches for n, f in files.items()}

    for n in range(0, 60, 2):
        finish_run(tmp_path, n, dataset=f"toy_{n % 3}")
    table = collect_cached(tmp_path)[0]
    assert batches() == {"rows": 1} and chunks(table) == {1}
    same(table, independent(tmp_path))
    finish_run(tmp_path, 7)  # a few: the delta file, beside the kept rows file
    table = collect_cached(tmp_path)[0]
    # left as read: the rows before the new stage's key, the delta file, the rows after it
    assert batches() == {"rows": 1, "delta": 1} and chunks(table) == {3}
    same(table, independent(tmp_path))
    monkeypatch.setattr(bulkread, "MIN_PARALLEL", 4)  # several workers: several chunks
    table = collect_cached(tmp_path, rebuild=True)[0]
    assert batches() == {"rows": 1} and chunks(table) == {1}
    same(table, independent(tmp_path))


def test_a_column_that_cannot_be_one_array_stays_in_chunks(tmp_path, monkeypatch):
    """A column too big for one array (a `string` column past 2 GiB: offsets overflow) is
    written in its chunks; the other columns are joined and every value is kept."""
    import pyarrow as pa
    import pyarrow.feather as feather

    table = pa.table({"a": ["x", "yy", "zzz"], "b": [1.0, 2.0, 3.0]})
    table = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    joined = rowstore._joined

    def refuse(column):
        if pa.types.is_string(column.type):
            raise pa.ArrowInvalid("offset overflow while concatenating arrays")
        return joined(column)

    monkeypatch.setattr(rowstore, "_joined", refuse)
    one = rowstore.one_chunk(table)
    assert [c.num_chunks for c in one.columns] == [2, 1]
    rowstore._write_arrow(table, tmp_path / "t.arrow")
    assert feather.read_table(tmp_path / "t.arrow").equals(table)


def test_prefetch_asks_for_every_file_of_the_generation_window_by_window(tmp_path, monkeypatch):
    """harness/prefetch.py: POSIX_FADV_WILLNEED over the whole of each file MANIFEST.json
    names (its data files and index), in windows, from a thread; nothing (no error) without a
    store or with a damaged manifest; a collection starts it."""
    from harness import prefetch as prefetch_module

    for n in range(3):
        finish_run(tmp_path, n)
    started = []  # (a spy: no thread of the collection's own racing the one below)
    monkeypatch.setattr("harness.table.prefetch", lambda root: started.append(root))
    collect_cached(tmp_path)
    assert started == [tmp_path]
    asked: list[tuple[int, int, int, int]] = []
    real = os.posix_fadvise

    def spy(fd, offset, length, advice):
        asked.append((os.fstat(fd).st_ino, offset, length, advice))
        return real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    monkeypatch.setattr(prefetch_module, "WINDOW", 256)  # several windows per file
    prefetch_module.prefetch(tmp_path).join()
    manifest = json.loads((tmp_path / "store" / "MANIFEST.json").read_text())
    files = [tmp_path / "store" / n for n in [*manifest["files"].values(), manifest["index"]]]
    for path in files:
        windows = sorted(o for ino, o, _, _ in asked if ino == path.stat().st_ino)
        assert windows == list(range(0, path.stat().st_size, 256)) and len(windows) > 1
    assert {(length, advice) for _, _, length, advice in asked} == {(256, os.POSIX_FADV_WILLNEED)}
    assert len(asked) == sum(len(range(0, p.stat().st_size, 256)) for p in files)
    assert prefetch_module.prefetch(tmp_path / "nothing") is None
    (tmp_path / "store" / "MANIFEST.json").write_text("{not json")
    assert prefetch_module.prefetch(tmp_path) is None
