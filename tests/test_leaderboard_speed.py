"""The fast leaderboard paths make the same files as the slow ones (issue 23, "The store"):
the tables written through the consolidated store, incrementally after a new run, equal byte
for byte those of a rebuild from every run directory, of a store whose index predates the
key.json facts (harness/keyfacts.py), and the domain / search tables equal those computed
from every key.json (no store)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from harness import rowstore
from harness.report import build
from harness.report.build import write_leaderboard
from harness.report.domains import domain_generalisation
from harness.report.increment import PAGES_FILE
from harness.report.pagecache import PAGE_DIR
from harness.report.partcache import PARTS_DIR
from harness.rundir import RunDir
from harness.selection import search_ids
from harness.store import atomic_write_parquet
from harness.table import collect, collect_cached

DOMAINS = ["0", "15", "30"]
TABLES = ("markdown", "html")


def _hash(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


def write_run(root: Path, number: int, dataset: str, method: str, lr: int, seed: int,
              held: list[str] | None = None) -> None:  # fmt: skip
    """A finished run in the real layout: key.json, DONE, one post-hoc stage with rows of
    plain metrics, a scorer's and (with held-out domains) per-domain accuracies."""
    import pandas as pd

    payload = {
        "dataset": {
            "name": dataset,
            **({"test_domains": held, "domains": DOMAINS} if held else {}),
        },
        "model": {"name": "resnet18"},
        "method": {"name": method, "lr": lr},
        "trainer": {"epochs": 2},
        "seed": seed,
    }
    setting = _hash(dataset, method, lr, held)
    run_id = _hash(setting, seed)
    rng = np.random.default_rng(number)
    records = []
    splits = [("val", "val"), ("id_test", "id_test"), ("shift", "shift_test")]
    for split, role in splits:
        for metric in ("accuracy", "ece", "worst_group_accuracy"):
            records.append((split, role, "", metric, "", "", rng.uniform(0.4, 0.9)))
        records.append((split, role, "msp", "auroc_error", "", "", rng.uniform(0.5, 0.9)))
        records.append((split, role, "energy", "auroc_error", "", "", rng.uniform(0.5, 0.9)))
        if role == "shift_test" and held:
            for d in held:
                records.append((split, role, "", "accuracy", "domain", d, rng.uniform(0.3, 0.8)))
    frame = pd.DataFrame(
        records,
        columns=["split", "split_role", "scorer", "metric", "group_key", "group_value", "value"],
    ).assign(
        run_id=run_id, setting_id=setting, dataset=dataset, model="resnet18", method=method,
        tta="", augment="", seed=seed, n=100, selection_rule="id_val_accuracy",
        selected_epoch=1, eval_id="e1", forward_key="f", posthoc_key="p", results_version=1,
        git_sha="", git_dirty=False, lock_hash="", versions="", created_at="",
    )  # fmt: skip
    rd = RunDir(root, run_id)
    stage = rd.posthoc("e1")
    stage.path.mkdir(parents=True)
    atomic_write_parquet(frame, stage.rows)
    stage.done.write_text(json.dumps({"rows": len(frame)}))
    rd.key_json.write_text(
        json.dumps({"run_id": run_id, "setting_id": setting, "payload": payload})
    )
    rd.done.write_text("{}")


def make_root(root: Path) -> int:
    """Two datasets: a plain one (3 methods x 2 learning rates x 2 seeds) and a
    leave-one-domain-out sweep with the pair runs of DomainBed's LODO validation."""
    n = 0
    for method in ("erm", "irm", "mixup"):
        for lr in (1, 2):
            for seed in (0, 1):
                write_run(root, n, "plain", method, lr, seed)
                n += 1
                for t in DOMAINS:
                    write_run(root, n, "rot", method, lr, seed, [t])
                    n += 1
                    for v in DOMAINS:
                        if v > t:
                            write_run(root, n, "rot", method, lr, seed, [t, v])
                            n += 1
    return n


def leaderboard_files(root: Path) -> dict[str, bytes]:
    found = {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted((root / "leaderboard").rglob("*"))
        if p.is_file()
        and p.name != PAGES_FILE  # the pages' keys: DONE mtimes of that root
        and PARTS_DIR not in p.parts  # the derived frames' cache: the same keys
        and PAGE_DIR not in p.parts  # the page's parts (harness/report/pagecache.py): too
    }
    found["table.csv"] = (root / "table.csv").read_bytes()
    return found


