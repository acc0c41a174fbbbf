"""The claims suite (harness/claims.py, harness/claim_rules.py, harness/report/claims.py):
verdicts of synthetic intervals, rules applied to a synthetic tidy table and checked
against numpy / scipy computed here, the rule checks, the claims.md writer, every shipped
preset's rule, and one tiny claim end to end through the CLI (the pipeline's smoke test)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from harness import claim_rules as cr
from harness.report import claims as report

from .conftest import CONF, ROOT, run_cli

PRESETS = sorted((CONF / "experiment" / "claims").glob("*.yaml"))


# ----------------------------------------------------------------- verdicts of intervals


@pytest.mark.parametrize(
    ("low", "high", "direction", "margin", "expected"),
    [
        (0.1, 0.3, "greater", 0.0, cr.HOLDS),
        (0.1, 0.3, "greater", 0.2, cr.UNCLEAR),  # the margin is inside the interval
        (0.1, 0.3, "greater", 0.3, cr.FAILS),  # wholly at or below the margin
        (-0.3, -0.1, "greater", 0.0, cr.FAILS),
        (-0.1, 0.2, "greater", 0.0, cr.UNCLEAR),
        (-0.3, -0.1, "less", 0.0, cr.HOLDS),
        (-0.3, -0.1, "less", 0.2, cr.UNCLEAR),
        (0.1, 0.3, "less", 0.0, cr.FAILS),
        (-0.1, 0.1, "less", 0.0, cr.UNCLEAR),
        (-0.05, 0.05, "equivalent", 0.1, cr.HOLDS),
        (-0.05, 0.15, "equivalent", 0.1, cr.UNCLEAR),
        (0.12, 0.3, "equivalent", 0.1, cr.FAILS),
        (-0.3, -0.1, "equivalent", 0.1, cr.FAILS),
    ],
)
def test_verdict_of_an_interval(low, high, direction, margin, expected):
    assert cr.verdict(low, high, direction, margin) == expected


def test_a_claim_holds_only_when_every_rule_holds():
    assert cr.combine([cr.HOLDS, cr.HOLDS]) == cr.HOLDS
    assert cr.combine([cr.HOLDS, cr.UNCLEAR]) == cr.UNCLEAR
    assert cr.combine([cr.HOLDS, cr.UNCLEAR, cr.FAILS]) == cr.FAILS
    assert cr.combine([]) == cr.UNCLEAR


# ----------------------------------------------------------------- rules on a table


def synthetic_table(seeds=4, splits=5, seed=0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """abs_error of scorers x and y on `splits` shifted splits and one ID split."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 0.3, (seeds, splits))
    y = x + 0.05 + rng.normal(0, 0.01, (seeds, splits))
    rows = []
    for s in range(seeds):
        for j in range(splits):
            for scorer, v in (("x", x[s, j]), ("y", y[s, j])):
                rows.append(dict(seed=s, split=f"gen-noise-{j + 1}", split_role="shift_test",
                                 scorer=scorer, metric="abs_error", value=v, group_value="",
                                 method="erm", run_id=f"r{s}"))  # fmt: skip
        rows.append(dict(seed=s, split="id_test", split_role="id_test", scorer="x",
                         metric="abs_error", value=0.01, group_value="", method="erm",
                         run_id=f"r{s}"))  # fmt: skip
    return pd.DataFrame(rows), x, y


def rule(**kw):
    base = dict(name="t", statistic="difference", test="crossed", metric="abs_error",
                splits=["role:shift_test"], a={"scorer": "x"}, b={"scorer": "y"},
                direction="less", margin=0.0)  # fmt: skip
    return {**base, **kw}


def test_a_difference_rule_is_the_crossed_paired_difference_of_the_pivoted_values():
    from harness.stats import paired_difference

    table, x, y = synthetic_table()
    r = cr.apply_rule(table, rule(), 0.95)
    expected = paired_difference(x, y, confidence=0.95)
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx(
        (expected.difference, expected.ci_low, expected.ci_high)
    )
    assert r.estimate == pytest.approx((x - y).mean())
    assert (r.seeds, r.units) == x.shape and r.verdict == cr.HOLDS
    assert r.mean_a == pytest.approx(x.mean()) and r.mean_b == pytest.approx(y.mean())


