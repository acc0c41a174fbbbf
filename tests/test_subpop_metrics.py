"""SubpopBench's label metrics (eval=subpop, harness/subpop_rows.py) and its
attribute-unknown model selection (worst-class validation accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, classification_report

from harness import metrics
from harness import run as run_mod
from harness.keys import eval_id
from harness.posthoc import load_run_cache
from harness.selection import select_settings

from .conftest import CONF, TINY, compose_config, run_rows


def _brute(labels, preds):
    """Per class by counting, the way SubpopBench's tables read classification_report."""
    present = np.unique(labels)
    recall = [np.mean(preds[labels == k] == k) for k in present]
    precision = [np.mean(labels[preds == k] == k) if np.any(preds == k) else 0.0 for k in present]
    return np.mean(recall), min(recall), min(precision)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subpop_metrics_against_counting_and_classification_report(seed):
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, 200, p=[0.6, 0.2, 0.15, 0.05])
    preds = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 5, 200))  # 4: never a label
    balanced, worst_recall, worst_precision = _brute(labels, preds)
    assert metrics.balanced_accuracy(labels, preds) == pytest.approx(balanced)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert metrics.balanced_accuracy(labels, preds) == balanced_accuracy_score(labels, preds)
    assert metrics.worst_class_accuracy(labels, preds) == pytest.approx(worst_recall)
    assert metrics.worst_class_precision(labels, preds) == pytest.approx(worst_precision)
    report = classification_report(labels, preds, output_dict=True, zero_division=0.0)
    assert metrics.macro_f1(labels, preds) == pytest.approx(report["macro avg"]["f1-score"])
    per_class = [report[str(k)] for k in np.unique(labels)]
    assert metrics.worst_class_accuracy(labels, preds) == min(c["recall"] for c in per_class)
    assert metrics.worst_class_precision(labels, preds) == min(c["precision"] for c in per_class)


def test_a_class_never_predicted_has_precision_zero_and_recall_zero():
    labels, preds = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])
    assert metrics.worst_class_accuracy(labels, preds) == 0.0
    assert metrics.worst_class_precision(labels, preds) == 0.0
    assert metrics.balanced_accuracy(labels, preds) == 0.5


def test_subpop_eval_is_opt_in_and_moves_no_other_eval_id():
    default = compose_config([*TINY]).eval
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(default, resolve=True)
    assert "subpop_metrics" not in plain
    assert eval_id({**plain, "subpop_metrics": False}) == eval_id(plain)
    subpop = OmegaConf.to_container(compose_config([*TINY, "eval=subpop"]).eval, resolve=True)
    assert subpop["subpop_metrics"] is True
    assert eval_id(subpop) != eval_id(plain)
    assert {k: v for k, v in subpop.items() if k not in ("name", "subpop_metrics")} == {
        k: v for k, v in plain.items() if k != "name"
    }
    assert (CONF / "eval" / "subpop.yaml").is_file()


def test_subpop_rows_match_the_runs_own_predictions(tmp_path):
    base = [*TINY, "dataset=coloured_digits", "dataset.limit=null", f"results_dir={tmp_path}",
            "dataset.sizes={train: 60, val: 40, test_balanced: 30, test_reversed: 30}"]  # fmt: skip
    summary = run_mod.run(compose_config([*base, "eval=subpop"]))
    rows = run_rows(summary["run_dir"])
    cache = load_run_cache(summary["run_dir"])
    for split in ("val", "test_balanced", "test_reversed"):
        out = cache.outputs[split]
        y, pred = out.labels, out.logits.argmax(1)
        got = rows[(rows["split"] == split) & (rows["scorer"] == "")].set_index("metric")["value"]
        report = classification_report(y, pred, output_dict=True, zero_division=0.0)
        per_class = [report[str(k)] for k in np.unique(y)]
        assert got["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
        assert got["worst_class_accuracy"] == pytest.approx(min(c["recall"] for c in per_class))
        assert got["worst_class_precision"] == pytest.approx(min(c["precision"] for c in per_class))
        assert got["balanced_accuracy"] == pytest.approx(np.mean([c["recall"] for c in per_class]))
        meta = cache.meta[split].iloc[out.index]
        groups = meta["label"].astype(str) + "|" + meta["colour"].astype(str)
        adjusted = pd.Series(pred == y).groupby(groups.to_numpy()).mean().mean()
        assert got["adjusted_accuracy"] == pytest.approx(adjusted)
    with pytest.raises(ValueError, match="eval.subpop_metrics"):
        run_mod.run(compose_config([*base, "eval=subpop", "eval.subpop_metrics=yes", "seed=3"]))


def test_worst_class_selection_rule_picks_the_epoch_and_records_it(tmp_path):
    over = [*TINY, f"results_dir={tmp_path}", "eval=minimal", "dataset=coloured_digits",
            "trainer.epochs=3", "trainer.max_steps=null", "dataset.limit=16"]  # fmt: skip
    summary = run_mod.run(compose_config([*over, "selection_rule=val/worst_class_accuracy"]))
    rd = Path(summary["run_dir"])
    epochs = pd.read_parquet(rd / "epochs.parquet")
    wca = epochs[(epochs["split_role"] == "val") & (epochs["metric"] == "worst_class_accuracy")]
    assert len(wca) == 3
    best = int(wca.loc[wca["value"].idxmax(), "epoch"])
    assert json.loads((rd / "run_info.json").read_text())["selected_epoch"] == best
    # the record of the selected epoch is the cached val predictions' worst-class accuracy
    val = load_run_cache(rd).outputs["val"]
    pred = val.logits.argmax(1)
    recalls = [np.mean(pred[val.labels == k] == k) for k in np.unique(val.labels)]
    assert wca.loc[wca["epoch"] == best, "value"].item() == pytest.approx(min(recalls))


def test_worst_class_val_setting_rule_picks_the_best_mean_over_seeds():
    rows = []
    for setting, values in {"a": [0.5, 0.7], "b": [0.65, 0.65], "c": [0.2, 0.3]}.items():
        for seed, value in enumerate(values):
            rows.append({"run_id": f"{setting}{seed}", "setting_id": setting, "dataset": "d",
                         "model": "m", "method": "erm", "tta": "", "seed": seed, "scorer": "",
                         "eval_id": "e", "group_key": "", "group_value": "", "split": "val",
                         "split_role": "val", "metric": "worst_class_accuracy",
                         "value": value})  # fmt: skip
    sel = select_settings(pd.DataFrame(rows), "worst_class_val")
    assert sel["setting_id"].item() == "b" and sel["criterion"].item() == pytest.approx(0.65)
    assert sel["selection"].item() == "worst-class validation accuracy"
