"""Decision rules of claims (conf/experiment/claims/*.yaml, `claim:`): declared before the
sweep runs, applied mechanically to the tidy table it produced (docs/claims.md).

A claim has `tests`, each a rule:

    - name: ATC's error is smaller than AC's            # what the row says
      statistic: difference      # mean of a - b | slope (per seed, of the metric over x) |
                                 # std_ratio (run-to-run std over the binomial prediction) |
                                 # peak_x | peak_drop | value_at_max_x (curves over x, per
                                 # seed: harness/claim_curves.py)
      test: crossed              # crossed: harness.stats.paired_difference over seeds × units
                                 # seeds_t: Student's t over the per-seed means (seeds - 1 df)
      metric: abs_error
      splits: [role:shift_test]  # fnmatch patterns on split names, or role:<split_role>
      where: {selection_rule: id_val_accuracy}   # filters on the table's columns (and
                                 #   `key:<dotted key>` of the runs' key.json, e.g.
                                 #   key:tta.batch_size, added by harness/claims.py)
      a: {scorer: atc_mc}        # each side may override scorer, metric, splits (its
                                 #   `where` adds to the rule's)
      b: {scorer: ac}            # or {value: 0.5}: a constant
      direction: less            # the claim: a - b < -margin | greater: > margin |
      margin: 0.0                #   equivalent: |a - b| < margin (> 0). A negative margin
                                 #   weakens greater / less to "not worse than |margin|"
      claim: true                # false: a diagnostic, reported but not in the verdict

`results: NAME` (optional) names the folder below the suite's root that the sweep writes to
(default: the claim's name): claims whose sweeps share runs name the same folder, and their
rules then say with `where` which runs they read.

A *unit* is a split: each side is a (seeds × splits) matrix of one value per seed and split;
sides are paired by seed and split, and a side with one split is paired with every split of
the other. For `slope`, `x` is a regular expression whose first group, read off each split's
name, is the numeric x (e.g. a corruption severity), or `x_key` a dotted key of the run's
configuration (e.g. `dataset.correlation`; harness/claims.py adds it as the column
`key:<x_key>`), then the side's one split is pivoted over x instead. A slope uses side a, or
a - b when `b` is given. A side's `groups: [...]` selects per-group rows (`group_value`)
and averages them per seed and split (e.g. the majority groups' mean accuracy).

`std_ratio` (side a only, e.g. accuracy): per split the std over seeds (ddof 1) over the
binomial sampling prediction sqrt(p(1 - p) / n) (p: the mean over seeds, n: the split's
size); with several splits the root mean of the squared ratios. Its interval is the
chi-square interval of a normal variance (k seeds: k - 1 df per split, the splits' dfs
added, which treats splits as independent); the verdict compares ratio - 1 with the margin.

Across settings (harness/claim_fits.py): `rank_correlation` (the rule's `scorers`, ranked
per seed by side a's metric and by side b's, Spearman's ρ, Student's t over seeds; the
verdict compares ρ - `reference` with the margin) and `r2` (per seed and split, the R² of
the line of scale(metric on the split) on scale(metric on `x_splits`) over the seed's runs,
`scale` probit / logit / linear, on the rule or a side; then compared with b as a
difference is). A side's `scorers: [...]` with `reduce: max|min|mean` stands for several
scorers reduced per seed and split (e.g. the best other scorer).

Verdicts (`verdict`): *holds* when the interval lies inside the claimed region, *does not
hold* when it lies wholly outside it (the interval excludes the claimed direction), else
*not distinguishable*. Intervals are two-sided at the claim's confidence, Bonferroni-
corrected over the claim's tests (every test at 1 - (1 - confidence) / k). A claim holds
when each of its tests (claim: true) holds and does not hold when one does not hold.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from harness import claim_fits
from harness.claim_curves import CURVE_STATISTICS, curve_values
from harness.stats import paired_difference

HOLDS, FAILS, UNCLEAR = "holds", "does not hold", "not distinguishable"
DIRECTIONS = ("greater", "less", "equivalent")
STATISTICS = ("difference", "slope", "std_ratio", "rank_correlation", "r2", *CURVE_STATISTICS)
TESTS = ("crossed", "seeds_t")
SIDE_KEYS = {"scorer", "metric", "splits", "where", "value", "groups", "scorers", "reduce", "scale"}
CLAIM_KEYS = {"title", "paper", "statement", "notes", "confidence", "tests", "results"}
TEST_KEYS = {"name", "statistic", "test", "metric", "splits", "where", "scorer", "a", "b",
             "direction", "margin", "claim", "x", "x_key", "scorers", "reference", "x_splits",
             "scale"}  # fmt: skip


@dataclass(frozen=True)
class TestResult:
    """One rule applied: the statistic, its interval (at `confidence`), the verdict."""

    name: str
    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    interval: str
    verdict: str
    seeds: int
    units: int
    mean_a: float
    mean_b: float
    in_claim: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(low: float, high: float, direction: str, margin: float) -> str:
    """The verdict of an interval [low, high] for the claim `direction` with `margin`:
    greater: the difference > margin; less: < -margin; equivalent: inside (-margin, margin)
    (margin > 0; for greater / less a negative margin means "not worse than |margin|")."""
    if direction == "greater":
        return HOLDS if low > margin else FAILS if high <= margin else UNCLEAR
    if direction == "less":
        return HOLDS if high < -margin else FAILS if low >= -margin else UNCLEAR
    if direction == "equivalent":
        if -margin < low and high < margin:
            return HOLDS
        return FAILS if low >= margin or high <= -margin else UNCLEAR
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its tests': holds if all hold, does not hold if one does not."""
    if not verdicts:
        return UNCLEAR
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else UNCLEAR


