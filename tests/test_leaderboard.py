"""Leaderboard aggregation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from harness.report.aggregate import aggregate, metric_table


def rows(metric, values, group_value=""):
    return pd.DataFrame(
        [
            {
                "dataset": "d",
                "setting_id": "s" * 20,
                "eval_id": "e" * 16,
                "model": "m",
                "method": "erm",
                "tta": "",
                "selection_rule": "id_val_accuracy",
                "split": "test",
                "split_role": "shift_test",
                "scorer": "",
                "metric": metric,
                "group_key": "label" if metric != "accuracy" else "",
                "group_value": group_value,
                "value": v,
                "run_id": f"r{i}",
                "seed": i,
            }
            for i, v in enumerate(values)
        ]
    )


def test_worst_group_accuracy_aggregates_over_every_seed():
    agg = aggregate(rows("worst_group_accuracy", [0.04, 0.10, 0.06]))
    [row] = agg.itertuples()
    assert row.n_seeds == 3 and row.mean == pytest.approx(0.0666666, abs=1e-6)
    assert row.std == pytest.approx(pd.Series([0.04, 0.10, 0.06]).std(ddof=1))


def test_lower_is_better_metrics_sort_best_first():
    table = pd.concat(
        [rows("ece", [0.3, 0.3]), rows("ece", [0.1, 0.1]).assign(setting_id="t" * 20)]
    )
    wide = metric_table(aggregate(table), "ece")
    assert wide["setting_id"].tolist() == ["tttttttt", "ssssssss"]


def test_intervals_t_over_seeds_and_bootstrap_for_one_seed(tmp_path):
    from scipy import stats

    from harness.store import atomic_write_parquet

    several = aggregate(rows("accuracy", [0.80, 0.84, 0.88]))
    [row] = several.itertuples()
    half = stats.t.ppf(0.975, 2) * 0.04 / 3**0.5
    assert (row.ci_low, row.ci_high) == pytest.approx((0.84 - half, 0.84 + half))
    assert row.interval == "t over seeds"

    one = rows("accuracy", [0.7])
    correct = [True] * 700 + [False] * 300
    scores = tmp_path / "runs" / "r0" / "posthoc" / ("e" * 16) / "scores" / "test.parquet"
    atomic_write_parquet(pd.DataFrame({"correct": correct}), scores)
    [boot] = aggregate(one, tmp_path).itertuples()
    assert boot.interval == "bootstrap over examples"
    se = (0.7 * 0.3 / 1000) ** 0.5
    assert boot.ci_low == pytest.approx(0.7 - 1.96 * se, abs=0.006)
    assert boot.ci_high == pytest.approx(0.7 + 1.96 * se, abs=0.006)
    [none] = aggregate(one).itertuples()  # no per-example scores at hand: no interval
    assert none.interval == "" and pd.isna(none.ci_low)


def test_paired_comparisons_against_the_baseline(tmp_path):
    import numpy as np

    from harness.report.compare import paired_comparisons
    from harness.store import atomic_write_parquet

    rng = np.random.default_rng(0)
    records = []
    for method, rate in (("erm", 0.6), ("better", 0.8), ("same", 0.6)):
        for seed in (0, 1, 2):
            run_id = f"{method}{seed}"
            correct = rng.random(500) < rate
            path = tmp_path / "runs" / run_id / "posthoc" / "e" / "scores" / "test.parquet"
            atomic_write_parquet(pd.DataFrame({"index": np.arange(500), "correct": correct}), path)
            records.append(
                {
                    "dataset": "d",
                    "model": "m",
                    "eval_id": "e",
                    "method": method,
                    "setting_id": f"s-{method}",
                    "split": "test",
                    "seed": seed,
                    "run_id": run_id,
                    "metric": "accuracy",
                    "scorer": "",
                    "group_key": "",
                    "value": correct.mean(),
                }
            )
    comp = paired_comparisons(pd.DataFrame(records), tmp_path).set_index("method")
    assert comp.loc["better", "verdict"] == "better" and comp.loc["better", "seeds"] == 3
    assert comp.loc["better", "difference"] == pytest.approx(0.2, abs=0.05)
    assert (
        comp.loc["better", "ci_low"]
        < comp.loc["better", "difference"]
        < comp.loc["better", "ci_high"]
    )
    assert comp.loc["same", "verdict"] == "not distinguishable"
    assert "erm" not in comp.index
    assert "seeds_needed" not in comp  # only when a min_effect is asked for
    from harness.stats import seeds_needed

    planned = paired_comparisons(pd.DataFrame(records), tmp_path, min_effect=0.02)
    for row in planned.itertuples():
        diffs = [
            pd.read_parquet(tmp_path / "runs" / f"{row.method}{s}/posthoc/e/scores/test.parquet")[
                "correct"
            ].mean()
            - pd.read_parquet(tmp_path / "runs" / f"erm{s}/posthoc/e/scores/test.parquet")[
                "correct"
            ].mean()
            for s in (0, 1, 2)
        ]
        assert row.seeds_needed == seeds_needed(np.array(diffs), 0.02).seeds
    import shutil

    shutil.rmtree(tmp_path / "runs" / "better1" / "posthoc" / "e" / "scores")  # pruned
    pruned = paired_comparisons(pd.DataFrame(records), tmp_path).set_index("method")
    assert pruned.loc["better", "seeds"] == 2 and pruned.loc["same", "seeds"] == 3
    assert pruned.loc["better", "difference"] == pytest.approx(0.2, abs=0.05)


def test_entries_not_distinguishable_from_the_best_share_its_rank():
    from harness.report.aggregate import uncertain_ranks

    bounds = pd.DataFrame(
        {
            "mean": [0.85, 0.90, 0.55, 0.70],
            "ci_low": [0.80, 0.85, 0.50, None],
            "ci_high": [0.90, 0.95, 0.60, None],
        },
        index=list("ABCD"),
    )
    assert uncertain_ranks(bounds).to_dict() == {"A": 1, "B": 1, "C": 4, "D": 3}


def test_scorer_comparisons_pair_runs_and_examples(tmp_path):
    import numpy as np

    from harness.report.compare import scorer_comparisons
    from harness.store import atomic_write_parquet

    rng = np.random.default_rng(0)
    records = []
    for seed in (0, 1, 2):
        run_id = f"r{seed}"
        folder = tmp_path / "runs" / run_id / "posthoc" / "e" / "scores"
        for split, shift in (("id_test", 0.0), ("far", 1.0)):
            msp = rng.normal(-shift, 1, 300)  # ID examples score higher
            frame = pd.DataFrame(
                {
                    "index": np.arange(300),
                    "correct": rng.random(300) < 0.7,
                    "msp": msp,
                    "copy": msp,  # the same scorer: difference exactly 0
                    "sharp": msp * 0 - 5 * shift + rng.normal(0, 0.1, 300),  # separates fully
                }
            )
            atomic_write_parquet(frame, folder / f"{split}.parquet")
        for split, role in (("id_test", "id_test"), ("far", "shift_test")):
            records.append(
                {
                    "dataset": "d",
                    "model": "m",
                    "method": "erm",
                    "setting_id": "s",
                    "eval_id": "e",
                    "run_id": run_id,
                    "seed": seed,
                    "scorer": "msp",
                    "metric": "auroc_vs_id_test",
                    "split": split,
                    "split_role": role,
                    "value": 0.0,
                }
            )
    comp = scorer_comparisons(pd.DataFrame(records), tmp_path, "msp")
    assert (comp["adjustment"] == "bh").all()  # one family: dataset × eval config
    expected = stats.false_discovery_control(comp["p_value"].to_numpy())
    assert comp["p_adjusted"].to_numpy() == pytest.approx(expected)
    comp = comp.set_index(["scorer", "split"])
    assert comp.loc[("copy", "far"), "difference"] == 0.0
    assert comp.loc[("copy", "far"), "verdict"] == "not distinguishable"
    sharp = comp.loc[("sharp", "far")]
    assert sharp["verdict"] == "better" and sharp["seeds"] == 3 and sharp["examples"] == 600
    assert sharp["level"] == "method-level (3 seeds)"
    assert sharp["difference"] == pytest.approx(1 - 0.76, abs=0.05)  # msp AUROC ≈ Φ(1/√2)
    assert ("sharp", "id_test") not in comp.index  # a split against itself is no task
    import shutil

    shutil.rmtree(tmp_path / "runs")  # without per-example scores: no comparison, no crash
    assert scorer_comparisons(pd.DataFrame(records), tmp_path).empty


def test_leaderboard_options_choose_outputs_and_refuse_unknown_ones(tmp_path):
    from harness.leaderboard import write_leaderboard

    with pytest.raises(ValueError, match="outputs must be among"):
        write_leaderboard(tmp_path, outputs=["markdown", "pdf"])
    paths = write_leaderboard(tmp_path, outputs=["markdown"])
    assert "html" not in paths and not (tmp_path / "leaderboard" / "index.html").exists()


def test_the_primary_metric_comes_first_with_intervals_even_a_datasets_own_metric():
    from harness.report.markdown import dataset_markdown

    t = pd.concat([rows("accuracy", [0.8, 0.9, 0.85]), rows("acc_wg", [0.5, 0.6, 0.55])])
    t.loc[t["metric"] == "acc_wg", "group_key"] = ""
    md = dataset_markdown(aggregate(t), "d", primary_metric="acc_wg")
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## acc_wg (primary metric)" and sections[1] == "## Accuracy"
    first = md.split("## acc_wg (primary metric)")[1].split("##")[0]
    assert "0.550 ± 0.050 [" in first and "rank (" in first  # interval and rank


def test_corruption_section_means_over_corruptions_per_severity_with_mce(tmp_path):
    from harness.report.corruption import corruption_tables
    from harness.report.markdown import dataset_markdown

    records = []
    for model, drop in (("ref", 0.2), ("robust", 0.1)):
        for corruption in ("gaussian_noise", "motion_blur"):
            for sev in (1, 2):
                records.append((model, f"{corruption}-{sev}", "shift_test", 0.9 - drop * sev))
        records.append((model, "test", "id_test", 0.9))
    t = pd.DataFrame(
        [
            {
                "dataset": "d",
                "setting_id": f"s_{m}" + "0" * 10,
                "eval_id": "e",
                "model": m,
                "method": "erm",
                "tta": "",
                "selection_rule": "id_val_accuracy",
                "split": split,
                "split_role": role,
                "scorer": "",
                "metric": "accuracy",
                "group_key": "",
                "group_value": "",
                "value": v,
                "run_id": f"r_{m}",
                "seed": 0,
            }
            for m, split, role, v in records
        ]
    )
    corruptions = corruption_tables(t, reference="ref")
    md = dataset_markdown(aggregate(t), "d", corruptions=corruptions)
    section = md.split("## Corruptions")[1]
    robust = next(line for line in section.splitlines() if "| robust" in line)
    cells = [c.strip() for c in robust.split("|")[1:-1]]
    # mean accuracy 0.75, severities 0.8 / 0.7, CE = (0.2+0.3)/(0.3+0.5) = 0.625
    assert cells[4:] == ["0.750", "2", "0.800", "0.700", "0.625", "0.500"]
    assert "mCE and relative mCE against ref" in section


def test_a_tta_run_of_the_baseline_is_compared_with_it_not_mistaken_for_it(tmp_path):
    import numpy as np

    from harness.report.compare import paired_comparisons
    from harness.store import atomic_write_parquet

    rng = np.random.default_rng(0)
    records = []
    for method, tta, rate in (("erm", "", 0.6), ("erm", "tent", 0.8)):
        for seed in (0, 1, 2):
            run_id = f"{method}{tta}{seed}"
            correct = rng.random(500) < rate
            path = tmp_path / "runs" / run_id / "posthoc" / "e" / "scores" / "test.parquet"
            atomic_write_parquet(pd.DataFrame({"index": np.arange(500), "correct": correct}), path)
            records.append(
                {
                    "dataset": "d",
                    "model": "m",
                    "eval_id": "e",
                    "method": method,
                    "tta": tta,
                    "setting_id": f"s-{method}-{tta}",
                    "split": "test",
                    "seed": seed,
                    "run_id": run_id,
                    "metric": "accuracy",
                    "scorer": "",
                    "group_key": "",
                    "value": correct.mean(),
                }
            )
    comp = paired_comparisons(pd.DataFrame(records), tmp_path)
    assert list(comp["method"]) == ["erm+tent"] and list(comp["verdict"]) == ["better"]


def test_plots_are_redrawn_only_when_their_rows_or_options_change(tmp_path, monkeypatch):
    from harness.report import plotcache
    from tests.test_export import table as golden_table

    t = golden_table()
    out = tmp_path / "plots" / "toy"

    def plots(rows, primary="accuracy"):
        jobs = {out: (rows, aggregate(rows), primary, "erm")}
        with plotcache.CachedPlots(jobs, tmp_path) as cached:
            return cached.result()[out]

    first = plots(t)
    assert first and all(p.is_file() for ps in first.values() for p in ps)
    drawn = []
    real = plotcache.Drawing
    monkeypatch.setattr(
        plotcache,
        "Drawing",
        lambda builders, *a: drawn.append(len(builders)) or real(builders, *a),
    )
    shuffled = t.sample(frac=1, random_state=0)  # same rows, another order: same plots
    assert plots(shuffled) == first
    assert drawn == [0]
    changed = t.assign(value=t["value"].where(t.index != 0, 0.123))
    plots(changed)
    assert drawn[-1] > 0
    plots(changed, "ece")
    assert len(drawn) == 3 and drawn[-1] > 0
    next(out.glob("*.png")).unlink()  # a file gone: drawn again
    plots(changed, "ece")
    assert drawn[-1] > 0
    assert plots(changed, "ece") and drawn[-1] == 0  # and then kept


def test_after_a_search_each_method_is_compared_through_its_chosen_setting(tmp_path):
    import json

    import numpy as np

    from harness.leaderboard import write_leaderboard
    from harness.rundir import RunDir
    from harness.store import atomic_write_parquet, atomic_write_text

    rng = np.random.default_rng(0)
    # two ERM settings (a hyperparameter search; the second is better on validation) + mixup
    for method, setting, val, rate in (
        ("erm", "ea", 0.70, 0.6),
        ("erm", "eb", 0.90, 0.6),
        ("mixup", "cc", 0.80, 0.8),
    ):
        for seed in (0, 1, 2):  # 2 seeds give the test 1 df: too few to call anything
            run_id = f"{setting}{seed}"  # hex, as run ids are
            rd = RunDir(tmp_path, run_id)
            stage = rd / "posthoc" / "e"
            correct = rng.random(400) < rate
            base = {
                "run_id": run_id,
                "setting_id": setting,
                "dataset": "d",
                "model": "m",
                "method": method,
                "tta": "",
                "seed": seed,
                "group_key": "",
                "group_value": "",
                "scorer": "",
                "metric": "accuracy",
                "n": 400,
                "selection_rule": "id_val_accuracy",
                "eval_id": "e",
            }
            rows = [
                {**base, "split": "val", "split_role": "val", "value": val},
                {**base, "split": "test", "split_role": "id_test", "value": correct.mean()},
            ]
            atomic_write_parquet(pd.DataFrame(rows), stage / "rows.parquet")
            atomic_write_parquet(
                pd.DataFrame({"index": np.arange(400), "correct": correct}),
                stage / "scores" / "test.parquet",
            )
            atomic_write_text(stage / "DONE", "{}")
            payload = {
                "dataset": {"name": "d"},
                "model": {"name": "m"},
                "method": {"name": method, "lr": setting},
                "seed": seed,
            }
            atomic_write_text(rd / "key.json", json.dumps({"payload": payload}))
            rd.mark_complete({"run_id": run_id})
    write_leaderboard(tmp_path, outputs=["markdown"], model_selection=None)
    assert pd.read_csv(tmp_path / "leaderboard" / "comparisons.csv").empty  # two baselines
    write_leaderboard(tmp_path, outputs=["markdown"], model_selection="id_val")
    comp = pd.read_csv(tmp_path / "leaderboard" / "comparisons.csv")
    assert list(comp["method"]) == ["mixup"] and list(comp["verdict"]) == ["better"]
    selection = pd.read_csv(tmp_path / "leaderboard" / "selection.csv").set_index("method")
    assert selection.loc["erm", "setting_id"] == "eb" and selection.loc["erm", "settings"] == 2


def test_a_rebuild_with_plot_workers_links_every_plot_it_drew(tmp_path):
    """The store of benchmarks/leaderboard_regen.py (the real run layout), rebuilt with plots
    drawn in two forked workers while the tables are made."""
    import importlib.util
    import re

    from harness.leaderboard import write_leaderboard

    spec = importlib.util.spec_from_file_location(
        "leaderboard_regen", Path(__file__).parent.parent / "benchmarks" / "leaderboard_regen.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_store(tmp_path, 40)
    paths = write_leaderboard(tmp_path, "method0", plot_workers=2)
    for dataset in ("synth_a", "synth_b"):
        md = paths[dataset].read_text()
        links = re.findall(r"\]\((plots/[^)]+)\)", md)
        assert {Path(link).stem for link in links} >= {"bars_accuracy", "accuracy_on_the_line"}
        assert all((tmp_path / "leaderboard" / link).is_file() for link in links)
        assert md.endswith(f"({links[-1]})\n")  # the links close the page
        assert (tmp_path / "leaderboard" / "plots" / dataset / ".plots.json").is_file()
    html = paths["html"].read_text()
    assert "plots/synth_b/accuracy_on_the_line.png" in html


def _save_many(stem):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from harness.report.drawing import save

    for _ in range(40):
        fig = Figure()
        fig.add_subplot().plot([1, 2, 3])
        save(fig, stem)


def test_two_processes_saving_one_plot_both_succeed(tmp_path):
    # overlapping leaderboard rebuilds on one root draw the same files
    import multiprocessing

    stem = tmp_path / "plots" / "p"
    procs = [
        multiprocessing.get_context("spawn").Process(target=_save_many, args=(stem,))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(x.name for x in stem.parent.iterdir()) == ["p.pdf", "p.png"]  # no leftovers
    assert (stem.parent / "p.png").read_bytes().startswith(b"\x89PNG")
