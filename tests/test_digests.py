"""Per-file content digests (harness/digests.py): computed once per file, remembered by
(path, size, mtime_ns), and what makes CIFAR(-C) and MetaShift keys follow their content."""

from __future__ import annotations

import io
import os
import sqlite3

import numpy as np
import pytest
from PIL import Image
from shiftbench_datasets.cifar import write_c_fixture, write_fixture
from shiftbench_datasets.metashift import write_fixture as write_metashift

from harness import digests as D
from harness.config import build_dataset
from harness.keys import make_keys, run_payload

from .conftest import TINY, compose_config

OLD = 1_600_000_000_000_000_000  # an mtime (ns) long past: not "racy"


def settle(*paths):
    for p in paths:
        os.utime(p, ns=(OLD, OLD))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "digests.sqlite"
    monkeypatch.setenv(D.ENV, str(path))
    return path


@pytest.fixture
def reads(monkeypatch):
    """The files whose bytes were read (hashed)."""
    seen = []
    real = D.sha256_file

    def spy(path):
        seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(D, "sha256_file", spy)
    return seen


def test_a_file_is_read_once_and_again_only_when_it_changes(tmp_path, cache, reads):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"y" * 10)
    settle(a, b)
    first = D.file_digests([a, b])
    assert first[a] == D.hashlib.sha256(b"x" * 1000).hexdigest() and sorted(reads) == [
        "a.bin",
        "b.bin",
    ]
    assert D.file_digests([a, b]) == first and len(reads) == 2  # both remembered
    a.write_bytes(b"z" * 1000)  # same size, new content (and a new mtime)
    settle(a)
    os.utime(a, ns=(OLD + 1, OLD + 1))
    again = D.file_digests([a, b])
    assert again[a] != first[a] and again[b] == first[b] and reads[2:] == ["a.bin"]
    rows = sqlite3.connect(cache).execute("SELECT path, size, mtime_ns FROM digests").fetchall()
    assert (str(a), 1000, OLD + 1) in rows


def test_a_just_written_file_is_hashed_but_not_remembered(tmp_path, cache, reads):
    a = tmp_path / "a.bin"
    a.write_bytes(b"fresh")  # mtime = now: within the file system's granularity
    D.file_digests([a])
    D.file_digests([a])
    assert reads == ["a.bin", "a.bin"]


def test_an_unusable_cache_warns_once_and_still_digests(tmp_path, monkeypatch, reads):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(D.ENV, str(blocker / "sub" / "digests.sqlite"))  # under a file
    a = tmp_path / "a.bin"
    a.write_bytes(b"abc")
    with pytest.warns(UserWarning, match="digest cache .* unusable"):
        got = D.file_digests([a])
    assert got[a] == D.hashlib.sha256(b"abc").hexdigest()


def test_a_missing_file_is_named(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        D.files_digest(tmp_path, ["nope.npy"])


def cifar_key(root, *extra):
    c = compose_config(
        [
            *TINY,
            "dataset=cifar10_c",
            f"data_root={root}",
            "dataset.corruptions=[fog,snow]",
            "dataset.val_size=10",
            *extra,
        ]
    )
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(c, resolve=True)
    return make_keys(run_payload(c, build_dataset(c))).run_id


def test_changing_one_cifar10_c_array_changes_the_key(tmp_path, cache, reads):
    # 200 test images: 1,000 rows per corruption, 3 MB, so the changed pixel in the middle
    # lies beyond the first and last MiB that the fingerprint used to read
    written = write_fixture(tmp_path, test_size=200)
    root = write_c_fixture(tmp_path / "CIFAR-10-C", written["test"], corruptions=["fog", "snow"])
    settle(*(p for p in tmp_path.rglob("*") if p.is_file()))
    before = cifar_key(tmp_path)
    n = len(reads)
    assert cifar_key(tmp_path) == before and len(reads) == n  # skipped: nothing read again
    fog = root / "fog.npy"
    arr = np.load(fog)
    mid = len(arr) // 2  # a pixel in the middle: neither the first nor the last MiB's reach
    arr[mid, 16, 16, 0] ^= 1
    np.save(fog, arr)
    settle(fog)
    os.utime(fog, ns=(OLD + 5, OLD + 5))
    assert fog.stat().st_size == len(arr) * 32 * 32 * 3 + 128 > 2 * 2**20  # same size
    assert cifar_key(tmp_path) != before
    assert reads[n:] == ["fog.npy"]  # only the changed file was read again


def test_changing_one_cifar_batch_changes_the_key(tmp_path, cache):
    write_fixture(tmp_path)
    write_c_fixture(
        tmp_path / "CIFAR-10-C", write_fixture(tmp_path)["test"], corruptions=["fog", "snow"]
    )
    before = cifar_key(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    data = bytearray(batch.read_bytes())
    data[len(data) // 2] ^= 1
    batch.write_bytes(bytes(data))
    assert cifar_key(tmp_path) != before


def test_an_image_re_encoded_at_the_same_size_changes_the_metashift_key(tmp_path, cache):
    write_metashift(tmp_path / "metashift", "subpopulation")
    overrides = ["dataset=metashift", f"data_root={tmp_path}"]

    def key():
        from omegaconf import OmegaConf

        c = OmegaConf.to_container(compose_config([*TINY, *overrides]), resolve=True)
        return make_keys(run_payload(c, build_dataset(c))).run_id

    before = key()
    image = sorted((tmp_path / "metashift").rglob("*.jpg"))[0]
    size = image.stat().st_size
    pixels = np.asarray(Image.open(image)).copy()
    for bump in range(1, 200):  # re-encode until the JPEG has exactly the old size
        shifted = np.clip(pixels.astype(int) + bump % 7 - 3, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(shifted).save(buf, format="JPEG", quality=50 + bump % 50)
        if len(buf.getvalue()) == size and buf.getvalue() != image.read_bytes():
            break
    else:
        pytest.fail("found no re-encoding of the same size")
    image.write_bytes(buf.getvalue())
    assert image.stat().st_size == size
    assert key() != before
