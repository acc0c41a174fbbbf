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


# ---------------------------------------------------------------- ID splits from OpenOOD lists


def openood_id_layout(tmp_path):
    """images_largescale/imagenet_1k/{train,val}/<wnid>/ and synthetic ID lists in OpenOOD's
    format whose label order is not the folders' sorted order; one image left unlisted."""
    from shiftbench_datasets.folders import write_class_folders

    root = tmp_path / "openood"
    images = root / "images_largescale"
    order = ["n03", "n01", "n02"]  # label k is order[k]
    lists = root / "benchmark_imglist" / "imagenet200"
    lists.mkdir(parents=True)
    for part in ("train", "val", "test"):
        written = write_class_folders(images / "imagenet_1k" / part, order, per_class=3, seed=len(part))  # fmt: skip
        listed = [p for p in written if not p.name.endswith("_2.jpg")][::-1]  # 2 per class
        text = "".join(f"{p.relative_to(images)} {order.index(p.parent.name)}\n" for p in listed)
        (lists / f"{part}_imagenet200.txt").write_text(text)
    splits = {
        part: {"layout": "openood_list", "path": "images_largescale", "role": role,
               "image_list": f"benchmark_imglist/imagenet200/{part}_imagenet200.txt"}
        for part, role in (("train", "train"), ("val", "val"), ("test", "id_test"))
    }  # fmt: skip
    return root, splits, order


def test_id_splits_read_from_openood_lists_with_their_classes(tmp_path):
    from shiftbench_datasets.folders import ImageFolders

    root, splits, order = openood_id_layout(tmp_path)
    adapter = ImageFolders(name="imagenet200", root=str(root), splits=splits)
    assert adapter.verify() == []
    bench = adapter.load(tmp_path / "cache")
    assert bench.classes == order  # from the lists' folders, in label order (not sorted)
    for part in ("train", "val", "test"):
        meta = bench.splits[part].meta
        lines = (root / splits[part]["image_list"]).read_text().splitlines()
        assert len(meta) == len(lines) == 6  # only the listed images, in the list's order
        for (path, label, folder), line in zip(meta[["path", "label", "class_folder"]].itertuples(index=False), lines, strict=True):  # fmt: skip
            rel, lab = line.rsplit(" ", 1)
            assert path == str(root / "images_largescale" / rel) and label == int(lab)
            assert bench.classes[label] == folder
    # another list is other data
    before = adapter.fingerprint()
    test_list = root / splits["test"]["image_list"]
    test_list.write_text("".join(test_list.read_text().splitlines(keepends=True)[:-1]))
    assert ImageFolders(name="imagenet200", root=str(root), splits=splits).fingerprint() != before


def test_openood_id_list_problems_are_named(tmp_path):
    from shiftbench_datasets.folders import ImageFolders

    root, splits, _ = openood_id_layout(tmp_path)
    (root / splits["val"]["image_list"]).unlink()
    problems = ImageFolders(name="x", root=str(root), splits=splits, how="get it there").verify()
    assert len(problems) == 1 and "val_imagenet200.txt does not exist" in problems[0]
    assert "get it there" in problems[0]
    with pytest.raises(ValueError, match="class_map must be null with openood_list"):
        ImageFolders(name="x", root=str(root), splits=splits, class_map="imagenet_r")
    with pytest.raises(ValueError, match="openood_list needs image_list"):
        ImageFolders(name="x", root=str(root), splits={"t": {"layout": "openood_list", "path": "a", "role": "train"}})  # fmt: skip
    # a label with no image anywhere: the class set cannot be read from the lists
    train = root / splits["train"]["image_list"]
    train.write_text(train.read_text().replace(" 1\n", " 7\n"))
    del splits["val"]
    with pytest.raises(ValueError, match="labels must be 0..K-1"):
        ImageFolders(name="x", root=str(root), splits=splits).load(tmp_path / "cache")