def test_seeds_t_and_a_constant_side_match_scipy():
    table, x, _ = synthetic_table()
    r = cr.apply_rule(table, rule(test="seeds_t", b={"value": 0.5}, direction="less"), 0.9)
    per_seed = (x - 0.5).mean(axis=1)
    low, high = stats.t.interval(0.9, len(per_seed) - 1, per_seed.mean(), stats.sem(per_seed))
    assert (r.ci_low, r.ci_high) == pytest.approx((low, high))


def test_a_one_split_side_is_paired_with_every_split_of_the_other():
    table, x, _ = synthetic_table()
    r = cr.apply_rule(
        table, rule(a={"scorer": "x", "splits": ["id_test"]}, b={"scorer": "x"}), 0.95
    )
    assert r.units == x.shape[1]
    assert r.estimate == pytest.approx((0.01 - x).mean())


def test_a_slope_rule_is_the_mean_of_per_seed_least_squares_slopes():
    table, x, _ = synthetic_table()
    r = cr.apply_rule(
        table,
        rule(statistic="slope", test="seeds_t", x=r"-(\d+)$", b=None, direction="greater"),
        0.95,
    )
    slopes = [stats.linregress(np.arange(1, 6), row).slope for row in x]
    assert r.estimate == pytest.approx(np.mean(slopes))
    low, high = stats.t.interval(0.95, len(slopes) - 1, np.mean(slopes), stats.sem(slopes))
    assert (r.ci_low, r.ci_high) == pytest.approx((low, high))


def test_missing_or_ambiguous_rows_are_reported_not_guessed():
    table, _, _ = synthetic_table()
    with pytest.raises(ValueError, match="no rows match"):
        cr.apply_rule(table, rule(a={"scorer": "nope"}), 0.95)
    doubled = pd.concat([table, table.assign(method="other", run_id="o")])
    with pytest.raises(ValueError, match="narrow `where`.*method"):
        cr.apply_rule(doubled, rule(), 0.95)
    assert cr.apply_rule(doubled, rule(where={"method": "other"}), 0.95).verdict == cr.HOLDS
    with pytest.raises(ValueError, match="at least 2 seeds"):
        cr.apply_rule(table[table["seed"] == 0], rule(), 0.95)


