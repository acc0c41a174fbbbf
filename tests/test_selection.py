"""Model selection across hyperparameter settings (harness.selection)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.selection import apply_selection, select_settings


def rows(setting, method, seeds, val, wg_val, shift, limit=None):
    out = []
    for seed in seeds:
        base = {
            "run_id": f"{setting}{seed}",
            "setting_id": setting,
            "dataset": "d",
            "model": "m",
            "method": method,
            "tta": "",
            "seed": seed,
            "scorer": "",
            "eval_id": "e",
            "group_value": "",
        }
        out += [
            {
                **base,
                "split": "val",
                "split_role": "val",
                "metric": "accuracy",
                "group_key": "",
                "value": val[seed],
            },
            {
                **base,
                "split": "val",
                "split_role": "val",
                "metric": "worst_group_accuracy",
                "group_key": "label",
                "value": wg_val[seed],
            },
            {
                **base,
                "split": "test",
                "split_role": "shift_test",
                "metric": "accuracy",
                "group_key": "",
                "value": shift[seed],
            },
        ]
    return out


TABLE = pd.DataFrame(
    # a: best ID validation; b: best worst-group validation; c: best on the test split
    rows("a", "erm", [0, 1], [0.90, 0.92], [0.40, 0.42], [0.60, 0.61])
    + rows("b", "erm", [0, 1], [0.88, 0.89], [0.55, 0.50], [0.62, 0.64])
    + rows("c", "erm", [0, 1], [0.80, 0.90], [0.30, 0.30], [0.70, 0.72])
    + rows("z", "mixup", [0], [0.5], [0.1], [0.2])
)


@pytest.mark.parametrize(
    "rule, chosen, criterion",
    [("id_val", "a", 0.91), ("worst_group_val", "b", 0.525), ("oracle", "c", 0.71)],
)
def test_each_rule_picks_the_setting_with_the_best_mean_over_seeds(rule, chosen, criterion):
    sel = select_settings(TABLE, rule).set_index("method")
    assert sel.loc["erm", "setting_id"] == chosen
    assert sel.loc["erm", "criterion"] == pytest.approx(criterion)
    assert sel.loc["erm", "settings"] == 3
    assert sel.loc["mixup", "setting_id"] == "z"  # a search of one


def test_apply_keeps_only_the_chosen_settings_and_labels_the_oracle():
    out = apply_selection(TABLE, "oracle")
    assert set(out["setting_id"]) == {"c", "z"}
    assert (out["model_selection"] == "oracle (test-set selection)").all()


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="model selection rule must be one of"):
        select_settings(TABLE, "best_test")


def test_settings_that_differ_beyond_hyperparameters_are_separate_searches(tmp_path):
    """A data limit is not a hyperparameter: runs with another limit are never compared."""
    for setting, limit, lr in (("a", None, 0.1), ("b", None, 0.01), ("c", 100, 0.1)):
        for seed in (0, 1):
            run = tmp_path / "runs" / f"{setting}{seed}"
            run.mkdir(parents=True)
            payload = {
                "dataset": {"name": "d", "limit": limit},
                "model": {"name": "m"},
                "method": {"name": "erm", "lr_scale": lr},
                "trainer": {"optimizer": {"lr": lr}},
                "seed": seed,
            }
            (run / "key.json").write_text(json.dumps({"payload": payload}))
    table = TABLE[TABLE["method"] == "erm"]
    sel = select_settings(table, "id_val", tmp_path)
    assert len(sel) == 2
    assert sorted(sel["setting_id"]) == ["a", "c"]  # a beats b; c is alone in its search
    assert sorted(sel["settings"]) == [1, 2]


@pytest.mark.parametrize("rule", ["id_val", "worst_group_val", "oracle"])
def test_arrow_strings_select_as_object_strings(rule):
    """select_settings reads the settings from the rows where setting or eval config changes
    (arrow strings): the same frame as from every row (object strings), rows in store order,
    shuffled, with a second eval config and missing tta."""
    table = pd.concat([TABLE, TABLE.assign(eval_id="f")], ignore_index=True)
    table.loc[table.index % 5 == 0, "tta"] = None
    for frame in (table, table.sample(frac=1, random_state=0)):
        want = select_settings(
            frame.astype({c: object for c in ["tta", "eval_id", "run_id"]}), rule
        )
        got = select_settings(
            frame.astype({c: "str" for c in frame if frame[c].dtype == object}), rule
        )
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
