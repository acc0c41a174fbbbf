"""The report's faster paths give the frames and strings of the straightforward pandas
computations they replace (random data with ties, missing splits, clipped and missing
intervals): metric_table's dict path vs its pivot_table path, _cells vs one f-string per
cell, _clip_to_range vs a per-row map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.report import aggregate as agg_module
from harness.report.aggregate import metric_range, metric_table

SPLITS = [("zz", "custom"), ("val", "val"), ("test", "id_test"), ("shift_b", "shift_test"),
          ("shift_a", "shift_test")]  # fmt: skip


def _random_agg(seed: int, augment: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(rng.integers(1, 40))):
        setting = f"{rng.integers(0, 10**12):012x}"
        # names whose order differs by case, accents and length (pivot_table sorts them)
        model = str(rng.choice(["m0", "M1", "é2", "m0_"]))
        method = str(rng.choice(["meth0", "Méth1", "meth_2", "meth10", "méth"]))
        aug = ("" if rng.random() < 0.5 else "randaugment") if augment else ""
        n = int(rng.integers(1, 4))
        for metric in ("accuracy", "ece"):
            for split, role in SPLITS:
                if rng.random() < 0.15:
                    continue  # this setting lacks the split
                mean = round(float(rng.uniform(0, 1)), 2)  # ties
                std = float(rng.uniform(0, 0.2)) if n > 1 else np.nan
                lo, hi = (mean - 0.1, mean + 0.1) if rng.random() < 0.8 else (np.nan, np.nan)
                clipped = (
                    "t over seeds, clipped to [0, 1]" if rng.random() < 0.1 else "t over seeds"
                )
                rows.append(
                    dict(dataset="d", setting_id=setting, eval_id="e" * 16, model=model,
                         method=method, tta="", augment=aug, selection_rule="last",
                         split=split, split_role=role, scorer="", metric=metric,
                         group_key="", group_value="", mean=mean, std=std, n_seeds=n,
                         ci_low=lo, ci_high=hi, interval=clipped)
                )  # fmt: skip
    return pd.DataFrame(rows).astype({"n_seeds": "int64"})


def _pandas_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agg_module, "_metric_table_fast", lambda *a, **k: None)


@pytest.mark.parametrize("seed", range(12))
def test_metric_table_fast_path_is_the_pivot(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    agg = _random_agg(seed, augment=seed % 3 == 0)
    cases = [("accuracy", True), ("accuracy", False), ("ece", False), ("ece", True)]
    fast = [metric_table(agg, m, with_interval=w) for m, w in cases]
    _pandas_only(monkeypatch)
    for (metric, w), got in zip(cases, fast, strict=True):
        want = metric_table(agg, metric, with_interval=w)
        pd.testing.assert_frame_equal(got, want, check_column_type=False, check_names=False)
        assert list(got.columns) == list(want.columns)
        assert got.to_csv() == want.to_csv()
        assert got.to_markdown() == want.to_markdown()


def test_cells_are_one_format_per_cell() -> None:
    agg = _random_agg(3)
    sel = agg[agg["metric"] == "accuracy"]
    clipped = sel["interval"].str.contains("clipped").to_numpy()

    def cell(m: float, s: float, n: int, lo: float, hi: float) -> str:
        text = f"{m:.3f} ± {s:.3f}" if n > 1 and np.isfinite(s) else f"{m:.3f}"
        return text + (f" [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) and np.isfinite(hi) else "")

    rows = list(
        zip(sel["mean"], sel["std"], sel["n_seeds"], sel["ci_low"], sel["ci_high"], strict=True)
    )
    assert agg_module._cells(sel, clipped, False) == [
        cell(m, s, n, np.nan, np.nan) for m, s, n, *_ in rows
    ]
    assert agg_module._cells(sel, clipped, True) == [
        cell(*r) + ("†" if c else "") for r, c in zip(rows, clipped, strict=True)
    ]  # fmt: skip


def test_fallbacks_still_give_the_pivot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicate setting x split rows and missing means go through pandas itself."""
    agg = _random_agg(5)
    dup = pd.concat([agg, agg.iloc[:3].assign(mean=0.5)], ignore_index=True)
    nan = agg.assign(mean=agg["mean"].where(agg.index % 7 != 0))
    # (with intervals, a duplicate on the sorting split fails in pandas' reindex: both ways)
    cases = [(dup, False), (nan, True), (nan, False)]
    got = [metric_table(f, "accuracy", with_interval=w) for f, w in cases]
    _pandas_only(monkeypatch)
    for (frame, w), g in zip(cases, got, strict=True):
        pd.testing.assert_frame_equal(g, metric_table(frame, "accuracy", with_interval=w))


