"""The leaderboard's derived frames per dataset, cached (issue 23, "The store"): summary,
selection, comparisons, scorer comparisons, corruption tables, effective robustness,
estimator ranking, held-out domains and the headline are each computed per dataset (every
family, search, line fit and group lies within one dataset; tests/test_partcache.py proves
the whole-table result is the pieces put together), so after a new run only the datasets
whose store stages changed are computed again, from their own rows; the others' pieces are
read from leaderboard/.parts/<key>/ (the key of harness/report/increment.py's page_keys:
the dataset's stages, the options, the code). The pieces are put together in the order
and with the dtypes the whole-table computation gives; where they cannot be (dtypes that
differ between pieces), that frame is computed from the whole table. Not cached: what
spans datasets (aggregates=true's "all" rows, failures, the index page). A changed
dataset's summary is grown from its previous piece when its stages only gained some
(harness/report/summarygrow.py); the files are harness/report/partfiles.py's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness.oracle import REPORT
from harness.report import summarygrow
from harness.report.aggregate import ROW_KEY
from harness.report.domains import AVERAGE, LODO
from harness.report.increment import code_key
from harness.report.partfiles import (  # noqa: F401  (the files' names, as before)
    LATEST,
    META,
    PARTS_DIR,
    Pieces,
    headline_frames,
    headline_of,
    latest,
    load,
    prune,
    save,
)

# columns of the table that no derived frame reads (left out of a dataset's rows)
PROVENANCE = ("n", "selected_epoch", "forward_key", "posthoc_key", "results_version", "git_sha",
              "git_dirty", "lock_hash", "versions", "created_at")  # fmt: skip
STAGE, OFFSET = "_stage", "_offset"  # where a summary row's group first appears (see below)


class Unjoinable(Exception):
    """Pieces that cannot be put together as the whole-table computation would give them."""


def _by_criterion(frame: pd.DataFrame) -> np.ndarray:
    """select_settings sorts its searches by criterion (then setting_id) across datasets;
    ties keep the searches' group order, dataset first: a stable sort of the joined pieces
    gives the same rows in the same order."""
    order = frame.reset_index(drop=True).sort_values(
        ["criterion", "setting_id"], ascending=[False, True]
    )
    return order.index.to_numpy()


def _by_block(frame: pd.DataFrame) -> np.ndarray:
    """domain_generalisation concatenates blocks (plain, oracle, leave-one-domain-out; each
    per domain then averages), each dataset-major within."""
    rank = {"accuracy": 0, REPORT: 2, LODO: 4}
    block = frame["metric"].map(rank).fillna(6).to_numpy(dtype=float)
    block += (frame["held_out"] == AVERAGE).to_numpy(dtype=float)
    return np.argsort(block, kind="stable")


# frames whose whole-table order is not dataset-major: how the joined pieces are reordered
ORDERS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "selection": _by_criterion,
    "domain_generalisation": _by_block,
}


def join(
    pieces: list[pd.DataFrame], order: Callable[[pd.DataFrame], np.ndarray] | None = None
) -> pd.DataFrame:
    """The pieces of datasets in sorted order as one frame: empty pieces left out (their
    dtypes are placeholders); a column whose dtype differs between pieces is Unjoinable."""
    full = [p for p in pieces if len(p)]
    if not pieces:
        raise Unjoinable("no pieces")
    if not full:
        if pieces and all(list(p.columns) == list(pieces[0].columns) for p in pieces):
            return pieces[0].reset_index(drop=True)
        raise Unjoinable("empty pieces with different columns")
    for column in {c for p in full for c in p.columns}:
        if len({str(p[column].dtype) for p in full if column in p}) > 1:
            raise Unjoinable(f"column {column} has different dtypes")
    out = full[0].reset_index(drop=True) if len(full) == 1 else pd.concat(full, ignore_index=True)
    if order is not None and len(full) > 1:
        out = out.take(order(out)).reset_index(drop=True)
    return out


def stage_starts(table: pd.DataFrame) -> pd.Series:
    """{stage ("run_id/eval_id"): its first row} of a table whose stages are contiguous (the
    store's order); raises Unjoinable where a stage comes back later (another order)."""
    if table.empty:
        return pd.Series([], dtype="int64")
    run, ev = pa.array(table["run_id"]), pa.array(table["eval_id"])
    change = pc.or_(pc.not_equal(run[1:], run[:-1]), pc.not_equal(ev[1:], ev[:-1])).to_numpy(
        zero_copy_only=False
    )
    starts = np.r_[0, np.flatnonzero(change) + 1]
    take = pa.array(starts)
    keys = [f"{r}/{e}" for r, e in zip(run.take(take).to_pylist(), ev.take(take).to_pylist(),
                                       strict=True)]  # fmt: skip
    out = pd.Series(starts, index=keys)
    if not out.index.is_unique:
        raise Unjoinable("a stage's rows are not contiguous")
    return out


def first_rows(rows: pd.DataFrame) -> np.ndarray:
    """Per group of `aggregate` (first appearance order: groupby sort=False), the position
    in `rows` of the group's first row: where the whole table's summary puts it. Grouped by
    setting_id and eval_id for all of SETTING_COLUMNS (the setting names its dataset, model,
    method...): were it coarser, the count of groups would differ (with_stages refuses)."""
    if rows.empty:
        return np.zeros(0, dtype=np.int64)
    groups = rows.groupby(["setting_id", "eval_id", *ROW_KEY], dropna=False, sort=False).ngroup()
    _, first = np.unique(groups.to_numpy(), return_index=True)
    return first


def with_stages(agg: pd.DataFrame, positions: np.ndarray, starts: pd.Series) -> pd.DataFrame:
    """A summary piece with each row's (stage, offset in it) of its first row: positions
    that stay true when other datasets' stages come or go."""
    if len(positions) != len(agg):
        raise Unjoinable("summary rows and groups differ")
    at = np.searchsorted(starts.to_numpy(), positions, side="right") - 1
    return agg.assign(
        **{STAGE: starts.index.to_numpy()[at], OFFSET: positions - starts.to_numpy()[at]}
    )


def join_summary(pieces: list[pd.DataFrame], starts: pd.Series) -> pd.DataFrame:
    """The summary pieces (with their stage columns) in the whole table's order: each
    group where its first row is in the table now."""
    out = join(pieces)
    if not len(out):
        return out.drop(columns=[STAGE, OFFSET], errors="ignore")
    return in_order(out, starts).drop(columns=[STAGE, OFFSET])


def in_order(out: pd.DataFrame, starts: pd.Series) -> pd.DataFrame:
    """Summary rows (with their stage columns) by where their group's first row is now."""
    at = starts.index.get_indexer(out[STAGE])
    if (at < 0).any():
        raise Unjoinable("a summary row's stage is not in the table")
    position = starts.to_numpy()[at] + out[OFFSET].to_numpy()
    return out.take(np.argsort(position, kind="stable")).reset_index(drop=True)


# -- the frames: computed per changed dataset, read for the others, put together ----------


@dataclass
class Options:
    """What the derived frames depend on besides the rows (write_leaderboard's options)."""

    baseline: str
    scorer_baseline: str | None
    multiple_comparisons: str
    scorer_multiple_comparisons: str
    model_selection: str | None
    min_effect: float | None
    corruption_reference: str | None
    robustness: dict[str, Any] | None
    primary_of: Callable[[str], str]
    headline_split: dict[str, str] | None


def derived(
    table: pd.DataFrame, agg: pd.DataFrame, root: Path, o: Options
) -> dict[str, pd.DataFrame | None]:
    """The frames of write_leaderboard from rows (a whole table or one dataset's) and their
    summary: selection, comparisons, corruptions.<name>, effective robustness, estimators,
    held-out domains."""
    from harness.report.compare import paired_comparisons, scorer_comparisons
    from harness.report.corruption import corruption_tables
    from harness.report.domains import domain_generalisation
    from harness.report.estimators import estimator_ranking
    from harness.report.robustness import effective_robustness
    from harness.selection import select_settings

    selected = select_settings(table, o.model_selection, root) if o.model_selection else None
    # after a hyperparameter search, the chosen setting of each method is what is compared
    chosen = table if selected is None else table[table["setting_id"].isin(selected["setting_id"])]
    known: dict[tuple[str, str], bool] = {}  # which stages kept scores: checked once for both
    out: dict[str, pd.DataFrame | None] = {
        "selection": selected,
        "comparisons": paired_comparisons(
            chosen, root, o.baseline, o.multiple_comparisons, o.min_effect, known
        ),
        "scorer_comparisons": (
            scorer_comparisons(table, root, o.scorer_baseline, o.scorer_multiple_comparisons, known)
            if o.scorer_baseline
            else None
        ),
    }
    for name, frame in corruption_tables(table, o.corruption_reference).items():
        out[f"corruptions.{name}"] = frame
    out["effective_robustness"] = (
        effective_robustness(agg, **o.robustness) if o.robustness else None
    )
    out["estimators"] = estimator_ranking(agg)
    out["domain_generalisation"] = domain_generalisation(table, root)
    return out


class PartCache:
    """One write_leaderboard's derived frames: `summary()` first (the plots need it), then
    `frames()`, then `save()`. keys: page_keys of the options the frames depend on (build.py;
    empty: nothing cached or saved)."""

    def __init__(self, root: Path, table: pd.DataFrame, keys: dict[str, str], rebuild: bool,
                 lines: dict[str, list[str]] | None = None, code: str | None = None):  # fmt: skip
        """lines: each dataset's stage lines (increment.stage_lines): a changed dataset's
        summary is then grown from its previous piece where it can be (summarygrow.py);
        code: increment.code_key(), when at hand."""
        self.root, self.table, self.keys, self.lines = root, table, keys, lines or {}
        self.board = root / "leaderboard"
        self.datasets = sorted(table["dataset"].unique()) if not table.empty else []
        self.held: dict[str, Pieces] = {}
        if not rebuild:
            for d in self.datasets:
                found = load(self.board, keys[d]) if d in keys else None
                if found is not None:
                    self.held[d] = found
        changed = [d for d in self.datasets if d not in self.held]
        self.pieces: dict[str, dict[str, pd.DataFrame]] = {d: {} for d in changed}
        self.extra: dict[str, dict[str, Any]] = {d: {} for d in changed}
        self._rows: dict[str, pd.DataFrame] = {}
        self._starts: pd.Series | None = None
        self.agg_of: dict[str, pd.DataFrame] = {}
        self.whole = not self.held  # nothing to reuse: the whole table, as before
        self.code = (code or code_key()) if self.lines else ""
        was = latest(self.board) if self.held and self.lines else {}
        self.previous = {d: load(self.board, was[d], "summary") for d in changed if d in was}

    def rows(self, dataset: str) -> pd.DataFrame:
        """A changed dataset's rows, selected once (a take per column of the arrow table)."""
        if dataset not in self._rows:
            mask = (self.table["dataset"] == dataset).to_numpy(dtype=bool)
            # without the provenance columns no derived frame reads (a third of the take)
            keep = [c for c in self.table.columns if c not in PROVENANCE]
            self._rows[dataset] = self.table[keep].take(np.flatnonzero(mask))
        return self._rows[dataset]

    def _staged(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Rows' summary, each group with the stage and offset of its first row."""
        from harness.report.aggregate import aggregate_firsts

        agg, firsts = aggregate_firsts(rows, self.root)  # first_rows(rows), when it knows them
        positions = rows.index.to_numpy()[first_rows(rows) if firsts is None else firsts]
        return with_stages(agg, positions, self.starts())

    def starts(self) -> pd.Series:
        if self._starts is None:
            self._starts = stage_starts(self.table)
        return self._starts

    def summary(self) -> pd.DataFrame:
        from harness.report.aggregate import aggregate, aggregate_firsts

        if self.whole:
            agg, firsts = aggregate_firsts(self.table, self.root)
            if self.keys:  # kept per dataset with where each group first appears
                try:
                    firsts = first_rows(self.table) if firsts is None else firsts
                    staged = with_stages(agg, firsts, self.starts())
                except Unjoinable:
                    self.keys = {}  # another row order: nothing is cached
                else:
                    for d, piece in self._split(staged).items():
                        self.pieces[d]["summary"] = piece
            self.agg = agg
            return agg
        pieces = []
        for d in self.datasets:
            if d in self.held:
                piece = self.held[d][0]["summary"]
            else:
                rows = self.rows(d)
                try:  # from the previous piece, or the dataset's rows aggregated whole
                    grown = summarygrow.grown(self.previous.get(d), self.lines.get(d), self.code,
                                              rows, self._staged)  # fmt: skip
                    piece = self._staged(rows) if grown is None else in_order(grown, self.starts())
                except Unjoinable:  # another row order: the whole table, nothing cached
                    self.keys, self.whole, self.held = {}, True, {}
                    self.pieces = {d: {} for d in self.datasets}
                    return self.summary()
                self.pieces[d]["summary"] = piece
                self.agg_of[d] = piece.drop(columns=[STAGE, OFFSET])
            pieces.append(piece)
        try:
            self.agg = join_summary(pieces, self.starts())
        except Unjoinable:
            self.agg = aggregate(self.table, self.root)
        return self.agg

    def _split(self, frame: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
        """A whole-table frame's rows per dataset (non-empty ones; an empty frame's shape
        for every dataset when it has no rows)."""
        if frame is None or "dataset" not in frame or not len(frame):
            return {d: frame for d in self.datasets} if frame is not None else {}
        # codes, not an object array compared per dataset (0.6 s for 5,000,000 rows)
        codes, names = pd.factorize(frame["dataset"])
        code_of = {d: j for j, d in enumerate(names)}
        return {
            d: frame.take(np.flatnonzero(codes == code_of[d])).reset_index(drop=True)
            for d in self.datasets
            if d in code_of
        }

    def frames(self, o: Options) -> tuple[dict[str, pd.DataFrame | None], dict[str, Any]]:
        """The derived frames (as `derived` names them) and the headline of each dataset."""
        from harness.report.headline import headline

        split = o.headline_split or {}
        if self.whole:
            out = derived(self.table, self.agg, self.root, o)
            heads = {
                d: headline(self.agg, d, o.primary_of(d), out["comparisons"], split.get(d))
                for d in self.datasets
            }
            if self.keys:
                for name, frame in out.items():
                    for d, piece in self._split(frame).items():
                        self.pieces[d][name] = piece
                for d in self.datasets:
                    frames, info = headline_frames(heads[d])
                    names = sorted(n for n in self.pieces[d] if n != "summary")
                    self.pieces[d].update(frames)
                    self.extra[d] = {**info, "names": names}
            return out, heads
        mine: dict[str, dict[str, pd.DataFrame]] = {}
        heads = {}
        for d in self.datasets:
            if d in self.held:
                frames, meta = self.held[d]
                mine[d] = {n: frames[n] for n in meta["names"] if n in frames}
                heads[d] = headline_of(frames, meta)
                continue
            computed = derived(self.rows(d), self.agg_of[d], self.root, o)
            mine[d] = {n: f for n, f in computed.items() if f is not None}
            heads[d] = headline(self.agg_of[d], d, o.primary_of(d), mine[d]["comparisons"],
                                split.get(d))  # fmt: skip
            frames, info = headline_frames(heads[d])
            self.pieces[d].update(mine[d] | frames)
            self.extra[d] = {**info, "names": sorted(mine[d])}
        wanted = {
            "selection": bool(o.model_selection),
            "comparisons": True,
            "scorer_comparisons": bool(o.scorer_baseline),
            "effective_robustness": bool(o.robustness),
            "estimators": True,
            "domain_generalisation": True,
        }
        out: dict[str, pd.DataFrame | None] = {}
        whole: dict[str, pd.DataFrame | None] = {}
        for name, want in wanted.items():
            pieces = [mine[d][name] for d in self.datasets if name in mine[d]]
            if not want:
                out[name] = None
                continue
            try:
                out[name] = join(pieces, ORDERS.get(name))
            except Unjoinable:  # computed from the whole table, as before
                whole = whole or derived(self.table, self.agg, self.root, o)
                out[name] = whole[name]
        out.update(self._corruptions(mine, o))
        return out, heads

    def _corruptions(self, mine: dict[str, dict[str, Any]], o: Options) -> dict[str, Any]:
        """corruption_tables' frames: none when no dataset has corruption splits."""
        having = [d for d in self.datasets if "corruptions.per_severity" in mine[d]]
        having = [d for d in having if len(mine[d]["corruptions.per_severity"])]
        out = {}
        for name in sorted({n for d in having for n in mine[d] if n.startswith("corruptions.")}):
            try:
                out[name] = join([mine[d][name] for d in having if name in mine[d]])
            except Unjoinable:
                from harness.report.corruption import corruption_tables

                whole = corruption_tables(self.table, o.corruption_reference)
                return {f"corruptions.{k}": v for k, v in whole.items()}
        # corruption_tables' own order of names
        return {n: out[n] for n in ("corruptions.per_severity", "corruptions.mean",
                                    "corruptions.mce") if n in out}  # fmt: skip

    def save(self) -> None:
        """The changed datasets' pieces written; keys no dataset has now removed."""
        if not self.keys:
            return
        for d, frames in self.pieces.items():
            if d in self.keys and "summary" in frames and "names" in self.extra.get(d, {}):
                extra = self.extra[d] | {"code": self.code}
                save(self.board, self.keys[d], frames, extra, self.lines.get(d))
        prune(self.board, {d: self.keys[d] for d in self.datasets if d in self.keys})
