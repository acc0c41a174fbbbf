"""WILDS through the real wilds package, on fixtures in each release's exact on-disk layout:
loading, roles and group columns, official metrics equal to the dataset's own eval(), the
torch_scatter stand-in, the quiet import, verify() on bad data, unlabeled splits, a tiny run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from shiftbench_datasets.wilds import (
    CELEBA_ATTRIBUTES,
    SPECS,
    Wilds,
    import_wilds,
    official_eval,
    scatter,
    scatter_fallback,
)
from shiftbench_datasets.wilds_fixtures import write_fixture

from harness import run as run_mod
from harness.data import DataError
from harness.outputs import Outputs
from harness.posthoc import evaluate_run
from harness.rundir import RunDir

from .conftest import ROOT, TINY, compose_config, run_cli, run_rows

NAMES = sorted(SPECS)


def wilds_dataset(name: str, root: Path, unlabeled: bool = False):
    return import_wilds().get_dataset(name, root_dir=str(root), download=False, unlabeled=unlabeled)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Every dataset's fixture (with unlabeled data where a fixture can hold it), written once."""
    root = tmp_path_factory.mktemp("wilds-data")
    for name in NAMES:
        write_fixture(root, name, unlabeled=name in ("iwildcam", "fmow"))
    return root


def copy_of(fixtures: Path, name: str, tmp_path: Path) -> Path:
    folder = f"{name}_v{SPECS[name].version}"
    shutil.copytree(fixtures / folder, tmp_path / folder)
    return tmp_path


# ---------------------------------------------------------------- the specs agree with wilds


@pytest.mark.parametrize("name", NAMES)
def test_spec_agrees_with_the_wilds_dataset_class(name, fixtures):
    dataset = wilds_dataset(name, fixtures)
    spec = SPECS[name]
    assert dataset.version == spec.version
    assert Path(dataset.data_dir).name == f"{name}_v{spec.version}"
    assert set(spec.roles) <= set(dataset.split_dict)
    assert {"train", "val"} <= set(spec.roles.values())
    groupers = getattr(dataset, "_eval_groupers", None) or {"": dataset._eval_grouper}
    eval_fields = {f for g in groupers.values() for f in g.groupby_fields}
    assert eval_fields == set(spec.group_fields)
    size = dataset.versions_dict[spec.version]["compressed_size"]
    if size is not None:  # the message's size is wilds' own (in GB, one decimal)
        assert spec.size.startswith(f"{size / 1e9:.1f} GB")


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("name", NAMES)
def test_fixture_loads_through_wilds_with_roles_groups_and_metadata(name, fixtures, tmp_path):
    adapter = Wilds(name=name, root=str(fixtures))
    assert adapter.verify() == []
    bench = adapter.load(tmp_path)
    dataset = wilds_dataset(name, fixtures)
    assert {s: split.role for s, split in bench.splits.items()} == SPECS[name].roles
    assert bench.group_cols == list(SPECS[name].group_fields)
    assert bench.num_classes == dataset.n_classes
    for split_name, split in bench.splits.items():
        expected = np.flatnonzero(dataset.split_array == dataset.split_dict[split_name])
        assert len(split) > 0 and split.meta["wilds_index"].tolist() == expected.tolist()
        fields = split.meta[list(dataset.metadata_fields)].to_numpy()
        assert (fields == dataset.metadata_array[expected].numpy()).all()
        assert (split.labels == dataset.y_array[expected].numpy()).all()
        image, label, index = split[len(split) - 1]
        assert image.mode == "RGB" and image.size == (8, 8) and index == len(split) - 1
        reference = dataset.get_input(int(expected[-1])).convert("RGB")
        assert np.array_equal(np.asarray(image), np.asarray(reference))
    # every value of every grouped field occurs (wilds sizes groups as max + 1)
    for field in bench.group_cols:
        column = dataset.metadata_array[:, dataset.metadata_fields.index(field)].numpy()
        assert set(column) == set(range(column.max() + 1)), field


