"""Every kind of row the default post-hoc stage stores, recomputed here from the run's cached
logits and per-example scores with scikit-learn, scipy or brute force (never with
harness.metrics), and compared: closed-form rows to 1e-12, the fitted temperature to 1e-4
(with its NLL no worse than the independent optimum's)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.optimize import minimize
from sklearn.metrics import average_precision_score, roc_auc_score

from harness import run as run_mod
from harness.posthoc import load_run_cache, load_scores

from .conftest import CONF, TINY, compose_config, run_rows

CLOSED = 1e-12


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("recompute")
    summary = run_mod.run(compose_config([*TINY, f"results_dir={root}"]))
    run_dir = root / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    cache = load_run_cache(run_dir)
    splits = sorted(set(rows.loc[rows["split_role"] != "pooled", "split"]))
    outputs = {s: cache.outputs[s] for s in splits}
    scores = {s: load_scores(run_dir, s) for s in splits}
    roles = rows.drop_duplicates("split").set_index("split")["split_role"]
    return rows, outputs, scores, roles


def softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits, labels):
    z = logits.astype(np.float64)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


def ece(logits, labels, bins=15):
    p = softmax(logits)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = abs(np.mean(pred[inside] == labels[inside]) - conf[inside].mean())
            total += gap * inside.mean()
    return total


def brier(logits, labels):
    p = softmax(logits)
    p[np.arange(len(labels)), labels] -= 1
    return float((p**2).sum(axis=1).mean())


def aurc(s, correct):
    """Mean over examples of the error rate among the examples scored at least as high."""
    return float(np.mean([np.mean(~correct[s >= t]) for t in s]))


def oracle_aurc(correct):
    ranked = np.sort(correct)[::-1]  # every correct example first
    return float(np.mean([np.mean(~ranked[:k]) for k in range(1, len(ranked) + 1)]))


def accuracy_at(s, correct, coverage):
    for t in np.sort(np.unique(s))[::-1]:
        kept = s >= t
        if kept.mean() >= coverage - 1e-12:
            return float(correct[kept].mean())
    raise AssertionError("unreachable")


def fpr95(id_s, ood_s):
    t = max(t for t in np.unique(id_s) if np.mean(id_s >= t) >= 0.95)
    return float(np.mean(ood_s >= t))


def value(rows, split, metric, scorer="", group_key=""):
    sel = rows[
        (rows["split"] == split)
        & (rows["metric"] == metric)
        & (rows["scorer"] == scorer)
        & (rows["group_key"] == group_key)
    ]
    assert len(sel) == 1, (split, metric, scorer, len(sel))
    return sel["value"].item()


def test_label_metric_rows(stage):
    rows, outputs, _, roles = stage
    labelled = [s for s in outputs if roles[s] in ("train", "val", "id_test", "shift_test")]
    assert len(labelled) >= 5
    for split in labelled:
        o = outputs[split]
        pred = o.logits.argmax(axis=1)
        assert value(rows, split, "accuracy") == pytest.approx(
            np.mean(pred == o.labels), abs=CLOSED
        )
        assert value(rows, split, "nll") == pytest.approx(nll(o.logits, o.labels), abs=1e-9)
        assert value(rows, split, "brier") == pytest.approx(brier(o.logits, o.labels), abs=CLOSED)
        # torchmetrics sums the bins in float32: ECE agrees to float32 rounding, not 1e-12
        assert value(rows, split, "ece") == pytest.approx(ece(o.logits, o.labels), abs=1e-7)
        per_label = {c: np.mean(pred[o.labels == c] == c) for c in np.unique(o.labels)}
        groups = rows[(rows["split"] == split) & (rows["group_key"] == "label")]
        acc = groups[groups["metric"] == "accuracy"].set_index("group_value")["value"]
        assert {int(k): v for k, v in acc.items()} == pytest.approx(per_label, abs=CLOSED)
        worst = value(rows, split, "worst_group_accuracy", group_key="label")
        assert worst == pytest.approx(min(per_label.values()), abs=CLOSED)


def test_scorer_rows_selective_and_ood(stage):
    rows, outputs, scores, roles = stage
    scorers = list(yaml.safe_load((CONF / "eval" / "default.yaml").read_text())["scorers"])
    coverages = [0.8, 0.9, 0.95]
    tests = [s for s in outputs if roles[s] in ("id_test", "shift_test")]
    for name in scorers:
        for split in tests:
            s, correct = scores[split][name].to_numpy(), scores[split]["correct"].to_numpy(bool)
            if 0 < correct.sum() < len(correct):
                expected = roc_auc_score(correct, s)
                got = value(rows, split, "auroc_error", name)
                assert got == pytest.approx(expected, abs=CLOSED)
            assert value(rows, split, "aurc", name) == pytest.approx(aurc(s, correct), abs=CLOSED)
            e = aurc(s, correct) - oracle_aurc(correct)
            assert value(rows, split, "e_aurc", name) == pytest.approx(e, abs=CLOSED)
            for c in coverages:
                got = value(rows, split, f"accuracy@{c:g}", name)
                assert got == pytest.approx(accuracy_at(s, correct, c), abs=CLOSED)
        id_s = scores["id_test"][name].to_numpy()
        for split in (s for s in tests if roles[s] == "shift_test"):
            other = scores[split][name].to_numpy()
            y = np.r_[np.ones(len(id_s)), np.zeros(len(other))]
            both = np.r_[id_s, other]
            got = {m: value(rows, split, f"{m}_vs_id_test", name) for m in
                   ("auroc", "aupr_in", "aupr_out", "fpr95")}  # fmt: skip
            assert got["auroc"] == pytest.approx(roc_auc_score(y, both), abs=CLOSED)
            assert got["aupr_in"] == pytest.approx(average_precision_score(y, both), abs=CLOSED)
            assert got["aupr_out"] == pytest.approx(
                average_precision_score(1 - y, -both), abs=CLOSED
            )
            assert got["fpr95"] == pytest.approx(fpr95(id_s, other), abs=CLOSED)
        pooled = pd.concat([scores[s] for s in tests])
        correct = pooled["correct"].to_numpy(bool)
        expected = roc_auc_score(correct, pooled[name].to_numpy())
        assert value(rows, "pooled_test", "auroc_error", name) == pytest.approx(
            expected, abs=CLOSED
        )


def test_temperature_scaling_rows(stage):
    rows, outputs, _, roles = stage
    val = outputs["val"]
    result = minimize(
        lambda v: nll(val.logits / np.exp(v[0]), val.labels), x0=[0.0], method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14},
    )  # fmt: skip
    t_indep = float(np.exp(result.x[0]))
    t = value(rows, "val", "temperature", "temperature_scaling")  # fitted on val: one row
    assert t == pytest.approx(t_indep, rel=1e-4)
    assert nll(val.logits / t, val.labels) <= nll(val.logits / t_indep, val.labels) + 1e-9
    for split in (s for s in outputs if roles[s] != "ood"):
        o = outputs[split]
        scaled = o.logits.astype(np.float64) / t
        # the calibrator divides the float32 logits (rounding ~1e-10 on NLL and Brier)
        for metric, fn, tol in (("nll", nll, 1e-8), ("brier", brier, 1e-8), ("ece", ece, 1e-7)):
            got = value(rows, split, metric, "temperature_scaling")
            assert got == pytest.approx(fn(scaled, o.labels), abs=tol), (split, metric)
        got = value(rows, split, "accuracy", "temperature_scaling")
        assert got == pytest.approx(np.mean(o.logits.argmax(1) == o.labels), abs=CLOSED)


def test_estimator_rows(stage):
    rows, outputs, _, roles = stage
    val = outputs["val"]
    val_msp = softmax(val.logits).max(axis=1)
    val_acc = np.mean(val.logits.argmax(1) == val.labels)

    def negative_entropy(logits):
        p = softmax(logits)
        return np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)

    for split in (s for s in outputs if roles[s] in ("id_test", "shift_test")):
        o = outputs[split]
        msp = softmax(o.logits).max(axis=1)
        accuracy = np.mean(o.logits.argmax(1) == o.labels)
        est = {e: value(rows, split, "estimated_accuracy", e) for e in
               ("ac", "doc", "atc_mc", "atc_ne")}  # fmt: skip
        assert est["ac"] == pytest.approx(msp.mean(), abs=CLOSED)
        assert est["doc"] == pytest.approx(val_acc - (val_msp.mean() - msp.mean()), abs=CLOSED)
        for name, score in (
            ("atc_mc", lambda z: softmax(z).max(axis=1)),
            ("atc_ne", negative_entropy),
        ):
            v, target = score(val.logits), score(o.logits)
            # a threshold that leaves val accuracy's share of val above it, up to one example
            admissible = {
                float(np.mean(target > t))
                for t in v
                if abs(np.mean(v > t) - val_acc) <= 1 / len(v) + 1e-12
            }
            assert any(abs(est[name] - a) <= 1e-9 for a in admissible), (name, split)
        for name in est:
            assert value(rows, split, "accuracy", name) == pytest.approx(accuracy, abs=CLOSED)
            err = value(rows, split, "abs_error", name)
            assert err == pytest.approx(abs(est[name] - accuracy), abs=CLOSED)