def rebuilt_copy(root: Path, full: Path, baseline: str = "erm", **options) -> dict[str, bytes]:
    """leaderboard_files of a copy of root's run directories at `full`, built with rebuild=true."""
    shutil.copytree(root / "runs", full / "runs")
    write_leaderboard(full, baseline, **options, rebuild=True)
    return leaderboard_files(full)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(incremental, rebuilt): the same runs, one root's leaderboard made through its store
    as runs came, the other's rebuilt from every run directory at once."""
    base = tmp_path_factory.mktemp("speed")
    inc, full = base / "inc", base / "full"
    n = make_root(inc)
    write_leaderboard(inc, "erm", outputs=TABLES)  # the store made from the run dirs
    write_run(inc, n, "plain", "irm", 3, 0)  # one new run, then an incremental rebuild
    write_run(inc, n + 1, "rot", "erm", 3, 0, ["15"])
    write_leaderboard(inc, "erm", outputs=TABLES)
    shutil.copytree(inc / "runs", full / "runs")
    write_leaderboard(full, "erm", outputs=TABLES, rebuild=True)
    return inc, full


def test_incremental_tables_equal_a_rebuild(roots: tuple[Path, Path]) -> None:
    inc, full = roots
    a, b = leaderboard_files(inc), leaderboard_files(full)
    assert "leaderboard/rot.md" in a and "leaderboard/domain_generalisation.csv" in a
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name
    # the domain tables are there, with the LODO validation rows: the facts were used
    assert b"lodo_report_accuracy" in a["leaderboard/domain_generalisation.csv"]


def test_store_facts_equal_the_key_json(roots: tuple[Path, Path], tmp_path: Path) -> None:
    """The index's facts against key.json read afresh: the same domain table and search ids
    (a root without a store reads every key.json)."""
    inc, _ = roots
    table = collect(inc)[0]
    bare = tmp_path / "bare"
    shutil.copytree(inc / "runs", bare / "runs")
    assert rowstore.load_generation(bare) is None
    with_store = domain_generalisation(table, inc)
    from_keys = domain_generalisation(table, bare)
    assert len(with_store) > 0
    assert with_store.equals(from_keys)
    assert search_ids(table, inc).equals(search_ids(table, bare))
    # a search: dataset options (held-out domains too) and method name, not lr or seed: plain
    # 3 methods, rot 3 methods x 6 held-out sets (3 single, 3 pairs)
    assert search_ids(table, bare).nunique() == 3 + 3 * 6


def test_an_index_without_facts_is_completed(roots: tuple[Path, Path], tmp_path: Path) -> None:
    """A store written before the facts columns: its next compaction reads the key.json
    facts once and the files stay the same."""
    inc, _ = roots
    old = tmp_path / "old"
    shutil.copytree(inc, old)
    gen = rowstore.load_generation(old)
    path = rowstore.store_dir(old) / gen.manifest["index"]
    index = feather.read_table(path)
    feather.write_feather(index.drop_columns(list(rowstore.FACT_COLUMNS)), path)
    assert all(f is None for f in rowstore.load_generation(old).facts.values())
    before = leaderboard_files(inc)
    for name in before:
        (old / name).unlink()
    write_leaderboard(old, "erm", outputs=TABLES)
    assert leaderboard_files(old) == before
    facts = rowstore.load_generation(old).facts
    assert facts and all(f is not None for f in facts.values())
    # nothing new: the store is left as it is
    assert collect_cached(old)[2] is False
    assert isinstance(index, pa.Table)