def test_fixture_files_have_the_release_value_formats(fixtures):
    camelyon = (fixtures / "camelyon17_v1.0" / "metadata.csv").read_text().splitlines()
    assert camelyon[0] == ",patient,node,x_coord,y_coord,tumor,slide,center,split"
    assert camelyon[1].split(",")[1] == "000"  # zero-padded patient ids
    iwildcam = pd.read_csv(fixtures / "iwildcam_v2.0" / "metadata.csv", index_col=0)
    assert iwildcam["datetime"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}").all()
    assert set(iwildcam["split"]) == {"train", "val", "test", "id_val", "id_test"}
    fmow = pd.read_csv(fixtures / "fmow_v1.1" / "rgb_metadata.csv")
    assert fmow["timestamp"].str.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    celeba = pd.read_csv(fixtures / "celebA_v1.0" / "list_attr_celeba.csv")
    assert list(celeba.columns) == ["image_id", *CELEBA_ATTRIBUTES] and len(CELEBA_ATTRIBUTES) == 40
    assert set(np.unique(celeba[CELEBA_ATTRIBUTES].to_numpy())) == {-1, 1}
    waterbirds = pd.read_csv(fixtures / "waterbirds_v1.0" / "metadata.csv")
    assert list(waterbirds.columns) == [
        "img_id",
        "img_filename",
        "y",
        "split",
        "place",
        "place_filename",
    ]


def test_fmow_regions_and_years_cover_the_release_ranges(fixtures, tmp_path):
    bench = Wilds(name="fmow", root=str(fixtures)).load(tmp_path)
    meta = pd.concat([s.meta for s in bench.splits.values()])
    assert set(meta["year_name"].astype(int)) == set(range(2002, 2018))
    assert set(meta["region_name"]) == {"Americas", "Europe", "Africa", "Asia", "Oceania", "Other"}
    assert (bench.splits["test"].meta["year_name"].astype(int) >= 2016).all()
    assert bench.splits["val"].meta["year_name"].astype(int).between(2013, 2015).all()


@pytest.mark.parametrize("name", ["iwildcam", "fmow"])
def test_unlabeled_splits_have_role_unlabeled_and_no_labels(name, fixtures, tmp_path):
    bench = Wilds(name=name, root=str(fixtures), unlabeled=True).load(tmp_path)
    unlabeled = {s: split for s, split in bench.splits.items() if split.role == "unlabeled"}
    expected = {
        "iwildcam": {"extra_unlabeled"},  # iWildCam's only unlabeled split
        "fmow": {"train_unlabeled", "val_unlabeled", "test_unlabeled"},
    }[name]
    assert set(unlabeled) == expected
    source = wilds_dataset(name, fixtures, unlabeled=True)
    for split_name, split in unlabeled.items():
        assert len(split) > 0 and (split.labels == -1).all()
        rows = np.flatnonzero(source.split_array == source.split_dict[split_name])
        assert split.meta["wilds_index"].tolist() == rows.tolist()
        assert split[0][0].mode == "RGB"
    assert Wilds(name=name, root=str(fixtures), unlabeled=True).verify() == []


def test_no_unlabeled_data_for_waterbirds_is_a_clear_error():
    with pytest.raises(ValueError, match="no unlabeled data for waterbirds"):
        Wilds(name="waterbirds", unlabeled=True)


# ---------------------------------------------------------------- official metrics


def waterbirds_by_hand(meta: pd.DataFrame, preds: np.ndarray) -> dict[str, float]:
    correct = pd.Series(preds == meta["label"].to_numpy())
    by_group = correct.groupby([meta["y"].to_numpy(), meta["background"].to_numpy()]).mean()
    train_counts = {(0, 0): 3498, (0, 1): 184, (1, 0): 56, (1, 1): 1057}  # WILDS' weights
    adjusted = sum(by_group[g] * n for g, n in train_counts.items()) / sum(train_counts.values())
    return {"acc_wg": float(by_group.min()), "adj_acc_avg": float(adjusted)}


