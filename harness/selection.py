"""Selection, at two levels, from numbers runs already recorded (nothing is retrained):

1. the epoch inside a run (`selection_rule`, in the run key): which epoch's weights a run
   evaluates, from its per-epoch validation records (epochs.parquet):
   - `id_val_accuracy` (default): the highest mean accuracy over the ID validation split(s)
     (the last epoch when there is none);
   - `last_epoch`: the last one;
   - `val/<metric>`: the highest mean <metric> over the validation split(s), e.g.
     `val/worst_group_accuracy`, `val/worst_class_accuracy` (SubpopBench's attribute-unknown
     selection; recorded for every run), or the dataset's own metrics such as WILDS' `val/acc_wg`
     and `val/F1-macro_all` (recorded per epoch when the benchmark has its own eval).
2. the setting across a search (`model_selection` of the leaderboard and export),
   DomainBed-style, from completed runs only. A *search* is every setting that shares the
   dataset (options and data fingerprint), the model, the method's name, the TTA config and
   the eval config, and differs only in hyperparameters (the method's options, the trainer's
   settings) and seeds. A rule picks one setting by the mean over seeds of one overall metric
   on splits of some roles:
   - `id_val` (default): accuracy on the ID validation split(s);
   - `worst_group_val`: worst-group accuracy on the validation split(s);
   - `worst_class_val`: worst-class accuracy on the validation split(s), SubpopBench's
     attribute-unknown rule (its rows need eval=subpop);
   - `oracle`: accuracy on the shifted test splits (the ID test split when there are none).
     It looks at test data, so every table that uses it says "oracle".
   - `test_domain_oracle`: DomainBed's: `oracle_select_accuracy`, accuracy on a seeded 20%
     of the held-out domain at the last checkpoint (harness/oracle.py); its table reports
     the other 80% (`oracle_report_accuracy`).

New rules are one decorated function (`epoch_rule`) or one `setting_rule(...)` call, e.g. a
dataset's own validation metric such as WILDS' `acc_wg`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.keyfacts import facts_of
from harness.neighbours import changes

log = logging.getLogger("harness.selection")

# ---------------------------------------------------------------- level 1: the epoch

EpochScore = Callable[[list[dict[str, Any]], int], float]
EPOCH_RULES: dict[str, EpochScore] = {}


def epoch_rule(name: str) -> Callable[[EpochScore], EpochScore]:
    """Registers a selection_rule: (epoch records so far, epoch) -> score; the highest wins
    (ties: the earlier epoch)."""

    def register(fn: EpochScore) -> EpochScore:
        EPOCH_RULES[name] = fn
        return fn

    return register


@epoch_rule("id_val_accuracy")
def _id_val_accuracy(records: list[dict[str, Any]], epoch: int) -> float:
    accs = [
        r["value"]
        for r in records
        if r["epoch"] == epoch and r["split_role"] == "val" and r["metric"] == "accuracy"
    ]
    if not accs:  # no validation split: fall back to the last epoch
        return float(epoch)
    return float(np.mean(accs))


@epoch_rule("last_epoch")
def _last_epoch(records: list[dict[str, Any]], epoch: int) -> float:
    return float(epoch)


# `val/<metric>`: the highest mean of <metric> over the validation split(s), any metric the
# per-epoch records hold: accuracy, worst_group_accuracy, and the dataset's own evaluation
# (WILDS: acc_wg, F1-macro_all, ...); metrics where lower is better are negated.
VAL_METRIC = "val/"
LOWER_IS_BETTER_EPOCH = ("nll",)


def is_epoch_rule(rule: Any) -> bool:
    return isinstance(rule, str) and (
        rule in EPOCH_RULES or (rule.startswith(VAL_METRIC) and len(rule) > len(VAL_METRIC))
    )


def _val_metric(records: list[dict[str, Any]], epoch: int, metric: str) -> float:
    val = [r for r in records if r["epoch"] == epoch and r["split_role"] == "val"]
    if not val:  # no validation split (or nothing recorded yet): the last epoch
        return float(epoch)
    values = [r["value"] for r in val if r["metric"] == metric]
    if not values:
        raise ValueError(
            f"selection_rule={VAL_METRIC}{metric}: the validation records have no metric "
            f"{metric!r}; recorded: {sorted({r['metric'] for r in val})}"
        )
    score = float(np.mean(values))
    return -score if metric in LOWER_IS_BETTER_EPOCH else score


def epoch_score(records: list[dict[str, Any]], epoch: int, rule: str) -> float:
    if not is_epoch_rule(rule):
        raise ValueError(
            f"selection_rule must be one of {tuple(EPOCH_RULES)} or {VAL_METRIC}<metric>, "
            f"got {rule!r}"
        )
    if rule.startswith(VAL_METRIC) and rule not in EPOCH_RULES:
        return _val_metric(records, epoch, rule.removeprefix(VAL_METRIC))
    return EPOCH_RULES[rule](records, epoch)


# ---------------------------------------------------------------- level 2: the setting


@dataclass(frozen=True)
class SettingRule:
    metric: str  # an overall metric of the tidy table
    roles: tuple[str, ...]  # split roles whose mean is the criterion
    label: str  # how tables name the rule
    fallback_role: str | None = None  # for settings without splits of `roles`


SETTING_RULES: dict[str, SettingRule] = {}


def setting_rule(name: str, metric: str, roles: tuple[str, ...], label: str, **kw: Any) -> None:
    """Registers a model_selection rule."""
    SETTING_RULES[name] = SettingRule(metric, roles, label, **kw)


setting_rule("id_val", "accuracy", ("val",), "ID validation accuracy")
setting_rule("worst_group_val", "worst_group_accuracy", ("val",), "worst-group validation accuracy")
# SubpopBench's attribute-unknown rule; its rows come from eval=subpop (harness/subpop_rows.py)
setting_rule("worst_class_val", "worst_class_accuracy", ("val",), "worst-class validation accuracy")
setting_rule(
    "oracle", "accuracy", ("shift_test",), "oracle (test-set selection)", fallback_role="id_test"
)
# DomainBed's test-domain oracle (harness/oracle.py: rows only from last-epoch runs under an
# eval config with `oracle_split`); reported on the other 80% (harness/report/domains.py)
setting_rule(
    "test_domain_oracle",
    "oracle_select_accuracy",
    ("shift_test",),
    "test-domain oracle (20% of the held-out domain, last checkpoint)",
)
LABELS = {name: rule.label for name, rule in SETTING_RULES.items()}

SEARCH_COLUMNS = ["dataset", "search_id", "model", "method", "tta", "eval_id"]


def search_ids(table: pd.DataFrame, results_dir: str | Path | None) -> pd.Series:
    """setting_id -> search_id: the hash of a run's key payload without the seed, the method's
    options (its name stays) and the trainer. From the store's index (or one key.json per
    setting it lacks); without a results root (or key.json), settings are grouped by
    dataset, model and method alone."""
    first_run = table.drop_duplicates("setting_id").set_index("setting_id")["run_id"]
    # the store's index holds each run's search id (harness/keyfacts.py): no key.json read
    facts = facts_of(results_dir, first_run.to_numpy())
    out = {s: "" if facts[str(r)] is None else facts[str(r)][0] for s, r in first_run.items()}
    return pd.Series(out, name="search_id")


def select_settings(
    table: pd.DataFrame, rule: str = "id_val", results_dir: str | Path | None = None
) -> pd.DataFrame:
    """One row per search: the chosen setting_id, its criterion (mean over seeds), the number
    of settings searched and the rule. Settings without the rule's numbers are not eligible."""
    if rule not in SETTING_RULES:
        raise ValueError(
            f"model selection rule must be one of {sorted(SETTING_RULES)}, got {rule!r}"
        )
    columns = [*SEARCH_COLUMNS, "setting_id", "criterion", "settings", "selection"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    # one row per setting and eval config (a large table has 50 rows per run): what the
    # grouping below needs, without copying every row of the table
    # only the columns read below are taken (each selection of an arrow-backed column is a
    # take of its own: 0.2 s over every column at 10,000 runs), and of those only the rows
    # where the setting or eval config changes (the same first rows, 50 times fewer)
    named = ["dataset", "model", "method", "eval_id", "setting_id", "run_id"]
    few = table[[*named, *(["tta"] if "tta" in table else [])]]
    at = changes(table, ["setting_id", "eval_id"])
    few = few if at is None else few.take(at)
    tta = few["tta"].fillna("") if "tta" in few else pd.Series("", index=few.index)
    settings = few[named].assign(tta=tta).drop_duplicates(["setting_id", "eval_id"])
    settings = settings.assign(
        search_id=settings["setting_id"].map(search_ids(settings, results_dir))
    )[[*SEARCH_COLUMNS, "setting_id"]]
    spec = SETTING_RULES[rule]
    metric, roles = spec.metric, spec.roles
    plain = (table["scorer"] == "") & (table["metric"] == metric)
    if metric == "accuracy":
        plain &= table["group_key"] == ""
    needed = ["setting_id", "eval_id", "run_id", "value"]
    crit = table.loc[plain & table["split_role"].isin(roles), needed]
    if spec.fallback_role:  # e.g. oracle on benchmarks without shifted splits: ID test
        has_shift = crit["setting_id"].unique()
        fallback = table.loc[
            plain
            & (table["split_role"] == spec.fallback_role)
            & ~table["setting_id"].isin(has_shift),
            needed,
        ]
        crit = pd.concat([crit, fallback])
    crit = crit.merge(settings, on=["setting_id", "eval_id"])
    # per run: mean over the criterion's splits; per setting: mean over seeds
    per_run = crit.groupby([*SEARCH_COLUMNS, "setting_id", "run_id"])["value"].mean()
    per_setting = per_run.groupby(level=[*SEARCH_COLUMNS, "setting_id"]).mean()
    per_setting = per_setting.rename("criterion").reset_index()
    searched = settings.groupby(SEARCH_COLUMNS)["setting_id"].nunique().rename("settings")
    missing = set(settings["setting_id"]) - set(per_setting["setting_id"])
    if missing:
        log.warning(
            "model selection (%s): %d setting(s) have no %s on %s splits and cannot be chosen",
            rule,
            len(missing),
            metric,
            "/".join(roles),
        )
    best = (
        per_setting.sort_values(["criterion", "setting_id"], ascending=[False, True])
        .drop_duplicates(SEARCH_COLUMNS)
        .join(searched, on=SEARCH_COLUMNS)
        .assign(selection=spec.label)
    )
    return best[columns].reset_index(drop=True)


def apply_selection(
    table: pd.DataFrame, rule: str = "id_val", results_dir: str | Path | None = None
) -> pd.DataFrame:
    """The rows of the chosen settings only, with a `model_selection` column naming the rule."""
    chosen = select_settings(table, rule, results_dir)
    out = table[table["setting_id"].isin(set(chosen["setting_id"]))]
    return out.assign(model_selection=LABELS[rule])
