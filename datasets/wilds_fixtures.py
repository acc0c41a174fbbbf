"""Tiny WILDS datasets in each release's exact on-disk layout, for tests and smoke runs.

    write_fixture(root, "waterbirds")          # -> root/waterbirds_v1.0/...
    write_fixture(root, "iwildcam", unlabeled=True)

Each writer produces `<name>_v<version>/RELEASE_v<version>.txt`, the metadata CSVs with the
columns, split codes and value formats of the real release (iWildCam's datetimes with
fractional seconds, FMoW's UTC timestamps within 2002-2017, Camelyon17's unnamed index and
zero-padded patient ids, CelebA's -1/1 attributes), and 8x8 images at the relative paths wilds
reads. Every value of every grouped field occurs (wilds sizes its groups as max + 1), every
split the adapter exposes is non-empty, and an image's colour depends on its label (and, in
Waterbirds and CelebA, on the spurious attribute), so a model can learn something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from shiftbench_datasets.wilds import CELEBA_ATTRIBUTES, SPECS, folder_name, import_wilds

PIXELS = 8


def _image(path: Path, label: int, tint: int, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.array([40 + 150 * (label % 2), 60 + 40 * (label % 3), 60 + 120 * (tint % 2)])
    pixels = np.clip(base + rng.integers(-20, 20, (PIXELS, PIXELS, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _release(folder: Path, version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"RELEASE_v{version}.txt").write_text(f"v{version}\n")


def write_waterbirds(root: Path, rng: np.random.Generator, per_group: int = 2) -> dict[str, Any]:
    folder = root / folder_name("waterbirds", SPECS["waterbirds"].version)
    _release(folder, SPECS["waterbirds"].version)
    species = {0: "094.White_breasted_Nuthatch", 1: "001.Black_footed_Albatross"}
    places = {0: "/b/bamboo_forest/{:08d}.jpg", 1: "/o/ocean/{:08d}.jpg"}
    rows = []
    for split in (0, 1, 2):
        for y in (0, 1):
            for place in (0, 1):
                for _ in range(per_group + (split == 0)):
                    k = len(rows) + 1
                    name = species[y].split(".", 1)[1]
                    rel = f"{species[y]}/{name}_{k:04d}_{100 + k}.jpg"
                    _image(folder / rel, y, place, rng)
                    rows.append(
                        {
                            "img_id": k,
                            "img_filename": rel,
                            "y": y,
                            "split": split,
                            "place": place,
                            "place_filename": places[place].format(k),
                        }
                    )
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return {"folder": folder, "rows": len(rows)}


def write_celeba(root: Path, rng: np.random.Generator, per_group: int = 2) -> dict[str, Any]:
    folder = root / folder_name("celebA", SPECS["celebA"].version)
    _release(folder, SPECS["celebA"].version)
    attrs, parts = [], []
    for partition in (0, 1, 2):
        for blond in (-1, 1):
            for male in (-1, 1):
                for _ in range(per_group + (partition == 0)):
                    image_id = f"{len(attrs) + 1:06d}.jpg"
                    row = {"image_id": image_id}
                    row.update({a: int(rng.choice([-1, 1])) for a in CELEBA_ATTRIBUTES})
                    row.update({"Blond_Hair": blond, "Male": male})
                    attrs.append(row)
                    parts.append({"image_id": image_id, "partition": partition})
                    _image(folder / "img_align_celeba" / image_id, blond > 0, male > 0, rng)
    pd.DataFrame(attrs, columns=["image_id", *CELEBA_ATTRIBUTES]).to_csv(
        folder / "list_attr_celeba.csv", index=False
    )
    pd.DataFrame(parts).to_csv(folder / "list_eval_partition.csv", index=False)
    return {"folder": folder, "rows": len(attrs)}


def _camelyon_rows(folder: Path, rng: np.random.Generator, labeled: bool) -> pd.DataFrame:
    """Centers 0-4 with two slides each (slides 0..9); a patient per slide."""
    rows = []
    for center in range(5):
        for k in range(2):
            slide = 2 * center + k
            patient, node = f"{10 * center + k:03d}", k
            for tumor in (0, 1):
                for split in (0, 0, 1) if labeled else (0,):
                    x, y = 32 * len(rows), 64 * len(rows) + 96
                    rel = (
                        f"patches/patient_{patient}_node_{node}/"
                        f"patch_patient_{patient}_node_{node}_x_{x}_y_{y}.png"
                    )
                    _image(folder / rel, tumor, center, rng)
                    rows.append(
                        {
                            "patient": patient,
                            "node": node,
                            "x_coord": x,
                            "y_coord": y,
                            "tumor": tumor if labeled else -1,
                            "slide": slide,
                            "center": center,
                            "split": split,
                        }
                    )
    return pd.DataFrame(rows)


def write_camelyon17(root: Path, rng: np.random.Generator) -> dict[str, Any]:
    folder = root / folder_name("camelyon17", SPECS["camelyon17"].version)
    _release(folder, SPECS["camelyon17"].version)
    frame = _camelyon_rows(folder, rng, labeled=True)
    frame.to_csv(folder / "metadata.csv")  # the release's unnamed leading index column
    return {"folder": folder, "rows": len(frame)}


IWILDCAM_CATEGORIES = {0: (0, "empty"), 1: (73, "tayassu pecari"), 2: (24, "dasyprocta punctata")}


def write_iwildcam(root: Path, rng: np.random.Generator, unlabeled: bool) -> dict[str, Any]:
    """Locations 0,1 are ID (train, id_val, id_test), 2 is OOD val, 3 OOD test."""
    folder = root / folder_name("iwildcam", SPECS["iwildcam"].version)
    _release(folder, SPECS["iwildcam"].version)
    plan = {"train": ((0, 1), 2), "id_val": ((0, 1), 1), "id_test": ((0, 1), 1)}
    plan.update({"val": ((2,), 2), "test": ((3,), 2)})
    rows = []
    for split, (locations, per_class) in plan.items():
        for location in locations:
            for y, (category_id, _) in IWILDCAM_CATEGORIES.items():
                for _ in range(per_class):
                    n = len(rows)
                    uid = f"{n:08x}-21bc-11ea-a13a-137349068a90"
                    _image(folder / "train" / f"{uid}.jpg", y, location, rng)
                    rows.append(
                        {
                            "split": split,
                            "location_remapped": location,
                            "location": 100 + 7 * location,
                            "sequence_remapped": n // 2,
                            "sequence": f"seq{n // 2:06d}",
                            "datetime": f"2013-06-{1 + n % 28:02d} {n % 24:02d}:30:45.000",
                            "y": y,
                            "category_id": category_id,
                            "image_id": uid,
                            "filename": f"{uid}.jpg",
                        }
                    )
    pd.DataFrame(rows).to_csv(folder / "metadata.csv")
    pd.DataFrame(
        [{"y": y, "category_id": c, "name": n} for y, (c, n) in IWILDCAM_CATEGORIES.items()]
    ).to_csv(folder / "categories.csv", index=False)
    written: dict[str, Any] = {"folder": folder, "rows": len(rows)}
    if unlabeled:
        version = SPECS["iwildcam"].unlabeled_version
        ufolder = root / folder_name("iwildcam_unlabeled", version)
        _release(ufolder, version)
        urows = []
        for n in range(6):
            uid = f"u{n:07x}-9b41-11ea-b4f3-000d3a74c7de"
            _image(ufolder / "images" / f"{uid}.jpg", 0, n % 3, rng)
            urows.append(
                {
                    "uid": uid,
                    "location_remapped": n % 3,
                    "sequence_remapped": n,
                    "datetime": f"2014-02-{1 + n:02d} 06:10:0{n}.000",
                    "y": -1,
                }
            )
        pd.DataFrame(urows).to_csv(ufolder / "metadata.csv", index=False)
        written.update(unlabeled_folder=ufolder, unlabeled_rows=len(urows))
    return written


# alpha-3 -> region as in the release's country_code_mapping.csv; "ATA" is left out of the
# mapping on purpose (wilds then calls its region "Other")
FMOW_COUNTRIES = {
    "USA": ("United States of America", "US", 840, "Americas"),
    "FRA": ("France", "FR", 250, "Europe"),
    "KEN": ("Kenya", "KE", 404, "Africa"),
    "JPN": ("Japan", "JP", 392, "Asia"),
    "AUS": ("Australia", "AU", 36, "Oceania"),
}
FMOW_CODES = [*FMOW_COUNTRIES, "ATA"]


def write_fmow(root: Path, rng: np.random.Generator) -> dict[str, Any]:
    """Every year 2002-2017 and all six regions occur; the OOD splits follow WILDS'
    time_after_2016 scheme; 'seq' rows and OOD-year 'train' rows feed the unlabeled splits."""
    import_wilds()
    from wilds.datasets.fmow_dataset import categories

    folder = root / folder_name("fmow", SPECS["fmow"].version)
    _release(folder, SPECS["fmow"].version)
    plan = [("train", y) for y in range(2002, 2013) for _ in range(2)]
    plan += [("val", y) for y in (2004, 2006, 2008, 2009, 2011, 2012)]  # id_val
    plan += [("test", y) for y in (2003, 2005, 2007, 2009, 2010, 2012)]  # id_test
    plan += [("val", y) for y in (2013, 2013, 2014, 2014, 2015, 2015)]  # OOD val
    plan += [("test", y) for y in (2016, 2016, 2016, 2017, 2017, 2017)]  # OOD test
    plan += [("seq", 2006), ("seq", 2009), ("seq", 2011)]  # sequestered: train_unlabeled
    plan += [("train", 2014), ("train", 2016)]  # val_unlabeled, test_unlabeled
    rows = []
    for i, (split, year) in enumerate(plan):
        label = i % 5
        code = FMOW_CODES[i % len(FMOW_CODES)]
        _image(folder / "images" / f"rgb_img_{i}.png", label, i, rng)
        rows.append(
            {
                "split": split,
                "img_filename": f"{categories[label]}_{i}_0_rgb.jpg",
                "img_path": f"{split}/{categories[label]}/{categories[label]}_{i}/"
                f"{categories[label]}_{i}_0_rgb.jpg",
                "spatial_reference": 'GEOGCS["WGS 84",DATUM["WGS_1984"]]',
                "epsg": 4326,
                "category": categories[label],
                "visible": True,
                "img_width": PIXELS,
                "img_height": PIXELS,
                "country_code": code,
                "cloud_cover": 0,
                "timestamp": f"{year}-{1 + i % 12:02d}-{1 + i % 27:02d}T{i % 24:02d}:26:25Z",
                "lat": 10.0 + i,
                "lon": 20.0 - i,
            }
        )
    pd.DataFrame(rows).to_csv(folder / "rgb_metadata.csv", index=False)
    pd.DataFrame(
        [
            {
                "name": name,
                "alpha-2": a2,
                "alpha-3": a3,
                "country-code": num,
                "iso_3166-2": f"ISO 3166-2:{a2}",
                "region": region,
                "sub-region": "",
                "intermediate-region": "",
                "region-code": "",
                "sub-region-code": "",
                "intermediate-region-code": "",
            }
            for a3, (name, a2, num, region) in FMOW_COUNTRIES.items()
        ]
    ).to_csv(folder / "country_code_mapping.csv", index=False)
    return {"folder": folder, "rows": len(rows)}


def write_fixture(
    root: str | Path, name: str, unlabeled: bool = False, seed: int = 0
) -> dict[str, Any]:
    """Writes a tiny `name` release under root (the `data_root`); returns what it wrote."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    if name == "waterbirds":
        return write_waterbirds(root, rng)
    if name == "celebA":
        return write_celeba(root, rng)
    if name == "camelyon17":
        if unlabeled:
            raise ValueError(
                "camelyon17's unlabeled release cannot be a tiny fixture: wilds asserts its "
                "exact size (600,030 patches per OOD hospital)"
            )
        return write_camelyon17(root, rng)
    if name == "iwildcam":
        return write_iwildcam(root, rng, unlabeled)
    if name == "fmow":
        return write_fmow(root, rng)  # the unlabeled splits live in the same folder
    raise ValueError(f"no fixture writer for {name!r}; writers exist for {sorted(SPECS)}")