@pytest.mark.parametrize("name", NAMES)
def test_official_metrics_equal_the_datasets_own_eval(name, fixtures, tmp_path):
    bench = Wilds(name=name, root=str(fixtures)).load(tmp_path)
    dataset = wilds_dataset(name, fixtures)
    rng = np.random.default_rng(1)
    for split in bench.by_role("val", "id_test", "shift_test"):
        rows = rng.permutation(len(split))[: max(2, len(split) - 1)]  # a subset, shuffled
        preds = np.where(rng.random(len(rows)) < 0.7, split.labels[rows], 1 - split.labels[rows])
        preds = np.clip(preds, 0, bench.num_classes - 1)
        got = bench.dataset_eval(split, rows, preds)
        idx = torch.as_tensor(split.meta["wilds_index"].to_numpy()[rows])
        with scatter_fallback():
            expected, _ = dataset.eval(
                torch.as_tensor(preds), dataset.y_array[idx], dataset.metadata_array[idx]
            )
        assert got == {k: float(v) for k, v in expected.items()}
        if name == "waterbirds":  # and they are what the metrics mean, computed by hand
            by_hand = waterbirds_by_hand(split.meta.iloc[rows], preds)
            assert got["acc_wg"] == pytest.approx(by_hand["acc_wg"])
            assert got["adj_acc_avg"] == pytest.approx(by_hand["adj_acc_avg"])
    headline = {
        "waterbirds": {"adj_acc_avg", "acc_wg"},
        "camelyon17": {"acc_avg", "acc_wg", "acc_slide:0"},
        "celebA": {"acc_avg", "acc_wg"},
        "iwildcam": {"acc_avg", "F1-macro_all", "recall-macro_all"},
        "fmow": {"acc_avg", "acc_worst_year", "acc_worst_region", "acc_region:Other"},
    }[name]
    assert headline <= set(got)


def test_scatter_stand_in_matches_a_group_mean_and_is_removed_afterwards():
    src = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    index = torch.tensor([0, 0, 2, 2, 2])
    assert scatter(src, index, dim_size=4, reduce="mean").tolist() == pytest.approx(
        [0.5, 0, 2 / 3, 0]
    )
    assert scatter(src, index, dim_size=3, reduce="sum").tolist() == [1.0, 0.0, 2.0]
    with pytest.raises(NotImplementedError):
        scatter(src, index, reduce="max")
    import_wilds()
    from wilds.common.utils import avg_over_groups

    installed = importlib.util.find_spec("torch_scatter") is not None
    if not installed:
        with pytest.raises(ImportError):
            avg_over_groups(src, index, 4)  # what wilds does without the package
    with scatter_fallback():
        means, counts = avg_over_groups(src, index, 4)
    assert means.tolist() == pytest.approx([0.5, 0.0, 2 / 3, 0.0])
    assert counts.tolist() == [2.0, 0.0, 3.0, 0.0]
    if not installed:
        assert "torch_scatter" not in sys.modules  # installed for the call only


def test_official_eval_converts_results_to_floats(fixtures):
    dataset = wilds_dataset("celebA", fixtures)
    results = official_eval(dataset, np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0]))
    assert all(isinstance(v, float) for v in results.values())
    assert results["acc_avg"] == float((dataset.y_array[:4] == 0).float().mean())


# ---------------------------------------------------------------- quiet import


def test_import_wilds_starts_no_network_thread_and_a_maze_run_never_imports_wilds(tmp_path):
    code = (
        "import sys, threading\n"
        "from shiftbench_datasets.wilds import import_wilds\n"
        "wilds = import_wilds()\n"
        "import wilds.version\n"
        "assert wilds.version.check_outdated is None, 'the version check was armed'\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert 'outdated' not in sys.modules\n"
        "print('quiet')\n"
    )
    # a bare environment, but the caller's import path kept (a machine where the packages
    # are not installed, e.g. benchmarks/gpu_check.sh's, finds them only through it)
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "quiet" and "outdated" not in proc.stderr.lower()

    small = [f"dataset.splits.{s}.n=16" for s in ("train", "val", "id_test", "wilson")]
    small += [f"dataset.splits.{s}.n=16" for s in ("percolation", "grid8")]
    overrides = [*TINY, *small, f"results_dir={tmp_path}", f"cache_dir={tmp_path}/cache"]
    maze = (
        "import sys\n"
        "from tests.conftest import compose_config\n"
        "from harness import run\n"
        f"summary = run.run(compose_config({overrides!r}))\n"
        "assert not summary['skipped']\n"
        "assert 'wilds' not in sys.modules, 'a maze run imported wilds'\n"
        "print('no wilds')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", maze],
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1"},
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("no wilds")


# ---------------------------------------------------------------- verify on bad data


def problems_of(name: str, root: Path) -> str:
    problems = Wilds(name=name, root=str(root)).verify()
    assert problems, "verify() found nothing wrong"
    return "\n".join(problems)


def assert_says_how_to_get(message: str, name: str) -> None:
    assert f"wilds.get_dataset('{name}'" in message and "download=True" in message
    assert SPECS[name].size in message


