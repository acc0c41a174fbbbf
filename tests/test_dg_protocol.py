"""Leave-one-domain-out as a sweep: one multirun over held-out domains and seeds, and the
leaderboard's average over held-out domains per setting, recomputed here from each run's
own config and rows."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from .conftest import TINY, run_cli, run_rows


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lodo")
    results = tmp / "results"
    proc = run_cli(
        [
            "-m",
            *TINY,
            "dataset=rotated_digits",
            "eval=minimal",
            f"results_dir={results}",
            "dataset.test_domains=[0],[75]",
            "seed=0,1",
        ],
        cwd=tmp,
    )
    assert "could not rebuild the leaderboard" not in proc.stdout + proc.stderr
    return results


def test_the_sweep_runs_one_job_per_held_out_domain_and_seed(sweep):
    configs = [yaml.safe_load(p.read_text()) for p in sweep.glob("runs/*/config.yaml")]
    held = sorted((c["dataset"]["test_domains"][0], c["seed"]) for c in configs)
    assert held == [(0, 0), (0, 1), (75, 0), (75, 1)]
    assert all((p.parent / "DONE").is_file() for p in sweep.glob("runs/*/config.yaml"))


def test_leaderboard_averages_over_held_out_domains_per_setting(sweep):
    # by hand: each run's held-out accuracy from its own config and rows
    by_hand = []
    for path in sweep.glob("runs/*/config.yaml"):
        config = yaml.safe_load(path.read_text())
        rows = run_rows(path.parent)
        plain = rows[(rows["group_key"].fillna("") == "") & (rows["scorer"].fillna("") == "")]
        test = plain[(plain["split"] == "test") & (plain["metric"] == "accuracy")]
        by_hand.append(
            {"held_out": str(config["dataset"]["test_domains"][0]), "value": test["value"].item()}
        )
    by_hand = pd.DataFrame(by_hand).groupby("held_out")["value"].agg(["mean", "std"])

    dg = pd.read_csv(sweep / "leaderboard" / "domain_generalisation.csv")
    test = dg[dg["split_role"] == "shift_test"]
    assert test["domain_setting"].nunique() == 1  # seeds and held-out domain are not the setting
    per = test[test["held_out"] != "average"].set_index("held_out")
    for domain in ("0", "75"):
        assert per.loc[domain, "mean"] == pytest.approx(by_hand.loc[domain, "mean"])
        assert per.loc[domain, "std"] == pytest.approx(by_hand.loc[domain, "std"])
        assert per.loc[domain, "n_seeds"] == 2
    avg = test[test["held_out"] == "average"].iloc[0]
    assert avg["mean"] == pytest.approx(by_hand["mean"].mean())
    assert (avg["n_held_out"], avg["n_domains"]) == (2, 6)
    assert set(dg["split_role"]) == {"shift_test", "val"}  # training-domain validation too

    page = (sweep / "leaderboard" / "rotated_digits.md").read_text()
    assert "## Leave-one-domain-out" in page
    assert f"{avg['mean']:.4f}" in page


def test_other_datasets_get_no_domain_table(tmp_path):
    from harness.report.domains import domain_generalisation, domain_setting

    assert domain_setting({"dataset": {"name": "maze"}, "seed": 0}) is None
    assert domain_setting({"dataset": {"test_domains": [0, 15]}, "seed": 0}) is None
    a = domain_setting({"dataset": {"test_domains": [0], "fingerprint": "x"}, "seed": 0})
    b = domain_setting({"dataset": {"test_domains": [15], "fingerprint": "y"}, "seed": 3})
    assert a[0] == b[0] and (a[1], b[1]) == ("0", "15")
    assert domain_generalisation(pd.DataFrame(), tmp_path).empty