def test_a_claim_is_bonferroni_corrected_and_diagnostics_stay_out_of_its_verdict():
    table, _, _ = synthetic_table()
    claim = {"title": "t", "paper": "p", "confidence": 0.95,
             "tests": [rule(name="holds"), rule(name="fails", direction="greater", claim=False),
                       rule(name="broken", a={"scorer": "nope"}, claim=False)]}  # fmt: skip
    out = cr.evaluate_claim(table, claim)
    assert out["confidence"] == pytest.approx(1 - 0.05 / 3)
    assert [t["verdict"] for t in out["tests"]] == [cr.HOLDS, cr.FAILS]
    assert out["verdict"] == cr.HOLDS and "broken" in out["errors"]
    claim["tests"][2]["claim"] = True
    assert cr.evaluate_claim(table, claim)["verdict"] == "error"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"direction": "bigger"}, "tests[0].direction"),
        ({"statistic": "ratio"}, "tests[0].statistic"),
        ({"test": "bootstrap"}, "tests[0].test"),
        ({"margin": "big"}, "tests[0].margin"),
        ({"direction": "equivalent", "margin": 0}, "tests[0].margin"),
        ({"b": None}, "tests[0].b"),
        ({"statistic": "slope", "test": "seeds_t", "x": "no group"}, "tests[0].x"),
        ({"colour": 1}, "unknown keys"),
        ({"statistic": "slope", "test": "seeds_t", "x_key": "a b"}, "tests[0].x_key"),
        ({"statistic": "slope", "test": "seeds_t", "x_key": "d.c", "x": "(1)"}, "x_key"),
        ({"statistic": "std_ratio", "test": "seeds_t"}, "tests[0].b"),
        ({"statistic": "std_ratio", "test": "crossed", "b": None}, "tests[0].test"),
        ({"x": "-(\\d)"}, "slope only"),
        ({"a": {"groups": "0|red"}}, "tests[0].a.groups"),
        ({"claim": False}, "at least one rule"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(change, key):
    t = {k: v for k, v in {**rule(), **change}.items() if v is not None}
    with pytest.raises(ValueError, match="claim") as err:
        cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    assert key in str(err.value)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_shipped_claim_declares_a_valid_rule_and_a_seed_sweep(preset):
    cfg = yaml.safe_load(preset.read_text())
    cr.check_claim(cfg["claim"], preset.stem)
    params = cfg["hydra"]["sweeper"]["params"]
    # the replicates: seeds, or disjoint seed ensembles (one value per ensemble)
    seeds = str(params["seed"]).split(",") if "seed" in params else None
    if seeds is None:
        seeds = yaml.safe_load(f"[{params['ensemble.seeds']}]")
        members = [s for ens in seeds for s in ens]
        assert len(members) == len(set(members)), "ensembles as replicates share no member"
    assert len(seeds) >= 3, "a claim is a sweep over at least 3 seeds"


# ----------------------------------------------------------------- the writer


def test_claims_md_renders_every_claim_with_its_provenance(tmp_path):
    table, _, _ = synthetic_table()
    claim = {"title": "X beats Y", "paper": "Someone 2020", "tests": [rule(name="x vs y")]}
    record = {"name": "x_vs_y", "claim": claim, "sweep": {"seed": "0,1,2"}, "overrides": [],
              "sweep_seconds": 12.0, **cr.evaluate_claim(table, claim), "runs": 4,
              "seeds": [0, 1, 2, 3]}  # fmt: skip
    (tmp_path / "x_vs_y").mkdir()
    (tmp_path / "x_vs_y" / "claim.json").write_text(json.dumps(record))
    out = tmp_path / "claims.md"
    text = report.write_claims(tmp_path, ["x_vs_y", "not_run_yet"], out)
    assert out.read_text() == text
    assert "do not edit by hand" in text and "RESULTS_VERSION" in text
    assert f"statistics {report.stats_version()}" in text
    assert "| not_run_yet | | not run | | |" in text
    result = record["tests"][0]
    line = next(ln for ln in text.splitlines() if ln.startswith("| x vs y |"))
    assert f"{result['estimate']:.3f}" in line and f"[{result['ci_low']:.3f}," in line
    assert line.rstrip(" |").endswith(cr.HOLDS)
    assert "**Verdict: holds**" in text and 'What "does not hold here" means' in text
    assert "direction: less" in text  # the rule as declared


def test_claims_md_in_the_repository_is_generated():
    text = (ROOT / "docs" / "claims.md").read_text()
    assert "generated by `make claims`" in text and "Made at commit" in text


# ----------------------------------------------------------------- the pipeline


def test_a_tiny_claim_runs_end_to_end_through_the_cli(tmp_path):
    tiny = ["dataset.limit=24", "dataset.families=[noise]", "dataset.severities=[1,5]",
            "trainer.epochs=1", "trainer.max_steps=2", "trainer.eval_batch_size=64"]  # fmt: skip
    out = tmp_path / "claims.md"
    proc = run_cli(
        [
            "names=[msp_failure_detection]",
            f"root={tmp_path / 'claims'}",
            f"out={out}",
            "overrides=[" + ",".join(f"'{o}'" for o in tiny) + "]",
        ],  # fmt: skip
        cwd=ROOT,
        module="harness.claims",
    )
    record = json.loads((tmp_path / "claims" / "msp_failure_detection" / "claim.json").read_text())
    assert record["sweep_rc"] == 0 and record["seeds"] == [0, 1, 2]
    assert record["verdict"] in (cr.HOLDS, cr.FAILS, cr.UNCLEAR, "error"), proc.stdout
    assert record["tests"], record["errors"]
    assert "msp_failure_detection" in out.read_text()


def test_a_sides_where_adds_to_the_rules():
    table, x, y = synthetic_table()
    doubled = pd.concat([table, table.assign(method="other", run_id="o", value=table["value"] + 1)])
    r = cr.apply_rule(doubled, rule(where={"method": "erm"}, a={"scorer": "x", "where": {}}), 0.95)
    assert r.estimate == pytest.approx((x - y).mean())
    r = cr.apply_rule(
        doubled,
        rule(where={"method": "erm"}, a={"scorer": "x", "where": {"method": "other"}}),
        0.95,
    )
    assert r.estimate == pytest.approx((x + 1 - y).mean())


# ----------------------------------------------------------------- new statistics


def group_table(seed=0):
    """Per-group accuracy on one split at three correlations (a key column, as
    harness.claims.add_key_columns adds it) and 4 seeds; the gap grows with the correlation."""
    rng = np.random.default_rng(seed)
    corr = [0.8, 0.95, 0.99]
    rows, gap = [], np.zeros((4, 3))
    for s in range(4):
        for j, c in enumerate(corr):
            acc = {g: rng.uniform(0.85, 0.95) for g in ("0|red", "1|green")}
            acc |= {g: rng.uniform(0.3, 0.9) - c / 2 for g in ("0|green", "1|red")}
            gap[s, j] = np.mean([acc["0|red"], acc["1|green"]]) - np.mean(
                [acc["0|green"], acc["1|red"]]
            )
            for g, v in acc.items():
                rows.append(dict(seed=s, split="test_balanced", split_role="test", scorer="",
                                 metric="accuracy", value=v, group_value=g, method="erm",
                                 run_id=f"r{s}{j}", **{"key:dataset.correlation": c}))  # fmt: skip
    return pd.DataFrame(rows), np.array(corr), gap


def test_a_slope_over_a_setting_of_a_group_gap_matches_scipy():
    table, corr, gap = group_table()
    t = rule(statistic="slope", test="seeds_t", metric="accuracy", splits=["test_balanced"],
             x_key="dataset.correlation", a={"groups": ["0|red", "1|green"]},
             b={"groups": ["0|green", "1|red"]}, direction="greater")  # fmt: skip
    cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    r = cr.apply_rule(table, t, 0.95)
    slopes = [stats.linregress(corr, row).slope for row in gap]
    low, high = stats.t.interval(0.95, len(slopes) - 1, np.mean(slopes), stats.sem(slopes))
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((np.mean(slopes), low, high))
    assert (r.seeds, r.units) == (4, 3)
    with pytest.raises(ValueError, match="no rows of groups"):
        cr.apply_rule(table, {**t, "a": {"groups": ["0|red", "2|blue"]}}, 0.95)
    with pytest.raises(ValueError, match="no column 'key:dataset.scale'"):
        cr.apply_rule(table, {**t, "x_key": "dataset.scale"}, 0.95)


def binomial_table(k, n, p, splits=1, seed=0):
    rng = np.random.default_rng(seed)
    acc = rng.binomial(n, p, (k, splits)) / n
    rows = [dict(seed=s, split=f"s{j}", split_role="test", scorer="", metric="accuracy",
                 value=acc[s, j], n=n, group_value="", method="erm", run_id=f"r{s}")
            for s in range(k) for j in range(splits)]  # fmt: skip
    return pd.DataFrame(rows), acc


def test_std_ratio_is_the_seeds_std_over_the_binomial_std_with_a_chi2_interval():
    table, acc = binomial_table(9, 500, 0.9)
    t = rule(statistic="std_ratio", test="seeds_t", metric="accuracy", splits=["s0"], a={},
             b=None, direction="equivalent", margin=0.5)  # fmt: skip
    t = {k: v for k, v in t.items() if v is not None}
    cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    r = cr.apply_rule(table, t, 0.95)
    p = acc.mean()
    ratio = np.std(acc, ddof=1) / np.sqrt(p * (1 - p) / 500)
    # a normal variance's interval: (k-1) s² / σ² ~ χ²(k-1)
    lo_q, hi_q = stats.chi2.interval(0.95, 8)
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx(
        (ratio, ratio * np.sqrt(8 / hi_q), ratio * np.sqrt(8 / lo_q))
    )
    assert r.verdict == cr.verdict(r.ci_low - 1, r.ci_high - 1, "equivalent", 0.5)


def test_std_ratio_interval_covers_one_for_binomial_accuracies():
    # independent check: accuracies drawn binomially have true ratio 1; the 90% interval
    # (3 splits pooled, 5 seeds) should cover it about 90% of the time
    covered = 0
    for rep in range(400):
        _, acc = binomial_table(5, 400, 0.85, splits=3, seed=rep)
        _, low, high = cr.std_ratio(acc, np.full(acc.shape, 400.0), 0.9)
        covered += low < 1 < high
    assert 0.84 < covered / 400 < 0.96
    with pytest.raises(ValueError, match="at least 3 seeds"):
        cr.std_ratio(acc[:2], np.full((2, 3), 400.0), 0.9)


def test_add_key_columns_reads_each_runs_key(tmp_path):
    from harness.claims import add_key_columns
    from harness.rundir import RunDir

    for run_id, corr in (("aa", 0.8), ("bb", 0.99)):
        rd = RunDir(tmp_path, run_id)
        rd.path.mkdir(parents=True)
        rd.key_json.write_text(json.dumps({"payload": {"dataset": {"correlation": corr}}}))
    table = pd.DataFrame({"run_id": ["aa", "bb", "aa"], "value": [1, 2, 3]})
    out = add_key_columns(table, str(tmp_path), ["dataset.correlation", "dataset.nope"])
    assert out["key:dataset.correlation"].tolist() == [0.8, 0.99, 0.8]
    assert out["key:dataset.nope"].isna().all()


# ----------------------------------------------------------------- claims 2 and 5's statistics


SCORERS = ["s1", "s2", "s3", "s4", "s5"]


def scorer_table(seeds=4, seed=0):
    """Per seed, each scorer's OOD AUROC on two OOD splits and its pooled failure AUROC."""
    rng = np.random.default_rng(seed)
    ood = rng.uniform(0.5, 1.0, (seeds, len(SCORERS), 2))
    fail = rng.uniform(0.5, 1.0, (seeds, len(SCORERS)))
    rows = []
    for s in range(seeds):
        for j, name in enumerate(SCORERS):
            common = dict(seed=s, scorer=name, group_value="", method="erm", run_id=f"r{s}")
            for k, split in enumerate(("ood_a", "ood_b")):
                rows.append(dict(split=split, split_role="ood", metric="auroc_vs_id_test",
                                 value=ood[s, j, k], **common))  # fmt: skip
            rows.append(dict(split="pooled_test", split_role="pooled", metric="auroc_error",
                             value=fail[s, j], **common))  # fmt: skip
    return pd.DataFrame(rows), ood, fail


def rank_rule(**kw):
    base = dict(name="rho", statistic="rank_correlation", test="seeds_t", scorers=SCORERS,
                a={"metric": "auroc_vs_id_test", "splits": ["role:ood"]},
                b={"metric": "auroc_error", "splits": ["pooled_test"]},
                reference=0.5, direction="less", margin=0.0)  # fmt: skip
    return {**base, **kw}


def test_rank_correlation_is_the_per_seed_spearman_rho_with_a_t_interval():
    table, ood, fail = scorer_table()
    t = rank_rule()
    cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    r = cr.apply_rule(table, t, 0.9)

    # brute force: ranks by sorting (no ties in continuous draws), Pearson of the ranks
    def ranks(v):
        return np.argsort(np.argsort(v)).astype(float)

    rhos = [np.corrcoef(ranks(ood[s].mean(axis=1)), ranks(fail[s]))[0, 1] for s in range(4)]
    low, high = stats.t.interval(0.9, 3, np.mean(rhos), stats.sem(rhos))
    assert low < -1  # these draws' t interval leaves ρ's range: clipped to [-1, 1]
    low, high = max(low, -1.0), min(high, 1.0)
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((np.mean(rhos), low, high))
    assert (r.seeds, r.units) == (4, len(SCORERS))
    assert r.verdict == cr.verdict(low - 0.5, high - 0.5, "less", 0.0)
    # identical rankings: rho = 1 on every seed
    same = table.copy()
    pooled = same["metric"] == "auroc_error"
    same.loc[pooled, "value"] = same[pooled]["scorer"].map({s: i for i, s in enumerate(SCORERS)})
    ood_rows = same["metric"] == "auroc_vs_id_test"
    same.loc[ood_rows, "value"] = same[ood_rows]["scorer"].map(
        {s: i for i, s in enumerate(SCORERS)}
    )
    assert cr.apply_rule(same, t, 0.9).estimate == pytest.approx(1.0)
    with pytest.raises(ValueError, match="scorers without rows"):
        cr.apply_rule(table[table["scorer"] != "s5"], t, 0.9)


def test_a_side_reduced_over_scorers_is_their_per_seed_maximum():
    table, _, fail = scorer_table()
    t = rule(test="seeds_t", metric="auroc_error", splits=["pooled_test"], a={"scorer": "s1"},
             b={"scorers": SCORERS[1:], "reduce": "max"}, direction="greater")  # fmt: skip
    cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    r = cr.apply_rule(table, t, 0.95)
    diff = fail[:, 0] - fail[:, 1:].max(axis=1)
    low, high = stats.t.interval(0.95, 3, diff.mean(), stats.sem(diff))
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((diff.mean(), low, high))
    with pytest.raises(ValueError, match="not every one"):
        cr.apply_rule(table[~((table["scorer"] == "s5") & (table["seed"] == 0))], t, 0.95)


def line_table(seeds=3, models=6, seed=0):
    """Per seed, `models` runs: accuracy on id_test (x) and on three shifted splits; the
    first two follow a probit line with noise, the third is unrelated to x."""
    from scipy.special import ndtr, ndtri

    rng = np.random.default_rng(seed)
    rows, acc = [], {}
    for s in range(seeds):
        x = rng.uniform(0.3, 0.97, models)
        ys = {"shift-1": ndtr(0.8 * ndtri(x) - 0.5 + rng.normal(0, 0.1, models)),
              "shift-2": ndtr(1.1 * ndtri(x) - 1.0 + rng.normal(0, 0.3, models)),
              "label": rng.uniform(0.2, 0.8, models)}  # fmt: skip
        acc[s] = {"id_test": x, **ys}
        for m in range(models):
            for split, v in acc[s].items():
                role = "id_test" if split == "id_test" else "shift_test"
                rows.append(dict(seed=s, split=split, split_role=role, scorer="",
                                 metric="accuracy", value=v[m], group_value="", method="erm",
                                 model=f"m{m % 2}", run_id=f"r{s}-{m}"))  # fmt: skip
    return pd.DataFrame(rows), acc


def brute_r2(x, y, transform):
    """R² as the squared Pearson correlation of the transformed accuracies (numpy)."""
    return np.corrcoef(transform(x), transform(y))[0, 1] ** 2


def test_r2_is_the_probit_line_fit_per_seed_and_split_against_numpy():
    from scipy.special import ndtri

    from harness.stats import paired_difference

    table, acc = line_table()
    t = rule(statistic="r2", metric="accuracy", x_splits=["id_test"], splits=["shift-*"], a={},
             b={"value": 0.8}, direction="greater")  # fmt: skip
    cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    r = cr.apply_rule(table, t, 0.95)
    r2 = np.array([[brute_r2(acc[s]["id_test"], acc[s][sp], ndtri) for sp in ("shift-1", "shift-2")]
                   for s in range(3)])  # fmt: skip
    expected = paired_difference(r2, np.full_like(r2, 0.8), confidence=0.95)
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx(
        (expected.difference, expected.ci_low, expected.ci_high)
    )
    assert r.mean_a == pytest.approx(r2.mean()) and (r.seeds, r.units) == (3, 2)
    # two R² sides (the unrelated split vs the two lines), one split paired with both;
    # linear axes on side b
    t2 = rule(statistic="r2", test="seeds_t", metric="accuracy", x_splits=["id_test"],
              a={"splits": ["label"]}, b={"splits": ["shift-*"], "scale": "linear"},
              direction="less")  # fmt: skip
    cr.check_claim({"title": "t", "paper": "p", "tests": [t2]})
    r = cr.apply_rule(table, t2, 0.95)
    per_seed = [
        brute_r2(acc[s]["id_test"], acc[s]["label"], ndtri)
        - np.mean(
            [brute_r2(acc[s]["id_test"], acc[s][sp], lambda v: v) for sp in ("shift-1", "shift-2")]
        )  # fmt: skip
        for s in range(3)
    ]
    low, high = stats.t.interval(0.95, 2, np.mean(per_seed), stats.sem(per_seed))
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((np.mean(per_seed), low, high))
    # one family: only its runs are the points (3 per seed)
    r = cr.apply_rule(table, {**t, "where": {"model": "m0"}}, 0.95)
    first = [brute_r2(acc[s]["id_test"][::2], acc[s]["shift-1"][::2], ndtri) for s in range(3)]
    assert r.mean_a == pytest.approx(
        np.mean(
            first
            + [brute_r2(acc[s]["id_test"][::2], acc[s]["shift-2"][::2], ndtri) for s in range(3)]
        )  # fmt: skip
    )
    with pytest.raises(ValueError, match="a line needs"):
        cr.apply_rule(table[table["run_id"].str.endswith(("-0", "-1"))], t, 0.95)


# ----------------------------------------------------------------- curves over a setting


def curve_table(seeds=4, epochs=(1, 2, 4, 8), seed=0):
    """worst_group_accuracy on test_balanced of two methods at several trainer.epochs (the
    column harness/claims.py adds from key.json), with ties and a NaN-free grid."""
    rng = np.random.default_rng(seed)
    values = {m: np.round(rng.uniform(0.3, 0.9, (seeds, len(epochs))), 1) for m in ("up", "uw")}
    rows = [dict(seed=s, split="test_balanced", split_role="shift_test", scorer="",
                 metric="worst_group_accuracy", value=values[m][s, j], n=300, group_value="",
                 method=m, run_id=f"{m}{s}{e}", **{"key:trainer.epochs": e})
            for m in values for s in range(seeds) for j, e in enumerate(epochs)]  # fmt: skip
    return pd.DataFrame(rows), values, list(epochs)


def brute_force(curve, epochs, statistic):
    """The curve statistic of one seed, by a loop over the points."""
    best, best_x = -np.inf, None
    for x, v in sorted(zip(epochs, curve, strict=True)):
        if v > best:  # strictly greater: the first (smallest x) peak wins a tie
            best, best_x = v, x
    last = dict(zip(epochs, curve, strict=True))[max(epochs)]
    return {"peak_x": best_x, "peak_drop": best - last, "value_at_max_x": last}[statistic]


@pytest.mark.parametrize("statistic", ["peak_x", "peak_drop", "value_at_max_x"])
def test_curve_statistics_match_a_brute_force_loop_and_scipys_t(statistic):
    table, values, epochs = curve_table()
    t = rule(statistic=statistic, test="seeds_t", metric="worst_group_accuracy",
             splits=["test_balanced"], x_key="trainer.epochs", a={"where": {"method": "up"}},
             b={"where": {"method": "uw"}}, direction="less")  # fmt: skip
    cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    r = cr.apply_rule(table, t, 0.9)
    per = {m: [brute_force(values[m][s], epochs, statistic) for s in range(4)] for m in values}
    diff = np.subtract(per["up"], per["uw"])
    ci = stats.ttest_1samp(diff, 0.0).confidence_interval(0.9)
    assert (r.estimate, r.ci_low, r.ci_high) == pytest.approx((diff.mean(), ci.low, ci.high))
    assert (r.seeds, r.units, r.mean_a) == (4, 4, pytest.approx(np.mean(per["up"])))
    # no b: the statistic itself against 0; a constant b: against it
    r0 = cr.apply_rule(table, {**t, "b": {}}, 0.9)
    assert r0.estimate == pytest.approx(np.mean(per["up"]))
    rc = cr.apply_rule(table, {**t, "b": {"value": 0.5}}, 0.9)
    assert rc.estimate == pytest.approx(np.mean(per["up"]) - 0.5)


def test_a_curve_statistic_reads_x_off_the_split_name_and_ignores_unfinished_seeds():
    from harness.claim_curves import curve_values

    m = pd.DataFrame([[0.2, 0.9, 0.9, 0.5], [0.1, 0.2, 0.3, np.nan]], index=[0, 1],
                     columns=["s-4", "s-1", "s-2", "s-3"])  # fmt: skip
    xs = [4.0, 1.0, 2.0, 3.0]  # columns out of order: x decides, not the column order
    assert curve_values(m, xs, "peak_x").to_dict() == {0: 1.0}  # tie 0.9 at x=1, 2
    assert curve_values(m, xs, "peak_drop").to_dict() == {0: pytest.approx(0.7)}
    assert curve_values(m, xs, "value_at_max_x").to_dict() == {0: 0.2}
    with pytest.raises(ValueError, match="statistic must be one of"):
        curve_values(m, xs, "median")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"scorers": ["s1", "s2"]}, "tests[0].scorers"),
        ({"test": "crossed"}, "tests[0].test"),
        ({"reference": 1.5}, "tests[0].reference"),
        ({"b": {"value": 0.5}}, "tests[0].b"),
        ({"statistic": "difference", "metric": "auroc_error"}, "rank_correlation"),
        (
            {"statistic": "r2", "scorers": None, "reference": None, "metric": "accuracy"},
            "tests[0].x_splits",
        ),  # fmt: skip
        (
            {
                "statistic": "r2",
                "scorers": None,
                "reference": None,
                "metric": "accuracy",
                "x_splits": ["id_test"],
                "b": {"value": 0.8, "scale": "log"},
            },
            "tests[0].b.scale",
        ),  # fmt: skip
        (
            {
                "statistic": "difference",
                "scorers": None,
                "reference": None,
                "metric": "m",
                "b": {"scorers": ["s1"], "reduce": "median"},
            },
            "tests[0].b",
        ),  # fmt: skip
        (
            {
                "statistic": "difference",
                "scorers": None,
                "reference": None,
                "metric": "m",
                "x_splits": ["id_test"],
            },
            "x_splits",
        ),  # fmt: skip
    ],
)
def test_bad_rank_and_line_rules_are_refused_naming_the_key(change, key):
    t = {k: v for k, v in {**rank_rule(), **change}.items() if v is not None}
    with pytest.raises(ValueError, match="claim") as err:
        cr.check_claim({"title": "t", "paper": "p", "tests": [t]})
    assert key in str(err.value)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"statistic": "peak_x", "test": "crossed", "x_key": "trainer.epochs"}, "tests[0].test"),
        ({"statistic": "peak_drop", "test": "seeds_t"}, "tests[0].x"),
    ],
)
def test_bad_curve_rules_are_refused_naming_the_key(change, key):
    with pytest.raises(ValueError, match="claim") as err:
        cr.check_claim({"title": "t", "paper": "p", "tests": [{**rule(), **change}]})
    assert key in str(err.value)


