"""OOD sets read through OpenOOD's image lists (`<path relative to root> <label>` per line):
only the listed images, in the list's order; a missing list or image is named."""

from __future__ import annotations

import pytest
from shiftbench_datasets.folders import OODFolder, write_flat_folder

import harness.run as run_mod

from .conftest import TINY, compose_config, run_rows


def openood_layout(tmp_path):
    """images_classic/<set>/... and benchmark_imglist/cifar10/test_<set>.txt (synthetic)."""
    root = tmp_path / "images_classic"
    svhn = write_flat_folder(root / "svhn" / "test", n=6)
    listed = [svhn[4], svhn[1], svhn[2]]  # a subset, in the list's own order
    lists = tmp_path / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    text = "".join(f"{p.relative_to(root)} 0\n" for p in listed)
    (lists / "test_svhn.txt").write_text(text)
    return root, lists / "test_svhn.txt", listed


def test_only_the_listed_images_in_the_lists_order(tmp_path):
    root, image_list, listed = openood_layout(tmp_path)
    adapter = OODFolder(name="svhn", root=str(root), image_list=str(image_list))
    assert adapter.verify() == []
    split = adapter.load(tmp_path / "cache").splits["ood_svhn"]
    assert list(split.meta["path"]) == [str(p) for p in listed]
    plain = OODFolder(name="svhn", root=str(root / "svhn"))
    assert len(plain.load(tmp_path / "cache").splits["ood_svhn"].meta) == 6
    assert adapter.fingerprint() != plain.fingerprint()
    # another list over the same folder is other data
    before = adapter.fingerprint()
    image_list.write_text(f"{listed[0].relative_to(root)} 0\n")
    after = OODFolder(name="svhn", root=str(root), image_list=str(image_list)).fingerprint()
    assert after != before


def test_a_missing_list_image_or_a_bad_line_is_named(tmp_path):
    root, image_list, listed = openood_layout(tmp_path)
    missing = OODFolder(name="svhn", root=str(root), image_list=str(tmp_path / "nope.txt"))
    assert "image_list" in missing.verify()[0] and "nope.txt" in missing.verify()[0]
    listed[0].unlink()
    problems = OODFolder(name="svhn", root=str(root), image_list=str(image_list)).verify()
    assert problems and "1 images of" in problems[0] and str(listed[0]) in problems[0]
    image_list.write_text("a.png b c\n")
    with pytest.raises(ValueError, match="line 1: expected '<path> <label>'"):
        OODFolder(name="svhn", root=str(root), image_list=str(image_list)).listed()


def test_an_openood_list_as_an_ood_set_of_a_run(tmp_path):
    root, image_list, _ = openood_layout(tmp_path)
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[1]",
                f"results_dir={tmp_path / 'res'}",
                f"ood_sets=[{{name: svhn, root: {root}, image_list: {image_list}}}]",
                "eval=minimal",
            ]
        )
    )
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    auroc = rows[(rows["split"] == "ood_svhn") & (rows["metric"] == "auroc_vs_id_test")]
    assert len(auroc) == 1 and auroc["n"].item() == 24 + 3
