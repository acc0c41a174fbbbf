"""Accuracy estimators are plugins (methods/estimators/) listed under `estimators:` in an eval
config; the built-in default (AC, DoC, ATC-MC, ATC-NE) is left out of eval_id, so an eval
config that omits the entry and one that spells the default out are the same stage."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from harness import metrics, registry
from harness.config import validate_eval
from harness.estimator import DEFAULT_ESTIMATORS, Estimator, configured
from harness.keys import eval_id, eval_identity
from harness.outputs import Outputs

from .conftest import CONF


def eval_config(name: str) -> dict:
    return yaml.safe_load((CONF / "eval" / f"{name}.yaml").read_text())


def outputs(seed: int, n: int = 500, shift: float = 0.0) -> Outputs:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4)) * (1.0 - shift)
    logits[np.arange(n), labels] += 2.0 * (1.0 - shift)
    return Outputs(logits.astype(np.float32), np.zeros((n, 2), np.float32), labels, np.arange(n))


def built(name: str) -> Estimator:
    return registry.build("estimator", DEFAULT_ESTIMATORS[name])


def test_shipped_eval_configs_spell_out_the_built_in_default():
    for name in ("default", "minimal"):
        assert eval_config(name)["estimators"] == DEFAULT_ESTIMATORS
    assert registry.available("estimator") == ["ac", "atc", "cot", "doc", "nuclear_norm"]


def test_the_built_in_default_is_left_out_of_eval_id_and_nothing_else_is():
    cfg = eval_config("default")
    without = {k: v for k, v in cfg.items() if k != "estimators"}
    assert eval_id(cfg) == eval_id(without)  # old configs keep their eval_id
    assert eval_identity(cfg) == without
    only_ac = {**cfg, "estimators": {"ac": DEFAULT_ESTIMATORS["ac"]}}
    none = {**cfg, "estimators": {}}
    other_option = {
        **cfg,
        "estimators": {**DEFAULT_ESTIMATORS, "atc_mc": {**DEFAULT_ESTIMATORS["atc_ne"]}},
    }
    ids = {eval_id(c) for c in (cfg, only_ac, none, other_option)}
    assert len(ids) == 4
    assert configured(without) == DEFAULT_ESTIMATORS
    assert configured(none) == {} and configured({**cfg, "estimators": None}) == {}


def test_estimators_match_their_definitions():
    val, target = outputs(0), outputs(1, shift=0.5)
    ac, doc, atc_mc, atc_ne = (built(n) for n in DEFAULT_ESTIMATORS)
    for est in (ac, doc, atc_mc, atc_ne):
        est.fit(val)
    val_acc = metrics.accuracy(val.logits, val.labels)
    conf_val, conf_target = metrics.msp(val.logits).mean(), metrics.msp(target.logits).mean()
    assert ac.estimate(target) == pytest.approx(conf_target)
    assert doc.estimate(target) == pytest.approx(val_acc - (conf_val - conf_target))
    # ATC's threshold is fitted so that on validation itself it recovers the accuracy
    for atc in (atc_mc, atc_ne):
        assert atc.estimate(val) == pytest.approx(val_acc, abs=2 / len(val.labels))
        assert atc.estimate(target) < atc.estimate(val)  # less confident: lower estimate
    assert atc_mc.estimate(target) != atc_ne.estimate(target)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"_target_": "methods.estimators.atc.ATC", "score": "nope"}, "negative_entropy"),
        ({"_target_": "methods.estimators.atc.ATC"}, "score"),
        ({"_target_": "methods.estimators.ac.AC", "alpha": 1}, "AC()"),
        (
            {"_target_": "methods.estimators.nope.Nope"},
            "available estimators: ac, atc, cot, doc, nuclear_norm",
        ),
        ({"score": "msp"}, "needs a _target_"),
    ],
)
def test_eval_config_estimators_are_validated_by_name(entry, expected):
    cfg = {**eval_config("minimal"), "estimators": {"mine": entry}}
    with pytest.raises(ValueError, match="eval.estimators.mine") as err:
        validate_eval(cfg)
    assert expected in str(err.value)


def test_calibrator_options_are_checked_by_its_own_signature():
    cal = {"_target_": "methods.calibrators.temperature.TemperatureScaling", "alpha": 1}
    with pytest.raises(ValueError, match="eval.calibrators.ts"):
        validate_eval({**eval_config("minimal"), "calibrators": {"ts": cal}})
