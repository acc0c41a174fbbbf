"""harness/listing.py's finished_stages (stats relative to the open runs/ folder) against a
listing written independently with pathlib: the same stages, identities and skipped paths,
on a root with every odd case (no DONE, FAILED, links to run and stage folders, a file among
the stages, a stage without DONE or without rows.parquet, a DONE that is a folder)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from harness import listing
from harness.listing import finished_stages
from harness.rundir import FAILED_WHY, SYMLINK_REFUSED
from tests.conftest import fork_warns_like_python_3_12


def independent(root: Path) -> tuple[dict, list]:
    stages, skipped, links = {}, [], []
    runs = root / "runs"
    for run in sorted(runs.iterdir()):
        if run.is_symlink():
            links.append((run, SYMLINK_REFUSED))
            continue
        if not run.is_dir():
            continue
        if not (run / "DONE").is_file():
            why = FAILED_WHY if (run / "FAILED").is_file() else "incomplete (no DONE marker)"
            skipped.append((run, why))
            continue
        posthoc = run / "posthoc"
        entries = sorted(posthoc.iterdir()) if posthoc.is_dir() else []
        for stage in entries:
            if stage.is_symlink() and stage.is_dir():
                links.append((stage, SYMLINK_REFUSED))
            if stage.is_symlink() or not stage.is_dir():
                continue
            if not (stage / "DONE").exists():
                skipped.append((stage, "incomplete post-hoc stage (no DONE marker)"))
                continue
            done = (stage / "DONE").stat()
            rows = stage / "rows.parquet"
            r_time, r_size = (
                (rows.stat().st_mtime_ns, rows.stat().st_size) if rows.exists() else (0, 0)
            )
            identity = (max(done.st_mtime_ns, r_time), r_size * 10**6 + done.st_size)
            stages[f"{run.name}/{stage.name}"] = (str(stage), identity)
    return stages, skipped + links


def make(root: Path) -> None:
    runs = root / "runs"

    def stage(run: str, eval_id: str, done=True, rows=True) -> Path:
        path = runs / run / "posthoc" / eval_id
        path.mkdir(parents=True, exist_ok=True)
        if done:
            (path / "DONE").write_text("{}")
        if rows:
            (path / "rows.parquet").write_bytes(b"x" * (len(eval_id) + 7))
        return path

    for i in range(6):
        run = f"{i:04x}"
        stage(run, "e1")
        stage(run, "e2", rows=i % 2 == 0)
        (runs / run / "DONE").write_text("{}")
    stage("0001", "e3", done=False)
    (runs / "0002" / "posthoc" / "notes.txt").write_text("a file among the stages")
    os.symlink(runs / "0003" / "posthoc" / "e1", runs / "0002" / "posthoc" / "linked")
    os.symlink(runs / "0004", runs / "0004-link")
    stage("0100", "e1")  # no DONE: incomplete
    stage("0101", "e1")
    (runs / "0101" / "FAILED").write_text("{}")
    stage("0102", "e1")
    (runs / "0102" / "DONE").mkdir()  # a folder: not a DONE file
    (runs / "0103").mkdir()
    (runs / "0103" / "DONE").write_text("{}")  # finished, no posthoc
    (runs / "stray.txt").write_text("")


def test_finished_stages_equal_an_independent_listing(tmp_path: Path) -> None:
    make(tmp_path)
    got, skipped = finished_stages(tmp_path)
    want, want_skipped = independent(tmp_path)
    assert list(got) == sorted(want) and got == want
    assert sorted(map(str, skipped)) == sorted(map(str, want_skipped))
    assert len(got) == 12 and len(skipped) == 6
    assert finished_stages(tmp_path / "nowhere") == ({}, [])


def test_forked_listing_is_the_sequential_one(tmp_path: Path) -> None:
    # the run folders cut into slices listed by forked children: the same stages, skipped
    # paths and links, in the same order (not only the same sets)
    make(tmp_path)
    want = listing.finished_stages(tmp_path, workers=1)
    assert want[0] == independent(tmp_path)[0]
    for workers in (2, 3, 5, 50):
        got = listing.finished_stages(tmp_path, workers=workers)
        assert list(got[0].items()) == list(want[0].items()) and got[1] == want[1]


def test_a_failed_child_leaves_its_slice_to_the_parent(tmp_path: Path, monkeypatch) -> None:
    make(tmp_path)
    want = listing.finished_stages(tmp_path, workers=1)
    parent, walk = os.getpid(), listing._list_slice

    def dies_in_a_child(*args):
        if os.getpid() != parent:
            raise RuntimeError("a child that fails")
        return walk(*args)

    monkeypatch.setattr(listing, "_list_slice", dies_in_a_child)
    got = listing.finished_stages(tmp_path, workers=3)
    assert list(got[0].items()) == list(want[0].items()) and got[1] == want[1]


def test_python_3_12s_fork_warning_is_not_the_callers(tmp_path: Path, monkeypatch) -> None:
    """Python >= 3.12 warns in the parent at each fork of a process with threads (emulated
    here: this venv's Python may be older); the listing's forks are deliberate."""
    make(tmp_path)
    want = listing.finished_stages(tmp_path, workers=1)
    fork_warns_like_python_3_12(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = listing.finished_stages(tmp_path, workers=3)
    assert not caught and got == want


def test_stages_with_scores_is_isdir_of_each_stages_scores_folder(tmp_path):
    """rundir.stages_with_scores (one stat per stage, relative to runs/) says what
    os.path.isdir of the joined path says: a folder, a link to one, a file, a dangling link,
    nothing, a missing run, and no runs/ at all."""
    from harness.rundir import stages_with_scores

    runs = tmp_path / "runs"
    cases = ["folder", "link", "file", "dangling", "none"]
    for name in cases:
        (runs / name / "posthoc" / "e1").mkdir(parents=True)
    (runs / "folder" / "posthoc" / "e1" / "scores").mkdir()
    (runs / "link" / "posthoc" / "e1" / "scores").symlink_to(
        runs / "folder" / "posthoc" / "e1" / "scores"
    )
    (runs / "file" / "posthoc" / "e1" / "scores").write_text("x")
    (runs / "dangling" / "posthoc" / "e1" / "scores").symlink_to(tmp_path / "gone")
    stages = [(n, "e1") for n in cases] + [("folder", "e2"), ("missing", "e1")]
    expected = [os.path.isdir(runs / r / "posthoc" / e / "scores") for r, e in stages]
    assert expected == [True, True, False, False, False, False, False]  # the cases differ
    assert stages_with_scores(tmp_path, stages) == expected
    assert stages_with_scores(tmp_path / "elsewhere", stages) == [False] * len(stages)


def test_in_slices_is_the_work_of_all_items_in_order_and_a_failed_child_leaves_its_slice(
    tmp_path: Path,
) -> None:
    """listing.in_slices (with_scores' stats in forked children): the results of work over
    the whole list, in order, for 1 to 7 processes; a child whose work fails leaves its slice
    to the parent; workers chosen from the number of items (none forked below MIN_FORKED)."""
    from harness.rundir import stages_with_scores

    runs = tmp_path / "runs"
    stages = [(f"r{i:03d}", "e1") for i in range(40)]
    for i, (run, ev) in enumerate(stages):
        (runs / run / "posthoc" / ev).mkdir(parents=True)
        if i % 3 == 0:
            (runs / run / "posthoc" / ev / "scores").mkdir()
    want = [os.path.isdir(runs / r / "posthoc" / e / "scores") for r, e in stages]
    assert sum(want) == 14
    for workers in (1, 2, 3, 7):
        got = listing.in_slices(lambda part: stages_with_scores(tmp_path, part), stages, workers)
        assert got == want
    parent = os.getpid()

    def fails_in_a_child(part):
        if os.getpid() != parent:
            raise RuntimeError("a child that fails")
        return [f"{r}/{e}" for r, e in part]

    assert listing.in_slices(fails_in_a_child, stages, 3) == [f"{r}/{e}" for r, e in stages]
    pids = listing.in_slices(lambda part: [os.getpid()] * len(part), stages)
    assert set(pids) == {parent}  # 40 items: below MIN_FORKED, no child
    pids = listing.in_slices(lambda part: [os.getpid()] * len(part), stages, None, 20)
    assert pids[0] == parent and len(set(pids)) == min(os.cpu_count() or 1, 2)  # 20 each
