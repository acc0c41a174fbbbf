"""Validation of the values Hydra's typing does not check, beside what builds from them: every
command validates its config here before it writes anything, with an error that names the
key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness import (
    augment,
    calibrated_estimators,
    ood_rows,
    oracle,
    registry,
    shift,
    subpop_rows,
    tuning,
    uncertainty,
)
from harness.data import Benchmark, WithOODSets
from harness.forward import PRECISIONS
from harness.gpudecode import check_decode
from harness.outputs import FEATURE_DTYPES
from harness.report.options import is_name
from harness.retention import check_policy
from harness.rundir import runs_root
from harness.samplers import check_group_sampler
from harness.search import check_objective_format
from harness.selection import EPOCH_RULES, is_epoch_rule
from harness.unlabeled import check_method_and_split, check_unlabeled_option


def validate(cfg: dict[str, Any]) -> None:
    """Clear errors for values Hydra's typing does not catch, naming the key."""
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ValueError(f"seed must be an integer, got {cfg.get('seed')!r}")
    if not 0 <= cfg["seed"] < 2**32:  # numpy's seed range; refused before anything is written
        raise ValueError(f"seed must be in [0, 2**32), got {cfg['seed']}")
    lock = cfg.get("lock") or {}
    for k in ("heartbeat", "stale_after"):
        v = lock.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise ValueError(f"lock.{k} must be a positive number of seconds, got {v!r}")
    if lock and lock.get("stale_after", 180) <= lock.get("heartbeat", 30):
        raise ValueError(
            f"lock.stale_after ({lock['stale_after']}) must be longer than lock.heartbeat "
            f"({lock['heartbeat']}): a live run would be taken over"
        )
    check_policy(cfg.get("checkpoints", "best"))
    check_run_options(cfg)
    t = cfg["trainer"]
    if not isinstance(t["epochs"], int) or t["epochs"] < 0:
        raise ValueError(f"trainer.epochs must be an integer >= 0, got {t['epochs']!r}")
    if t["max_steps"] is not None and (not isinstance(t["max_steps"], int) or t["max_steps"] < 1):
        raise ValueError(
            f"trainer.max_steps must be a positive integer or null, got {t['max_steps']!r}"
        )
    precision = cfg.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: must be one of {list(PRECISIONS)}")
    if precision != "fp32" and t["epochs"] > 0:
        raise ValueError(
            f"precision={precision!r} applies to evaluation-only runs (trainer.epochs=0); "
            "training runs in fp32"
        )
    fwd = cfg.get("forward") or {}
    if fwd.get("features_dtype", "float32") not in FEATURE_DTYPES:
        raise ValueError(
            f"forward.features_dtype must be one of {FEATURE_DTYPES}, got {fwd['features_dtype']!r}"
        )
    for k in ("channels_last", "persistent_workers"):
        if not isinstance(fwd.get(k, False), bool):
            raise ValueError(f"forward.{k} must be true or false, got {fwd[k]!r}")
    if not isinstance(fwd.get("compile", False), bool | str):
        raise ValueError(
            f"forward.compile must be true, false or a backend name, got {fwd['compile']!r}"
        )
    check_decode(fwd.get("decode", "auto"))
    if fwd.get("pin_memory", "auto") not in ("auto", True, False):
        raise ValueError(
            f"forward.pin_memory must be auto, true or false, got {fwd['pin_memory']!r}"
        )
    workers = t.get("num_workers", 0)
    if workers != "auto" and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 0
    ):
        raise ValueError(f"trainer.num_workers must be an integer >= 0 or auto, got {workers!r}")
    check_schedule(t["schedule"])
    if t.get("precision", "fp32") not in PRECISIONS:
        raise ValueError(f"trainer.precision={t['precision']!r}: must be one of {list(PRECISIONS)}")
    k = t.get("accumulate_steps", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"trainer.accumulate_steps must be a positive integer, got {k!r}")
    if not isinstance(t.get("channels_last", False), bool):
        raise ValueError(f"trainer.channels_last must be true or false, got {t['channels_last']!r}")
    if not is_epoch_rule(cfg["selection_rule"]):
        raise ValueError(
            f"selection_rule must be one of {tuple(EPOCH_RULES)} or val/<metric>, got "
            f"{cfg['selection_rule']!r}"
        )
    for k in ("batch_size", "eval_batch_size"):
        if not isinstance(t[k], int) or t[k] < 1:
            raise ValueError(f"trainer.{k} must be a positive integer, got {t[k]!r}")
    if t.get("group_sampler") is not None:
        check_group_sampler(t["group_sampler"], t["batch_size"])
    if not isinstance(t.get("domain_sampler", False), bool):
        raise ValueError(
            f"trainer.domain_sampler must be true or false, got {t['domain_sampler']!r}"
        )
    if t.get("domain_sampler") and t.get("group_sampler") is not None:
        raise ValueError("trainer.domain_sampler and trainer.group_sampler: use one of them")
    check_unlabeled_option(t.get("unlabeled_split"))
    augment.validate(cfg.get("augment"))
    check_objective_format(cfg.get("sweep_objective"))
    if augment.augment_name(cfg.get("augment")) != "none" and t["epochs"] == 0:
        raise ValueError(
            f"augment={augment.augment_name(cfg['augment'])} augments training, and "
            "trainer.epochs=0 trains nothing: use augment=none for evaluation-only runs"
        )