def test_missing_folder(tmp_path):
    message = problems_of("camelyon17", tmp_path)
    assert f"{tmp_path / 'camelyon17_v1.0'} does not exist" in message
    assert "RELEASE_v1.0.txt, metadata.csv" in message
    assert_says_how_to_get(message, "camelyon17")
    message = problems_of("waterbirds", tmp_path / "nowhere")  # data_root itself is missing
    assert f"dataset.root={tmp_path / 'nowhere'} does not exist" in message
    assert_says_how_to_get(message, "waterbirds")


def test_missing_release_file(fixtures, tmp_path):
    root = copy_of(fixtures, "waterbirds", tmp_path)
    (root / "waterbirds_v1.0" / "RELEASE_v1.0.txt").unlink()
    message = problems_of("waterbirds", root)
    assert f"{root / 'waterbirds_v1.0' / 'RELEASE_v1.0.txt'} is missing" in message
    assert_says_how_to_get(message, "waterbirds")


def test_missing_metadata_column(fixtures, tmp_path):
    root = copy_of(fixtures, "celebA", tmp_path)
    path = root / "celebA_v1.0" / "list_attr_celeba.csv"
    pd.read_csv(path).drop(columns="Male").to_csv(path, index=False)
    message = problems_of("celebA", root)
    assert f"{path}: no column(s) ['Male']" in message
    assert "expected columns ['image_id', 'Blond_Hair', 'Male']" in message
    assert_says_how_to_get(message, "celebA")


def test_unparseable_dates(fixtures, tmp_path):
    root = copy_of(fixtures, "iwildcam", tmp_path)
    path = root / "iwildcam_v2.0" / "metadata.csv"
    frame = pd.read_csv(path, index_col=0)
    frame.loc[3, "datetime"] = "2013-06-09 16:30:45"  # no fractional seconds
    frame.to_csv(path)
    message = problems_of("iwildcam", root)
    assert f"{path}: column 'datetime'" in message and "data row 4" in message
    assert "'%Y-%m-%d %H:%M:%S.%f'" in message and "'2013-06-09 16:30:45'" in message

    root = copy_of(fixtures, "fmow", tmp_path)
    path = root / "fmow_v1.1" / "rgb_metadata.csv"
    original = pd.read_csv(path)
    original.assign(timestamp=original["timestamp"].str.rstrip("Z")).to_csv(path, index=False)
    assert "has no time zone" in problems_of("fmow", root)
    original.assign(timestamp=original["timestamp"].str.replace("2002-", "1999-")).to_csv(
        path, index=False
    )
    message = problems_of("fmow", root)
    assert "dates outside 2002-2017" in message and "1999-" in message
    original.assign(timestamp=original["timestamp"].where(original.index != 5, "soon")).to_csv(
        path, index=False
    )
    assert "not ISO-8601 dates (1 row(s), first at data row 6: 'soon')" in problems_of("fmow", root)


def test_label_out_of_range(fixtures, tmp_path):
    root = copy_of(fixtures, "waterbirds", tmp_path)
    path = root / "waterbirds_v1.0" / "metadata.csv"
    frame = pd.read_csv(path)
    frame.loc[2, "y"] = 2
    frame.to_csv(path, index=False)
    message = problems_of("waterbirds", root)
    assert f"{path}: column 'y' has values outside [0, 1]" in message and "data row 3: 2" in message
    assert_says_how_to_get(message, "waterbirds")

    root = copy_of(fixtures, "iwildcam", tmp_path)
    path = root / "iwildcam_v2.0" / "metadata.csv"
    frame = pd.read_csv(path, index_col=0)
    frame.loc[frame["y"] == 2, "y"] = 5  # classes 0, 1, 5: wilds asserts 0..max
    frame.to_csv(path)
    assert "column 'y' must use every value 0..5" in problems_of("iwildcam", root)


def test_empty_split(fixtures, tmp_path):
    root = copy_of(fixtures, "waterbirds", tmp_path)
    path = root / "waterbirds_v1.0" / "metadata.csv"
    frame = pd.read_csv(path)
    frame[frame["split"] != 2].to_csv(path, index=False)
    message = problems_of("waterbirds", root)
    assert f"{path}: split(s) ['test'] have no examples" in message

    root = copy_of(fixtures, "fmow", tmp_path)
    path = root / "fmow_v1.1" / "rgb_metadata.csv"
    frame = pd.read_csv(path)
    frame["timestamp"] = (
        frame["timestamp"].str.replace("2016-", "2012-").str.replace("2017-", "2012-")
    )
    frame.to_csv(path, index=False)
    assert "split(s) ['test'] have no examples" in problems_of("fmow", root)


