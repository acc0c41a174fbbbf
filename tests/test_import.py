"""python -m harness.import (harness/importing.py): external logits, features, a head, labels
and metadata imported as a run; the leaderboard's rows; AUROC against scikit-learn on the
imported logits; the key; bad source folders refused before anything is written."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.metrics import roc_auc_score

from harness.importing import import_run, read_source
from harness.leaderboard import write_leaderboard

from .conftest import compose_config

C, D = 3, 5
SPLITS = {"val": "val", "id_test": "id_test", "shifted": "shift_test", "far": "ood"}


def write_source(folder, seed: int = 0, head: bool = True):
    """A source folder: linear logits of random features, with a group column."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, b = rng.normal(size=(C, D)), rng.normal(size=C)
    for i, (split, role) in enumerate(SPLITS.items()):
        n = 40 + 10 * i
        feats = rng.normal(size=(n, D)) + (2.0 if role == "ood" else 0.0)
        logits = feats @ w.T + b
        labels = np.where(rng.random(n) < 0.7, logits.argmax(1), rng.integers(0, C, n))
        arrays = {"logits": logits.astype(np.float32), "features": feats.astype(np.float32)}
        if role != "ood":
            arrays["labels"] = labels.astype(np.int64)
        np.savez(folder / f"{split}.npz", **arrays)
        pd.DataFrame({"site": rng.choice(["a", "b"], n)}).to_parquet(folder / f"{split}.parquet")
    if head:
        np.savez(folder / "classifier.npz", weight=w.astype(np.float32), bias=b.astype(np.float32))
    manifest = {
        "dataset": "external",
        "model": "wrn",
        "method": "erm",
        "seed": seed,
        "splits": SPLITS,
        "classes": ["x", "y", "z"],
        "group_cols": ["site"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_import_then_the_leaderboard_has_its_rows_and_scikit_learns_auroc(tmp_path, capsys):
    src = write_source(tmp_path / "src")
    results = tmp_path / "results"
    cli = importlib.import_module("harness.import")  # `python -m harness.import`, in-process
    cli.main([str(src), f"results_dir={results}"])
    assert "imported" in capsys.readouterr().out
    write_leaderboard(results, outputs=["markdown"], scorer_resamples=20)
    table = pd.read_parquet(results / "table.parquet")
    assert set(table["dataset"]) == {"external"} and set(table["model"]) == {"wrn"}
    assert (results / "leaderboard" / "external.md").is_file()

    def msp(split):
        with np.load(src / f"{split}.npz") as z:
            return softmax(z["logits"].astype(np.float64), axis=1).max(1)

    for other in ("far", "shifted"):
        id_s, ood_s = msp("id_test"), msp(other)
        expected = roc_auc_score(
            np.r_[np.ones(len(id_s)), np.zeros(len(ood_s))], np.r_[id_s, ood_s]
        )
        row = table[
            (table.split == other) & (table.scorer == "msp") & (table.metric == "auroc_vs_id_test")
        ]
        assert row["value"].iloc[0] == pytest.approx(expected, abs=1e-9)
    with np.load(src / "shifted.npz") as z:
        acc = (z["logits"].argmax(1) == z["labels"]).mean()
    plain = table[(table.split == "shifted") & (table.metric == "accuracy") & (table.scorer == "")]
    assert plain[plain.group_key == ""]["value"].iloc[0] == pytest.approx(acc)
    assert set(plain[plain.group_key == "site"]["group_value"]) == {"a", "b"}
    assert {"knn", "mahalanobis", "vim"} <= set(table["scorer"])  # features and head imported
    run = next((results / "runs").iterdir())
    eid = json.loads((run / "DONE").read_text())["eval_id"]
    notes = json.loads((run / "posthoc" / eid / "notes.json").read_text())
    assert notes["head"] == "head(features) reproduces the cached logits"
    # the same files again: the same run, not a second one
    cli.main([f"source={src}", f"results_dir={results}"])
    assert "already imported" in capsys.readouterr().out
    assert len(list((results / "runs").iterdir())) == 1


def eval_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config(["eval=minimal"]).eval, resolve=True)


def test_the_key_is_the_files_digest_and_the_dataset_and_seeds_share_a_setting(tmp_path):
    a = import_run(write_source(tmp_path / "a", head=False), tmp_path / "r", eval_cfg())
    b = import_run(write_source(tmp_path / "b", seed=1, head=False), tmp_path / "r", eval_cfg())
    c_src = write_source(tmp_path / "c", head=False)
    manifest = json.loads((c_src / "manifest.json").read_text())
    (c_src / "manifest.json").write_text(json.dumps({**manifest, "dataset": "other"}))
    c = import_run(c_src, tmp_path / "r", eval_cfg())
    assert len({a["run_id"], b["run_id"], c["run_id"]}) == 3
    key = lambda s: json.loads((tmp_path / "r" / "runs" / s["run_id"] / "key.json").read_text())  # noqa: E731
    assert key(a)["setting_id"] == key(b)["setting_id"] != key(c)["setting_id"]
    run = tmp_path / "r" / "runs" / a["run_id"]
    assert "no classifier.npz" in json.loads((run / "outputs" / "head.json").read_text())["note"]


def break_missing_split(src):
    (src / "shifted.npz").unlink()


def break_nan(src):
    with np.load(src / "val.npz") as z:
        arrays = dict(z)
    arrays["logits"][3, 1] = np.nan
    np.savez(src / "val.npz", **arrays)


def break_width(src):
    with np.load(src / "far.npz") as z:
        arrays = dict(z)
    arrays["logits"] = arrays["logits"][:, :2]
    np.savez(src / "far.npz", **arrays)


def break_rows(src):
    with np.load(src / "val.npz") as z:
        arrays = dict(z)
    arrays["features"] = arrays["features"][:-1]
    np.savez(src / "val.npz", **arrays)


def break_manifest(key, value):
    def go(src):
        m = json.loads((src / "manifest.json").read_text())
        m[key] = value
        (src / "manifest.json").write_text(json.dumps(m))

    return go


def break_labels(src):
    with np.load(src / "id_test.npz") as z:
        arrays = {k: v for k, v in z.items() if k != "labels"}
    np.savez(src / "id_test.npz", **arrays)
    pd.DataFrame({"site": ["a"] * 50}).to_parquet(src / "id_test.parquet")


@pytest.mark.parametrize(
    "damage,message",
    [
        (break_missing_split, r"shifted\.npz: missing"),
        (break_nan, r"val\.npz: logits has 1 NaN"),
        (break_width, "shape mismatch"),
        (break_rows, r"features has shape \(39, 5\)"),
        (break_labels, "no 'labels' array"),
        (break_manifest("splits", {"far": "ood"}), "missing split"),
        (break_manifest("splits", {"id_test": "test"}), "unknown role"),
        (break_manifest("classes", ["x"]), "1 classes"),
        (break_manifest("group_cols", ["region"]), r"group_cols \['region'\]"),
        (lambda src: (src / "manifest.json").unlink(), r"manifest\.json: missing"),
    ],
)
def test_bad_sources_are_refused_before_anything_is_written(tmp_path, damage, message):
    src = write_source(tmp_path / "src")
    damage(src)
    with pytest.raises(ValueError, match=message):
        read_source(src)
    with pytest.raises(ValueError, match=message):
        import_run(src, tmp_path / "results", eval_cfg())
    assert not (tmp_path / "results").exists()
