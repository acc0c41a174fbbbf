"""Sweeps that survive: failures recorded, locks, kills, concurrent sweeps, launchers."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from harness import keys as keys_mod
from harness import run as run_mod
from harness.rundir import LOCK, LockHeld, RunDir, RunLock
from harness.status import run_statuses
from harness.table import collect

from .conftest import TINY, compose_config, run_cli, run_rows

NAN = "trainer.optimizer.lr=1e30"  # the loss becomes NaN within two steps


def test_a_failing_job_is_recorded_and_the_sweep_goes_on_then_exits_non_zero(tmp_path):
    results = tmp_path / "res"
    args = [
        "-m",
        "trainer.optimizer.lr=0.003,1e30",
        *TINY,
        "trainer.max_steps=4",
        f"results_dir={results}",
    ]
    proc = run_cli(args, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "sweep: 2 jobs: 1 finished, 0 skipped" in proc.stdout and "1 failed" in proc.stdout
    assert "FloatingPointError: non-finite loss" in proc.stdout
    statuses = run_statuses(results).set_index("status")
    assert sorted(statuses.index) == ["failed", "finished"]
    failed_dir = results / "runs" / statuses.loc["failed", "run_id"]
    record = json.loads((failed_dir / "FAILED").read_text())
    assert record["reason"].startswith("FloatingPointError: non-finite loss")
    assert "Traceback" in record["traceback"] and "train.py" in record["traceback"]
    # the leaderboard (rebuilt by the sweep's end) reads the finished run only, and says
    # how many runs failed per configuration
    table = pd.read_parquet(results / "table.parquet")
    assert set(table["run_id"]) == {statuses.loc["finished", "run_id"]}
    index = (results / "leaderboard" / "README.md").read_text()
    assert "## Failed runs (1)" in index and "non-finite loss" in index

    # a rerun retries the failed run (it fails again) unless told not to
    again = run_cli(args, cwd=tmp_path, check=False)
    assert again.returncode != 0 and "1 skipped" in again.stdout and "1 failed" in again.stdout
    no_retry = run_cli([*args, "retry_failed=false"], cwd=tmp_path)
    assert "2 skipped" in no_retry.stdout and "0 failed" in no_retry.stdout
    assert "failed before" in no_retry.stdout + no_retry.stderr

    status = run_cli([f"results_dir={results}"], cwd=tmp_path, module="harness.status")
    assert "1 finished, 0 running, 1 failed, 0 incomplete" in status.stdout


def test_a_run_that_succeeds_after_failing_clears_its_failed_record(tmp_path):
    rd_failed = tmp_path / "runs"
    with pytest.raises(FloatingPointError):
        run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", NAN]))
    [failed] = list(rd_failed.glob("*/FAILED"))
    failed.parent.joinpath("key.json").read_text()  # the record sits beside the run's key
    # a fixed run (same key, e.g. after a code fix) finishing removes the FAILED record
    rd = RunDir(tmp_path, failed.parent.name)
    rd.mark_complete({"run_id": rd.run_id})
    assert not rd.failed.exists() and rd.status() == "finished"


def test_lock_is_exclusive_while_its_holder_lives(tmp_path):
    rd = RunDir(tmp_path, "abc123")
    with RunLock(rd, stale_after=60, heartbeat=0.05):
        info = json.loads((rd.path / LOCK).read_text())
        assert info["pid"] == os.getpid() and info["host"] == platform.node()
        with pytest.raises(LockHeld, match=f"held by pid {os.getpid()}"):
            RunLock(rd, stale_after=60).acquire()
        before = (rd.path / LOCK).stat().st_mtime
        time.sleep(0.3)
        assert (rd.path / LOCK).stat().st_mtime > before  # the heartbeat
        assert rd.status() == "running"
    assert not (rd.path / LOCK).exists() and rd.status() == "incomplete"


def test_a_dead_or_silent_holder_cannot_keep_a_run(tmp_path):
    rd = RunDir(tmp_path, "abc123")
    rd.path.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (rd.path / LOCK).write_text(json.dumps({"host": platform.node(), "pid": int(dead)}))
    with RunLock(rd, stale_after=60):  # same host, process gone: taken over at once
        assert json.loads((rd.path / LOCK).read_text())["pid"] == os.getpid()
    (rd.path / LOCK).write_text(json.dumps({"host": "another-host", "pid": 1}))
    with pytest.raises(LockHeld, match="another-host"):
        RunLock(rd, stale_after=60).acquire()
    old = time.time() - 120
    os.utime(rd.path / LOCK, (old, old))  # no heartbeat for two minutes
    with RunLock(rd, stale_after=60):
        assert json.loads((rd.path / LOCK).read_text())["host"] == platform.node()


def test_a_run_held_by_a_live_process_is_skipped_not_recomputed(tmp_path, monkeypatch):
    cfg = compose_config([*TINY, f"results_dir={tmp_path}"])
    key = keys_mod.make_keys(
        keys_mod.key_payload(
            run_mod.OmegaConf.to_container(cfg, resolve=True),
            run_mod.registry.build("dataset", run_mod.OmegaConf.to_container(cfg.dataset)),
        )
    )
    rd = RunDir(tmp_path, key.run_id)
    with RunLock(rd, stale_after=60):
        monkeypatch.setattr(run_mod, "execute_training", lambda *a: pytest.fail("computed twice"))
        assert run_mod.run(cfg)["status"] == "running"


def test_sigkill_during_training_leaves_nothing_readable_and_resumes_to_the_same_numbers(tmp_path):
    extra = [
        *TINY,
        "dataset.limit=300",
        "trainer.epochs=4",
        "trainer.max_steps=null",
        "trainer.batch_size=4",
    ]
    clean = run_mod.run(compose_config([*extra, f"results_dir={tmp_path / 'clean'}"]))
    killed_root = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.run", *extra, f"results_dir={killed_root}"],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed_root / "runs" / clean["run_id"] / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "the run ended before its first checkpoint"
    rd = RunDir(killed_root, clean["run_id"])
    assert not rd.is_complete(), "the run finished before it could be killed"
    assert collect(killed_root)[0].empty  # nothing a reader would take
    assert rd.status() == "incomplete"  # its lock's process is gone
    # what a SIGTERM mid-write leaves (the writer's cleanup never ran): gone after the rerun
    strays = [rd / "checkpoints" / ".last.pt.k1ll3d.tmp", rd / ".config.yaml.x9.tmp"]
    for stray in strays:
        stray.write_bytes(b"half")
    resumed = run_mod.run(compose_config([*extra, f"results_dir={killed_root}"]))
    assert resumed["run_id"] == clean["run_id"] and not resumed["skipped"]
    assert "resuming" in (rd / "run.log").read_text()
    assert not any(s.exists() for s in strays) and not list(rd.path.rglob(".*.tmp"))
    a = run_rows(RunDir(tmp_path / "clean", clean["run_id"]).path)
    b = run_rows(rd.path)
    pd.testing.assert_series_equal(a["value"], b["value"], check_exact=True)


def test_two_overlapping_sweeps_at_once_compute_each_run_once(tmp_path):
    results = tmp_path / "res"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness.run",
                "-m",
                seeds,
                *TINY,
                "trainer.max_steps=6",
                f"results_dir={results}",
                f"hydra.sweep.dir={tmp_path / name}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, seeds in (("a", "seed=0,1,2"), ("b", "seed=2,1,3"))
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    runs = sorted(p.parent.name for p in results.glob("runs/*/DONE"))
    assert len(runs) == 4
    started = [
        line for log in logs for line in log.splitlines() if "harness.run][INFO] - run " in line
    ]
    assert len(started) == 4, "\n".join(logs)  # each run computed exactly once
    table, skipped = collect(results)
    assert table["run_id"].nunique() == 4 and not skipped


def test_results_merged_from_two_roots_are_counted_once(tmp_path):
    import shutil

    run_mod.run(compose_config([*TINY, f"results_dir={tmp_path / 'a'}"]))
    run_mod.run(compose_config([*TINY, f"results_dir={tmp_path / 'b'}", "seed=1"]))
    merged = tmp_path / "merged" / "runs"
    shutil.copytree(tmp_path / "a" / "runs", merged, dirs_exist_ok=True)
    shutil.copytree(tmp_path / "b" / "runs", merged, dirs_exist_ok=True)
    shutil.copytree(tmp_path / "a" / "runs", merged, dirs_exist_ok=True)  # the same run again
    table, _ = collect(tmp_path / "merged")
    assert table["run_id"].nunique() == 2
    assert not table.duplicated(
        ["run_id", "eval_id", "split", "group_key", "group_value", "scorer", "metric"]
    ).any()


def test_slurm_preset_requeues_on_timeout():
    from hydra import compose, initialize_config_dir

    from .conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.max_num_timeout >= 1 and launcher.array_parallelism == 64


@pytest.mark.parametrize("launcher", ["local"])
def test_launchers_give_the_same_numbers(tmp_path, launcher):
    run_cli(
        [
            "-m",
            "seed=1",
            *TINY,
            f"results_dir={tmp_path / launcher}",
            f"hydra/launcher={launcher}",
            "hydra.launcher.timeout_min=10",
        ],
        cwd=tmp_path,
    )
    basic = run_mod.run(compose_config([*TINY, "seed=1", f"results_dir={tmp_path / 'basic'}"]))
    [other] = [p.parent for p in (tmp_path / launcher).glob("runs/*/DONE")]
    assert other.name == basic["run_id"]
    a = run_rows(RunDir(tmp_path / "basic", basic["run_id"]).path)
    b = run_rows(other)
    pd.testing.assert_series_equal(a["value"], b["value"], check_exact=True)


def test_a_holder_whose_lock_was_taken_over_does_not_remove_the_new_one(tmp_path):
    rd = RunDir(tmp_path, "abc123")
    old = RunLock(rd, stale_after=60, heartbeat=60)
    old.acquire()
    record = json.loads((rd.path / LOCK).read_text())
    (rd.path / LOCK).write_text(json.dumps({**record, "host": "stalled-host"}))
    stale = time.time() - 120
    os.utime(rd.path / LOCK, (stale, stale))  # its heartbeat stalled: another process takes over
    new = RunLock(rd, stale_after=60, heartbeat=60)
    new.acquire()
    assert not old.owned() and new.owned()
    old.release()  # the stalled process finishes: the new holder's lock stays
    assert (rd.path / LOCK).exists() and new.owned()
    new.release()
    assert not (rd.path / LOCK).exists()


def test_status_names_a_corrupt_failed_record_and_lists_every_other_run(tmp_path):
    good, bad, keyless = (RunDir(tmp_path, rid) for rid in ("aa01", "bb02", "cc03"))
    for rd in (good, bad, keyless):
        rd.path.mkdir(parents=True)
    good.mark_failed(RuntimeError("out of memory"))
    bad.failed.write_bytes(b"\xff\x00 not json")
    keyless.mark_failed(RuntimeError("disk full"))
    keyless.key_json.write_text("{ truncated")
    statuses = run_statuses(tmp_path).set_index("run_id")
    assert list(statuses["status"]) == ["failed"] * 3
    assert statuses.loc["aa01", "reason"] == "RuntimeError: out of memory"
    assert "unreadable FAILED file" in statuses.loc["bb02", "reason"]
    assert str(bad.failed) in statuses.loc["bb02", "reason"]
    assert statuses.loc["cc03", "reason"] == "RuntimeError: disk full"


def _stage(root, run_id, rows):
    """A finished run with one finished post-hoc stage whose rows.parquet is `rows` (a
    frame, or a callable that makes the file itself)."""
    from harness.store import atomic_write_parquet, atomic_write_text

    rd = RunDir(root, run_id)
    stage = rd / "posthoc" / "e"
    stage.mkdir(parents=True)
    if callable(rows):
        rows(stage / "rows.parquet")
    else:
        atomic_write_parquet(rows, stage / "rows.parquet")
    atomic_write_text(stage / "DONE", "{}")
    rd.mark_complete({"run_id": run_id})
    return stage


def test_stage_files_of_the_wrong_schema_or_kind_are_skipped_and_named(tmp_path):
    def rows(run_id, **change):
        frame = pd.DataFrame(
            {
                "run_id": [run_id] * 2,
                "eval_id": "e",
                "split": ["id_test", "val"],
                "group_key": "",
                "group_value": "",
                "scorer": "",
                "metric": "accuracy",
                "value": [0.5, 0.75],
                "n": 4,
            }
        )
        return frame.assign(**change)

    _stage(tmp_path, "aa01", rows("aa01"))
    strings = _stage(tmp_path, "bb02", rows("bb02", value=["high", "low"]))
    no_metric = _stage(tmp_path, "cc03", rows("cc03").drop(columns="metric"))
    fifo = _stage(tmp_path, "dd04", os.mkfifo)  # reading it would block forever
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(out=collect(tmp_path)), daemon=True)
    with pytest.warns(UserWarning) as caught:
        worker.start()
        worker.join(timeout=60)
    assert not worker.is_alive(), "collect hung on a FIFO"
    table = result["out"][0]
    assert sorted(table["run_id"].unique()) == ["aa01"] and len(table) == 2
    messages = " ".join(str(w.message) for w in caught)
    for stage, why in (
        (strings, "not a number"),
        (no_metric, "no column metric"),
        (fifo, "not a regular file"),
    ):
        assert str(stage) in messages and why in messages
