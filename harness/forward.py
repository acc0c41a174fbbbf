"""Forward passes: once per split into the Outputs cache (loaders shared by a run's splits,
autocast, channels_last, torch.compile, out-of-memory fallback). Metrics and scorers read
only the cache (harness/posthoc.py)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from harness import registry
from harness.data import LABELED_ROLES, Benchmark, Split
from harness.gpudecode import decode_loader, resolve_decode
from harness.hostcopies import HostCopies
from harness.keys import RunKeys, output_settings
from harness.method import Method
from harness.models import forward_outputs, map_logits
from harness.outputs import Outputs
from harness.rundir import RunDir, dataset_eval_path
from harness.stages import StageRecorder, concat_stages, stage_modules, stage_request
from harness.store import atomic_save_npy, atomic_write_json, atomic_write_parquet

log = logging.getLogger("harness.forward")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ForwardOptions:
    """How evaluation forward passes run. `precision` changes the numbers (it is part of the
    keys); the others change the speed only (and float rounding in the last bits, as the
    number of threads and the batch size do)."""

    precision: str = "fp32"  # fp32 | bf16 | fp16: torch.autocast on the device
    channels_last: bool = False  # model and inputs in NHWC memory format
    compile: bool | str = False  # torch.compile the forward: True (inductor) or a backend name
    pin_memory: bool = False  # page-locked batches, for asynchronous copies to a GPU


def prepare_forward(
    model: torch.nn.Module,
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    options: ForwardOptions,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The (logits, features) function forward passes use, once per run: the model in
    channels_last when asked, the function compiled when asked (compiled once, reused by
    every split; a last batch of another size compiles once more)."""
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    predict = predict or (lambda x: forward_outputs(model, x))
    if options.compile:
        backend = options.compile if isinstance(options.compile, str) else "inductor"
        predict = torch.compile(predict, backend=backend)
    return predict


def auto_num_workers(device: torch.device, cpus: int | None = None) -> int:
    """Loader workers for `num_workers: auto`. On a GPU the CPU cores only load, so up to 8
    workers, leaving one core to the main process; on a CPU the forward pass's own threads
    use the cores, and loading in the main process (with one thread, see `batches`) costs
    less than workers competing for them and handing batches over (docs/benchmarks.md)."""
    cpus = cpus or len(os.sched_getaffinity(0))
    return min(8, max(1, cpus - 1)) if device.type == "cuda" else 0


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def batches(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches. When they are made in this process (no workers), with one torch
    thread: per-example transforms are many small tensor operations, and torch's intra-op
    thread pool makes them ~10× slower on a busy machine (measured: 40 ms instead of 4 ms per
    224×224 JPEG, benchmarks/eval_throughput.py); workers already run with one thread."""
    iterator = iter(loader)
    while True:
        with torch_threads(1) if loader.num_workers == 0 else nullcontext():
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


class SplitLoader:
    """One DataLoader whose workers serve every split given (persistent_workers): a run
    starts its workers once rather than once per split (60-100 ms per start measured here,
    much of the time of a small split on a GPU). Without workers it is a plain loader per
    split. Workers are forked (Splits hold closures that do not pickle)."""

    def __init__(
        self,
        splits: list[Split],
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent: bool = True,
    ) -> None:
        self.splits = {s.name: s for s in splits}
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self._sampler = _SplitBatches(batch_size)
        self._shared = (
            DataLoader(
                _SplitsDataset(list(self.splits.values())),
                batch_sampler=self._sampler,
                num_workers=num_workers,
                pin_memory=pin_memory,
                persistent_workers=True,
            )
            if persistent and num_workers > 0 and len(self.splits) > 1
            else None
        )

    def loader(self, name: str) -> DataLoader:
        """The loader of split `name`, in its order (iterate it once before the next)."""
        split = self.splits[name]
        if self._shared is None:
            return DataLoader(
                split,
                batch_size=self.batch_size,
                shuffle=False,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
        self._sampler.select(list(self.splits).index(name), len(split))
        return self._shared


class _SplitsDataset(torch.utils.data.Dataset):
    def __init__(self, splits: list[Split]) -> None:
        self.splits = splits

    def __getitem__(self, key: tuple[int, int]) -> Any:
        split_no, i = key
        return self.splits[split_no][i]


class _SplitBatches(torch.utils.data.Sampler):
    """Batches of (split number, row) of the selected split, in order."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.split_no, self.n = batch_size, 0, 0

    def select(self, split_no: int, n: int) -> None:
        self.split_no, self.n = split_no, n

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            yield [(self.split_no, i) for i in range(start, stop)]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)


