"""python -m harness.merge SRC DST [dry_run=true]: merge the finished runs of one results root
into another, the safe way to combine results from two machines (`cp -r` overwrites a run
of the same run_id before the harness can see that its numbers differ).

Per finished run of SRC/runs/ (a DONE marker; unfinished ones are skipped and listed):
  copied    missing from DST: copied to a staging folder beside DST/runs/ and renamed into
            place, so a killed merge never leaves half a run where a reader looks
  present   in DST with the same numbers (every post-hoc stage both hold: identity, value, n);
            post-hoc stages only SRC holds are copied in the same way
  conflict  in DST with different numbers for the same run_id (e.g. other hardware): never
            overwritten; both paths and the first differing numbers are printed
  refused   DST's folder is unfinished or a symbolic link, or a stage cannot be read
Exits 1 when anything was a conflict or refused. Symbolic links under runs/ are never
followed (harness/rundir.py)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from harness.registry import CONF_DIR
from harness.rundir import LOCK, RunDir, merge_staging, named_run_dirs, runs_root, stage_rows_path
from harness.table import IDENTITY_COLUMNS, stage_problem

log = logging.getLogger("harness.merge")

COLUMNS = ["run_id", "action", "why"]


def differences(src: pd.DataFrame, dst: pd.DataFrame) -> pd.DataFrame:
    """The numbers two copies of one post-hoc stage disagree on: an identity (run_id,
    eval_id, split, group, scorer, metric) in one only, or another value or n (NaN equals
    NaN). Provenance columns (created_at, git_sha, host...) may differ and are ignored."""
    keys = [c for c in IDENTITY_COLUMNS if c in src and c in dst]
    cols = keys + [c for c in ("value", "n") if c in src and c in dst]
    a, b = (f[cols].assign(**{k: f[k].fillna("").astype(str) for k in keys}) for f in (src, dst))
    both = a.merge(b, on=keys, how="outer", suffixes=("_src", "_dst"), indicator=True)
    differ = both["_merge"] != "both"
    for c in cols[len(keys) :]:
        x, y = both[f"{c}_src"], both[f"{c}_dst"]
        differ |= ~((x == y) | (x.isna() & y.isna()))
    return both[differ].drop(columns="_merge")


def _stage_rows(rd: RunDir, eval_id: str) -> pd.DataFrame | str:
    """A finished stage's rows, or why they cannot be trusted."""
    stage = rd.posthoc(eval_id).path
    problem = stage_problem(stage)
    if problem is not None:
        return f"{stage}: {problem}"
    return pd.read_parquet(stage_rows_path(stage))


def _copy_into(source: Path, target: Path, staging: Path) -> bool:
    """Copy a folder to staging, then rename it onto `target` (atomic on one file system).
    False when `target` appeared meanwhile (another merge or run): nothing is overwritten."""
    tmp = staging / f"{target.name}.{secrets.token_hex(4)}"
    # symlinks=True copies a link as a link, never what it points at; a LOCK or a
    # temporary file of the source is not part of the run
    shutil.copytree(source, tmp, symlinks=True, ignore=shutil.ignore_patterns(LOCK, ".*.tmp"))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, target)  # fails on an existing non-empty folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def merge(src: str | Path, dst: str | Path, dry_run: bool = False) -> pd.DataFrame:
    """One row per run of SRC/runs/: run_id, action (copied | present | conflict | refused |
    skipped; "would copy" with dry_run), and why."""
    if not runs_root(src).is_dir():  # a typo must not report "nothing to merge"
        raise FileNotFoundError(f"src={src}: no run directories in {runs_root(src)}")
    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"src and dst are the same results root: {src}")
    staging = merge_staging(dst, f"{os.getpid()}.{secrets.token_hex(2)}")
    rows = []
    try:
        for rd in named_run_dirs(src):
            rows.append(
                {"run_id": rd.run_id, **_merge_run(rd, RunDir(dst, rd.run_id), staging, dry_run)}
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return pd.DataFrame(rows, columns=COLUMNS)


def _merge_run(rd: RunDir, target: RunDir, staging: Path, dry_run: bool) -> dict[str, str]:
    if not rd.is_complete():
        return {"action": "skipped", "why": "not finished in src (no DONE marker)"}
    src_stages = rd.posthoc_ids()
    for eid in src_stages:  # never spread a damaged stage
        rows = _stage_rows(rd, eid)
        if isinstance(rows, str):
            return {"action": "refused", "why": f"damaged in src: {rows}"}
    if target.path.is_symlink():
        return {"action": "refused", "why": f"{target.path} is a symbolic link"}
    if not target.path.exists():
        if dry_run:
            return {"action": "would copy", "why": ""}
        staging.mkdir(parents=True, exist_ok=True)
        if _copy_into(rd.path, target.path, staging):
            return {"action": "copied", "why": ""}
        # another process made it meanwhile: compare with what it made
    if not target.is_complete():
        return {
            "action": "refused",
            "why": f"{target.path} exists unfinished (running, failed or killed): finish "
            "or remove it, then merge again",
        }
    missing = []
    for eid in src_stages:
        if eid not in target.posthoc_ids():
            missing.append(eid)
            continue
        theirs = _stage_rows(target, eid)
        if isinstance(theirs, str):
            return {"action": "refused", "why": f"damaged in dst: {theirs}"}
        diff = differences(_stage_rows(rd, eid), theirs)
        if len(diff):
            first = diff.iloc[0]
            return {
                "action": "conflict",
                "why": f"{len(diff)} numbers of post-hoc {eid} differ between "
                f"{rd.path} and {target.path}; e.g. {first['split']}/{first['metric']}"
                f"{'/' + first['scorer'] if first['scorer'] else ''}: src "
                f"{first.get('value_src')}, dst {first.get('value_dst')}",
            }
    for eid in missing:  # stages only src holds: added, each renamed into place
        if not dry_run:
            staging.mkdir(parents=True, exist_ok=True)
            _copy_into(rd.posthoc(eid).path, target.posthoc(eid).path, staging)
    added = f"; {'would add' if dry_run else 'added'} post-hoc {', '.join(missing)}"
    return {"action": "present", "why": added if missing else ""}


@hydra.main(config_path=str(CONF_DIR), config_name="merge", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    # throw_on_missing: a missing src or dst must not become a folder named "???"
    c = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if not isinstance(c["dry_run"], bool):
        raise ValueError(f"dry_run must be true or false, got {c['dry_run']!r}")
    table = merge(c["src"], c["dst"], c["dry_run"])
    counts = table["action"].value_counts()
    print(
        f"merge {c['src']} -> {c['dst']}: "
        + (", ".join(f"{n} {a}" for a, n in counts.items()) or "no runs")
    )
    for r in table.itertuples():
        if r.action in ("conflict", "refused"):
            print(f"{r.action} {r.run_id}: {r.why}", file=sys.stderr)
        elif r.why:
            print(f"{r.action} {r.run_id}{r.why}")
    if counts.get("conflict", 0) or counts.get("refused", 0):
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m harness.merge SRC DST [key=value ...]`: the two bare paths become src= and
    dst= before Hydra reads argv."""
    args = list(sys.argv[1:] if argv is None else argv)
    bare = [a for a in args if "=" not in a and not a.startswith("-")]
    if len(bare) > 2:
        raise SystemExit(f"harness.merge takes SRC and DST, got {bare}")
    named = [f"{k}={v}" for k, v in zip(("src", "dst"), bare, strict=False)]
    saved = sys.argv
    sys.argv = [saved[0] if saved else "harness.merge", *named, *(a for a in args if a not in bare)]
    try:
        _app()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