def test_markdown_table_is_tabulates(roots: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    """harness/report/mdtable.py against pandas' to_markdown (tabulate): random frames of
    text (wide and ambiguous characters too) and integers, and every page of the root."""
    import random

    import pandas as pd

    from harness.report import domains, estimators, export, headline, markdown, robustness
    from harness.report.mdtable import markdown_table

    rng = random.Random(0)
    pieces = ["a", "bb", "±", "—", "†", "▲", "0.123 ± 0.004", "x y", "漢字", "é", "1", "1e3"]
    for _ in range(200):
        rows = rng.randint(1, 6)
        frame = pd.DataFrame(
            {
                f"{rng.choice(['model', 'seeds', 'rank (id_test)', '漢'])}{k}": (
                    pd.Series([rng.randint(-5, 300) for _ in range(rows)], dtype="int64")
                    if rng.random() < 0.3
                    else ["".join(rng.choices(pieces, k=rng.randint(1, 3))) for _ in range(rows)]
                )
                for k in range(rng.randint(1, 5))
            }
        )
        assert markdown_table(frame) == frame.to_markdown(index=False, disable_numparse=True)
    # missing values and floats go to tabulate itself
    odd = pd.DataFrame({"a": ["x", None], "b": [0.5, float("nan")]})
    assert markdown_table(odd) == odd.to_markdown(index=False, disable_numparse=True)
    # the pages of the root, written with tabulate, are the same files
    inc, _ = roots
    slow = tmp_path / "slow"
    shutil.copytree(inc / "runs", slow / "runs")
    for module in (domains, estimators, export, headline, markdown, robustness):
        monkeypatch.setattr(
            module, "markdown_table", lambda f: f.to_markdown(index=False, disable_numparse=True)
        )
    write_leaderboard(slow, "erm", outputs=TABLES)
    fast = leaderboard_files(inc)
    for name, data in leaderboard_files(slow).items():
        if name.endswith(".md"):
            assert data == fast[name], name


def test_collect_current_reads_the_store_only_when_current(tmp_path: Path, monkeypatch) -> None:
    """harness.export / corruption_metrics / claims: the store's table when it holds every
    finished stage (no rows.parquet opened), the run directories' otherwise; both equal to
    `collect` (pandas over every rows.parquet)."""
    import pandas as pd

    from harness import table as table_module
    from harness.table import collect_current

    root = tmp_path / "r"
    n = make_root(root)
    collect_cached(root)  # the store, current
    expected = collect(root)[0]
    opened = []
    real = table_module._read_one
    monkeypatch.setattr(
        table_module, "_read_one", lambda *a, **k: opened.append(a) or real(*a, **k)
    )
    got = collect_current(root)[0]
    assert opened == []
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    write_run(root, n, "plain", "erm", 7, 0)  # a run the store lacks: the run directories
    got = collect_current(root)[0]
    assert opened and got["run_id"].nunique() == expected["run_id"].nunique() + 1
    ref = pd.concat(
        [pd.read_parquet(p) for p in sorted((root / "runs").glob("*/posthoc/*/rows.parquet"))]
    )
    assert len(got) == len(ref) and abs(got["value"].sum() - ref["value"].sum()) < 1e-9


def test_one_new_run_remakes_only_its_datasets_page(tmp_path: Path, monkeypatch) -> None:
    """After one new run in dataset `rot`, only rot's page is computed and written: plain.md
    keeps its inode and mtime, and every file equals a rebuild=true copy's; a changed
    option (the baseline) makes every page again."""
    root = tmp_path / "inc"
    n = make_root(root)
    write_leaderboard(root, "erm", outputs=TABLES)
    board = root / "leaderboard"
    before = {d: (board / f"{d}.md").stat() for d in ("plain", "rot")}
    made = []
    real = build.dataset_markdown
    monkeypatch.setattr(
        build,
        "dataset_markdown",
        lambda agg, dataset, *a, **k: made.append(dataset) or real(agg, dataset, *a, **k),
    )
    write_run(root, n, "rot", "irm", 3, 1, ["30"])
    write_leaderboard(root, "erm", outputs=TABLES)
    assert made == ["rot"]
    after = {d: (board / f"{d}.md").stat() for d in ("plain", "rot")}
    plain_b, plain_a = before["plain"], after["plain"]
    assert (plain_a.st_ino, plain_a.st_mtime_ns) == (plain_b.st_ino, plain_b.st_mtime_ns)
    assert after["rot"].st_ino != before["rot"].st_ino  # written again (atomic replace)
    full = tmp_path / "full"
    assert leaderboard_files(root) == rebuilt_copy(root, full, outputs=TABLES)
    # another baseline: every page is made again, equal to a rebuild's with that baseline
    made.clear()
    write_leaderboard(root, "irm", outputs=TABLES)
    write_leaderboard(full, "irm", outputs=TABLES, rebuild=True)
    assert sorted(made) == ["plain", "plain", "rot", "rot"]
    assert leaderboard_files(root) == leaderboard_files(full)
    # nothing new: no page computed
    made.clear()
    write_leaderboard(root, "irm", outputs=TABLES)
    assert made == []


def test_one_new_run_recomputes_only_its_datasets_frames(tmp_path: Path, monkeypatch) -> None:
    """harness/report/partcache.py: after one new run in dataset `plain`, only plain's rows
    are aggregated and its frames derived (rot's and solo's are read from leaderboard/.parts/),
    and every output file equals a rebuild=true copy's; a changed option computes every
    dataset again; the folders of keys no dataset has any more are removed."""
    from harness.report import aggregate as aggregate_module
    from harness.report import partcache
    from tests.test_partcache import make_root as make_rich_root
    from tests.test_partcache import write_run as write_rich_run

    options = dict(
        outputs=("markdown",),  # the page (html) reads the same frames; 1 s a call here
        effective_robustness_options={"scale": "logit"},
        corruption_reference="vit",
    )
    root = tmp_path / "inc"
    n = make_rich_root(root, lrs=(1,))  # one setting per method: a quicker root
    write_leaderboard(root, "erm", **options)
    parts = root / "leaderboard" / partcache.PARTS_DIR
    assert len([p for p in parts.iterdir() if p.is_dir()]) == 3  # one folder per dataset
    seen: dict[str, list[list[str]]] = {"aggregate": [], "derived": []}

    def spy(name, real):
        def wrapped(table, *args, **kwargs):
            seen[name].append(sorted(table["dataset"].unique()))
            return real(table, *args, **kwargs)

        return wrapped

    # aggregate_firsts: aggregate's own work, what partcache calls (with the first rows)
    real = aggregate_module.aggregate_firsts
    monkeypatch.setattr(aggregate_module, "aggregate_firsts", spy("aggregate", real))
    monkeypatch.setattr(partcache, "derived", spy("derived", partcache.derived))
    write_rich_run(root, n, "plain", "irm", 3, 0, evals=("e1", "e2"))
    write_leaderboard(root, "erm", **options)
    assert seen == {"aggregate": [["plain"]], "derived": [["plain"]]}
    assert len([p for p in parts.iterdir() if p.is_dir()]) == 3  # plain's old key's removed
    full = tmp_path / "full"
    got, expected = leaderboard_files(root), rebuilt_copy(root, full, **options)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
    for name in ("comparisons.csv", "scorer_comparisons.csv", "selection.csv",
                 "corruptions_mce.csv", "effective_robustness.csv", "estimators.csv",
                 "domain_generalisation.csv", "summary.csv"):  # fmt: skip
        assert len(got[f"leaderboard/{name}"].splitlines()) > 2, name
    # nothing new: nothing computed, the same files
    seen["aggregate"].clear(), seen["derived"].clear()
    write_leaderboard(root, "erm", **options)
    assert seen == {"aggregate": [], "derived": []}
    assert leaderboard_files(root) == expected
    # a damaged piece: that dataset computed again, the same files
    (rot_piece,) = [f / "summary.arrow" for f in parts.iterdir()
                    if f.is_dir() and _datasets_of(f) == {"rot"}]  # fmt: skip
    rot_piece.write_bytes(b"damaged")
    write_leaderboard(root, "erm", **options)
    assert seen == {"aggregate": [["rot"]], "derived": [["rot"]]}
    assert leaderboard_files(root) == expected
    # another option: every dataset again (the whole table), equal to a rebuild's
    seen["aggregate"].clear(), seen["derived"].clear()
    write_leaderboard(root, "irm", **options)
    assert seen["aggregate"] == [["plain", "rot", "solo"]]
    write_leaderboard(full, "irm", **options, rebuild=True)
    assert leaderboard_files(root) == leaderboard_files(full)
    assert len([p for p in parts.iterdir() if p.is_dir()]) == 3


def _datasets_of(piece: Path) -> set[str]:
    """The datasets of a leaderboard/.parts/ folder's summary piece."""
    import pyarrow.feather as feather

    return set(feather.read_table(piece / "summary.arrow").column("dataset").to_pylist())


def test_other_outputs_read_the_frames_and_pages_already_made(tmp_path: Path, monkeypatch) -> None:
    """What only changes what is drawn or written (outputs, plot_workers, aggregates) keys
    neither the derived frames nor the pages: a call without the html page, one plot worker and
    aggregates.csv aggregates and derives nothing and makes no page again, and its files
    equal a rebuild's; a frame option (min_effect) still computes every dataset again; and
    after a new seed, a call without Markdown grows the summary from the pieces all the
    same (their own record, .parts/latest.json): only the touched setting's rows."""
    from harness.report import aggregate as aggregate_module
    from harness.report import partcache
    from tests.test_partcache import make_root as make_rich_root
    from tests.test_partcache import write_run as write_rich_run

    root = tmp_path / "out"
    n = make_rich_root(root, lrs=(1,))
    write_leaderboard(root, "erm", outputs=TABLES)
    computed: list[str] = []
    rows: list[int] = []

    def spy(name, real):
        def wrapped(*args, **kwargs):
            computed.append(name)
            rows.append(len(args[0]))
            return real(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(aggregate_module, "aggregate_firsts",
                        spy("aggregate", aggregate_module.aggregate_firsts))  # fmt: skip
    monkeypatch.setattr(partcache, "derived", spy("derived", partcache.derived))
    monkeypatch.setattr(build, "dataset_markdown", spy("page", build.dataset_markdown))
    other = dict(outputs=("markdown",), plot_workers=1, aggregates=True)
    write_leaderboard(root, "erm", **other)
    assert computed == []
    assert (root / "leaderboard" / "aggregates.csv").is_file()
    got = leaderboard_files(root)
    del got["leaderboard/index.html"]  # the first call's (this one writes no html)
    assert got == rebuilt_copy(root, tmp_path / "full", **other)
    computed.clear()
    write_leaderboard(root, "erm", outputs=TABLES, min_effect=0.01)
    assert computed.count("page") == 3 and "derived" in computed
    write_rich_run(root, n, "plain", "erm", 1, 2, evals=("e1", "e2"))  # a third seed
    computed.clear(), rows.clear()
    write_leaderboard(root, "erm", outputs=(), min_effect=0.01)
    plain = int((collect_cached(root)[0]["dataset"] == "plain").sum())
    assert computed[0] == "aggregate" and 0 < rows[0] < plain / 2


def test_the_leaderboard_command_loads_no_torch(tmp_path: Path) -> None:
    """`python -m harness.leaderboard` (every output) imports neither torch nor
    torchmetrics: ~1.4 s of every leaderboard command's start, and ~240,000 objects that
    each full garbage collection during the rebuild would walk (harness.roles, oracle's
    metrics imported where its rows are made)."""
    from tests.conftest import run_cli

    root = tmp_path / "results"
    make_root(root)
    proc = run_cli([f"results_dir={root}"], cwd=tmp_path, module="harness.leaderboard",
                   env={"PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert {"harness.report.build", "matplotlib"} <= imported  # (the check can see imports)
    assert not imported & {"torch", "torchmetrics"}, sorted(imported & {"torch", "torchmetrics"})
    assert (root / "leaderboard" / "index.html").is_file()


def test_the_objects_before_a_rebuild_are_left_out_of_its_collections(tmp_path, monkeypatch):
    """build.older_objects_frozen: inside write_leaderboard the objects that existed before
    are frozen (gc.get_freeze_count > 0), and unfrozen after, an error inside too; a
    caller's own freeze is left as it was, and so is a collector turned off."""
    import gc

    root = tmp_path / "results"
    make_root(root)
    counts = []
    real = build.collect_cached

    def spy(*args, **kwargs):
        counts.append(gc.get_freeze_count())
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "collect_cached", spy)
    assert gc.get_freeze_count() == 0
    write_leaderboard(root, "erm", outputs=("markdown",))
    assert counts[0] > 0 and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="inside"), build.older_objects_frozen():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("inside")
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the caller's own
    try:
        mine = gc.get_freeze_count()
        write_leaderboard(root, "erm", outputs=("markdown",))
        assert gc.get_freeze_count() == mine
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        with build.older_objects_frozen():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()
