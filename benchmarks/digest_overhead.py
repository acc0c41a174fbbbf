"""Cost of content digests in a data fingerprint (harness/digests.py): the first key of a
dataset reads every byte once; a later one (a skipped run) only stats each file and looks it
up in the digest cache.

    python benchmarks/digest_overhead.py [--files 5000] [--file-kb 20] [--arrays 2] [--array-mb 150]

Writes `files` small files (a MetaShift-like image folder) and `arrays` large ones (CIFAR-10-C
like .npy arrays) into a temporary folder with a fresh digest cache, then times:
cold (nothing cached: every byte hashed), warm (all cached: the skip overhead), the old
listing digest (name and size only) for comparison, and warm after one file changed.
Prints a JSON record; numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--file-kb", type=int, default=20)
    ap.add_argument("--arrays", type=int, default=2)
    ap.add_argument("--array-mb", type=int, default=150)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["SHIFTBENCH_DIGEST_CACHE"] = str(tmp / "digests.sqlite")
        from harness import digests as D
        from harness.data import listing_digest

        folder, arrays = tmp / "images", tmp / "arrays"
        old = 1_600_000_000_000_000_000  # settled mtimes: remembered by the cache
        rng = os.urandom
        for i in range(args.files):
            p = folder / f"c{i % 10}" / f"{i}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng(args.file_kb * 1024))
            os.utime(p, ns=(old, old))
        arrays.mkdir()
        names = []
        for i in range(args.arrays):
            p = arrays / f"a{i}.npy"
            with p.open("wb") as f:
                for _ in range(args.array_mb):
                    f.write(rng(1 << 20))
            os.utime(p, ns=(old, old))
            names.append(p.name)
        record = {
            "files": args.files,
            "file_kb": args.file_kb,
            "arrays": args.arrays,
            "array_mb": args.array_mb,
            "folder_cold_s": timed(lambda: D.tree_digest(folder)),
            "folder_warm_s": timed(lambda: D.tree_digest(folder)),
            "folder_listing_only_s": timed(lambda: listing_digest(folder)),
            "arrays_cold_s": timed(lambda: D.files_digest(arrays, names)),
            "arrays_warm_s": timed(lambda: D.files_digest(arrays, names)),
        }
        changed = folder / "c0" / "0.jpg"
        changed.write_bytes(rng(args.file_kb * 1024))
        os.utime(changed, ns=(old + 1, old + 1))
        record["folder_one_changed_s"] = timed(lambda: D.tree_digest(folder))
        record = {k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}
        record["warm_per_file_us"] = round(1e6 * record["folder_warm_s"] / args.files, 1)
        print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
