"""Keys, atomic writes, run directories and collection."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from harness import keys, store
from harness import table as tidy
from harness.keys import make_keys
from harness.rundir import RunDir
from harness.store import atomic_write_parquet, atomic_write_text
from harness.table import collect


def test_content_hash_ignores_key_order_and_sees_values():
    assert keys.content_hash({"a": 1, "b": [1, 2]}) == keys.content_hash({"b": [1, 2], "a": 1})
    assert keys.content_hash({"a": 1}) != keys.content_hash({"a": 2})


def test_seed_changes_run_id_but_not_setting_id():
    a = make_keys({"model": "m", "seed": 0})
    b = make_keys({"model": "m", "seed": 1})
    c = make_keys({"model": "other", "seed": 0})
    assert a.run_id != b.run_id and a.setting_id == b.setting_id
    assert a.setting_id != c.setting_id
    assert a.payload["results_version"] == keys.RESULTS_VERSION


def test_results_version_is_part_of_the_key(monkeypatch):
    before = make_keys({"seed": 0})
    monkeypatch.setattr(keys, "RESULTS_VERSION", keys.RESULTS_VERSION + 1)
    assert make_keys({"seed": 0}).run_id != before.run_id


def test_file_digest_follows_content(tmp_path):
    p = tmp_path / "w.bin"
    p.write_bytes(b"one")
    first = keys.file_digest(p)
    p.write_bytes(b"two")
    assert keys.file_digest(p) != first
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        keys.file_digest(tmp_path / "missing.bin")


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "rows.parquet"
    atomic_write_parquet(pd.DataFrame({"x": [1, 2]}), target)

    class Unwritable(pd.DataFrame):
        def to_parquet(self, *a, **k):
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write_parquet(Unwritable({"x": [3]}), target)
    assert pd.read_parquet(target)["x"].tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]


def test_run_dir_refuses_ids_that_are_not_content_hashes(tmp_path):
    for bad in ["../escape", "", "ABC", "a/b"]:
        with pytest.raises(ValueError, match="hex content hash"):
            RunDir(tmp_path, bad)


def _finished_run(root, run_id, rows, eval_id="e1"):
    rd = RunDir(root, run_id)
    stage = rd / "posthoc" / eval_id
    atomic_write_parquet(pd.DataFrame(rows).assign(eval_id=eval_id), stage / "rows.parquet")
    atomic_write_text(stage / "DONE", "{}")
    rd.mark_complete({"run_id": run_id})
    return stage


def test_collect_reads_completed_runs_and_skips_bad_ones_with_a_warning(tmp_path):
    row = {
        "run_id": "aa",
        "split": "s",
        "group_key": "",
        "group_value": "",
        "scorer": "",
        "metric": "accuracy",
        "value": 0.5,
    }
    _finished_run(tmp_path, "aa", [row])
    _finished_run(tmp_path, "bb", [{**row, "run_id": "bb", "value": 0.7}])
    # a second post-hoc stage of bb adds its rows; an unfinished one of aa adds nothing
    _finished_run(tmp_path, "bb", [{**row, "run_id": "bb", "value": 0.7}], eval_id="e2")
    half = RunDir(tmp_path, "aa") / "posthoc" / "e3"
    atomic_write_parquet(pd.DataFrame([{**row, "eval_id": "e3"}]), half / "rows.parquet")
    incomplete = _finished_run(tmp_path, "cc", [{**row, "run_id": "cc"}])
    (RunDir(tmp_path, "cc") / "DONE").unlink()  # rows but no run DONE marker: a run that died
    corrupt = _finished_run(tmp_path, "dd", [{**row, "run_id": "dd"}])
    atomic_write_text(corrupt / "rows.parquet", "not parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table, skipped = collect(tmp_path)
    assert sorted(zip(table["run_id"], table["eval_id"], strict=True)) == [
        ("aa", "e1"),
        ("bb", "e1"),
        ("bb", "e2"),
    ]
    assert sorted(str(p.relative_to(tmp_path / "runs")) for p, _ in skipped) == [
        "aa/posthoc/e3",
        "cc",
        "dd/posthoc/e1",
    ]
    messages = " ".join(str(w.message) for w in caught)
    assert "cc" in messages and "incomplete" in messages and "unreadable" in messages
    assert incomplete.is_dir()


def test_collect_of_an_empty_root_is_an_empty_table(tmp_path):
    table, skipped = collect(tmp_path / "nothing")
    assert table.empty and list(table.columns) == tidy.ROW_COLUMNS and skipped == []


def test_atomic_writes_get_ordinary_file_modes(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "DONE", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "DONE").stat().st_mode & 0o777 == 0o666 & ~store._UMASK


def test_collect_cached_reads_only_new_stages_and_drops_deleted_runs(tmp_path):
    # the store holds aa's rows: its rows.parquet is not read again while its DONE is unchanged
    import os
    import shutil

    from harness.table import collect_cached

    row = {
        "split": "s",
        "group_key": "",
        "group_value": "",
        "scorer": "",
        "metric": "accuracy",
        "value": 0.5,
    }
    a = _finished_run(tmp_path, "aa", [{**row, "run_id": "aa"}])
    _finished_run(tmp_path, "bb", [{**row, "run_id": "bb"}])
    first, _, changed = collect_cached(tmp_path)
    assert changed
    assert collect_cached(tmp_path)[2] is False  # nothing new: the cached table, not rewritten
    assert sorted(first["run_id"]) == ["aa", "bb"]
    assert (tmp_path / "store" / "MANIFEST.json").is_file() and (
        tmp_path / "table.parquet"
    ).is_file()
    # aa's stage is finished: its rows come from the store, not from the file (garbage of the
    # same size and mtime: the stage's identity, from stats only, is unchanged)
    st = (a / "rows.parquet").stat()
    (a / "rows.parquet").write_bytes(b"\0" * st.st_size)
    os.utime(a / "rows.parquet", ns=(st.st_atime_ns, st.st_mtime_ns))
    _finished_run(tmp_path, "cc", [{**row, "run_id": "cc"}])
    shutil.rmtree(tmp_path / "runs" / "bb")
    second, skipped, changed = collect_cached(tmp_path)
    assert changed
    assert sorted(second["run_id"]) == ["aa", "cc"] and skipped == []
    # a rows.parquet rewritten after it was stored is read again: damaged, skipped with why
    atomic_write_text(a / "rows.parquet", "not parquet")
    with pytest.warns(UserWarning, match="unreadable rows.parquet"):
        assert sorted(collect_cached(tmp_path)[0]["run_id"]) == ["cc"]
    # a stage whose DONE changed is read again (here: the unreadable file, skipped with why)
    done = a / "DONE"
    os.utime(done, ns=(done.stat().st_atime_ns, done.stat().st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="unreadable rows.parquet"):
        third, skipped, _ = collect_cached(tmp_path)
    assert sorted(third["run_id"]) == ["cc"]
    # a store that cannot be trusted means a full read, never an error
    atomic_write_text(tmp_path / "store" / "MANIFEST.json", "{not json")
    _finished_run(tmp_path, "aa", [{**row, "run_id": "aa", "value": 0.9}])
    fourth, _, _ = collect_cached(tmp_path)
    assert sorted(fourth["run_id"]) == ["aa", "cc"]
    assert fourth.set_index("run_id").loc["aa", "value"] == 0.9