def check_run_options(cfg: dict[str, Any]) -> None:
    """The top-level options of conf/config.yaml that nothing else checks before a write."""
    for key in ("results_dir", "cache_dir", "data_root"):
        v = cfg.get(key, "x")
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{key} must be a directory path, got {v!r}")
    threads = cfg.get("threads")
    if threads is not None and (
        not isinstance(threads, int) or isinstance(threads, bool) or threads < 1
    ):
        raise ValueError(f"threads must be a positive integer or null, got {threads!r}")
    device = cfg.get("device", "auto")
    try:
        if device != "auto":
            import torch

            torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from exc
    for key, value in (
        ("retry_failed", cfg.get("retry_failed", True)),
        ("sweep_end.leaderboard", (cfg.get("sweep_end") or {}).get("leaderboard", True)),
    ):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
    transform = (cfg.get("model") or {}).get("transform", "auto")
    if transform not in ("auto", "timm", "benchmark"):
        raise ValueError(f"model.transform must be auto, timm or benchmark, got {transform!r}")


def check_schedule(schedule: Any) -> None:
    if schedule in ("cosine", "constant"):
        return
    if isinstance(schedule, dict) and schedule.get("name") == "step":
        gamma, every = schedule.get("gamma"), schedule.get("step_size", 1)
        unknown = sorted(set(schedule) - {"name", "gamma", "step_size"})
        if (
            not unknown
            and isinstance(gamma, int | float)
            and 0 < gamma <= 1
            and isinstance(every, int)
            and every >= 1
        ):
            return
    raise ValueError(
        "trainer.schedule must be cosine, constant or {name: step, gamma: (0, 1], "
        f"step_size: epochs >= 1}}, got {schedule!r}"
    )


def validate_plugins(cfg: dict[str, Any]) -> None:
    """Every plugin the run will need resolves and accepts its hyperparameters, and the eval
    settings are valid, before anything is written."""
    from harness.models import check_model

    check_model(cfg["model"])
    validate_eval(cfg["eval"])
    validate_tta(cfg)
    validate_probe(cfg)
    check_ensemble(cfg)
    optimizer = (cfg.get("trainer") or {}).get("optimizer") or {}
    if cfg["trainer"]["epochs"] > 0 and optimizer.get("_target_"):
        from hydra.utils import get_class

        try:  # a misspelt optimiser fails here, not after the run's folder is made
            get_class(optimizer["_target_"])
        except Exception as exc:
            raise ValueError(
                f"trainer.optimizer._target_={optimizer['_target_']!r} cannot be imported: {exc}"
            ) from exc
    validate_domain_batches(cfg)


def validate_domain_batches(c: dict[str, Any]) -> None:
    """A method that trains on domain-balanced batches (Method.domain_batches) cannot also
    get trainer.group_sampler's batches: refused before anything is written."""
    t = c["trainer"]
    # a method that needs unlabeled batches gets them, and only it
    if t["epochs"] > 0 and (c["method"].get("_target_") or t.get("unlabeled_split") is not None):
        cls = registry.resolve_target("method", c["method"])
        check_method_and_split(cls, c["method"], t.get("unlabeled_split"))
    if t["epochs"] == 0 or t.get("group_sampler") is None:
        return
    if getattr(registry.resolve_target("method", c["method"]), "domain_batches", False):
        raise ValueError(
            f"method={c['method']['name']} trains on domain-balanced batches and "
            "trainer.group_sampler asks for group-balanced ones: use one of them"
        )