def test_clip_to_range_is_a_per_row_map() -> None:
    rng = np.random.default_rng(0)
    metrics = np.array(["accuracy", "nll", "auroc_vs_x", "my_metric", "ece", "fpr95_y"])
    frame = pd.DataFrame({
        "metric": metrics[rng.integers(0, len(metrics), 500)],
        "ci_low": rng.normal(0.2, 0.5, 500),
        "ci_high": rng.normal(0.8, 0.5, 500),
        "interval": np.where(rng.random(500) < 0.5, "t over seeds", ""),
    })  # fmt: skip
    frame.loc[::9, "ci_low"] = np.nan
    got = frame.copy()
    agg_module._clip_to_range(got)
    low = frame["metric"].map(lambda m: metric_range(m)[0])
    high = frame["metric"].map(lambda m: metric_range(m)[1])
    outside = (frame["ci_low"] < low) | (frame["ci_high"] > high)
    assert got["ci_low"].tolist() == pytest.approx(
        frame["ci_low"].clip(lower=low).tolist(), nan_ok=True, abs=0
    )
    assert got["ci_high"].tolist() == frame["ci_high"].clip(upper=high).tolist()
    marks = [
        i + (f", clipped to [{lo:g}, {hi:g}]" if o else "")
        for i, lo, hi, o in zip(frame["interval"], low, high, outside, strict=True)
    ]
    assert got["interval"].tolist() == marks
    assert got["interval"].dtype == frame["interval"].dtype


def test_markdown_table_odd_characters_are_tabulates() -> None:
    """mdtable's column-at-a-time path (every character one column wide) against tabulate,
    with characters that break it: combining marks, joiners, variation selectors, wide and
    characters, non-breaking spaces, blanks at the ends. (ASCII control characters and tabs
    are left out: there main's mdtable already differed from tabulate, and still does.)"""
    import random

    from harness.report.mdtable import markdown_table

    rng = random.Random(1)
    pieces = ["a", "±", "†", "▼", "é", "e\u0301", "\u200d", "\u2764\ufe0f", "漢", "\u00a0",
              " ", "\u0915\u094d\u0937", "🇺🇸", "\x85", "0.5"]  # fmt: skip
    for _ in range(300):
        rows = rng.randint(1, 5)
        frame = pd.DataFrame(
            {
                f"c{k}": ["".join(rng.choices(pieces, k=rng.randint(1, 3))) for _ in range(rows)]
                for k in range(rng.randint(1, 4))
            }
        )
        assert markdown_table(frame) == frame.to_markdown(index=False, disable_numparse=True)


def test_corruption_errors_parse_each_row_as_the_pattern() -> None:
    """corruption_errors (split names parsed once per name) against a per-row regex match
    and a dict of means: random runs, corruption splits (generated too) among others."""
    import re

    from harness.report.corruption import SPLIT_PATTERN, corruption_errors

    rng = np.random.default_rng(2)
    splits = ["test", "val", "fog-1", "fog-3", "gen-snow-2", "gen-fog-1", "bad-9", "x_y-5"]
    rows = []
    for run in range(60):
        setting = f"s{run % 7}"
        for split in rng.choice(splits, size=5, replace=False):
            for eval_id in ("e1", "e2"):  # label metrics repeat per eval config
                rows.append(dict(dataset="d", setting_id=setting, model=f"m{run % 2}",
                                 method="erm", run_id=f"r{run}", eval_id=eval_id,
                                 split=str(split), split_role="shift_test", scorer="",
                                 metric="accuracy", group_key="", group_value="",
                                 value=float(rng.uniform())))  # fmt: skip
    table = pd.DataFrame(rows).astype({c: "str" for c in ("split", "run_id", "setting_id")})
    got = corruption_errors(table)
    want: dict[tuple, list] = {}
    for r in table.drop_duplicates(["run_id", "split"]).itertuples():
        m = re.match(SPLIT_PATTERN, r.split)
        if m:
            key = (r.dataset, r.setting_id, r.model, r.method, m["corruption"],
                   int(m["severity"]), m["generated"] is not None)  # fmt: skip
            want.setdefault(key, []).append((1.0 - r.value, r.run_id))
    assert len(got) == len(want)
    for row in got.itertuples(index=False):
        errors = want[(row.dataset, row.setting_id, row.model, row.method, row.corruption,
                       row.severity, row.generated)]  # fmt: skip
        assert row.error == pytest.approx(np.mean([e for e, _ in errors]), abs=1e-12)
        assert row.n_runs == len({r for _, r in errors})


