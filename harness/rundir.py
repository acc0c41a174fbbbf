"""Every path of a run directory, its lock, and reading its key.json and DONE.

The run directory is the contract between every stage (docs/results.md): the forward stage
writes it, the post-hoc stage and the leaderboard read it, and `python -m harness.merge`
copies it between results roots. This module is the only place that spells a path inside it:

    <results_dir>/runs/<run_id>/
      config.yaml key.json run.log transform.json benchmark.json run_info.json tta.json
      epochs.parquet checkpoints/{last,best}.pt meta/<split>.parquet
      outputs/<split>-<fkey16>.npz (+ .dataset_eval.json, -<scorer>-<cfg8>.npy)
      outputs/head.npz outputs/model_scorers.json
      posthoc/<eval_id>/{rows.parquet, scores/<split>.parquet, risk_coverage/<split>.parquet,
                         eval.json, notes.json, DONE}
      DONE | FAILED | LOCK
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import stat
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from harness.keys import content_hash
from harness.store import atomic_write_json, now_iso

DONE = "DONE"
FAILED = "FAILED"
LOCK = "LOCK"
RUNS = "runs"
POSTHOC = "posthoc"  # the stage folders of a run (harness/listing.py walks them)
FAILED_WHY = "failed (see its FAILED file)"  # listing.finished_stages' reason for a failed run


def runs_root(results_dir: str | Path) -> Path:
    return Path(results_dir) / RUNS


class PosthocDir:
    """One post-hoc stage of a run: posthoc/<eval_id>/."""

    def __init__(self, run_path: Path, eval_id: str) -> None:
        self.path = run_path / "posthoc" / eval_id
        self.eval_id = eval_id

    rows = property(lambda self: self.path / "rows.parquet")
    done = property(lambda self: self.path / DONE)
    notes = property(lambda self: self.path / "notes.json")
    eval_json = property(lambda self: self.path / "eval.json")
    scores_dir = property(lambda self: self.path / "scores")

    def scores(self, split: str) -> Path:
        return self.scores_dir / f"{split}.parquet"

    def risk_coverage(self, split: str) -> Path:
        return self.path / "risk_coverage" / f"{split}.parquet"

    def is_complete(self) -> bool:
        return self.done.is_file()


class RunDir:
    """The directory of one run: results_dir/runs/<run_id>/."""

    def __init__(self, results_dir: str | Path, run_id: str) -> None:
        if not run_id or any(c not in "0123456789abcdef" for c in run_id):
            raise ValueError(f"run id must be a hex content hash, got {run_id!r}")
        self.root = runs_root(results_dir)
        self.path = self.root / run_id
        self.run_id = run_id

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        """An existing run directory given by its path (its folder name is not checked)."""
        rd = cls.__new__(cls)
        rd.path = Path(path)
        rd.root, rd.run_id = rd.path.parent, rd.path.name
        return rd

    @property
    def results_dir(self) -> Path:
        return self.root.parent

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # files written once per run
    config_yaml = property(lambda self: self.path / "config.yaml")
    key_json = property(lambda self: self.path / "key.json")
    log = property(lambda self: self.path / "run.log")
    transform_json = property(lambda self: self.path / "transform.json")
    benchmark_json = property(lambda self: self.path / "benchmark.json")
    run_info_json = property(lambda self: self.path / "run_info.json")
    tta_json = property(lambda self: self.path / "tta.json")
    probe_json = property(lambda self: self.path / "probe.json")
    epochs = property(lambda self: self.path / "epochs.parquet")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.checkpoints / "last.pt")
    best_checkpoint = property(lambda self: self.checkpoints / "best.pt")
    outputs_dir = property(lambda self: self.path / "outputs")
    head = property(lambda self: self.outputs_dir / "head.npz")
    model_scorer_timings = property(lambda self: self.outputs_dir / "model_scorers.json")

    def meta(self, split: str) -> Path:
        return self.path / "meta" / f"{split}.parquet"

    def output_path(self, split: str, forward_key: str) -> Path:
        """The Outputs cache of one split, named by its forward key."""
        return self.outputs_dir / f"{split}-{forward_key[:16]}.npz"

    def model_score_path(
        self, split: str, forward_key: str, name: str, scorer_cfg: dict[str, Any]
    ) -> Path:
        """Where a scorer that needs the model (e.g. ODIN) caches its scores of one split."""
        return (
            self.outputs_dir
            / f"{split}-{forward_key[:16]}-{name}-{content_hash(scorer_cfg)[:8]}.npy"
        )

    def posthoc(self, eval_id: str) -> PosthocDir:
        return PosthocDir(self.path, eval_id)

    def posthoc_ids(self) -> list[str]:
        """The eval_ids of the finished post-hoc stages, sorted."""
        return sorted(p.parent.name for p in (self.path / "posthoc").glob(f"*/{DONE}"))

    # reading what a run wrote
    def read_key(self) -> dict[str, Any]:
        """key.json: {run_id, setting_id, payload}."""
        return json.loads(self.key_json.read_text())

    def read_done(self) -> dict[str, Any]:
        return json.loads(self.done.read_text())

    def read_benchmark(self) -> dict[str, Any]:
        return json.loads(self.benchmark_json.read_text())

    def read_run_info(self) -> dict[str, Any]:
        return json.loads(self.run_info_json.read_text())

    def own_eval_id(self) -> str | None:
        """The eval_id of the post-hoc stage the run finished with (named by its DONE)."""
        return self.read_done().get("eval_id") if self.is_complete() else None

    def split_output(self, role: str) -> Path:
        """The Outputs cache of the (first) split of a role, e.g. a stage run's training split."""
        splits = self.read_benchmark()["splits"]
        name = next(s for s, v in splits.items() if v["role"] == role)
        return self.output_path(name, splits[name]["forward_key"])

    # markers
    @property
    def done(self) -> Path:
        return self.path / DONE

    def is_complete(self) -> bool:
        return self.done.is_file()

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files (harness.store's `.<name>.*.tmp`) that a killed attempt
        left: SIGTERM/SIGKILL skip the writer's own cleanup. Call only while holding the
        run's lock, when no writer of this run can be alive. Returns what was removed."""
        removed = []
        for tmp in self.path.rglob(".*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed

    def mark_complete(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.done, {"completed_at": now_iso(), **summary})
        self.failed.unlink(missing_ok=True)

    @property
    def failed(self) -> Path:
        return self.path / FAILED

    def is_failed(self) -> bool:
        return self.failed.is_file() and not self.is_complete()

    def mark_failed(self, exc: BaseException) -> None:
        atomic_write_json(
            self.failed,
            {
                "failed_at": now_iso(),
                "host": platform.node(),
                "pid": os.getpid(),
                "reason": f"{type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)),
            },
        )

    def status(self, stale_after: float = 180.0) -> str:
        """finished | running | failed | incomplete (as seen from the files)."""
        if self.is_complete():
            return "finished"
        if RunLock(self, stale_after).holder() is not None:
            return "running"
        if self.is_failed():
            return "failed"
        return "incomplete"


def dataset_eval_path(outputs_path: str | Path) -> Path:
    """Where the dataset's own evaluation of a split's cached predictions is stored."""
    path = Path(outputs_path)
    return path.with_name(f"{path.stem}.dataset_eval.json")


def run_dirs(results_dir: str | Path) -> list[RunDir]:
    """Every folder under runs/, sorted by name (symbolic links refused: _subdirs)."""
    return [
        RunDir.at(runs_root(results_dir) / name) for name in _subdirs(str(runs_root(results_dir)))
    ]


def named_run_dirs(results_dir: str | Path) -> list[RunDir]:
    """run_dirs, less the folders whose name is not a run id (stray or hand-made folders)."""
    found = []
    for name in _subdirs(str(runs_root(results_dir))):
        try:
            found.append(RunDir(results_dir, name))
        except ValueError:
            continue  # not a run directory
    return found


SYMLINK_REFUSED = (
    "a symbolic link: refused (run and stage folders must be real; docs/reliability.md)"
)


def _subdirs(path: str, links: list[str] | None = None) -> list[str]:
    """The real folders in `path`, sorted. Symbolic links are never followed, in every
    command (collection, status, prune, evaluate, merge): a link could make one run count
    twice, or let prune and merge act on another root's files. They are warned about, or
    appended to `links` for the caller to report."""
    try:
        with os.scandir(path) as entries:
            found = list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []
    real = sorted(e.name for e in found if e.is_dir(follow_symlinks=False))
    linked = sorted(e.name for e in found if e.is_symlink() and e.is_dir())
    if links is not None:
        links.extend(os.path.join(path, n) for n in linked)
    else:
        for name in linked:
            warnings.warn(f"skipping {os.path.join(path, name)}: {SYMLINK_REFUSED}", stacklevel=3)
    return real


def check_not_linked(path: str | Path) -> None:
    """A run directory must be a real folder: a symbolic link is refused, never written
    through (harness.run, harness.evaluate run=<dir>)."""
    if Path(path).is_symlink():
        raise ValueError(f"{path} is {SYMLINK_REFUSED}")


def stage_stat_identity(stage_path: str, dir_fd: int | None = None) -> tuple[int, int]:
    """A finished stage's identity from two stats, no read: (the later st_mtime_ns, the
    sizes) of its DONE and its rows.parquet, so that rows.parquet damaged or rewritten after
    the stage was stored is read again (and warned about) rather than served from the store's
    older copy. A missing rows.parquet counts as size 0, which no stored copy has.
    FileNotFoundError: no DONE. dir_fd: stage_path is relative to that open folder."""
    done = os.stat(f"{stage_path}/{DONE}", dir_fd=dir_fd)
    try:
        rows = os.stat(f"{stage_path}/rows.parquet", dir_fd=dir_fd)
        rows_time, rows_size = rows.st_mtime_ns, rows.st_size
    except FileNotFoundError:
        rows_time, rows_size = 0, 0
    # DONE is a small JSON file (< 10**6 bytes): the two sizes stay apart in one integer
    return max(done.st_mtime_ns, rows_time), rows_size * 10**6 + done.st_size


def stage_rows_path(stage: Path) -> Path:
    """rows.parquet of a stage folder listed by listing.finished_stages."""
    return stage / "rows.parquet"


def merge_staging(results_dir: str | Path, token: str) -> Path:
    """Where `python -m harness.merge` assembles what it copies into a results root before
    renaming it into runs/: beside runs/, never inside it, so no reader lists a half copy."""
    return Path(results_dir) / f".merge.{token}"


def stage_done_path(stage: Path) -> Path:
    """DONE of a stage folder listed by listing.finished_stages."""
    return stage / DONE


def scores_path(results_dir: str | Path, run_id: str, eval_id: str, split: str) -> Path:
    """Per-example scores of one split of a run's post-hoc stage."""
    return RunDir.at(runs_root(results_dir) / run_id).posthoc(eval_id).scores(split)


def stages_with_scores(results_dir: str | Path, stages: list[tuple[str, str]]) -> list[bool]:
    """Whether each stage (run_id, eval_id) kept per-example scores: one stat relative to the
    open runs/ folder (a third less than os.path.isdir of joined paths: 0.2 s at 100,000)."""
    out = [False] * len(stages)
    try:
        fd = os.open(runs_root(results_dir), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return out
    try:
        for i, (run_id, eval_id) in enumerate(stages):
            with contextlib.suppress(OSError, ValueError):
                mode = os.stat(f"{run_id}/{POSTHOC}/{eval_id}/scores", dir_fd=fd).st_mode
                out[i] = stat.S_ISDIR(mode)
    finally:
        os.close(fd)
    return out


class LockHeld(RuntimeError):
    """Another live process holds the run."""


class RunLock:
    """Claims a run directory: LOCK holds host, pid and start time; its mtime is the
    heartbeat, refreshed by a background thread. A lock whose heartbeat is older than
    `stale_after` seconds, or whose process is gone (same host), is stale and is taken over,
    so a dead process on any host cannot hold a run forever. Creation is O_EXCL, and a stale
    lock is first renamed away (only one taker can win that rename)."""

    def __init__(self, rd: RunDir, stale_after: float = 180.0, heartbeat: float = 30.0) -> None:
        self.rd, self.stale_after, self.heartbeat = rd, stale_after, heartbeat
        self.path = rd.path / LOCK
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.token = ""

    def holder(self) -> dict[str, Any] | None:
        """The live holder's record, or None when unlocked or stale."""
        try:
            return self._live_holder(self.path.stat())
        except FileNotFoundError:
            return None

    def _live_holder(self, st: os.stat_result) -> dict[str, Any] | None:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # being written right now: held, unless long silent
            info = {"host": "?", "pid": -1, "started": "?"}
        if info.get("host") == platform.node():  # same host: the pid decides, not the clock
            return info if _pid_alive(int(info.get("pid", -1))) else None
        if time.time() - st.st_mtime > self.stale_after:
            return None
        return info

    def owned(self) -> bool:
        """Whether LOCK still holds this object's token (another process may have taken
        over after our heartbeat stalled)."""
        try:
            return json.loads(self.path.read_text()).get("token") == self.token
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def acquire(self) -> None:
        self.rd.path.mkdir(parents=True, exist_ok=True)
        self.token = f"{platform.node()}:{os.getpid()}:{time.time_ns()}:{id(self)}"
        record = json.dumps(
            {"host": platform.node(), "pid": os.getpid(), "started": now_iso(), "token": self.token}
        )
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
            return
        raise LockHeld(f"run {self.rd.run_id}: its lock is contended")

    def _take_over_if_stale(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        holder = self._live_holder(st)
        if holder is not None:
            raise LockHeld(
                f"run {self.rd.run_id} is held by pid {holder.get('pid')} on "
                f"{holder.get('host')} since {holder.get('started')}"
            )
        stale = self.path.with_name(f"{LOCK}.stale.{os.getpid()}.{time.time_ns()}")
        try:
            os.rename(self.path, stale)  # of several takers, one moves the stale lock
        except FileNotFoundError:
            return
        if stale.stat().st_ino != st.st_ino:  # we moved a fresh lock another taker just made
            try:
                os.link(stale, self.path)
            except FileExistsError:
                pass
            stale.unlink(missing_ok=True)
            raise LockHeld(f"run {self.rd.run_id} was just claimed by another process")
        stale.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not self.owned():
                    warnings.warn(
                        f"run {self.rd.run_id}: lost its lock to another process", stacklevel=1
                    )
                    return
                os.utime(self.path)
            except OSError as exc:  # e.g. a network file system hiccup: try again next beat
                warnings.warn(f"run {self.rd.run_id}: heartbeat failed ({exc})", stacklevel=1)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.owned():  # never remove a lock another process took over
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
