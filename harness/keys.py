"""What makes a result the same result: content hashes, RESULTS_VERSION and every key.

    run_id      = hash(RESULTS_VERSION + what determines the run's numbers) (the train key)
    setting_id  = the same without the seed: seeds of one setting are aggregated
    forward key = run_id + split + resolved transform + TTA config + precision
    eval_id     = hash of the eval config (its name, and entries equal to their built-in
                  default, left out: eval_identity)
    posthoc_key = forward key + eval config (as eval_identity gives it)

A path is replaced by the hash of what it points to, never just dropped (docs/results.md).
A change here moves keys: tests/test_pins.py says which.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.estimator import DEFAULT_ESTIMATORS

# Bump whenever a change alters the numbers a run produces: old runs then stop matching.
RESULTS_VERSION = 3


def content_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of obj (sorted keys), hex."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes: a path in a key is replaced by what it points to."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"file not found: {p}")
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class RunKeys:
    """train key (= run_id), setting_id (train key without the seed), and the payload."""

    run_id: str
    setting_id: str
    payload: dict[str, Any]

    def forward_key(
        self,
        split: str,
        transform: dict[str, Any],
        tta: Any,
        precision: str,
        features_dtype: str = "float32",
    ) -> str:
        # features_dtype enters only when not float32: existing caches keep their keys
        storage = {} if features_dtype == "float32" else {"features_dtype": features_dtype}
        return content_hash(
            {
                "train": self.run_id,
                "split": split,
                "transform": transform,
                "tta": tta,
                "precision": precision,
                **storage,
            }
        )


def make_keys(payload: dict[str, Any]) -> RunKeys:
    """payload must hold 'seed'; the setting is everything else."""
    full = {"results_version": RESULTS_VERSION, **payload}
    setting = {k: v for k, v in full.items() if k != "seed"}
    return RunKeys(
        run_id=content_hash(full)[:20], setting_id=content_hash(setting)[:20], payload=full
    )


# Eval config entries whose absence means a built-in default (docs/results.md, "eval_id").
EVAL_BUILTIN_DEFAULTS: dict[str, Any] = {"estimators": DEFAULT_ESTIMATORS}


def eval_identity(eval_cfg: dict[str, Any]) -> dict[str, Any]:
    """The eval config as it enters keys: an entry equal to its built-in default is left out,
    so a config that spells the default out and one that omits it are the same stage, and
    eval=default keeps its eval_id when a default becomes configurable."""
    return {
        k: v
        for k, v in eval_cfg.items()
        if not (k in EVAL_BUILTIN_DEFAULTS and v == EVAL_BUILTIN_DEFAULTS[k])
    }


def eval_id(eval_cfg: dict[str, Any]) -> str:
    """The post-hoc stage's identity: eval_identity(eval_cfg) without its name."""
    return content_hash({k: v for k, v in eval_identity(eval_cfg).items() if k != "name"})[:16]


def posthoc_key(forward_key: str, config: dict[str, Any]) -> str:
    return content_hash({"forward": forward_key, "posthoc": config})[:20]
