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

from harness.digests import sha256_file
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
    return sha256_file(p)


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
        stage_features: bool = False,
    ) -> str:
        # features_dtype and the per-stage features (harness/stages.py) enter only when not
        # at their defaults: existing caches keep their keys
        storage = {} if features_dtype == "float32" else {"features_dtype": features_dtype}
        if stage_features:
            storage["stage_features"] = "feature_info_mean"
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
    """payload must hold 'seed'; the setting is everything else but the parents' run_ids: a
    derived run's parents are its own config at its seed (a probe's backbone, an ensemble's
    members), so their run_ids differ by seed alone and must not split the setting."""
    full = {"results_version": RESULTS_VERSION, **payload}
    setting = {k: v for k, v in full.items() if k not in ("seed", "parents")}
    return RunKeys(
        run_id=content_hash(full)[:20], setting_id=content_hash(setting)[:20], payload=full
    )


# Eval config entries whose absence means a built-in default (docs/results.md, "eval_id").
# `ece_adaptive_bins` / `conformal` null = no rows, the same stage as leaving them out.
EVAL_BUILTIN_DEFAULTS: dict[str, Any] = {
    "estimators": DEFAULT_ESTIMATORS,
    "ece_adaptive_bins": None,
    "conformal": None,
    "subpop_metrics": False,  # harness/subpop_rows.py: off = no rows
}


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


# ---------------------------------------------------------------- the run key's contents

# Trainer options that do not change the numbers (kept out of the key).
NON_SEMANTIC_TRAINER_KEYS = ("num_workers", "progress")
# Trainer options added after runs existed, with their defaults: in the key only when set.
TRAINER_KEY_DEFAULTS: dict[str, Any] = {
    "group_sampler": None,
    "domain_sampler": False,
    "precision": "fp32",
    "accumulate_steps": 1,
    "channels_last": False,
    "unlabeled_split": None,
}
# Options of how outputs are made that change the numbers, with their defaults: in the run
# key only when not at the default, so that the keys of existing runs stay as they were.
OUTPUT_KEY_DEFAULTS = {"precision": "fp32", "features_dtype": "float32"}


def checkpoint_digest(path: str | None) -> str | None:
    """A checkpoint path enters a key as the sha256 of the file it points to."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.checkpoint={path}: no such file")
    return file_digest(path)


# The entries of a model config every family shares; a plugin family's other entries
# (open_clip: weights, prompts, class_names, config) enter the key beside its _target_.
TIMM_MODEL_ENTRIES = (
    "name",
    "pretrained",
    "kwargs",
    "checkpoint",
    "transform",
    "label_map",
    "stem",
    "freeze_bn",
)


def plugin_model_entries(m: dict[str, Any]) -> dict[str, Any]:
    """A plugin model's own entries (none for a timm model, whose keys stay as they were);
    `weights` naming a local file (a path, or a name with a weights suffix) enters as the
    file's sha256."""
    if not m.get("_target_"):
        return {}
    out = {k: v for k, v in m.items() if k not in TIMM_MODEL_ENTRIES}
    weights = out.get("weights")
    if isinstance(weights, str) and is_weights_path(weights):
        if not Path(weights).is_file():
            raise FileNotFoundError(f"model.weights={weights}: no such file")
        out["weights"] = {"sha256": file_digest(weights)}
    from harness import registry

    family = registry.resolve_target("model", m)
    if hasattr(family, "key_entries"):  # e.g. RobustBench: its checkpoint's sha256, not a folder
        out = family.key_entries(m, out)
    return out


def is_weights_path(weights: str) -> bool:
    """A local weights file rather than a named tag (open_clip's laion2b_s34b_b79k...)."""
    return "/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))