def validate_probe(c: dict[str, Any]) -> None:
    """The probe plugin resolves and accepts its hyperparameters, before anything is written."""
    p = c.get("probe") or {}
    if p.get("name", "none") == "none":
        return
    if (c.get("tta") or {}).get("name", "none") != "none":
        raise ValueError(f"probe={p['name']} with tta={c['tta']['name']}: choose one of them")
    cls = registry.resolve_target("probe", p)
    try:
        registry.construct(cls, {k: v for k, v in p.items() if k != "name"})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"probe={p['name']}: {exc}") from exc


def validate_eval(ev: dict[str, Any]) -> None:
    """An eval config (conf/eval/): its settings, and every scorer, calibrator and estimator
    resolves and accepts its hyperparameters. Used by harness.run and harness.evaluate alike."""
    if "name" in ev and not is_name(ev["name"]):
        raise ValueError(f"eval.name must be a non-empty name, got {ev['name']!r}")
    if not isinstance(ev.get("ece_bins"), int) or ev["ece_bins"] < 1:
        raise ValueError(f"eval.ece_bins must be a positive integer, got {ev.get('ece_bins')!r}")
    coverages = ev.get("coverages")
    if not isinstance(coverages, list) or not all(
        isinstance(c, int | float) and 0 < c <= 1 for c in coverages
    ):
        raise ValueError(f"eval.coverages must be a list of numbers in (0, 1], got {coverages!r}")
    fit_size = ev.get("fit_size")
    if fit_size is not None and (not isinstance(fit_size, int) or fit_size < 1):
        raise ValueError(f"eval.fit_size must be a positive integer or null, got {fit_size!r}")
    ood_rows.check_settings(ev)
    uncertainty.check_settings(ev)
    shift.check_settings(ev)
    tuning.check_settings(ev)
    subpop_rows.check_settings(ev)
    oracle.check_settings(ev)
    for group in ("scorers", "calibrators", "estimators"):
        entries = ev.get(group) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"eval.{group} must be a mapping of name -> plugin, got {entries!r}")
        for name, plugin in entries.items():
            if not isinstance(plugin, dict) or "_target_" not in plugin:
                raise ValueError(f"eval.{group}.{name} needs a _target_, got {plugin!r}")
            try:  # constructing is cheap and checks the hyperparameters before any work
                cls = registry.resolve_target(group[:-1], {"name": name, **plugin})
                registry.construct(cls, plugin)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"eval.{group}.{name}: {exc}") from exc
            least = getattr(cls, "min_fit_size", 1)
            if fit_size is not None and fit_size < least:
                raise ValueError(
                    f"eval.fit_size={fit_size}: scorer {name!r} needs at least {least} "
                    "training examples to fit"
                )
    calibrated_estimators.check_settings(ev)  # names entries of the groups checked above


def validate_tta(c: dict[str, Any]) -> None:
    """The TTA plugin resolves and accepts its hyperparameters, before anything is written."""
    t = c.get("tta") or {}
    if t.get("name", "none") == "none":
        return
    if c.get("precision", "fp32") != "fp32":
        raise ValueError(
            f"tta={t['name']}: test-time adaptation runs in fp32, not {c['precision']}"
        )
    cls = registry.resolve_target("tta", t)
    try:
        registry.construct(cls, {k: v for k, v in t.items() if k not in ("name", "search_space")})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tta={t['name']}: {exc}") from exc


def check_writable(results_dir: str | Path) -> None:
    runs = runs_root(results_dir)
    try:
        runs.mkdir(parents=True, exist_ok=True)
        probe = runs / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"results_dir={results_dir} is not writable: {exc}") from exc


# ---------------------------------------------------------------- builders


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


# ---------------------------------------------------------------- report commands


def check_ensemble(c: dict[str, Any]) -> None:
    """ensemble.seeds: at least two distinct non-negative integers; not with TTA or a probe."""
    e = c.get("ensemble") or {}
    if e.get("name", "none") == "none":
        return
    seeds = e.get("seeds")
    if not (
        isinstance(seeds, list)
        and len(seeds) >= 2
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)
        and len(set(seeds)) == len(seeds)
    ):
        raise ValueError(
            f"ensemble.seeds must be a list of at least two distinct seeds, got {seeds!r}"
        )
    for group in ("tta", "probe"):
        if (c.get(group) or {}).get("name", "none") != "none":
            raise ValueError(
                f"ensemble={e['name']} with {group}={c[group]['name']}: choose one of them"
            )
