"""What a finished run keeps of its checkpoints (`checkpoints: best|last|all|none`).

While a run can still resume (it is not DONE), `checkpoints/last.pt` holds the weights, the
optimiser, the scheduler and the epoch: for a ResNet-18 with AdamW that is three times the
weights, and nothing reads it once the run is DONE. When the run is DONE, the policy decides:

    best   (default) keep best.pt (the weights of the epoch `selection_rule` chose: what
           evaluation, TTA and `model.checkpoint=` read); delete last.pt
    last   keep last.pt (weights + optimiser state of the final epoch); delete best.pt
    all    keep both
    none   keep neither (a later TTA run on it refuses: it needs best.pt)

The policy does not change any number, so it is not in the run key. `python -m harness.prune`
applies a policy to the finished runs of an existing results root (harness/prune.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.rundir import RunDir

POLICIES = ("best", "last", "all", "none")


def check_policy(policy: object, key: str = "checkpoints") -> str:
    if policy not in POLICIES:
        raise ValueError(f"{key} must be one of {list(POLICIES)}, got {policy!r}")
    return str(policy)


def doomed(rd: RunDir, policy: str) -> list[Path]:
    """The checkpoint files of a run that `policy` does not keep (existing files only)."""
    check_policy(policy)
    keep = {
        "best": (rd.best_checkpoint,),
        "last": (rd.last_checkpoint,),
        "all": (rd.best_checkpoint, rd.last_checkpoint),
        "none": (),
    }[policy]
    return [p for p in (rd.best_checkpoint, rd.last_checkpoint) if p not in keep and p.is_file()]


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def apply_policy(rd: RunDir, policy: str) -> int:
    """Delete what `policy` does not keep of a DONE run's checkpoints; returns the bytes
    freed. Refuses a run that is not DONE: its last.pt is what lets it resume. The caller
    holds the run's lock (harness.run at finish; harness.prune takes it)."""
    if not rd.is_complete():
        raise RuntimeError(
            f"run {rd.run_id} ({rd.path}) is not finished (no DONE): its checkpoints are kept "
            "so that it can resume"
        )
    freed = 0
    for path in doomed(rd, policy):
        freed += file_size(path)
        path.unlink(missing_ok=True)
    if rd.checkpoints.is_dir() and not any(rd.checkpoints.iterdir()):
        rd.checkpoints.rmdir()
    return freed


def require_best(rd: RunDir, who: str) -> Path:
    """best.pt of a finished trained run, or a clear refusal naming the run and the policy
    that removed it (read from its config.yaml when it is there)."""
    path = rd.best_checkpoint
    if path.is_file():
        return path
    policy = _recorded_policy(rd)
    raise FileNotFoundError(
        f"{who}: run {rd.run_id} ({rd.path}) kept no checkpoints/best.pt"
        + (f" (it finished with checkpoints={policy})" if policy else "")
        + "; it is needed to adapt or evaluate those weights. Delete that run directory and "
        "rerun it with checkpoints=best (or all), then run this again"
    )


def _recorded_policy(rd: RunDir) -> str | None:
    import yaml

    try:
        cfg = yaml.safe_load(rd.config_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return cfg.get("checkpoints") if isinstance(cfg, dict) else None
