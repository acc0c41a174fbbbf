"""Leave-one-domain-out tables, as DomainBed's: the accuracy on each held-out domain and
their average, per setting (everything but the seed and the held-out domain).

A run belongs here when its dataset key has `test_domains` with one domain (rotated_digits;
a sweep `-m 'dataset.test_domains=[0],[15],...'`). Runs holding out two domains feed
DomainBed's leave-one-domain-out validation (`_lodo`: rows `lodo_report_accuracy`).
The checkpoint of each run is its own `selection_rule`'s (training-domain validation:
the pooled `val` split of the training domains); no hyperparameter selection is made
across settings here, except by the test-domain oracle (harness/oracle.py), whose rows
(metric `oracle_report_accuracy`, one per search) follow the plain ones when present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.keyfacts import domain_facts, facts_of, parse_domains
from harness.oracle import REPORT, SELECT
from harness.report.mdtable import markdown_table
from harness.table import overall

SETTING = [
    "dataset",
    "model",
    "method",
    "tta",
    "augment",
    "selection_rule",
    "eval_id",
    "domain_setting",
]
COLUMNS = [
    *SETTING,
    "held_out",
    "split",
    "split_role",
    "metric",
    "mean",
    "std",
    "n_seeds",
    "n_held_out",
    "n_domains",
]
AVERAGE = "average"
LODO = "lodo_report_accuracy"  # DomainBed's leave-one-domain-out validation, chosen setting


def domain_setting(payload: dict[str, Any], searched: bool = False) -> tuple[str, str, int] | None:
    """(the setting without seed and held-out domain, the held-out domain, the number of
    domains) of a run's key payload; None unless exactly one domain is held out. `searched`:
    without the method's options and the trainer either (a search, harness/selection.py)."""
    return _setting_of(domain_facts(payload), searched)


def _setting_of(
    facts: dict[str, Any] | None, searched: bool = False
) -> tuple[str, str, int] | None:
    """domain_setting from a run's domain facts (harness/keyfacts.py)."""
    if facts is None or len(facts["held"]) != 1:
        return None
    return facts["search" if searched else "hp"], facts["held"][0], len(facts["domains"])


def _domain_facts(results_dir: str | Path, run_ids: Any) -> dict[str, Any]:
    """{run_id: domain facts or None} (from the consolidated store's index where it holds the
    run, else its key.json); runs whose key cannot be read are left out."""
    found = facts_of(results_dir, run_ids)
    return {r: parse_domains(f) for r, f in found.items() if f is not None}


def domain_generalisation(table: pd.DataFrame, results_dir: str | Path) -> pd.DataFrame:
    """Accuracy per held-out domain (mean, std over seeds) on the held-out (`shift_test`)
    and training-domain validation (`val`) splits, and per setting the average over its
    held-out domains (`held_out` = average; `n_held_out` of `n_domains` domains)."""
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    # only runs with a shift_test split can hold a domain out: their facts alone are read,
    # once for the plain and the leave-one-domain-out tables
    facts = _domain_facts(results_dir, _shift_test_runs(table))
    found = {r: _setting_of(f) for r, f in facts.items()}
    found = {k: v for k, v in found.items() if v is not None}
    keep = (
        overall(table)
        & (table["metric"] == "accuracy")
        & table["split_role"].isin(["shift_test", "val"])
        & table["run_id"].isin(list(found))
    )
    plain = _aggregate(table[keep], found)
    extra = [f for f in (_oracle(table, results_dir), _lodo(table, results_dir, facts)) if len(f)]
    return pd.concat([plain, *extra], ignore_index=True) if extra else plain


def _shift_test_runs(table: pd.DataFrame) -> np.ndarray:
    """The runs with a shift_test split, in order; a numpy array (iterating the arrow-backed
    one costs a Python call per run)."""
    runs = table["run_id"][table["split_role"] == "shift_test"].unique()
    return np.asarray(runs, dtype=object)