def is_out_of_memory(exc: BaseException) -> bool:
    # torch.OutOfMemoryError is what every accelerator's allocator raises (torch.cuda's is it)
    return isinstance(exc, torch.OutOfMemoryError)


@torch.no_grad()
def forward_split(
    model: torch.nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    label_index: list[int] | None = None,
    num_workers: int = 0,
    progress: bool = False,
    predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    options: ForwardOptions | None = None,
    loader: DataLoader | None = None,
    stages: list[str] | None = None,
) -> Outputs:
    """One pass over the split (in its own order) in eval mode. `loader` (e.g. from a
    SplitLoader) replaces the one made here from batch_size and num_workers.

    On an out-of-memory error of the device the batch is run again in halves, and the smaller size
    kept for the rest of the split (timm's validate.py halves and starts over); a warning in
    the run log says so. Each example's outputs do not depend on its batch. `stages` (module
    names, harness/stages.py) adds each one's pooled output to the Outputs, from this pass."""
    options = options or ForwardOptions()
    was_training = model.training
    model.eval()
    predict = predict or (lambda x: forward_outputs(model, x))
    if loader is None:
        loader = DataLoader(
            split,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=options.pin_memory,
        )
    autocast = (
        torch.autocast(device.type, dtype=PRECISIONS[options.precision])
        if options.precision != "fp32"
        else nullcontext()
    )
    chunk = batch_size
    host = HostCopies(device)  # (no .cpu() per batch: harness/hostcopies.py)
    labels, index, stage_parts = [], [], []
    recorder = StageRecorder(model, stages) if stages else None
    with recorder or nullcontext():
        for x, y, i in tqdm(
            batches(loader),
            desc=f"eval {split.name}",
            disable=None if progress else True,
            leave=False,
        ):
            x = x.to(device, non_blocking=True)
            if options.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            while True:
                try:
                    if recorder is not None:
                        recorder.begin()
                    with autocast:
                        outs = [predict(part) for part in x.split(chunk)]
                    break
                except Exception as exc:
                    if not is_out_of_memory(exc) or chunk == 1:
                        raise
                    smaller = max(1, min(chunk, len(x)) // 2)
                    log.warning(
                        "eval %s: out of memory at batch size %d; retrying with %d",
                        split.name,
                        min(chunk, len(x)),
                        smaller,
                    )
                    chunk = smaller
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            host.add([(map_logits(out, label_index).float(), feat.float()) for out, feat in outs])
            labels.append(y)
            index.append(i)
            if recorder is not None:
                stage_parts.append(recorder.take(len(y)))
        host.settle()
    model.train(was_training)
    return Outputs(
        torch.cat(host.logits).numpy(),
        torch.cat(host.features).numpy(),
        torch.cat(labels).numpy().astype(np.int64),
        torch.cat(index).numpy().astype(np.int64),
        stages=concat_stages(stage_parts) if recorder is not None else None,
    )


# ---------------------------------------------------------------- a run's forward stage

Predict = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RunModel:
    """What a run's forward stage starts from: the benchmark, the model, its evaluation
    transform (and the description that enters the forward keys), the device."""

    bench: Benchmark
    model: torch.nn.Module
    transform: Any
    transform_desc: dict[str, Any]
    device: torch.device
    training: bool


def forward_options(c: dict[str, Any], device: torch.device) -> ForwardOptions:
    fwd = c.get("forward") or {}
    pin = fwd.get("pin_memory", "auto")
    return ForwardOptions(
        precision=c.get("precision", "fp32"),
        channels_last=bool(fwd.get("channels_last", False)),
        compile=fwd.get("compile", False),
        pin_memory=device.type == "cuda" if pin == "auto" else bool(pin),
    )


def forward_run(
    c: dict[str, Any],
    x: RunModel,
    rd: RunDir,
    keys: RunKeys,
    predict: Predict | None,
    index_map: list[int] | None,
) -> dict[str, str]:
    """One forward pass per split into the run's Outputs cache (a split already cached by an
    interrupted attempt of this very run is kept), each split's metadata and the dataset's
    own evaluation beside it, then the model scorers' passes. Returns the forward keys."""
    x.model.to(x.device)
    options = forward_options(c, x.device)
    features_dtype = output_settings(c)["features_dtype"]
    # per-stage pooled features, only when a scorer asks and the model has timm stages
    stages = stage_modules(x.model) if stage_request(c["eval"]) else None
    forward_keys = {
        s.name: keys.forward_key(
            s.name,
            x.transform_desc,
            None,
            c["precision"],
            features_dtype=features_dtype,
            stage_features=stages is not None,
        )
        for s in x.bench.splits.values()
    }
    paths = {name: rd.output_path(name, fkey) for name, fkey in forward_keys.items()}
    todo = [
        s.with_transform(x.transform)
        for s in x.bench.splits.values()
        if not paths[s.name].is_file()
    ]
    decoded = {}  # splits of JPEG files decoded on the GPU (harness/gpudecode.py)
    if todo and resolve_decode((c.get("forward") or {}).get("decode", "auto"), x.device) == "gpu":
        for split in todo:
            loader = decode_loader(
                split,
                x.transform,
                c["trainer"]["eval_batch_size"],
                x.device,
                num_workers=c["trainer"]["num_workers"],
            )
            if loader is not None:
                decoded[split.name] = loader
        if decoded:
            log.info("decoding JPEG on %s: %s", x.device, ", ".join(decoded))
        todo = [s for s in todo if s.name not in decoded]
    if todo or decoded:
        forward = prepare_forward(x.model, predict, options)
        loaders = SplitLoader(
            todo,
            c["trainer"]["eval_batch_size"],
            num_workers=c["trainer"]["num_workers"],
            pin_memory=options.pin_memory,
            persistent=(c.get("forward") or {}).get("persistent_workers", True),
        )
    for split in x.bench.splits.values():
        path = paths[split.name]
        if not path.is_file():
            forward_split(
                x.model,
                split,
                c["trainer"]["eval_batch_size"],
                x.device,
                label_index=index_map,
                progress=c["trainer"]["progress"],
                predict=forward,
                options=options,
                loader=decoded[split.name] if split.name in decoded else loaders.loader(split.name),
                stages=stages,
            ).save(path, features_dtype)
        record_dataset_eval(x.bench, split, path)
        atomic_write_parquet(split.meta, rd.meta(split.name))
    loaders = None  # its persistent workers end here, not after the post-hoc stage
    run_model_scorers(c, x, rd, forward_keys, predict, index_map)
    return forward_keys


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


def run_model_scorers(
    c: dict[str, Any],
    x: RunModel,
    rd: RunDir,
    forward_keys: dict[str, str],
    predict: Predict | None,
    index_map: list[int] | None,
) -> None:
    """Scorers that need the model (ODIN; RankFeat, which needs feature maps) run their own
    passes here, once per split; their scores are cached beside the outputs for the post-hoc
    stage, with their timing."""
    timings_path = rd.model_scorer_timings
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    forward = predict or (lambda inputs: forward_outputs(x.model, inputs))

    def logits_fn(inputs: torch.Tensor) -> torch.Tensor:
        return map_logits(forward(inputs)[0], index_map)

    x.model.eval()
    for name, scorer_cfg in (c["eval"].get("scorers") or {}).items():
        cls = registry.resolve_target("scorer", {"name": name, **scorer_cfg})
        if "model" not in getattr(cls, "needs", ()):
            continue
        scorer = registry.construct(cls, scorer_cfg)
        if getattr(scorer, "uses_model", False):  # e.g. MC dropout switches dropout on
            scorer.model = x.model
        for split in x.bench.splits.values():
            path = rd.model_score_path(split.name, forward_keys[split.name], name, scorer_cfg)
            if path.is_file():
                continue
            loader = DataLoader(
                split.with_transform(x.transform),
                batch_size=c["trainer"]["eval_batch_size"],
                num_workers=c["trainer"]["num_workers"],
            )
            started = time.time()
            inputs_on_device = (inputs.to(x.device) for inputs, _, _ in batches(loader))
            own_predict = (
                predict is not None and getattr(predict, "__func__", None) is not Method.predict
            )
            if "feature_maps" in scorer.needs:  # RankFeat: the timm backbone and head apart
                # a method's own predict (not the timm forward) would not match these parts
                if own_predict:
                    log.warning("scorer %s skipped: the method has its own predict", name)
                    break
                try:
                    scores = scorer.score_feature_maps(
                        x.model.forward_features,
                        lambda maps: map_logits(x.model.forward_head(maps), index_map),
                        inputs_on_device,
                    )
                except ValueError as exc:  # e.g. a ViT's tokens instead of a feature map
                    log.warning("scorer %s skipped: %s", name, exc)
                    break
            else:
                scores = scorer.score_batches(logits_fn, inputs_on_device)
            timings[f"{name}/{split.name}"] = round(time.time() - started, 3)
            atomic_save_npy(path, scores)
            x.model.eval()  # whatever a scorer switched on stays off for the next one
        log.info(
            "model scorer %s: %.1fs (it runs its own passes)",
            name,
            sum(v for k, v in timings.items() if k.startswith(f"{name}/")),
        )
    if timings:
        atomic_write_json(timings_path, timings)
