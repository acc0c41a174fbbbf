"""The leaderboard's derived frames are per-dataset separable (harness/report/partcache.py):
on a root of three datasets (searches over two eval configs, paired and scorer comparisons
from per-example scores, corruption splits with an mCE reference, estimators, held-out
domains with DomainBed's LODO pairs, one-seed bootstrap intervals), each function's result
over the whole table equals its per-dataset results put together, frame for frame (values,
dtypes, order) and CSV byte for byte; and the pieces survive their files."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.report import partcache
from harness.report.aggregate import aggregate
from harness.report.headline import headline
from harness.report.partcache import (
    ORDERS,
    Options,
    derived,
    first_rows,
    join,
    join_summary,
    stage_starts,
    with_stages,
)
from harness.rundir import RunDir
from harness.store import atomic_write_parquet
from harness.table import collect_cached

DOMAINS = ["0", "15", "30"]
EXAMPLES = 40


def _hash(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def write_run(root: Path, number: int, dataset: str, method: str, lr: int, seed: int,
              held: list[str] | None = None, evals: tuple[str, ...] = ("e1",),
              model: str = "resnet18") -> None:  # fmt: skip
    """A finished run: per eval config a post-hoc stage with label rows, msp / energy AUROC
    rows, an estimator's abs_error rows, corruption splits (dataset `plain`), per-domain
    rows (held-out domains) and per-example scores of every split."""
    payload = {
        "dataset": {
            "name": dataset,
            **({"test_domains": held, "domains": DOMAINS} if held else {}),
        },
        "model": {"name": model},
        "method": {"name": method, "lr": lr},
        "trainer": {"epochs": 2},
        "seed": seed,
    }
    setting = _hash(dataset, model, method, lr, held)
    run_id = _hash(setting, seed)
    rng = np.random.default_rng(number)
    splits = [("val", "val"), ("id_test", "id_test"), ("shift", "shift_test")]
    if dataset == "plain":
        splits += [(f"{c}-{s}", "shift_test") for c in ("fog", "snow") for s in (1, 2)]
    skill = {"erm": 0.6, "irm": 0.7, "mixup": 0.5}[method] + 0.05 * lr
    scores = {}
    for split, _ in splits:
        label = rng.integers(0, 3, EXAMPLES)
        correct = rng.random(EXAMPLES) < skill
        scores[split] = pd.DataFrame(
            {
                "index": np.arange(EXAMPLES),
                "label": label,
                "pred": np.where(correct, label, (label + 1) % 3),
                "correct": correct,
                "nll": rng.random(EXAMPLES),
                "msp": correct * 0.3 + rng.random(EXAMPLES),
                "energy": correct * 0.5 + rng.random(EXAMPLES),
            }
        )
    for eval_id in evals:
        records = []
        for split, role in splits:
            acc = float(scores[split]["correct"].mean())
            records.append((split, role, "", "accuracy", "", "", acc))
            for metric in ("ece", "worst_group_accuracy"):
                records.append((split, role, "", metric, "", "", rng.uniform(0.4, 0.9)))
            for scorer in ("msp", "energy"):
                records.append((split, role, scorer, "auroc_error", "", "", rng.uniform(0.5, 0.9)))
            if role == "shift_test":
                records.append((split, role, "atc", "abs_error", "", "", rng.uniform(0, 0.2)))
                records.append((split, role, "doc", "abs_error", "", "", rng.uniform(0, 0.2)))
            if role == "shift_test" and held:
                for d in held:
                    records.append(
                        (split, role, "", "accuracy", "domain", d, rng.uniform(0.3, 0.8))
                    )
        frame = pd.DataFrame(
            records,
            columns=["split", "split_role", "scorer", "metric", "group_key", "group_value", "value"],
        ).assign(
            run_id=run_id, setting_id=setting, dataset=dataset, model=model, method=method,
            tta="", augment="", seed=seed, n=EXAMPLES, selection_rule="id_val_accuracy",
            selected_epoch=1, eval_id=eval_id, forward_key="f", posthoc_key="p",
            results_version=1, git_sha="", git_dirty=False, lock_hash="", versions="",
            created_at="",
        )  # fmt: skip
        stage = RunDir(root, run_id).posthoc(eval_id)
        stage.path.mkdir(parents=True)
        for split, data in scores.items():
            atomic_write_parquet(data, stage.scores(split))
        atomic_write_parquet(frame, stage.rows)
        stage.done.write_text(json.dumps({"rows": len(frame)}))
    rd = RunDir(root, run_id)
    rd.key_json.write_text(
        json.dumps({"run_id": run_id, "setting_id": setting, "payload": payload})
    )
    rd.done.write_text("{}")


def make_root(root: Path, lrs: tuple[int, ...] = (1, 2)) -> int:
    """plain: 3 methods x 2 lr x 2 seeds under two eval configs, and one `vit` setting (the
    corruption reference); rot: held-out domains with their LODO pairs; solo: one seed per
    setting (bootstrap intervals)."""
    n = 0
    for method in ("erm", "irm", "mixup"):
        for lr in lrs:
            for seed in (0, 1):
                write_run(root, n, "plain", method, lr, seed, evals=("e1", "e2"))
                n += 1
                for t in DOMAINS:
                    write_run(root, n, "rot", method, lr, seed, [t])
                    n += 1
                    for v in DOMAINS:
                        if v > t and seed == 0:
                            write_run(root, n, "rot", method, lr, seed, [t, v])
                            n += 1
            write_run(root, n, "solo", method, lr, 0)
            n += 1
    write_run(root, n, "plain", "erm", 1, 0, evals=("e1", "e2"), model="vit")
    return n + 1


OPTIONS = [
    dict(baseline="erm", scorer_baseline="msp", multiple_comparisons="holm",
         scorer_multiple_comparisons="bh", model_selection="id_val", min_effect=None,
         corruption_reference="vit", robustness={"scale": "logit"}),
    dict(baseline="irm", scorer_baseline="energy", multiple_comparisons="bh",
         scorer_multiple_comparisons="holm", model_selection="oracle", min_effect=0.05,
         corruption_reference=None, robustness={"scale": "probit", "pool": ["resnet18"]}),
    # no selection: several baseline settings, no paired comparison
    dict(baseline="erm", scorer_baseline=None, multiple_comparisons="none",
         scorer_multiple_comparisons="bh", model_selection=None, min_effect=None,
         corruption_reference=None, robustness=None),
]  # fmt: skip


@pytest.fixture(scope="module")
def table_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    root = tmp_path_factory.mktemp("parts") / "r"
    make_root(root)
    return collect_cached(root)[0], root


def _same(a: pd.DataFrame, b: pd.DataFrame, name: str) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    assert list(a.dtypes.astype(str)) == list(b.dtypes.astype(str)), name
    csv_a, csv_b = io.StringIO(), io.StringIO()
    a.to_csv(csv_a, index=False)
    b.to_csv(csv_b, index=False)
    assert csv_a.getvalue() == csv_b.getvalue(), name


@pytest.mark.parametrize("options", OPTIONS)
def test_each_frame_is_its_datasets_pieces_put_together(table_root, options, monkeypatch) -> None:
    table, root = table_root
    # seeds_needed's power search (0.15 s a call) is not what is tested: its column is
    from harness.report import compare

    monkeypatch.setattr(
        compare, "seeds_needed", lambda d, e: SimpleNamespace(seeds=int(len(d) * 10 + d.sum() > 0))
    )
    datasets = sorted(table["dataset"].unique())
    assert datasets == ["plain", "rot", "solo"]
    # the datasets' runs interleave in the table (stage order): the summary's order is not
    # dataset-major, so the pieces carry where their groups first appear
    assert (table["dataset"] != table["dataset"].shift()).sum() > 10
    o = Options(**options, primary_of=lambda d: "accuracy", headline_split=None)
    agg = aggregate(table, root)
    whole = derived(table, agg, root, o)
    starts = stage_starts(table)
    rows = {d: table.take(np.flatnonzero((table["dataset"] == d).to_numpy())) for d in datasets}
    aggs, staged = {}, []
    for d in datasets:
        aggs[d] = aggregate(rows[d], root)
        positions = rows[d].index.to_numpy()[first_rows(rows[d])]
        staged.append(with_stages(aggs[d], positions, starts))
    _same(join_summary(staged, starts), agg, "summary")
    assert (agg["interval"] == "bootstrap over examples").any()  # solo's one-seed runs
    pieces = {d: derived(rows[d], aggs[d], root, o) for d in datasets}
    for name, frame in whole.items():
        if frame is None:
            assert all(pieces[d][name] is None for d in datasets), name
            continue
        have = [pieces[d][name] for d in datasets if pieces[d].get(name) is not None]
        _same(join(have, ORDERS.get(name)), frame, name)
    assert set(whole) == {n for d in datasets for n in pieces[d]}
    # what each function had to produce for the test to mean something
    assert len(whole["estimators"]) and len(whole["domain_generalisation"])
    assert "lodo_report_accuracy" in set(whole["domain_generalisation"]["metric"])
    assert "corruptions.per_severity" in whole
    if options["model_selection"]:
        # (rot: several baseline settings per model, one per held-out set: no comparison)
        assert set(whole["comparisons"]["dataset"]) == {"plain", "solo"}
        assert whole["scorer_comparisons"]["dataset"].nunique() == 3
        assert whole["selection"]["dataset"].nunique() == 3
        assert len(whole["effective_robustness"])
        # the selection's order interleaves the datasets: put back by criterion
        assert (whole["selection"]["dataset"] != whole["selection"]["dataset"].shift()).sum() > 3
    else:
        assert whole["comparisons"].empty and whole["scorer_comparisons"] is None
    assert ("corruptions.mce" in whole) == bool(options["corruption_reference"])
    for d in datasets:
        a = headline(agg, d, "accuracy", whole["comparisons"])
        b = headline(aggs[d], d, "accuracy", pieces[d]["comparisons"])
        _same(a.table, b.table, f"headline {d}")
        _same(a.titles, b.titles, f"headline titles {d}")
        assert (a.split, a.metric, a.caption) == (b.split, b.metric, b.caption)


def test_pieces_round_trip_their_files(table_root, tmp_path: Path) -> None:
    """Every piece written and read back: equal values and dtypes; a damaged file or a
    dtype that changed reads as no piece (computed again)."""
    table, root = table_root
    o = Options(**OPTIONS[0], primary_of=lambda d: "accuracy", headline_split=None)
    rows = table.take(np.flatnonzero((table["dataset"] == "plain").to_numpy()))
    agg = aggregate(rows, root)
    frames = {
        "summary": agg,
        **{n: f for n, f in derived(rows, agg, root, o).items() if f is not None},
    }
    h = headline(agg, "plain", "accuracy", frames["comparisons"])
    hf, info = partcache.headline_frames(h)
    partcache.save(tmp_path, "k1", frames | hf, {**info, "names": sorted(frames)})
    back, meta = partcache.load(tmp_path, "k1")
    for name, frame in (frames | hf).items():
        _same(back[name], frame, name)
    h2 = partcache.headline_of(back, meta)
    assert (h2.split, h2.metric, h2.caption) == (h.split, h.metric, h.caption)
    folder = tmp_path / partcache.PARTS_DIR / "k1"
    (folder / "comparisons.arrow").write_bytes(b"not arrow")
    assert partcache.load(tmp_path, "k1") is None
    partcache.save(tmp_path, "k2", frames | hf, {**info, "names": sorted(frames)})
    partcache.prune(tmp_path, {"plain": "k2"})  # k1: no dataset's key now
    assert not folder.exists() and (folder.parent / "k2").is_dir()
    assert partcache.latest(tmp_path) == {"plain": "k2"}
    partcache.prune(tmp_path, {})
    assert sorted(p.name for p in folder.parent.iterdir()) == [partcache.LATEST]
    assert partcache.latest(tmp_path) == {}


def test_what_cannot_be_joined_says_so() -> None:
    """Pieces whose dtypes differ (a column of floats in one, objects in another) and a
    table whose stages are not contiguous are Unjoinable: the whole table is used instead."""
    a = pd.DataFrame({"dataset": ["a"], "x": [0.5]})
    b = pd.DataFrame({"dataset": ["b"], "x": [None]}, dtype=object)
    with pytest.raises(partcache.Unjoinable):
        join([a, b])
    assert join([a, b.iloc[:0]]).equals(a)  # an empty piece's dtypes do not count
    table = pd.DataFrame({"run_id": ["r1", "r1", "r2", "r1"], "eval_id": ["e"] * 4})
    with pytest.raises(partcache.Unjoinable):
        stage_starts(table)
    ok = stage_starts(table.iloc[:3])
    assert ok.to_dict() == {"r1/e": 0, "r2/e": 2}


def test_a_summary_grown_from_its_previous_piece_is_a_rebuilds(tmp_path: Path, monkeypatch) -> None:
    """harness/report/summarygrow.py: new seeds of existing settings (plain, rot) and a new
    setting: only the touched settings' rows are aggregated, and every output equals a
    rebuild=true copy's (aggregate over the whole table); a stage rewritten since (its DONE
    touched) aggregates the dataset whole, again equal to a rebuild's."""
    import os

    from harness.report import aggregate as aggregate_module
    from harness.report.build import write_leaderboard
    from tests.test_leaderboard_speed import leaderboard_files, rebuilt_copy

    options = dict(outputs=("markdown",), effective_robustness_options={"scale": "logit"})
    root = tmp_path / "grow"
    n = make_root(root, lrs=(1,))
    write_leaderboard(root, "erm", **options)
    sizes: list[tuple[list[str], int]] = []
    real = aggregate_module.aggregate_firsts  # (aggregate's own work, and partcache's)

    def spy(table, *args, **kwargs):
        sizes.append((sorted(table["dataset"].unique()), len(table)))
        return real(table, *args, **kwargs)

    monkeypatch.setattr(aggregate_module, "aggregate_firsts", spy)

    def check(name: str) -> pd.DataFrame:
        full = tmp_path / name
        got, expected = leaderboard_files(root), rebuilt_copy(root, full, **options)
        assert sorted(got) == sorted(expected)
        for file in expected:
            assert got[file] == expected[file], file
        return collect_cached(full)[0]

    write_run(root, n, "plain", "erm", 1, 2, evals=("e1", "e2"))  # a third seed
    write_run(root, n + 1, "plain", "mixup", 4, 0, evals=("e1", "e2"))  # a new setting
    write_run(root, n + 2, "rot", "irm", 1, 2, ["a"])
    write_leaderboard(root, "erm", **options)
    grown, _ = list(sizes), sizes.clear()
    table = check("full1")
    plain = int((table["dataset"] == "plain").sum())
    assert [d for d, _ in grown] == [["plain"], ["rot"]]
    assert 0 < grown[0][1] < plain / 2  # the two touched settings' rows only (of 5)
    agg = pd.read_csv(root / "leaderboard" / "summary.csv")
    assert agg["n_seeds"].max() == 3  # the grown group holds the new seed
    # a stage rewritten (its DONE touched): plain aggregated whole
    sizes.clear()
    done = next((root / "runs").glob("*/posthoc/e1/DONE"))
    dataset = json.loads((done.parent / "rows.parquet").parent.parent.parent.joinpath(
        "key.json").read_text())["payload"]["dataset"]["name"]  # fmt: skip
    os.utime(done, ns=(done.stat().st_atime_ns, done.stat().st_mtime_ns + 10**9))
    write_leaderboard(root, "erm", **options)
    assert sizes == [([dataset], int((table["dataset"] == dataset).sum()))]
    check("full2")
    sizes.clear()  # and with no stage rewritten, nothing aggregated
    write_leaderboard(root, "erm", **options)
    assert sizes == []


