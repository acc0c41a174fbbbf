"""Model selection across hyperparameter settings, DomainBed-style, from completed runs only.

A *search* is every setting that shares the dataset (options and data fingerprint), the model,
the method's name, the TTA config and the eval config, and differs only in hyperparameters
(the method's options, the trainer's settings) and seeds. Within a search, a declared rule
picks one setting from numbers the runs already recorded; nothing is retrained:

- `id_val` (default): the highest mean (over seeds) accuracy on the ID validation split(s);
- `worst_group_val`: the highest mean worst-group accuracy on the validation split(s);
- `oracle`: the highest mean accuracy on the shifted test splits (the ID test split when
  there are none). It looks at test data, so every table that uses it says "oracle".

Which epoch's weights a run evaluates is chosen during training from its per-epoch
validation records (`selection_rule`, epochs.parquet); this module chooses among runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from harness.store import content_hash

log = logging.getLogger("harness.selection")

RULES = {
    "id_val": ("accuracy", ("val",)),
    "worst_group_val": ("worst_group_accuracy", ("val",)),
    "oracle": ("accuracy", ("shift_test",)),
}
LABELS = {
    "id_val": "ID validation accuracy",
    "worst_group_val": "worst-group validation accuracy",
    "oracle": "oracle (test-set selection)",
}
SEARCH_COLUMNS = ["dataset", "search_id", "model", "method", "tta", "eval_id"]


def search_ids(table: pd.DataFrame, results_dir: str | Path | None) -> pd.Series:
    """setting_id -> search_id: the hash of a run's key payload without the seed, the method's
    options (its name stays) and the trainer. Read from one key.json per setting; without a
    results root (or key.json), settings are grouped by dataset, model and method alone."""
    out = {}
    first_run = table.drop_duplicates("setting_id").set_index("setting_id")["run_id"]
    for setting_id, run_id in first_run.items():
        payload = None
        if results_dir is not None:
            try:
                key = json.loads((Path(results_dir) / "runs" / run_id / "key.json").read_text())
                payload = key["payload"]
            except (OSError, ValueError, KeyError):
                payload = None
        if payload is None:
            out[setting_id] = ""
            continue
        method = payload.get("method") or {}
        searched = {k: v for k, v in payload.items() if k not in ("seed", "method", "trainer")} | {
            "method": method.get("name")
        }
        out[setting_id] = content_hash(searched)[:16]
    return pd.Series(out, name="search_id")


def select_settings(
    table: pd.DataFrame, rule: str = "id_val", results_dir: str | Path | None = None
) -> pd.DataFrame:
    """One row per search: the chosen setting_id, its criterion (mean over seeds), the number
    of settings searched and the rule. Settings without the rule's numbers are not eligible."""
    if rule not in RULES:
        raise ValueError(f"model selection rule must be one of {sorted(RULES)}, got {rule!r}")
    columns = [*SEARCH_COLUMNS, "setting_id", "criterion", "settings", "selection"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    # one row per setting and eval config (a large table has 50 rows per run): what the
    # grouping below needs, without copying every row of the table
    tta = table["tta"].fillna("") if "tta" in table else pd.Series("", index=table.index)
    settings = table.assign(tta=tta).drop_duplicates(["setting_id", "eval_id"])
    settings = settings.assign(
        search_id=settings["setting_id"].map(search_ids(settings, results_dir))
    )[[*SEARCH_COLUMNS, "setting_id"]]
    metric, roles = RULES[rule]
    plain = (table["scorer"] == "") & (table["metric"] == metric)
    if metric == "accuracy":
        plain &= table["group_key"] == ""
    crit = table[plain & table["split_role"].isin(roles)]
    if rule == "oracle":  # benchmarks without shifted splits: their ID test split
        has_shift = crit["setting_id"].unique()
        fallback = table[
            plain & (table["split_role"] == "id_test") & ~table["setting_id"].isin(has_shift)
        ]
        crit = pd.concat([crit, fallback])
    crit = crit[["setting_id", "eval_id", "run_id", "value"]].merge(
        settings, on=["setting_id", "eval_id"]
    )
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
        .assign(selection=LABELS[rule])
    )
    return best[columns].reset_index(drop=True)


def apply_selection(
    table: pd.DataFrame, rule: str = "id_val", results_dir: str | Path | None = None
) -> pd.DataFrame:
    """The rows of the chosen settings only, with a `model_selection` column naming the rule."""
    chosen = select_settings(table, rule, results_dir)
    out = table[table["setting_id"].isin(set(chosen["setting_id"]))]
    return out.assign(model_selection=LABELS[rule])
