"""Estimators on calibrated logits (`calibrated_estimators:`, harness/calibrated_estimators.py):
rows `<estimator>@<calibrator>` beside the raw ones, checked against an independent
computation (T fitted here with scipy, ATC / AC / DoC written out from their definitions);
the entry is opt-in, so eval=default keeps its eval_id; bad entries are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

import harness.run as run_mod
from harness.config import validate_eval
from harness.keys import eval_id
from harness.posthoc import load_run_cache

from .conftest import CONF, TINY, compose_config, run_rows


def eval_config(name: str) -> dict:
    with open(CONF / "eval" / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def scipy_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T by NLL with L-BFGS-B on log T in the harness's range [e^-4, e^4] (the harness uses
    a bounded scalar search)."""
    z = logits.astype(np.float64)

    def nll(x):
        return -log_softmax(z / np.exp(x[0]), axis=1)[np.arange(len(z)), labels].mean()

    return float(np.exp(minimize(nll, [0.0], method="L-BFGS-B", bounds=[(-4, 4)], tol=1e-12).x[0]))


def atc(val_conf, val_correct, target_conf) -> float:
    """ATC-MC from its definition: the threshold t with the fraction of val above t equal to
    val accuracy, i.e. the (n - k)-th smallest confidence for k correct of n (sorted)."""
    s = np.sort(val_conf)
    k = int(val_correct.sum())
    t = s[len(s) - k - 1] if k < len(s) else -np.inf
    return float((target_conf > t).mean())


def test_calibrated_estimator_rows_match_an_independent_computation(tmp_path):
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[1,5]",
                "dataset.limit=120",
                "trainer.max_steps=null",
                "trainer.epochs=3",
                f"results_dir={tmp_path / 'res'}",
                f"cache_dir={tmp_path / 'cache'}",
                "eval=estimators",
            ]
        )
    )
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    cache = load_run_cache(run_dir)
    val = cache.outputs[cache.splits("val")[0]]
    t = scipy_temperature(val.logits, val.labels)
    assert 1.05 < t < 50 or 0.02 < t < 0.95, t  # a temperature that moves the numbers
    val_p = softmax(val.logits.astype(np.float64) / t, axis=1)
    val_correct = val_p.argmax(1) == val.labels
    targets = cache.splits("id_test", "shift_test")
    assert len(targets) == 3
    for split in targets:
        o = cache.outputs[split]
        p = softmax(o.logits.astype(np.float64) / t, axis=1)
        true = float((p.argmax(1) == o.labels).mean())
        expected = {
            "atc_mc@temperature_scaling": atc(val_p.max(1), val_correct, p.max(1)),
            "ac@temperature_scaling": float(p.max(1).mean()),
            "doc@temperature_scaling": val_correct.mean() - (val_p.max(1).mean() - p.max(1).mean()),
        }
        for scorer, estimate in expected.items():
            sel = rows[(rows["split"] == split) & (rows["scorer"] == scorer)]
            got = dict(zip(sel["metric"], sel["value"], strict=True))
            # T within ~1e-4 of scipy's: estimates that threshold confidences may move by one
            # example where a confidence sits at the threshold
            tol = 1.5 / len(o.labels) if scorer.startswith("atc") else 1e-4
            assert got["estimated_accuracy"] == pytest.approx(estimate, abs=tol), (split, scorer)
            assert got["accuracy"] == pytest.approx(true, abs=1e-12)
            assert got["abs_error"] == pytest.approx(abs(got["estimated_accuracy"] - true))
        # the raw rows are still there, and differ from the calibrated ones
        raw = rows[(rows["split"] == split) & (rows["scorer"] == "ac")]
        raw_est = raw.loc[raw["metric"] == "estimated_accuracy", "value"].item()
        assert raw_est == pytest.approx(softmax(o.logits.astype(np.float64), 1).max(1).mean())
    assert set(rows.loc[rows["scorer"].str.contains("@"), "split_role"]) == {
        "id_test",
        "shift_test",
    }


def test_the_entry_is_opt_in_and_leaves_default_untouched():
    default, minimal = eval_config("default"), eval_config("minimal")
    assert "calibrated_estimators" not in default and "calibrated_estimators" not in minimal
    # the shipped opt-in config is minimal plus temperature scaling and this entry
    est = OmegaConf.to_container(compose_config(["eval=estimators"]).eval)
    assert {
        k: v for k, v in est.items() if k not in ("name", "calibrators", "calibrated_estimators")
    } == {k: v for k, v in minimal.items() if k not in ("name", "calibrators")}
    assert est["calibrators"] == default["calibrators"]
    validate_eval(est)
    assert eval_id(est) not in (eval_id(default), eval_id(minimal))


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["atc_mc"], "'<estimator>@<calibrator>'"),
        (["atc_mc@"], "'<estimator>@<calibrator>'"),
        (["nope@temperature_scaling"], "estimator 'nope'"),
        (["atc_mc@vector_scaling"], "calibrator 'vector_scaling'"),
        (["ac@temperature_scaling", "ac@temperature_scaling"], "twice"),
        ("ac@temperature_scaling", "must be a list"),
    ],
)
def test_bad_entries_are_refused_naming_the_key(entries, expected):
    cfg = {**eval_config("minimal"), "calibrators": eval_config("default")["calibrators"]}
    with pytest.raises(ValueError, match="eval.calibrated_estimators") as err:
        validate_eval({**cfg, "calibrated_estimators": entries})
    assert expected in str(err.value)
