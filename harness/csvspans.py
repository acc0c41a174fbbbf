"""table.csv written again from the previous file's bytes where its stages are unchanged.

After one new run the tidy table differs from the last one by a stage or two, yet writing
table.csv formats all 500,000 rows again (arrow's CSV writer: ~0.2 CPU s at 10,000 runs, in
the background thread of harness/tablefiles.py, beside the leaderboard's own work on a
2-core machine). Arrow formats each row from its values and the column types alone, so the
file is the header then the rows of slice after slice, each written on its own (tested
against one `write_csv` of the whole). Here the file is cut into slices of whole stages
(~8,192 rows); store/table.csv.spans.json records each slice's byte span and its stages
(key, DONE identity, rows). The next write copies a slice's bytes from the previous
table.csv when the same stages, with the same identities and rows, come in a row again
under the same column types, and formats only the rest (the new stages and the slices they
fall in). The spans are trusted only for the file they describe: its size, mtime and
inode, and the store generation TABLES.json says it holds; anything else (no spans, a
file written by pandas, a kill between the file's rename and the spans') formats it whole.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from harness.store import _atomic_path, atomic_write_text

SPANS = "table.csv.spans.json"  # in store/, beside TABLES.json
SLICE_ROWS = 8192
Stage = tuple[str, str, int]  # (stage key, its DONE identity as text, rows)


def write(path: Path, table: pa.Table, stages: list[Stage], spans: Path, index: str,
          previous: str | None) -> None:  # fmt: skip
    """table.csv at `path` from `table` (whose rows are `stages`' in order), reusing the
    previous file's bytes where `spans` describes it and it holds generation `previous`;
    then the new spans, naming generation `index`."""
    if sum(rows for _, _, rows in stages) != table.num_rows:
        spans.unlink(missing_ok=True)  # rows that are not the stages': no spans
        with _atomic_path(path) as tmp:
            pa_csv.write_csv(table, tmp)
        return
    schema = table.schema.remove_metadata().to_string()
    old = _load(spans, path, schema, previous)
    spans.unlink(missing_ok=True)  # stale from here until the new file and spans are in
    slices: list[list] = []
    with _atomic_path(path) as tmp:
        source = open(path, "rb") if old else None  # noqa: SIM115 (closed below)
        try:
            with open(tmp, "wb") as out:
                out.write(_csv(table.slice(0, 0), header=True))
                _body(out, source, table, stages, old or {}, slices)
        finally:
            if source is not None:
                source.close()
    st = os.stat(path)
    record = {"schema": schema, "index": index, "file": [st.st_size, st.st_mtime_ns, st.st_ino],
              "slices": slices}  # fmt: skip
    atomic_write_text(spans, json.dumps(record))


def _body(out, source, table: pa.Table, stages: list[Stage], old: dict, slices: list) -> None:
    """The rows, slice after slice: copied where an old slice's stages come again, else
    formatted (a run of stages up to SLICE_ROWS rows, ending where an old slice starts)."""
    starts: dict[tuple, list] = {tuple(s[2][0]): s for s in old.get("slices", [])}
    i, row = 0, 0
    while i < len(stages):
        reused = _reusable(stages, i, starts)
        if reused is not None:
            offset, length, held = reused
            at = out.tell()
            _copy(source, out, offset, length)
            slices.append([at, length, held])
            i += len(held)
            row += sum(s[2] for s in held)
            continue
        j, n = i, 0
        while (
            j < len(stages) and n < SLICE_ROWS and (j == i or _reusable(stages, j, starts) is None)
        ):
            n += stages[j][2]
            j += 1
        data = _csv(table.slice(row, n), header=False)
        slices.append([out.tell(), len(data), [list(s) for s in stages[i:j]]])
        out.write(data)
        i, row = j, row + n


def _reusable(stages: list[Stage], i: int, starts: dict[tuple, list]) -> list | None:
    found = starts.get(tuple(stages[i]))
    if found is None:
        return None
    held = found[2]
    if [tuple(s) for s in held] != stages[i : i + len(held)]:
        return None
    return found


def _copy(source, out, offset: int, length: int) -> None:
    """`length` bytes of the previous file from `offset` (in the kernel where it can)."""
    out.flush()
    done = 0
    try:
        while done < length:
            step = os.copy_file_range(source.fileno(), out.fileno(), length - done,
                                      offset + done)  # fmt: skip
            if step <= 0:
                break
            done += step
    except (AttributeError, OSError):
        pass
    out.seek(0, os.SEEK_END)
    if done < length:  # no copy_file_range here: through this process
        source.seek(offset + done)
        out.write(source.read(length - done))


def _csv(table: pa.Table, header: bool) -> bytes:
    buf = io.BytesIO()
    pa_csv.write_csv(table, buf, write_options=pa_csv.WriteOptions(include_header=header))
    return buf.getvalue()


def _load(spans: Path, path: Path, schema: str, previous: str | None) -> dict | None:
    """The spans when they describe the file at `path` as it is (stats, generation) and
    its column types are `schema`'s; else None."""
    if previous is None:
        return None
    try:
        old = json.loads(spans.read_text())
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("schema") != schema or old.get("index") != previous:
        return None
    if old.get("file") != [st.st_size, st.st_mtime_ns, st.st_ino]:
        return None
    return old