def test_missing_image_is_named(fixtures, tmp_path):
    root = copy_of(fixtures, "camelyon17", tmp_path)
    patches = root / "camelyon17_v1.0" / "patches"
    shutil.rmtree(patches)
    message = problems_of("camelyon17", root)
    assert (
        f"{patches}/patient_000_node_0/patch_patient_000_node_0_x_0_y_96.png is missing" in message
    )


def test_verify_cli_and_a_run_fail_before_training(fixtures, tmp_path):
    root = copy_of(fixtures, "waterbirds", tmp_path / "data")
    ok = run_cli(["dataset=waterbirds", f"data_root={root}"], cwd=tmp_path, module="harness.verify")
    assert "dataset 'waterbirds': OK" in ok.stdout
    (root / "waterbirds_v1.0" / "RELEASE_v1.0.txt").unlink()
    bad = run_cli(
        ["dataset=waterbirds", f"data_root={root}"],
        cwd=tmp_path,
        module="harness.verify",
        check=False,
    )
    assert bad.returncode == 1 and "RELEASE_v1.0.txt is missing" in bad.stdout
    assert "download=True" in bad.stdout
    results = tmp_path / "results"
    with pytest.raises(DataError, match="RELEASE_v1.0.txt is missing"):
        run_mod.run(
            compose_config(
                [*TINY, "dataset=waterbirds", f"data_root={root}", f"results_dir={results}"]
            )
        )
    assert not list(results.glob("runs/*/config.yaml"))  # nothing started


# ---------------------------------------------------------------- a tiny run


def test_tiny_waterbirds_run_records_the_official_metrics(fixtures, tmp_path, monkeypatch):
    overrides = [
        *TINY,
        "dataset=waterbirds",
        f"data_root={fixtures}",
        f"results_dir={tmp_path}",
        "dataset.image_size=16",
        "dataset.limit=6",
        "eval=minimal",
    ]
    summary = run_mod.run(compose_config(overrides))
    run_dir = Path(summary["run_dir"])
    rows = run_rows(run_dir)
    bench = json.loads((run_dir / "benchmark.json").read_text())
    dataset = wilds_dataset("waterbirds", fixtures)
    for split in ("train", "val", "test"):
        out = Outputs.load(
            run_dir / "outputs" / f"{split}-{bench['splits'][split]['forward_key'][:16]}.npz"
        )
        meta = pd.read_parquet(run_dir / "meta" / f"{split}.parquet")
        assert len(out.labels) == 6
        idx = torch.as_tensor(meta["wilds_index"].to_numpy()[out.index])
        with scatter_fallback():
            expected, _ = dataset.eval(
                torch.as_tensor(out.logits.argmax(axis=1)),
                dataset.y_array[idx],
                dataset.metadata_array[idx],
            )
        mine = rows[(rows["split"] == split) & (rows["scorer"] == "")].set_index("metric")
        for metric in ("adj_acc_avg", "acc_wg"):
            assert mine.loc[metric, "value"] == pytest.approx(float(expected[metric]))
        for key, value in expected.items():
            if key.startswith("acc_y:") and expected[f"count_{key[4:]}"] > 0:
                assert mine.loc[key, "value"] == pytest.approx(float(value))
                assert mine.loc[key, "n"] == int(expected[f"count_{key[4:]}"])
        assert mine.loc["acc_wg", "value"] == pytest.approx(
            mine.loc["worst_group_accuracy", "value"]
        )

    # the post-hoc stage recomputes the same rows from the run directory alone
    def forbidden(*args, **kwargs):
        raise AssertionError("the post-hoc stage touched the data")

    monkeypatch.setattr("shiftbench_datasets.wilds.Wilds.load", forbidden)
    monkeypatch.setattr("shiftbench_datasets.wilds.official_eval", forbidden)
    eval_cfg = OmegaConf.to_container(compose_config(overrides).eval, resolve=True)
    eid, skipped = evaluate_run(run_dir, {**eval_cfg, "ece_bins": 5})
    assert not skipped
    again = pd.read_parquet(RunDir.at(run_dir).posthoc(eid).rows)
    official = rows[rows["metric"].str.startswith(("acc_", "adj_"))]
    recomputed = again[again["metric"].str.startswith(("acc_", "adj_"))]
    pd.testing.assert_frame_equal(
        official[["split", "metric", "value", "n"]].reset_index(drop=True),
        recomputed[["split", "metric", "value", "n"]].reset_index(drop=True),
    )
