"""Checkpoint retention (harness/retention.py), harness.status's disk report and
harness.prune: what a finished run keeps, what a TTA run needs, and a locked run left alone."""

from __future__ import annotations

import json
import shutil

import pytest

from harness import run as run_mod
from harness.prune import prune
from harness.retention import apply_policy, doomed
from harness.rundir import RunDir, RunLock
from harness.status import disk_usage, run_statuses

from .conftest import TINY, compose_config, run_cli


def do_run(root, *extra):
    return run_mod.run(compose_config([*TINY, f"results_dir={root}", *extra]))


@pytest.fixture(scope="module")
def kept_all(tmp_path_factory):
    """A finished run that kept both checkpoints (checkpoints=all)."""
    root = tmp_path_factory.mktemp("all")
    summary = do_run(root, "checkpoints=all")
    return root, summary["run_id"]


def copy_root(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("cache"))
    return dst


@pytest.mark.parametrize(
    "policy,kept",
    [
        ("best", {"best.pt"}),
        ("last", {"last.pt"}),
        ("all", {"best.pt", "last.pt"}),
        ("none", set()),
    ],
)
def test_each_policy_keeps_what_it_says(kept_all, tmp_path, policy, kept):
    root, run_id = kept_all
    rd = RunDir(copy_root(root, tmp_path / "r"), run_id)
    assert {p.name for p in rd.checkpoints.iterdir()} == {"best.pt", "last.pt"}
    before = sum(p.stat().st_size for p in rd.checkpoints.iterdir())
    freed = apply_policy(rd, policy)
    left = {p.name for p in rd.checkpoints.iterdir()} if rd.checkpoints.is_dir() else set()
    assert left == kept
    assert freed == before - sum((rd.checkpoints / n).stat().st_size for n in kept)
    assert (freed > 0) == (policy != "all")


def test_an_unfinished_run_keeps_what_lets_it_resume(kept_all, tmp_path):
    root, run_id = kept_all
    rd = RunDir(copy_root(root, tmp_path / "r"), run_id)
    rd.done.unlink()
    with pytest.raises(RuntimeError, match="not finished .* can resume"):
        apply_policy(rd, "none")
    assert rd.last_checkpoint.is_file()
    assert prune(rd.results_dir, "none").empty  # prune skips it too


def test_done_records_the_policy_and_a_bad_policy_is_refused(kept_all, tmp_path):
    root, run_id = kept_all
    assert RunDir(root, run_id).read_done()["checkpoints"] == "all"
    with pytest.raises(ValueError, match=r"checkpoints must be one of \['best', 'last', 'all'"):
        do_run(tmp_path, "checkpoints=some")
    assert not (tmp_path / "runs").exists()


def test_tta_on_a_run_without_best_pt_refuses_clearly(tmp_path):
    trained = do_run(tmp_path, "checkpoints=none")
    rd = RunDir(tmp_path, trained["run_id"])
    assert not rd.checkpoints.exists()  # DONE, nothing kept
    with pytest.raises(
        FileNotFoundError,
        match=r"tta=tent: run .* kept no checkpoints/best.pt "
        r"\(it finished with checkpoints=none\)",
    ):
        do_run(tmp_path, "checkpoints=none", "tta=tent")
    # refused before anything of the TTA run was written
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [trained["run_id"]]


def test_status_reports_disk_and_what_best_would_free(kept_all, tmp_path):
    root = copy_root(kept_all[0], tmp_path / "r")
    run_id = kept_all[1]
    rd = RunDir(root, run_id)
    # a failed run whose FAILED record is corrupt (issue #24 item 9), and one readable
    bad = RunDir(root, "ab" * 10)
    bad.path.mkdir()
    bad.failed.write_bytes(b"\xff{not json")
    good = RunDir(root, "cd" * 10)
    good.path.mkdir()
    good.failed.write_text(json.dumps({"reason": "ValueError: boom"}))
    table = run_statuses(root).set_index("run_id")
    assert table.loc[bad.run_id, "status"] == "failed"
    assert str(bad.failed) in table.loc[bad.run_id, "reason"]
    assert table.loc[good.run_id, "reason"] == "ValueError: boom"
    last = rd.last_checkpoint.stat().st_size
    assert table.loc[run_id, "best_frees"] == last
    assert table.loc[run_id, "checkpoint_bytes"] == last + rd.best_checkpoint.stat().st_size
    assert table.loc[run_id, "bytes"] > table.loc[run_id, "checkpoint_bytes"]
    usage = disk_usage(table.reset_index()).set_index(["dataset", "method"])
    assert usage.loc[("maze", "erm"), "checkpoints=best frees MiB"] == round(last / 2**20, 1)
    # the command prints both, and names the corrupt record instead of crashing
    out = run_cli([f"results_dir={root}"], tmp_path, module="harness.status").stdout
    assert str(bad.failed) in out and "checkpoints=best would free" in out
    assert "| maze " in out


def test_prune_applies_a_policy_and_leaves_a_locked_run_alone(kept_all, tmp_path):
    root = copy_root(kept_all[0], tmp_path / "r")
    rd = RunDir(root, kept_all[1])
    last = rd.last_checkpoint.stat().st_size
    dry = prune(root, "best", dry_run=True)
    assert list(dry["action"]) == ["would prune"] and dry["bytes"].sum() == last
    assert rd.last_checkpoint.is_file()
    lock = RunLock(rd)  # a live process (this one) holds the run
    lock.acquire()
    try:
        proc = run_cli([f"results_dir={root}"], tmp_path, module="harness.prune", check=False)
    finally:
        lock.release()
    assert proc.returncode == 1 and f"refused {rd.run_id}" in proc.stderr
    assert rd.last_checkpoint.is_file()
    out = run_cli([f"results_dir={root}"], tmp_path, module="harness.prune").stdout
    assert "1 pruned" in out and not rd.last_checkpoint.exists() and rd.best_checkpoint.is_file()
    assert doomed(rd, "best") == []
    assert list(prune(root, "best")["action"]) == ["kept"]  # idempotent
    with pytest.raises(FileNotFoundError, match="no run directories"):
        prune(tmp_path / "typo", "best")
