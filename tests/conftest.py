"""Shared fixtures. No test downloads anything: HF_HUB_OFFLINE is set before timm loads."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OUTDATED_IGNORE", "1")
# The golden numbers (tests/test_pins.py) are bit-exact, and float kernels differ between
# instruction sets (an AVX-512 machine sums in another order than an AVX2 one). Pin every
# library that dispatches on the CPU to its AVX2 code path, before torch loads, so any x86-64
# machine with AVX2 reproduces them; subprocesses of the tests inherit the same settings.
for _name, _value in {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2",
}.items():
    os.environ.setdefault(_name, _value)

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# Generated mazes are shared by every test of the session (writes are atomic, so
# concurrent test processes can share it too).
CACHE = tempfile.mkdtemp(prefix="shiftbench-test-cache-")
# File digests of the data fixtures (harness.digests) go there too, never to ~/.cache;
# subprocesses of the tests inherit it.
os.environ.setdefault("SHIFTBENCH_DIGEST_CACHE", os.path.join(CACHE, "digests.sqlite"))

# A run small enough for a unit test: tiny maze splits, a tiny timm model, two steps; on
# the CPU even where a GPU is present (tests of worker counts and batch spies assume it).
TINY = [
    "device=cpu",
    f"cache_dir={CACHE}",
    "dataset.limit=24",
    "model.name=test_resnet",
    "trainer.epochs=1",
    "trainer.max_steps=2",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=16",
    "trainer.progress=false",
    "threads=1",
]
# eval=openood_full on a TINY run: a fit subset, neighbour counts and CCR rates it can hold
OPENOOD_FULL_TINY = [
    "eval=openood_full",
    "eval.fit_size=20",
    "eval.scorers.knn.k=5",
    "eval.scorers.nnguide.k=5",
    "eval.ccr_fprs=[0.1]",
]


@pytest.fixture(autouse=True)
def _pinned_threads():
    torch.set_num_threads(1)
    yield


def fork_warns_like_python_3_12(monkeypatch) -> None:
    """os.fork warning in the parent the way Python >= 3.12's does in a process with
    threads (this venv's Python may be older): for the deliberate forks that silence it."""
    real_fork = os.fork

    def fork_that_warns():
        message = f"This process (pid={os.getpid()}) is multi-threaded, use of fork() may lead"
        warnings.warn(f"{message} to deadlocks in the child.", DeprecationWarning, stacklevel=2)
        return real_fork()

    monkeypatch.setattr(os, "fork", fork_that_warns)


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_cli(
    args: list[str],
    cwd: Path,
    module: str = "harness.run",
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Runs `python -m <module> args` the way a user does, from `cwd`."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUTDATED_IGNORE": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
        )
    return proc


def run_rows(run_dir: Path):
    """The rows of a finished run's own post-hoc stage (the eval_id its DONE names)."""
    import json

    import pandas as pd

    eval_id = json.loads((Path(run_dir) / "DONE").read_text())["eval_id"]
    return pd.read_parquet(Path(run_dir) / "posthoc" / eval_id / "rows.parquet")