def check_claim(claim: Any, where: str = "claim") -> None:
    """The decision rule as declared, or a ValueError naming the key: checked before the
    sweep runs, so a rule cannot be chosen after the numbers are seen."""
    if not isinstance(claim, Mapping):
        raise ValueError(f"{where}: a claim preset needs a `claim:` mapping, got {claim!r}")
    if unknown := sorted(set(claim) - CLAIM_KEYS):
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(CLAIM_KEYS)}")
    results = claim.get("results")
    if results is not None and not (isinstance(results, str) and re.fullmatch(r"[\w.-]+", results)):
        raise ValueError(f"{where}.results must be a folder name, got {results!r}")
    for key in ("title", "paper"):
        if not isinstance(claim.get(key), str) or not claim[key].strip():
            raise ValueError(f"{where}.{key} must be a non-empty string")
    conf = claim.get("confidence", 0.95)
    if not isinstance(conf, float) or not 0 < conf < 1:
        raise ValueError(f"{where}.confidence must be a number in (0, 1), got {conf!r}")
    tests = claim.get("tests")
    if not isinstance(tests, list) or not tests:
        raise ValueError(f"{where}.tests must be a non-empty list of rules")
    if not any(t.get("claim", True) for t in tests if isinstance(t, Mapping)):
        raise ValueError(f"{where}.tests: at least one rule must be part of the claim")
    for i, t in enumerate(tests):
        _check_test(t, f"{where}.tests[{i}]")


