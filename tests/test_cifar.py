"""CIFAR-10/100 pickles, CIFAR-10-C (released layout, memory-mapped), CIFAR-10.1, verify()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from shiftbench_datasets import corruptions as C
from shiftbench_datasets.cifar import (
    Cifar,
    write_c_fixture,
    write_cifar10_1_fixture,
    write_fixture,
)

from harness import run as run_mod
from harness.data import DataError

from .conftest import TINY, compose_config, run_rows


def adapter(tmp_path, **kw):
    return Cifar(root=str(tmp_path), val_size=10, **kw)


def test_cifar10_pickles_are_read_pixel_exact(tmp_path):
    written = write_fixture(tmp_path)
    bench = adapter(tmp_path).load(tmp_path)
    assert bench.classes == [f"class_{i}" for i in range(10)]
    assert {k: s.role for k, s in bench.splits.items()} == {
        "train": "train",
        "val": "val",
        "test": "id_test",
    }
    images, labels = written["train"]
    train, val = bench.splits["train"], bench.splits["val"]
    assert len(train) + len(val) == len(labels) == 40 and len(val) == 10
    for split in (train, val):  # the channel-major rows become the same HWC images
        for i in range(len(split)):
            src = split.meta["source_index"][i]
            assert np.array_equal(split.load_image(i), images[src])
            assert split.labels[i] == labels[src]
    test_images, test_labels = written["test"]
    assert np.array_equal(bench.splits["test"].load_image(3), test_images[3])
    assert bench.splits["test"].labels.tolist() == test_labels.tolist()


def test_cifar100_uses_the_fine_labels(tmp_path):
    written = write_fixture(tmp_path, "cifar100")
    bench = Cifar(variant="cifar100", root=str(tmp_path), val_size=5).load(tmp_path)
    assert bench.num_classes == 100
    assert bench.splits["test"].labels.tolist() == written["test"][1].tolist()


def test_cifar10_c_splits_per_corruption_and_severity_are_memory_mapped(tmp_path):
    written = write_fixture(tmp_path)
    write_c_fixture(tmp_path / "CIFAR-10-C", written["test"])
    cif = adapter(tmp_path, corruptions="all", corruptions_root=str(tmp_path / "CIFAR-10-C"))
    assert cif.verify() == []
    bench = cif.load(tmp_path)
    corrupted = {k: s for k, s in bench.splits.items() if s.role == "shift_test"}
    assert len(corrupted) == 19 * 5
    assert set(C.EXTRA_CORRUPTIONS) <= {s.meta["corruption"][0] for s in corrupted.values()}
    n = len(written["test"][1])
    fog3 = bench.splits["fog-3"]
    assert fog3.meta[
        ["corruption", "severity", "corruption_source"]
    ].drop_duplicates().values.tolist() == [["fog", 3, "released"]]
    array = np.load(tmp_path / "CIFAR-10-C" / "fog.npy")
    for i in range(n):  # severity-major: row (s-1)·N + i
        image = fog3.load_image(i)
        assert image[0, 0, 0] == 3 and np.array_equal(image, array[2 * n + i])
    assert fog3.labels.tolist() == written["test"][1].tolist()
    assert isinstance(fog3.load_image.__self__._array, np.memmap)  # mapped, not loaded


def test_severities_and_corruptions_can_be_chosen(tmp_path):
    written = write_fixture(tmp_path)
    write_c_fixture(tmp_path / "C", written["test"], corruptions=["fog", "snow"])
    bench = adapter(
        tmp_path, corruptions=["snow"], severities=[5, 1], corruptions_root=str(tmp_path / "C")
    ).load(tmp_path)
    assert sorted(k for k, s in bench.splits.items() if s.role == "shift_test") == [
        "snow-1",
        "snow-5",
    ]
    assert bench.splits["snow-5"].load_image(0)[0, 0, 0] == 5
    with pytest.raises(ValueError, match="unknown corruptions \\['smoke'\\]"):
        adapter(tmp_path, corruptions=["smoke"], corruptions_root=str(tmp_path / "C"))


def test_mapped_rows_hand_pages_back_and_stay_correct(tmp_path, monkeypatch):
    array = np.arange(40 * 32 * 32 * 3, dtype=np.uint32).astype(np.uint8).reshape(40, 32, 32, 3)
    np.save(tmp_path / "a.npy", array)
    monkeypatch.setattr(C, "RELEASE_BYTES", 3 * 3072)
    monkeypatch.setattr(C.MappedRows, "_read_since_release", 0)
    # two readers of 10 rows each, as two severities of one file: the budget is shared
    first, second = (
        C.MappedRows(tmp_path / "a.npy", 0, 10),
        C.MappedRows(tmp_path / "a.npy", 10, 20),
    )
    released = []
    for rows in (first, second):
        monkeypatch.setattr(
            rows, "release", lambda real=rows.release, r=rows: (released.append(r), real())
        )
    for i in range(5):
        assert np.array_equal(first[i], array[i])  # still right after each release
        assert np.array_equal(second[i], array[10 + i])
    # 10 rows read: released 3 times, each time both open readers (a WeakSet: in any order)
    assert len(released) == 6
    assert all({id(r) for r in released[k : k + 2]} == {id(first), id(second)} for k in (0, 2, 4))
    with pytest.raises(IndexError):
        first[10]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads RssFile (Linux)")
def test_mapped_pages_do_not_stay_resident(tmp_path, monkeypatch):
    """Reading 24 MB through readers of 3 MB each keeps < 8 MB of the file mapped."""

    def rss_file_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssFile:"):
                return int(line.split()[1])
        raise AssertionError("no RssFile")

    n = 8 * 1024
    np.save(tmp_path / "big.npy", np.ones((n, 32, 32, 3), np.uint8))
    monkeypatch.setattr(C, "RELEASE_BYTES", 1 << 20)
    readers = [C.MappedRows(tmp_path / "big.npy", k, k + 1024) for k in range(0, n, 1024)]
    before = rss_file_kib()
    for rows in readers:
        for i in range(len(rows)):
            rows[i]
    assert rss_file_kib() - before < 8 * 1024


def test_cifar10_1_split_when_present(tmp_path):
    write_fixture(tmp_path)
    assert (
        "cifar10_1"
        not in adapter(tmp_path, cifar10_1_root=str(tmp_path / "CIFAR-10.1")).load(tmp_path).splits
    )
    write_cifar10_1_fixture(tmp_path / "CIFAR-10.1", n=6)
    bench = adapter(tmp_path, cifar10_1_root=str(tmp_path / "CIFAR-10.1")).load(tmp_path)
    split = bench.splits["cifar10_1"]
    data = np.load(tmp_path / "CIFAR-10.1" / "cifar10.1_v6_data.npy")
    assert split.role == "shift_test" and len(split) == 6
    assert np.array_equal(split.load_image(5), data[5])


@pytest.fixture
def c_layout(tmp_path):
    written = write_fixture(tmp_path)
    root = write_c_fixture(tmp_path / "CIFAR-10-C", written["test"], corruptions=["fog", "snow"])
    return tmp_path, root


def problems(tmp_path, root):
    return adapter(tmp_path, corruptions=["fog", "snow"], corruptions_root=str(root)).verify()


def test_verify_missing_folder(tmp_path):
    write_fixture(tmp_path)
    found = problems(tmp_path, tmp_path / "nowhere")
    assert len(found) == 1 and "nowhere does not exist" in found[0]
    assert "zenodo.org/record/2535967" in found[0]  # how to get the corruptions
    nothing = adapter(tmp_path / "empty").verify()
    assert len(nothing) == 1 and "cifar-10-python.tar.gz" in nothing[0]
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert any(
        "data_batch_3 is missing" in p and "cifar-10-python.tar.gz" in p
        for p in adapter(tmp_path).verify()
    )


def test_verify_truncated_npy(c_layout):
    tmp_path, root = c_layout
    path = root / "fog.npy"
    path.write_bytes(path.read_bytes()[:-100])
    (found,) = problems(tmp_path, root)
    assert f"{path} is truncated" in found
    path.write_bytes(b"\x93NUMPY")  # the header itself is cut
    assert "is not a readable .npy file" in problems(tmp_path, root)[0]


def test_verify_wrong_shape(c_layout):
    tmp_path, root = c_layout
    np.save(root / "snow.npy", np.zeros((50, 28, 28, 3), np.uint8))
    (found,) = problems(tmp_path, root)
    assert "snow.npy has shape (50, 28, 28, 3), expected (5·N, 32, 32, 3)" in found
    np.save(root / "snow.npy", np.zeros((50, 32, 32, 3), np.float32))
    assert "dtype float32, expected uint8" in problems(tmp_path, root)[0]


def test_verify_labels_length_mismatch(c_layout):
    tmp_path, root = c_layout
    np.save(root / "labels.npy", np.zeros(49, np.uint8))
    found = problems(tmp_path, root)
    assert len(found) == 2 and all("has 49 labels but" in p for p in found)


def test_verify_empty_split(c_layout):
    tmp_path, root = c_layout
    np.save(root / "fog.npy", np.zeros((0, 32, 32, 3), np.uint8))
    assert any("fog.npy is empty (0 images)" in p for p in problems(tmp_path, root))
    with pytest.raises(DataError, match="fog.npy is empty"):
        adapter(tmp_path, corruptions=["fog"], corruptions_root=str(root)).check()


def test_a_run_on_cifar10_c_reports_each_corruption_and_severity(tmp_path):
    written = write_fixture(tmp_path)
    write_c_fixture(tmp_path / "CIFAR-10-C", written["test"], corruptions=["fog", "snow"])
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=cifar10_c",
                f"data_root={tmp_path}",
                f"results_dir={tmp_path / 'res'}",
                "eval=minimal",
                "dataset.corruptions=[fog,snow]",
                "dataset.severities=[1,5]",
                "dataset.val_size=10",
            ]
        )
    )
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    acc = rows[(rows["metric"] == "accuracy") & (rows["scorer"] == "")]
    per_split = dict(zip(acc["split"], acc["split_role"], strict=True))
    assert {k: v for k, v in per_split.items() if v == "shift_test"} == {
        name: "shift_test" for name in ("fog-1", "fog-5", "snow-1", "snow-5")
    }
    import pandas as pd

    meta = pd.read_parquet(run_dir / "meta" / "snow-5.parquet")
    assert set(meta["severity"]) == {5} and set(meta["corruption"]) == {"snow"}


def test_harness_verify_cli_names_the_problem_and_passes_on_the_fixture(tmp_path):
    from .conftest import run_cli

    args = ["dataset=cifar10_c", f"data_root={tmp_path}", "dataset.corruptions=[fog]"]
    written = write_fixture(tmp_path)
    missing = run_cli(args, cwd=tmp_path, module="harness.verify", check=False)
    assert missing.returncode == 1
    assert f"dataset.corruptions_root={tmp_path}/CIFAR-10-C does not exist" in missing.stdout
    write_c_fixture(tmp_path / "CIFAR-10-C", written["test"], corruptions=["fog"])
    assert "OK" in run_cli(args, cwd=tmp_path, module="harness.verify").stdout
