"""DomainBed's test-domain oracle: rows from a seeded 20/80 cut of each held-out split (last
checkpoint only), the `test_domain_oracle` setting rule, and the leave-one-domain-out table's
oracle rows (per held-out domain the setting best on its 20%, reported on the other 80%)."""

from __future__ import annotations

import numpy as np
import pytest

from harness import run as run_mod
from harness.oracle import REPORT, SELECT, check_settings, oracle_parts
from harness.outputs import Outputs
from harness.report.domains import AVERAGE, domain_generalisation, domain_markdown
from harness.rundir import RunDir
from harness.selection import select_settings
from harness.table import collect

from .conftest import TINY, compose_config, run_rows

DG = [*TINY, "dataset=rotated_digits", "dataset.limit=60", "trainer.max_steps=3"]


def test_the_cut_is_a_seeded_fifth_in_the_splits_own_order():
    index = np.array([9, 3, 7, 0, 5, 1, 8, 2, 6, 4, 11, 10])
    select, report = oracle_parts(index, 0.2, seed=0)
    assert len(select) == int(12 * 0.2) and len(report) == 12 - len(select)
    assert sorted([*select, *report]) == list(range(12))
    # the same examples (by row index) whatever order the cache holds them in
    shuffled = np.random.default_rng(5).permutation(index)
    select2, _ = oracle_parts(shuffled, 0.2, seed=0)
    assert set(shuffled[select2]) == set(index[select])
    assert set(index[oracle_parts(index, 0.2, seed=1)[0]]) != set(index[select])


@pytest.mark.parametrize(
    "spec, message",
    [({"fraction": 1.0}, "fraction"), ({"fraction": 0.2, "seed": "a"}, "seed"),
     ({"frac": 0.2}, "eval.oracle_split"), ("yes", "eval.oracle_split")],
)  # fmt: skip
def test_bad_oracle_settings_are_refused_naming_the_entry(spec, message):
    with pytest.raises(ValueError, match=message):
        check_settings({"oracle_split": spec})


def test_only_last_checkpoint_runs_get_oracle_rows(tmp_path):
    summary = run_mod.run(
        compose_config([*DG, "method=erm", "eval=domainbed", f"results_dir={tmp_path}"])
    )
    rows = run_rows(tmp_path / "runs" / summary["run_id"])
    assert not rows["metric"].isin([SELECT, REPORT]).any()  # id_val_accuracy: no oracle


def test_oracle_selects_per_held_out_domain_on_20_percent_and_reports_the_80(tmp_path):
    for domain in (0, 75):
        for lr in (0.001, 0.05):
            run_mod.run(
                compose_config(
                    [
                        *DG,
                        "method=erm",
                        f"dataset.test_domains=[{domain}]",
                        f"trainer.optimizer.lr={lr}",
                        "selection_rule=last_epoch",
                        "eval=domainbed",
                        f"results_dir={tmp_path}",
                    ]
                )
            )
    table, _ = collect(tmp_path)
    # independently, from each run's cached test outputs: the 20% / 80% accuracies
    truth = {}
    for run_id in table["run_id"].unique():
        rd = RunDir(tmp_path, run_id)
        bench = rd.read_benchmark()
        out = Outputs.load(rd.output_path("test", bench["splits"]["test"]["forward_key"]))
        order = np.argsort(out.index)
        perm = order[np.random.default_rng(0).permutation(len(order))]
        k = int(len(order) * 0.2)
        correct = out.logits.argmax(1) == out.labels
        held = rd.read_key()["payload"]["dataset"]["test_domains"][0]
        truth[run_id] = (held, correct[perm[:k]].mean(), correct[perm[k:]].mean())
    rows = table[table["metric"].isin([SELECT, REPORT])]
    assert len(rows) == 8  # 4 runs × (select, report) on the one held-out split
    for r in rows.itertuples():
        assert r.value == pytest.approx(truth[r.run_id][1 if r.metric == SELECT else 2])
    # the rule: each held-out domain is its own search; its best 20% wins
    chosen = select_settings(table, "test_domain_oracle", tmp_path)
    assert len(chosen) == 2 and (chosen["settings"] == 2).all()
    assert chosen["selection"].str.contains("oracle").all()
    dg = domain_generalisation(table, tmp_path)
    oracle = dg[dg["metric"] == REPORT].set_index("held_out")
    for held in (0, 75):
        runs = [(sel, rep) for h, sel, rep in truth.values() if h == held]
        top = max(sel for sel, _ in runs)  # by the 20%; a tie may go either way
        assert oracle.loc[str(held), "mean"] in [rep for sel, rep in runs if sel == top]
    assert oracle.loc[AVERAGE, "mean"] == pytest.approx(oracle.loc[["0", "75"], "mean"].mean())
    assert oracle.loc[AVERAGE, "n_held_out"] == 2
    # the plain table is still there, per setting (two lrs), and the page labels the oracle
    plain = dg[(dg["metric"] == "accuracy") & (dg["split_role"] == "shift_test")]
    assert plain["domain_setting"].nunique() == 2
    text = "\n".join(domain_markdown(dg, "rotated_digits"))
    assert "test-domain oracle (ORACLE" in text and "held-out domain accuracy" in text


