"""Hydra entry point for one run, read top to bottom:

    compose -> plan prerequisites -> key -> skip or lock -> execute -> finish

    python -m harness.run dataset=maze model=resnet18 method=erm seed=3 trainer.epochs=2
    python -m harness.run -m seed=0,1,2

A *derived run* is computed from other runs (its prerequisites, or parents): a TTA run from
its trained run, JTT from its stage-1 ERM run, and later DFR, linear probes and seed ensembles.
Prerequisites are declared from the config alone (`plan`), found finished or run first, before
this run takes its lock; the run then receives their run directories. A derived run is a run
directory like any other.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from harness import registry
from harness.augment import augment_name
from harness.callbacks import job_status_path  # also registers ${process_token:}
from harness.config import build_dataset, build_method, check_writable, validate, validate_plugins
from harness.data import Benchmark, resolve_transform
from harness.derived import Parent, plan
from harness.ensemble import execute_ensemble
from harness.forward import RunModel, auto_num_workers
from harness.gpudecode import resolve_decode
from harness.keys import (
    RunKeys,
    ensemble_config,
    make_keys,
    probe_config,
    run_payload,
    tta_config,
)
from harness.method_checks import check_method_run
from harness.models import create_model, model_label, resolve_device, save_head
from harness.posthoc import evaluate_run
from harness.probe import execute_probe
from harness.retention import apply_policy, require_best
from harness.rowstore import append_stage
from harness.rundir import LockHeld, RunDir, RunLock, check_not_linked
from harness.search import apply_hparams_seed, check_objective
from harness.store import atomic_write_json, atomic_write_text, provenance
from harness.table import overall

log = logging.getLogger("harness.run")


# ---------------------------------------------------------------- compose


def compose(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The run's config as a plain dict: validated, hyperparameters drawn (hparams_seed),
    every plugin checked, before anything is written."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    validate(c)
    c = apply_hparams_seed(c)
    validate_plugins(c)
    check_writable(c["results_dir"])
    if c.get("threads"):
        torch.set_num_threads(int(c["threads"]))
    device = resolve_device(c.get("device", "auto"))
    resolve_decode((c.get("forward") or {}).get("decode", "auto"), device)  # gpu needs CUDA
    if c["trainer"].get("num_workers") == "auto":  # not in the key: any value gives the same
        c["trainer"]["num_workers"] = auto_num_workers(device)
    return c


# ---------------------------------------------------------------- plan prerequisites


# ---------------------------------------------------------------- prerequisites


def finished_run(parent: Parent, poll: float = 5.0) -> RunDir:
    """The parent's run directory once it is finished: found, or run now; while another
    process holds it, wait (a dead holder's lock goes stale and is taken over)."""
    while True:
        summary = run(copy.deepcopy(parent.config))
        if summary["status"] == "finished":
            if parent.keys is not None and summary["run_id"] != parent.keys.run_id:
                raise RuntimeError(  # the key this run holds would name another run
                    f"{parent.what}: planned as run {parent.keys.run_id}, found {summary['run_id']}"
                )
            log.info("%s: run %s", parent.what, summary["run_id"])
            return RunDir.at(summary["run_dir"])
        if summary["status"] == "failed":
            raise RuntimeError(
                f"{parent.what} {summary['run_id']} failed earlier (see "
                f"{summary['run_dir']}/FAILED); rerun with retry_failed=true"
            )
        log.info("waiting for %s %s, held by another process", parent.what, summary["run_id"])
        time.sleep(poll)


# ---------------------------------------------------------------- the lifecycle


def run(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """One run. Returns a summary: run_id, run_dir, skipped, status, headline metrics."""
    c = compose(cfg)
    adapter = build_dataset(c)
    adapter.check()
    check_method_run(c, adapter)  # refused augmentations, views, steps: before any write
    parents = plan(c)
    in_key = {name: p.keys.run_id for name, p in parents.items() if p.in_key}
    keys = make_keys(run_payload(c, adapter, in_key))
    rd = RunDir(c["results_dir"], keys.run_id)
    check_not_linked(rd.path)  # never written or skipped through a symbolic link
    summary = {"run_id": keys.run_id, "run_dir": str(rd.path), "skipped": True}
    if rd.is_complete():
        log.info("skip: run %s is already finished (%s)", keys.run_id, rd.path)
        # A new eval config on a finished run is computed from its cache, never by retraining.
        evaluate_run(rd.path, c["eval"])
        return {**summary, "status": "finished"}
    if rd.is_failed() and not c["retry_failed"]:
        log.info("skip: run %s failed before (see %s); retry_failed=false", keys.run_id, rd.failed)
        return {**summary, "status": "failed"}
    # parents first, each under its own lock, never while this run holds its lock
    found = {name: finished_run(parent) for name, parent in parents.items()}
    if "trained" in found and c["trainer"]["epochs"] > 0:  # refused before anything is written
        require_best(found["trained"], f"tta={tta_config(c)['name']}")
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
        for tmp in rd.remove_temporaries():  # a killed attempt's half-written files
            log.info("removed %s (left by an interrupted attempt)", tmp)
        atomic_write_text(rd.config_yaml, OmegaConf.to_yaml(OmegaConf.create(c)))
        atomic_write_json(
            rd.key_json,
            {"run_id": keys.run_id, "setting_id": keys.setting_id, "payload": keys.payload},
        )
        with run_log(rd.log):
            try:
                started = time.time()
                log.info("run %s -> %s", keys.run_id, rd.path)
                execute = (
                    execute_probe
                    if probe_config(c)
                    else execute_ensemble
                    if ensemble_config(c)
                    else execute_tta
                    if tta_config(c)
                    else execute_training
                )
                extra = execute(c, adapter, keys, rd, found)
                return {**finish(c, keys, rd, lock, started, extra), "status": "finished"}
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


@contextmanager
def run_log(path: Path) -> Iterator[None]:
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


# ---------------------------------------------------------------- execute


def load(c: dict[str, Any], adapter: Any, rd: RunDir) -> RunModel:
    """The benchmark (limited), the seeded model and its evaluation transform."""
    bench: Benchmark = adapter.load(Path(c["cache_dir"])).limited(c["dataset"].get("limit"))
    check_objective(c.get("sweep_objective"), bench)  # a typo refused before training
    seed_everything(c["seed"])
    training = c["trainer"]["epochs"] > 0
    model = create_model(c["model"], bench, train=training)
    transform, transform_desc = resolve_transform(transform_mode(c["model"]), model, bench)
    atomic_write_json(rd.transform_json, transform_desc)
    device = resolve_device(c.get("device", "auto"))
    return RunModel(bench, model, transform, transform_desc, device, training)


def execute_training(
    c: dict[str, Any], adapter: Any, keys: RunKeys, rd: RunDir, parents: dict[str, RunDir]
) -> dict[str, Any]:
    """Train (unless evaluation-only), then one forward pass per split into the cache."""
    from harness.augment import training_transform
    from harness.forward import forward_run
    from harness.models import label_index
    from harness.train import train

    x = load(c, adapter, rd)
    selected_epoch, predict, index_map = -1, None, None
    if x.training:
        method = build_method(c, x.model, x.bench)
        method.use_prerequisites(parents)
        augmented = training_transform(
            c.get("augment"), x.transform, x.transform_desc, x.bench, c["seed"]
        )
        result = train(
            method,
            x.bench,
            x.transform,
            c["trainer"],
            rd,
            c["seed"],
            x.device,
            c["selection_rule"],
            train_transform=augmented,
        )
        selected_epoch, predict = result.selected_epoch, method.predict
    else:
        index_map = label_index(c["model"], x.bench, x.model)
    forward_keys = forward_run(c, x, rd, keys, predict, index_map)
    write_forward_stage(
        rd,
        x,
        forward_keys,
        index_map,
        {
            "run_id": keys.run_id,
            "setting_id": keys.setting_id,
            "dataset": x.bench.name,
            "model": model_label(c["model"]),
            "method": c["method"]["name"] if x.training else "none",
            "tta": "",
            "augment": augment_label(c) if x.training else "",
            "seed": c["seed"],
            "selection_rule": c["selection_rule"] if x.training else "none (evaluation only)",
            "selected_epoch": selected_epoch,
        },
    )
    return {"device": str(x.device)}


def execute_tta(
    c: dict[str, Any], adapter: Any, keys: RunKeys, rd: RunDir, parents: dict[str, RunDir]
) -> dict[str, Any]:
    """A TTA run: the trained run's selected weights, adapted on every split separately from
    inputs alone (harness/tta.py); the adapted Outputs go through the same post-hoc stage."""
    from harness.models import label_index
    from harness.tta import Predictor, adapt_run

    trained = parents["trained"]
    t = tta_config(c)
    log.info("tta %s on run %s", t["name"], trained.run_id)
    x = load(c, adapter, rd)
    index_map = None
    if x.training:
        net = build_method(c, x.model, x.bench)
        load_trained_model(x.model, trained.best_checkpoint)
    else:
        index_map = label_index(c["model"], x.bench, x.model)
        net = Predictor(x.model, index_map)
    plugin = registry.build("tta", {k: v for k, v in t.items() if k != "name"})
    # forward key = the trained run's key + split + transform + TTA config + precision
    forward_keys, folded = adapt_run(c, x, rd, RunKeys(trained.run_id, "", {}), plugin, net)
    info = {**trained.read_run_info(), "run_id": keys.run_id, "setting_id": keys.setting_id}
    write_forward_stage(rd, x, forward_keys, index_map, {**info, "tta": t["name"]})
    record = {"train_run_id": trained.run_id, "tta": t, "folded_final_batch": folded}
    atomic_write_json(rd.tta_json, record)  # (folded: harness/tta.py, fold_last_batch)
    return {"train_run_id": trained.run_id, "device": str(x.device)}


def write_forward_stage(
    rd: RunDir,
    x: RunModel,
    forward_keys: dict[str, str],
    index_map: list[int] | None,
    run_info: dict[str, Any],
) -> None:
    """What the post-hoc stage needs beside the Outputs cache: the head, benchmark.json (the
    splits' roles and forward keys) and run_info.json (the identity columns of the rows)."""
    save_head(x.model, index_map, rd.head)
    atomic_write_json(
        rd.benchmark_json,
        {
            "name": x.bench.name,
            "classes": x.bench.classes,
            "group_cols": x.bench.group_cols,
            "splits": {
                s.name: {
                    "role": s.role,
                    "forward_key": forward_keys[s.name],
                    "n": len(s),
                    "info": s.info,
                }
                for s in x.bench.splits.values()
            },
        },
    )
    atomic_write_json(rd.run_info_json, run_info)


def load_trained_model(model: torch.nn.Module, path: Path) -> None:
    """The model's weights from a run's best.pt (method.state_dict()); a method's own state
    (loss weights, a weak model...) plays no part in adaptation."""
    # Its own function, not inline in execute_tta: cloudpickle (the joblib launcher pickles
    # harness.run's functions by value) takes the `torch.classes` submodule along when one
    # function names both `torch` and an attribute `classes` (bench.classes), and fails.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment_label(c: dict[str, Any]) -> str:
    """The augmentation's name as the tables show it ("" for none)."""
    name = augment_name(c.get("augment"))
    return "" if name == "none" else name


def transform_mode(cfg_model: dict[str, Any]) -> str:
    mode = cfg_model.get("transform", "auto")
    if mode == "auto":
        return "timm" if cfg_model.get("pretrained") else "benchmark"
    return mode


# ---------------------------------------------------------------- finish


def finish(
    c: dict[str, Any],
    keys: RunKeys,
    rd: RunDir,
    lock: RunLock | None,
    started: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The run's own post-hoc stage, then its DONE marker (last), unless the lock was lost."""
    if lock is not None and not lock.owned():
        raise LockHeld(f"run {keys.run_id}: another process took over its lock; not finishing it")
    eid, _ = evaluate_run(rd.path, c["eval"])
    table = pd.read_parquet(rd.posthoc(eid).rows)
    plain = table[overall(table) & (table["metric"] == "accuracy")]
    headline = {f"{r.split}/accuracy": float(r.value) for r in plain.itertuples()}
    device = extra.pop("device")
    rd.mark_complete(
        {
            "run_id": keys.run_id,
            **extra,
            "eval_id": eid,
            "seconds": round(time.time() - started, 2),
            "rows": len(table),
            "host": provenance()["host"],
            "device": device,
            "headline": headline,
            "checkpoints": c.get("checkpoints", "best"),
        }
    )
    append_stage(rd, eid)  # into the consolidated store, now that the run counts
    # last.pt exists only while the run can resume: once DONE, the retention policy applies
    freed = apply_policy(rd, c.get("checkpoints", "best"))
    if freed:
        log.info("checkpoints=%s: freed %.1f MiB", c.get("checkpoints", "best"), freed / 2**20)
    log.info(
        "done %s in %.1fs: %s",
        keys.run_id,
        time.time() - started,
        ", ".join(f"{k}={v:.3f}" for k, v in headline.items()),
    )
    return {"run_id": keys.run_id, "run_dir": str(rd.path), "skipped": False, **headline}


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
            atomic_write_json(job_status_path(hc.runtime.output_dir), status)
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