def _check_test(t: Any, where: str) -> None:
    if not isinstance(t, Mapping):
        raise ValueError(f"{where} must be a mapping, got {t!r}")
    if unknown := sorted(set(t) - TEST_KEYS):
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(TEST_KEYS)}")
    for key, allowed in (("statistic", STATISTICS), ("test", TESTS), ("direction", DIRECTIONS)):
        if t.get(key) not in allowed:
            raise ValueError(f"{where}.{key} must be one of {list(allowed)}, got {t.get(key)!r}")
    if not isinstance(t.get("name"), str) or not t["name"]:
        raise ValueError(f"{where}.name must be a non-empty string")
    margin = t.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise ValueError(f"{where}.margin must be a number, got {margin!r}")
    if t["direction"] == "equivalent" and margin <= 0:
        raise ValueError(f"{where}.margin must be > 0 for direction equivalent")
    over_x = ("slope", *CURVE_STATISTICS)  # statistics of a side's values over x
    if t["statistic"] in (*over_x, "std_ratio") and t["test"] != "seeds_t":
        raise ValueError(f"{where}.test must be seeds_t for statistic {t['statistic']}")
    if t["statistic"] in over_x and "x_key" in t:
        if "x" in t or not (isinstance(t["x_key"], str) and re.fullmatch(r"[\w.]+", t["x_key"])):
            raise ValueError(
                f"{where}.x_key must be a dotted config key (and no x), got {t['x_key']!r}"
            )
    elif t["statistic"] in over_x:
        try:
            if re.compile(t.get("x") or "").groups < 1:
                raise re.error("no group")
        except re.error as exc:
            raise ValueError(f"{where}.x must be a regular expression with a group: {exc}") from exc
    elif "x_key" in t or "x" in t:
        raise ValueError(
            f"{where}: x / x_key belong to statistic slope only (and {CURVE_STATISTICS})"
        )
    if t["statistic"] == "std_ratio" and t.get("b"):
        raise ValueError(f"{where}.b: statistic std_ratio uses side a only")
    elif t["statistic"] == "difference" and "b" not in t:
        raise ValueError(f"{where}.b is required for statistic difference")
    claim_fits.check_fit_rule(t, where)
    for side in ("a", "b"):
        s = t.get(side, {})
        if not isinstance(s, Mapping) or (unknown := sorted(set(s) - SIDE_KEYS)):
            raise ValueError(f"{where}.{side} must be a mapping of {sorted(SIDE_KEYS)}, got {s!r}")
    if "value" in t.get("a", {}):
        raise ValueError(f"{where}.a cannot be a constant")
    for w in (t.get("where"), t.get("a", {}).get("where"), t.get("b", {}).get("where")):
        if w is not None and not isinstance(w, Mapping):
            raise ValueError(f"{where}: `where` must be a mapping of column -> value, got {w!r}")
    for side in ("a", "b"):
        g = t.get(side, {}).get("groups")
        if g is not None and not (isinstance(g, list) and g and all(isinstance(v, str) for v in g)):
            raise ValueError(f"{where}.{side}.groups must be a non-empty list of group values")
    if (
        not (t.get("metric") or t.get("a", {}).get("metric"))
        and t["statistic"] != "rank_correlation"
    ):
        raise ValueError(f"{where}.metric is required (on the rule or on side a)")