@pytest.mark.slow  # 12 tiny training runs: ~3 min on the 2-core machine
def test_leave_one_domain_out_validation_picks_by_the_pair_runs(tmp_path):
    """3 domains, 2 learning rates: 3 leave-one-out runs and C(3, 2) = 3 pair runs per
    setting. For held-out t the criterion of a setting is the mean over v ≠ t of its pair
    run {t, v}'s accuracy on v, recomputed here from each run's own rows."""
    base = [*DG, "method=erm", "dataset.domains=[0,30,60]", f"results_dir={tmp_path}"]
    held_outs = ["[0]", "[30]", "[60]", "[0,30]", "[0,60]", "[30,60]"]
    for held in held_outs:
        for lr in (0.001, 0.05):
            run_mod.run(
                compose_config(
                    [*base, f"dataset.test_domains={held}", f"trainer.optimizer.lr={lr}"]
                )
            )
    table, _ = collect(tmp_path)
    info = {}
    for run_id in table["run_id"].unique():
        payload = RunDir(tmp_path, run_id).read_key()["payload"]
        held = tuple(payload["dataset"]["test_domains"])
        info[run_id] = (held, payload["trainer"]["optimizer"]["lr"])

    def acc(run_id, domain=None):
        r = table[(table["run_id"] == run_id) & (table["metric"] == "accuracy")
                  & (table["split_role"] == "shift_test") & (table["scorer"] == "")]  # fmt: skip
        if domain is None:
            return float(r[r["group_key"] == ""]["value"].iloc[0])
        return float(
            r[(r["group_key"] == "domain") & (r["group_value"] == str(domain))]["value"].iloc[0]
        )

    dg = domain_generalisation(table, tmp_path)
    lodo = dg[dg["metric"] == "lodo_report_accuracy"].set_index("held_out")
    for t in (0, 30, 60):
        crit, report = {}, {}
        for lr in (0.001, 0.05):
            pair = {
                v: acc(r, v)
                for r, (h, rate) in info.items()
                for v in (0, 30, 60)
                if rate == lr and len(h) == 2 and t in h and v in h and v != t
            }
            crit[lr] = np.mean(list(pair.values()))
            report[lr] = [acc(r) for r, (h, rate) in info.items() if h == (t,) and rate == lr][0]
        top = max(crit.values())
        assert lodo.loc[str(t), "mean"] in [report[lr] for lr in crit if crit[lr] == top]
    assert lodo.loc[AVERAGE, "mean"] == pytest.approx(lodo.loc[["0", "30", "60"], "mean"].mean())
    text = "\n".join(domain_markdown(dg, "rotated_digits"))
    assert "leave-one-domain-out validation" in text
