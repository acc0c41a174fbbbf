"""Speed options of evaluation forward passes (harness/forward.py): loading with one thread,
loader workers shared by every split, the batch-size fallback on out-of-memory errors,
autocast precision, channels_last, torch.compile, float16 features in the Outputs cache."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from harness import forward as forward_mod
from harness import run as run_mod
from harness.data import BenchmarkTransform, array_split
from harness.forward import (
    ForwardOptions,
    Outputs,
    SplitLoader,
    auto_num_workers,
    forward_split,
    prepare_forward,
)
from harness.models import forward_outputs
from harness.rundir import RunDir

from .conftest import TINY, compose_config, run_rows

EVAL_ONLY = ["trainer.epochs=0", "+model.kwargs.num_classes=4", "eval=minimal"]


def tiny_split(name: str, n: int = 10, seed: int = 0, transform=None):
    images = np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    meta = pd.DataFrame({"label": np.arange(n) % 4})
    split = array_split(name, "id_test", images, meta)
    return split.with_transform(transform or BenchmarkTransform((0.5,) * 3, (0.5,) * 3))


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=4).eval()


def eval_run(tmp_path, *extra):
    return run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", *EVAL_ONLY, *extra]))


def values(run_dir) -> pd.Series:
    rows = run_rows(run_dir)
    key = rows["split"] + "/" + rows["scorer"] + "/" + rows["metric"] + "/" + rows["group_value"]
    return rows.set_index(key)["value"].sort_index()


def test_examples_are_loaded_with_one_thread_and_the_forward_keeps_the_others():
    seen = {"load": set(), "forward": set()}
    plain = BenchmarkTransform((0.5,) * 3, (0.5,) * 3)

    def transform(image):
        seen["load"].add(torch.get_num_threads())
        return plain(image)

    model = tiny_model()

    def predict(x):
        seen["forward"].add(torch.get_num_threads())
        return forward_outputs(model, x)

    torch.set_num_threads(2)
    out = forward_split(
        model, tiny_split("a", transform=transform), 4, torch.device("cpu"), predict=predict
    )
    assert seen == {"load": {1}, "forward": {2}} and torch.get_num_threads() == 2
    reference = forward_split(model, tiny_split("a"), 4, torch.device("cpu"))
    np.testing.assert_array_equal(out.logits, reference.logits)


def test_out_of_memory_halves_the_batch_and_gives_the_outputs_of_an_unfailed_pass(caplog):
    model, tried = tiny_model(), []

    def small_memory(x):  # a device that holds at most 3 examples at once
        tried.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward_outputs(model, x)

    split = tiny_split("a", n=19)
    with caplog.at_level(logging.WARNING, logger="harness.forward"):
        got = forward_split(model, split, 8, torch.device("cpu"), predict=small_memory)
    want = forward_split(model, split, 8, torch.device("cpu"))
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.features, want.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.index, np.arange(19))
    assert tried[:3] == [8, 4, 2]  # halved until it fits, then kept for the other batches
    assert max(tried[3:]) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "eval a: out of memory at batch size 8; retrying with 4",
        "eval a: out of memory at batch size 4; retrying with 2",
    ]


def test_other_errors_are_not_retried():
    model = tiny_model()

    def broken(x):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        forward_split(model, tiny_split("a"), 4, torch.device("cpu"), predict=broken)


def test_out_of_memory_in_a_run_is_in_its_log_and_its_rows_equal_an_unfailed_run(
    tmp_path, monkeypatch
):
    clean = eval_run(tmp_path / "clean")

    def small_memory(model, x):
        if len(x) > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return forward_outputs(model, x)

    monkeypatch.setattr("harness.forward.forward_outputs", small_memory)
    failed = eval_run(tmp_path / "oom")
    assert failed["run_id"] == clean["run_id"]
    log = (tmp_path / "oom" / "runs" / failed["run_id"] / "run.log").read_text()
    assert "out of memory at batch size 16; retrying with 8" in log
    assert "out of memory at batch size 8; retrying with 4" in log
    pd.testing.assert_series_equal(
        values(tmp_path / "oom" / "runs" / failed["run_id"]),
        values(tmp_path / "clean" / "runs" / clean["run_id"]),
        rtol=1e-5,
    )


def test_loader_workers_are_started_once_for_every_split():
    class Pid:
        def __call__(self, image):
            return torch.tensor([float(os.getpid())])

    splits = [tiny_split(name, n=5, transform=Pid()) for name in ("a", "b", "c")]
    shared = SplitLoader(splits, batch_size=2, num_workers=1)
    pids = {}
    for split in splits:
        batches = list(shared.loader(split.name))
        pids[split.name] = {int(p) for x, _, _ in batches for p in x.flatten()}
        # each split's rows, in order
        assert torch.cat([i for _, _, i in batches]).tolist() == list(range(5))
    assert len(set.union(*pids.values())) == 1 and os.getpid() not in pids["a"]
    per_split = SplitLoader(splits, batch_size=2, num_workers=1, persistent=False)
    other = {int(p) for x, _, _ in per_split.loader("a") for p in x.flatten()}
    assert other != pids["a"]  # a loader per split starts its own worker


def test_a_run_with_workers_gives_the_rows_of_a_run_without(tmp_path):
    without = eval_run(tmp_path / "w0", "trainer.num_workers=0")
    with_workers = eval_run(tmp_path / "w1", "trainer.num_workers=1")
    assert with_workers["run_id"] == without["run_id"]  # workers are not in the key
    pd.testing.assert_series_equal(
        values(tmp_path / "w1" / "runs" / without["run_id"]),
        values(tmp_path / "w0" / "runs" / without["run_id"]),
        check_exact=True,
    )


def test_auto_workers_follow_the_device():
    assert auto_num_workers(torch.device("cpu"), cpus=16) == 0
    assert auto_num_workers(torch.device("cuda"), cpus=16) == 8
    assert auto_num_workers(torch.device("cuda"), cpus=4) == 3
    assert auto_num_workers(torch.device("cuda"), cpus=1) == 1


def test_auto_workers_are_resolved_and_recorded(tmp_path):
    summary = eval_run(tmp_path, "trainer.num_workers=auto")
    config = (tmp_path / "runs" / summary["run_id"] / "config.yaml").read_text()
    assert "num_workers: 0" in config  # this machine has no GPU


def test_autocast_precision_changes_the_numbers_and_the_keys(tmp_path):
    model, split = tiny_model(), tiny_split("a")
    fp32 = forward_split(model, split, 4, torch.device("cpu"))
    bf16 = forward_split(
        model, split, 4, torch.device("cpu"), options=ForwardOptions(precision="bf16")
    )
    assert bf16.logits.dtype == np.float32 and not np.array_equal(bf16.logits, fp32.logits)
    np.testing.assert_allclose(bf16.logits, fp32.logits, atol=0.1)
    a = eval_run(tmp_path)
    b = eval_run(tmp_path, "precision=bf16")
    assert not b["skipped"] and b["run_id"] != a["run_id"]
    payload = json.loads((tmp_path / "runs" / b["run_id"] / "key.json").read_text())["payload"]
    assert payload["outputs"] == {"precision": "bf16"}
    fp32_payload = json.loads((tmp_path / "runs" / a["run_id"] / "key.json").read_text())
    assert "outputs" not in fp32_payload["payload"]  # existing runs keep their keys


def test_channels_last_and_compile_give_the_same_outputs():
    split = tiny_split("a", n=8)
    want = forward_split(tiny_model(), split, 4, torch.device("cpu"))
    for options in (ForwardOptions(channels_last=True), ForwardOptions(compile="eager")):
        model = tiny_model()
        predict = prepare_forward(model, None, options)
        got = forward_split(model, split, 4, torch.device("cpu"), predict=predict, options=options)
        np.testing.assert_allclose(got.logits, want.logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.features, want.features, rtol=1e-5, atol=1e-6)
    model = tiny_model()
    prepare_forward(model, None, ForwardOptions(channels_last=True))
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_float16_features_halve_the_cache_and_load_as_float32(tmp_path):
    rng = np.random.default_rng(0)
    out = Outputs(
        rng.normal(size=(50, 4)).astype(np.float32),
        rng.normal(size=(50, 256)).astype(np.float32),
        np.arange(50) % 4,
        np.arange(50),
    )
    out.save(tmp_path / "a.npz")
    out.save(tmp_path / "b.npz", "float16")
    back = Outputs.load(tmp_path / "b.npz")
    assert back.features.dtype == np.float32
    np.testing.assert_array_equal(back.features, out.features.astype(np.float16))
    np.testing.assert_array_equal(back.logits, out.logits)  # logits stay float32
    size_a, size_b = (tmp_path / "a.npz").stat().st_size, (tmp_path / "b.npz").stat().st_size
    assert size_b < 0.6 * size_a


def test_a_run_with_float16_features_is_its_own_run(tmp_path):
    a = eval_run(tmp_path)
    b = eval_run(tmp_path, "forward.features_dtype=float16")
    assert not b["skipped"] and b["run_id"] != a["run_id"]
    rd = RunDir(tmp_path, b["run_id"])
    cached = sorted((rd.path / "outputs").glob("*.npz"))
    with np.load(next(p for p in cached if p.name != "head.npz")) as z:
        assert z["features"].dtype == np.float16 and z["logits"].dtype == np.float32
    accuracy = values(rd.path).filter(like="//accuracy/")
    pd.testing.assert_series_equal(
        accuracy, values(RunDir(tmp_path, a["run_id"]).path).filter(like="//accuracy/")
    )


def test_pinned_memory_follows_the_device_unless_set():
    c = {"precision": "fp32", "forward": {"pin_memory": "auto"}}
    assert forward_mod.forward_options(c, torch.device("cuda")).pin_memory
    assert not forward_mod.forward_options(c, torch.device("cpu")).pin_memory
    c["forward"]["pin_memory"] = False
    assert not forward_mod.forward_options(c, torch.device("cuda")).pin_memory


def test_training_batches_are_made_with_one_thread_and_the_update_keeps_the_others(
    tmp_path, monkeypatch
):
    from harness import train
    from methods.erm import ERM

    seen = {"load": set(), "update": set()}
    real_item, real_update = train.GroupedSplit.__getitem__, ERM.update

    def item(self, i):
        seen["load"].add(torch.get_num_threads())
        return real_item(self, i)

    def update(self, batch):
        seen["update"].add(torch.get_num_threads())
        return real_update(self, batch)

    monkeypatch.setattr(train.GroupedSplit, "__getitem__", item)
    monkeypatch.setattr(ERM, "update", update)
    run_mod.run(compose_config([*TINY, f"results_dir={tmp_path}", "threads=2", "eval=minimal"]))
    assert seen == {"load": {1}, "update": {2}}


class _FakeEvent:
    """torch.cuda.Event's stand-in: records when it is recorded and waited for."""

    log: list[str] = []

    def __init__(self) -> None:
        self.n = sum(entry.startswith("record") for entry in self.log)

    def record(self, stream: object = None) -> None:
        assert stream == "stream of cuda"  # the device's current stream
        self.log.append(f"record {self.n}")

    def synchronize(self) -> None:
        self.log.append(f"wait {self.n}")


