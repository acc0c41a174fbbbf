"""OpenOOD's image lists (benchmark_imglist/<benchmark>/{train,val,test}_<set>.txt, shipped
in OpenOOD's data archive, not in its git repository): one `<path relative to the images
root> <label>` per line. ImageFolders reads an ID split from one (layout `openood_list`) and
OODFolder an OOD set; with list splits the benchmark's classes come from the lists
themselves: label k is named by the one folder its images sit in (ImageNet-200's WordNet
ids), never assumed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd


def read_list(image_list: Path, root: Path) -> pd.DataFrame:
    """Rows (path, label, class_folder) in the list's order; a bad line is named."""
    rows = []
    for k, line in enumerate(Path(image_list).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) > 1 and not parts[-1].lstrip("-").isdigit():
            raise ValueError(f"{image_list}, line {k}: expected '<path> <label>', got {line!r}")
        rel = " ".join(parts[:-1]) if len(parts) > 1 else parts[0]
        label = int(parts[-1]) if len(parts) > 1 else -1
        rows.append(
            {"path": str(root / rel), "label": label, "class_folder": Path(rel).parent.name}
        )
    frame = pd.DataFrame(rows, columns=["path", "label", "class_folder"])
    return frame.astype({"label": np.int64})


def classes_from_lists(frames: dict[str, pd.DataFrame]) -> list[str]:
    """Class names in label order from the labelled lists: labels 0..K-1, each named by the
    one folder its images are in (else by its number)."""
    rows = pd.concat(list(frames.values()), ignore_index=True)
    rows = rows[rows["label"] >= 0]
    labels = sorted(rows["label"].unique().tolist())
    if labels != list(range(len(labels))):
        missing = sorted(set(range(max(labels, default=-1) + 1)) - set(labels))
        raise ValueError(
            f"OpenOOD lists {sorted(frames)}: labels must be 0..K-1; missing {missing[:5]}"
        )
    folders = rows.groupby("label")["class_folder"].unique()
    names = [str(f[0]) if len(f) == 1 and f[0] else str(k) for k, f in folders.items()]
    return names if len(set(names)) == len(names) else [str(k) for k in labels]


def list_problems(split: str, image_list: Path, root: Path, how: str) -> list[str]:
    """verify's findings for one list: missing list (where OpenOOD publishes it), bad line,
    missing images."""
    if not image_list.is_file():
        return [f"split {split!r}: OpenOOD image list {image_list} does not exist ({how})"]
    try:
        paths = read_list(image_list, root)["path"]
    except ValueError as exc:
        return [str(exc)]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        return [
            f"split {split!r}: {len(missing)} images of {image_list} are missing below {root}, "
            f"e.g. {missing[0]} ({how})"
        ]
    return [] if len(paths) else [f"split {split!r}: {image_list} lists no images"]


def list_digest(image_list: Path, root: Path) -> str:
    """The list's bytes (which images, labels, order) and each listed file's size."""
    if not image_list.is_file():
        return "missing"
    sizes = [Path(p).stat().st_size if Path(p).is_file() else -1 for p in read_list(image_list, root)["path"]]  # fmt: skip
    digest = hashlib.sha256(image_list.read_bytes())
    digest.update(np.array(sizes, dtype=np.int64).tobytes())
    return digest.hexdigest()
