"""The GPU decoding path (harness/gpudecode.py), run on the CPU: the same code with
device=cpu. Batched decode_jpeg plus the run's own transform replayed on tensors must give
the inputs the PIL path gives (up to decoder and resize rounding), the same labels and
order; what it cannot take falls back to the CPU path; forward.decode=gpu needs CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader

from harness import forward as forward_mod
from harness import run as run_mod
from harness.data import BenchmarkTransform, PILThen, Split
from harness.gpudecode import decode_loader, resolve_decode, tensor_transform

from .conftest import TINY, compose_config, run_rows

SIZES = [(40, 30), (64, 48), (30, 52), (48, 48), (35, 61)]


def smooth_jpegs(folder, n=10, fmt="JPEG", suffix=".jpg"):
    """JPEGs of several sizes and aspect ratios with smooth content (what photos are like;
    noise would measure only the decoders' rounding). No sharp edges either: at a colour edge
    nvJPEG's chroma upsampling differs from libjpeg-turbo's by up to ~45 levels (seen on an
    H200 when the red channel wrapped from 255 to 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        w, h = SIZES[k % len(SIZES)]
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack(
            [xx * 150 // w + 5 * k, yy * 255 // h, (xx + yy) * 127 // (w + h) + 60], -1
        ).astype(np.uint8)
        path = folder / f"{k}{suffix}"
        Image.fromarray(pixels).save(path, format=fmt, quality=95)
        paths.append(str(path))
    return paths


def file_split(paths):
    meta = pd.DataFrame({"label": np.arange(len(paths)) % 3})

    def load(i):
        with Image.open(paths[i]) as image:
            return image.convert("RGB")

    return Split("test", "id_test", meta, load, files=paths)


def cpu_inputs(split, transform):
    loader = DataLoader(split.with_transform(transform), batch_size=4)
    xs, ys, idx = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


@pytest.mark.parametrize("kind", ["timm", "benchmark"])
def test_decoded_batches_match_the_pil_path(tmp_path, kind):
    split = file_split(smooth_jpegs(tmp_path / "img"))
    if kind == "timm":
        model = timm.create_model("test_resnet", num_classes=3)
        transform = PILThen(
            timm.data.create_transform(
                **timm.data.resolve_model_data_config(model), is_training=False
            )
        )
    else:
        transform = BenchmarkTransform((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (32, 32))
    loader = decode_loader(split, transform, 4, torch.device("cpu"))
    assert loader is not None and len(loader) == 3
    got = [batch for batch in loader]
    x = torch.cat([b[0] for b in got])
    ref_x, ref_y, ref_i = cpu_inputs(split, transform)
    assert x.shape == ref_x.shape and x.dtype == torch.float32
    assert torch.equal(torch.cat([b[1] for b in got]), ref_y)
    assert torch.equal(torch.cat([b[2] for b in got]), ref_i)
    # on the CPU both decode with libjpeg-turbo: only the resize rounds differently (PIL's
    # vs torch's antialiased filter), by a level of 255 here and there (measured: max 1,
    # mean 0.15-0.17); nvJPEG on a GPU may differ by a few levels more
    scale = 255 * (0.5 if kind == "timm" else 0.229)  # levels per normalised unit
    diff = (x - ref_x).abs() * scale
    assert diff.mean() < 0.5 and diff.max() < 2.5, (diff.mean(), diff.max())


def test_what_it_cannot_take_stays_on_the_cpu(tmp_path):
    from torchvision import transforms as T

    paths = smooth_jpegs(tmp_path / "img", n=2)
    bench_t = BenchmarkTransform((0.5,) * 3, (0.5,) * 3, (16, 16))
    cpu = torch.device("cpu")
    assert decode_loader(file_split(paths), bench_t, 2, cpu) is not None
    # a PNG among the files, an array split (no files), a transform step not replayable
    png = smooth_jpegs(tmp_path / "png", n=1, fmt="PNG", suffix=".png")
    assert decode_loader(file_split([*paths, *png]), bench_t, 2, cpu) is None
    arrays = Split("a", "id_test", pd.DataFrame({"label": [0]}), lambda i: np.zeros((4, 4, 3)))
    assert decode_loader(arrays, bench_t, 2, cpu) is None
    odd = PILThen(T.Compose([T.Grayscale(3), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]))
    assert tensor_transform(odd) is None
    assert decode_loader(file_split(paths), odd, 2, cpu) is None
    # a subset keeps each row's file
    sub = file_split(paths + paths).subset([3, 0])
    assert sub.files == [paths[1], paths[0]]


def test_decode_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_decode("auto", cpu) == "cpu" and resolve_decode("auto", cuda) == "gpu"
    assert resolve_decode("cpu", cuda) == "cpu" and resolve_decode("gpu", cuda) == "gpu"
    with pytest.raises(ValueError, match="forward.decode=gpu needs a CUDA device"):
        resolve_decode("gpu", cpu)
    with pytest.raises(ValueError, match=r"forward.decode must be one of \['auto', 'cpu', 'gpu'\]"):
        run_mod.compose(compose_config([*TINY, "forward.decode=nvidia"]))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        run_mod.compose(compose_config([*TINY, "forward.decode=gpu"]))


def test_a_run_on_image_folders_through_the_decode_path(tmp_path, monkeypatch, caplog):
    """The forward stage's wiring, with the decode path forced on the CPU: the same rows as
    the PIL path up to rounding, and the same keys (the decoder is not in any key)."""
    for split in ("train", "val", "test"):
        for cls in ("b", "a"):
            smooth_jpegs(tmp_path / "folders" / split / cls, n=3)
    base = [
        *TINY,
        "dataset=folders",
        "dataset.class_map=[b,a]",
        "dataset.image_size=16",
        f"data_root={tmp_path}",
        "eval=minimal",
        "trainer.epochs=0",
        "model.label_map=[0,1]",
        "model.transform=timm",
    ]
    plain = run_mod.run(compose_config([*base, f"results_dir={tmp_path / 'cpu'}"]))
    monkeypatch.setattr(forward_mod, "resolve_decode", lambda mode, device: "gpu")
    caplog.set_level("INFO", logger="harness.forward")
    decoded = run_mod.run(compose_config([*base, f"results_dir={tmp_path / 'gpu'}"]))
    assert "decoding JPEG on cpu: train, val, test" in caplog.text
    assert decoded["run_id"] == plain["run_id"]
    a = run_rows(tmp_path / "cpu" / "runs" / plain["run_id"]).set_index(["split", "metric"])
    b = run_rows(tmp_path / "gpu" / "runs" / decoded["run_id"]).set_index(["split", "metric"])
    assert list(a.index) == list(b.index) and (a["n"] == b["n"]).all()
    assert (a["forward_key"] == b["forward_key"]).all()
    out_a = np.load(next((tmp_path / "cpu" / "runs").glob("*/outputs/test-*.npz")))
    out_b = np.load(next((tmp_path / "gpu" / "runs").glob("*/outputs/test-*.npz")))
    assert np.array_equal(out_a["index"], out_b["index"])
    assert np.allclose(out_a["logits"], out_b["logits"], atol=0.05)


def test_a_file_nothing_decodes_is_named_from_the_prefetch_thread(tmp_path):
    paths = smooth_jpegs(tmp_path / "img", n=3)
    Path(paths[1]).write_bytes(b"\xff\xd8 not a jpeg")
    bench_t = BenchmarkTransform((0.5,) * 3, (0.5,) * 3, (16, 16))
    loader = decode_loader(file_split(paths), bench_t, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"cannot decode .*1\.jpg"):
        list(loader)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA: benchmarks/gpu_check.sh runs it on a GPU"
)
def test_nvjpeg_on_cuda_matches_the_pil_path(tmp_path):
    split = file_split(smooth_jpegs(tmp_path / "img", n=20))
    model = timm.create_model("test_resnet", num_classes=3)
    config = timm.data.resolve_model_data_config(model)
    transform = PILThen(timm.data.create_transform(**config, is_training=False))
    loader = decode_loader(split, transform, 8, torch.device("cuda"))
    got = list(loader)
    x = torch.cat([b[0] for b in got]).cpu()
    ref_x, ref_y, _ = cpu_inputs(split, transform)
    assert got[0][0].device.type == "cuda"
    assert torch.equal(torch.cat([b[1] for b in got]), ref_y)
    diff = (x - ref_x).abs() * 255 * 0.5  # levels of 255
    assert diff.mean() < 1.5 and diff.max() < 24, (diff.mean(), diff.max())


def test_a_batch_leaves_its_worker_as_one_tensor_and_workers_change_nothing(tmp_path):
    """Loader workers hand over one shared-memory segment per batch (a tensor per file
    exhausted the file descriptors of a 16-core GPU machine: EBADF in torch's fd sharing),
    and the batches are the same with and without workers."""
    from harness.gpudecode import collate_bytes, split_bytes

    paths = smooth_jpegs(tmp_path / "img", n=11)
    split = file_split(paths)
    items = [
        (torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8), 0, i)
        for i, p in enumerate(paths[:4])
    ]
    flat, lengths, _, index = collate_bytes(items)
    assert isinstance(flat, torch.Tensor) and flat.dim() == 1
    assert [bytes(b.numpy()) for b in split_bytes(flat, lengths)] == [
        Path(p).read_bytes() for p in paths[:4]
    ]
    assert index.tolist() == [0, 1, 2, 3]
    bench_t = BenchmarkTransform((0.5,) * 3, (0.5,) * 3, (16, 16))
    cpu = torch.device("cpu")
    with_workers = list(decode_loader(split, bench_t, 4, cpu, num_workers=2))
    without = list(decode_loader(split, bench_t, 4, cpu))
    assert len(with_workers) == len(without) == 3
    for a, b in zip(with_workers, without, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_the_device_benchmark_runs_end_to_end_on_the_cpu(tmp_path):
    """benchmarks/gpu_decode.py, the device check's benchmark, on a few images on the CPU:
    a device session has minutes, so a script broken by a refactor must fail here first."""
    import json
    import subprocess
    import sys

    from .conftest import ROOT

    out = tmp_path / "gpu_decode.json"
    args = ["--images", "24", "--batch-size", "8", "--device", "cpu", "--model", "test_resnet"]
    args += ["--workers", "0", "--repeats", "1", "--cpu-decode", "--out", str(out)]
    args += ["--profile", str(tmp_path / "profile.txt")]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_decode.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["images"] == 24 and record["device"] == "cpu"
    for figure in ("decode", "decode_only", "decode_grouped_transform", "forward"):
        assert record[f"bare_{figure}_images_per_s"] > 0
    assert "Self CPU" in (tmp_path / "profile.txt").read_text()
    for mode in ("harness_auto", "harness_auto-waiting", "harness_cpu"):
        assert len(record[mode]["forward_images_per_s_each"]) == 1
        assert 0 < record[mode]["forward_split_seconds"] <= record[mode]["run_seconds"]
    bound = min(record["bare_decode_images_per_s"], record["bare_forward_images_per_s"])
    assert record["ratio"] == round(record["harness_auto"]["forward_images_per_s"] / bound, 3)
