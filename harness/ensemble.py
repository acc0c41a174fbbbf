"""Deep ensembles from the cache: a derived run whose members are this run's config at
each seed of `ensemble.seeds` (found finished or run first; their run_ids are in the key).

    python -m harness.run ensemble=seeds ensemble.seeds=[0,1,2]

No forward pass: per split, the ensemble's logits are log(mean of the members' softmax), so
its softmax is the members' average prediction (Lakshminarayanan et al. 2017); its features
are the members' concatenated, and it stores no head (concatenated features have no single
linear head): head-based scorers are skipped with a note, feature scorers see the
concatenation. Everything after is the post-hoc stage of any run. The method column reads
`<method>[ens×K]`.

An ensemble is one model per setting (one value, no seeds): the leaderboard shows it as an
entry of its own, with a single-run interval (a bootstrap over examples for accuracy); its
rows carry its first member's seed, so a method comparison pairs it with that one model
(model-level, docs/methods.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from harness.forward import record_dataset_eval
from harness.keys import RunKeys, output_settings
from harness.outputs import Outputs
from harness.runcache import load_run_cache
from harness.rundir import RunDir
from harness.store import atomic_write_json, atomic_write_parquet, atomic_write_text

log = logging.getLogger("harness.ensemble")


def ensemble_label(method: str, size: int) -> str:
    return f"{method}[ens×{size}]"


def average_logits(logits: list[np.ndarray]) -> np.ndarray:
    """log of the mean of the members' softmax (the ensemble's predictive distribution)."""
    logp = [
        z.astype(np.float64) - logsumexp(z.astype(np.float64), axis=1, keepdims=True)
        for z in logits
    ]
    return logsumexp(np.stack(logp), axis=0) - np.log(len(logits))


def execute_ensemble(
    c: dict[str, Any], adapter: Any, keys: RunKeys, rd: RunDir, parents: dict[str, RunDir]
) -> dict[str, Any]:
    """Average the members' cached outputs into this run's forward stage."""
    members = [parents[name] for name in sorted(parents)]
    caches = [load_run_cache(m.path) for m in members]
    first = caches[0]
    for cache in caches[1:]:
        if cache.bench["splits"].keys() != first.bench["splits"].keys():
            raise ValueError(
                f"ensemble: members {members[0].run_id} and {cache.rd.run_id} have different splits"
            )
    bench = adapter.load(Path(c["cache_dir"])).limited(c["dataset"].get("limit"))
    dtype = output_settings(c)["features_dtype"]
    transform = first.rd.transform_json.read_text()
    bench_json = dict(first.bench, splits={})
    for split, spec in first.bench["splits"].items():
        outs = [cache.outputs[split] for cache in caches]
        for cache, out in zip(caches[1:], outs[1:], strict=True):
            if not (
                np.array_equal(out.index, outs[0].index)
                and np.array_equal(out.labels, outs[0].labels)
            ):
                raise ValueError(
                    f"ensemble: split {split} of member {cache.rd.run_id} holds other examples "
                    f"than member {members[0].run_id}'s"
                )
        fkey = keys.forward_key(
            split,
            {"ensemble": [m.run_id for m in members]},
            None,
            c["precision"],
            features_dtype=dtype,
        )
        logits = average_logits([o.logits for o in outs]).astype(np.float32)
        features = np.concatenate([o.features for o in outs], axis=1)
        path = rd.output_path(split, fkey)
        member_logits = np.stack([o.logits for o in outs]).astype(np.float32)  # member scorers
        Outputs(logits, features, outs[0].labels, outs[0].index, member_logits).save(path, dtype)
        record_dataset_eval(bench, bench.splits[split], path)
        atomic_write_parquet(pd.read_parquet(members[0].meta(split)), rd.meta(split))
        bench_json["splits"][split] = {**spec, "forward_key": fkey}
    atomic_write_json(
        rd.head.with_suffix(".json"),
        {"note": f"an ensemble of {len(members)} models: no single linear head"},
    )
    atomic_write_json(rd.benchmark_json, bench_json)
    atomic_write_text(rd.transform_json, transform)
    info = members[0].read_run_info()
    atomic_write_json(
        rd.run_info_json,
        {
            **info,
            "run_id": keys.run_id,
            "setting_id": keys.setting_id,
            "method": ensemble_label(info["method"], len(members)),
        },  # the members' run_ids are in key.json (parents); run_info holds row columns only
    )
    log.info("ensemble of %s -> %s", [m.run_id for m in members], rd.path)
    return {"ensemble_members": [m.run_id for m in members], "device": "cpu"}
