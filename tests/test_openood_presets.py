"""OpenOOD v1.5 presets (`+experiment=openood/NAME`, conf/experiment/openood/): each composes
to its row of docs/experiments.md's OpenOOD table, names the list files OpenOOD's configs
name, puts each OOD set in the group the table says (by eval=openood's own patterns), verify
names each missing list, and the CIFAR-10 preset runs end to end on fixtures (synthetic lists
in OpenOOD's `<path> <label>` format, never real ones)."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from shiftbench_datasets.folders import write_flat_folder

from harness import run as run_mod

from .conftest import CONF, ROOT, TINY, compose_config, run_cli, run_rows

PRESETS = sorted(f"openood/{p.stem}" for p in (CONF / "experiment" / "openood").glob("*.yaml"))


def _table() -> dict[str, dict[str, str]]:
    lines = (ROOT / "docs" / "experiments.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| OpenOOD preset |"))
    header = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        rows[cells["OpenOOD preset"].strip("`")] = cells
    return rows


def _config(preset: str, extra: list[str] = ()) -> dict:
    return OmegaConf.to_container(compose_config([f"+experiment={preset}", *extra]), resolve=True)


def _names(cell: str) -> list[str]:
    return [n.strip() for n in cell.split(",")]


def test_every_openood_preset_has_a_row():
    assert PRESETS == sorted(_table())
    assert len(PRESETS) == 4


@pytest.mark.parametrize("preset", PRESETS)
def test_openood_preset_composes_to_its_row_and_groups(preset):
    row, c = _table()[preset], _config(preset, ["data_root=/d"])
    assert c["dataset"]["name"] == row["dataset"]
    assert c["eval"]["name"] == "openood"
    assert row["model"].startswith(c["model"]["name"])
    sets = {e["name"]: e for e in c["ood_sets"]}
    near, far, val = _names(row["near OOD"]), _names(row["far OOD"]), [row["ood_val"]]
    assert sorted(sets) == sorted(near + far + val)
    assert [n for n, e in sets.items() if e.get("role") == "ood_val"] == val
    # the group each split lands in, by the eval config's own fnmatch patterns
    groups = c["eval"]["ood_groups"]
    for names, group in ((near, "near"), (far, "far")):
        for n in names:
            hits = [g for g, pats in groups.items() if any(fnmatch(f"ood_{n}", p) for p in pats)]
            assert hits == [group], (n, hits)
    # OpenOOD's layout: <data_root>/openood/benchmark_imglist/<folder>/{test,val}_<set>.txt
    folder = row["list folder"].split()[0].removeprefix("benchmark_imglist/")
    for n in near + far:
        expected = "textures" if n == "textures" else n  # ImageNet's file is test_textures
        assert sets[n]["image_list"] == f"/d/openood/benchmark_imglist/{folder}/test_{expected}.txt"
        assert sets[n]["root"].startswith("/d/openood/images_")
    assert sets[val[0]]["image_list"].endswith("val_" + val[0].removesuffix("_val") + ".txt")


@pytest.mark.parametrize("preset", PRESETS)
def test_verify_names_each_missing_list_and_where_openood_publishes_it(preset, tmp_path):
    # in-process for every preset (harness.verify's own function); the CLI path once below
    from harness.verify import verify_run

    c = _config(preset, [f"data_root={tmp_path / 'none'}"])
    problems = "\n".join(verify_run(c))
    for entry in c["ood_sets"]:
        assert entry["image_list"] in problems
    assert "scripts/download/download.py" in problems


def test_the_verify_command_exits_1_naming_the_missing_lists(tmp_path):
    preset = PRESETS[0]
    out = run_cli(
        [f"+experiment={preset}", f"data_root={tmp_path / 'none'}"],
        cwd=tmp_path,
        module="harness.verify",
        check=False,
    )
    assert out.returncode == 1
    for entry in _config(preset, [f"data_root={tmp_path / 'none'}"])["ood_sets"]:
        assert entry["image_list"] in out.stdout
    assert "scripts/download/download.py" in out.stdout


def _openood_fixture(preset: str, data: Path) -> list[str]:
    """Tiny images under images_classic/<set>/ and synthetic lists naming a subset of them."""
    c = _config(preset, [f"data_root={data}"])
    for k, entry in enumerate(c["ood_sets"]):
        root, image_list = Path(entry["root"]), Path(entry["image_list"])
        images = write_flat_folder(root / entry["name"] / "test", n=5, seed=10 * k)
        image_list.parent.mkdir(parents=True, exist_ok=True)
        image_list.write_text("".join(f"{p.relative_to(root)} -1\n" for p in images[:4]))
    return [f"data_root={data}", "dataset.val_size=8"]


def test_the_cifar10_preset_runs_end_to_end_on_fixtures(tmp_path):
    from shiftbench_datasets.cifar import write_fixture

    data = tmp_path / "data"
    write_fixture(data, variant="cifar10", per_batch=8, test_size=10)
    over = _openood_fixture("openood/cifar10", data)
    summary = run_mod.run(
        compose_config(
            ["+experiment=openood/cifar10", *over, *TINY, "model.pretrained=false", "model.stem=null",
             "dataset.limit=16", "eval.scorers.knn.k=2", "eval.scorers.nnguide.k=2",
             f"results_dir={tmp_path / 'res'}"]
        )
    )  # fmt: skip
    assert summary["status"] == "finished"
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    splits = set(rows["split"])
    assert {"ood_cifar100", "ood_tin", "ood_svhn", "near_ood", "far_ood"} <= splits
    # each OOD split holds exactly the 4 listed images (+ the ID test examples)
    auroc = rows[(rows["split"] == "ood_svhn") & (rows["metric"] == "auroc_vs_test")]
    assert len(auroc) and set(auroc["n"]) == {10 + 4}
    # the ood_val set takes no part in any OOD metric
    assert not rows.loc[rows["split"] == "ood_tin_val", "metric"].str.contains("auroc").any()


def test_the_imagenet200_preset_reads_openood_id_lists(tmp_path):
    """ID train/val/test from synthetic lists in OpenOOD's format (benchmark_imglist/
    imagenet200/*_imagenet200.txt); the classes are the lists' folders in label order."""
    from shiftbench_datasets.folders import write_class_folders

    data = tmp_path / "data"
    over = _openood_fixture("openood/imagenet200", data)[:1]  # no val_size: lists cut val
    images, order = data / "openood" / "images_largescale", ["n09", "n02", "n05"]
    for part in ("train", "val", "test"):
        written = write_class_folders(images / "imagenet_1k" / part, order, per_class=4, seed=len(part))  # fmt: skip
        lines = "".join(f"{p.relative_to(images)} {order.index(p.parent.name)}\n" for p in written)
        (data / "openood" / "benchmark_imglist" / "imagenet200" / f"{part}_imagenet200.txt").write_text(lines)  # fmt: skip
    summary = run_mod.run(
        compose_config(
            ["+experiment=openood/imagenet200", *over, *TINY, "dataset.image_size=32",
             "eval.scorers.knn.k=2", "eval.scorers.nnguide.k=2", f"results_dir={tmp_path / 'res'}"]
        )
    )  # fmt: skip
    assert summary["status"] == "finished"
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    import json

    assert json.loads((run_dir / "benchmark.json").read_text())["classes"] == order
    rows = run_rows(run_dir)
    assert {"ood_ssb_hard", "near_ood", "far_ood"} <= set(rows["split"])
    test_n = rows[(rows["split"] == "test") & (rows["metric"] == "accuracy")]["n"]
    assert set(test_n) == {12}
