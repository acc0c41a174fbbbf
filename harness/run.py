"""Hydra entry point: compose -> key -> (skip if done) -> train -> forward once per split
-> metrics -> tidy rows, written atomically, completion marker last.

    python -m harness.run dataset=maze model=resnet18 method=erm seed=3 trainer.epochs=2
    python -m harness.run -m seed=0,1,2
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from harness import registry
from harness.config import check_writable, validate, validate_plugins
from harness.data import LABELED_ROLES, Benchmark, WithOODSets, resolve_transform
from harness.forward import (
    ForwardOptions,
    SplitLoader,
    auto_num_workers,
    batches,
    forward_split,
    prepare_forward,
)
from harness.keys import RunKeys, make_keys
from harness.models import (
    checkpoint_digest,
    create_model,
    forward_outputs,
    label_index,
    map_logits,
    resolve_device,
    save_head,
)
from harness.outputs import Outputs
from harness.posthoc import evaluate_run
from harness.rundir import LockHeld, RunDir, RunLock, dataset_eval_path
from harness.search import apply_hparams_seed
from harness.store import (
    atomic_save_npy,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    provenance,
)
from harness.train import train

log = logging.getLogger("harness.run")

# Trainer options that do not change the numbers (kept out of the key).
NON_SEMANTIC_TRAINER_KEYS = ("num_workers", "progress")
# Options of how outputs are made that change the numbers, with their defaults: in the run
# key only when not at the default, so that the keys of existing runs stay as they were.
OUTPUT_KEY_DEFAULTS = {"precision": "fp32", "features_dtype": "float32"}


def key_payload(cfg: dict[str, Any], adapter: Any) -> dict[str, Any]:
    """What determines a run's numbers: paths are replaced by content hashes."""
    m = cfg["model"]
    training = cfg["trainer"]["epochs"] > 0
    model = {
        "name": m["name"],
        "pretrained": bool(m.get("pretrained")),
        "kwargs": m.get("kwargs") or {},
        "checkpoint_sha256": checkpoint_digest(m.get("checkpoint")),
        "transform": m.get("transform", "auto"),
        "label_map": m.get("label_map"),
    }
    trainer = {k: v for k, v in cfg["trainer"].items() if k not in NON_SEMANTIC_TRAINER_KEYS}
    if trainer.get("group_sampler") is None:  # an option added later: at its default it
        trainer.pop("group_sampler", None)  # must leave the keys of existing runs unchanged
    outputs = {k: v for k, v in output_settings(cfg).items() if v != OUTPUT_KEY_DEFAULTS[k]}
    return {
        **({"outputs": outputs} if outputs else {}),
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


def output_settings(c: dict[str, Any]) -> dict[str, str]:
    return {
        "precision": c.get("precision", "fp32"),
        "features_dtype": (c.get("forward") or {}).get("features_dtype", "float32"),
    }


def forward_options(c: dict[str, Any], device: torch.device) -> ForwardOptions:
    fwd = c.get("forward") or {}
    pin = fwd.get("pin_memory", "auto")
    return ForwardOptions(
        precision=c.get("precision", "fp32"),
        channels_last=bool(fwd.get("channels_last", False)),
        compile=fwd.get("compile", False),
        pin_memory=device.type == "cuda" if pin == "auto" else bool(pin),
    )


def build_dataset(c: dict[str, Any]) -> Any:
    """The dataset adapter, with the top-level `ood_sets` (paths, or {name, root} dicts, built
    with the `ood_folder` plugin) attached as extra OOD splits when there are any."""
    adapter = registry.build("dataset", c["dataset"])
    entries = c.get("ood_sets") or []
    if not entries:
        return adapter
    extras = []
    for entry in entries:
        spec = {"root": entry} if isinstance(entry, str) else dict(entry)
        if "root" not in spec:
            raise ValueError(f"ood_sets entry {entry!r}: a path or {{name, root}}")
        extras.append(registry.build("dataset", {**c["ood_folder"], **spec}))
    return WithOODSets(adapter, extras)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def transform_mode(cfg_model: dict[str, Any]) -> str:
    mode = cfg_model.get("transform", "auto")
    if mode == "auto":
        return "timm" if cfg_model.get("pretrained") else "benchmark"
    return mode


@contextmanager
def run_log(path: Path):
    """Mirror the harness's log records into the run directory while the run lasts."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    harness_log = logging.getLogger("harness")  # INFO reaches run.log even without Hydra
    level = harness_log.level
    if harness_log.getEffectiveLevel() > logging.INFO:
        harness_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        harness_log.setLevel(level)
        root.removeHandler(handler)
        handler.close()


def run(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """One run. Returns a summary: run_id, run_dir, skipped, and the headline metrics."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    validate(c)
    c = apply_hparams_seed(c)
    validate_plugins(c)
    check_writable(c["results_dir"])
    if c.get("threads"):
        torch.set_num_threads(int(c["threads"]))
    if c["trainer"].get("num_workers") == "auto":  # not in the key: any value gives the same
        c["trainer"]["num_workers"] = auto_num_workers(resolve_device(c.get("device", "auto")))
    adapter = build_dataset(c)
    adapter.check()
    keys = make_keys(run_payload(c, adapter))
    rd = RunDir(c["results_dir"], keys.run_id)
    summary = {"run_id": keys.run_id, "run_dir": str(rd.path), "skipped": True}
    if rd.is_complete():
        log.info("skip: run %s is already finished (%s)", keys.run_id, rd.path)
        # A new eval config on a finished run is computed from its cache, never by retraining.
        evaluate_run(rd.path, c["eval"])
        return {**summary, "status": "finished"}
    if rd.is_failed() and not c["retry_failed"]:
        log.info("skip: run %s failed before (see %s); retry_failed=false", keys.run_id, rd.failed)
        return {**summary, "status": "failed"}
    lock = RunLock(rd, stale_after=c["lock"]["stale_after"], heartbeat=c["lock"]["heartbeat"])
    try:
        lock.acquire()
    except LockHeld as held:
        log.info("skip: %s", held)
        return {**summary, "status": "running"}
    try:
        if rd.is_complete():  # finished by another process between the check and the lock
            log.info("skip: run %s was just finished by another process", keys.run_id)
            return {**summary, "status": "finished"}
        atomic_write_text(rd.config_yaml, OmegaConf.to_yaml(OmegaConf.create(c)))
        atomic_write_json(
            rd.key_json,
            {"run_id": keys.run_id, "setting_id": keys.setting_id, "payload": keys.payload},
        )
        with run_log(rd.log):
            try:
                execute = _execute_tta if tta_config(c) else _execute
                return {**execute(c, adapter, keys, rd, lock), "status": "finished"}
            except Exception as exc:
                rd.mark_failed(exc)
                log.error(
                    "run %s failed: %s: %s (recorded in %s)",
                    keys.run_id,
                    type(exc).__name__,
                    exc,
                    rd.failed,
                )
                raise
    finally:
        lock.release()


def _execute(
    c: dict[str, Any], adapter: Any, keys: RunKeys, rd: RunDir, lock: RunLock | None = None
) -> dict[str, Any]:
    started = time.time()
    log.info("run %s -> %s", keys.run_id, rd.path)
    bench: Benchmark = adapter.load(Path(c["cache_dir"])).limited(c["dataset"].get("limit"))
    seed_everything(c["seed"])
    training = c["trainer"]["epochs"] > 0
    model = create_model(c["model"], bench, train=training)
    transform, transform_desc = resolve_transform(transform_mode(c["model"]), model, bench)
    atomic_write_json(rd.transform_json, transform_desc)
    device = resolve_device(c.get("device", "auto"))

    selected_epoch, predict, index_map = -1, None, None
    if training:
        method = build_method(c, model, bench)
        method.use_stages(stage_outputs(c, method.stages()))
        result = train(
            method, bench, transform, c["trainer"], rd, c["seed"], device, c["selection_rule"]
        )
        selected_epoch, predict = result.selected_epoch, method.predict
    else:
        index_map = label_index(c["model"], bench, model)
    model.to(device)

    options = forward_options(c, device)
    features_dtype = output_settings(c)["features_dtype"]
    forward_keys = {
        s.name: keys.forward_key(
            s.name, transform_desc, None, c["precision"], features_dtype=features_dtype
        )
        for s in bench.splits.values()
    }
    paths = {name: rd.output_path(name, fkey) for name, fkey in forward_keys.items()}
    todo = [
        s.with_transform(transform) for s in bench.splits.values() if not paths[s.name].is_file()
    ]
    if todo:
        forward = prepare_forward(model, predict, options)
        loaders = SplitLoader(
            todo,
            c["trainer"]["eval_batch_size"],
            num_workers=c["trainer"]["num_workers"],
            pin_memory=options.pin_memory,
            persistent=(c.get("forward") or {}).get("persistent_workers", True),
        )
    for split in bench.splits.values():
        path = paths[split.name]
        if not path.is_file():  # else written by an interrupted attempt of this very run
            forward_split(
                model,
                split,
                c["trainer"]["eval_batch_size"],
                device,
                label_index=index_map,
                progress=c["trainer"]["progress"],
                predict=forward,
                options=options,
                loader=loaders.loader(split.name),
            ).save(path, features_dtype)
        record_dataset_eval(bench, split, path)
        atomic_write_parquet(split.meta, rd.meta(split.name))
    loaders = None  # its persistent workers end here, not after the post-hoc stage
    save_head(model, index_map, rd.head)
    run_model_scorers(c, bench, rd, forward_keys, transform, model, predict, index_map, device)
    write_benchmark_json(rd, bench, forward_keys)
    atomic_write_json(
        rd.run_info_json,
        {
            "run_id": keys.run_id,
            "setting_id": keys.setting_id,
            "dataset": bench.name,
            "model": c["model"]["name"],
            "method": c["method"]["name"] if training else "none",
            "tta": "",
            "seed": c["seed"],
            "selection_rule": c["selection_rule"] if training else "none (evaluation only)",
            "selected_epoch": selected_epoch,
        },
    )
    return finish_run(c, keys, rd, lock, started, str(device))


def record_dataset_eval(bench: Benchmark, split: Any, outputs_path: Path) -> None:
    """The dataset's own evaluation of a labelled split (when the benchmark has one), from
    the predictions in its Outputs cache, stored beside it: the post-hoc stage turns it into
    rows without the dataset (the evaluation may need what only the loaded dataset holds)."""
    target = dataset_eval_path(outputs_path)
    if bench.dataset_eval is None or split.role not in LABELED_ROLES or target.is_file():
        return
    out = Outputs.load(outputs_path)
    results = bench.dataset_eval(split, out.index, out.logits.argmax(axis=1))
    atomic_write_json(target, {k: float(v) for k, v in results.items()})


def run_model_scorers(c, bench, rd, forward_keys, transform, model, predict, index_map, device):
    """Scorers that need the model (ODIN) run their own passes here, once per split; their
    scores are cached beside the outputs for the post-hoc stage, with their timing."""
    timings_path = rd.model_scorer_timings
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    forward = predict or (lambda x: forward_outputs(model, x))

    def logits_fn(x):
        return map_logits(forward(x)[0], index_map)

    model.eval()
    for name, scorer_cfg in (c["eval"].get("scorers") or {}).items():
        cls = registry.resolve_target("scorer", {"name": name, **scorer_cfg})
        if "model" not in getattr(cls, "needs", ()):
            continue
        scorer = registry.construct(cls, scorer_cfg)
        for split in bench.splits.values():
            path = rd.model_score_path(split.name, forward_keys[split.name], name, scorer_cfg)
            if path.is_file():
                continue
            loader = DataLoader(
                split.with_transform(transform),
                batch_size=c["trainer"]["eval_batch_size"],
                num_workers=c["trainer"]["num_workers"],
            )
            started = time.time()
            scores = scorer.score_batches(logits_fn, (x.to(device) for x, _, _ in batches(loader)))
            timings[f"{name}/{split.name}"] = round(time.time() - started, 3)
            atomic_save_npy(path, scores)
        log.info(
            "model scorer %s: %.1fs (it runs its own passes)",
            name,
            sum(v for k, v in timings.items() if k.startswith(f"{name}/")),
        )
    if timings:
        atomic_write_json(timings_path, timings)


# ---------------------------------------------------------------- runs built on other runs
# Test-time adaptation and multi-stage methods start from another run, found by its key: the
# trained run of a TTA run (its config with tta=none), the earlier stages of a method (e.g.
# JTT's short ERM run). That run is finished first (or found finished) and shared by every
# run that needs it.


def tta_config(c: dict[str, Any]) -> dict[str, Any] | None:
    """The selected TTA plugin's config as it enters keys; None for tta=none."""
    t = c.get("tta") or {}
    if t.get("name", "none") == "none":
        return None
    return {k: v for k, v in t.items() if k != "search_space"}


def run_payload(c: dict[str, Any], adapter: Any) -> dict[str, Any]:
    """The key payload: the trained run's (key_payload), plus the TTA config when a TTA
    plugin is selected, so that a TTA run has its own run_id and setting_id while the run it
    adapts keeps its key (tta=none adds nothing)."""
    payload = key_payload(c, adapter)
    t = tta_config(c)
    return payload if t is None else {**payload, "tta": t}


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "_target_" not in v:
            out[k] = _deep_merge(out[k], v)
        else:  # a plugin config (with _target_) replaces the old one whole
            out[k] = copy.deepcopy(v)
    return out


def finished_run(c: dict[str, Any], what: str, poll: float = 5.0) -> dict[str, Any]:
    """The summary of the run of config `c` once it is finished: found, or run now; while
    another process holds it, wait (a dead holder's lock goes stale and is taken over)."""
    while True:
        summary = run(copy.deepcopy(c))
        if summary["status"] == "finished":
            return summary
        if summary["status"] == "failed":
            raise RuntimeError(
                f"{what} {summary['run_id']} failed earlier (see {summary['run_dir']}/FAILED); "
                "rerun with retry_failed=true"
            )
        log.info("waiting for %s %s, held by another process", what, summary["run_id"])
        time.sleep(poll)


def stage_outputs(c: dict[str, Any], stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Runs (or finds) each earlier stage a method declares, and returns the Outputs of its
    training split, by stage name. A stage is this run's config with the stage's overrides,
    the hyperparameters already drawn (hparams_seed=0) and no TTA."""
    outputs = {}
    for name, overrides in stages.items():
        stage_cfg = _deep_merge(c, overrides)
        stage_cfg.update(hparams_seed=0, tta={"name": "none"})
        summary = finished_run(stage_cfg, f"stage {name!r} of method {c['method']['name']!r}")
        outputs[name] = Outputs.load(RunDir.at(summary["run_dir"]).split_output("train"))
        log.info("stage %s: run %s", name, summary["run_id"])
    return outputs


def load_trained_model(model: torch.nn.Module, path: Path) -> None:
    """The model's weights from a run's best.pt (method.state_dict()); a method's own state
    (loss weights, a weak model...) plays no part in adaptation."""
    # Its own function, not inline in _execute_tta: cloudpickle (the joblib launcher pickles
    # harness.run's functions by value) takes the `torch.classes` submodule along when one
    # function names both `torch` and an attribute `classes` (bench.classes), and fails.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    )


def _execute_tta(
    c: dict[str, Any], adapter: Any, keys: RunKeys, rd: RunDir, lock: RunLock | None = None
) -> dict[str, Any]:
    """A TTA run: the trained run (same config, tta=none) is found or run first; its selected
    weights are adapted on every split separately, from inputs alone (harness/tta.py), and the
    adapted Outputs go through the same post-hoc stage."""
    from harness.tta import Predictor, adapt_split

    started = time.time()
    t = tta_config(c)
    trained = finished_run({**c, "hparams_seed": 0, "tta": {"name": "none"}}, "trained run")
    train_dir = RunDir.at(trained["run_dir"])
    log.info("tta %s on run %s -> %s", t["name"], trained["run_id"], rd.path)
    bench: Benchmark = adapter.load(Path(c["cache_dir"])).limited(c["dataset"].get("limit"))
    seed_everything(c["seed"])
    training = c["trainer"]["epochs"] > 0
    model = create_model(c["model"], bench, train=training)
    transform, transform_desc = resolve_transform(transform_mode(c["model"]), model, bench)
    atomic_write_json(rd.transform_json, transform_desc)
    device = resolve_device(c.get("device", "auto"))
    index_map = None
    if training:
        net = build_method(c, model, bench)
        load_trained_model(model, train_dir.best_checkpoint)
    else:
        index_map = label_index(c["model"], bench, model)
        net = Predictor(model, index_map)
    plugin = registry.build("tta", {k: v for k, v in t.items() if k != "name"})
    # forward key = the trained run's key + split + transform + TTA config + precision
    train_keys = RunKeys(trained["run_id"], "", {})
    forward_keys: dict[str, str] = {}
    for split in bench.splits.values():
        fkey = train_keys.forward_key(
            split.name,
            transform_desc,
            tta=t,
            precision=c["precision"],
            features_dtype=output_settings(c)["features_dtype"],
        )
        path = rd.output_path(split.name, fkey)
        if not path.is_file():
            logits, features = adapt_split(
                plugin, net, split, transform, device, c["trainer"]["num_workers"]
            )
            labels = split.labels.copy()  # attached after adaptation, for the metrics only
            Outputs(logits, features, labels, np.arange(len(split), dtype=np.int64)).save(
                path, output_settings(c)["features_dtype"]
            )
        atomic_write_parquet(split.meta, rd.meta(split.name))
        forward_keys[split.name] = fkey
    save_head(model, index_map, rd.head)
    write_benchmark_json(rd, bench, forward_keys)
    train_info = train_dir.read_run_info()
    atomic_write_json(
        rd.run_info_json,
        {**train_info, "run_id": keys.run_id, "setting_id": keys.setting_id, "tta": t["name"]},
    )
    atomic_write_json(rd.tta_json, {"train_run_id": trained["run_id"], "tta": t})
    return finish_run(c, keys, rd, lock, started, str(device), {"train_run_id": trained["run_id"]})


def build_method(c: dict[str, Any], model: Any, bench: Benchmark) -> Any:
    """The method plugin around the model, with the benchmark's class and group counts."""
    options = {k: v for k, v in c["method"].items() if k not in ("name", "search_space")}
    return registry.build(
        "method",
        options,
        model=model,
        num_classes=bench.num_classes,
        num_groups=int(bench.group_ids(bench.train_split()).max()) + 1,
    )


def write_benchmark_json(rd: RunDir, bench: Benchmark, forward_keys: dict[str, str]) -> None:
    """What the post-hoc stage needs to know of the benchmark, beside the Outputs cache."""
    atomic_write_json(
        rd.benchmark_json,
        {
            "name": bench.name,
            "classes": bench.classes,
            "group_cols": bench.group_cols,
            "splits": {
                s.name: {
                    "role": s.role,
                    "forward_key": forward_keys[s.name],
                    "n": len(s),
                    "info": s.info,
                }
                for s in bench.splits.values()
            },
        },
    )


def finish_run(
    c: dict[str, Any],
    keys: RunKeys,
    rd: RunDir,
    lock: RunLock | None,
    started: float,
    device: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's own post-hoc stage, then its DONE marker (last), unless the lock was lost."""
    if lock is not None and not lock.owned():
        raise LockHeld(f"run {keys.run_id}: another process took over its lock; not finishing it")
    eid, _ = evaluate_run(rd.path, c["eval"])
    table = pd.read_parquet(rd.posthoc(eid).rows)
    headline = _headline(table)
    rd.mark_complete(
        {
            "run_id": keys.run_id,
            **(extra or {}),
            "eval_id": eid,
            "seconds": round(time.time() - started, 2),
            "rows": len(table),
            "host": provenance()["host"],
            "device": device,
            "headline": headline,
        }
    )
    log.info(
        "done %s in %.1fs: %s",
        keys.run_id,
        time.time() - started,
        ", ".join(f"{k}={v:.3f}" for k, v in headline.items()),
    )
    return {"run_id": keys.run_id, "run_dir": str(rd.path), "skipped": False, **headline}


def _headline(table: pd.DataFrame) -> dict[str, float]:
    plain = table[
        (table["metric"] == "accuracy") & (table["group_key"] == "") & (table["scorer"] == "")
    ]
    return {f"{r.split}/accuracy": float(r.value) for r in plain.itertuples()}


@hydra.main(config_path=str(registry.CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """One run. In a multirun, a failing job is recorded (run directory and the job's
    job_status.json) and the sweep goes on; the sweep's end callback (harness/callbacks.py)
    prints a summary and exits non-zero if any job failed. Returns the run's
    `sweep_objective` value when one is set (what Hydra's Optuna sweeper optimises)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    status: dict[str, Any] = {"overrides": list(hc.overrides.task)}
    try:
        summary = run(cfg)
        status.update(
            status="skipped" if summary["skipped"] else "finished",
            run_status=summary.get("status"),
            run_id=summary["run_id"],
        )
    except Exception as exc:
        status.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if not multirun:
            raise
        log.exception("job failed; the sweep goes on")
    finally:
        if multirun:
            atomic_write_json(Path(hc.runtime.output_dir) / "job_status.json", status)
    return sweep_objective(cfg, status)


def sweep_objective(cfg: DictConfig, status: dict[str, Any]) -> float | None:
    """The value of `sweep_objective` (<split>/<metric>) for a finished run, else None."""
    objective = cfg.get("sweep_objective")
    if not objective or status.get("run_status") != "finished":
        return None
    from harness.search import objective_value

    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    return objective_value(RunDir(cfg.results_dir, status["run_id"]).path, eval_cfg, objective)


if __name__ == "__main__":
    main()
