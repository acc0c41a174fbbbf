"""The cache type every stage shares: Outputs (one forward pass over a split) and Head (the
linear classifier that maps cached features to cached logits). A leaf: it imports nothing of
the engine but the atomic writer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.store import atomic_save_npz

FEATURE_DTYPES = ("float32", "float16")


@dataclass
class Outputs:
    """What one forward pass over a split produced: everything post-hoc work needs."""

    logits: np.ndarray  # N × C (benchmark classes, after any label map), float32
    features: np.ndarray  # N × D penultimate features, float32
    labels: np.ndarray  # N, int64 (-1 where unknown)
    index: np.ndarray  # N, row of the split's metadata
    # K × N × C: each member's logits, kept by ensembles (harness/ensemble.py) for the
    # scorers that need them (needs = ("members",)); None for a single model
    members: np.ndarray | None = None
    # per-stage pooled features (one N × D_l array per stage of the model, harness/stages.py),
    # kept only when a scorer of the eval config asks (needs "stage_features"); else None
    stages: list[np.ndarray] | None = None

    def save(self, path: str | Path, features_dtype: str = "float32") -> None:
        """features_dtype=float16 halves the cache of wide features (logits stay float32)."""
        if features_dtype not in FEATURE_DTYPES:
            raise ValueError(
                f"features dtype must be one of {FEATURE_DTYPES}, got {features_dtype!r}"
            )
        atomic_save_npz(
            path,
            logits=self.logits,
            features=self.features.astype(features_dtype, copy=False),
            labels=self.labels,
            index=self.index,
            **({} if self.members is None else {"members": self.members}),
            **{
                f"stage_{i}": f.astype(features_dtype, copy=False)
                for i, f in enumerate(self.stages or [])
            },
        )

    @classmethod
    def load(cls, path: str | Path, rows: int | None = None) -> Outputs:
        """Features come back as float32 whatever they were stored as. With `rows` (what the
        run recorded for the split), a file of another size is refused, naming it: a
        truncated or foreign cache would otherwise give numbers over the wrong examples."""
        with np.load(path) as z:
            features = z["features"]
            members = z["members"] if "members" in z.files else None
            count = sum(name.startswith("stage_") for name in z.files)
            stages = [z[f"stage_{i}"].astype(np.float32, copy=False) for i in range(count)]
            out = cls(
                z["logits"],
                features.astype(np.float32, copy=False),
                z["labels"],
                z["index"],
                members,
                stages or None,
            )
        if rows is not None and len(out.labels) != rows:
            raise ValueError(
                f"{path}: {len(out.labels)} examples, but benchmark.json records {rows}; "
                "delete the file and rerun the run to recompute it"
            )
        return out


@dataclass
class Head:
    """The linear classifier that maps cached features to cached logits: logits = f W^T + b."""

    weight: np.ndarray  # C × D
    bias: np.ndarray  # C

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias
