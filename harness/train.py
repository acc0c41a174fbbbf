"""The training loop: epochs or steps, optimiser and schedule from config, a checkpoint
per epoch (atomic), and per-epoch metrics on every validation split, so that other
model-selection rules can be applied later without retraining."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from torch.utils.data import BatchSampler, DataLoader
from tqdm.auto import tqdm

from harness import metrics
from harness.augment import SeededTransform
from harness.data import Benchmark, Split
from harness.forward import PRECISIONS, batches, forward_split
from harness.method import Method
from harness.rundir import RunDir
from harness.samplers import DomainBalancedBatchSampler, GroupBalancedBatchSampler, domain_ids
from harness.selection import epoch_score
from harness.store import atomic_torch_save, atomic_write_parquet
from harness.unlabeled import unlabeled_batches, unlabeled_split, view_transforms

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    selected_epoch: int  # whose weights are loaded (selection_rule); records in epochs.parquet


class GroupedSplit(torch.utils.data.Dataset):
    """Adds the group id and the domain id (harness.samplers.domain_ids) to each example,
    for methods that need groups or environments. A SeededTransform (training augmentation)
    is called with the example's index: seeded per example."""

    def __init__(
        self, split: Split, groups: np.ndarray, transform: Any, domains: np.ndarray | None = None
    ) -> None:
        self.split, self.groups, self.transform = split, groups, transform
        self.domains = groups if domains is None else domains

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image, label, index = self.split[i]
        seeded = isinstance(self.transform, SeededTransform)
        return {
            "x": self.transform(image, index) if seeded else self.transform(image),
            "y": label,
            "index": index,
            "group": int(self.groups[i]),
            "domain": int(self.domains[i]),
        }


def make_scheduler(
    name: str | dict[str, Any],
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int = 1,
):
    """Stepped once per batch. `name`: cosine | constant | {name: step, gamma, step_size}
    (the learning rate times gamma every step_size epochs: torch's StepLR stepped per epoch,
    as WILDS does)."""
    if isinstance(name, dict) and name.get("name") == "step":
        gamma, every = float(name["gamma"]), int(name.get("step_size", 1)) * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: gamma ** (s // every))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(
        f"trainer.schedule must be cosine, constant or {{name: step, gamma, step_size}}, got {name!r}"
    )


def validation_records(
    method: Method,
    bench: Benchmark,
    splits: list[Split],
    transform: Any,
    cfg: dict,
    device,
    epoch: int,
    step: int,
) -> list[dict[str, Any]]:
    records = []
    for split in splits:
        out = forward_split(
            method.model,
            split.with_transform(transform),
            cfg["eval_batch_size"],
            device,
            predict=method.predict,
        )
        correct = metrics.predictions(out.logits) == out.labels
        values = {
            "accuracy": float(correct.mean()),
            "nll": metrics.nll(out.logits, out.labels),
            # SubpopBench's attribute-unknown selection: selection_rule=val/worst_class_accuracy
            "worst_class_accuracy": metrics.worst_class_accuracy(
                out.labels, metrics.predictions(out.logits)
            ),
        }
        if bench.group_cols:
            groups = metrics.group_accuracy(correct, split.meta.iloc[out.index], bench.group_cols)
            values["worst_group_accuracy"] = float(groups["accuracy"].min())
        if bench.dataset_eval is not None:  # the dataset's own metrics, e.g. WILDS' acc_wg
            own = bench.dataset_eval(split, out.index, metrics.predictions(out.logits))
            values.update({k: float(v) for k, v in own.items() if k not in values})
        for metric, value in values.items():
            records.append(
                {
                    "epoch": epoch,
                    "step": step,
                    "split": split.name,
                    "split_role": split.role,
                    "metric": metric,
                    "value": value,
                    "n": len(out.labels),
                }
            )
    return records


def train(
    method: Method,
    bench: Benchmark,
    transform: Any,
    cfg: dict[str, Any],
    run_dir: RunDir,
    seed: int,
    device: torch.device,
    selection_rule: str,
    train_transform: Any = None,
) -> TrainResult:
    """Trains `method` in place; leaves the selected epoch's weights loaded. `transform` is
    the evaluation transform (validation splits); `train_transform` the training split's
    (harness.augment; default: the evaluation transform)."""
    epoch_score([], 0, selection_rule)  # an unknown rule fails before any work
    train_split = bench.train_split()
    groups = bench.group_ids(train_split)
    domains = domain_ids(bench, train_split)
    # trainer.unlabeled_split: inputs only, beside each labeled batch (harness/unlabeled.py)
    target = (
        None
        if cfg.get("unlabeled_split") is None
        else unlabeled_split(bench, cfg["unlabeled_split"])
    )
    # views of the unlabeled inputs a method asks for (FixMatch's weak and strong), and
    # how many unlabeled inputs per labeled one
    views = view_transforms(method.unlabeled_views(method.unlabeled_options), transform, seed)
    ratio = method.unlabeled_ratio(method.unlabeled_options)
    dataset = GroupedSplit(train_split, groups, train_transform or transform, domains)
    epochs, max_steps = int(cfg["epochs"]), cfg.get("max_steps")
    steps_per_epoch = math.ceil(len(dataset) / cfg["batch_size"])
    total = (
        epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, max_steps)
    )
    # Epochs that can run within max_steps: the loop stops there, after its epoch-end record.
    epochs = min(epochs, math.ceil(total / steps_per_epoch))

    method.prepare(groups, train_split.labels)
    method.prepare_domains(domains)
    method.to(device)
    # GPU-scale training (docs/experiments.md#training-at-scale): autocast, fp16 loss scaling,
    # gradient accumulation, NHWC memory format; at their defaults nothing changes
    precision = cfg.get("precision", "fp32")
    channels_last = bool(cfg.get("channels_last", False))
    if channels_last:
        method.to(memory_format=torch.channels_last)
    method.accumulate_steps = int(cfg.get("accumulate_steps", 1))
    method.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    optimizer = instantiate(cfg["optimizer"], params=method.optimizer_parameters())
    method.attach_optimizer(optimizer)
    scheduler = make_scheduler(cfg["schedule"], optimizer, total, steps_per_epoch)
    # the method's own optimisers and schedules (DANN's discriminator): checkpointed with ours
    owned = {"extra_optimizers": method.extra_optimizers(),
             "extra_schedulers": method.extra_schedulers()}  # fmt: skip
    # fp16: each owned optimiser steps through a GradScaler of its own (Method.owned_step)
    method.owned_scalers = {name: torch.amp.GradScaler(device.type)
                            for name in owned["extra_optimizers"]} if method.scaler else {}  # fmt: skip
    owned["extra_scalers"] = method.owned_scalers
    val_splits = bench.by_role("val")

    records: list[dict[str, Any]] = []
    start_epoch, step, best = 0, 0, (-math.inf, -1)
    last = run_dir.last_checkpoint
    if last.is_file():  # an interrupted run: continue where its last epoch ended
        state = torch.load(last, map_location="cpu", weights_only=True)
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if method.scaler is not None and "scaler" in state:
            method.scaler.load_state_dict(state["scaler"])
        for kind, objects in owned.items():
            for name, obj in objects.items():
                if kind in state or kind != "extra_scalers":  # scalers: absent before them
                    obj.load_state_dict(state[kind][name])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        best = (float(state["best_score"]), int(state["best_epoch"]))
        # epochs.parquet may already hold the epoch after last.pt (killed between the two
        # writes): keep only what last.pt vouches for
        records = [
            r
            for r in pd.read_parquet(run_dir.epochs).to_dict("records")
            if r["epoch"] < start_epoch
        ]
        log.info("resuming %s from epoch %d (step %d)", run_dir.run_id, start_epoch, step)

    if method.accumulate_steps > 1 or method.scaler is not None or owned["extra_optimizers"]:
        # the schedule counts batches; the optimiser steps every k of them (or skips a step
        # of non-finite fp16 gradients, or sits out a method's own steps, DANN's
        # discriminator steps): torch's warning about the order does not apply
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
    for epoch in range(start_epoch, epochs):
        # The shuffle order depends only on (seed, epoch): a resumed run sees the same batches.
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        if isinstance(dataset.transform, SeededTransform):  # augmentation: per (seed, epoch)
            dataset.transform.epoch = epoch  # set before the loader copies it to workers
        sampler = method.train_sampler(groups, train_split.labels, epoch, epochs, generator)
        if cfg.get("group_sampler"):
            if sampler is not None:
                raise ValueError(
                    f"trainer.group_sampler is set, but method {type(method).__name__} brings "
                    "its own sampler; use one of them"
                )
            sampler = GroupBalancedBatchSampler(
                groups, cfg["batch_size"], generator=generator, **cfg["group_sampler"]
            )
        if cfg.get("domain_sampler") or method.domain_batches:
            if sampler is not None:
                raise ValueError(
                    f"domain-balanced batches (trainer.domain_sampler, or method "
                    f"{type(method).__name__}'s own) and another sampler "
                    "(trainer.group_sampler or the method's): use one of them"
                )
            sampler = DomainBalancedBatchSampler(domains, cfg["batch_size"], generator)
        if isinstance(
            sampler, BatchSampler | GroupBalancedBatchSampler | DomainBalancedBatchSampler
        ):
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg["num_workers"])
        else:
            loader = DataLoader(
                dataset,
                batch_size=cfg["batch_size"],
                shuffle=sampler is None,
                sampler=sampler,
                generator=generator,
                num_workers=cfg["num_workers"],
                drop_last=False,
            )
        method.train()
        torch.manual_seed(seed * 100_003 + epoch)  # dropout etc., per epoch, for resumability
        bar = tqdm(
            batches(loader),  # made with one torch thread when made here (see batches)
            total=len(loader),
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=None if cfg["progress"] else True,
            leave=False,
        )
        losses = []
        unlabeled = None if target is None else unlabeled_batches(
            target, dataset.transform, cfg, len(loader), seed, epoch, views, ratio
        )  # fmt: skip
        for batch in bar:
            if step >= total:
                break
            if unlabeled is not None:
                u = next(unlabeled)  # inputs, or the method's views of them
                batch.update(u if isinstance(u, dict) else {"unlabeled_x": u})
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if channels_last:
                for k in [k for k in batch if k == "x" or k.startswith("unlabeled_")]:
                    batch[k] = batch[k].contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, PRECISIONS[precision], enabled=precision != "fp32"):
                out = method.update(batch)
            if not all(math.isfinite(v) for v in out.values()):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {step}: {out}")
            scheduler.step()
            step += 1
            losses.append(out["loss"])
            bar.set_postfix(loss=f"{out['loss']:.3f}")
        method.flush_step()  # accumulated gradients do not carry over into the next epoch
        records.append(
            {
                "epoch": epoch,
                "step": step,
                "split": train_split.name,
                "split_role": "train",
                "metric": "loss",
                "value": float(np.mean(losses)) if losses else math.nan,
                "n": len(losses),
            }
        )
        records += validation_records(
            method, bench, val_splits, transform, cfg, device, epoch, step
        )
        score = epoch_score(records, epoch, selection_rule)
        if score > best[0]:
            best = (score, epoch)
            atomic_torch_save(method.state_dict(), run_dir.best_checkpoint)
        atomic_write_parquet(pd.DataFrame(records), run_dir.epochs)
        atomic_torch_save(
            {
                "method": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": step,
                "best_score": best[0],
                "best_epoch": best[1],
                **({"scaler": method.scaler.state_dict()} if method.scaler is not None else {}),
                **{  # only for methods that own optimisers: other checkpoints stay as they were
                    kind: {name: obj.state_dict() for name, obj in objects.items()}
                    for kind, objects in owned.items()
                    if objects
                },
            },
            last,
        )
        log.info("epoch %d: %s", epoch, _summary(records, epoch))
    method.load_state_dict(
        torch.load(run_dir.best_checkpoint, map_location="cpu", weights_only=True)
    )
    return TrainResult(selected_epoch=best[1])


def _summary(records: list[dict[str, Any]], epoch: int) -> str:
    return ", ".join(
        f"{r['split']}/{r['metric']}={r['value']:.4f}" for r in records if r["epoch"] == epoch
    )
