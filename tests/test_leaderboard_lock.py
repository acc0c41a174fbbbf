"""Issue 24, item 4: one leaderboard rebuild of a root at a time (harness.report.build's
leaderboard_lock); real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import harness.run as run_mod
from harness.report.build import leaderboard_lock

from .conftest import TINY, compose_config


def blocked_on_a_lock(pid: int) -> bool:
    with open("/proc/locks") as locks:
        return any("->" in line and f" {pid} " in f" {line.split()[5]} " for line in locks)


def start(root, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTDATED_IGNORE": "1"}
    args = [
        sys.executable,
        "-m",
        "harness.leaderboard",
        f"results_dir={root}",
        "outputs=[markdown,html]",
    ]
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_rebuild_waits_for_the_one_in_progress_and_two_at_once_both_finish(tmp_path):
    root = tmp_path / "res"
    run_mod.run(compose_config([*TINY, f"results_dir={root}", "eval=minimal"]))
    index = root / "leaderboard" / "README.md"
    with leaderboard_lock(root):  # a rebuild in progress (held here)
        waiting = start(root, tmp_path)
        # the kernel lists a process blocked on a lock in /proc/locks, marked "->"
        deadline = time.monotonic() + 120
        while not blocked_on_a_lock(waiting.pid):
            assert waiting.poll() is None, waiting.communicate()
            assert time.monotonic() < deadline, "the second rebuild never waited for the lock"
            time.sleep(0.2)
        assert not index.exists()
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert index.is_file()
    first, second = start(root, tmp_path), start(root, tmp_path)
    for proc in (first, second):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert index.is_file() and (root / "leaderboard" / "index.html").is_file()
    assert not list((root / "leaderboard").rglob("*.tmp"))