def test_markdown_table_empty_cells_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty cells (the headline's augment and verdict columns) are padded as tabulate pads
    them, without falling back to tabulate: checked against tabulate on random frames with
    empty cells and all-empty columns, tabulate itself forbidden inside markdown_table."""
    import random

    from harness.report.mdtable import markdown_table

    rng = random.Random(2)
    pieces = ["", "", "a", "bb", "±", "漢", "é", "0.5 [0.1, 0.9]"]
    frames = []
    for _ in range(300):
        rows = rng.randint(1, 5)
        frames.append(
            pd.DataFrame(
                {
                    f"h{k}{rng.choice(['', 'x', '漢'])}": (
                        [""] * rows
                        if rng.random() < 0.3
                        else [
                            "".join(rng.choices(pieces, k=rng.randint(0, 2))) for _ in range(rows)
                        ]
                    )
                    for k in range(rng.randint(1, 4))
                }
            )
        )
    expected = [f.to_markdown(index=False, disable_numparse=True) for f in frames]

    def forbidden(*args: object, **kwargs: object) -> str:
        raise AssertionError("markdown_table fell back to tabulate")

    monkeypatch.setattr(pd.DataFrame, "to_markdown", forbidden)
    assert [markdown_table(f) for f in frames] == expected


def _groupby_aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """aggregate's groups and numbers as pandas' own groupby gives them (the reference)."""
    keys = [*agg_module.SETTING_COLUMNS, *agg_module.ROW_KEY]
    table = table.assign(augment=table["augment"].fillna(""))  # as aggregate does
    grouped = table.groupby(keys, dropna=False, sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n_seeds="size").reset_index()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_ids_are_pandas_groupby(seed: int) -> None:
    """aggregate groups on integer codes (runs of equal arrow strings encoded once): the same
    groups, order, bits and dtypes as groupby(keys, dropna=False, sort=False), on random
    tables with missing keys, rows in runs and rows shuffled, arrow and object strings."""
    rng = np.random.default_rng(seed)
    n = 600
    keys = [*agg_module.SETTING_COLUMNS, *agg_module.ROW_KEY]
    data = {}
    for i, key in enumerate(keys):
        values = np.array([f"{key}{v}" for v in rng.integers(0, 2 + i % 3, n)], dtype=object)
        if key != "metric":  # a metric is always named (metric_range needs it)
            values[rng.random(n) < 0.05] = None
        if i % 2 == 0:  # in runs, as the store's stages are
            values = np.sort(values.astype(str)).astype(object)
            values[values == "None"] = None
        data[key] = values
    data["value"] = rng.normal(size=n) * 10.0 ** rng.integers(-3, 4, n)
    data["run_id"] = [f"r{v}" for v in rng.integers(0, 20, n)]
    for dtype in ["str", object]:
        table = pd.DataFrame(data).astype({k: dtype for k in keys})
        for frame in (table, table.sample(frac=1, random_state=seed).reset_index(drop=True)):
            got = agg_module.aggregate(frame)
            want = _groupby_aggregate(frame)
            pd.testing.assert_frame_equal(got[want.columns.tolist()], want, check_exact=True)
            ids, first = agg_module.group_ids(frame, keys)
            want_ids = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
            np.testing.assert_array_equal(ids, want_ids)
            np.testing.assert_array_equal(first, pd.Series(want_ids).drop_duplicates().index)


@pytest.mark.parametrize("seed", [0, 1])
def test_aggregate_firsts_are_partcaches_first_rows(seed: int) -> None:
    """aggregate_firsts' positions are partcache.first_rows' (pandas' ngroup over setting_id,
    eval_id and the row key) where the setting names its columns, and None where it does not
    (there the two groupings differ and first_rows' count would not match the summary's)."""
    from harness.report.partcache import first_rows

    rng = np.random.default_rng(seed)
    n = 800
    setting = np.array([f"s{v}" for v in rng.integers(0, 12, n)], dtype=object)
    evals = [f"e{v}" for v in rng.integers(0, 2, n)]
    table = pd.DataFrame({"setting_id": setting, "eval_id": evals})
    for key in agg_module.SETTING_COLUMNS:  # functions of the setting, as in the store
        if key not in table:
            table[key] = [f"{key}{int(s[1:]) % 3}" for s in setting]
    for key in agg_module.ROW_KEY:  # few groups: several rows (seeds) in each
        table[key] = [f"{key}{v}" for v in rng.integers(0, 2 if key == "metric" else 1, n)]
    table["value"] = rng.normal(size=n)
    table["run_id"] = "r"
    table = table.astype({c: "str" for c in table.columns if c != "value"})
    agg, firsts = agg_module.aggregate_firsts(table)
    np.testing.assert_array_equal(firsts, first_rows(table))
    assert len(firsts) == len(agg)
    other = table.copy()
    other.loc[other.index[:3], "model"] = "another model"  # a setting with two models
    other = other.astype({"model": "str"})
    agg, firsts = agg_module.aggregate_firsts(other)
    assert firsts is None and len(agg) != len(np.unique(first_rows(other)))


@pytest.mark.parametrize("seed", [0, 1])
def test_index_counts_runs_as_pandas_does(seed: int) -> None:
    """index_markdown counts runs on the rows that differ from the row before (arrow
    strings): the same page as pandas' nunique over every row (object strings), with runs
    in stretches and shuffled, missing run ids and datasets."""
    from harness.report.markdown import _changes, index_markdown

    rng = np.random.default_rng(seed)
    n = 500
    run = np.repeat([f"r{v}" for v in rng.integers(0, 40, n // 5)], 5).astype(object)
    dataset = np.array([f"d{int(r[1:]) % 3}" for r in run], dtype=object)
    run[rng.random(n) < 0.03] = None
    dataset[rng.random(n) < 0.03] = None
    table = pd.DataFrame({"dataset": dataset, "run_id": run})
    for frame in (table, table.sample(frac=1, random_state=seed)):
        want = index_markdown(frame.astype(object), 2, ["d0", "d1", "d2"], False, pd.DataFrame())
        got = index_markdown(frame.astype("str"), 2, ["d0", "d1", "d2"], False, pd.DataFrame())
        assert got == want
        assert len(_changes(frame.astype("str"), ["dataset", "run_id"])) < n  # the fast path


def test_headline_cells_are_one_cell_per_record() -> None:
    """headline._cells (a column's arrays at once) gives _cell of each setting's record."""
    from harness.report import headline as hl

    agg = _random_agg(4).drop_duplicates("setting_id")
    agg.loc[agg.index[::3], "interval"] = ""  # no interval: the title says so
    needed = ["mean", "ci_low", "ci_high", "interval", "n_seeds"]
    want = {k: hl._cell(v) for k, v in hl._records(agg, needed).items()}
    assert hl._cells(agg) == want


def _task_values_per_setting(table: pd.DataFrame, metric: str) -> dict:
    """task_values as a pivot per setting (the reference: what it was before one pivot per
    group)."""
    from harness.report.aggregate import metric_rows

    rows = metric_rows(table, metric)
    rows = rows[rows["split_role"] == "shift_test"]
    out: dict = {}
    for (dataset, model, eval_id), group in rows.groupby(["dataset", "model", "eval_id"]):
        tasks = sorted(group["split"].unique())
        for setting_id, s in group.groupby("setting_id"):
            wide = s.pivot_table(index="seed", columns="split", values="value", aggfunc="first")
            wide = wide.reindex(columns=tasks).dropna()
            if len(wide):
                out.setdefault((dataset, model, eval_id), {})[setting_id] = wide
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_task_values_are_a_pivot_per_setting(seed: int) -> None:
    """One pivot per dataset x model x eval config, cut per setting: the same settings, in
    order, and frames (index, columns, bits) as a pivot per setting, on random tables where
    seeds miss tasks, settings miss whole splits, a value repeats (first kept) or is NaN;
    and setting_names is each setting's first row's (method, TTA)."""
    from harness.report.task_aggregates import setting_names, task_values

    rng = np.random.default_rng(seed)
    n = 3000
    table = pd.DataFrame(
        {
            "dataset": rng.choice(["d0", "d1"], n),
            "model": rng.choice(["m0", "m1"], n),
            "eval_id": "e",
            "setting_id": rng.choice([f"s{k}" for k in range(12)], n),
            "method": rng.choice(["erm", "irm"], n),
            "tta": rng.choice(["", "none", "tent", None], n),
            "seed": rng.integers(0, 5, n),
            "split": rng.choice(["a", "b", "c", "val"], n),
            "split_role": rng.choice(["shift_test", "shift_test", "id_test"], n),
            "scorer": "",
            "metric": rng.choice(["accuracy", "ece"], n),
            "group_key": "",
            "group_value": "",
            "value": rng.random(n),
        }
    ).astype({"dataset": "str", "setting_id": "str", "split": "str"})
    table.loc[rng.random(n) < 0.03, "value"] = np.nan
    want = _task_values_per_setting(table, "accuracy")
    got = task_values(table, "accuracy")
    assert list(got) == list(want) and sum(map(len, want.values())) > 10
    for key, settings in want.items():
        assert list(got[key]) == list(settings), key
        for setting_id, wide in settings.items():
            pd.testing.assert_frame_equal(got[key][setting_id], wide, check_exact=True)
    names = {
        sid: (str(rows.iloc[0]["method"]),
              "" if pd.isna(t := rows.iloc[0]["tta"]) or t in ("", "none") else str(t))
        for sid, rows in table.groupby("setting_id")
    }  # fmt: skip
    assert setting_names(table) == names