def _held_out_runs(
    table: pd.DataFrame, results_dir: str | Path, facts: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Per run with a shift_test split: its held-out domains, its search (the setting
    without seed, held-out domains, method options and trainer) and its hyperparameter
    setting (the same with method options and trainer)."""
    if facts is None:
        facts = _domain_facts(results_dir, _shift_test_runs(table))
    out = [
        {"run_id": run_id, "held": tuple(f["held"]), "domains": f["domains"],
         "search": f["search"], "hp": f["hp"]}
        for run_id, f in facts.items()
        if f is not None
    ]  # fmt: skip
    return pd.DataFrame(out, columns=["run_id", "held", "domains", "search", "hp"])


def _lodo(
    table: pd.DataFrame, results_dir: str | Path, facts: dict[str, Any] | None = None
) -> pd.DataFrame:
    """DomainBed's leave-one-domain-out validation: for held-out domain t, a hyperparameter
    setting's criterion is the mean over the other domains v of its accuracy on v in the runs
    holding out {t, v} (mean over their seeds; the `domain` group rows of their shift_test
    split); per search and t the setting with the best criterion is chosen (every v needed)
    and its accuracy on t in its leave-one-out runs reported (`lodo_report_accuracy`)."""
    runs = _held_out_runs(table, results_dir, facts)
    pairs = runs[runs["held"].map(len) == 2]
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    grouped = overall(table) | (table["group_key"].fillna("") == "domain")
    acc = table[grouped & (table["metric"] == "accuracy") & (table["split_role"] == "shift_test")
                & (table["scorer"].fillna("") == "")]  # fmt: skip
    by_domain = acc[acc["group_key"] == "domain"].set_index(["run_id", "group_value"])["value"]
    single = runs[runs["held"].map(len) == 1]
    chosen_runs, found = [], {}
    for (search, t), cands in single.groupby(["search", single["held"].str[0]]):
        best = None
        for hp, loo in cands.groupby("hp"):
            others = [v for v in loo["domains"].iloc[0] if v != t]
            scores = []
            for v in others:
                mine = pairs[
                    (pairs["hp"] == hp) & pairs["held"].map(lambda h, v=v, t=t: set(h) == {t, v})
                ]
                vals = [by_domain.get((r, v)) for r in mine["run_id"]]
                vals = [x for x in vals if x is not None]
                scores.append(float(np.mean(vals)) if vals else None)
            if not others or any(x is None for x in scores):
                continue  # DomainBed: a setting lacking a pair run is not eligible
            criterion = float(np.mean(scores))
            if best is None or (criterion, hp) > (best[0], best[1]):
                best = (criterion, hp, loo["run_id"].tolist())
        if best is not None:
            for r in best[2]:
                chosen_runs.append(r)
                found[r] = (search, t, len(cands["domains"].iloc[0]))
    keep = overall(table) & (table["metric"] == "accuracy") & (table["split_role"] == "shift_test")
    rows = table[keep & table["run_id"].isin(chosen_runs)].assign(metric=LODO)
    return _aggregate(rows, found)


def _oracle(table: pd.DataFrame, results_dir: str | Path) -> pd.DataFrame:
    """DomainBed's test-domain oracle (harness/oracle.py): per held-out domain, the setting
    of the search with the best `oracle_select_accuracy` (20%, last checkpoint), its
    `oracle_report_accuracy` (the other 80%); a row per search and held-out domain, and
    their average. Only runs with oracle rows (an eval config with `oracle_split`)."""
    from harness.selection import apply_selection

    runs = table.loc[table["metric"] == SELECT, "run_id"].unique()
    if not len(runs):
        return pd.DataFrame(columns=COLUMNS)
    chosen = apply_selection(table[table["run_id"].isin(runs)], "test_domain_oracle", results_dir)
    facts = _domain_facts(results_dir, chosen["run_id"].unique())
    found = {r: _setting_of(f, searched=True) for r, f in facts.items()}
    found = {k: v for k, v in found.items() if v is not None}
    keep = overall(chosen) & (chosen["metric"] == REPORT) & chosen["run_id"].isin(list(found))
    return _aggregate(chosen[keep], found)


def _aggregate(rows: pd.DataFrame, found: dict[str, tuple[str, str, int]]) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    rows = rows.assign(
        augment=rows["augment"].fillna("") if "augment" in rows else "",
        domain_setting=rows["run_id"].map(lambda r: found[r][0]),
        held_out=rows["run_id"].map(lambda r: found[r][1]),
        n_domains=rows["run_id"].map(lambda r: found[r][2]),
    )
    by = [*SETTING, "held_out", "split", "split_role", "metric", "n_domains"]
    per = rows.groupby(by, dropna=False, sort=True)["value"].agg(
        mean="mean", std="std", n_seeds="size"
    )
    per = per.reset_index().assign(n_held_out=1)
    # DomainBed's Avg column: the mean of the per-domain means (no interval)
    avg = per.groupby(
        [*SETTING, "split", "split_role", "metric", "n_domains"], dropna=False, sort=True
    ).agg(mean=("mean", "mean"), n_seeds=("n_seeds", "min"), n_held_out=("held_out", "size"))
    avg = avg.reset_index().assign(held_out=AVERAGE, std=float("nan"))
    return pd.concat([per, avg], ignore_index=True)[COLUMNS]


def domain_markdown(dg: pd.DataFrame, dataset: str) -> list[str]:
    """The dataset page's section: accuracy on each held-out domain and the average, one
    row per setting (DomainBed's layout); empty when the dataset has no such runs."""
    sub = dg[(dg["dataset"] == dataset) & (dg["split_role"] == "shift_test")]
    oracle = sub[sub["metric"] == REPORT]
    lodo = sub[sub["metric"] == LODO]
    sub = sub[sub["metric"] == "accuracy"]
    if sub.empty and oracle.empty and lodo.empty:
        return []
    lines = _domain_table(
        sub,
        "Leave-one-domain-out (held-out domain accuracy)",
        "One column per held-out domain (mean ± std over seeds), `avg` their mean, as "
        "DomainBed's tables; a row is a setting without its seed and held-out domain "
        "(`domain_setting`); `n_held_out` of `n_domains` domains were held out. Checkpoints "
        "by each run's selection rule on the training domains' pooled validation split; no "
        "selection across settings. Every number: `domain_generalisation.csv`.",
    )
    lines += _domain_table(
        lodo,
        "Leave-one-domain-out, leave-one-domain-out validation",
        "DomainBed's leave-one-domain-out cross-validation: per held-out domain t, the "
        "hyperparameter setting whose runs holding out {t, v} are most accurate on v, averaged "
        "over every other domain v; shown: its accuracy on t (`lodo_report_accuracy`), mean ± "
        "std over seeds, `avg` their mean. A row is a search (method without its "
        "hyperparameters); settings lacking a pair run are not eligible.",
    )
    return lines + _domain_table(
        oracle,
        "Leave-one-domain-out, test-domain oracle (ORACLE: selected on test data)",
        "DomainBed's test-domain oracle: per held-out domain, the hyperparameter setting "
        "with the best accuracy on a seeded 20% of that domain at the last checkpoint "
        "(`oracle_select_accuracy`); shown: its accuracy on the other 80% "
        "(`oracle_report_accuracy`), mean ± std over seeds, `avg` their mean. A row is a "
        "search (method without its hyperparameters). It looks at test labels: an upper "
        "reference, not a model-selection result.",
    )


def _domain_table(sub: pd.DataFrame, title: str, text: str) -> list[str]:
    if sub.empty:
        return []

    def cell(r: pd.Series) -> str:
        text = f"{r['mean']:.4f}"
        return text if pd.isna(r["std"]) else f"{text} ± {r['std']:.4f}"

    sub = sub.assign(cell=sub.apply(cell, axis=1))
    order = sorted(set(sub["held_out"]) - {AVERAGE}, key=_angle) + [AVERAGE]
    wide = sub.pivot_table(
        index=["model", "method", "domain_setting", "eval_id"],
        columns="held_out",
        values="cell",
        aggfunc="first",
    )
    wide = wide.reindex(columns=[c for c in order if c in wide.columns]).fillna("—")
    counts = sub[sub["held_out"] == AVERAGE].set_index(
        ["model", "method", "domain_setting", "eval_id"]
    )[["n_held_out", "n_domains", "n_seeds"]]
    wide = wide.join(counts).reset_index().rename(columns={AVERAGE: "avg"})
    return ["", f"## {title}", "", text, "", markdown_table(wide)]


def _angle(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