def test_the_comparisons_check_each_stages_scores_once(tmp_path, monkeypatch) -> None:
    """derived's paired and scorer comparisons share with_scores' checks (`known`): every
    stage's scores folder is looked at once in all, not once per comparison, and both frames
    equal those computed each on its own, a stage without scores (pruned) included."""
    import shutil

    from harness.report import compare

    monkeypatch.setattr(compare, "seeds_needed", lambda d, e: SimpleNamespace(seeds=1))
    root = tmp_path / "r"
    make_root(root, lrs=(1,))
    pruned = next((root / "runs").glob("*/posthoc/e1/scores"))
    shutil.rmtree(pruned)  # one stage without per-example scores
    table = collect_cached(root)[0]
    checked: list[tuple[str, str]] = []
    real = compare.stages_with_scores

    def spy(results_dir, stages):
        checked.extend(stages)
        return real(results_dir, stages)

    monkeypatch.setattr(compare, "stages_with_scores", spy)
    o = Options(**OPTIONS[0], primary_of=lambda d: "accuracy", headline_split=None)
    shared = derived(table, aggregate(table, root), root, o)
    assert checked and len(checked) == len(set(checked))
    assert (pruned.parent.parent.parent.name, "e1") in checked
    checked.clear()
    chosen = table[table["setting_id"].isin(shared["selection"]["setting_id"])]
    alone = compare.paired_comparisons(chosen, root, o.baseline, o.multiple_comparisons)
    _same(shared["comparisons"], alone, "comparisons")
    alone = compare.scorer_comparisons(table, root, o.scorer_baseline,
                                       o.scorer_multiple_comparisons)  # fmt: skip
    _same(shared["scorer_comparisons"], alone, "scorer_comparisons")
    assert len(checked) > len(set(checked))  # each on its own: stages checked twice