def side_rows(
    table: pd.DataFrame, t: Mapping[str, Any], side: str, **override: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows one side of a rule selects (its own entries over the rule's, then
    `override`'s) and the merged entries; a ValueError when none match."""
    s = {**{k: t[k] for k in ("scorer", "metric", "splits", "where") if k in t}, **t.get(side, {})}
    # a side's `where` adds to the rule's (the other entries replace the rule's)
    s["where"] = {**(t.get("where") or {}), **(t.get(side, {}).get("where") or {})}
    s.update(override)
    groups = s.get("groups")
    gv = table["group_value"].fillna("")
    # overall rows (and worst-group rows), or the named groups' rows
    sel = table[gv.isin(groups)] if groups else table[gv == ""]
    scorer = sel["scorer"].fillna("")
    names = s.get("scorers") or t.get("scorers")  # several (reduced, or ranked), or one
    sel = sel[(scorer.isin(names) if names else scorer == (s.get("scorer") or ""))
              & (sel["metric"] == s["metric"])]  # fmt: skip
    for col, value in (s.get("where") or {}).items():
        if col not in sel:
            raise ValueError(f"rule {t['name']!r}: where names no column {col!r} of the table")
        sel = sel[sel[col].astype(str) == str(value)]
    if patterns := s.get("splits"):
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        keep = sel.apply(lambda r: _split_matches(r["split"], r["split_role"], patterns), axis=1)
        sel = sel[keep.astype(bool)] if len(sel) else sel
    if sel.empty:
        raise ValueError(f"rule {t['name']!r}, side {side}: no rows match {dict(s)}")
    return sel, s


def side_matrix(table: pd.DataFrame, t: Mapping[str, Any], side: str) -> pd.DataFrame:
    """The (seeds × splits) values one side of a rule selects: one row per seed and split,
    or a ValueError saying what is missing or ambiguous."""
    sel, s = side_rows(table, t, side)
    groups = s.get("groups")
    column = f"key:{t['x_key']}" if "x_key" in t else "split"
    if column != "split":
        if column not in sel:
            raise ValueError(f"rule {t['name']!r}: the table has no column {column!r}")
        if sel["split"].nunique() != 1:
            raise ValueError(f"rule {t['name']!r}: x_key needs one split per side, got "
                             f"{sorted(sel['split'].unique())}")  # fmt: skip
    if groups:  # the mean over the selected groups, per seed and split (and x)
        if missing := sorted(set(groups) - set(sel["group_value"])):
            raise ValueError(f"rule {t['name']!r}, side {side}: no rows of groups {missing}")
        by = ["seed", "split", "run_id"] + ([column] if column != "split" else [])
        sel = sel.groupby(by, as_index=False)["value"].mean()
    if s.get("scorers"):  # e.g. the best of several scorers, per seed and split (and run)
        by = ["seed", "split", "run_id"] + ([column] if column != "split" else [])
        sel = claim_fits.reduce_scorers(sel, s["reduce"], by, s["scorers"], t["name"])
    dup = sel.duplicated(["seed", column], keep=False)
    if dup.any():
        first = sel[dup].iloc[0]
        raise ValueError(
            f"rule {t['name']!r}, side {side}: {int(dup.sum())} rows for one seed and split "
            f"(e.g. seed {first['seed']}, {first[column]}): narrow `where` (settings differ "
            f"in {_differing(sel[dup])})"
        )
    return sel.pivot(index="seed", columns=column, values="value").sort_index()


def _split_matches(split: str, role: str, patterns: list[str]) -> bool:
    return any(
        role == p[len("role:") :] if p.startswith("role:") else fnmatch.fnmatchcase(split, p)
        for p in patterns
    )


def _differing(rows: pd.DataFrame) -> list[str]:
    cols = ["method", "tta", "model", "selection_rule", "augment", "dataset", "run_id"]
    return [c for c in cols if c in rows and rows[c].nunique() > 1]


def _paired(a: pd.DataFrame, b: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sides aligned by seed and split; a one-split side is paired with every split."""
    seeds = a.index.intersection(b.index)
    if len(seeds) < 2:
        raise ValueError(f"rule {name!r}: needs at least 2 seeds on both sides, has {list(seeds)}")
    a, b = a.loc[seeds], b.loc[seeds]
    if a.shape[1] == 1 and b.shape[1] > 1:
        a = pd.DataFrame({c: a.iloc[:, 0] for c in b.columns})
    elif b.shape[1] == 1 and a.shape[1] > 1:
        b = pd.DataFrame({c: b.iloc[:, 0] for c in a.columns})
    elif set(a.columns) != set(b.columns):
        raise ValueError(
            f"rule {name!r}: the sides select different splits ({sorted(a.columns)} vs "
            f"{sorted(b.columns)}); select the same ones, or one split on one side"
        )
    b = b[a.columns]
    if a.isna().any().any() or b.isna().any().any():
        raise ValueError(f"rule {name!r}: a seed lacks a split on one side (an unfinished run?)")
    return a.to_numpy(float), b.to_numpy(float)


def seeds_t(per_seed: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean of per-seed values and its Student-t interval (seeds - 1 df)."""
    x = np.asarray(per_seed, dtype=float)
    mean = float(x.mean())
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * float(
        x.std(ddof=1) / np.sqrt(len(x))
    )
    return mean, mean - half, mean + half


def _slope_xs(t: Mapping[str, Any], columns: list[Any]) -> list[float]:
    """The x of each pivoted column: the config value itself (x_key) or read off the split."""
    if "x_key" in t:
        xs = [float(c) for c in columns]
    else:
        pattern, xs = re.compile(t["x"]), []
        for split in columns:
            m = pattern.search(split)
            if m is None:
                raise ValueError(f"rule {t['name']!r}: x {t['x']!r} does not match split {split!r}")
            xs.append(float(m.group(1)))
    if len(set(xs)) < 2:
        raise ValueError(f"rule {t['name']!r}: a slope needs at least two values of x")
    return xs


def std_ratio(values: np.ndarray, n: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(seeds × splits) accuracies and split sizes -> the run-to-run std over the binomial
    prediction sqrt(p(1-p)/n), pooled over splits as sqrt(mean of squared ratios), with the
    chi-square interval of a normal variance: sum_j (k-1) s_j² / σ_j² ~ χ²(J(k-1)) when the
    splits are independent and the binomial prediction is right."""
    k, splits = values.shape
    if k < 3:
        raise ValueError(f"std_ratio needs at least 3 seeds, has {k}")
    p = values.mean(axis=0)
    sigma2 = p * (1 - p) / n.mean(axis=0)
    if np.any(sigma2 <= 0):
        raise ValueError("std_ratio: a split's accuracy is 0 or 1 (no binomial noise)")
    q = values.var(axis=0, ddof=1) / sigma2  # squared ratio per split
    df = splits * (k - 1)
    ratio2 = float(q.mean())
    lo_q, hi_q = scipy_stats.chi2.ppf([0.5 + confidence / 2, 0.5 - confidence / 2], df)
    return (
        float(np.sqrt(ratio2)),
        float(np.sqrt(ratio2 * df / lo_q)),
        float(np.sqrt(ratio2 * df / hi_q)),
    )


def apply_rule(table: pd.DataFrame, t: Mapping[str, Any], confidence: float) -> TestResult:
    """One declared rule on the tidy table: statistic, interval, verdict."""
    if t["statistic"] == "rank_correlation":
        a, b = (claim_fits.scorer_matrix(side_rows(table, t, s)[0], t["scorers"], t["name"])
                for s in ("a", "b"))  # fmt: skip
        rhos = claim_fits.rank_correlations(a, b, t["name"])
        est, low, high = seeds_t(rhos, confidence)
        low, high = max(low, -1.0), min(high, 1.0)  # ρ's own range bounds its interval
        ref = float(t.get("reference", 0.0))
        v = verdict(low - ref, high - ref, t["direction"], float(t.get("margin", 0.0)))
        interval = f"Student t over per-seed Spearman ρ (compared with {ref:g})"
        return TestResult(t["name"], est, low, high, confidence, interval, v, len(rhos),
                          a.shape[1], float(a.to_numpy().mean()), float(b.to_numpy().mean()),
                          bool(t.get("claim", True)))  # fmt: skip
    a = _r2_side(table, t, "a") if t["statistic"] == "r2" else side_matrix(table, t, "a")
    if t["statistic"] == "slope":
        xs = _slope_xs(t, list(a.columns))
        mean_a, mean_b = float(a.to_numpy(float).mean()), float("nan")
        if t.get("b"):  # the slope of a - b (e.g. the majority-minority gap)
            b = side_matrix(table, t, "b")
            av, bv = _paired(a, b, t["name"])
            mean_b = float(bv.mean())
            a = pd.DataFrame(av - bv, columns=a.columns)
        a = a.dropna()
        slopes = [np.polyfit(xs, row, 1)[0] for row in a.to_numpy(float)]
        est, low, high = seeds_t(np.array(slopes), confidence)
        interval, units = "Student t over per-seed OLS slopes", a.shape[1]
        seeds = len(a)
    elif t["statistic"] in CURVE_STATISTICS:
        est, low, high, seeds, units, mean_a, mean_b = _curve_rule(table, t, a, confidence)
        interval = f"Student t over per-seed {t['statistic']} differences"
    elif t["statistic"] == "std_ratio":
        n = side_matrix(table.assign(value=table["n"]), t, "a")
        est, low, high = std_ratio(a.to_numpy(float), n.to_numpy(float), confidence)
        seeds, units = a.shape
        mean_a, mean_b = float(a.to_numpy(float).mean()), float("nan")
        interval = "chi-square interval of the seeds' variance (k - 1 df per split)"
        v = verdict(low - 1.0, high - 1.0, t["direction"], float(t.get("margin", 0.0)))
        return TestResult(t["name"], est, low, high, confidence, interval, v, int(seeds),
                          int(units), mean_a, mean_b, bool(t.get("claim", True)))  # fmt: skip
    else:
        side_b = t["b"]
        if "value" in side_b:
            b = a * 0 + float(side_b["value"])
        else:
            b = _r2_side(table, t, "b") if t["statistic"] == "r2" else side_matrix(table, t, "b")
        av, bv = _paired(a, b, t["name"])
        seeds, units = av.shape
        mean_a, mean_b = float(av.mean()), float(bv.mean())
        if t["test"] == "crossed" and units >= 2:
            r = paired_difference(av, bv, confidence=confidence)
            est, low, high = r.difference, r.ci_low, r.ci_high
            interval = f"{r.interval} (units: splits)"
        else:  # one split (or asked for): the per-seed mean differences
            est, low, high = seeds_t((av - bv).mean(axis=1), confidence)
            interval = "Student t over per-seed mean differences"
    v = verdict(low, high, t["direction"], float(t.get("margin", 0.0)))
    return TestResult(t["name"], float(est), float(low), float(high), confidence, interval, v,
                      int(seeds), int(units), mean_a, mean_b, bool(t.get("claim", True)))  # fmt: skip


def _r2_side(table: pd.DataFrame, t: Mapping[str, Any], side: str) -> pd.DataFrame:
    """(seeds × splits) R² of the side's splits on the rule's x_splits (claim_fits.r2_matrix)."""
    y, s = side_rows(table, t, side)
    x, _ = side_rows(table, t, side, splits=t["x_splits"])
    scale = s.get("scale") or t.get("scale") or "probit"
    return claim_fits.r2_matrix(y, x, scale, t["name"])


def _curve_rule(
    table: pd.DataFrame, t: Mapping[str, Any], a: pd.DataFrame, confidence: float
) -> tuple[float, float, float, int, int, float, float]:
    """A curve statistic (harness/claim_curves.py) per seed on each side, a - b per seed
    (b: another side's curve, a constant `value`, or 0), and its Student-t interval."""
    per_a = curve_values(a, _slope_xs(t, list(a.columns)), t["statistic"])
    side_b = t.get("b") or {"value": 0.0}
    if "value" in side_b:
        per_b = per_a * 0 + float(side_b["value"])
    else:
        b = side_matrix(table, t, "b")
        per_b = curve_values(b, _slope_xs(t, list(b.columns)), t["statistic"])
    seeds = per_a.index.intersection(per_b.index)
    if len(seeds) < 2:
        raise ValueError(f"rule {t['name']!r}: needs at least 2 seeds on both sides, has "
                         f"{list(seeds)}")  # fmt: skip
    diff = per_a[seeds].to_numpy(float) - per_b[seeds].to_numpy(float)
    est, low, high = seeds_t(diff, confidence)
    mean_a, mean_b = float(per_a[seeds].mean()), float(per_b[seeds].mean())
    return est, low, high, len(seeds), a.shape[1], mean_a, mean_b


def evaluate_claim(table: pd.DataFrame, claim: Mapping[str, Any]) -> dict[str, Any]:
    """Every rule of a claim (Bonferroni over them) and the claim's verdict. A rule that
    cannot be applied (no rows, too few seeds) gets verdict `error` with the reason."""
    tests = claim["tests"]
    conf = 1 - (1 - float(claim.get("confidence", 0.95))) / len(tests)
    results, errors = [], {}
    for t in tests:
        try:
            results.append(apply_rule(table, t, conf).as_dict())
        except ValueError as exc:
            errors[t["name"]] = str(exc)
    in_claim = [r["verdict"] for r in results if r["in_claim"]]
    overall = (
        combine(in_claim)
        if not any(t.get("claim", True) and t["name"] in errors for t in tests)
        else "error"
    )
    return {"verdict": overall, "tests": results, "errors": errors, "confidence": conf}
