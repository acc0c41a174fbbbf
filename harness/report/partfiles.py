"""The derived-frame cache's files (harness/report/partcache.py): leaderboard/.parts/<key>/
<name>.arrow, one per frame of a dataset, and meta.json (each frame's dtypes, checked on
reading; the headline's text; the stage lines and code digest harness/report/summarygrow.py
grows a summary from), written to a temporary folder and renamed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from harness.report.headline import Headline
from harness.store import atomic_write_text

PARTS_DIR = ".parts"
META = "meta.json"
STAGES = "stages.json"  # the stage lines (summarygrow.py): read only to grow a summary
# {dataset: key} of the pieces the last save wrote: a changed dataset's summary is grown from
# its previous piece (summarygrow.py). Its own record, not the pages' (increment.py): the
# pieces' keys leave out what changes only the outputs, and pieces are kept without Markdown
LATEST = "latest.json"
Pieces = tuple[dict[str, pd.DataFrame], dict[str, Any]]  # a dataset's frames and meta


def _write_frame(frame: pd.DataFrame, path: Path) -> None:
    feather.write_feather(pa.Table.from_pandas(frame, preserve_index=False), str(path))


def save(board: Path, key: str, frames: dict[str, pd.DataFrame], extra: dict[str, Any],
         stages: list[str] | None = None) -> None:  # fmt: skip
    """One dataset's pieces under .parts/<key>/, written to a temporary folder and renamed
    (a reader sees all of them or none); each frame's dtypes kept in meta.json, checked on
    reading."""
    parts = board / PARTS_DIR
    tmp = parts / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtypes = {}
    for name, frame in frames.items():
        _write_frame(frame, tmp / f"{name}.arrow")
        dtypes[name] = [[str(c), str(t)] for c, t in frame.dtypes.items()]
    if stages is not None:  # 50,000 lines at 100,000 runs: not in meta.json, read each time
        (tmp / STAGES).write_text(json.dumps(stages))
    (tmp / META).write_text(json.dumps({"dtypes": dtypes, **extra}, sort_keys=True))
    final = parts / key
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def load(board: Path, key: str, only: str | None = None) -> Pieces | None:
    """A dataset's pieces (or only the piece `only`, with the stage lines in meta's
    "stages" when they were saved) and meta, or None when missing, unreadable or of other
    dtypes."""
    folder = board / PARTS_DIR / key
    try:
        meta = json.loads((folder / META).read_text())
        if only is not None and (folder / STAGES).is_file():
            meta["stages"] = json.loads((folder / STAGES).read_text())
        frames = {}
        for name, dtypes in meta.pop("dtypes").items():
            if only is not None and name != only:
                continue
            frame = feather.read_table(str(folder / f"{name}.arrow")).to_pandas()
            if [[str(c), str(t)] for c, t in frame.dtypes.items()] != dtypes:
                return None
            frames[name] = frame
    except (OSError, ValueError, KeyError, pa.ArrowException):
        return None
    return frames, meta


def prune(board: Path, keys: dict[str, str]) -> None:
    """keys ({dataset: key}) recorded as the latest pieces; folders of keys no dataset has
    now (and temporaries of dead writers) removed."""
    parts = board / PARTS_DIR
    if not parts.is_dir():
        return
    atomic_write_text(parts / LATEST, json.dumps(keys, indent=2, sort_keys=True) + "\n")
    for path in parts.iterdir():
        if path.name not in keys.values() and path.name != LATEST:
            shutil.rmtree(path, ignore_errors=True)


def latest(board: Path) -> dict[str, str]:
    """{dataset: key} of the pieces the last save wrote (prune's record); {} when none."""
    try:
        held = json.loads((board / PARTS_DIR / LATEST).read_text())
    except (OSError, ValueError):
        return {}
    return held if isinstance(held, dict) else {}


def headline_frames(h: Headline | None) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    if h is None:
        return {}, {"headline": None}
    info = {"split": h.split, "metric": h.metric, "caption": h.caption}
    return {"headline.table": h.table, "headline.titles": h.titles}, {"headline": info}


def headline_of(frames: dict[str, pd.DataFrame], meta: dict[str, Any]) -> Headline | None:
    info = meta["headline"]
    if info is None:
        return None
    return Headline(
        frames["headline.table"], frames["headline.titles"], info["split"], info["metric"],
        info["caption"],
    )  # fmt: skip