def test_claim_keys_are_the_x_keys_and_the_key_columns_of_where():
    from harness.claims import claim_keys

    claim = {"tests": [
        rule(statistic="slope", x_key="dataset.correlation", where={"key:tta.lr": 0.1}),
        rule(a={"where": {"key:tta.batch_size": 4, "tta": "tent"}}, b={"where": {"method": "erm"}}),
    ]}  # fmt: skip
    assert claim_keys(claim) == ["dataset.correlation", "tta.batch_size", "tta.lr"]


def test_an_integer_key_stays_an_integer_beside_runs_without_it(tmp_path):
    from harness.claims import add_key_columns
    from harness.rundir import RunDir

    for run_id, tta in (("aa", {"batch_size": 5}), ("bb", None), ("cc", {"batch_size": 128})):
        rd = RunDir(tmp_path, run_id)
        rd.path.mkdir(parents=True)
        rd.key_json.write_text(json.dumps({"payload": {"tta": tta}}))
    table = pd.DataFrame({"run_id": ["aa", "bb", "cc"], "seed": [0, 0, 0], "split": "s",
                          "split_role": "shift_test", "scorer": "", "metric": "accuracy",
                          "value": [0.5, 0.7, 0.9], "group_value": ""})  # fmt: skip
    out = add_key_columns(table, str(tmp_path), ["tta.batch_size"])
    # not 5.0: a rule's where compares the text of the value
    assert out["key:tta.batch_size"].map(str).tolist() == ["5", "None", "128"]
    t = rule(metric="accuracy", splits=["s"], a={"where": {"key:tta.batch_size": 5}})
    assert cr.side_matrix(out, t, "a").to_numpy().tolist() == [[0.5]]