def key_payload(cfg: dict[str, Any], adapter: Any) -> dict[str, Any]:
    """What determines a trained (or evaluation-only) run's numbers: paths are replaced by
    content hashes."""
    m = cfg["model"]
    training = cfg["trainer"]["epochs"] > 0
    model = {
        "name": m["name"],
        "pretrained": bool(m.get("pretrained")),
        "kwargs": m.get("kwargs") or {},
        "checkpoint_sha256": checkpoint_digest(m.get("checkpoint")),
        "transform": m.get("transform", "auto"),
        "label_map": m.get("label_map"),
        **plugin_model_entries(m),
        # options added later: in the key only when set, so existing keys stay as they were
        **({"stem": m["stem"]} if m.get("stem") is not None else {}),
        **({"freeze_bn": True} if m.get("freeze_bn") else {}),
    }
    trainer = {
        k: v
        for k, v in cfg["trainer"].items()
        if k not in NON_SEMANTIC_TRAINER_KEYS
        # options added later: at their default they leave the keys of existing runs unchanged
        and not (k in TRAINER_KEY_DEFAULTS and v == TRAINER_KEY_DEFAULTS[k])
    }
    outputs = {k: v for k, v in output_settings(cfg).items() if v != OUTPUT_KEY_DEFAULTS[k]}
    # augment=none (the default) adds nothing: the keys of existing runs stay as they were
    augment = augment_key(cfg.get("augment")) if training else None
    return {
        **({"outputs": outputs} if outputs else {}),
        **({"augment": augment} if augment is not None else {}),
        "dataset": {**adapter.key_config(), "fingerprint": adapter.fingerprint()},
        "model": model,
        # An evaluation-only run uses no method and no trainer: they must not split its key.
        # The search space is not a setting: the values drawn from it are.
        "method": {k: v for k, v in cfg["method"].items() if k != "search_space"}
        if training
        else None,
        "trainer": trainer if training else {"epochs": 0},
        "selection_rule": cfg["selection_rule"] if training else None,
        "seed": cfg["seed"],
    }


def augment_key(a: dict[str, Any] | None) -> dict[str, Any] | None:
    """The training augmentation (conf/augment/) as it enters the run key: None for `none`."""
    if (a or {}).get("name", "none") == "none":
        return None
    return dict(a)  # type: ignore[arg-type]


def output_settings(c: dict[str, Any]) -> dict[str, str]:
    return {
        "precision": c.get("precision", "fp32"),
        "features_dtype": (c.get("forward") or {}).get("features_dtype", "float32"),
    }


def tta_config(c: dict[str, Any]) -> dict[str, Any] | None:
    """The selected TTA plugin's config as it enters keys; None for tta=none."""
    t = c.get("tta") or {}
    if t.get("name", "none") == "none":
        return None
    return {k: v for k, v in t.items() if k != "search_space"}


def ensemble_config(c: dict[str, Any]) -> dict[str, Any] | None:
    """The ensemble config as it enters keys (seeds sorted); None for ensemble=none."""
    e = c.get("ensemble") or {}
    if e.get("name", "none") == "none":
        return None
    return {**e, "seeds": sorted(e["seeds"])}


def probe_config(c: dict[str, Any]) -> dict[str, Any] | None:
    """The selected probe's config as it enters keys; None for probe=none (or no probe group)."""
    p = c.get("probe") or {}
    if p.get("name", "none") == "none":
        return None
    return dict(p)


def run_payload(
    c: dict[str, Any], adapter: Any, parents: dict[str, str] | None = None
) -> dict[str, Any]:
    """The key payload: the trained run's (key_payload), plus the TTA config when a TTA
    plugin is selected, so that a TTA run has its own run_id and setting_id while the run it
    adapts keeps its key (tta=none adds nothing); plus, for a derived run, the run_ids of the
    parent runs that are declared part of its key ({name: run_id})."""
    payload = key_payload(c, adapter)
    t = tta_config(c)
    if t is not None:
        payload["tta"] = t
    p = probe_config(c)
    if p is not None:
        payload["probe"] = p
    e = ensemble_config(c)
    if e is not None:  # its members' seeds are the ensemble's; the run's own seed is unused
        payload["ensemble"] = e
        payload["seed"] = None
    if parents:
        payload["parents"] = dict(sorted(parents.items()))
    return payload