def test_outputs_come_to_the_host_one_batch_late_on_cuda(monkeypatch):
    """harness/hostcopies.py on the CUDA path (the device stood in for; the copies are CPU
    copies here): batch k is waited for only after batch k+1 is queued, once each, kept as
    a copy (not the pinned buffer), in order; forward_split's outputs through that path
    equal the CPU path's."""
    from harness import hostcopies

    _FakeEvent.log = []
    monkeypatch.setattr(hostcopies.torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(hostcopies.torch.cuda, "current_stream", lambda d: f"stream of {d}")
    host = hostcopies.HostCopies(torch.device("cuda"))
    batches = [(torch.full((2, 3), float(k)), torch.full((2, 5), -float(k))) for k in range(3)]
    for k, batch in enumerate(batches):
        host.add([batch])
        assert len(host.logits) == k  # the batch before it only
    assert _FakeEvent.log == ["record 0", "record 1", "wait 0", "record 2", "wait 1"]
    host.settle()
    host.settle()  # nothing left: waits for nothing
    assert _FakeEvent.log[-1] == "wait 2" and len(_FakeEvent.log) == 6
    for (logits, feats), got_l, got_f in zip(batches, host.logits, host.features, strict=True):
        assert torch.equal(got_l, logits) and torch.equal(got_f, feats)
        assert got_l.data_ptr() != logits.data_ptr()  # out of the (pinned) buffer
    # forward_split with that path (a CPU model; the device only names the path)
    model, split = tiny_model(), tiny_split("a", n=11)
    want = forward_split(model, split, 4, torch.device("cpu"))
    real_host = forward_mod.HostCopies
    monkeypatch.setattr(forward_mod, "HostCopies", lambda device: real_host(torch.device("cuda")))
    _FakeEvent.log = []
    got = forward_split(model, split, 4, torch.device("cpu"))
    np.testing.assert_array_equal(got.logits, want.logits)
    np.testing.assert_array_equal(got.features, want.features)
    assert _FakeEvent.log.count("wait 0") == 1 and len(_FakeEvent.log) == 6  # 3 batches
