"""Linear probes: a derived run whose head is fitted on another run's cached features.

    python -m harness.run model=open_clip trainer.epochs=0 probe=logistic

The backbone run is this run's config with probe=none, found finished or run first
(harness/derived.py; its run_id is in this run's key, beside the probe config). The probe
plugin (conf/probe/, e.g. methods/probes/logistic.py: `fit(train, val, num_classes,
base_head) -> (Head, info)`; a plugin with `needs_groups = True`, like DFR, also gets
`val_groups`, the val split's group ids) fits on the backbone's ID train features, chooses its
hyperparameters on ID val, and the run's Outputs are the backbone's features with the probe's
logits: no forward pass. Everything after (head check, scorers, metrics) is the post-hoc stage
of any run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import registry
from harness.forward import record_dataset_eval
from harness.keys import RunKeys, output_settings, probe_config
from harness.outputs import Outputs
from harness.runcache import load_run_cache
from harness.rundir import RunDir
from harness.store import atomic_save_npz, atomic_write_json, atomic_write_parquet

log = logging.getLogger("harness.probe")


def probe_label(method: str, probe: dict[str, Any]) -> str:
    """The method column of a probe run: the backbone's method and the probe."""
    name = probe["name"] if probe.get("wise_alpha") is None else f"wise_ft_linear_{probe['name']}"
    return name if method == "none" else f"{method}+{name}"


def execute_probe(
    c: dict[str, Any], adapter: Any, keys: RunKeys, rd: RunDir, parents: dict[str, RunDir]
) -> dict[str, Any]:
    """Fit the probe on the backbone run's cache and write this run's forward stage."""
    backbone = parents["backbone"]
    p = probe_config(c)
    cache = load_run_cache(backbone.path)
    trains, vals = cache.splits("train"), cache.splits("val")
    if not trains:
        raise ValueError(f"probe={p['name']}: backbone run {backbone.run_id} has no train split")
    if cache.outputs[trains[0]].features.shape[1] == 0:  # model=module with logits only
        raise ValueError(
            f"probe={p['name']}: backbone run {backbone.run_id} cached no features (a "
            "logits-only model, model.head=null); a probe fits on features"
        )
    plugin = registry.build("probe", {k: v for k, v in p.items() if k != "name"})
    bench = adapter.load(Path(c["cache_dir"])).limited(c["dataset"].get("limit"))
    extra = {}
    if getattr(plugin, "needs_groups", False) and vals:  # e.g. DFR: group ids of val examples
        val_out = cache.outputs[vals[0]]
        extra["val_groups"] = bench.group_ids(bench.splits[vals[0]])[val_out.index]
    head, info = plugin.fit(
        cache.outputs[trains[0]],
        cache.outputs[vals[0]] if vals else None,
        len(cache.bench["classes"]),
        cache.head,
        **extra,
    )
    log.info("probe %s on run %s: %s", p["name"], backbone.run_id, info)
    transform = json.loads(backbone.transform_json.read_text())
    bench_json = dict(cache.bench, splits={})
    weight, bias = head.weight.astype(np.float32), head.bias.astype(np.float32)
    dtype = output_settings(c)["features_dtype"]
    for split, spec in cache.bench["splits"].items():
        fkey = keys.forward_key(split, transform, None, c["precision"], features_dtype=dtype)
        out = cache.outputs[split]
        logits = (out.features.astype(np.float64) @ weight.T + bias).astype(np.float32)
        path = rd.output_path(split, fkey)
        Outputs(logits, out.features, out.labels, out.index).save(path, dtype)
        record_dataset_eval(bench, bench.splits[split], path)
        atomic_write_parquet(pd.read_parquet(backbone.meta(split)), rd.meta(split))
        bench_json["splits"][split] = {**spec, "forward_key": fkey}
    atomic_save_npz(rd.head, weight=weight, bias=bias)
    atomic_write_json(rd.transform_json, transform)
    atomic_write_json(rd.benchmark_json, bench_json)
    atomic_write_json(rd.probe_json, {"backbone_run_id": backbone.run_id, "probe": p, **info})
    run_info = backbone.read_run_info()
    atomic_write_json(
        rd.run_info_json,
        {
            **run_info,
            "run_id": keys.run_id,
            "setting_id": keys.setting_id,
            "method": probe_label(run_info["method"], p),
        },
    )
    return {"backbone_run_id": backbone.run_id, "device": "cpu"}
