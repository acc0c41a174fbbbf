"""OpenOOD's protocol rows (harness/ood_rows.py): near/far group means, CCR@FPR and
full-spectrum OOD, each recomputed here from the stage's own per-example scores."""

from __future__ import annotations

import numpy as np
import pytest
from shiftbench_datasets.folders import write_flat_folder

import harness.run as run_mod
from harness import metrics
from harness.config import validate_eval
from harness.ood_rows import GROUP_ROLE, ccr_at_fpr
from harness.posthoc import load_scores

from .conftest import TINY, compose_config, run_rows


def brute_force_ccr(id_scores, correct, ood_scores, fpr):
    """The lowest threshold t (accept score > t) whose OOD acceptance rate is <= fpr."""
    candidates = np.unique(np.concatenate([id_scores, ood_scores, [np.inf]]))
    ok = [t for t in candidates if np.mean(ood_scores > t) <= fpr]
    t = min(ok)
    return float(np.mean(correct & (id_scores > t)))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("fpr", [0.01, 0.1, 0.25])
def test_ccr_at_fpr_matches_brute_force(ties, fpr):
    rng = np.random.default_rng(7)
    for _ in range(20):
        id_scores = rng.normal(1, 1, 150)
        ood_scores = rng.normal(0, 1, int(rng.integers(100, 300)))
        if ties:
            id_scores, ood_scores = np.round(id_scores, 0), np.round(ood_scores, 0)
        correct = rng.random(150) < 0.7
        ours = ccr_at_fpr(id_scores, correct, ood_scores, fpr)
        assert ours == pytest.approx(brute_force_ccr(id_scores, correct, ood_scores, fpr))
    assert ccr_at_fpr(id_scores, correct, ood_scores[:9], 0.1) is None  # < 1/FPR OOD examples


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        ("ood_groups", [1], "ood_groups must be a mapping"),
        ("ood_groups", {"near": "ood_a"}, "ood_groups.near must be a list"),
        ("ccr_fprs", [1.5], "ccr_fprs must be a list of numbers in"),
        ("ccr_fprs", 0.1, "ccr_fprs must be a list"),
        ("full_spectrum", "yes", "full_spectrum must be true or false"),
        ("unified_error", 1, "unified_error must be true or false"),
    ],
)
def test_bad_openood_entries_are_refused_naming_them(entry, value, message):
    ev = {"ece_bins": 15, "fit_size": 10, "coverages": [0.9], entry: value}
    with pytest.raises(ValueError, match=message):
        validate_eval(ev)


def test_openood_eval_adds_group_ccr_and_full_spectrum_rows(tmp_path):
    for name, n in (("cifar100", 11), ("svhn", 12), ("textures", 10)):
        write_flat_folder(tmp_path / name, n=n)
    ood = ",".join(f"{{name: {n}, root: {tmp_path / n}}}" for n in ("cifar100", "svhn", "textures"))
    summary = run_mod.run(
        compose_config(
            [
                *TINY,
                "dataset=digits_c",
                "dataset.families=[noise]",
                "dataset.severities=[1]",
                f"results_dir={tmp_path / 'res'}",
                f"cache_dir={tmp_path / 'cache'}",
                f"ood_sets=[{ood}]",
                "eval=openood",
                "eval.ccr_fprs=[0.1]",
                "eval.fit_size=40",
                "eval.scorers.knn.k=5",
                "eval.scorers.nnguide.k=5",
            ]
        )
    )
    run_dir = tmp_path / "res" / "runs" / summary["run_id"]
    rows = run_rows(run_dir)
    shifted = sorted(set(rows.loc[rows["split_role"] == "shift_test", "split"]))
    assert shifted, "digits_c has a shifted test split"
    for scorer in ("msp", "gen", "she"):
        sel = rows[rows["scorer"] == scorer]
        auroc = sel[sel["metric"] == "auroc_vs_id_test"].set_index("split")["value"]
        # near = CIFAR-100 only, far = SVHN and Textures: means over the members present
        group = sel[sel["split_role"] == GROUP_ROLE]
        by_split = group[group["metric"] == "auroc_vs_id_test"].set_index("split")["value"]
        assert by_split["near_ood"] == pytest.approx(auroc["ood_cifar100"])
        far = (auroc["ood_svhn"] + auroc["ood_textures"]) / 2
        assert by_split["far_ood"] == pytest.approx(far)

        id_scores = load_scores(run_dir, "id_test")
        fs_id = np.concatenate(
            [id_scores[scorer].to_numpy()]
            + [load_scores(run_dir, s)[scorer].to_numpy() for s in shifted]
        )
        for split, n in (("ood_cifar100", 11), ("ood_svhn", 12), ("ood_textures", 10)):
            ood_scores = load_scores(run_dir, split)[scorer].to_numpy()
            ccr = sel[(sel["split"] == split) & (sel["metric"] == "ccr@fpr0.1_vs_id_test")]
            expected = brute_force_ccr(
                id_scores[scorer].to_numpy(), id_scores["correct"].to_numpy(bool), ood_scores, 0.1
            )
            assert ccr["value"].item() == pytest.approx(expected)
            fs = sel[(sel["split"] == split) & (sel["metric"] == "auroc_fs_vs_id_test")]
            reference = metrics.ood_metrics(fs_id, ood_scores)["auroc"]
            assert fs["value"].item() == pytest.approx(reference)
            assert fs["n"].item() == len(fs_id) + n
    # the unified view: correct ID/shifted examples vs errors and every OOD example
    from sklearn.metrics import roc_auc_score

    from .test_recompute import aurc as brute_aurc

    oods = sorted(set(rows.loc[rows["split_role"] == "ood", "split"]))
    parts = [load_scores(run_dir, s) for s in ["id_test", *shifted]]
    ood_parts = [load_scores(run_dir, s) for s in oods]
    correct = np.concatenate(
        [p["correct"].to_numpy(bool) for p in parts] + [np.zeros(len(p), bool) for p in ood_parts]
    )
    for scorer in ("msp", "energy", "scod"):
        values = np.concatenate([p[scorer].to_numpy() for p in (*parts, *ood_parts)])
        sel = rows[(rows["split"] == "pooled_test_ood") & (rows["scorer"] == scorer)]
        got = sel.set_index("metric")["value"]
        assert got["auroc_error_unified"] == pytest.approx(roc_auc_score(correct, values))
        assert got["aurc_unified"] == pytest.approx(brute_aurc(values, correct))
        assert set(sel["split_role"]) == {"pooled"} and (sel["n"] == len(values)).all()
    # the group rows have a role of their own, so that aggregates over role "ood" never
    # count a split twice
    roles = rows.drop_duplicates("split").set_index("split")["split_role"]
    assert roles["near_ood"] == roles["far_ood"] == GROUP_ROLE
    assert {"ood_noise", "ood_photos"} <= set(roles[roles == "ood"].index)  # digits_c's own
