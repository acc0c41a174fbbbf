"""Corruption metrics over the tidy table: per corruption / severity means, mCE, relative mCE."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.report.corruption import (
    ALEXNET_IMAGENET_C_ERRORS,
    ALEXNET_IMAGENET_CLEAN_ERROR,
    STANDARD_CORRUPTIONS,
    corruption_errors,
    mce,
    summarize,
)


def row(setting, model, seed, split, accuracy, role="shift_test", dataset="d", eval_id="e1"):
    return {
        "run_id": f"{setting}-{seed}",
        "setting_id": setting,
        "dataset": dataset,
        "model": model,
        "method": "none",
        "seed": seed,
        "split": split,
        "split_role": role,
        "group_key": "",
        "group_value": "",
        "scorer": "",
        "metric": "accuracy",
        "value": accuracy,
        "eval_id": eval_id,
    }


def table(errors_by_setting, clean, prefix=""):
    """errors_by_setting: {(setting, model, seed): {(corruption, severity): error}}."""
    rows = []
    for (setting, model, seed), errors in errors_by_setting.items():
        rows.append(row(setting, model, seed, "test", 1 - clean[setting], role="id_test"))
        for (corruption, severity), error in errors.items():
            split = f"{prefix}{corruption}-{severity}"
            rows.append(row(setting, model, seed, split, 1 - error))
            rows.append(row(setting, model, seed, split, 1 - error, eval_id="e2"))  # 2nd stage
    rows.append({**rows[0], "scorer": "msp", "metric": "accuracy", "value": 0.0})  # not a label row
    return pd.DataFrame(rows)


A = {("fog", 1): 0.2, ("fog", 2): 0.4, ("spatter", 1): 0.1, ("spatter", 2): 0.3}
A_SEED1 = {k: v + 0.1 for k, v in A.items()}
R = {("fog", 1): 0.4, ("fog", 2): 0.6, ("spatter", 1): 0.5, ("spatter", 2): 0.5}
CLEAN = {"sA": 0.05, "sR": 0.2}


def test_errors_per_corruption_and_severity_average_seeds_once():
    t = table({("sA", "a", 0): A, ("sA", "a", 1): A_SEED1, ("sR", "ref", 0): R}, CLEAN)
    errors = corruption_errors(t)
    fog1 = errors[
        (errors["setting_id"] == "sA") & (errors["corruption"] == "fog") & (errors["severity"] == 1)
    ]
    assert fog1["error"].item() == pytest.approx(0.25) and fog1["n_runs"].item() == 2
    means = summarize(errors)
    per_c = means["per_corruption"].set_index(["setting_id", "corruption"])["error"]
    assert per_c[("sA", "fog")] == pytest.approx(0.35) and per_c[
        ("sA", "spatter")
    ] == pytest.approx(0.25)
    per_s = means["per_severity"].set_index(["setting_id", "severity"])["error"]
    assert per_s[("sR", 2)] == pytest.approx(0.55)
    overall = means["mean"].set_index("setting_id")
    assert (
        overall.loc["sA", "error"] == pytest.approx(0.30) and overall.loc["sA", "corruptions"] == 2
    )


def test_mce_and_relative_mce_against_a_reference_model():
    t = table({("sA", "a", 0): A, ("sR", "ref", 0): R}, CLEAN)
    result = mce(t, reference="ref", corruptions=["fog", "spatter"]).set_index("setting_id")
    ce_fog, ce_spatter = (0.2 + 0.4) / (0.4 + 0.6), (0.1 + 0.3) / (0.5 + 0.5)
    assert result.loc["sA", "CE_fog"] == pytest.approx(ce_fog)
    assert result.loc["sA", "mce"] == pytest.approx((ce_fog + ce_spatter) / 2)
    rel_fog = (0.6 - 2 * 0.05) / (1.0 - 2 * 0.2)
    rel_spatter = (0.4 - 2 * 0.05) / (1.0 - 2 * 0.2)
    assert result.loc["sA", "relative_mce"] == pytest.approx((rel_fog + rel_spatter) / 2)
    assert result.loc["sR", "mce"] == pytest.approx(1.0)  # the reference against itself
    assert result.loc["sA", "complete"]
    standard = mce(t, reference="ref").set_index("setting_id")
    assert (
        standard.loc["sA", "corruptions"] == 1 and not standard.loc["sA", "complete"]
    )  # spatter is an extra corruption: fog only
    with pytest.raises(ValueError, match="models there: \\['a', 'ref'\\]"):
        mce(t, reference="vgg")


def test_alexnet_reference_is_the_published_table_and_refuses_generated_sets():
    alex = {(c, s): e for c, e in ALEXNET_IMAGENET_C_ERRORS.items() for s in range(1, 6)}
    half = {k: v / 2 for k, v in alex.items()}
    t = table(
        {("sX", "x", 0): alex, ("sH", "h", 0): half},
        {"sX": ALEXNET_IMAGENET_CLEAN_ERROR, "sH": 0.1},
    )
    result = mce(t, reference="alexnet").set_index("setting_id")
    assert result.loc["sX", "mce"] == pytest.approx(1.0)
    assert result.loc["sX", "relative_mce"] == pytest.approx(1.0)
    assert result.loc["sH", "mce"] == pytest.approx(0.5)
    assert result.loc["sH", "complete"] and result.loc["sH", "corruptions"] == len(
        STANDARD_CORRUPTIONS
    )
    generated = table({("sX", "x", 0): alex}, {"sX": 0.4}, prefix="gen-")
    with pytest.raises(ValueError, match="generated corruption splits"):
        mce(generated, reference="alexnet")
    partial = table({("sX", "x", 0): {("fog", 1): 0.5}}, {"sX": 0.4})
    with pytest.raises(ValueError, match="lack some of severities"):
        mce(partial, reference="alexnet")


def test_rows_of_a_real_cifar10_c_run(tmp_path):
    from shiftbench_datasets.cifar import write_c_fixture, write_fixture

    from harness import run as run_mod

    from .conftest import TINY, compose_config, run_rows

    written = write_fixture(tmp_path)
    write_c_fixture(tmp_path / "CIFAR-10-C", written["test"], corruptions=["fog"])
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=cifar10_c",
                f"data_root={tmp_path}",
                f"results_dir={tmp_path / 'res'}",
                "eval=minimal",
                "dataset.corruptions=[fog]",
                "dataset.val_size=10",
            ]
        )
    )
    rows = run_rows(tmp_path / "res" / "runs" / summary["run_id"])
    errors = corruption_errors(rows).set_index("severity")
    assert sorted(errors.index) == [1, 2, 3, 4, 5] and set(errors["corruption"]) == {"fog"}
    acc = rows[(rows["metric"] == "accuracy") & (rows["scorer"] == "") & (rows["split"] == "fog-4")]
    assert errors.loc[4, "error"] == pytest.approx(1 - acc["value"].item())
    assert not errors["generated"].any()
    from harness.corruption_metrics import main

    from .conftest import run_cli

    # the documented flags, as a user types them (a shim in front of Hydra)
    out = tmp_path / "res" / "corruptions"
    proc = run_cli(
        ["--results", str(tmp_path / "res"), "--reference", "test_resnet"],
        tmp_path,
        module="harness.corruption_metrics",
    )
    assert "## mce" in proc.stdout and f"written to {out}" in proc.stdout
    written = pd.read_csv(out / "mce.csv")
    assert written["mce"].item() == pytest.approx(1.0)  # the only model against itself
    per_severity = pd.read_csv(out / "per_severity.csv")
    assert per_severity.set_index("severity").loc[4, "error"] == pytest.approx(
        errors.loc[4, "error"]
    )
    # Hydra overrides: the same files, byte for byte
    flagged = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    assert sorted(flagged) == [f"{n}.csv" for n in sorted(EXPECTED_FILES)]
    for p in out.glob("*.csv"):
        p.unlink()
    main([f"results_dir={tmp_path / 'res'}", "reference=test_resnet"])
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == flagged
    assert not list(out.glob(".*"))  # written atomically: no temporary file left behind


EXPECTED_FILES = ("errors", "per_corruption", "per_severity", "mean", "mce")


def test_documented_flags_become_hydra_overrides():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from harness.corruption_metrics import overrides

    assert overrides(["--results", "runs/exp1", "--reference=alexnet", "metric=accuracy"]) == [
        "results_dir='runs/exp1'",
        "reference='alexnet'",
        "metric=accuracy",
    ]
    assert overrides(["results_dir=r", "reference=m"]) == ["results_dir=r", "reference=m"]
    odd = ["/tmp/a b/res", "1e5", "it's\\", "x\\y", "0123"]  # never numbers, never mangled
    parsed = OverridesParser.create().parse_overrides(
        overrides([a for value in odd for a in ("--reference", value)])
    )
    assert [o.value() for o in parsed] == odd
    with pytest.raises(SystemExit, match="needs a value"):
        overrides(["--results"])
